//! The main job, end to end, against the real Docker engine: apply a sandbox,
//! get its containers and a gateway that routes the sandbox's service to the
//! sandbox and everything else to the OCP stand-in.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use sdp_agent::reconcile::Reconciler;
use sdp_e2e::{Ports, World};
use sdp_spec::wire::{Phase, Role, SandboxStatus};

const READY_WITHIN: Duration = Duration::from_secs(240);

fn git_head(world: &World, repo: &str, branch: &str) -> String {
    sdp_e2e::git(
        &["rev-parse", branch],
        &world.git_dir.join(format!("{repo}.git")),
    )
}

fn unit<'a>(st: &'a SandboxStatus, name: &str) -> &'a sdp_spec::wire::UnitReport {
    st.units
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("no unit {name} in {st:#?}"))
}

fn route<'a>(st: &'a SandboxStatus, service: &str) -> &'a sdp_spec::wire::RouteReport {
    st.routes
        .iter()
        .find(|r| r.service == service)
        .unwrap_or_else(|| panic!("no route {service} in {st:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_job_end_to_end() {
    let Some(mut w) = World::new("mainjob", Ports { base: 19100 }).await else {
        return;
    };
    w.spawn_agent("micro");
    w.spawn_agent("gw");
    let sb = w.sandbox_name("alice");
    let (svc_port, gw_port) = (w.ports.nth(0), w.ports.nth(1));

    // 1. Apply the catalog and the sandbox: Ready, and routed.
    let mut docs = w.catalog();
    docs.push(w.sandbox_doc("alice", "feature/PAY-123", true, svc_port, gw_port));
    w.apply(docs).await.expect("apply");
    let st = w
        .wait_until(&sb, READY_WITHIN, "Ready", |s| s.phase == Phase::Ready)
        .await;
    let feature_head = git_head(&w, "eredar", "feature/PAY-123");
    assert_eq!(
        unit(&st, "eredar").commit.as_deref(),
        Some(feature_head.as_str())
    );
    assert_eq!(unit(&st, "erangel").role, Role::Gateway);

    let answer = w
        .get_json(gw_port, "/eredar/whoami")
        .await
        .expect("gateway answers for eredar");
    assert_eq!(answer["service"], "eredar", "{answer}");
    assert_eq!(answer["branch"], "feature/PAY-123", "{answer}");
    assert_eq!(answer["commit"], feature_head.as_str(), "{answer}");
    assert_eq!(answer["sandbox"], sb.as_str(), "{answer}");
    assert_eq!(answer["greeting"], "hello from feature/PAY-123", "{answer}");
    assert_eq!(answer["path"], "/whoami", "{answer}");

    let answer = w
        .get_json(gw_port, "/ledger/whoami")
        .await
        .expect("gateway answers for ledger");
    assert_eq!(
        answer["service"], "ocp-baseline",
        "other services go to OCP: {answer}"
    );
    assert_eq!(answer["path"], "/ledger/whoami", "{answer}");

    let sandbox_url = format!("http://{}:{svc_port}/", w.address);
    let r = route(&st, "eredar");
    assert!(r.routed_to_sandbox);
    assert_eq!(
        r.served.as_deref(),
        Some(sandbox_url.as_str()),
        "read through the gateway's probe: {r:?}"
    );
    assert_eq!(r.file.as_deref(), Some(sandbox_url.as_str()));
    assert_eq!(
        r.default.as_deref(),
        Some(format!("{}eredar/", w.ocp_url()).as_str())
    );
    let r = route(&st, "ledger");
    assert!(!r.routed_to_sandbox);
    assert_eq!(r.served, r.default);

    // 2. A converged sandbox: another pass (by a freshly started agent, which
    //    knows nothing but what Docker, git and the files say) changes nothing.
    w.stop_agents().await;
    let gw_checkout = w
        .work_dir("gw")
        .join("sandboxes")
        .join(&sb)
        .join("gateway-erangel");
    let config = gw_checkout.join("application/config/config.php");
    let before = std::fs::metadata(&config).unwrap();
    let containers_before = w.sdp_containers().await;
    for role in ["micro", "gw"] {
        let work = w.assignments(role).await;
        let mut reconciler = Reconciler::new(w.agent_config(role), w.engine.clone());
        let mutations = w.engine.mutations();
        for pass in 1..=2 {
            let calls = w.engine.calls();
            let out = reconciler.pass(&work, None).await;
            assert!(
                out.actions.is_empty(),
                "{role} pass {pass} changed things: {:?}",
                out.actions
            );
            assert_eq!(
                w.engine.mutations(),
                mutations,
                "{role} pass {pass} made a Docker write call"
            );
            assert_eq!(
                w.engine.calls() - calls,
                1,
                "{role} pass {pass}: one listing, no other Docker call"
            );
            assert!(
                out.report.sandboxes.iter().all(|s| s.phase == Phase::Ready),
                "{:#?}",
                out.report
            );
        }
    }
    let after = std::fs::metadata(&config).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec(), before.mtime()),
        (after.ino(), after.mtime_nsec(), after.mtime()),
        "config.php was not rewritten"
    );
    assert_eq!(w.sdp_containers().await, containers_before);
    w.spawn_agent("micro");
    w.spawn_agent("gw");

    // 3. Change the service's branch: the new commit is built and served.
    let main_head = git_head(&w, "eredar", "main");
    w.apply(vec![
        w.sandbox_doc("alice", "main", true, svc_port, gw_port),
    ])
    .await
    .expect("apply");
    w.wait_until(&sb, READY_WITHIN, "Ready on main", |s| {
        s.phase == Phase::Ready
            && s.units
                .iter()
                .any(|u| u.name == "eredar" && u.commit.as_deref() == Some(main_head.as_str()))
    })
    .await;
    let answer = w
        .get_json(gw_port, "/eredar/whoami")
        .await
        .expect("gateway answers");
    assert_eq!(answer["branch"], "main", "{answer}");
    assert_eq!(answer["commit"], main_head.as_str(), "{answer}");
    assert_eq!(answer["greeting"], "hello from main", "{answer}");

    // 4. route = false: the gateway sends eredar to OCP again.
    w.apply(vec![
        w.sandbox_doc("alice", "main", false, svc_port, gw_port),
    ])
    .await
    .expect("apply");
    let st = w
        .wait_until(&sb, READY_WITHIN, "Ready with eredar unrouted", |s| {
            s.phase == Phase::Ready
                && s.routes
                    .iter()
                    .any(|r| r.service == "eredar" && !r.routed_to_sandbox)
        })
        .await;
    assert_eq!(route(&st, "eredar").served, route(&st, "eredar").default);
    // Ready means the running gateway was seen serving the new map.
    let answer = w
        .get_json(gw_port, "/eredar/whoami")
        .await
        .expect("gateway answers");
    assert_eq!(answer["service"], "ocp-baseline", "{answer}");
    assert_eq!(answer["path"], "/eredar/whoami", "{answer}");
    // Nothing routed: the URL map is the committed file, byte for byte.
    let committed = std::process::Command::new("git")
        .arg("-C")
        .arg(w.git_dir.join("erangel.git"))
        .args(["show", "feature/checkout-v2:application/config/config.php"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(std::fs::read(&config).unwrap(), committed);

    // 5. Delete: tracked as Deleting until the agents confirm; then the
    //    containers and checkouts are gone.
    w.delete("sandbox", &sb).await.expect("delete");
    let st = w.status_opt(&sb).await;
    assert!(
        st.as_ref().is_none_or(|s| s.phase == Phase::Deleting),
        "{st:?}"
    );
    let start = std::time::Instant::now();
    while w.status_opt(&sb).await.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "deletion not confirmed: {:?}",
            w.status_opt(&sb).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    loop {
        let containers = w.sdp_containers().await;
        let checkouts_left = ["micro", "gw"]
            .iter()
            .any(|r| w.work_dir(r).join("sandboxes").join(&sb).exists());
        if containers.is_empty() && !checkouts_left {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still there after delete: {containers:?}, checkouts: {checkouts_left}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_a_clear_condition_not_a_hang() {
    let Some(mut w) = World::new("noimage", Ports { base: 19200 }).await else {
        return;
    };
    w.spawn_agent("micro");
    let service = w.localize(
        r#"kind = "service"
name = "ghost"
repo = "file:///tmp/sdp-demo/git/eredar.git"
agent = "micro"
image = "sdp/not-loaded:1"
command = ["/bin/true"]
container_port = 8080
"#,
    );
    let sandbox = format!(
        "kind = \"sandbox\"\nname = \"{}\"\n[services.ghost]\nbranch = \"main\"\nhost_port = {}\n",
        w.sandbox_name("ghost"),
        w.ports.nth(0)
    );
    w.apply(vec![
        sdp_spec::wire::SourceDocument {
            file: "ghost.toml".into(),
            content: service,
        },
        sdp_spec::wire::SourceDocument {
            file: "sb.toml".into(),
            content: sandbox,
        },
    ])
    .await
    .expect("apply");
    let st = w
        .wait_until(
            &w.sandbox_name("ghost"),
            Duration::from_secs(60),
            "Degraded",
            |s| s.phase == Phase::Degraded,
        )
        .await;
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains("image sdp/not-loaded:1 is not loaded on agent noimage-micro"),
        "the message names the image and the agent: {msg}"
    );
    assert!(
        w.sdp_containers().await.is_empty(),
        "nothing half-made is left"
    );
    w.finish().await;
}
