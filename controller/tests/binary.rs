//! The sdp-controller binary: bad configuration exits 64; SIGTERM stops it
//! cleanly, and what was applied before is there after a restart.

use std::process::Stdio;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &std::path::Path, port: u16) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_sdp-controller"))
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(port: u16) {
    let start = Instant::now();
    loop {
        if reqwest_get(port, "/healthz").await.is_some() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "controller did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reqwest_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

#[test]
fn bad_configuration_exits_64() {
    for args in [
        vec!["--data-dir", "/tmp/x", "--stale-after", "ten"],
        vec!["--listen", "nowhere"],
        vec![],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdp-controller"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_state_survives() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start(dir.path(), port);
    wait_healthy(port).await;
    // Register an agent (a write that bumps the revision) through a held long-poll.
    let poll = tokio::spawn(async move {
        reqwest_get(port, "/v1/agents/a1/assignments?advertise=10.0.0.1&wait=30").await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    // SAFETY: sends SIGTERM to the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "an open long-poll does not hold up shutdown"
    );
    assert!(
        poll.await.unwrap().is_some(),
        "the open long-poll was answered, not cut"
    );

    let mut child = start(dir.path(), port);
    wait_healthy(port).await;
    let agents = reqwest_get(port, "/v1/agents").await.unwrap();
    assert!(agents.contains("\"advertise\":\"10.0.0.1\""), "{agents}");
    child.kill().unwrap();
    child.wait().unwrap();
}
