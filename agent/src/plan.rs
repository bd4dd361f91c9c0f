//! The planner: desired units + what was observed → the actions that make
//! them match. Pure, so it is tested exhaustively without Docker or git.
//!
//! Invariants:
//! - A unit whose checkout, build stamp, config file and container all match
//!   gets no action at all (a converged pass changes nothing).
//! - Actions come in a safe order per unit: checkout, build, config, then
//!   container replacement (the old container serves until the new build is
//!   ready), then reload.
//! - Only containers carrying this agent's labels are ever planned for removal.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use sdp_spec::wire::Role;

use crate::docker::{
    ContainerSpec, LABEL_BINDS_HASH, LABEL_CMD_HASH, LABEL_COMMIT, LABEL_ENV_HASH, LABEL_HOST_PORT,
    LABEL_IMAGE, LABEL_ROLE, LABEL_SANDBOX, LABEL_SPEC_HASH, LABEL_UNIT, Observed,
};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId {
    pub sandbox: String,
    pub role: Role,
    pub name: String,
}

impl UnitId {
    pub fn of(c: &Observed) -> Option<UnitId> {
        let role = match c.label(LABEL_ROLE)? {
            "service" => Role::Service,
            "gateway" => Role::Gateway,
            _ => return None,
        };
        Some(UnitId {
            sandbox: c.label(LABEL_SANDBOX)?.to_string(),
            role,
            name: c.label(LABEL_UNIT)?.to_string(),
        })
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Service => "service",
            Role::Gateway => "gateway",
        };
        write!(f, "{}/{role}/{}", self.sandbox, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildStep {
    pub command: Vec<String>,
    /// Identifies commit + command; written after a successful build.
    pub stamp: String,
    /// A failed `prepare` is reported but does not stop the deploy.
    pub best_effort: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredConfig {
    pub path: PathBuf,
    /// The file as committed at the unit's commit.
    pub committed: Vec<u8>,
    /// The file with the sandbox's routes patched in.
    pub desired: Vec<u8>,
    /// SDP's probe script in the gateway's web root, and its bytes.
    pub probe: Option<(PathBuf, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredUnit {
    pub id: UnitId,
    /// Repository URL (credential-free, as in the record).
    pub repo: String,
    pub commit: String,
    pub checkout: PathBuf,
    pub build: Option<BuildStep>,
    pub container: ContainerSpec,
    pub config: Option<DesiredConfig>,
    pub reload: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedUnit {
    /// Commit checked out, if the checkout exists.
    pub head: Option<String>,
    pub build_stamp: Option<String>,
    /// The live config file, for gateways.
    pub config: Option<Vec<u8>>,
    /// The probe script as found in the web root.
    pub probe: Option<Vec<u8>>,
    /// This unit's containers (found by labels).
    pub containers: Vec<Observed>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Checkout {
        unit: UnitId,
        commit: String,
    },
    Build {
        unit: UnitId,
    },
    WriteConfig {
        unit: UnitId,
    },
    WriteProbe {
        unit: UnitId,
    },
    Remove {
        unit: Option<UnitId>,
        id: String,
        name: String,
        reason: String,
    },
    Create {
        unit: UnitId,
    },
    Start {
        unit: UnitId,
        id: String,
    },
    Reload {
        unit: UnitId,
        id: String,
    },
    RemoveCheckout {
        path: PathBuf,
        reason: String,
    },
}

impl Action {
    pub fn unit(&self) -> Option<&UnitId> {
        match self {
            Action::Checkout { unit, .. }
            | Action::Build { unit }
            | Action::WriteConfig { unit }
            | Action::WriteProbe { unit }
            | Action::Create { unit }
            | Action::Start { unit, .. }
            | Action::Reload { unit, .. } => Some(unit),
            Action::Remove { unit, .. } => unit.as_ref(),
            Action::RemoveCheckout { .. } => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Checkout { unit, commit } => {
                write!(f, "{unit}: check out {}", &commit[..commit.len().min(12)])
            }
            Action::Build { unit } => write!(f, "{unit}: build"),
            Action::WriteConfig { unit } => write!(f, "{unit}: write URL map"),
            Action::WriteProbe { unit } => write!(f, "{unit}: write probe"),
            Action::Remove {
                unit: Some(unit),
                name,
                reason,
                ..
            } => write!(f, "{unit}: remove container {name} ({reason})"),
            Action::Remove {
                unit: None,
                name,
                reason,
                ..
            } => write!(f, "remove container {name} ({reason})"),
            Action::Create { unit } => write!(f, "{unit}: create container"),
            Action::Start { unit, .. } => write!(f, "{unit}: start container"),
            Action::Reload { unit, .. } => write!(f, "{unit}: reload"),
            Action::RemoveCheckout { path, reason } => {
                write!(f, "remove checkout {} ({reason})", path.display())
            }
        }
    }
}

/// What it takes to make one unit match.
pub fn plan_unit(d: &DesiredUnit, o: &ObservedUnit) -> Vec<Action> {
    let mut actions = Vec::new();
    let unit = || d.id.clone();

    let needs_checkout = o.head.as_deref() != Some(d.commit.as_str());
    if needs_checkout {
        actions.push(Action::Checkout {
            unit: unit(),
            commit: d.commit.clone(),
        });
    }
    if let Some(b) = &d.build
        && o.build_stamp.as_deref() != Some(b.stamp.as_str())
    {
        actions.push(Action::Build { unit: unit() });
    }

    // A checkout puts the committed file back, so compare with that.
    let config_changes = d.config.as_ref().is_some_and(|c| {
        let after_checkout = if needs_checkout {
            Some(&c.committed)
        } else {
            o.config.as_ref()
        };
        after_checkout != Some(&c.desired)
    });
    if config_changes {
        actions.push(Action::WriteConfig { unit: unit() });
    }
    if let Some(c) = &d.config
        && let Some((_, bytes)) = &c.probe
        && o.probe.as_ref() != Some(bytes)
    {
        actions.push(Action::WriteProbe { unit: unit() });
    }

    let want = d.container.hash();
    let gone = |c: &&Observed| matches!(c.state.as_str(), "removing" | "dead");
    let mut matching: Vec<&Observed> = o
        .containers
        .iter()
        .filter(|c| c.label(LABEL_SPEC_HASH) == Some(want.as_str()) && !gone(c))
        .collect();
    // Prefer keeping a running one.
    matching.sort_by_key(|c| !c.running());
    let mut keep = matching.first().copied();
    // Without a reload command, a changed URL map needs a fresh container.
    if config_changes && d.reload.is_none() && keep.is_some() {
        keep = None;
    }
    for c in &o.containers {
        if keep.is_some_and(|k| k.id == c.id) {
            continue;
        }
        let reason = if matching.iter().any(|m| m.id == c.id) {
            if config_changes && d.reload.is_none() {
                "the URL map changed and the gateway has no reload command".to_string()
            } else {
                "duplicate container for this unit".to_string()
            }
        } else {
            why_replace(d, c)
        };
        actions.push(Action::Remove {
            unit: Some(unit()),
            id: c.id.clone(),
            name: c.name.clone(),
            reason,
        });
    }
    match keep {
        None => actions.push(Action::Create { unit: unit() }),
        Some(c) if !c.running() => actions.push(Action::Start {
            unit: unit(),
            id: c.id.clone(),
        }),
        Some(c) => {
            if config_changes && d.reload.is_some() {
                actions.push(Action::Reload {
                    unit: unit(),
                    id: c.id.clone(),
                });
            }
        }
    }
    actions
}

/// Plain words for why a container no longer matches.
fn why_replace(d: &DesiredUnit, c: &Observed) -> String {
    if matches!(c.state.as_str(), "removing" | "dead") {
        return format!("container is {}", c.state);
    }
    let mut why = Vec::new();
    if c.label(LABEL_COMMIT) != Some(d.commit.as_str()) {
        let old = c.label(LABEL_COMMIT).unwrap_or("?");
        why.push(format!(
            "commit {} -> {}",
            &old[..old.len().min(12)],
            &d.commit[..d.commit.len().min(12)]
        ));
    }
    if c.label(LABEL_IMAGE) != Some(d.container.image.as_str()) {
        why.push(format!(
            "image {} -> {}",
            c.label(LABEL_IMAGE).unwrap_or("?"),
            d.container.image
        ));
    }
    if c.label(LABEL_HOST_PORT) != Some(d.container.host_port.to_string().as_str()) {
        why.push(format!(
            "host port {} -> {}",
            c.label(LABEL_HOST_PORT).unwrap_or("?"),
            d.container.host_port
        ));
    }
    for (label, what) in [
        (LABEL_CMD_HASH, "command"),
        (LABEL_ENV_HASH, "environment"),
        (LABEL_BINDS_HASH, "mounts"),
    ] {
        if c.label(label) != d.container.labels.get(label).map(String::as_str) {
            why.push(format!("{what} changed"));
        }
    }
    if why.is_empty() {
        "its configuration changed".into()
    } else {
        why.join(", ")
    }
}

/// Containers and checkouts that no desired unit claims.
pub fn plan_gc(
    desired: &BTreeSet<UnitId>,
    containers: &[Observed],
    checkouts: &[(UnitId, PathBuf)],
) -> Vec<Action> {
    let assigned_sandboxes: BTreeSet<&str> = desired.iter().map(|u| u.sandbox.as_str()).collect();
    let reason = |u: &UnitId| {
        if assigned_sandboxes.contains(u.sandbox.as_str()) {
            format!("{u} is no longer part of sandbox {}", u.sandbox)
        } else {
            format!("sandbox {} is no longer assigned to this agent", u.sandbox)
        }
    };
    let mut actions = Vec::new();
    for c in containers {
        match UnitId::of(c) {
            Some(u) if desired.contains(&u) => {}
            Some(u) => actions.push(Action::Remove {
                unit: None,
                id: c.id.clone(),
                name: c.name.clone(),
                reason: reason(&u),
            }),
            None => actions.push(Action::Remove {
                unit: None,
                id: c.id.clone(),
                name: c.name.clone(),
                reason: "labelled as SDP's but names no sandbox unit".into(),
            }),
        }
    }
    for (u, path) in checkouts {
        if !desired.contains(u) {
            actions.push(Action::RemoveCheckout {
                path: path.clone(),
                reason: reason(u),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id() -> UnitId {
        UnitId {
            sandbox: "alice".into(),
            role: Role::Service,
            name: "eredar".into(),
        }
    }

    fn spec() -> ContainerSpec {
        let labels = BTreeMap::from([
            (LABEL_COMMIT.to_string(), "c1".to_string()),
            (LABEL_IMAGE.to_string(), "img".to_string()),
            (LABEL_HOST_PORT.to_string(), "9001".to_string()),
        ]);
        ContainerSpec {
            name: "sdp-alice-eredar".into(),
            image: "img".into(),
            cmd: None,
            env: vec![],
            binds: vec![],
            container_port: 8080,
            host_ip: "127.0.0.1".into(),
            host_port: 9001,
            extra_hosts: vec![],
            labels,
        }
    }

    fn desired() -> DesiredUnit {
        DesiredUnit {
            id: id(),
            repo: "/srv/e.git".into(),
            commit: "c1".into(),
            checkout: "/w/alice/eredar".into(),
            build: Some(BuildStep {
                command: vec!["go".into()],
                stamp: "s1".into(),
                best_effort: false,
            }),
            container: spec(),
            config: None,
            reload: None,
        }
    }

    fn container(id: &str, spec: &ContainerSpec, state: &str) -> Observed {
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_SPEC_HASH.into(), spec.hash());
        labels.insert(LABEL_SANDBOX.into(), "alice".into());
        labels.insert(LABEL_ROLE.into(), "service".into());
        labels.insert(LABEL_UNIT.into(), "eredar".into());
        Observed {
            id: id.into(),
            name: spec.name.clone(),
            labels,
            state: state.into(),
            status: String::new(),
        }
    }

    fn converged() -> ObservedUnit {
        ObservedUnit {
            head: Some("c1".into()),
            build_stamp: Some("s1".into()),
            config: None,
            probe: None,
            containers: vec![container("x1", &spec(), "running")],
        }
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn converged_unit_needs_nothing() {
        assert_eq!(plan_unit(&desired(), &converged()), vec![]);
    }

    #[test]
    fn fresh_unit_is_checked_out_built_and_created() {
        let a = plan_unit(&desired(), &ObservedUnit::default());
        assert_eq!(
            names(&a),
            [
                "alice/service/eredar: check out c1",
                "alice/service/eredar: build",
                "alice/service/eredar: create container"
            ]
        );
    }

    #[test]
    fn new_commit_checks_out_builds_then_replaces() {
        let mut d = desired();
        d.commit = "c2".into();
        d.build.as_mut().unwrap().stamp = "s2".into();
        d.container.labels.insert(LABEL_COMMIT.into(), "c2".into());
        let a = plan_unit(&d, &converged());
        assert_eq!(
            names(&a),
            [
                "alice/service/eredar: check out c2",
                "alice/service/eredar: build",
                "alice/service/eredar: remove container sdp-alice-eredar (commit c1 -> c2)",
                "alice/service/eredar: create container",
            ]
        );
    }

    #[test]
    fn stopped_container_with_the_right_spec_is_started() {
        let mut o = converged();
        o.containers[0].state = "exited".into();
        assert_eq!(
            plan_unit(&desired(), &o),
            vec![Action::Start {
                unit: id(),
                id: "x1".into()
            }]
        );
    }

    #[test]
    fn image_and_port_changes_are_explained() {
        let mut d = desired();
        d.container.image = "img2".into();
        d.container.labels.insert(LABEL_IMAGE.into(), "img2".into());
        d.container.host_port = 9002;
        d.container
            .labels
            .insert(LABEL_HOST_PORT.into(), "9002".into());
        let a = plan_unit(&d, &converged());
        assert_eq!(
            names(&a),
            [
                "alice/service/eredar: remove container sdp-alice-eredar (image img -> img2, host port 9001 -> 9002)",
                "alice/service/eredar: create container"
            ]
        );
        let mut d = desired();
        d.container.env = vec!["A=b".into()];
        d.container
            .labels
            .insert(LABEL_ENV_HASH.into(), "new".into());
        assert!(names(&plan_unit(&d, &converged()))[0].ends_with("(environment changed)"));
        let mut d = desired();
        d.container.env = vec!["A=b".into()];
        assert!(names(&plan_unit(&d, &converged()))[0].ends_with("(its configuration changed)"));
    }

    #[test]
    fn duplicates_are_removed_keeping_a_running_one() {
        let mut o = converged();
        o.containers.insert(0, container("x0", &spec(), "exited"));
        let a = plan_unit(&desired(), &o);
        assert_eq!(
            a,
            vec![Action::Remove {
                unit: Some(id()),
                id: "x0".into(),
                name: "sdp-alice-eredar".into(),
                reason: "duplicate container for this unit".into()
            }]
        );
    }

    #[test]
    fn a_container_being_removed_does_not_count() {
        let mut o = converged();
        o.containers[0].state = "removing".into();
        let a = plan_unit(&desired(), &o);
        assert_eq!(
            names(&a),
            [
                "alice/service/eredar: remove container sdp-alice-eredar (container is removing)",
                "alice/service/eredar: create container"
            ]
        );
    }

    #[test]
    fn build_is_redone_when_the_stamp_differs_only() {
        let mut o = converged();
        o.build_stamp = None;
        assert_eq!(
            names(&plan_unit(&desired(), &o)),
            ["alice/service/eredar: build"]
        );
        let mut d = desired();
        d.build = None;
        assert_eq!(plan_unit(&d, &o), vec![]);
    }

    fn gateway(reload: bool) -> (DesiredUnit, ObservedUnit) {
        let mut d = desired();
        d.id.role = Role::Gateway;
        d.build = None;
        d.config = Some(DesiredConfig {
            path: "/w/c.php".into(),
            committed: b"ocp".to_vec(),
            desired: b"sandbox".to_vec(),
            probe: Some(("/w/sdp-probe.php".into(), b"probe".to_vec())),
        });
        d.reload = reload.then(|| vec!["apache2ctl".into(), "-k".into(), "graceful".into()]);
        let mut o = converged();
        o.config = Some(b"sandbox".to_vec());
        o.probe = Some(b"probe".to_vec());
        o.containers = vec![{
            let mut c = container("g1", &d.container, "running");
            c.labels.insert(LABEL_ROLE.into(), "gateway".into());
            c
        }];
        (d, o)
    }

    #[test]
    fn gateway_config_is_written_and_reloaded_only_when_it_differs() {
        let (d, o) = gateway(true);
        assert_eq!(plan_unit(&d, &o), vec![]);
        let mut edited = o.clone();
        edited.config = Some(b"hand edit".to_vec());
        assert_eq!(
            names(&plan_unit(&d, &edited)),
            [
                "alice/gateway/eredar: write URL map",
                "alice/gateway/eredar: reload"
            ]
        );
        let mut missing = o.clone();
        missing.config = None;
        assert_eq!(
            names(&plan_unit(&d, &missing))[0],
            "alice/gateway/eredar: write URL map"
        );
    }

    #[test]
    fn a_missing_or_changed_probe_is_written() {
        let (d, mut o) = gateway(true);
        o.probe = None;
        assert_eq!(
            names(&plan_unit(&d, &o)),
            ["alice/gateway/eredar: write probe"]
        );
        o.probe = Some(b"old probe".to_vec());
        assert_eq!(
            names(&plan_unit(&d, &o)),
            ["alice/gateway/eredar: write probe"]
        );
    }

    #[test]
    fn gateway_without_reload_is_replaced_when_the_map_changes() {
        let (d, mut o) = gateway(false);
        o.config = Some(b"ocp".to_vec());
        let a = names(&plan_unit(&d, &o));
        assert_eq!(
            a,
            [
                "alice/gateway/eredar: write URL map",
                "alice/gateway/eredar: remove container sdp-alice-eredar (the URL map changed and the gateway has no reload command)",
                "alice/gateway/eredar: create container"
            ]
        );
    }

    #[test]
    fn checkout_resets_the_map_so_it_is_rewritten_after() {
        let (mut d, o) = gateway(true);
        d.commit = "c2".into();
        let a = names(&plan_unit(&d, &o));
        assert_eq!(a[0], "alice/gateway/eredar: check out c2");
        assert_eq!(a[1], "alice/gateway/eredar: write URL map");
        // Committed equals desired (nothing routed): no write after checkout.
        let (mut d, mut o) = gateway(true);
        d.commit = "c2".into();
        d.config.as_mut().unwrap().desired = b"ocp".to_vec();
        o.config = Some(b"ocp".to_vec());
        assert!(
            !names(&plan_unit(&d, &o))
                .iter()
                .any(|n| n.contains("write URL map"))
        );
    }

    #[test]
    fn gc_removes_what_no_unit_claims() {
        let keep = container("k", &spec(), "running");
        let mut other_unit = container("o", &spec(), "running");
        other_unit.labels.insert(LABEL_UNIT.into(), "ledger".into());
        let mut other_sb = container("s", &spec(), "exited");
        other_sb.labels.insert(LABEL_SANDBOX.into(), "bob".into());
        let mut unlabelled = container("u", &spec(), "running");
        unlabelled.labels.remove(LABEL_UNIT);
        let desired = BTreeSet::from([id()]);
        let bob = UnitId {
            sandbox: "bob".into(),
            role: Role::Service,
            name: "eredar".into(),
        };
        let a = plan_gc(
            &desired,
            &[keep, other_unit, other_sb, unlabelled],
            &[(id(), "/w/a".into()), (bob, "/w/b".into())],
        );
        assert_eq!(
            names(&a),
            [
                "remove container sdp-alice-eredar (alice/service/ledger is no longer part of sandbox alice)",
                "remove container sdp-alice-eredar (sandbox bob is no longer assigned to this agent)",
                "remove container sdp-alice-eredar (labelled as SDP's but names no sandbox unit)",
                "remove checkout /w/b (sandbox bob is no longer assigned to this agent)",
            ]
        );
        assert_eq!(plan_gc(&desired, &[], &[]), vec![]);
    }
}
