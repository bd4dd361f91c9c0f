//! One reconcile pass: for every assigned sandbox, work out the desired
//! units (resolving branches to commits), observe what exists, plan, execute,
//! verify, and report. Then garbage-collect what no sandbox claims.
//!
//! Invariants:
//! - A converged pass makes one Docker call (the container listing), reads a
//!   few files, probes each gateway over HTTP, and changes nothing.
//! - A unit that cannot be resolved or planned (fetch failed, branch gone,
//!   URL map refused, patched file not valid PHP) gets no actions: what runs
//!   keeps running, and the error is reported.
//! - Differences found in a sandbox that was converged at the same
//!   generation are drift: reported as events, then put back.
//! - Nothing is garbage-collected unless the work it is judged against came
//!   from the controller (or was saved from it).

mod desire;
mod execute;
mod report;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdp_spec::wire::{
    AgentReport, Assignments, DeletionReport, DriftEvent, Phase, SandboxReport, SandboxWork, now_ms,
};
use tracing::Instrument;

use crate::client::Client;
use crate::config::AgentConfig;
use crate::docker::{Engine, Observed};
use crate::git::{Git, GitError};
use crate::layout;
use crate::plan::{Action, UnitId, plan_gc, plan_unit};
use crate::retry;

use desire::Unit;
use report::{build_report, drift_events, failed_report};

/// Drift events kept per sandbox (the newest).
const DRIFT_KEPT: usize = 20;

pub struct PassOutcome {
    /// Every action attempted, in order.
    pub actions: Vec<Action>,
    pub report: AgentReport,
    /// Run another pass this soon, rather than at the next poll.
    pub requeue: Option<Duration>,
}

struct Branch {
    commit: Result<String, Failure>,
    /// When to ask the remote again (the check interval, with jitter).
    next_check: Instant,
}

impl Failure {
    pub fn blocked(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            blocked: true,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            blocked: false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error, and whether retrying can help.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub message: String,
    /// Retrying cannot help until something changes.
    pub blocked: bool,
}

struct Healing {
    generation: String,
    backoff: retry::Backoff,
    next: Instant,
}

pub struct Reconciler {
    cfg: AgentConfig,
    engine: Arc<Engine>,
    git: Arc<Git>,
    branches: HashMap<(String, String), Branch>,
    seen_generations: HashSet<String>,
    last: BTreeMap<String, SandboxReport>,
    drift: HashMap<String, VecDeque<DriftEvent>>,
    /// What garbage collection removed lately.
    collected: VecDeque<DriftEvent>,
    /// What is left of sandboxes being removed.
    deleting: Vec<DeletionReport>,
    /// Sandboxes whose self-heal keeps failing, and when to try again.
    healing: HashMap<String, Healing>,
    http: reqwest::Client,
    probe_token: String,
}

impl Reconciler {
    pub fn new(cfg: AgentConfig, engine: Arc<Engine>) -> Self {
        let git = Arc::new(Git::new(
            layout::cache_dir(&cfg.work_dir),
            cfg.git_credentials.clone(),
        ));
        let http = reqwest::Client::builder()
            .timeout(retry::HEALTH_TIMEOUT)
            .build()
            .expect("HTTP client builds");
        let probe_token = layout::probe_token(&cfg.work_dir);
        Self {
            cfg,
            engine,
            git,
            branches: HashMap::new(),
            seen_generations: HashSet::new(),
            last: BTreeMap::new(),
            drift: HashMap::new(),
            collected: VecDeque::new(),
            deleting: Vec::new(),
            healing: HashMap::new(),
            http,
            probe_token,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Converges everything in `work`. Progress is posted to `client` as
    /// sandboxes change, when one is given.
    pub async fn pass(&mut self, work: &Assignments, client: Option<&Client>) -> PassOutcome {
        let mut actions = Vec::new();
        let mut requeue: Option<Duration> = None;
        let containers = match self.engine.list_owned(&self.cfg.name).await {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, "cannot list containers");
                for sb in &work.sandboxes {
                    self.last
                        .insert(sb.sandbox.clone(), failed_report(sb, &msg));
                }
                self.forget_unassigned(work);
                return PassOutcome {
                    actions,
                    report: self.report(work),
                    requeue: Some(retry::UNHEALTHY_REQUEUE),
                };
            }
        };

        let mut desired_ids = BTreeSet::new();
        for sb in &work.sandboxes {
            let span = tracing::info_span!("reconcile", sandbox = %sb.sandbox, generation = %sb.generation);
            let (report, done, rq) = self
                .sandbox(sb, &containers, work, client)
                .instrument(span)
                .await;
            desired_ids.extend(desire::unit_ids(sb));
            actions.extend(done);
            requeue = min_opt(requeue, rq);
            self.last.insert(sb.sandbox.clone(), report);
        }
        self.forget_unassigned(work);

        let checkouts = {
            let work_dir = self.cfg.work_dir.clone();
            tokio::task::spawn_blocking(move || layout::scan_checkouts(&work_dir))
                .await
                .unwrap_or_default()
        };
        let gc = plan_gc(&desired_ids, &containers, &checkouts);
        for action in &gc {
            tracing::info!(action = %action, "garbage-collecting");
            match self.execute_gc(action).await {
                Ok(()) => self.record_collected(action),
                Err(e) => {
                    tracing::warn!(action = %action, error = %e, "garbage collection failed; will retry");
                    requeue = min_opt(requeue, Some(retry::UNHEALTHY_REQUEUE));
                }
            }
        }
        // What is left of sandboxes being removed, for the controller's
        // deletion tracking: only worth looking again if something was removed.
        self.deleting = if gc.is_empty() {
            Vec::new()
        } else {
            self.leftovers(&desired_ids).await
        };
        actions.extend(gc);
        PassOutcome {
            actions,
            report: self.report(work),
            requeue,
        }
    }

    fn record_collected(&mut self, action: &Action) {
        let (unit, what) = match action {
            Action::Remove { name, reason, .. } => {
                (name.clone(), format!("removed container: {reason}"))
            }
            Action::RemoveCheckout { path, reason } => (
                path.display().to_string(),
                format!("removed checkout: {reason}"),
            ),
            _ => return,
        };
        self.collected.push_back(DriftEvent {
            at_ms: now_ms(),
            agent: self.cfg.name.clone(),
            unit,
            what,
            desired: None,
            found: None,
        });
        while self.collected.len() > DRIFT_KEPT {
            self.collected.pop_front();
        }
    }

    /// Containers and checkouts of unassigned sandboxes still on this host.
    async fn leftovers(&self, desired: &BTreeSet<UnitId>) -> Vec<DeletionReport> {
        let mut left: BTreeMap<String, Vec<String>> = BTreeMap::new();
        match self.engine.list_owned(&self.cfg.name).await {
            Ok(now) => {
                for c in now {
                    if let Some(u) = UnitId::of(&c)
                        && !desired.contains(&u)
                    {
                        left.entry(u.sandbox.clone())
                            .or_default()
                            .push(format!("container {}", c.name));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list containers after garbage collection"),
        }
        let work_dir = self.cfg.work_dir.clone();
        let checkouts = tokio::task::spawn_blocking(move || layout::scan_checkouts(&work_dir))
            .await
            .unwrap_or_default();
        for (u, path) in checkouts {
            if !desired.contains(&u) {
                left.entry(u.sandbox.clone())
                    .or_default()
                    .push(format!("checkout {}", path.display()));
            }
        }
        left.into_iter()
            .map(|(sandbox, pending)| DeletionReport { sandbox, pending })
            .collect()
    }

    fn forget_unassigned(&mut self, work: &Assignments) {
        let assigned = |k: &String| work.sandboxes.iter().any(|s| &s.sandbox == k);
        self.last.retain(|k, _| assigned(k));
        self.healing.retain(|k, _| assigned(k));
        self.drift.retain(|k, _| assigned(k));
        self.seen_generations
            .retain(|g| work.sandboxes.iter().any(|s| &s.generation == g));
    }

    fn report(&self, work: &Assignments) -> AgentReport {
        AgentReport {
            agent: self.cfg.name.clone(),
            revision: work.revision,
            observed_at_ms: now_ms(),
            sandboxes: self.last.values().cloned().collect(),
            deleting: self.deleting.clone(),
            collected: self.collected.iter().cloned().collect(),
        }
    }

    async fn post_progress(&self, work: &Assignments, client: Option<&Client>) {
        if let Some(c) = client
            && let Err(e) = c.report(&self.report(work)).await
        {
            tracing::debug!(error = %e, "progress report not delivered");
        }
    }

    async fn sandbox(
        &mut self,
        sb: &SandboxWork,
        all: &[Observed],
        work: &Assignments,
        client: Option<&Client>,
    ) -> (SandboxReport, Vec<Action>, Option<Duration>) {
        // A failing self-heal is retried on its own schedule, not every pass;
        // new work (another generation) is tried at once.
        if let Some(h) = self.healing.get(&sb.sandbox)
            && h.generation == sb.generation
            && let Some(wait) = h.next.checked_duration_since(Instant::now())
            && let Some(last) = self.last.get(&sb.sandbox)
        {
            return (last.clone(), Vec::new(), Some(wait));
        }
        let fresh = self.seen_generations.insert(sb.generation.clone());
        let mut units: Vec<Unit> = Vec::new();
        for svc in &sb.services {
            units.push(self.service_unit(sb, svc, fresh).await);
        }
        if let Some(gw) = &sb.gateway {
            units.push(self.gateway_unit(sb, gw, fresh).await);
        }
        self.observe(&mut units, all).await;

        let plans: Vec<Vec<Action>> = units
            .iter()
            .map(|u| {
                u.desired
                    .as_ref()
                    .map(|d| plan_unit(d, &u.observed))
                    .unwrap_or_default()
            })
            .collect();

        // What changed in a sandbox that was converged at this generation is drift.
        let was_converged = self
            .last
            .get(&sb.sandbox)
            .is_some_and(|r| r.converged_generation.as_ref() == Some(&sb.generation));
        if was_converged {
            let events: Vec<DriftEvent> = units
                .iter()
                .zip(&plans)
                .flat_map(|(u, p)| drift_events(u, p))
                .collect();
            self.record_drift(&sb.sandbox, events);
        }

        let mut done = Vec::new();
        if plans.iter().any(|p| !p.is_empty()) {
            let mut progress = build_report(sb, &units, &self.cfg.name, self.drift_of(&sb.sandbox));
            progress.phase = Phase::Progressing;
            progress.converged_generation = None;
            progress.message = Some(format!(
                "applying: {}",
                plans
                    .iter()
                    .flatten()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            self.last.insert(sb.sandbox.clone(), progress);
            self.post_progress(work, client).await;
        }
        for (unit, plan) in units.iter_mut().zip(plans) {
            if let Err(e) = self.preflight(unit, &plan).await {
                tracing::warn!(unit = %unit.id, error = %e, "refused before any change");
                unit.error = Some(e);
                continue;
            }
            for action in plan {
                tracing::info!(action = %action, "executing");
                let result = self.execute(unit, &action).await;
                done.push(action.clone());
                if let Err(e) = result {
                    tracing::warn!(unit = %unit.id, error = %e, "action failed");
                    unit.error = Some(e);
                    break;
                }
                unit.changed = true;
            }
        }
        if !done.is_empty() {
            // Look again, so the report says what is, not what was planned.
            match self.engine.list_owned(&self.cfg.name).await {
                Ok(now) => {
                    for u in units.iter_mut() {
                        u.observed.containers = now
                            .iter()
                            .filter(|c| UnitId::of(c).as_ref() == Some(&u.id))
                            .cloned()
                            .collect();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list containers after changes"),
            }
        }
        self.check_health(&mut units).await;
        let mut drift_found = Vec::new();
        for u in units.iter_mut() {
            if u.gateway.is_some() {
                drift_found.extend(self.verify_gateway(u).await);
            }
        }
        self.record_drift(&sb.sandbox, drift_found);

        let mut report = build_report(sb, &units, &self.cfg.name, self.drift_of(&sb.sandbox));
        let requeue = self.schedule(sb, &mut report);
        if !done.is_empty() || report.phase != Phase::Ready {
            tracing::info!(phase = %report.phase, message = report.message.as_deref().unwrap_or(""), "sandbox observed");
        }
        (report, done, requeue)
    }

    /// When to look at the sandbox again: a failing self-heal backs off (the
    /// status says until when), something on its way is looked at soon.
    fn schedule(&mut self, sb: &SandboxWork, report: &mut SandboxReport) -> Option<Duration> {
        match report.phase {
            Phase::Degraded => {
                let h = self
                    .healing
                    .entry(sb.sandbox.clone())
                    .or_insert_with(|| Healing {
                        generation: sb.generation.clone(),
                        backoff: retry::Backoff::heal(),
                        next: Instant::now(),
                    });
                if h.generation != sb.generation {
                    h.generation = sb.generation.clone();
                    h.backoff.reset();
                }
                let wait = h.backoff.fail();
                h.next = Instant::now() + wait;
                if let Some(m) = report.message.as_mut() {
                    m.push_str(&format!(
                        " (attempt {}; looked at again in {}s)",
                        h.backoff.failures(),
                        wait.as_secs().max(1)
                    ));
                }
                Some(wait)
            }
            Phase::Ready => {
                self.healing.remove(&sb.sandbox);
                None
            }
            _ => {
                self.healing.remove(&sb.sandbox);
                Some(retry::UNHEALTHY_REQUEUE)
            }
        }
    }

    fn record_drift(&mut self, sandbox: &str, events: Vec<DriftEvent>) {
        if events.is_empty() {
            return;
        }
        let kept = self.drift.entry(sandbox.to_string()).or_default();
        for mut e in events {
            e.agent = self.cfg.name.clone();
            tracing::warn!(unit = %e.unit, what = %e.what, found = e.found.as_deref().unwrap_or(""), desired = e.desired.as_deref().unwrap_or(""), "drift");
            kept.push_back(e);
        }
        while kept.len() > DRIFT_KEPT {
            kept.pop_front();
        }
    }

    fn drift_of(&self, sandbox: &str) -> Vec<DriftEvent> {
        self.drift
            .get(sandbox)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The commit a branch points at, asking the remote when the work is new
    /// or the last answer is older than the branch-check interval.
    async fn commit_for(
        &mut self,
        repo: &str,
        branch: &str,
        force: bool,
    ) -> Result<String, Failure> {
        let key = (repo.to_string(), branch.to_string());
        let stale = self
            .branches
            .get(&key)
            .is_none_or(|b| force || Instant::now() >= b.next_check || b.commit.is_err());
        if stale {
            let git = self.git.clone();
            let (r, b) = key.clone();
            let result = tokio::task::spawn_blocking(move || git.resolve(&r, &b))
                .await
                .map_err(|e| GitError::Cache {
                    path: PathBuf::new(),
                    message: e.to_string(),
                })
                .and_then(|r| r);
            let commit = match result {
                Ok(res) => {
                    if let Some(old) = &res.rewritten_from {
                        tracing::warn!(repo = %crate::git::redact_url(repo), branch, old = %old, new = %res.commit, "upstream history was rewritten");
                    }
                    Ok(res.commit)
                }
                Err(e) => Err(Failure {
                    blocked: matches!(e, GitError::BranchMissing { .. } | GitError::Auth { .. }),
                    message: e.to_string(),
                }),
            };
            self.branches.insert(
                key.clone(),
                Branch {
                    commit,
                    next_check: Instant::now() + retry::jitter(self.cfg.branch_check),
                },
            );
        }
        self.branches[&key].commit.clone()
    }
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}
