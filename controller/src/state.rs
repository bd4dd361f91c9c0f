//! The controller's state: an in-memory snapshot backed by the redb store.
//!
//! Invariants:
//! - Every write goes through `writer` (one at a time), is committed to redb
//!   first, and only then becomes visible in memory and to long-polls. What a
//!   client was told is stored is on disk.
//! - The global revision only moves forward, and moves only when desired state
//!   changes (records, or an agent's advertised address).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sdp_spec::parse::{Document, parse_any};
use sdp_spec::record::{Kind, Record};
use sdp_spec::wire::{
    AgentInfo, AgentReport, ApplyAction, ApplyRequest, ApplyResponse, ApplyResult, Assignments,
    SandboxStatus, SourceDocument, StoredRecord, Tombstone, now_ms,
};
use sdp_spec::{SpecError, SpecErrors};
use tokio::sync::{Mutex, watch};

use crate::catalog::{self, Records};
use crate::error::ApiError;
use crate::resolve::assignments_for;
use crate::status::{Inputs, sandbox_status};
use crate::store::{Change, HistoryEntry, Snapshot, Store};

#[derive(Clone, Debug)]
pub struct Settings {
    /// An agent not heard from for this long has a stale report.
    pub stale_after: Duration,
    /// Longest a long-poll is held open.
    pub max_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(90),
            max_wait: Duration::from_secs(60),
        }
    }
}

pub struct Controller {
    store: Arc<Store>,
    snap: RwLock<Snapshot>,
    writer: Mutex<()>,
    revision_tx: watch::Sender<u64>,
    shutdown_tx: watch::Sender<bool>,
    pub settings: Settings,
}

pub type AppState = Arc<Controller>;

impl Controller {
    pub async fn open(
        data_dir: &std::path::Path,
        settings: Settings,
    ) -> Result<AppState, ApiError> {
        let dir = data_dir.to_path_buf();
        let (store, snap) = blocking(move || {
            let store = Store::open(&dir)?;
            let snap = store.load()?;
            Ok((store, snap))
        })
        .await?;
        let (revision_tx, _) = watch::channel(snap.revision);
        let (shutdown_tx, _) = watch::channel(false);
        Ok(Arc::new(Self {
            store: Arc::new(store),
            snap: RwLock::new(snap),
            writer: Mutex::new(()),
            revision_tx,
            shutdown_tx,
            settings,
        }))
    }

    pub fn revision(&self) -> u64 {
        self.snap.read().expect("lock").revision
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    /// Ends open long-polls at once (used on SIGTERM).
    pub fn begin_shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    fn records(&self) -> Records {
        let snap = self.snap.read().expect("lock");
        snap.records
            .iter()
            .map(|(k, r)| (k.clone(), r.spec.clone()))
            .collect()
    }

    /// Validates and stores a batch of documents atomically: all or nothing.
    pub async fn apply(&self, mut req: ApplyRequest) -> Result<ApplyResponse, ApiError> {
        if req.documents.is_empty() {
            return Err(ApiError::bad_request("no documents to apply", None));
        }
        // Parsing is CPU work: keep it off the async workers.
        let sources = std::mem::take(&mut req.documents);
        let docs = tokio::task::spawn_blocking(move || parse_batch(&sources))
            .await
            .map_err(|_| ApiError::ShuttingDown)??;

        let by = clean_user(req.applied_by.as_deref());
        let _guard = self.writer.lock().await;
        let before = self.records();
        let mut prospective = before.clone();
        for doc in &docs {
            prospective.insert(doc.record.key(), doc.record.clone());
        }
        let agents = self.snap.read().expect("lock").agents.clone();
        let (docs, errors, plan) = tokio::task::spawn_blocking(move || {
            let errors = catalog::check(&prospective, &docs, &[]);
            let plan = if errors.is_empty() {
                crate::diff::plan(&before, &prospective, &agents)
            } else {
                Vec::new()
            };
            (docs, errors, plan)
        })
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
        if !errors.is_empty() {
            return Err(errors.into());
        }

        let (current_rev, existing): (u64, BTreeMap<String, StoredRecord>) = {
            let snap = self.snap.read().expect("lock");
            let existing = docs
                .iter()
                .filter_map(|d| {
                    snap.records
                        .get(&d.record.key())
                        .map(|r| (d.record.key(), r.clone()))
                })
                .collect();
            (snap.revision, existing)
        };
        let revision = current_rev + 1;
        let at = now_ms();
        let mut results = Vec::new();
        let mut changes = Vec::new();
        for doc in &docs {
            let key = doc.record.key();
            let action = match existing.get(&key) {
                None => ApplyAction::Created,
                Some(old) if old.spec == doc.record => ApplyAction::Unchanged,
                Some(_) => ApplyAction::Configured,
            };
            if action != ApplyAction::Unchanged {
                changes.push(Change::Put(Box::new(StoredRecord {
                    kind: doc.record.kind(),
                    name: doc.record.name().to_string(),
                    revision,
                    created_revision: existing.get(&key).map_or(revision, |o| o.created_revision),
                    applied_at_ms: at,
                    applied_by: by.clone(),
                    spec: doc.record.clone(),
                })));
            }
            results.push(ApplyResult {
                kind: doc.record.kind(),
                name: doc.record.name().to_string(),
                action,
                file: doc.file.clone(),
            });
        }
        if req.dry_run || changes.is_empty() {
            return Ok(ApplyResponse {
                revision: current_rev,
                dry_run: req.dry_run,
                results,
                plan,
            });
        }
        self.commit(revision, changes).await?;
        tracing::info!(revision, by = %by, records = results.len(), "applied");
        Ok(ApplyResponse {
            revision,
            dry_run: false,
            results,
            plan,
        })
    }

    pub async fn delete(&self, kind: Kind, name: &str, by: &str) -> Result<u64, ApiError> {
        let key = format!("{kind}/{name}");
        let _guard = self.writer.lock().await;
        let mut prospective = self.records();
        if prospective.remove(&key).is_none() {
            return Err(ApiError::NotFound(format!("{kind} `{name}` not found")));
        }
        let errors = catalog::check(&prospective, &[], std::slice::from_ref(&key));
        if let Some(e) = errors.first() {
            return Err(ApiError::Conflict(e.message.clone()));
        }
        let revision = self.revision() + 1;
        // A sandbox is tracked until the agents that ran it confirm it gone.
        let tombstone = match self.get(kind, name).map(|r| r.spec) {
            Some(Record::Sandbox(sb)) => Some(Tombstone {
                sandbox: name.to_string(),
                revision,
                agents: crate::resolve::agents_of(&sb, &self.records())
                    .into_iter()
                    .collect(),
                deleted_at_ms: now_ms(),
            }),
            _ => None,
        };
        self.commit(
            revision,
            vec![Change::Delete {
                key: key.clone(),
                by: by.to_string(),
                at_ms: now_ms(),
                tombstone,
            }],
        )
        .await?;
        tracing::info!(revision, by, record = %key, "deleted");
        Ok(revision)
    }

    /// Commits to disk, then publishes. Caller holds `writer`.
    async fn commit(&self, revision: u64, changes: Vec<Change>) -> Result<(), ApiError> {
        let store = self.store.clone();
        let to_store = changes.clone();
        blocking(move || store.commit(revision, &to_store)).await?;
        {
            let mut snap = self.snap.write().expect("lock");
            for c in changes {
                match c {
                    Change::Put(rec) => {
                        if rec.kind == Kind::Sandbox {
                            snap.deletions.remove(&rec.name);
                        }
                        snap.records
                            .insert(format!("{}/{}", rec.kind, rec.name), *rec);
                    }
                    Change::Delete { key, tombstone, .. } => {
                        snap.records.remove(&key);
                        if let Some(t) = tombstone {
                            snap.deletions.insert(t.sandbox.clone(), t);
                        }
                    }
                }
            }
            snap.revision = revision;
        }
        self.revision_tx.send_replace(revision);
        Ok(())
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<StoredRecord> {
        self.snap
            .read()
            .expect("lock")
            .records
            .get(&format!("{kind}/{name}"))
            .cloned()
    }

    pub fn list(&self, kind: Kind) -> Vec<StoredRecord> {
        self.snap
            .read()
            .expect("lock")
            .records
            .values()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect()
    }

    pub async fn history(&self, kind: Kind, name: &str) -> Result<Vec<HistoryEntry>, ApiError> {
        let store = self.store.clone();
        let key = format!("{kind}/{name}");
        blocking(move || store.history(&key)).await
    }

    /// Records that an agent is alive; a new or changed address is a change
    /// of desired state (routes point at it) and bumps the revision.
    pub async fn touch_agent(&self, name: &str, advertise: Option<&str>) -> Result<(), ApiError> {
        let now = now_ms();
        let changed = {
            let mut snap = self.snap.write().expect("lock");
            match snap.agents.get_mut(name) {
                Some(a) => {
                    a.last_seen_ms = now;
                    advertise.is_some_and(|adv| adv != a.advertise)
                }
                None => advertise.is_some(),
            }
        };
        if !changed {
            return Ok(());
        }
        let info = AgentInfo {
            name: name.to_string(),
            advertise: advertise.unwrap_or_default().to_string(),
            last_seen_ms: now,
        };
        let _guard = self.writer.lock().await;
        let revision = self.revision() + 1;
        let store = self.store.clone();
        let to_store = info.clone();
        blocking(move || store.put_agent(&to_store, Some(revision))).await?;
        {
            let mut snap = self.snap.write().expect("lock");
            snap.agents.insert(name.to_string(), info);
            snap.revision = revision;
        }
        self.revision_tx.send_replace(revision);
        tracing::info!(agent = name, advertise, revision, "agent registered");
        Ok(())
    }

    pub fn assignments(&self, agent: &str) -> Assignments {
        let snap = self.snap.read().expect("lock");
        let records: Records = snap
            .records
            .iter()
            .map(|(k, r)| (k.clone(), r.spec.clone()))
            .collect();
        assignments_for(agent, snap.revision, &records, &snap.agents)
    }

    pub async fn put_report(&self, report: AgentReport) -> Result<(), ApiError> {
        let now = now_ms();
        let agent = {
            let mut snap = self.snap.write().expect("lock");
            let Some(a) = snap.agents.get_mut(&report.agent) else {
                return Err(ApiError::NotFound(format!(
                    "agent `{}` is not registered; it registers when it polls for assignments",
                    report.agent
                )));
            };
            a.last_seen_ms = now;
            a.clone()
        };
        let store = self.store.clone();
        let to_store = report.clone();
        blocking(move || store.put_report(&to_store, &agent)).await?;
        let done: Vec<String> = {
            let mut snap = self.snap.write().expect("lock");
            snap.reports.insert(report.agent.clone(), report);
            snap.deletions
                .values()
                .filter(|t| crate::status::deletion_confirmed(t, &snap.reports))
                .map(|t| t.sandbox.clone())
                .collect()
        };
        for sandbox in done {
            let store = self.store.clone();
            let name = sandbox.clone();
            blocking(move || store.clear_tombstone(&name)).await?;
            self.snap.write().expect("lock").deletions.remove(&sandbox);
            tracing::info!(sandbox, "deletion confirmed by every agent");
        }
        Ok(())
    }

    pub fn agent_view(&self, name: &str) -> Option<sdp_spec::wire::AgentView> {
        let snap = self.snap.read().expect("lock");
        let info = snap.agents.get(name)?.clone();
        let report = snap.reports.get(name);
        let age = now_ms().saturating_sub(info.last_seen_ms);
        Some(sdp_spec::wire::AgentView {
            last_seen_age_ms: age,
            stale: age > self.settings.stale_after.as_millis() as u64,
            reported_revision: report.map(|r| r.revision),
            sandboxes: report
                .map(|r| r.sandboxes.iter().map(|s| s.sandbox.clone()).collect())
                .unwrap_or_default(),
            deleting: report.map(|r| r.deleting.clone()).unwrap_or_default(),
            collected: report.map(|r| r.collected.clone()).unwrap_or_default(),
            info,
        })
    }

    pub fn agents(&self) -> Vec<AgentInfo> {
        self.snap
            .read()
            .expect("lock")
            .agents
            .values()
            .cloned()
            .collect()
    }

    pub fn sandbox_status(&self, name: &str) -> Option<SandboxStatus> {
        self.statuses(Some(name)).pop()
    }

    pub fn statuses(&self, only: Option<&str>) -> Vec<SandboxStatus> {
        let snap = self.snap.read().expect("lock");
        let records: Records = snap
            .records
            .iter()
            .map(|(k, r)| (k.clone(), r.spec.clone()))
            .collect();
        let inputs = Inputs {
            records: &records,
            agents: &snap.agents,
            reports: &snap.reports,
            now_ms: now_ms(),
            stale_after_ms: self.settings.stale_after.as_millis() as u64,
        };
        let mut out: Vec<SandboxStatus> = snap
            .records
            .values()
            .filter_map(|r| match &r.spec {
                Record::Sandbox(sb) if only.is_none_or(|n| n == sb.name.as_str()) => {
                    Some(sandbox_status(sb, r.revision, &inputs))
                }
                _ => None,
            })
            .collect();
        out.extend(
            snap.deletions
                .values()
                .filter(|t| only.is_none_or(|n| n == t.sandbox))
                .map(|t| crate::status::deleting_status(t, &inputs)),
        );
        out.sort_by(|a, b| a.sandbox.cmp(&b.sandbox));
        out
    }
}

/// Every document of a batch, parsed; a record defined twice is an error.
fn parse_batch(sources: &[SourceDocument]) -> Result<Vec<Document>, ApiError> {
    let mut docs: Vec<Document> = Vec::with_capacity(sources.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut errors: Vec<SpecError> = Vec::new();
    for d in sources {
        match parse_any(&d.content, &d.file) {
            Ok(doc) => {
                let key = doc.record.key();
                if let Some(&first) = seen.get(&key) {
                    errors.push(SpecError {
                        file: doc.file.clone(),
                        line: None,
                        column: None,
                        field: Some("name".into()),
                        message: format!(
                            "{key} is also defined in {}; a batch may define each record once",
                            docs[first].file
                        ),
                    });
                } else {
                    seen.insert(key, docs.len());
                    docs.push(doc);
                }
            }
            Err(SpecErrors(e)) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors.into())
    }
}

/// Who applied a change, as kept in history and logs: printable, bounded.
pub fn clean_user(by: Option<&str>) -> String {
    let cleaned: String = by
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "anonymous".into()
    } else {
        cleaned.to_string()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::ShuttingDown)?
        .map_err(ApiError::from)
}
