//! What applying a batch would change, per agent: containers created,
//! replaced or removed and why, and URL map entries that would switch. Pure:
//! it compares the work each agent has now with the work it would get.
//! Environment values are never shown, only the names that change.

use std::collections::{BTreeMap, BTreeSet};

use sdp_spec::wire::{
    AgentInfo, AgentPlan, GatewayWork, PlannedChange, PlannedKind, RouteTarget, SandboxWork,
    ServiceWork,
};

use crate::catalog::{Records, sandboxes};
use crate::resolve::{agents_of, assignments_for};

/// The changes per agent between the records `before` and `after`.
pub fn plan(
    before: &Records,
    after: &Records,
    agents: &BTreeMap<String, AgentInfo>,
) -> Vec<AgentPlan> {
    let mut involved: BTreeSet<String> = BTreeSet::new();
    for records in [before, after] {
        for sb in sandboxes(records) {
            involved.extend(agents_of(sb, records));
        }
    }
    involved
        .into_iter()
        .map(|agent| {
            let old = assignments_for(&agent, 0, before, agents);
            let new = assignments_for(&agent, 0, after, agents);
            let mut changes = Vec::new();
            let names: BTreeSet<&String> = old
                .sandboxes
                .iter()
                .chain(&new.sandboxes)
                .map(|s| &s.sandbox)
                .collect();
            for name in names {
                let o = old.sandboxes.iter().find(|s| &s.sandbox == name);
                let n = new.sandboxes.iter().find(|s| &s.sandbox == name);
                sandbox_changes(name, o, n, &mut changes);
            }
            AgentPlan { agent, changes }
        })
        .filter(|p| !p.changes.is_empty())
        .collect()
}

fn change(sandbox: &str, unit: &str, kind: PlannedKind, reasons: Vec<String>) -> PlannedChange {
    PlannedChange {
        sandbox: sandbox.into(),
        unit: unit.into(),
        kind,
        reasons,
    }
}

fn sandbox_changes(
    name: &str,
    old: Option<&SandboxWork>,
    new: Option<&SandboxWork>,
    out: &mut Vec<PlannedChange>,
) {
    let empty = Vec::new();
    let old_svcs = old.map_or(&empty, |s| &s.services);
    let new_svcs = new.map_or(&empty, |s| &s.services);
    let why_gone = if new.is_none() {
        "the sandbox is deleted or no longer runs here"
    } else {
        "no longer part of the sandbox"
    };
    for o in old_svcs {
        if !new_svcs.iter().any(|n| n.service == o.service) {
            out.push(change(
                name,
                &o.service,
                PlannedKind::Remove,
                vec![why_gone.into()],
            ));
        }
    }
    for n in new_svcs {
        match old_svcs.iter().find(|o| o.service == n.service) {
            None => out.push(change(
                name,
                &n.service,
                PlannedKind::Create,
                vec![format!(
                    "branch {}, image {}, host port {}",
                    n.branch, n.image, n.host_port
                )],
            )),
            Some(o) => {
                let reasons = service_diff(o, n);
                if !reasons.is_empty() {
                    out.push(change(name, &n.service, PlannedKind::Replace, reasons));
                }
            }
        }
    }
    match (
        old.and_then(|s| s.gateway.as_ref()),
        new.and_then(|s| s.gateway.as_ref()),
    ) {
        (None, None) => {}
        (Some(o), None) => out.push(change(
            name,
            &o.gateway,
            PlannedKind::Remove,
            vec![why_gone.into()],
        )),
        (None, Some(n)) => {
            out.push(change(
                name,
                &n.gateway,
                PlannedKind::Create,
                vec![format!(
                    "branch {}, image {}, host port {}",
                    n.branch, n.image, n.host_port
                )],
            ));
            for r in &n.routes {
                if let RouteTarget::Sandbox { url } = &r.target {
                    out.push(change(
                        name,
                        &n.gateway,
                        PlannedKind::Route,
                        vec![format!("{}: OCP default -> {url}", r.key)],
                    ));
                }
            }
        }
        (Some(o), Some(n)) => {
            let reasons = gateway_diff(o, n);
            if !reasons.is_empty() {
                out.push(change(name, &n.gateway, PlannedKind::Replace, reasons));
            }
            let routes = route_diff(o, n);
            if !routes.is_empty() {
                out.push(change(name, &n.gateway, PlannedKind::Route, routes));
            }
        }
    }
}

fn field<T: PartialEq + std::fmt::Display>(what: &str, old: &T, new: &T, out: &mut Vec<String>) {
    if old != new {
        out.push(format!("{what} {old} -> {new}"));
    }
}

/// Names of variables added, removed or changed: never their values.
fn env_diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>, out: &mut Vec<String>) {
    let changed: Vec<&String> = old
        .keys()
        .chain(new.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .collect();
    if !changed.is_empty() {
        out.push(format!(
            "env {} changed",
            changed
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

/// What services and gateways have alike.
struct Common<'a> {
    repo: &'a str,
    branch: &'a str,
    image: &'a str,
    command: &'a Option<Vec<String>>,
    env: &'a BTreeMap<String, String>,
    mount: &'a str,
    container_port: u16,
    host_port: u16,
}

impl<'a> From<&'a ServiceWork> for Common<'a> {
    fn from(w: &'a ServiceWork) -> Self {
        Self {
            repo: &w.repo,
            branch: &w.branch,
            image: &w.image,
            command: &w.command,
            env: &w.env,
            mount: &w.mount,
            container_port: w.container_port,
            host_port: w.host_port,
        }
    }
}

impl<'a> From<&'a GatewayWork> for Common<'a> {
    fn from(w: &'a GatewayWork) -> Self {
        Self {
            repo: &w.repo,
            branch: &w.branch,
            image: &w.image,
            command: &w.command,
            env: &w.env,
            mount: &w.mount,
            container_port: w.container_port,
            host_port: w.host_port,
        }
    }
}

fn common_diff(o: Common<'_>, n: Common<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if o.repo != n.repo {
        out.push("repository changed".into());
    }
    if o.branch != n.branch {
        out.push(format!("branch {} -> {}", o.branch, n.branch));
    }
    field("image", &o.image, &n.image, &mut out);
    if o.command != n.command {
        out.push("command changed".into());
    }
    env_diff(o.env, n.env, &mut out);
    field("mount", &o.mount, &n.mount, &mut out);
    field(
        "container port",
        &o.container_port,
        &n.container_port,
        &mut out,
    );
    field("host port", &o.host_port, &n.host_port, &mut out);
    out
}

fn service_diff(o: &ServiceWork, n: &ServiceWork) -> Vec<String> {
    let mut out = common_diff(o.into(), n.into());
    if o.build != n.build {
        out.push("build command changed".into());
    }
    if o.commit != n.commit {
        out.push(match &n.commit {
            Some(c) => format!("pinned to commit {c}"),
            None => "follows the branch head again".into(),
        });
    }
    if o.health != n.health {
        out.push("health check changed (no container change)".into());
    }
    out
}

fn gateway_diff(o: &GatewayWork, n: &GatewayWork) -> Vec<String> {
    let mut out = common_diff(o.into(), n.into());
    field("config file", &o.config_file, &n.config_file, &mut out);
    if o.routes_via_env != n.routes_via_env {
        out.push(format!(
            "routes_via_env {} -> {}",
            o.routes_via_env, n.routes_via_env
        ));
    }
    out
}

fn target(t: &RouteTarget) -> String {
    match t {
        RouteTarget::Sandbox { url } => url.clone(),
        RouteTarget::Default => "OCP default".into(),
        RouteTarget::Pending { .. } => "OCP default (until the service's agent connects)".into(),
    }
}

fn route_diff(o: &GatewayWork, n: &GatewayWork) -> Vec<String> {
    let mut out = Vec::new();
    for r in &n.routes {
        let before = o.routes.iter().find(|x| x.key == r.key).map(|x| &x.target);
        let was = before.map_or_else(|| "OCP default".to_string(), target);
        let now = target(&r.target);
        if was != now {
            out.push(format!("{}: {was} -> {now}", r.key));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdp_spec::parse_toml;

    const SVC: &str = "kind = \"service\"\nname = \"eredar\"\nrepo = \"/srv/e.git\"\nagent = \"micro\"\nimage = \"img:1\"\ncontainer_port = 8080\n";
    const GW: &str = "kind = \"gateway\"\nname = \"erangel\"\nrepo = \"/srv/g.git\"\nagent = \"gw\"\nimage = \"php\"\nmount = \"/var/www/html\"\ncontainer_port = 80\nconfig_file = \"c.php\"\n";

    fn sb(branch: &str, port: u16, route: bool, env: &str) -> String {
        format!(
            "kind = \"sandbox\"\nname = \"alice\"\n[gateway]\nbranch = \"main\"\nhost_port = 8101\n[services.eredar]\nbranch = \"{branch}\"\nhost_port = {port}\nroute = {route}\nenv = {{ {env} }}\n"
        )
    }

    fn recs(texts: &[&str]) -> Records {
        texts
            .iter()
            .map(|t| {
                let r = parse_toml(t, "t").unwrap().record;
                (r.key(), r)
            })
            .collect()
    }

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

    fn lines(p: &[AgentPlan]) -> Vec<String> {
        p.iter()
            .flat_map(|a| {
                a.changes.iter().map(move |c| {
                    format!(
                        "{} {} {:?} {}",
                        a.agent,
                        c.unit,
                        c.kind,
                        c.reasons.join("; ")
                    )
                })
            })
            .collect()
    }

    #[test]
    fn nothing_changes_when_nothing_changes() {
        let r = recs(&[SVC, GW, &sb("main", 9001, true, "A = \"1\"")]);
        assert!(plan(&r, &r, &agents()).is_empty());
    }

    #[test]
    fn a_new_sandbox_creates_its_units_and_routes() {
        let before = recs(&[SVC, GW]);
        let after = recs(&[SVC, GW, &sb("main", 9001, true, "")]);
        assert_eq!(
            lines(&plan(&before, &after, &agents())),
            [
                "gw erangel Create branch main, image php, host port 8101",
                "gw erangel Route eredar_url: OCP default -> http://10.0.0.5:9001/",
                "micro eredar Create branch main, image img:1, host port 9001",
            ]
        );
    }

    #[test]
    fn changes_are_explained_and_env_values_hidden() {
        let before = recs(&[SVC, GW, &sb("main", 9001, true, "SECRET = \"old-value\"")]);
        let after = recs(&[
            &SVC.replace("img:1", "img:2"),
            GW,
            &sb("feature/x", 9002, false, "SECRET = \"new-value\""),
        ]);
        let l = lines(&plan(&before, &after, &agents()));
        assert_eq!(
            l,
            [
                "gw erangel Route eredar_url: http://10.0.0.5:9001/ -> OCP default",
                "micro eredar Replace branch main -> feature/x; image img:1 -> img:2; env SECRET changed; host port 9001 -> 9002",
            ]
        );
        assert!(!l.concat().contains("value"), "env values are never shown");
    }

    #[test]
    fn deleting_removes_everything() {
        let before = recs(&[SVC, GW, &sb("main", 9001, true, "")]);
        let after = recs(&[SVC, GW]);
        assert_eq!(
            lines(&plan(&before, &after, &agents())),
            [
                "gw erangel Remove the sandbox is deleted or no longer runs here",
                "micro eredar Remove the sandbox is deleted or no longer runs here",
            ]
        );
    }
}
