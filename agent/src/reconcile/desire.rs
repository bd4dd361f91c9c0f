//! What each unit of a sandbox should be, and what it is: desired units from
//! the work (branches resolved to commits, URL maps computed from git), and
//! observed units from the container listing and the files on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sdp_spec::wire::{GatewayWork, Role, SandboxWork, ServiceWork, content_hash};

use super::{Failure, Reconciler, short};
use crate::docker::{
    ContainerSpec, LABEL_AGENT, LABEL_BINDS_HASH, LABEL_BRANCH, LABEL_CMD_HASH, LABEL_COMMIT,
    LABEL_ENV_HASH, LABEL_HOST_PORT, LABEL_IMAGE, LABEL_MANAGED, LABEL_ROLE, LABEL_SANDBOX,
    LABEL_UNIT, Observed,
};
use crate::gateway::{MapPlan, PROBE_FILE, plan_map, probe_script, web_root};
use crate::git::{Git, Pinned};
use crate::layout;
use crate::plan::{BuildStep, DesiredConfig, DesiredUnit, ObservedUnit, UnitId};

/// Where a build's stamp lives inside a checkout.
pub(super) const STAMP_FILE: &str = ".sdp/build.stamp";

/// A gateway unit's URL map context.
pub(super) struct GatewayCtx {
    pub work: GatewayWork,
    pub plan: MapPlan,
    /// URL of SDP's probe in the running gateway.
    pub probe_url: String,
    /// What the gateway served when last probed (filled by verification).
    pub served: Option<BTreeMap<String, Option<String>>>,
    /// The config file as it is after this pass (filled by verification).
    pub live_file: Option<Vec<u8>>,
}

/// One unit as the pass sees it.
pub(super) struct Unit {
    pub id: UnitId,
    pub branch: String,
    pub image: String,
    pub host_port: u16,
    pub health: Option<String>,
    pub desired: Result<DesiredUnit, Failure>,
    pub observed: ObservedUnit,
    pub gateway: Option<GatewayCtx>,
    pub error: Option<Failure>,
    pub notes: Vec<String>,
    pub healthy: Option<bool>,
    /// Something was changed for this unit in this pass.
    pub changed: bool,
    /// Where the branch points, when the remote was asked.
    pub branch_head: Option<String>,
    /// The sandbox pins the commit.
    pub pinned: bool,
    /// Docker's restart count, for a container that is not running.
    pub restarts: Option<i64>,
}

impl Unit {
    fn new(
        id: UnitId,
        branch: &str,
        image: &str,
        host_port: u16,
        desired: Result<DesiredUnit, Failure>,
    ) -> Self {
        Self {
            id,
            branch: branch.to_string(),
            image: image.to_string(),
            host_port,
            health: None,
            desired,
            observed: ObservedUnit::default(),
            gateway: None,
            error: None,
            notes: Vec::new(),
            healthy: None,
            changed: false,
            branch_head: None,
            pinned: false,
            restarts: None,
        }
    }
}

pub(super) fn unit_ids(sb: &SandboxWork) -> Vec<UnitId> {
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

/// The environment SDP gives every container and host command of a unit.
pub(super) fn sdp_env(id: &UnitId, branch: &str, commit: &str) -> Vec<(String, String)> {
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

/// Everything a container is made from, besides its spec hash.
struct ContainerInput<'a> {
    image: &'a str,
    cmd: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    mount: &'a str,
    checkout: &'a Path,
    container_port: u16,
    host_port: u16,
    commit: &'a str,
    branch: &'a str,
}

impl Reconciler {
    fn container_spec(&self, id: &UnitId, c: ContainerInput<'_>) -> ContainerSpec {
        let mut env = c.env;
        env.extend(sdp_env(id, c.branch, c.commit));
        let role = match id.role {
            Role::Service => "service",
            Role::Gateway => "gateway",
        };
        let labels = BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_AGENT.to_string(), self.cfg.name.clone()),
            (LABEL_SANDBOX.to_string(), id.sandbox.clone()),
            (LABEL_ROLE.to_string(), role.to_string()),
            (LABEL_UNIT.to_string(), id.name.clone()),
            (LABEL_COMMIT.to_string(), c.commit.to_string()),
            (LABEL_BRANCH.to_string(), c.branch.to_string()),
            (LABEL_IMAGE.to_string(), c.image.to_string()),
            (LABEL_HOST_PORT.to_string(), c.host_port.to_string()),
        ]);
        let mut labels = labels;
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let binds = vec![format!("{}:{}", c.checkout.display(), c.mount)];
        labels.insert(LABEL_ENV_HASH.into(), content_hash(&env));
        labels.insert(LABEL_CMD_HASH.into(), content_hash(&c.cmd));
        labels.insert(LABEL_BINDS_HASH.into(), content_hash(&binds));
        ContainerSpec {
            name: format!("sdp-{}-{}", id.sandbox, id.name),
            image: c.image.to_string(),
            cmd: c.cmd,
            env,
            binds,
            container_port: c.container_port,
            host_ip: self.cfg.bind_ip.clone(),
            host_port: c.host_port,
            extra_hosts: vec!["host.docker.internal:host-gateway".into()],
            labels,
        }
    }

    pub(super) async fn service_unit(
        &mut self,
        sb: &SandboxWork,
        w: &ServiceWork,
        fresh: bool,
    ) -> Unit {
        let id = UnitId {
            sandbox: sb.sandbox.clone(),
            role: Role::Service,
            name: w.service.clone(),
        };
        let checkout = layout::checkout_dir(&self.cfg.work_dir, &id);
        let head = self.commit_for(&w.repo, &w.branch, fresh).await;
        let branch_head = head.as_ref().ok().cloned();
        let commit = match (&head, &w.commit) {
            (Err(e), _) => Err(e.clone()),
            (Ok(head), None) => Ok(head.clone()),
            (Ok(head), Some(pin)) => self.pinned_commit(w, pin, head).await,
        };
        let desired = commit.map(|commit| DesiredUnit {
            build: w.build.clone().map(|command| BuildStep {
                stamp: content_hash(&(&commit, &command)),
                command,
                best_effort: false,
            }),
            container: self.container_spec(
                &id,
                ContainerInput {
                    image: &w.image,
                    cmd: w.command.clone(),
                    env: w.env.clone(),
                    mount: &w.mount,
                    checkout: &checkout,
                    container_port: w.container_port,
                    host_port: w.host_port,
                    commit: &commit,
                    branch: &w.branch,
                },
            ),
            id: id.clone(),
            repo: w.repo.clone(),
            checkout: checkout.clone(),
            config: None,
            reload: None,
            commit,
        });
        let mut unit = Unit::new(id, &w.branch, &w.image, w.host_port, desired);
        unit.health = w.health.clone();
        unit.branch_head = branch_head;
        unit.pinned = w.commit.is_some();
        unit
    }

    /// A pinned commit, which must belong to the branch (it was fetched with it).
    async fn pinned_commit(
        &self,
        w: &ServiceWork,
        pin: &str,
        head: &str,
    ) -> Result<String, Failure> {
        let git = self.git.clone();
        let (repo, p, h) = (w.repo.clone(), pin.to_string(), head.to_string());
        match tokio::task::spawn_blocking(move || git.commit_in_branch(&repo, &p, &h)).await {
            Err(e) => Err(Failure::transient(e.to_string())),
            Ok(Err(e)) => Err(Failure::transient(e.to_string())),
            Ok(Ok(Pinned::OnBranch(full))) => Ok(full),
            Ok(Ok(Pinned::Elsewhere)) => Err(Failure::blocked(format!(
                "commit {pin} is not on branch {}",
                w.branch
            ))),
            Ok(Ok(Pinned::Unknown)) => Err(Failure::blocked(format!(
                "commit {pin} does not exist in {} (branch {} was fetched)",
                crate::git::redact_url(&w.repo),
                w.branch
            ))),
        }
    }

    pub(super) async fn gateway_unit(
        &mut self,
        sb: &SandboxWork,
        w: &GatewayWork,
        fresh: bool,
    ) -> Unit {
        let id = UnitId {
            sandbox: sb.sandbox.clone(),
            role: Role::Gateway,
            name: w.gateway.clone(),
        };
        let checkout = layout::checkout_dir(&self.cfg.work_dir, &id);
        let mut ctx = None;
        let head = self.commit_for(&w.repo, &w.branch, fresh).await;
        let branch_head = head.as_ref().ok().cloned();
        let desired = match head {
            Err(e) => Err(e),
            Ok(commit) => match self.committed_file(w, &commit).await {
                Err(e) => Err(e),
                Ok(committed) => match plan_map(w, &committed) {
                    Err(e) => Err(Failure::blocked(format!("{}: {e}", w.config_file))),
                    Ok(plan) => {
                        let web = web_root(w);
                        let probe_path = checkout.join(&web).join(PROBE_FILE);
                        let keys: Vec<String> = w.routes.iter().map(|r| r.key.clone()).collect();
                        let in_container =
                            format!("{}/{}", w.mount.trim_end_matches('/'), w.config_file);
                        let probe = probe_script(&self.probe_token, &in_container, &keys);
                        let host = if self.cfg.bind_ip == "0.0.0.0" {
                            "127.0.0.1"
                        } else {
                            self.cfg.bind_ip.as_str()
                        };
                        // The web root is served at `/`, so the probe is at `/sdp-probe.php`.
                        let probe_url = format!(
                            "http://{}:{}/{PROBE_FILE}?token={}",
                            bracket(host),
                            w.host_port,
                            self.probe_token
                        );
                        let mut env = w.env.clone();
                        env.extend(plan.extra_env.clone());
                        let unit = DesiredUnit {
                            build: w.prepare.clone().map(|command| BuildStep {
                                stamp: content_hash(&(&commit, &command)),
                                command,
                                best_effort: true,
                            }),
                            container: self.container_spec(
                                &id,
                                ContainerInput {
                                    image: &w.image,
                                    cmd: w.command.clone(),
                                    env,
                                    mount: &w.mount,
                                    checkout: &checkout,
                                    container_port: w.container_port,
                                    host_port: w.host_port,
                                    commit: &commit,
                                    branch: &w.branch,
                                },
                            ),
                            config: Some(DesiredConfig {
                                path: checkout.join(&w.config_file),
                                committed: plan.committed.clone(),
                                desired: plan.desired.clone(),
                                probe: Some((probe_path, probe)),
                            }),
                            reload: w.reload.clone(),
                            id: id.clone(),
                            repo: w.repo.clone(),
                            checkout: checkout.clone(),
                            commit,
                        };
                        ctx = Some(GatewayCtx {
                            work: w.clone(),
                            plan,
                            probe_url,
                            served: None,
                            live_file: None,
                        });
                        Ok(unit)
                    }
                },
            },
        };
        let mut unit = Unit::new(id, &w.branch, &w.image, w.host_port, desired);
        unit.gateway = ctx;
        unit.branch_head = branch_head;
        unit
    }

    /// The config file as committed at `commit`, from the git cache.
    async fn committed_file(&self, w: &GatewayWork, commit: &str) -> Result<Vec<u8>, Failure> {
        let git = self.git.clone();
        let (repo, c, file) = (w.repo.clone(), commit.to_string(), w.config_file.clone());
        match tokio::task::spawn_blocking(move || git.file_at(&repo, &c, &file)).await {
            Err(e) => Err(Failure::transient(e.to_string())),
            Ok(Err(e)) => Err(Failure::transient(e.to_string())),
            Ok(Ok(None)) => Err(Failure::blocked(format!(
                "{} does not exist in the gateway at commit {}",
                w.config_file,
                short(commit)
            ))),
            Ok(Ok(Some(bytes))) => Ok(bytes),
        }
    }

    /// Fills in what exists: containers (from the listing), checkout HEAD,
    /// build stamp, the live config file and the probe.
    pub(super) async fn observe(&self, units: &mut [Unit], all: &[Observed]) {
        for u in units.iter_mut() {
            u.observed.containers = all
                .iter()
                .filter(|c| UnitId::of(c).as_ref() == Some(&u.id))
                .cloned()
                .collect();
        }
        let paths: Vec<(PathBuf, Option<PathBuf>, Option<PathBuf>)> = units
            .iter()
            .map(|u| {
                let checkout = layout::checkout_dir(&self.cfg.work_dir, &u.id);
                let config = u.desired.as_ref().ok().and_then(|d| d.config.as_ref());
                (
                    checkout,
                    config.map(|c| c.path.clone()),
                    config
                        .and_then(|c| c.probe.as_ref())
                        .map(|(p, _)| p.clone()),
                )
            })
            .collect();
        let files = tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .map(|(checkout, config, probe)| {
                    let head = Git::head(&checkout);
                    let stamp = std::fs::read_to_string(checkout.join(STAMP_FILE))
                        .ok()
                        .map(|s| s.trim().to_string());
                    let config = config.and_then(|p| std::fs::read(p).ok());
                    let probe = probe.and_then(|p| std::fs::read(p).ok());
                    (head, stamp, config, probe)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (u, (head, stamp, config, probe)) in units.iter_mut().zip(files) {
            u.observed.head = head;
            u.observed.build_stamp = stamp;
            u.observed.config = config;
            u.observed.probe = probe;
            // Only a container that is not running is looked at more closely.
            if let Some(c) = u.observed.containers.iter().find(|c| !c.running()) {
                u.restarts = self.engine.restart_count(&c.id).await;
            }
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
