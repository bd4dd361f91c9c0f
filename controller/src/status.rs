//! A sandbox's status, derived from the reports of the agents that run its
//! parts. Pure: given records, reports and the time, the answer is fixed.

use std::collections::BTreeMap;

use sdp_spec::record::Sandbox;
use sdp_spec::wire::{
    AgentInfo, AgentProgress, AgentReport, Condition, Phase, RouteReport, SandboxStatus, Tombstone,
    UnitReport,
};

use crate::catalog::Records;
use crate::resolve::{agents_of, sandbox_work};

pub struct Inputs<'a> {
    pub records: &'a Records,
    pub agents: &'a BTreeMap<String, AgentInfo>,
    pub reports: &'a BTreeMap<String, AgentReport>,
    pub now_ms: u64,
    pub stale_after_ms: u64,
}

pub fn sandbox_status(sb: &Sandbox, revision: u64, inp: &Inputs<'_>) -> SandboxStatus {
    let mut units = Vec::new();
    let mut routes = Vec::new();
    let mut drift = Vec::new();
    let mut progress = Vec::new();
    let mut problems: Vec<(Phase, String)> = Vec::new();

    for agent in agents_of(sb, inp.records) {
        let expected = sandbox_work(&agent, sb, inp.records, inp.agents).map(|w| w.generation);
        let info = inp.agents.get(&agent);
        let age = info.map(|a| inp.now_ms.saturating_sub(a.last_seen_ms));
        let stale = age.is_none_or(|a| a > inp.stale_after_ms);
        let report = inp
            .reports
            .get(&agent)
            .and_then(|r| r.sandboxes.iter().find(|s| s.sandbox == sb.name.as_str()));
        let converged = match (report, &expected) {
            (Some(r), Some(gen_)) => {
                r.converged_generation.as_ref() == Some(gen_) && r.phase == Phase::Ready
            }
            _ => false,
        };
        progress.push(AgentProgress {
            agent: agent.clone(),
            last_report_age_ms: age,
            stale: stale && info.is_some(),
            converged,
            current: report.is_some_and(|r| Some(&r.target_generation) == expected.as_ref()),
        });
        match (info, report) {
            (None, _) => problems.push((
                Phase::Pending,
                format!("waiting for agent `{agent}` to connect"),
            )),
            (Some(_), None) => problems.push((
                Phase::Progressing,
                format!("agent `{agent}` has not reported on this sandbox yet"),
            )),
            (Some(_), Some(r)) => {
                units.extend(r.units.iter().cloned());
                routes.extend(r.routes.iter().cloned());
                drift.extend(r.drift.iter().cloned());
                let current = Some(&r.target_generation) == expected.as_ref();
                if r.phase == Phase::Degraded && current {
                    problems.push((
                        Phase::Degraded,
                        r.message
                            .clone()
                            .map(|m| format!("{agent}: {m}"))
                            .unwrap_or_else(|| format!("agent `{agent}` reports a problem")),
                    ));
                } else if !converged {
                    let msg = r
                        .message
                        .clone()
                        .map(|m| format!("{agent}: {m}"))
                        .unwrap_or_else(|| {
                            if r.target_generation.as_str() != expected.as_deref().unwrap_or("") {
                                format!("agent `{agent}` has not picked up the latest change yet")
                            } else {
                                format!("agent `{agent}` is converging")
                            }
                        });
                    problems.push((Phase::Progressing, msg));
                }
            }
        }
        if stale && let Some(a) = age {
            problems.push((
                Phase::Ready, // staleness does not change the phase, only the message
                format!(
                    "agent `{agent}` last reported {} ago (stale after {})",
                    human_ms(a),
                    human_ms(inp.stale_after_ms)
                ),
            ));
        }
    }

    // The worst phase wins; Degraded outranks Progressing outranks Pending.
    let rank = |p: Phase| match p {
        Phase::Degraded => 3,
        Phase::Progressing => 2,
        Phase::Pending => 1,
        _ => 0,
    };
    let phase = problems
        .iter()
        .map(|(p, _)| *p)
        .max_by_key(|p| rank(*p))
        .filter(|p| rank(*p) > 0)
        .unwrap_or(if progress.is_empty() {
            Phase::Pending
        } else {
            Phase::Ready
        });
    let message = if problems.is_empty() {
        progress
            .is_empty()
            .then(|| "no agent has work in this sandbox".to_string())
    } else {
        let mut sorted = problems;
        sorted.sort_by_key(|(p, _)| std::cmp::Reverse(rank(*p)));
        Some(
            sorted
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    units.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
    drift.sort_by_key(|d| d.at_ms);
    let conditions = conditions(&progress, &units, &routes);
    SandboxStatus {
        sandbox: sb.name.to_string(),
        phase,
        message,
        revision,
        units,
        routes,
        agents: progress,
        drift,
        conditions,
    }
}

fn condition(kind: &str, problems: Vec<String>) -> Condition {
    Condition {
        kind: kind.into(),
        ok: problems.is_empty(),
        message: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// The yes/no facts behind the phase.
fn conditions(
    agents: &[AgentProgress],
    units: &[UnitReport],
    routes: &[RouteReport],
) -> Vec<Condition> {
    let reporting = agents
        .iter()
        .filter(|a| a.stale || a.last_report_age_ms.is_none())
        .map(|a| match a.last_report_age_ms {
            None => format!("{} has not connected", a.agent),
            Some(ms) => format!("{} last reported {} ago", a.agent, human_ms(ms)),
        })
        .collect();
    let converged = agents
        .iter()
        .filter(|a| !a.converged)
        .map(|a| format!("{} has not converged", a.agent))
        .collect();
    let mut not_ready: Vec<String> = units
        .iter()
        .filter(|u| !u.ready)
        .map(|u| format!("{} is not ready", u.name))
        .collect();
    if units.is_empty() {
        not_ready.push("no unit reported yet".into());
    }
    let behind = units
        .iter()
        .filter(|u| !u.pinned)
        .filter_map(|u| match (&u.commit, &u.branch_head) {
            (Some(run), Some(head)) if run != head => Some(format!(
                "{} runs {} but {} is at {}",
                u.name,
                &run[..run.len().min(12)],
                u.branch,
                &head[..head.len().min(12)]
            )),
            _ => None,
        })
        .collect();
    let routes_served = if routes.iter().all(|r| r.served.is_none()) && !routes.is_empty() {
        vec!["the gateway was not probed; routes are read from its file".to_string()]
    } else {
        routes
            .iter()
            .filter_map(|r| r.problem.as_ref().map(|p| format!("{}: {p}", r.key)))
            .collect()
    };
    vec![
        condition("AgentsReporting", reporting),
        condition("Converged", converged),
        condition("UnitsReady", not_ready),
        condition("OnBranchHead", behind),
        condition("RoutesServed", routes_served),
    ]
}

/// Every agent that ran a part of the sandbox has reported, after the
/// deletion, that nothing of it is left.
pub fn deletion_confirmed(t: &Tombstone, reports: &BTreeMap<String, AgentReport>) -> bool {
    t.agents.iter().all(|a| {
        reports.get(a).is_some_and(|r| {
            r.revision >= t.revision && !r.deleting.iter().any(|d| d.sandbox == t.sandbox)
        })
    })
}

/// A deleted sandbox whose removal is not confirmed yet: what is pending where.
pub fn deleting_status(t: &Tombstone, inp: &Inputs<'_>) -> SandboxStatus {
    let mut pending = Vec::new();
    let mut agents = Vec::new();
    for a in &t.agents {
        let info = inp.agents.get(a);
        let age = info.map(|i| inp.now_ms.saturating_sub(i.last_seen_ms));
        let report = inp.reports.get(a).filter(|r| r.revision >= t.revision);
        let left = report.and_then(|r| r.deleting.iter().find(|d| d.sandbox == t.sandbox));
        let done = report.is_some() && left.is_none();
        match (report, left) {
            (None, _) => pending.push(format!("waiting for agent `{a}` to pick up the deletion")),
            (Some(_), Some(d)) => pending.push(format!("{a}: {}", d.pending.join(", "))),
            _ => {}
        }
        agents.push(AgentProgress {
            agent: a.clone(),
            last_report_age_ms: age,
            stale: age.is_some_and(|x| x > inp.stale_after_ms),
            converged: done,
            current: report.is_some(),
        });
    }
    SandboxStatus {
        sandbox: t.sandbox.clone(),
        phase: Phase::Deleting,
        message: Some(if pending.is_empty() {
            "removed; confirming".into()
        } else {
            format!("pending: {}", pending.join("; "))
        }),
        revision: t.revision,
        units: Vec::new(),
        routes: Vec::new(),
        agents,
        drift: Vec::new(),
        conditions: Vec::new(),
    }
}

pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdp_spec::parse_toml;
    use sdp_spec::record::Record;
    use sdp_spec::wire::SandboxReport;

    const SVC: &str = "kind = \"service\"\nname = \"eredar\"\nrepo = \"/srv/e.git\"\nagent = \"micro\"\nimage = \"x\"\ncontainer_port = 8080\n";
    const SB: &str = "kind = \"sandbox\"\nname = \"alice\"\n[services.eredar]\nbranch = \"main\"\nhost_port = 9001\n";

    fn setup() -> (Records, Sandbox) {
        let mut r = Records::new();
        for t in [SVC, SB] {
            let rec = parse_toml(t, "t").unwrap().record;
            r.insert(rec.key(), rec);
        }
        let Some(Record::Sandbox(sb)) = r.get("sandbox/alice").cloned() else {
            panic!()
        };
        (r, sb)
    }

    fn report(
        gen_: Option<String>,
        target: String,
        phase: Phase,
        msg: Option<&str>,
    ) -> BTreeMap<String, AgentReport> {
        [(
            "micro".to_string(),
            AgentReport {
                agent: "micro".into(),
                revision: 1,
                observed_at_ms: 1000,
                sandboxes: vec![SandboxReport {
                    sandbox: "alice".into(),
                    converged_generation: gen_,
                    target_generation: target,
                    phase,
                    message: msg.map(String::from),
                    units: vec![],
                    routes: vec![],
                    drift: vec![],
                }],
                deleting: vec![],
                collected: vec![],
            },
        )]
        .into()
    }

    fn agents(last_seen: u64) -> BTreeMap<String, AgentInfo> {
        [(
            "micro".to_string(),
            AgentInfo {
                name: "micro".into(),
                advertise: "h".into(),
                last_seen_ms: last_seen,
            },
        )]
        .into()
    }

    #[test]
    fn phases_follow_reports() {
        let (r, sb) = setup();
        let agents = agents(1000);
        let gen_ = sandbox_work("micro", &sb, &r, &agents).unwrap().generation;
        let inputs = |reports| Inputs {
            records: &r,
            agents: &agents,
            reports,
            now_ms: 2000,
            stale_after_ms: 60_000,
        };

        let none = BTreeMap::new();
        let st = sandbox_status(&sb, 1, &inputs(&none));
        assert_eq!(st.phase, Phase::Progressing);

        let ready = report(Some(gen_.clone()), gen_.clone(), Phase::Ready, None);
        let st = sandbox_status(&sb, 1, &inputs(&ready));
        assert_eq!(st.phase, Phase::Ready, "{st:?}");
        assert!(st.agents[0].converged && !st.agents[0].stale);

        let old = report(Some("old".into()), "old".into(), Phase::Ready, None);
        let st = sandbox_status(&sb, 1, &inputs(&old));
        assert_eq!(st.phase, Phase::Progressing);
        assert!(
            st.message
                .unwrap()
                .contains("not picked up the latest change")
        );

        let bad = report(
            None,
            gen_.clone(),
            Phase::Degraded,
            Some("image x is not loaded on agent micro"),
        );
        let st = sandbox_status(&sb, 1, &inputs(&bad));
        assert_eq!(st.phase, Phase::Degraded);
        assert_eq!(
            st.message.as_deref(),
            Some("micro: image x is not loaded on agent micro")
        );
    }

    #[test]
    fn unknown_agent_is_pending_and_silent_agent_is_stale() {
        let (r, sb) = setup();
        let none = BTreeMap::new();
        let no_agents = BTreeMap::new();
        let st = sandbox_status(
            &sb,
            1,
            &Inputs {
                records: &r,
                agents: &no_agents,
                reports: &none,
                now_ms: 0,
                stale_after_ms: 1,
            },
        );
        assert_eq!(st.phase, Phase::Pending);
        assert!(
            st.message
                .unwrap()
                .contains("waiting for agent `micro` to connect")
        );

        let agents = agents(0);
        let gen_ = sandbox_work("micro", &sb, &r, &agents).unwrap().generation;
        let ready = report(Some(gen_.clone()), gen_, Phase::Ready, None);
        let st = sandbox_status(
            &sb,
            1,
            &Inputs {
                records: &r,
                agents: &agents,
                reports: &ready,
                now_ms: 180_000,
                stale_after_ms: 60_000,
            },
        );
        assert_eq!(
            st.phase,
            Phase::Ready,
            "staleness is reported, not guessed into a phase"
        );
        assert!(st.agents[0].stale);
        assert!(
            st.message
                .unwrap()
                .contains("last reported 3m ago (stale after 60s)")
        );
    }
}
