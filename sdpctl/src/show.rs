//! `sdpctl get`, `describe` and `history`: what is stored and what runs.

use sdp_spec::record::{Kind, Record};
use sdp_spec::wire::{Phase, Role, SandboxStatus, now_ms};

use crate::Output;
use crate::api::Api;
use crate::table::Table;

pub async fn get(api: &Api, kind: Kind, name: Option<&str>, out: Output) -> anyhow::Result<()> {
    let records = match name {
        Some(n) => vec![api.get(kind, n).await?],
        None => api.list(kind).await?,
    };
    match out {
        Output::Json => {
            let v = if name.is_some() {
                serde_json::to_value(&records[0])?
            } else {
                serde_json::to_value(&records)?
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Toml => {
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", r.spec.to_toml());
            }
        }
        Output::Table => {
            let statuses = if kind == Kind::Sandbox {
                api.statuses().await?
            } else {
                vec![]
            };
            let mut t = match kind {
                Kind::Service => {
                    Table::new(&["NAME", "AGENT", "IMAGE", "PORT", "ROUTE KEY", "REPO"])
                }
                Kind::Gateway => Table::new(&["NAME", "AGENT", "IMAGE", "CONFIG FILE", "REPO"]),
                Kind::Sandbox => {
                    Table::new(&["NAME", "PHASE", "SERVICES", "ROUTED", "GATEWAY", "REVISION"])
                }
            };
            for r in &records {
                match &r.spec {
                    Record::Service(s) => t.row(vec![
                        s.name.to_string(),
                        s.agent.to_string(),
                        s.image.to_string(),
                        s.container_port.to_string(),
                        s.route_key(),
                        s.repo.to_string(),
                    ]),
                    Record::Gateway(g) => t.row(vec![
                        g.name.to_string(),
                        g.agent.to_string(),
                        g.image.to_string(),
                        g.config_file.to_string(),
                        g.repo.to_string(),
                    ]),
                    Record::Sandbox(s) => {
                        let phase = statuses
                            .iter()
                            .find(|st| st.sandbox == s.name.as_str())
                            .map_or("-".to_string(), |st| st.phase.to_string());
                        let services: Vec<String> = s
                            .services
                            .iter()
                            .map(|(n, svc)| format!("{n}@{}:{}", svc.branch, svc.host_port))
                            .collect();
                        let gw = s
                            .gateway
                            .as_ref()
                            .map_or("-".into(), |g| format!("{}:{}", g.branch, g.host_port));
                        let routed: Vec<String> = s
                            .services
                            .iter()
                            .filter(|(_, svc)| svc.route && s.gateway.is_some())
                            .map(|(n, _)| n.to_string())
                            .collect();
                        let routed = if routed.is_empty() {
                            "-".into()
                        } else {
                            routed.join(",")
                        };
                        t.row(vec![
                            s.name.to_string(),
                            phase,
                            services.join(","),
                            routed,
                            gw,
                            r.revision.to_string(),
                        ]);
                    }
                }
            }
            // Deleted sandboxes stay visible until their agents removed them.
            for st in statuses
                .iter()
                .filter(|st| st.phase == Phase::Deleting && name.is_none())
            {
                t.row(vec![
                    st.sandbox.clone(),
                    "Deleting".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    st.revision.to_string(),
                ]);
            }
            print!("{}", t.render(""));
        }
    }
    Ok(())
}

pub async fn describe(api: &Api, name: &str, out: Output) -> anyhow::Result<()> {
    let st = api.status(name).await?;
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    print!("{}", render_status(&st));
    Ok(())
}

pub fn render_status(st: &SandboxStatus) -> String {
    let mut s = String::new();
    s.push_str(&format!("Sandbox:   {}\n", st.sandbox));
    s.push_str(&format!("Phase:     {}\n", st.phase));
    s.push_str(&format!("Revision:  {}\n", st.revision));
    if let Some(m) = &st.message {
        s.push_str(&format!("Message:   {m}\n"));
    }
    s.push_str("Agents:\n");
    let mut t = Table::new(&["AGENT", "LAST REPORT", "CONVERGED"]);
    for a in &st.agents {
        let age = match a.last_report_age_ms {
            Some(ms) => format!("{} ago{}", human(ms), if a.stale { " (stale)" } else { "" }),
            None => "never".into(),
        };
        t.row(vec![a.agent.clone(), age, yes_no(a.converged)]);
    }
    s.push_str(&t.render("  "));
    if !st.conditions.is_empty() {
        s.push_str("Conditions:\n");
        let mut t = Table::new(&["CONDITION", "OK", "WHY NOT"]);
        for c in &st.conditions {
            t.row(vec![
                c.kind.clone(),
                yes_no(c.ok),
                c.message.clone().unwrap_or_default(),
            ]);
        }
        s.push_str(&t.render("  "));
    }
    let oldest = st.agents.iter().filter_map(|a| a.last_report_age_ms).max();
    let as_of = oldest
        .map(|ms| format!(" (as the agents last saw them, {} ago)", human(ms)))
        .unwrap_or_default();
    s.push_str(&format!("Units{as_of}:\n"));
    let short = |c: &str| c[..c.len().min(12)].to_string();
    let mut t = Table::new(&[
        "ROLE",
        "NAME",
        "AGENT",
        "BRANCH",
        "COMMIT",
        "BRANCH HEAD",
        "CONTAINER",
        "PORT",
        "READY",
        "ERROR",
    ]);
    for u in &st.units {
        let head = match (&u.branch_head, u.pinned) {
            (_, true) => "(pinned)".to_string(),
            (Some(h), _) if u.commit.as_ref() == Some(h) => "same".to_string(),
            (Some(h), _) => short(h),
            (None, _) => "-".to_string(),
        };
        let mut container = u
            .container_status
            .clone()
            .or_else(|| u.container_state.clone())
            .unwrap_or_else(|| "-".into());
        if let Some(n) = u.restarts.filter(|n| *n > 0) {
            container.push_str(&format!(", {n} restarts"));
        }
        t.row(vec![
            match u.role {
                Role::Service => "service".into(),
                Role::Gateway => "gateway".into(),
            },
            u.name.clone(),
            u.agent.clone(),
            u.branch.clone(),
            u.commit.as_deref().map_or("-".into(), short),
            head,
            container,
            u.host_port.to_string(),
            yes_no(u.ready),
            u.error.clone().unwrap_or_default(),
        ]);
    }
    s.push_str(&t.render("  "));
    if !st.routes.is_empty() {
        let probed = st.routes.iter().any(|r| r.served.is_some());
        s.push_str(&if probed {
            format!(
                "Routes (as the running gateway served them{}):\n",
                as_of
                    .trim_start_matches(" (as the agents last saw them")
                    .trim_end_matches(')')
            )
        } else {
            "Routes (from the gateway's config file; the gateway was not probed):\n".to_string()
        });
        let mut t = Table::new(&["SERVICE", "KEY", "TO", "VALUE", "OCP DEFAULT", "NOTE"]);
        for r in &st.routes {
            let to = match r.live() {
                None => "-",
                Some(_) if r.routed_to_sandbox => "sandbox",
                Some(_) => "OCP",
            };
            let mut note = r.problem.clone().unwrap_or_default();
            if let (Some(served), Some(file)) = (&r.served, &r.file)
                && served != file
                && note.is_empty()
            {
                note = match &r.env_var {
                    Some(v) => format!("from ${v}; the file says {file}"),
                    None => format!("the file says {file}"),
                };
            }
            t.row(vec![
                r.service.clone(),
                r.key.clone(),
                to.to_string(),
                r.live().unwrap_or("-").to_string(),
                r.default.clone().unwrap_or_else(|| "-".into()),
                note,
            ]);
        }
        s.push_str(&t.render("  "));
    }
    if !st.drift.is_empty() {
        s.push_str("Drift (found and put back):\n");
        let now = now_ms();
        let mut t = Table::new(&["WHEN", "AGENT", "UNIT", "WHAT", "FOUND", "DESIRED"]);
        for d in st.drift.iter().rev().take(10) {
            t.row(vec![
                format!("{} ago", human(now.saturating_sub(d.at_ms))),
                d.agent.clone(),
                d.unit.clone(),
                d.what.clone(),
                d.found.clone().unwrap_or_else(|| "-".into()),
                d.desired.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        s.push_str(&t.render("  "));
    }
    if st.phase != Phase::Ready && st.units.is_empty() {
        s.push_str("  (no unit has been reported yet)\n");
    }
    s
}

pub async fn history(api: &Api, kind: Kind, name: &str, out: Output) -> anyhow::Result<()> {
    let entries = api.history(kind, name).await?;
    if entries.is_empty() {
        anyhow::bail!("{kind} `{name}` has no history: it was never applied");
    }
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let mut t = Table::new(&["REVISION", "WHEN", "BY", "CHANGE"]);
    let now = now_ms();
    let mut previous: Option<&serde_json::Value> = None;
    for e in &entries {
        let at = e["at_ms"].as_u64().unwrap_or(0);
        let spec = e["record"].get("spec");
        let change = match (previous, spec) {
            (_, None) => "deleted".to_string(),
            (None, Some(_)) => "created".to_string(),
            (Some(old), Some(new)) => {
                let mut changes = Vec::new();
                spec_changes(old, new, "", &mut changes);
                if changes.is_empty() {
                    "applied again, unchanged".into()
                } else {
                    changes.join("; ")
                }
            }
        };
        previous = spec;
        t.row(vec![
            e["revision"].to_string(),
            format!("{} ago", human(now.saturating_sub(at))),
            e["by"].as_str().unwrap_or("").to_string(),
            change,
        ]);
    }
    print!("{}", t.render(""));
    Ok(())
}

/// What changed between two versions of a record, field by field. Values
/// under `env` are never shown: they may be secrets.
fn spec_changes(
    old: &serde_json::Value,
    new: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let shown = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let hidden = path.split('.').any(|p| p == "env");
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => spec_changes(x, y, &sub, out),
                    (None, Some(y)) if hidden || y.is_object() => out.push(format!("{sub} added")),
                    (None, Some(y)) => out.push(format!("{sub} = {}", shown(y))),
                    (Some(_), None) => out.push(format!("{sub} removed")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => {
            if hidden {
                out.push(format!("{path} changed"));
            } else {
                out.push(format!("{path}: {} -> {}", shown(a), shown(b)));
            }
        }
        _ => {}
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
