//! A steady-state pass over 50 sandboxes × 3 services on the real engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdp_agent::config::AgentConfig;
use sdp_agent::docker::Engine;
use sdp_agent::reconcile::Reconciler;
use sdp_spec::record::Record;

const SANDBOXES: usize = 50;
const SERVICES: usize = 3;
const PORT_BASE: u16 = 22000;
const PASSES: usize = 20;
const AGENT: &str = "bench-steady";

pub async fn run() -> anyhow::Result<()> {
    let engine = Arc::new(Engine::connect().await?);
    anyhow::ensure!(
        engine.image_present("sdp/runtime:busybox").await?,
        "needs sdp/runtime:busybox: bash examples/images/build.sh"
    );
    let address = engine.bridge_gateway().await?;
    clear(&engine).await?;
    let dir = tempfile::tempdir()?;

    // One real repository, one commit, shared by the three services.
    let repo = dir.path().join("svc");
    std::fs::create_dir_all(&repo)?;
    std::fs::write(repo.join("README"), "bench\n")?;
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "bench"],
    ] {
        let ok = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=b",
                "-c",
                "user.email=b@sdp.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&repo)
            .status()?
            .success();
        anyhow::ensure!(ok, "git {args:?} failed");
    }

    let mut records: BTreeMap<String, Record> = BTreeMap::new();
    let mut add = |text: String| -> anyhow::Result<()> {
        let r = sdp_spec::parse_toml(&text, "bench")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .record;
        records.insert(r.key(), r);
        Ok(())
    };
    for s in 0..SERVICES {
        add(format!(
            "kind = \"service\"\nname = \"svc{s}\"\nrepo = \"{}\"\nagent = \"{AGENT}\"\nimage = \"sdp/runtime:busybox\"\ncommand = [\"httpd\", \"-f\", \"-p\", \"8080\"]\ncontainer_port = 8080\n",
            repo.display()
        ))?;
    }
    for b in 0..SANDBOXES {
        let mut text = format!("kind = \"sandbox\"\nname = \"bench-{b}\"\n");
        for s in 0..SERVICES {
            let port = PORT_BASE + (b * SERVICES + s) as u16;
            text.push_str(&format!(
                "[services.svc{s}]\nbranch = \"main\"\nhost_port = {port}\n"
            ));
        }
        add(text)?;
    }
    let agents = [(
        AGENT.to_string(),
        sdp_spec::wire::AgentInfo {
            name: AGENT.into(),
            advertise: address.clone(),
            last_seen_ms: 0,
        },
    )]
    .into();
    let work = sdp_controller::resolve::assignments_for(AGENT, 1, &records, &agents);

    let mut cfg = AgentConfig::new(
        AGENT,
        "http://127.0.0.1:9",
        dir.path().join("agent"),
        &address,
    );
    cfg.branch_check = Duration::from_secs(3600);
    let mut reconciler = Reconciler::new(cfg.clone(), engine.clone());
    eprintln!("converging {} containers (once)...", SANDBOXES * SERVICES);
    let t = Instant::now();
    let first = reconciler.pass(&work, None).await;
    let converge = t.elapsed();
    anyhow::ensure!(
        first
            .report
            .sandboxes
            .iter()
            .all(|s| s.phase == sdp_spec::wire::Phase::Ready),
        "not converged: {:?}",
        first
            .report
            .sandboxes
            .iter()
            .find(|s| s.phase != sdp_spec::wire::Phase::Ready)
    );

    let mut rows = Vec::new();
    for (label, branch_check) in [
        ("steady pass", Duration::from_secs(3600)),
        (
            "steady pass that also asks git for branch heads",
            Duration::ZERO,
        ),
    ] {
        let mut cfg = cfg.clone();
        cfg.branch_check = branch_check;
        let mut r = Reconciler::new(cfg, engine.clone());
        r.pass(&work, None).await; // warm: the first pass of a fresh agent resolves every branch
        let (mut cpu, mut wall, mut calls, mut writes, mut actions) =
            (Vec::new(), Vec::new(), 0, 0, 0);
        for _ in 0..PASSES {
            let (c0, m0, cpu0, t0) = (
                engine.calls(),
                engine.mutations(),
                crate::cpu_time(),
                Instant::now(),
            );
            let out = r.pass(&work, None).await;
            wall.push(t0.elapsed().as_secs_f64() * 1000.0);
            cpu.push((crate::cpu_time() - cpu0).as_secs_f64() * 1000.0);
            calls += engine.calls() - c0;
            writes += engine.mutations() - m0;
            actions += out.actions.len();
        }
        rows.push((
            label,
            cpu,
            wall,
            calls as f64 / PASSES as f64,
            writes,
            actions,
        ));
    }
    clear(&engine).await?;

    println!(
        "### Steady-state pass, {SANDBOXES} sandboxes × {SERVICES} services ({} containers), {PASSES} passes each\n",
        SANDBOXES * SERVICES
    );
    println!(
        "First convergence of all containers took {:.1} s.\n",
        converge.as_secs_f64()
    );
    println!(
        "| pass | CPU median | CPU p90 | wall median | Docker calls per pass | Docker write calls | actions |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, cpu, wall, calls, writes, actions) in rows {
        let (c50, c90, _, _) = crate::summary(cpu);
        let (w50, _, _, _) = crate::summary(wall);
        println!(
            "| {label} | {c50:.1} ms | {c90:.1} ms | {w50:.1} ms | {calls:.1} | {writes} | {actions} |"
        );
    }
    Ok(())
}

/// Removes the benchmark's containers (labelled with its agent name).
async fn clear(engine: &Engine) -> anyhow::Result<()> {
    for c in engine.list_owned(AGENT).await? {
        engine.remove(&c.id).await?;
    }
    Ok(())
}
