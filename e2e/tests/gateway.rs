//! The gateway's URL map against the real PHP gateway under Apache: patches
//! are served at once even with a strict OPcache, hand edits are drift that
//! is reported and put back, refused maps leave the previous gateway serving,
//! and env-fallback entries are routed through the environment when allowed.

use std::time::Duration;

use sdp_e2e::{Ports, STRICT_GATEWAY_IMAGE, World};
use sdp_spec::wire::{Phase, SandboxStatus, SourceDocument};

const WITHIN: Duration = Duration::from_secs(240);

fn route<'a>(st: &'a SandboxStatus, service: &str) -> &'a sdp_spec::wire::RouteReport {
    st.routes
        .iter()
        .find(|r| r.service == service)
        .unwrap_or_else(|| panic!("no route {service}: {st:#?}"))
}

/// The catalog with the gateway record passed through `edit`.
fn catalog_with_gateway(w: &World, edit: impl Fn(String) -> String) -> Vec<SourceDocument> {
    w.catalog()
        .into_iter()
        .map(|mut d| {
            if d.file == "erangel.toml" {
                d.content = edit(d.content);
            }
            d
        })
        .collect()
}

fn sandbox_on_branch(w: &World, gw_branch: &str, route: bool, ports: (u16, u16)) -> SourceDocument {
    let mut d = w.sandbox_doc("alice", "feature/PAY-123", route, ports.0, ports.1);
    d.content = d.content.replace(
        "branch = \"feature/checkout-v2\"",
        &format!("branch = \"{gw_branch}\""),
    );
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_opcache_gateway_serves_each_patch_at_once() {
    let Some(mut w) = World::new("opcache", Ports { base: 19300 }).await else {
        return;
    };
    w.spawn_agent("micro");
    w.spawn_agent("gw");
    let sb = w.sandbox_name("alice");
    let ports = (w.ports.nth(0), w.ports.nth(1));
    let mut docs = catalog_with_gateway(&w, |t| {
        t.replace("sdp/php-apache:bookworm", STRICT_GATEWAY_IMAGE)
    });
    docs.push(sandbox_on_branch(&w, "main", true, ports));
    w.apply(docs).await.expect("apply");
    w.wait_until(&sb, WITHIN, "Ready", |s| s.phase == Phase::Ready)
        .await;
    let a = w.get_json(ports.1, "/eredar/whoami").await.unwrap();
    assert_eq!(a["sandbox"], sb.as_str(), "{a}");

    // Flip the route back and forth: with OPcache revalidating every 60 s,
    // only an explicit invalidation (verified through the probe) serves the
    // new map at once. Every request right after Ready must see it.
    for (round, routed) in [false, true, false].into_iter().enumerate() {
        w.apply(vec![sandbox_on_branch(&w, "main", routed, ports)])
            .await
            .expect("apply");
        let st = w
            .wait_until(&sb, WITHIN, "Ready with the new route", |s| {
                s.phase == Phase::Ready
                    && s.routes
                        .iter()
                        .any(|r| r.service == "eredar" && r.routed_to_sandbox == routed)
            })
            .await;
        assert!(
            route(&st, "eredar").served.is_some(),
            "routes come from the probe"
        );
        for attempt in 0..5 {
            let a = w.get_json(ports.1, "/eredar/whoami").await.unwrap();
            let want = if routed { "eredar" } else { "ocp-baseline" };
            assert_eq!(a["service"], want, "round {round}, request {attempt}: {a}");
        }
    }
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_url_map_is_reported_as_drift_and_put_back() {
    let Some(mut w) = World::new("handedit", Ports { base: 19400 }).await else {
        return;
    };
    w.spawn_agent("micro");
    w.spawn_watchful_agent("gw", Duration::from_secs(1));
    let sb = w.sandbox_name("alice");
    let ports = (w.ports.nth(0), w.ports.nth(1));
    let mut docs = w.catalog();
    docs.push(sandbox_on_branch(&w, "main", true, ports));
    w.apply(docs).await.expect("apply");
    w.wait_until(&sb, WITHIN, "Ready", |s| s.phase == Phase::Ready)
        .await;

    let config = w
        .checkout("gw", &sb, "gateway-erangel")
        .join("application/config/config.php");
    let good = std::fs::read(&config).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    let sandbox_url = format!("http://{}:{}/", w.address, ports.0);
    let edited = text
        .replace(
            &format!("'eredar_url'] = '{sandbox_url}'"),
            "'eredar_url'] = 'http://hand.edit/'",
        )
        .replace("/ledger/'", "/ledger-by-hand/'");
    assert_ne!(edited, text);
    std::fs::write(&config, edited).unwrap();

    let st = w
        .wait_until(
            &sb,
            Duration::from_secs(60),
            "healed with drift reported",
            |s| {
                s.phase == Phase::Ready
                    && s.drift
                        .iter()
                        .any(|d| d.what == "URL map entry eredar_url was edited by hand")
                    && s.drift
                        .iter()
                        .any(|d| d.what == "URL map entry ledger_url was edited by hand")
            },
        )
        .await;
    let d = st
        .drift
        .iter()
        .find(|d| d.what.contains("eredar_url"))
        .unwrap();
    assert_eq!(d.found.as_deref(), Some("http://hand.edit/"));
    assert_eq!(d.desired.as_deref(), Some(sandbox_url.as_str()));
    assert_eq!(
        std::fs::read(&config).unwrap(),
        good,
        "put back byte for byte"
    );
    assert_eq!(
        route(&st, "eredar").served.as_deref(),
        Some(sandbox_url.as_str())
    );
    let a = w.get_json(ports.1, "/ledger/whoami").await.unwrap();
    assert_eq!(
        a["path"], "/ledger/whoami",
        "the OCP default is served again: {a}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_url_maps_leave_the_previous_gateway_serving() {
    let Some(mut w) = World::new("refusals", Ports { base: 19500 }).await else {
        return;
    };
    w.spawn_agent("micro");
    w.spawn_agent("gw");
    let sb = w.sandbox_name("alice");
    let ports = (w.ports.nth(0), w.ports.nth(1));
    let mut docs = w.catalog();
    docs.push(sandbox_on_branch(&w, "main", true, ports));
    w.apply(docs).await.expect("apply");
    w.wait_until(&sb, WITHIN, "Ready", |s| s.phase == Phase::Ready)
        .await;

    w.push_gateway_branch("feature/computed", |t| {
        t.replace(
            "$config['eredar_url'] = 'http://",
            "$config['eredar_url'] = 'http' . '://",
        )
    });
    w.push_gateway_branch("feature/twice", |t| {
        format!("{t}$config['eredar_url'] = 'http://again/';\n")
    });
    w.push_gateway_branch("feature/compound", |t| {
        format!("{t}$config['eredar_url'] .= 'v2/';\n")
    });
    w.push_gateway_branch("feature/missing", |t| {
        t.replace("$config['eredar_url']", "$config['eredar_endpoint']")
    });
    w.push_gateway_branch("feature/broken", |t| {
        t.replace(
            "$config['upstream_timeout'] = 10;",
            "$config['upstream_timeout'] = 10\n$oops",
        )
    });
    let cases = [
        (
            "feature/computed",
            "key `eredar_url` at line 7 is computed, not a literal (it is a concatenation)",
        ),
        (
            "feature/twice",
            "key `eredar_url` is assigned more than once (lines 7, 13)",
        ),
        (
            "feature/compound",
            "key `eredar_url` is changed with `.=` (at lines 7, 13)",
        ),
        (
            "feature/broken",
            "does not parse as PHP in sdp/php-apache:bookworm; nothing was changed",
        ),
    ];
    for (branch, expect) in cases {
        w.apply(vec![sandbox_on_branch(&w, branch, true, ports)])
            .await
            .expect("apply");
        let st = w
            .wait_until(&sb, WITHIN, &format!("Degraded on {branch}"), |s| {
                s.phase == Phase::Degraded
            })
            .await;
        let msg = st.message.clone().unwrap_or_default();
        assert!(msg.contains(expect), "{branch}: {msg}");
        assert!(
            msg.contains("application/config/config.php") || branch == "feature/broken",
            "{branch}: names the file: {msg}"
        );
        // The previous gateway keeps serving the sandbox's route.
        let a = w.get_json(ports.1, "/eredar/whoami").await.unwrap();
        assert_eq!(a["sandbox"], sb.as_str(), "{branch}: {a}");
        let gw = st.units.iter().find(|u| u.name == "erangel").unwrap();
        assert_eq!(gw.branch, branch);
        assert!(
            gw.error.as_deref().is_some_and(|e| e.contains(expect)),
            "{branch}: {gw:?}"
        );
    }
    // Back to a good branch: Ready again.
    w.apply(vec![sandbox_on_branch(&w, "main", true, ports)])
        .await
        .expect("apply");
    w.wait_until(&sb, WITHIN, "Ready", |s| s.phase == Phase::Ready)
        .await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_fallbacks_are_routed_through_the_environment_when_allowed() {
    let Some(mut w) = World::new("envroute", Ports { base: 19600 }).await else {
        return;
    };
    w.spawn_agent("micro");
    w.spawn_agent("gw");
    let sb = w.sandbox_name("alice");
    let ports = (w.ports.nth(0), w.ports.nth(1));
    let canary = format!("{}canary/", w.ocp_url());
    w.push_gateway_branch("feature/env", |t| {
        t.replace(
            "$config['eredar_url'] = '",
            "$config['eredar_url'] = getenv('EREDAR_URL') ?: '",
        )
    });
    let with_env = |via: bool| {
        let canary = canary.clone();
        move |t: String| {
            let t = t.replace(
                "env = { APACHE_DOCUMENT_ROOT = \"/var/www/html/erangel\" }",
                &format!("env = {{ APACHE_DOCUMENT_ROOT = \"/var/www/html/erangel\", EREDAR_URL = \"{canary}\" }}"),
            );
            if via {
                format!("{t}routes_via_env = true\n")
            } else {
                t
            }
        }
    };
    let mut docs = catalog_with_gateway(&w, with_env(false));
    docs.push(sandbox_on_branch(&w, "feature/env", false, ports));
    w.apply(docs).await.expect("apply");
    let st = w
        .wait_until(&sb, WITHIN, "Ready, unrouted", |s| s.phase == Phase::Ready)
        .await;
    let r = route(&st, "eredar");
    assert_eq!(
        r.served.as_deref(),
        Some(canary.as_str()),
        "the environment wins over the file: {r:?}"
    );
    assert_eq!(r.env_var.as_deref(), Some("EREDAR_URL"));
    let a = w.get_json(ports.1, "/eredar/whoami").await.unwrap();
    assert_eq!(a["path"], "/canary/whoami", "{a}");

    // Routing it by patching the file would be a lie: refused, said plainly.
    w.apply(vec![sandbox_on_branch(&w, "feature/env", true, ports)])
        .await
        .expect("apply");
    let st = w
        .wait_until(&sb, WITHIN, "Degraded", |s| s.phase == Phase::Degraded)
        .await;
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains(
            "falls back to the environment variable EREDAR_URL, which the gateway's env sets"
        ),
        "{msg}"
    );
    assert!(msg.contains("routes_via_env = true"), "{msg}");

    // Allowed to, SDP routes it through the environment.
    let mut docs = catalog_with_gateway(&w, with_env(true));
    docs.retain(|d| d.file == "erangel.toml");
    w.apply(docs).await.expect("apply");
    let st = w
        .wait_until(&sb, WITHIN, "Ready, routed via env", |s| {
            s.phase == Phase::Ready
                && s.routes
                    .iter()
                    .any(|r| r.service == "eredar" && r.routed_to_sandbox)
        })
        .await;
    let sandbox_url = format!("http://{}:{}/", w.address, ports.0);
    assert_eq!(
        route(&st, "eredar").served.as_deref(),
        Some(sandbox_url.as_str())
    );
    let a = w.get_json(ports.1, "/eredar/whoami").await.unwrap();
    assert_eq!(a["sandbox"], sb.as_str(), "{a}");
    w.finish().await;
}

#[tokio::test]
async fn every_corpus_file_and_golden_is_valid_php() {
    let Some(engine) = sdp_e2e::engine_or_skip("every_corpus_file_and_golden_is_valid_php").await
    else {
        return;
    };
    let corpus = sdp_e2e::repo_root().join("agent/tests/fixtures/urlmap/corpus");
    let script = "n=0; for f in /corpus/*.php /corpus/golden/*.php /corpus/variants/*.php; do \
                  n=$((n+1)); php -l \"$f\" >/dev/null 2>&1 || echo \"INVALID $f\"; done; echo \"checked $n\"";
    let labels = [("sdp.e2e".to_string(), "corpus".to_string())].into();
    let (code, out) = engine
        .run_once(
            sdp_e2e::GATEWAY_IMAGE,
            &["/bin/sh".into(), "-c".into(), script.into()],
            &[format!("{}:/corpus:ro", corpus.display())],
            &labels,
        )
        .await
        .expect("php -l runs");
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("INVALID"), "{out}");
    assert!(out.contains("checked 1"), "{out}");
}
