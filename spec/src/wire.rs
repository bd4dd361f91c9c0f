//! Types exchanged over HTTP between sdpctl, the controller and agents.
//!
//! Agents receive work fully resolved (catalog merged into each sandbox,
//! route URLs computed), so an agent never needs the catalog or other agents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::{Kind, Record};

/// Short, stable content hash of any serializable value (hex, 16 chars).
/// Maps are BTreeMaps throughout, so the JSON encoding is canonical.
pub fn content_hash<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).expect("wire types always serialize");
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..8])
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------- records API

/// A file (or body) submitted for apply.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDocument {
    /// Shown in errors: the file name, or `<body>`.
    pub file: String,
    pub content: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub documents: Vec<SourceDocument>,
    /// Validate only; store nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Who applied it, for history.
    #[serde(default)]
    pub applied_by: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyResult {
    pub kind: Kind,
    pub name: String,
    pub action: ApplyAction,
    pub file: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// Global revision after the apply (unchanged when nothing changed).
    pub revision: u64,
    pub dry_run: bool,
    pub results: Vec<ApplyResult>,
    /// What the agents do (or, for a dry run, would do) about it.
    #[serde(default)]
    pub plan: Vec<AgentPlan>,
}

/// What one agent would change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlan {
    pub agent: String,
    pub changes: Vec<PlannedChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChange {
    pub sandbox: String,
    /// Service or gateway name.
    pub unit: String,
    pub kind: PlannedKind,
    /// Why, in plain words (environment values are never shown).
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlannedKind {
    /// A container is created.
    Create,
    /// A container is replaced.
    Replace,
    /// A container (and its checkout) is removed.
    Remove,
    /// URL map entries switch (the gateway is reloaded, not replaced).
    Route,
}

/// A record as stored, with its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub kind: Kind,
    pub name: String,
    /// Global revision of the last change to this record.
    pub revision: u64,
    /// Global revision at which it was created.
    pub created_revision: u64,
    pub applied_at_ms: u64,
    pub applied_by: String,
    pub spec: Record,
}

/// The error body of every API error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every located problem, for spec errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<crate::parse::SpecError>,
}

// ---------------------------------------------------------------- agent work

/// Everything one agent must run, as of one global revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    pub agent: String,
    pub revision: u64,
    /// Hash of `sandboxes`: unchanged work has an unchanged etag.
    pub etag: String,
    pub sandboxes: Vec<SandboxWork>,
}

/// One agent's part of one sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxWork {
    pub sandbox: String,
    /// Content hash of this work; reported back once converged.
    pub generation: String,
    pub services: Vec<ServiceWork>,
    pub gateway: Option<GatewayWork>,
}

impl SandboxWork {
    pub fn new(sandbox: String, services: Vec<ServiceWork>, gateway: Option<GatewayWork>) -> Self {
        let generation = content_hash(&(&sandbox, &services, &gateway));
        Self {
            sandbox,
            generation,
            services,
            gateway,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceWork {
    pub service: String,
    pub repo: String,
    pub branch: String,
    pub build: Option<Vec<String>>,
    pub image: String,
    pub command: Option<Vec<String>>,
    /// Catalog env with the sandbox's env over it.
    pub env: BTreeMap<String, String>,
    pub mount: String,
    pub container_port: u16,
    pub host_port: u16,
    pub health: Option<String>,
    /// A pinned commit of the branch, instead of its head.
    #[serde(default)]
    pub commit: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayWork {
    pub gateway: String,
    pub repo: String,
    pub branch: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub mount: String,
    pub container_port: u16,
    pub host_port: u16,
    pub prepare: Option<Vec<String>>,
    pub config_file: String,
    pub reload: Option<Vec<String>>,
    /// Route env-fallback entries by setting the variable (see the record).
    #[serde(default)]
    pub routes_via_env: bool,
    /// One entry per catalog service: where its URL map entry must point.
    pub routes: Vec<RouteWork>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteWork {
    pub service: String,
    pub key: String,
    pub target: RouteTarget,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "lowercase")]
pub enum RouteTarget {
    /// Point the entry at this sandbox's container.
    Sandbox { url: String },
    /// Keep (or restore) the value committed in the gateway branch.
    Default,
    /// Should be routed, but the URL is not known yet; keep the default.
    Pending { reason: String },
}

// ---------------------------------------------------------------- observed

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Progressing,
    Ready,
    Degraded,
    Deleting,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Service,
    Gateway,
}

/// What one agent observed, sent after every pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    pub agent: String,
    /// Revision of the assignments this report answers.
    pub revision: u64,
    pub observed_at_ms: u64,
    pub sandboxes: Vec<SandboxReport>,
    /// Sandboxes no longer assigned whose removal is not finished yet.
    #[serde(default)]
    pub deleting: Vec<DeletionReport>,
    /// Things the agent removed that no sandbox claimed (recent first kept).
    #[serde(default)]
    pub collected: Vec<DriftEvent>,
}

/// What is left of a sandbox an agent is removing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionReport {
    pub sandbox: String,
    /// Containers and checkouts still there, in plain words.
    pub pending: Vec<String>,
}

/// A deleted sandbox the controller tracks until its agents confirm it gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub sandbox: String,
    /// Revision of the deletion: reports from before it do not count.
    pub revision: u64,
    /// Agents that ran a part of it.
    pub agents: Vec<String>,
    pub deleted_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    pub sandbox: String,
    /// The generation this agent has fully converged, if any.
    pub converged_generation: Option<String>,
    /// The generation the agent is working towards.
    pub target_generation: String,
    pub phase: Phase,
    pub message: Option<String>,
    pub units: Vec<UnitReport>,
    pub routes: Vec<RouteReport>,
    /// Recent drift this agent found and put back, oldest first.
    #[serde(default)]
    pub drift: Vec<DriftEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitReport {
    /// Service name, or the gateway record's name.
    pub name: String,
    pub role: Role,
    pub agent: String,
    pub branch: String,
    /// Commit checked out and running.
    pub commit: Option<String>,
    pub image: String,
    pub container_id: Option<String>,
    /// Docker's state word: running, exited, ...
    pub container_state: Option<String>,
    pub host_port: u16,
    pub ready: bool,
    /// The result of the service's health check, when it has one.
    #[serde(default)]
    pub healthy: Option<bool>,
    /// Where the branch points now (the running commit should match it,
    /// unless the commit is pinned).
    #[serde(default)]
    pub branch_head: Option<String>,
    /// The commit is pinned by the sandbox.
    #[serde(default)]
    pub pinned: bool,
    /// Docker's own words about the container ("Up 5 minutes", "Restarting (1) ...").
    #[serde(default)]
    pub container_status: Option<String>,
    /// How often Docker restarted the container, when it was looked at.
    #[serde(default)]
    pub restarts: Option<i64>,
    /// Last error, in plain words.
    pub error: Option<String>,
    /// The error will not go away by retrying: a record, a branch or the host
    /// has to change first (missing image, failed build, port taken, ...).
    #[serde(default)]
    pub blocked: bool,
}

/// One entry of the gateway's URL map: what the running gateway serves,
/// what its file says, and what git committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReport {
    pub service: String,
    pub key: String,
    /// What the running gateway serves for the key, read through SDP's probe
    /// (PHP under Apache, so OPcache and the environment are accounted for).
    pub served: Option<String>,
    /// The value in the live config file (the fallback, for env entries).
    pub file: Option<String>,
    /// The value committed in the gateway branch (the OCP default).
    pub default: Option<String>,
    /// Where it should point: the sandbox URL, or the default.
    pub desired: Option<String>,
    /// The environment variable the entry falls back to, if any.
    pub env_var: Option<String>,
    /// It points at this sandbox rather than the default.
    pub routed_to_sandbox: bool,
    /// Why it is not as desired, in plain words.
    pub problem: Option<String>,
}

impl RouteReport {
    /// The best knowledge of what is served: the probe, else the file.
    pub fn live(&self) -> Option<&str> {
        self.served.as_deref().or(self.file.as_deref())
    }
}

/// Reality found different from what was applied, and put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftEvent {
    pub at_ms: u64,
    /// The agent that found it (where).
    #[serde(default)]
    pub agent: String,
    /// The unit it concerns (service or gateway name).
    pub unit: String,
    /// What drifted, in plain words.
    pub what: String,
    pub desired: Option<String>,
    pub found: Option<String>,
}

/// A sandbox's status as the controller derives it from agents' reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatus {
    pub sandbox: String,
    pub phase: Phase,
    pub message: Option<String>,
    /// Revision of the sandbox record.
    pub revision: u64,
    pub units: Vec<UnitReport>,
    pub routes: Vec<RouteReport>,
    pub agents: Vec<AgentProgress>,
    /// Recent drift found and put back, oldest first.
    pub drift: Vec<DriftEvent>,
    /// Yes/no facts the phase is made of.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// AgentsReporting, Converged, UnitsReady, OnBranchHead, RoutesServed.
    pub kind: String,
    pub ok: bool,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProgress {
    pub agent: String,
    /// Milliseconds since the agent last reported, if it ever did.
    pub last_report_age_ms: Option<u64>,
    pub stale: bool,
    /// The agent reports this sandbox's current generation as converged.
    pub converged: bool,
    /// The agent's report is about the current generation (it has picked up
    /// the latest change), converged or not.
    #[serde(default)]
    pub current: bool,
}

/// One agent as the controller sees it, with what it cleaned up lately.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub info: AgentInfo,
    /// Milliseconds since it was last heard from.
    pub last_seen_age_ms: u64,
    pub stale: bool,
    /// Revision of the work it last reported on.
    pub reported_revision: Option<u64>,
    pub sandboxes: Vec<String>,
    pub deleting: Vec<DeletionReport>,
    pub collected: Vec<DriftEvent>,
}

/// Agents as the controller knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    /// Address other containers use to reach what this agent publishes.
    pub advertise: String,
    pub last_seen_ms: u64,
}
