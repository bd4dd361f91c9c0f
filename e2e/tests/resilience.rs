//! The agent and the controller failing: a killed agent converges without
//! duplicates or orphans, and a stopped controller leaves everything serving,
//! shows the agents' reports as stale, and picks up without redeploying.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sdp_e2e::{Ports, World, agent_binary};
use sdp_spec::wire::Phase;

const READY_WITHIN: Duration = Duration::from_secs(240);

fn start_agent_process(w: &World, role: &str) -> Child {
    let cfg = w.agent_config(role);
    std::process::Command::new(agent_binary())
        .args(["--name", &cfg.name, "--controller", &cfg.controller])
        .args(["--advertise", &cfg.advertise, "--bind-ip", &cfg.bind_ip])
        .arg("--work-dir")
        .arg(&cfg.work_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sdp-agent starts")
}

fn kill9(child: &mut Child) {
    // SAFETY: SIGKILL to the child process we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_converges_without_duplicate_or_orphaned_containers() {
    let Some(mut w) = World::new("killnine", Ports { base: 20100 }).await else {
        return;
    };
    w.spawn_agent("gw");
    let sb = w.sandbox_name("alice");
    let (svc, gw) = (w.ports.nth(0), w.ports.nth(1));
    // A slow build leaves time to kill the agent in the middle of its work.
    let slow = |d: sdp_spec::wire::SourceDocument| {
        sdp_spec::wire::SourceDocument {
        content: d.content.replace(
            "build = [\"env\", \"CGO_ENABLED=0\", \"go\", \"build\", \"-o\", \".sdp/bin/service\", \".\"]",
            "build = [\"sh\", \"-c\", \"sleep 3 && CGO_ENABLED=0 go build -o .sdp/bin/service .\"]",
        ),
        ..d
    }
    };
    let mut docs: Vec<_> = w.catalog().into_iter().map(slow).collect();
    docs.push(w.sandbox_doc("alice", "feature/PAY-123", true, svc, gw));
    w.apply(docs).await.expect("apply");

    let mut agent = start_agent_process(&w, "micro");
    for round in 0..2 {
        // Kill it while it applies a change (the build is running).
        w.wait_until(&sb, READY_WITHIN, "being applied", |s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("applying:"))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        kill9(&mut agent);
        agent = start_agent_process(&w, "micro");
        let st = w
            .wait_until(&sb, READY_WITHIN, "Ready after the kill", |s| {
                s.phase == Phase::Ready
            })
            .await;
        let names = w.sdp_containers().await;
        assert_eq!(
            names,
            vec![format!("sdp-{sb}-erangel"), format!("sdp-{sb}-eredar")],
            "round {round}: one container per unit, none left over"
        );
        assert!(st.units.iter().all(|u| u.ready), "{st:#?}");
        if round == 0 {
            // Round two kills it while replacing the container for another branch.
            w.apply(vec![w.sandbox_doc("alice", "main", true, svc, gw)])
                .await
                .expect("apply");
        }
    }
    let a = w.get_json(gw, "/eredar/whoami").await.unwrap();
    assert_eq!(a["branch"], "main", "{a}");
    kill9(&mut agent);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_controller_down_everything_keeps_serving_and_picks_up_without_redeploying() {
    let Some(mut w) = World::new("ctldown", Ports { base: 20200 }).await else {
        return;
    };
    w.spawn_watchful_agent("micro", Duration::from_secs(1));
    w.spawn_watchful_agent("gw", Duration::from_secs(1));
    let sb = w.sandbox_name("alice");
    let (svc, gw) = (w.ports.nth(0), w.ports.nth(1));
    let mut docs = w.catalog();
    docs.push(w.sandbox_doc("alice", "feature/PAY-123", true, svc, gw));
    w.apply(docs).await.expect("apply");
    let before = w
        .wait_until(&sb, READY_WITHIN, "Ready", |s| s.phase == Phase::Ready)
        .await;
    let ids = |st: &sdp_spec::wire::SandboxStatus| {
        st.units
            .iter()
            .map(|u| u.container_id.clone())
            .collect::<Vec<_>>()
    };

    w.stop_controller().await;
    // The agents keep converging what they have; the sandbox keeps serving.
    let down_since = Instant::now();
    while down_since.elapsed() < Duration::from_secs(6) {
        let a = w
            .get_json(gw, "/eredar/whoami")
            .await
            .expect("serving with the controller down");
        assert_eq!(a["sandbox"], sb.as_str(), "{a}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // What the controller shows for that time: the reports are stale.
    let settings = sdp_controller::Settings {
        stale_after: Duration::from_secs(2),
        ..Default::default()
    };
    let (url, view) = w.controller_view(settings).await;
    let st: sdp_spec::wire::SandboxStatus = reqwest::get(format!("{url}/v1/sandboxes/{sb}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view.stop().await;
    assert!(st.agents.iter().all(|a| a.stale), "{:?}", st.agents);
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains("last reported") && msg.contains("(stale after 2s)"),
        "{msg}"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.kind == "AgentsReporting" && !c.ok),
        "{:?}",
        st.conditions
    );

    // Back up: the agents report again, Ready, and nothing was redeployed.
    w.restart_controller().await;
    let after = w
        .wait_until(&sb, READY_WITHIN, "Ready and fresh again", |s| {
            s.phase == Phase::Ready
                && s.agents
                    .iter()
                    .all(|a| !a.stale && a.last_report_age_ms.is_some_and(|ms| ms < 5000))
        })
        .await;
    assert_eq!(
        ids(&after),
        ids(&before),
        "the same containers: nothing was redeployed"
    );
    assert!(after.drift.is_empty(), "no drift: {:?}", after.drift);
    w.finish().await;
}
