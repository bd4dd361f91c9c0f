//! `sdpctl apply`: read spec files, check them locally, send them as one
//! atomic batch, and optionally wait until the sandboxes are ready.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sdp_spec::record::Kind;
use sdp_spec::wire::{AgentPlan, ApplyAction, ApplyRequest, Phase, PlannedKind, SourceDocument};

use crate::api::Api;

/// Every `.toml` file named, or found (recursively, sorted) under a directory.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<SourceDocument>> {
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut content = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut content)
                .context("reading stdin")?;
            files.push(SourceDocument {
                file: "<stdin>".into(),
                content,
            });
            continue;
        }
        let meta = std::fs::metadata(p).with_context(|| format!("{}: cannot read", p.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            if found.is_empty() {
                bail!("{}: no .toml files in this directory", p.display());
            }
            found.sort();
            for f in found {
                files.push(read(&f)?);
            }
        } else {
            files.push(read(p)?);
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

fn read(p: &Path) -> anyhow::Result<SourceDocument> {
    let bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
    let content =
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", p.display()))?;
    Ok(SourceDocument {
        file: p.display().to_string(),
        content,
    })
}

pub struct ApplyOptions {
    pub dry_run: bool,
    /// Print only the plan (`sdpctl diff`).
    pub plan_only: bool,
    pub wait: bool,
    pub timeout: Duration,
    pub json: bool,
}

pub async fn apply(
    api: &Api,
    documents: Vec<SourceDocument>,
    opts: &ApplyOptions,
) -> anyhow::Result<()> {
    // The same checks the controller makes on one file, before any traffic.
    let mut local_errors = Vec::new();
    for d in &documents {
        if let Err(e) = sdp_spec::parse::parse_any(&d.content, &d.file) {
            local_errors.extend(e.0);
        }
    }
    if !local_errors.is_empty() {
        bail!(sdp_spec::SpecErrors(local_errors));
    }
    let resp = api
        .apply(&ApplyRequest {
            documents,
            dry_run: opts.dry_run,
            applied_by: None,
        })
        .await?;
    let would_change = resp
        .results
        .iter()
        .any(|r| r.action != ApplyAction::Unchanged)
        || !resp.plan.is_empty();
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
    } else if opts.plan_only {
        print!("{}", render_plan(&resp.plan));
        for r in resp
            .results
            .iter()
            .filter(|r| r.action != ApplyAction::Unchanged)
        {
            if resp.plan.is_empty() {
                println!(
                    "(the record {}/{} would be {} all the same)",
                    r.kind,
                    r.name,
                    if r.action == ApplyAction::Created {
                        "created"
                    } else {
                        "updated"
                    }
                );
            }
        }
    } else {
        for r in &resp.results {
            let word = match r.action {
                ApplyAction::Created => "created",
                ApplyAction::Configured => "configured",
                ApplyAction::Unchanged => "unchanged",
            };
            let suffix = if opts.dry_run { " (dry run)" } else { "" };
            println!("{}/{} {word}{suffix}", r.kind, r.name);
        }
    }
    if opts.dry_run && !opts.json && !opts.plan_only {
        print!("{}", render_plan(&resp.plan));
    }
    if opts.dry_run {
        return if would_change {
            Err(crate::WouldChange.into())
        } else {
            Ok(())
        };
    }
    if opts.wait {
        let sandboxes: Vec<String> = resp
            .results
            .iter()
            .filter(|r| r.kind == Kind::Sandbox)
            .map(|r| r.name.clone())
            .collect();
        wait_ready(api, &sandboxes, opts.timeout).await?;
    }
    Ok(())
}

/// Polls status until every sandbox is Ready, showing each unit's progress.
/// Fails at once on an error that will not fix itself (a missing image, a
/// failed build, a port taken by something else, a refused URL map); on
/// timeout it says what is still pending.
pub async fn wait_ready(api: &Api, sandboxes: &[String], timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut shown: std::collections::BTreeMap<String, String> = Default::default();
    let mut pending: Vec<String> = sandboxes.to_vec();
    let mut last_status = std::collections::BTreeMap::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for name in &pending {
            let st = api.status(name).await?;
            let mut lines = vec![(
                name.clone(),
                format!(
                    "{}{}",
                    st.phase,
                    st.message
                        .as_ref()
                        .map(|m| format!(" - {m}"))
                        .unwrap_or_default()
                ),
            )];
            let picked_up = st.agents.iter().all(|a| a.current);
            for u in st.units.iter().filter(|_| picked_up) {
                let state = match (&u.error, u.ready) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, true) => format!(
                        "ready ({}@{})",
                        u.branch,
                        u.commit.as_deref().map_or("?", |c| &c[..c.len().min(12)])
                    ),
                    (None, false) => u
                        .container_state
                        .clone()
                        .map_or("deploying".into(), |s| format!("deploying (container {s})")),
                };
                lines.push((format!("{name}/{}", u.name), state));
            }
            for (who, line) in lines {
                if shown.get(&who) != Some(&line) {
                    eprintln!("[{:>5.1}s] {who}: {line}", start.elapsed().as_secs_f64());
                    shown.insert(who, line);
                }
            }
            let blocked = st.units.iter().any(|u| u.blocked && u.error.is_some());
            match st.phase {
                Phase::Ready => {}
                Phase::Degraded if blocked => {
                    bail!(
                        "sandbox {name} cannot become ready until something changes: {}",
                        st.message.unwrap_or_default()
                    )
                }
                _ => still.push(name.clone()),
            }
            last_status.insert(name.clone(), st);
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if start.elapsed() >= timeout {
            let waiting: Vec<String> = pending
                .iter()
                .map(|n| {
                    let st = &last_status[n];
                    format!(
                        "{n} ({}{})",
                        st.phase,
                        st.message
                            .as_ref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            bail!(
                "timed out after {}s; still waiting for {}",
                timeout.as_secs(),
                waiting.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Polls a deleted sandbox's status until its agents confirm it is gone.
pub async fn wait_gone(api: &Api, sandbox: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match api.status(sandbox).await {
            Ok(st) => {
                let line = st.message.unwrap_or_default();
                if line != last {
                    eprintln!(
                        "[{:>5.1}s] {sandbox}: {} - {line}",
                        start.elapsed().as_secs_f64(),
                        st.phase
                    );
                    last = line;
                }
            }
            Err(e)
                if e.downcast_ref::<crate::api::Refused>()
                    .is_some_and(|r| r.not_found()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {}s; still pending: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Per agent: what would be created (+), replaced (~), removed (-) and
/// which URL map entries would switch (>).
pub fn render_plan(plan: &[AgentPlan]) -> String {
    if plan.is_empty() {
        return "No changes: the agents would do nothing.\n".into();
    }
    let mut out = String::new();
    for a in plan {
        out.push_str(&format!("agent {}:\n", a.agent));
        for c in &a.changes {
            let (mark, verb) = match c.kind {
                PlannedKind::Create => ('+', "create"),
                PlannedKind::Replace => ('~', "replace"),
                PlannedKind::Remove => ('-', "remove"),
                PlannedKind::Route => ('>', "switch route"),
            };
            out.push_str(&format!(
                "  {mark} {}/{}: {verb} ({})\n",
                c.sandbox,
                c.unit,
                c.reasons.join("; ")
            ));
        }
    }
    out
}
