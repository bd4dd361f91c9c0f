//! Drift against the real engine: every kind is reported (read back from the
//! API) and put back within a stated bound, and a self-heal that cannot work
//! backs off and says so. Agents here look every second.

use std::time::Duration;

use bollard::query_parameters::{
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use sdp_agent::docker::{
    ContainerSpec, LABEL_AGENT, LABEL_MANAGED, LABEL_ROLE, LABEL_SANDBOX, LABEL_UNIT,
};
use sdp_e2e::{Ports, RUNTIME_IMAGE, World};
use sdp_spec::wire::{Phase, SandboxStatus};

/// Every drift below is reported and healed within this.
const HEAL_WITHIN: Duration = Duration::from_secs(45);
const READY_WITHIN: Duration = Duration::from_secs(240);
const PERIOD: Duration = Duration::from_secs(1);

async fn ready_world(name: &str, base: u16) -> Option<(World, String, u16, u16)> {
    let mut w = World::new(name, Ports { base }).await?;
    w.spawn_watchful_agent("micro", PERIOD);
    w.spawn_watchful_agent("gw", PERIOD);
    let sb = w.sandbox_name("alice");
    let (svc, gw) = (w.ports.nth(0), w.ports.nth(1));
    let mut docs = w.catalog();
    docs.push(w.sandbox_doc("alice", "feature/PAY-123", true, svc, gw));
    w.apply(docs).await.expect("apply");
    w.wait_until(&sb, READY_WITHIN, "Ready", |s| s.phase == Phase::Ready)
        .await;
    Some((w, sb, svc, gw))
}

fn eredar(st: &SandboxStatus) -> &sdp_spec::wire::UnitReport {
    st.units
        .iter()
        .find(|u| u.name == "eredar")
        .expect("eredar unit")
}

/// A container made by hand, as a person with the docker CLI would.
fn by_hand(w: &World, name: &str, host_port: u16, labels: &[(&str, String)]) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: RUNTIME_IMAGE.into(),
        cmd: Some(vec!["sleep".into(), "600".into()]),
        env: vec![],
        binds: vec![],
        container_port: 8080,
        host_ip: w.address.clone(),
        host_port,
        extra_hosts: vec![],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// SDP's labels for a service unit of this world's micro agent.
fn sdp_labels(w: &World, sandbox: &str) -> Vec<(&'static str, String)> {
    vec![
        (LABEL_MANAGED, "true".to_string()),
        (LABEL_AGENT, w.agent_name("micro")),
        (LABEL_SANDBOX, sandbox.to_string()),
        (LABEL_ROLE, "service".to_string()),
        (LABEL_UNIT, "eredar".to_string()),
    ]
}

async fn healed(w: &World, sb: &str, what: &str) -> SandboxStatus {
    w.wait_until(sb, HEAL_WITHIN, &format!("healed after `{what}`"), |s| {
        s.phase == Phase::Ready && s.drift.iter().any(|d| d.what.starts_with(what))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_drift_is_reported_and_healed() {
    let Some((w, sb, _svc, gw)) = ready_world("ctrdrift", 19700).await else {
        return;
    };
    let docker = w.engine.raw().clone();
    let name = format!("sdp-{sb}-eredar");

    // Stopped by hand.
    docker
        .stop_container(&name, Some(StopContainerOptionsBuilder::new().t(1).build()))
        .await
        .unwrap();
    let st = healed(&w, &sb, "the container is stopped").await;
    assert_eq!(eredar(&st).container_state.as_deref(), Some("running"));

    // Killed.
    let before = eredar(&st).container_id.clone();
    docker
        .kill_container(
            &name,
            Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
        )
        .await
        .unwrap();
    let st = w
        .wait_until(&sb, HEAL_WITHIN, "running again after a kill", |s| {
            s.phase == Phase::Ready
                && s.drift
                    .iter()
                    .filter(|d| d.what == "the container is stopped")
                    .count()
                    >= 2
        })
        .await;
    assert_eq!(
        eredar(&st).container_id,
        before,
        "a killed container is started again, not replaced"
    );

    // Removed.
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    let st = healed(&w, &sb, "the container is gone").await;
    assert_ne!(eredar(&st).container_id, before);

    // Replaced by hand with a look-alike publishing another port.
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    let lookalike = by_hand(&w, &name, w.ports.nth(5), &sdp_labels(&w, &sb));
    w.engine
        .create_and_start(&lookalike, "by-hand")
        .await
        .unwrap();
    let st = healed(
        &w,
        &sb,
        "container sdp-ctrdrift-alice-eredar does not match",
    )
    .await;
    let d = st
        .drift
        .iter()
        .rev()
        .find(|d| d.what.contains("does not match"))
        .unwrap();
    assert!(
        d.what
            .contains(&format!("host port ? -> {}", w.ports.nth(0))),
        "{d:?}"
    );

    // After all that, the sandbox serves through its gateway as before.
    let a = w.get_json(gw, "/eredar/whoami").await.unwrap();
    assert_eq!(a["sandbox"], sb.as_str(), "{a}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_and_branch_drift_and_pins() {
    let Some((w, sb, _svc, gw)) = ready_world("gitdrift", 19800).await else {
        return;
    };
    let checkout = w.checkout("micro", &sb, "service-eredar");
    let git = |args: &[&str]| sdp_e2e::git(args, &checkout);
    let deployed = git(&["rev-parse", "HEAD"]);

    // HEAD moved by hand (to the previous commit).
    git(&["checkout", "-q", "HEAD~1"]);
    healed(&w, &sb, "the checkout was moved to another commit").await;
    assert_eq!(git(&["rev-parse", "HEAD"]), deployed, "put back");

    // The branch moves upstream: the new commit is deployed and served.
    let new = w.push_service_commit("eredar", "feature/PAY-123", "hello from a new commit");
    let st = healed(&w, &sb, "branch feature/PAY-123 moved upstream").await;
    assert_eq!(eredar(&st).commit.as_deref(), Some(new.as_str()));
    assert_eq!(eredar(&st).branch_head.as_deref(), Some(new.as_str()));
    let a = w.get_json(gw, "/eredar/whoami").await.unwrap();
    assert_eq!(a["greeting"], "hello from a new commit", "{a}");
    assert_eq!(a["commit"], new.as_str(), "{a}");

    // Pinned to the earlier commit: it runs while the branch head is elsewhere.
    let mut doc = w.sandbox_doc("alice", "feature/PAY-123", true, w.ports.nth(0), gw);
    doc.content = doc.content.replace(
        "route = true",
        &format!("route = true\ncommit = \"{}\"", &deployed[..10]),
    );
    w.apply(vec![doc]).await.expect("apply");
    let st = w
        .wait_until(&sb, READY_WITHIN, "Ready on the pinned commit", |s| {
            s.phase == Phase::Ready && eredar(s).commit.as_deref() == Some(deployed.as_str())
        })
        .await;
    assert!(eredar(&st).pinned);
    assert_eq!(eredar(&st).branch_head.as_deref(), Some(new.as_str()));
    assert!(
        st.conditions
            .iter()
            .any(|c| c.kind == "OnBranchHead" && c.ok),
        "a pin is not behind: {:?}",
        st.conditions
    );
    let a = w.get_json(gw, "/eredar/whoami").await.unwrap();
    assert_eq!(a["commit"], deployed.as_str(), "{a}");

    // A commit that is not on the branch is refused plainly.
    let mut doc = w.sandbox_doc("alice", "feature/PAY-123", true, w.ports.nth(0), gw);
    doc.content = doc.content.replace(
        "route = true",
        "route = true\ncommit = \"0123456789abcdef\"",
    );
    w.apply(vec![doc]).await.expect("apply");
    let st = w
        .wait_until(&sb, READY_WITHIN, "Degraded", |s| {
            s.phase == Phase::Degraded
        })
        .await;
    assert!(
        st.message
            .clone()
            .unwrap_or_default()
            .contains("commit 0123456789abcdef does not exist in")
    );
    assert!(eredar(&st).blocked);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_collected_and_deletions_while_down_complete() {
    let Some((mut w, sb, _svc, _gw)) = ready_world("orphans", 19900).await else {
        return;
    };

    // A container labelled as the agent's that no record wants.
    let orphan = by_hand(
        &w,
        "sdp-orphans-ghost-eredar",
        w.ports.nth(6),
        &sdp_labels(&w, "orphans-ghost"),
    );
    w.engine.create_and_start(&orphan, "by-hand").await.unwrap();
    let start = std::time::Instant::now();
    loop {
        let view = w.agent_view("micro").await;
        if view.collected.iter().any(|e| {
            e.unit == "sdp-orphans-ghost-eredar"
                && e.what
                    .contains("sandbox orphans-ghost is no longer assigned")
        }) {
            break;
        }
        assert!(
            start.elapsed() < HEAL_WITHIN,
            "orphan not collected: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !w.sdp_containers()
            .await
            .contains(&"sdp-orphans-ghost-eredar".to_string())
    );

    // The sandbox is deleted while its agents are down.
    w.stop_agents().await;
    w.delete("sandbox", &sb).await.unwrap();
    let st = w.status_opt(&sb).await.expect("tracked while deleting");
    assert_eq!(st.phase, Phase::Deleting);
    assert!(
        st.message
            .as_deref()
            .unwrap_or("")
            .contains("to pick up the deletion"),
        "{st:?}"
    );
    assert_eq!(
        w.sdp_containers().await.len(),
        2,
        "nothing removed while the agents are down"
    );
    w.spawn_watchful_agent("micro", PERIOD);
    w.spawn_watchful_agent("gw", PERIOD);
    let start = std::time::Instant::now();
    while w.status_opt(&sb).await.is_some() {
        assert!(
            start.elapsed() < HEAL_WITHIN,
            "deletion not confirmed: {:?}",
            w.status_opt(&sb).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(w.sdp_containers().await.is_empty());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_it_does_not_own_is_named_left_alone_and_retried_with_backoff() {
    let Some((w, sb, _svc, _gw)) = ready_world("squatter", 20000).await else {
        return;
    };
    let docker = w.engine.raw().clone();
    let name = format!("sdp-{sb}-eredar");
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    // Someone else's container takes the name (no SDP labels at all).
    let squatter = by_hand(&w, &name, w.ports.nth(7), &[("sdp.e2e", w.name.clone())]);
    let squatter_id = w
        .engine
        .create_and_start(&squatter, "someone")
        .await
        .unwrap();
    let st = w
        .wait_until(&sb, HEAL_WITHIN, "Degraded, backing off", |s| {
            s.phase == Phase::Degraded
                && s.message
                    .as_deref()
                    .is_some_and(|m| m.contains("attempt 2;"))
        })
        .await;
    let msg = st.message.clone().unwrap();
    assert!(
        msg.contains(&format!(
            "container name {name} is taken by container {name}"
        )),
        "{msg}"
    );
    assert!(msg.contains("which SDP does not manage"), "{msg}");
    assert!(msg.contains("looked at again in"), "{msg}");
    assert!(eredar(&st).blocked);
    let info = docker
        .inspect_container(&squatter_id, None)
        .await
        .expect("left alone");
    assert_eq!(info.state.and_then(|s| s.running), Some(true));

    docker
        .remove_container(
            &squatter_id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    w.wait_until(
        &sb,
        Duration::from_secs(120),
        "Ready once the name is free",
        |s| s.phase == Phase::Ready,
    )
    .await;
    w.finish().await;
}
