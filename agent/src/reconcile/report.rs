//! What the agent tells the controller about a sandbox: phase, units, the
//! route table, and drift.

use sdp_spec::wire::{DriftEvent, Phase, SandboxReport, SandboxWork, UnitReport, now_ms};

use super::desire::Unit;
use super::short;
use crate::docker::{LABEL_COMMIT, LABEL_SPEC_HASH};
use crate::gateway::route_reports;
use crate::plan::Action;
use crate::urlmap::UrlMap;

pub(super) fn build_report(
    sb: &SandboxWork,
    units: &[Unit],
    agent: &str,
    drift: Vec<DriftEvent>,
) -> SandboxReport {
    let mut problems = Vec::new();
    let mut pending = Vec::new();
    let mut notes = Vec::new();
    let mut routes = Vec::new();
    let reports: Vec<UnitReport> = units
        .iter()
        .map(|u| {
            let want_hash = u.desired.as_ref().ok().map(|d| d.container.hash());
            let matching = |c: &&crate::docker::Observed| {
                want_hash.is_some() && c.label(LABEL_SPEC_HASH) == want_hash.as_deref()
            };
            let current = u
                .observed
                .containers
                .iter()
                .find(matching)
                .or_else(|| u.observed.containers.first());
            let matches = current.is_some_and(|c| matching(&c));
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
            if let Some(ctx) = &u.gateway {
                routes = route_reports(
                    &ctx.work,
                    &ctx.plan,
                    ctx.live_file.as_deref(),
                    ctx.served.as_ref(),
                );
            }
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
                healthy: u.healthy,
                branch_head: u.branch_head.clone(),
                pinned: u.pinned,
                // Docker's "Up 3 seconds" ages as soon as it is read; only
                // what says something is wrong is worth keeping.
                container_status: current
                    .map(|c| c.status.clone())
                    .filter(|s| !s.is_empty() && !s.starts_with("Up ")),
                restarts: u.restarts,
                blocked: error.as_ref().is_some_and(|e| e.blocked),
                error: error.map(|e| e.message),
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
        drift,
    }
}

pub(super) fn failed_report(sb: &SandboxWork, msg: &str) -> SandboxReport {
    SandboxReport {
        sandbox: sb.sandbox.clone(),
        converged_generation: None,
        target_generation: sb.generation.clone(),
        phase: Phase::Degraded,
        message: Some(msg.to_string()),
        units: Vec::new(),
        routes: Vec::new(),
        drift: Vec::new(),
    }
}

/// In a sandbox that was converged at this generation, every planned change
/// answers something that drifted; say what, in plain words.
pub(super) fn drift_events(u: &Unit, plan: &[Action]) -> Vec<DriftEvent> {
    let Ok(d) = &u.desired else { return Vec::new() };
    let event = |what: String, desired: Option<String>, found: Option<String>| DriftEvent {
        at_ms: now_ms(),
        agent: String::new(),
        unit: u.id.name.clone(),
        what,
        desired,
        found,
    };
    let running_commit = u
        .observed
        .containers
        .iter()
        .find_map(|c| c.label(LABEL_COMMIT))
        .map(String::from);
    let mut out = Vec::new();
    for action in plan {
        match action {
            Action::Checkout { commit, .. } => match (&u.observed.head, &running_commit) {
                (_, Some(run)) if run != commit => out.push(event(
                    format!("branch {} moved upstream", u.branch),
                    Some(short(commit).into()),
                    Some(short(run).into()),
                )),
                (Some(head), _) => out.push(event(
                    "the checkout was moved to another commit".into(),
                    Some(short(commit).into()),
                    Some(short(head).into()),
                )),
                (None, _) => out.push(event(
                    "the checkout is missing".into(),
                    Some(short(commit).into()),
                    None,
                )),
            },
            Action::WriteConfig { .. } => {
                let c = d.config.as_ref().expect("planned config exists");
                let live = u
                    .observed
                    .config
                    .as_deref()
                    .and_then(|b| UrlMap::parse(b).ok());
                let want = UrlMap::parse(&c.desired).ok();
                let mut keys = 0;
                if let (Some(live), Some(want), Some(ctx)) = (&live, &want, &u.gateway) {
                    for r in &ctx.work.routes {
                        let (found, desired) = (live.value(&r.key).ok(), want.value(&r.key).ok());
                        if found != desired {
                            keys += 1;
                            out.push(event(
                                format!("URL map entry {} was edited by hand", r.key),
                                desired,
                                found,
                            ));
                        }
                    }
                }
                if keys == 0 {
                    let what = if u.observed.config.is_none() {
                        "the URL map file is missing"
                    } else {
                        "the URL map file was edited by hand"
                    };
                    out.push(event(what.into(), None, None));
                }
            }
            Action::Build { .. } if !plan.iter().any(|a| matches!(a, Action::Checkout { .. })) => {
                out.push(event(
                    "the build output is missing or stale".into(),
                    None,
                    None,
                ));
            }
            Action::Remove { name, reason, .. } => {
                out.push(event(
                    format!("container {name} does not match: {reason}"),
                    None,
                    None,
                ));
            }
            Action::Create { .. } if u.observed.containers.is_empty() => out.push(event(
                "the container is gone".into(),
                Some(d.container.name.clone()),
                None,
            )),
            Action::Start { .. } => {
                let state = u.observed.containers.first().map(|c| c.state.clone());
                out.push(event(
                    "the container is stopped".into(),
                    Some("running".into()),
                    state,
                ));
            }
            _ => {}
        }
    }
    out
}
