//! Turns records into each agent's work: the catalog merged into every
//! sandbox, and route URLs computed from the advertised address of the agent
//! that runs each routed service. Pure and deterministic: the same records and
//! agents give byte-identical assignments (and so the same etag).

use std::collections::{BTreeMap, BTreeSet};

use sdp_spec::record::Sandbox;
use sdp_spec::wire::{
    AgentInfo, Assignments, GatewayWork, RouteTarget, RouteWork, SandboxWork, ServiceWork,
    content_hash,
};

use crate::catalog::{Records, gateway_of, sandboxes, service, services};

/// Everything `agent` must run.
pub fn assignments_for(
    agent: &str,
    revision: u64,
    records: &Records,
    agents: &BTreeMap<String, AgentInfo>,
) -> Assignments {
    let sandboxes: Vec<SandboxWork> = sandboxes(records)
        .filter_map(|sb| sandbox_work(agent, sb, records, agents))
        .collect();
    Assignments {
        agent: agent.to_string(),
        revision,
        etag: content_hash(&sandboxes),
        sandboxes,
    }
}

/// The agents that run some part of a sandbox.
pub fn agents_of(sb: &Sandbox, records: &Records) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = sb
        .services
        .keys()
        .filter_map(|n| service(records, n))
        .map(|s| s.agent.to_string())
        .collect();
    if let Ok(g) = gateway_of(records, sb)
        && sb.gateway.is_some()
    {
        out.insert(g.agent.to_string());
    }
    out
}

/// `agent`'s part of one sandbox, or `None` if it has no part in it.
pub fn sandbox_work(
    agent: &str,
    sb: &Sandbox,
    records: &Records,
    agents: &BTreeMap<String, AgentInfo>,
) -> Option<SandboxWork> {
    let mut service_work = Vec::new();
    for (name, s) in &sb.services {
        let Some(svc) = service(records, name) else {
            continue;
        };
        if svc.agent.as_str() != agent {
            continue;
        }
        let mut env: BTreeMap<String, String> = svc.env.as_map().clone();
        env.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        service_work.push(ServiceWork {
            service: name.to_string(),
            repo: svc.repo.to_string(),
            branch: s.branch.to_string(),
            build: svc.build.clone().map(Into::into),
            image: svc.image.to_string(),
            command: svc.command.clone().map(Into::into),
            env,
            mount: svc.mount().to_string(),
            container_port: svc.container_port.get(),
            host_port: s.host_port.get(),
            health: svc.health.as_ref().map(|h| h.to_string()),
            commit: s.commit.as_ref().map(|c| c.to_string()),
        });
    }

    let gateway_work = match (&sb.gateway, gateway_of(records, sb)) {
        (Some(sg), Ok(gw)) if gw.agent.as_str() == agent => Some(GatewayWork {
            gateway: gw.name.to_string(),
            repo: gw.repo.to_string(),
            branch: sg.branch.to_string(),
            image: gw.image.to_string(),
            command: gw.command.clone().map(Into::into),
            env: gw.env.as_map().clone(),
            mount: gw.mount.to_string(),
            container_port: gw.container_port.get(),
            host_port: sg.host_port.get(),
            prepare: gw.prepare.clone().map(Into::into),
            config_file: gw.config_file.to_string(),
            reload: gw.reload.clone().map(Into::into),
            routes_via_env: gw.routes_via_env,
            routes: routes(sb, records, agents),
        }),
        _ => None,
    };

    if service_work.is_empty() && gateway_work.is_none() {
        return None;
    }
    Some(SandboxWork::new(
        sb.name.to_string(),
        service_work,
        gateway_work,
    ))
}

/// One route per catalog service: the sandbox's container for routed
/// services, the committed default for every other.
fn routes(sb: &Sandbox, records: &Records, agents: &BTreeMap<String, AgentInfo>) -> Vec<RouteWork> {
    services(records)
        .map(|svc| {
            let target = match sb.services.get(svc.name.as_str()) {
                Some(s) if s.route => match agents.get(svc.agent.as_str()) {
                    Some(a) => RouteTarget::Sandbox {
                        url: format!("http://{}:{}/", host_for_url(&a.advertise), s.host_port),
                    },
                    None => RouteTarget::Pending {
                        reason: format!(
                            "agent `{}` has not connected yet, so its address is unknown",
                            svc.agent
                        ),
                    },
                },
                _ => RouteTarget::Default,
            };
            RouteWork {
                service: svc.name.to_string(),
                key: svc.route_key(),
                target,
            }
        })
        .collect()
}

/// IPv6 literals need brackets inside a URL.
fn host_for_url(addr: &str) -> String {
    if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdp_spec::parse_toml;

    fn recs(texts: &[&str]) -> Records {
        texts
            .iter()
            .map(|t| {
                let r = parse_toml(t, "t").unwrap().record;
                (r.key(), r)
            })
            .collect()
    }

    const EREDAR: &str = "kind = \"service\"\nname = \"eredar\"\nrepo = \"/srv/e.git\"\nagent = \"micro\"\nimage = \"x\"\ncontainer_port = 8080\nenv = { A = \"catalog\", B = \"catalog\" }\n";
    const LEDGER: &str = "kind = \"service\"\nname = \"ledger\"\nrepo = \"/srv/l.git\"\nagent = \"micro\"\nimage = \"x\"\ncontainer_port = 8080\n";
    const GW: &str = "kind = \"gateway\"\nname = \"erangel\"\nrepo = \"/srv/gw.git\"\nagent = \"gw\"\nimage = \"x\"\nmount = \"/var/www/html\"\ncontainer_port = 80\nconfig_file = \"config.php\"\n";
    const SB: &str = "kind = \"sandbox\"\nname = \"alice\"\n[gateway]\nbranch = \"main\"\nhost_port = 8101\n[services.eredar]\nbranch = \"feature/x\"\nhost_port = 9001\nenv = { B = \"sandbox\" }\n";

    fn agents() -> BTreeMap<String, AgentInfo> {
        [(
            "micro".to_string(),
            AgentInfo {
                name: "micro".into(),
                advertise: "10.0.0.5".into(),
                last_seen_ms: 0,
            },
        )]
        .into()
    }

    #[test]
    fn each_agent_gets_only_its_part() {
        let r = recs(&[EREDAR, LEDGER, GW, SB]);
        let micro = assignments_for("micro", 7, &r, &agents());
        assert_eq!(micro.sandboxes.len(), 1);
        let work = &micro.sandboxes[0];
        assert!(work.gateway.is_none());
        assert_eq!(work.services.len(), 1);
        let s = &work.services[0];
        assert_eq!(
            (s.branch.as_str(), s.host_port, s.mount.as_str()),
            ("feature/x", 9001, "/src")
        );
        assert_eq!(s.env["A"], "catalog");
        assert_eq!(s.env["B"], "sandbox", "the sandbox's env wins");

        let gw = assignments_for("gw", 7, &r, &agents());
        let g = gw.sandboxes[0].gateway.as_ref().unwrap();
        assert!(gw.sandboxes[0].services.is_empty());
        assert_eq!(g.routes.len(), 2, "one route per catalog service");
        assert_eq!(
            g.routes[0].target,
            RouteTarget::Sandbox {
                url: "http://10.0.0.5:9001/".into()
            }
        );
        assert_eq!(g.routes[1].key, "ledger_url");
        assert_eq!(g.routes[1].target, RouteTarget::Default);

        assert!(
            assignments_for("nobody", 7, &r, &agents())
                .sandboxes
                .is_empty()
        );
    }

    #[test]
    fn routes_wait_for_the_agent_address() {
        let r = recs(&[EREDAR, GW, SB]);
        let gw = assignments_for("gw", 1, &r, &BTreeMap::new());
        let g = gw.sandboxes[0].gateway.as_ref().unwrap();
        assert!(
            matches!(&g.routes[0].target, RouteTarget::Pending { reason } if reason.contains("agent `micro` has not connected"))
        );
    }

    #[test]
    fn route_false_keeps_the_default_and_changes_the_etag() {
        let r1 = recs(&[EREDAR, GW, SB]);
        let r2 = recs(&[
            EREDAR,
            GW,
            &SB.replace("host_port = 9001", "host_port = 9001\nroute = false"),
        ]);
        let a1 = assignments_for("gw", 1, &r1, &agents());
        let a2 = assignments_for("gw", 2, &r2, &agents());
        assert_ne!(a1.etag, a2.etag);
        assert_eq!(
            a2.sandboxes[0].gateway.as_ref().unwrap().routes[0].target,
            RouteTarget::Default
        );
        // Same input, same etag: the revision alone does not count as a change.
        assert_eq!(assignments_for("gw", 9, &r1, &agents()).etag, a1.etag);
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(host_for_url("fd00::1"), "[fd00::1]");
        assert_eq!(host_for_url("10.0.0.1"), "10.0.0.1");
    }
}
