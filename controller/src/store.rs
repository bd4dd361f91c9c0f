//! Durable state in one redb file: records, their history, agents and their
//! last reports. Synchronous by nature; callers go through `spawn_blocking`.
//!
//! Invariants:
//! - A batch of record changes and the new global revision commit in one
//!   transaction: after a crash either all of an apply is there or none is.
//! - Table names carry a version suffix; a schema change adds a new table and
//!   migrates, it never reinterprets an old one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sdp_spec::wire::{AgentInfo, AgentReport, StoredRecord, Tombstone};
use serde::{Deserialize, Serialize};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records_v1");
/// Key: `kind/name/<revision, 20 digits>` so one record's history is a range.
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("history_v1");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents_v1");
const REPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("reports_v1");
/// Deleted sandboxes whose removal agents have not confirmed yet.
const DELETIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("deletions_v1");

const REVISION_KEY: &str = "revision";
pub const DB_FILE: &str = "sdp.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("stored value under {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Db(e.into())
    }
}

/// One entry in a record's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub revision: u64,
    pub at_ms: u64,
    pub by: String,
    /// The record as applied, or `None` for a deletion.
    pub record: Option<StoredRecord>,
}

/// A change to one record, part of an atomic batch.
#[derive(Clone, Debug)]
pub enum Change {
    Put(Box<StoredRecord>),
    Delete {
        key: String,
        by: String,
        at_ms: u64,
        /// For a sandbox: track it until its agents confirm it is gone.
        tombstone: Option<Tombstone>,
    },
}

/// Everything, as loaded at start-up.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub revision: u64,
    pub records: BTreeMap<String, StoredRecord>,
    pub agents: BTreeMap<String, AgentInfo>,
    pub reports: BTreeMap<String, AgentReport>,
    pub deletions: BTreeMap<String, Tombstone>,
}

pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open { path, source })?;
        let txn = db.begin_write()?;
        {
            // Create every table up front so readers never meet a missing one.
            txn.open_table(META)?;
            txn.open_table(RECORDS)?;
            txn.open_table(HISTORY)?;
            txn.open_table(AGENTS)?;
            txn.open_table(REPORTS)?;
            txn.open_table(DELETIONS)?;
        }
        txn.commit()?;
        Ok(Self { db })
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read()?;
        let revision = txn
            .open_table(META)?
            .get(REVISION_KEY)?
            .map_or(0, |v| v.value());
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for row in txn.open_table(RECORDS)?.iter()? {
            let (k, v) = row?;
            snap.records
                .insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        for row in txn.open_table(AGENTS)?.iter()? {
            let (k, v) = row?;
            snap.agents
                .insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        for row in txn.open_table(REPORTS)?.iter()? {
            let (k, v) = row?;
            snap.reports
                .insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        for row in txn.open_table(DELETIONS)?.iter()? {
            let (k, v) = row?;
            snap.deletions
                .insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        Ok(snap)
    }

    /// Applies a batch of record changes as `revision`, atomically.
    pub fn commit(&self, revision: u64, changes: &[Change]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS)?;
            let mut history = txn.open_table(HISTORY)?;
            let mut deletions = txn.open_table(DELETIONS)?;
            for change in changes {
                match change {
                    Change::Put(rec) => {
                        let key = format!("{}/{}", rec.kind, rec.name);
                        if rec.kind == sdp_spec::Kind::Sandbox {
                            // Applied again: no longer being deleted.
                            deletions.remove(rec.name.as_str())?;
                        }
                        records.insert(key.as_str(), encode(rec).as_slice())?;
                        let entry = HistoryEntry {
                            revision,
                            at_ms: rec.applied_at_ms,
                            by: rec.applied_by.clone(),
                            record: Some((**rec).clone()),
                        };
                        history.insert(
                            history_key(&key, revision).as_str(),
                            encode(&entry).as_slice(),
                        )?;
                    }
                    Change::Delete {
                        key,
                        by,
                        at_ms,
                        tombstone,
                    } => {
                        records.remove(key.as_str())?;
                        if let Some(t) = tombstone {
                            deletions.insert(t.sandbox.as_str(), encode(t).as_slice())?;
                        }
                        let entry = HistoryEntry {
                            revision,
                            at_ms: *at_ms,
                            by: by.clone(),
                            record: None,
                        };
                        history.insert(
                            history_key(key, revision).as_str(),
                            encode(&entry).as_slice(),
                        )?;
                    }
                }
            }
            txn.open_table(META)?.insert(REVISION_KEY, revision)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Stores an agent's registration; `revision` is set when the change
    /// affects what other agents must do (its advertised address).
    pub fn put_agent(&self, agent: &AgentInfo, revision: Option<u64>) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(AGENTS)?
                .insert(agent.name.as_str(), encode(agent).as_slice())?;
            if let Some(rev) = revision {
                txn.open_table(META)?.insert(REVISION_KEY, rev)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn put_report(&self, report: &AgentReport, agent: &AgentInfo) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(REPORTS)?
                .insert(report.agent.as_str(), encode(report).as_slice())?;
            txn.open_table(AGENTS)?
                .insert(agent.name.as_str(), encode(agent).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The agents confirmed a deleted sandbox gone.
    pub fn clear_tombstone(&self, sandbox: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(DELETIONS)?.remove(sandbox)?;
        txn.commit()?;
        Ok(())
    }

    /// Every revision of one record, oldest first.
    pub fn history(&self, key: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let start = format!("{key}/");
        let end = format!("{key}0"); // '0' sorts right after '/'
        let mut out = Vec::new();
        for row in table.range(start.as_str()..end.as_str())? {
            let (k, v) = row?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }
}

fn history_key(record_key: &str, revision: u64) -> String {
    format!("{record_key}/{revision:020}")
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("stored types always serialize")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdp_spec::{Kind, parse_toml};

    fn record(name: &str, revision: u64) -> StoredRecord {
        let text = format!(
            "kind = \"sandbox\"\nname = \"{name}\"\n[gateway]\nbranch = \"main\"\nhost_port = 8101\n"
        );
        StoredRecord {
            kind: Kind::Sandbox,
            name: name.into(),
            revision,
            created_revision: revision,
            applied_at_ms: 1,
            applied_by: "test".into(),
            spec: parse_toml(&text, "t").unwrap().record,
        }
    }

    #[test]
    fn batches_survive_reopen_with_history() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit(
                    1,
                    &[
                        Change::Put(Box::new(record("a", 1))),
                        Change::Put(Box::new(record("b", 1))),
                    ],
                )
                .unwrap();
            store
                .commit(
                    2,
                    &[Change::Delete {
                        key: "sandbox/a".into(),
                        by: "test".into(),
                        at_ms: 2,
                        tombstone: None,
                    }],
                )
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.revision, 2);
        assert_eq!(snap.records.keys().collect::<Vec<_>>(), ["sandbox/b"]);
        let hist = store.history("sandbox/a").unwrap();
        assert_eq!(hist.len(), 2);
        assert!(hist[0].record.is_some() && hist[1].record.is_none());
        // A name that is a prefix of another does not mix histories.
        store
            .commit(3, &[Change::Put(Box::new(record("a-2", 3)))])
            .unwrap();
        assert_eq!(store.history("sandbox/a").unwrap().len(), 2);
    }
}
