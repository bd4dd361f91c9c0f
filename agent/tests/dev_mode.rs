//! `sdp-agent dev`: one command runs a controller and local agents together;
//! SIGTERM stops all of it cleanly. Needs the Docker engine (set
//! SDP_SKIP_DOCKER_TESTS=1 to skip explicitly).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

#[tokio::test]
async fn dev_mode_runs_controller_and_agents_and_stops_on_sigterm() {
    if std::env::var("SDP_SKIP_DOCKER_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: SDP_SKIP_DOCKER_TESTS=1 (dev mode needs the Docker engine)");
        return;
    }
    assert!(
        sdp_agent::docker::Engine::connect().await.is_ok(),
        "dev mode needs the Docker engine; start it or set SDP_SKIP_DOCKER_TESTS=1"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sdp-agent"))
        .args([
            "dev",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--agent", "devtest-micro,devtest-gw"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let agents = loop {
        if let Some(body) = get(port, "/v1/agents").await
            && body.contains("devtest-micro")
            && body.contains("devtest-gw")
        {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "dev mode did not come up with both agents"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(agents.contains("\"advertise\":\""), "{agents}");
    assert!(
        dir.path().join("controller/sdp.redb").exists(),
        "embedded data dir is used"
    );

    let t = Instant::now();
    // SAFETY: sends SIGTERM to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "stopped promptly");
}

#[test]
fn bad_agent_configuration_exits_64() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sdp-agent"))
            .args(args)
            .env_remove("SDP_AGENT_NAME")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--name (or SDP_AGENT_NAME) is required")
    );
    let out = run(&["--name", "Bad_Name"]);
    assert_eq!(out.status.code(), Some(64));
    let out = run(&["--name", "ok", "--controller", "127.0.0.1:3452"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be an http:// or https:// URL"));
    let out = run(&["dev", "--agent", "Nope"]);
    assert_eq!(out.status.code(), Some(64));
}
