//! One reconcile pass: for every assigned sandbox, work out the desired
//! units (resolving branches to commits), observe what exists, plan, execute,
//! and report. Then garbage-collect what no sandbox claims.
//!
//! Invariants:
//! - A converged pass makes one Docker call (the container listing), reads a
//!   few files, and changes nothing.
//! - A unit that cannot be resolved or planned (fetch failed, branch gone,
//!   URL map refused) gets no actions: what runs keeps running, and the error
//!   is reported.
//! - Nothing is garbage-collected unless the work it is judged against came
//!   from the controller (or was saved from it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdp_spec::wire::{
    AgentReport, Assignments, GatewayWork, Phase, Role, RouteReport, RouteTarget, SandboxReport,
    SandboxWork, ServiceWork, UnitReport, content_hash, now_ms,
};
use tracing::Instrument;

use crate::client::Client;
use crate::config::AgentConfig;
use crate::docker::{
    ContainerSpec, Engine, LABEL_AGENT, LABEL_BRANCH, LABEL_COMMIT, LABEL_HOST_PORT, LABEL_IMAGE,
    LABEL_MANAGED, LABEL_ROLE, LABEL_SANDBOX, LABEL_SPEC_HASH, LABEL_UNIT, Observed,
};
use crate::git::{Git, GitError};
use crate::layout;
use crate::plan::{
    Action, BuildStep, DesiredConfig, DesiredUnit, ObservedUnit, UnitId, plan_gc, plan_unit,
};
use crate::retry;
use crate::urlmap::{self, UrlMap};

/// Where a build's stamp lives inside a checkout.
const STAMP_FILE: &str = ".sdp/build.stamp";

pub struct PassOutcome {
    /// Every action attempted, in order.
    pub actions: Vec<Action>,
    pub report: AgentReport,
    /// Run another pass this soon, rather than at the next poll.
    pub requeue: Option<Duration>,
}

struct Branch {
    commit: Result<String, String>,
    at: Instant,
}

/// One unit as the pass sees it.
struct Unit {
    id: UnitId,
    branch: String,
    image: String,
    host_port: u16,
    health: Option<String>,
    desired: Result<DesiredUnit, String>,
    observed: ObservedUnit,
    error: Option<String>,
    notes: Vec<String>,
    healthy: Option<bool>,
}

pub struct Reconciler {
    cfg: AgentConfig,
    engine: Arc<Engine>,
    git: Arc<Git>,
    branches: HashMap<(String, String), Branch>,
    seen_generations: HashSet<String>,
    last: BTreeMap<String, SandboxReport>,
    /// Sandboxes whose self-heal keeps failing, and when to try again.
    healing: HashMap<String, Healing>,
    http: reqwest::Client,
}

struct Healing {
    generation: String,
    backoff: retry::Backoff,
    next: Instant,
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
        Self {
            cfg,
            engine,
            git,
            branches: HashMap::new(),
            seen_generations: HashSet::new(),
            last: BTreeMap::new(),
            healing: HashMap::new(),
            http,
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
                self.last
                    .retain(|k, _| work.sandboxes.iter().any(|s| &s.sandbox == k));
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
            desired_ids.extend(unit_ids(sb));
            actions.extend(done);
            requeue = min_opt(requeue, rq);
            self.last.insert(sb.sandbox.clone(), report);
        }
        self.last
            .retain(|k, _| work.sandboxes.iter().any(|s| &s.sandbox == k));

        let checkouts = {
            let work_dir = self.cfg.work_dir.clone();
            tokio::task::spawn_blocking(move || layout::scan_checkouts(&work_dir))
                .await
                .unwrap_or_default()
        };
        for action in plan_gc(&desired_ids, &containers, &checkouts) {
            tracing::info!(action = %action, "garbage-collecting");
            if let Err(e) = self.execute_gc(&action).await {
                tracing::warn!(action = %action, error = %e, "garbage collection failed; will retry");
                requeue = min_opt(requeue, Some(retry::UNHEALTHY_REQUEUE));
            }
            actions.push(action);
        }
        PassOutcome {
            actions,
            report: self.report(work),
            requeue,
        }
    }

    fn report(&self, work: &Assignments) -> AgentReport {
        AgentReport {
            agent: self.cfg.name.clone(),
            revision: work.revision,
            observed_at_ms: now_ms(),
            sandboxes: self.last.values().cloned().collect(),
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
        let mut units = Vec::new();
        for svc in &sb.services {
            units.push(self.service_unit(sb, svc, fresh).await);
        }
        let mut routes_ctx = None;
        if let Some(gw) = &sb.gateway {
            let (unit, ctx) = self.gateway_unit(sb, gw, fresh).await;
            units.push(unit);
            routes_ctx = ctx;
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
        let mut done = Vec::new();
        if plans.iter().any(|p| !p.is_empty()) {
            let mut progress = build_report(sb, &units, &self.cfg.name, Vec::new());
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
            for action in plan {
                tracing::info!(action = %action, "executing");
                let result = self.execute(unit, &action).await;
                done.push(action.clone());
                if let Err(e) = result {
                    tracing::warn!(unit = %unit.id, error = %e, "action failed");
                    unit.error = Some(e);
                    break;
                }
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
        let routes = match routes_ctx {
            Some(ctx) => self.read_routes(&ctx).await,
            None => Vec::new(),
        };
        let mut report = build_report(sb, &units, &self.cfg.name, routes);
        let requeue = match report.phase {
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
                        " (attempt {}; next try in {}s)",
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
        };
        if !done.is_empty() || report.phase != Phase::Ready {
            tracing::info!(phase = %report.phase, message = report.message.as_deref().unwrap_or(""), "sandbox observed");
        }
        (report, done, requeue)
    }

    /// The commit a branch points at, asking the remote when the work is new
    /// or the last answer is older than the branch-check interval.
    async fn commit_for(
        &mut self,
        repo: &str,
        branch: &str,
        force: bool,
    ) -> Result<String, String> {
        let key = (repo.to_string(), branch.to_string());
        let stale = self
            .branches
            .get(&key)
            .is_none_or(|b| force || b.at.elapsed() >= self.cfg.branch_check || b.commit.is_err());
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
                Err(e) => Err(e.to_string()),
            };
            self.branches.insert(
                key.clone(),
                Branch {
                    commit,
                    at: Instant::now(),
                },
            );
        }
        self.branches[&key].commit.clone()
    }

    fn labels(
        &self,
        id: &UnitId,
        commit: &str,
        branch: &str,
        image: &str,
        host_port: u16,
    ) -> BTreeMap<String, String> {
        let role = match id.role {
            Role::Service => "service",
            Role::Gateway => "gateway",
        };
        BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_AGENT.to_string(), self.cfg.name.clone()),
            (LABEL_SANDBOX.to_string(), id.sandbox.clone()),
            (LABEL_ROLE.to_string(), role.to_string()),
            (LABEL_UNIT.to_string(), id.name.clone()),
            (LABEL_COMMIT.to_string(), commit.to_string()),
            (LABEL_BRANCH.to_string(), branch.to_string()),
            (LABEL_IMAGE.to_string(), image.to_string()),
            (LABEL_HOST_PORT.to_string(), host_port.to_string()),
        ])
    }

    fn sdp_env(id: &UnitId, branch: &str, commit: &str) -> Vec<(String, String)> {
        let role_var = match id.role {
            Role::Service => "SDP_SERVICE",
            Role::Gateway => "SDP_GATEWAY",
        };
        vec![
            ("SDP_SANDBOX".into(), id.sandbox.clone()),
            (role_var.into(), id.name.clone()),
            ("SDP_BRANCH".into(), branch.to_string()),
            ("SDP_COMMIT".into(), commit.to_string()),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn container_spec(
        &self,
        id: &UnitId,
        image: &str,
        cmd: Option<Vec<String>>,
        env: &BTreeMap<String, String>,
        mount: &str,
        checkout: &Path,
        ports: (u16, u16),
        commit: &str,
        branch: &str,
    ) -> ContainerSpec {
        let mut all_env: BTreeMap<String, String> = env.clone();
        all_env.extend(Self::sdp_env(id, branch, commit));
        ContainerSpec {
            name: format!("sdp-{}-{}", id.sandbox, id.name),
            image: image.to_string(),
            cmd,
            env: all_env
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            binds: vec![format!("{}:{mount}", checkout.display())],
            container_port: ports.0,
            host_ip: self.cfg.bind_ip.clone(),
            host_port: ports.1,
            extra_hosts: vec!["host.docker.internal:host-gateway".into()],
            labels: self.labels(id, commit, branch, image, ports.1),
        }
    }

    async fn service_unit(&mut self, sb: &SandboxWork, w: &ServiceWork, fresh: bool) -> Unit {
        let id = UnitId {
            sandbox: sb.sandbox.clone(),
            role: Role::Service,
            name: w.service.clone(),
        };
        let checkout = layout::checkout_dir(&self.cfg.work_dir, &id);
        let desired = match self.commit_for(&w.repo, &w.branch, fresh).await {
            Err(e) => Err(e),
            Ok(commit) => Ok(DesiredUnit {
                build: w.build.clone().map(|command| BuildStep {
                    stamp: content_hash(&(&commit, &command)),
                    command,
                    best_effort: false,
                }),
                container: self.container_spec(
                    &id,
                    &w.image,
                    w.command.clone(),
                    &w.env,
                    &w.mount,
                    &checkout,
                    (w.container_port, w.host_port),
                    &commit,
                    &w.branch,
                ),
                repo: w.repo.clone(),
                commit,
                checkout,
                config: None,
                reload: None,
                id: id.clone(),
            }),
        };
        Unit {
            id,
            branch: w.branch.clone(),
            image: w.image.clone(),
            host_port: w.host_port,
            health: w.health.clone(),
            desired,
            observed: ObservedUnit::default(),
            error: None,
            notes: Vec::new(),
            healthy: None,
        }
    }

    async fn gateway_unit(
        &mut self,
        sb: &SandboxWork,
        w: &GatewayWork,
        fresh: bool,
    ) -> (Unit, Option<RoutesCtx>) {
        let id = UnitId {
            sandbox: sb.sandbox.clone(),
            role: Role::Gateway,
            name: w.gateway.clone(),
        };
        let checkout = layout::checkout_dir(&self.cfg.work_dir, &id);
        let mut ctx = None;
        let desired = match self.commit_for(&w.repo, &w.branch, fresh).await {
            Err(e) => Err(e),
            Ok(commit) => {
                let git = self.git.clone();
                let (repo, c, file) = (w.repo.clone(), commit.clone(), w.config_file.clone());
                let committed = tokio::task::spawn_blocking(move || git.file_at(&repo, &c, &file))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                match committed {
                    Err(e) => Err(e),
                    Ok(None) => Err(format!(
                        "{} does not exist in the gateway at commit {}",
                        w.config_file,
                        short(&commit)
                    )),
                    Ok(Some(committed)) => match desired_map(w, &committed) {
                        Err(e) => Err(format!("{}: {e}", w.config_file)),
                        Ok(desired_bytes) => {
                            let path = checkout.join(&w.config_file);
                            ctx = Some(RoutesCtx {
                                path: path.clone(),
                                committed: committed.clone(),
                                routes: w.routes.clone(),
                            });
                            Ok(DesiredUnit {
                                build: w.prepare.clone().map(|command| BuildStep {
                                    stamp: content_hash(&(&commit, &command)),
                                    command,
                                    best_effort: true,
                                }),
                                container: self.container_spec(
                                    &id,
                                    &w.image,
                                    w.command.clone(),
                                    &w.env,
                                    &w.mount,
                                    &checkout,
                                    (w.container_port, w.host_port),
                                    &commit,
                                    &w.branch,
                                ),
                                config: Some(DesiredConfig {
                                    path,
                                    committed,
                                    desired: desired_bytes,
                                }),
                                reload: w.reload.clone(),
                                repo: w.repo.clone(),
                                commit,
                                checkout,
                                id: id.clone(),
                            })
                        }
                    },
                }
            }
        };
        let unit = Unit {
            id,
            branch: w.branch.clone(),
            image: w.image.clone(),
            host_port: w.host_port,
            health: None,
            desired,
            observed: ObservedUnit::default(),
            error: None,
            notes: Vec::new(),
            healthy: None,
        };
        (unit, ctx)
    }

    /// Fills in what exists: containers (from the listing), checkout HEAD,
    /// build stamp and live config file.
    async fn observe(&self, units: &mut [Unit], all: &[Observed]) {
        for u in units.iter_mut() {
            u.observed.containers = all
                .iter()
                .filter(|c| UnitId::of(c).as_ref() == Some(&u.id))
                .cloned()
                .collect();
        }
        let paths: Vec<(PathBuf, Option<PathBuf>)> = units
            .iter()
            .map(|u| {
                let checkout = layout::checkout_dir(&self.cfg.work_dir, &u.id);
                let config = u
                    .desired
                    .as_ref()
                    .ok()
                    .and_then(|d| d.config.as_ref())
                    .map(|c| c.path.clone());
                (checkout, config)
            })
            .collect();
        let files = tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .map(|(checkout, config)| {
                    let head = Git::head(&checkout);
                    let stamp = std::fs::read_to_string(checkout.join(STAMP_FILE))
                        .ok()
                        .map(|s| s.trim().to_string());
                    let config = config.and_then(|p| std::fs::read(p).ok());
                    (head, stamp, config)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (u, (head, stamp, config)) in units.iter_mut().zip(files) {
            u.observed.head = head;
            u.observed.build_stamp = stamp;
            u.observed.config = config;
        }
    }

    async fn execute(&self, unit: &mut Unit, action: &Action) -> Result<(), String> {
        let Ok(d) = &unit.desired else {
            return Err("no desired state".into());
        };
        match action {
            Action::Checkout { commit, .. } => {
                let git = self.git.clone();
                let (path, commit) = (d.checkout.clone(), commit.clone());
                let repo = d.repo.clone();
                tokio::task::spawn_blocking(move || git.checkout(&repo, &path, &commit))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            Action::Build { .. } => {
                let b = d.build.as_ref().expect("planned builds exist");
                let env = Self::sdp_env(&d.id, &unit.branch, &d.commit);
                let result =
                    crate::hostcmd::run(&b.command, &d.checkout, &env, self.cfg.build_timeout)
                        .await;
                let stamp_ok = result.is_ok() || b.best_effort;
                if let Err(e) = &result {
                    if b.best_effort {
                        unit.notes.push(format!(
                            "prepare failed (best effort, deploying anyway): {e}"
                        ));
                    } else {
                        return Err(format!("build failed: {e}"));
                    }
                }
                if stamp_ok {
                    let stamp_path = d.checkout.join(STAMP_FILE);
                    let stamp = b.stamp.clone();
                    tokio::task::spawn_blocking(move || {
                        std::fs::create_dir_all(stamp_path.parent().expect("stamp has a parent"))?;
                        std::fs::write(stamp_path, stamp)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("writing the build stamp: {e}"))?;
                }
                Ok(())
            }
            Action::WriteConfig { .. } => {
                let c = d.config.as_ref().expect("planned config exists");
                let (path, bytes) = (c.path.clone(), c.desired.clone());
                tokio::task::spawn_blocking(move || layout::write_atomic(&path, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("writing {}: {e}", c.path.display()))
            }
            Action::Remove { id, .. } => self.engine.remove(id).await.map_err(|e| e.to_string()),
            Action::Create { .. } => self
                .engine
                .create_and_start(&d.container, &self.cfg.name)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Action::Start { id, .. } => self.engine.start(id).await.map_err(|e| e.to_string()),
            Action::Reload { id, .. } => {
                let cmd = d.reload.as_ref().expect("planned reloads have a command");
                let (code, output) = self.engine.exec(id, cmd).await.map_err(|e| e.to_string())?;
                if code != 0 {
                    return Err(format!(
                        "reload `{}` failed (exit code {code}): {}",
                        cmd.join(" "),
                        output.trim()
                    ));
                }
                Ok(())
            }
            Action::RemoveCheckout { .. } => Ok(()),
        }
    }

    async fn execute_gc(&self, action: &Action) -> Result<(), String> {
        match action {
            Action::Remove { id, .. } => self.engine.remove(id).await.map_err(|e| e.to_string()),
            Action::RemoveCheckout { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    match std::fs::remove_dir_all(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(format!("removing {}: {e}", path.display())),
                    }
                    // The sandbox's directory goes with its last checkout
                    // (remove_dir only removes an empty directory).
                    if let Some(parent) = path.parent() {
                        let _ = std::fs::remove_dir(parent);
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())?
            }
            other => Err(format!("not a garbage-collection action: {other}")),
        }
    }

    async fn check_health(&self, units: &mut [Unit]) {
        for u in units.iter_mut() {
            let Some(path) = &u.health else { continue };
            let running = u.observed.containers.iter().any(|c| c.running());
            if !running || u.error.is_some() {
                continue;
            }
            let host = if self.cfg.bind_ip == "0.0.0.0" {
                "127.0.0.1"
            } else {
                self.cfg.bind_ip.as_str()
            };
            let url = format!("http://{host}:{}{path}", u.host_port);
            u.healthy =
                Some(matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success()));
        }
    }

    async fn read_routes(&self, ctx: &RoutesCtx) -> Vec<RouteReport> {
        let path = ctx.path.clone();
        let live = tokio::task::spawn_blocking(move || std::fs::read(path).ok())
            .await
            .ok()
            .flatten();
        let live_map = live.as_deref().and_then(|b| UrlMap::parse(b).ok());
        let default_map = UrlMap::parse(&ctx.committed).ok();
        ctx.routes
            .iter()
            .map(|r| {
                let live = live_map.as_ref().and_then(|m| m.value(&r.key).ok());
                let default = default_map.as_ref().and_then(|m| m.value(&r.key).ok());
                let desired = match &r.target {
                    RouteTarget::Sandbox { url } => Some(url.clone()),
                    _ => default.clone(),
                };
                RouteReport {
                    service: r.service.clone(),
                    key: r.key.clone(),
                    routed_to_sandbox: live.is_some() && live != default,
                    live,
                    default,
                    desired,
                }
            })
            .collect()
    }
}

struct RoutesCtx {
    path: PathBuf,
    committed: Vec<u8>,
    routes: Vec<sdp_spec::wire::RouteWork>,
}

/// The committed file with this sandbox's routes patched in. Keys of
/// services that are not routed keep their committed value, so a file with
/// nothing routed is the committed file byte for byte.
fn desired_map(w: &GatewayWork, committed: &[u8]) -> Result<Vec<u8>, String> {
    let map = UrlMap::parse(committed).map_err(|e| e.to_string())?;
    let mut edits = BTreeMap::new();
    for r in &w.routes {
        if let RouteTarget::Sandbox { url } = &r.target {
            if let Some(var) = map.env_override(&r.key)
                && w.env.contains_key(var)
            {
                return Err(format!(
                    "key `{}` falls back to the environment variable {var}, which the gateway's env sets; the environment wins, so a patched file would not be served (remove {var} from the gateway record's env)",
                    r.key
                ));
            }
            edits.insert(r.key.clone(), url.clone());
        }
    }
    urlmap::patch(committed, &edits).map_err(|e| e.to_string())
}

fn unit_ids(sb: &SandboxWork) -> Vec<UnitId> {
    let mut ids: Vec<UnitId> = sb
        .services
        .iter()
        .map(|s| UnitId {
            sandbox: sb.sandbox.clone(),
            role: Role::Service,
            name: s.service.clone(),
        })
        .collect();
    if let Some(g) = &sb.gateway {
        ids.push(UnitId {
            sandbox: sb.sandbox.clone(),
            role: Role::Gateway,
            name: g.gateway.clone(),
        });
    }
    ids
}

fn build_report(
    sb: &SandboxWork,
    units: &[Unit],
    agent: &str,
    routes: Vec<RouteReport>,
) -> SandboxReport {
    let mut problems = Vec::new();
    let mut pending = Vec::new();
    let mut notes = Vec::new();
    let reports: Vec<UnitReport> = units
        .iter()
        .map(|u| {
            let want_hash = u.desired.as_ref().ok().map(|d| d.container.hash());
            let current = u
                .observed
                .containers
                .iter()
                .find(|c| want_hash.is_some() && c.label(LABEL_SPEC_HASH) == want_hash.as_deref())
                .or_else(|| u.observed.containers.first());
            let matches = current.is_some_and(|c| {
                want_hash.is_some() && c.label(LABEL_SPEC_HASH) == want_hash.as_deref()
            });
            let running = current.is_some_and(|c| c.running());
            let error = u
                .error
                .clone()
                .or_else(|| u.desired.as_ref().err().cloned());
            let ready = error.is_none() && matches && running && u.healthy != Some(false);
            if let Some(e) = &error {
                problems.push(format!("{}: {e}", u.id.name));
            } else if !ready {
                pending.push(match (matches, running, u.healthy) {
                    (true, true, Some(false)) => {
                        format!("{}: waiting for its health check", u.id.name)
                    }
                    (true, false, _) => format!("{}: container is not running", u.id.name),
                    _ => format!("{}: being deployed", u.id.name),
                });
            }
            notes.extend(u.notes.iter().map(|n| format!("{}: {n}", u.id.name)));
            UnitReport {
                name: u.id.name.clone(),
                role: u.id.role,
                agent: agent.to_string(),
                branch: u.branch.clone(),
                commit: current
                    .and_then(|c| c.label(LABEL_COMMIT))
                    .map(String::from),
                image: u.image.clone(),
                container_id: current.map(|c| c.id.clone()),
                container_state: current.map(|c| c.state.clone()),
                host_port: u.host_port,
                ready,
                error,
            }
        })
        .collect();
    let (phase, message) = if !problems.is_empty() {
        (Phase::Degraded, Some(problems.join("; ")))
    } else if !pending.is_empty() {
        (Phase::Progressing, Some(pending.join("; ")))
    } else {
        (Phase::Ready, (!notes.is_empty()).then(|| notes.join("; ")))
    };
    SandboxReport {
        sandbox: sb.sandbox.clone(),
        converged_generation: (phase == Phase::Ready).then(|| sb.generation.clone()),
        target_generation: sb.generation.clone(),
        phase,
        message,
        units: reports,
        routes,
    }
}

fn failed_report(sb: &SandboxWork, msg: &str) -> SandboxReport {
    SandboxReport {
        sandbox: sb.sandbox.clone(),
        converged_generation: None,
        target_generation: sb.generation.clone(),
        phase: Phase::Degraded,
        message: Some(msg.to_string()),
        units: Vec::new(),
        routes: Vec::new(),
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
