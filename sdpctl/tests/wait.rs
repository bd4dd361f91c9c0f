//! `sdpctl apply --wait` against a real controller and agent on the Docker
//! engine: it fails at once on an error that will not fix itself, instead of
//! sitting out its timeout. Needs Docker (SDP_SKIP_DOCKER_TESTS=1 skips it).

use std::time::{Duration, Instant};

use tokio::sync::watch;

fn git(args: &[&str], dir: &std::path::Path) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@sdp.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_fails_at_once_on_a_missing_image() {
    if std::env::var("SDP_SKIP_DOCKER_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: SDP_SKIP_DOCKER_TESTS=1 (needs the Docker engine)");
        return;
    }
    let engine = std::sync::Arc::new(
        sdp_agent::docker::Engine::connect()
            .await
            .expect("needs the Docker engine; start it or set SDP_SKIP_DOCKER_TESTS=1"),
    );
    let address = engine.bridge_gateway().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("src");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("README"), "x\n").unwrap();
    git(&["init", "-q"], &work);
    git(&["add", "-A"], &work);
    git(&["commit", "-q", "-m", "x"], &work);

    let config = sdp_controller::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        settings: Default::default(),
    };
    let bound = sdp_controller::bind(&config).await.unwrap();
    let url = format!("http://{}", bound.local_addr());
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(bound.serve(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let cfg = sdp_agent::config::AgentConfig::new(
        "waittest-micro",
        &url,
        dir.path().join("agent"),
        &address,
    );
    let agent = tokio::spawn(sdp_agent::run::run(cfg, engine, tx.subscribe()));

    let specs = dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(
        specs.join("ghost.toml"),
        format!(
            "kind = \"service\"\nname = \"ghost\"\nrepo = \"{}\"\nagent = \"waittest-micro\"\nimage = \"sdp/not-loaded:1\"\ncontainer_port = 8080\n",
            work.display()
        ),
    )
    .unwrap();
    std::fs::write(specs.join("sb.toml"), "kind = \"sandbox\"\nname = \"waittest\"\n[services.ghost]\nbranch = \"main\"\nhost_port = 19791\n").unwrap();

    let t = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sdpctl"))
        .args([
            "apply",
            "--wait",
            "--timeout",
            "3m",
            "-f",
            specs.to_str().unwrap(),
        ])
        .env("SDP_CONTROLLER", &url)
        .output()
        .await
        .unwrap();
    let elapsed = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot become ready until something changes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("image sdp/not-loaded:1 is not loaded on agent waittest-micro"),
        "{stderr}"
    );
    assert!(
        stderr.contains("waittest/ghost: error: image sdp/not-loaded:1"),
        "per-unit progress: {stderr}"
    );
    assert!(
        elapsed < Duration::from_secs(90),
        "failed at once, not at the 3m timeout ({elapsed:?})"
    );

    let _ = tx.send(true);
    let _ = agent.await;
}
