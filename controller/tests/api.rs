//! The controller's HTTP API, driven in-process with `oneshot` over a real redb
//! file in a temp dir.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use sdp_controller::{Controller, Settings, app};
use sdp_spec::wire::{ApplyRequest, Assignments, SourceDocument};
use serde_json::{Value, json};
use tower::ServiceExt;

const EREDAR: &str = r#"kind = "service"
name = "eredar"
repo = "/srv/git/eredar.git"
agent = "micro"
build = ["go", "build", "-o", ".sdp/bin/eredar", "."]
image = "sdp/runtime:busybox"
command = ["/src/.sdp/bin/eredar"]
container_port = 8080
"#;

const GATEWAY: &str = r#"kind = "gateway"
name = "erangel"
repo = "/srv/git/erangel.git"
agent = "gateway"
image = "sdp/php-apache:bookworm"
mount = "/var/www/html/erangel"
container_port = 80
config_file = "config.php"
"#;

fn sandbox(name: &str, svc_port: u16, gw_port: u16) -> String {
    format!(
        "kind = \"sandbox\"\nname = \"{name}\"\n\n[gateway]\nbranch = \"main\"\nhost_port = {gw_port}\n\n[services.eredar]\nbranch = \"feature/x\"\nhost_port = {svc_port}\n"
    )
}

struct Api {
    router: Router,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = Controller::open(dir.path(), Settings::default())
            .await
            .unwrap();
        Self {
            router: app(state),
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<(&str, String)>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-sdp-user", "tester");
        let body = match body {
            Some((ctype, b)) => {
                req = req.header("content-type", ctype);
                Body::from(b)
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    async fn apply(&self, docs: &[(&str, &str)]) -> (StatusCode, Value) {
        let req = ApplyRequest {
            documents: docs
                .iter()
                .map(|(f, c)| SourceDocument {
                    file: f.to_string(),
                    content: c.to_string(),
                })
                .collect(),
            dry_run: false,
            applied_by: Some("tester".into()),
        };
        self.call(
            "POST",
            "/v1/apply",
            Some(("application/json", serde_json::to_string(&req).unwrap())),
        )
        .await
    }

    /// The catalog (eredar, erangel) and sandbox `alice`, applied and checked.
    async fn seed_alice(&self) {
        let alice = sandbox("alice", 9001, 8101);
        let (st, v) = self
            .apply(&[
                ("e.toml", EREDAR),
                ("g.toml", GATEWAY),
                ("alice.toml", &alice),
            ])
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }

    async fn revision_and_count(&self) -> (u64, usize) {
        let (_, sb) = self.call("GET", "/v1/records/sandbox", None).await;
        let (_, svc) = self.call("GET", "/v1/records/service", None).await;
        let (_, a) = self.call("GET", "/v1/agents/probe/assignments", None).await;
        (
            a["revision"].as_u64().unwrap(),
            sb.as_array().unwrap().len() + svc.as_array().unwrap().len(),
        )
    }
}

#[tokio::test]
async fn apply_creates_then_is_unchanged_then_configured() {
    let api = Api::new().await;
    let sb = sandbox("alice", 9001, 8101);
    let (st, v) = api
        .apply(&[
            ("eredar.toml", EREDAR),
            ("gw.toml", GATEWAY),
            ("alice.toml", &sb),
        ])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["revision"], 1);
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] == "created")
    );

    let (_, v) = api.apply(&[("alice.toml", &sb)]).await;
    assert_eq!(v["revision"], 1, "an identical apply changes nothing");
    assert_eq!(v["results"][0]["action"], "unchanged");

    let (_, v) = api
        .apply(&[("alice.toml", &sb.replace("feature/x", "feature/y"))])
        .await;
    assert_eq!(v["revision"], 2);
    assert_eq!(v["results"][0]["action"], "configured");

    let (st, rec) = api.call("GET", "/v1/records/sandbox/alice", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(rec["revision"], 2);
    assert_eq!(rec["created_revision"], 1);
    assert_eq!(rec["applied_by"], "tester");
    assert_eq!(rec["spec"]["services"]["eredar"]["branch"], "feature/y");

    let (_, hist) = api
        .call("GET", "/v1/records/sandbox/alice/history", None)
        .await;
    assert_eq!(hist.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn toml_and_json_bodies_are_accepted_on_put() {
    let api = Api::new().await;
    let (st, v) = api
        .call(
            "PUT",
            "/v1/records/service/eredar",
            Some(("application/toml", EREDAR.into())),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, rec) = api.call("GET", "/v1/records/service/eredar", None).await;
    assert_eq!(st, StatusCode::OK);
    let json_body = rec["spec"].to_string().replace("8080", "8081");
    let (st, v) = api
        .call(
            "PUT",
            "/v1/records/service/eredar",
            Some(("application/json", json_body)),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["action"], "configured");

    let (st, v) = api
        .call(
            "PUT",
            "/v1/records/service/other",
            Some(("application/toml", EREDAR.into())),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("URL names service/other"),
        "{v}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_whole_and_stores_nothing() {
    let api = Api::new().await;
    let good_sb = sandbox("alice", 9001, 8101);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed",
            "kind = \"service\"\nname = \"eredar\nrepo = 1\n".into(),
            "bad.toml:2",
        ),
        (
            "unknown key",
            EREDAR.replace("container_port", "container_prot"),
            "did you mean `container_port`?",
        ),
        (
            "bad name",
            EREDAR.replace("name = \"eredar\"", "name = \"Eredar\""),
            "`Eredar` is not a valid name",
        ),
        (
            "port range",
            EREDAR.replace("8080", "99999"),
            "allowed 1-65535",
        ),
    ];
    for (what, text, expect) in cases {
        // Each bad document is sent together with good ones: nothing of the batch may be stored.
        let (st, v) = api
            .apply(&[
                ("gw.toml", GATEWAY),
                ("bad.toml", &text),
                ("alice.toml", &good_sb),
            ])
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(expect), "{what}: {msg}");
        assert!(
            msg.starts_with("bad.toml:"),
            "{what}: the file is named: {msg}"
        );
        assert_eq!(v["details"][0]["file"], "bad.toml");
        assert_eq!(
            api.revision_and_count().await,
            (0, 0),
            "{what}: nothing stored"
        );
    }
}

#[tokio::test]
async fn host_port_conflict_across_sandboxes_names_the_holder() {
    let api = Api::new().await;
    api.seed_alice().await;
    let before = api.revision_and_count().await;

    let bob = sandbox("bob", 9001, 8102);
    let (st, v) = api.apply(&[("bob.toml", &bob)]).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("bob.toml:10:13: field `services.eredar.host_port`"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "host port 9001 on agent `micro` is already taken by sandbox `alice` (service `eredar`)"
        ),
        "{msg}"
    );
    assert_eq!(v["field"], "services.eredar.host_port");
    assert_eq!(api.revision_and_count().await, before, "nothing stored");

    let (st, _) = api
        .apply(&[("bob.toml", &sandbox("bob", 9002, 8102))])
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn delete_removes_and_refuses_what_is_in_use() {
    let api = Api::new().await;
    api.seed_alice().await;
    let (st, v) = api.call("DELETE", "/v1/records/service/eredar", None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("sandbox/alice uses it"),
        "{v}"
    );

    let (st, v) = api.call("DELETE", "/v1/records/sandbox/alice", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = api.call("GET", "/v1/records/sandbox/alice", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = api.call("DELETE", "/v1/records/sandbox/alice", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "sandbox `alice` not found");
    let (st, _) = api.call("DELETE", "/v1/records/service/eredar", None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn unknown_kinds_and_bad_names_in_urls_are_explained() {
    let api = Api::new().await;
    let (st, v) = api.call("GET", "/v1/records/sandboxx", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["field"], "kind");
    let (st, v) = api
        .call("GET", "/v1/agents/Bad_Name/assignments", None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["field"], "name");
}

#[tokio::test]
async fn long_poll_answers_on_change_and_waits_otherwise() {
    let api = Api::new().await;
    api.apply(&[("e.toml", EREDAR), ("g.toml", GATEWAY)]).await;
    let (_, first) = api
        .call(
            "GET",
            "/v1/agents/micro/assignments?advertise=10.0.0.5",
            None,
        )
        .await;
    let first: Assignments = serde_json::from_value(first).unwrap();
    assert!(first.sandboxes.is_empty());

    // Nothing relevant changes: the poll is held for `wait`.
    let t = Instant::now();
    let uri = format!("/v1/agents/micro/assignments?etag={}&wait=1", first.etag);
    let (_, same) = api.call("GET", &uri, None).await;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "held open until the timeout"
    );
    assert_eq!(same["etag"], first.etag.as_str());

    // A relevant change answers the held poll early.
    let uri = format!("/v1/agents/micro/assignments?etag={}&wait=30", first.etag);
    let poll = {
        let router = api.router.clone();
        tokio::spawn(async move {
            let req = Request::get(uri).body(Body::empty()).unwrap();
            let t = Instant::now();
            let resp = router.oneshot(req).await.unwrap();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                t.elapsed(),
                serde_json::from_slice::<Assignments>(&bytes).unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alice = sandbox("alice", 9001, 8101);
    api.apply(&[("alice.toml", &alice)]).await;
    let (elapsed, changed) = poll.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(10),
        "answered on change, not at the timeout"
    );
    assert_ne!(changed.etag, first.etag);
    assert_eq!(changed.sandboxes[0].services[0].host_port, 9001);
}

#[tokio::test]
async fn routes_use_the_advertised_address_of_the_service_agent() {
    let api = Api::new().await;
    api.seed_alice().await;
    let (_, gw) = api
        .call(
            "GET",
            "/v1/agents/gateway/assignments?advertise=127.0.0.1",
            None,
        )
        .await;
    assert_eq!(
        gw["sandboxes"][0]["gateway"]["routes"][0]["target"]["to"],
        "pending"
    );
    api.call(
        "GET",
        "/v1/agents/micro/assignments?advertise=172.17.0.1",
        None,
    )
    .await;
    let (_, gw) = api
        .call("GET", "/v1/agents/gateway/assignments", None)
        .await;
    assert_eq!(
        gw["sandboxes"][0]["gateway"]["routes"][0]["target"],
        json!({"to": "sandbox", "url": "http://172.17.0.1:9001/"})
    );
}

#[tokio::test]
async fn everything_acknowledged_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let state = Controller::open(dir.path(), Settings::default())
            .await
            .unwrap();
        let api = Api {
            router: app(state),
            _dir: tempfile::tempdir().unwrap(),
        };
        api.seed_alice().await;
        api.call(
            "GET",
            "/v1/agents/micro/assignments?advertise=10.1.1.1",
            None,
        )
        .await;
    }
    let state = Controller::open(dir.path(), Settings::default())
        .await
        .unwrap();
    let api = Api {
        router: app(state),
        _dir: tempfile::tempdir().unwrap(),
    };
    let (st, rec) = api.call("GET", "/v1/records/sandbox/alice", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(rec["revision"], 1);
    let (_, gw) = api
        .call("GET", "/v1/agents/gateway/assignments", None)
        .await;
    assert_eq!(gw["revision"], 2, "agent registration is a revision too");
    assert_eq!(
        gw["sandboxes"][0]["gateway"]["routes"][0]["target"]["url"],
        "http://10.1.1.1:9001/"
    );
}

#[tokio::test]
async fn apply_requests_are_strict() {
    let api = Api::new().await;
    let body =
        json!({"documents": [{"file": "g.toml", "content": GATEWAY}], "dryrun": true}).to_string();
    let (st, v) = api
        .call("POST", "/v1/apply", Some(("application/json", body)))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `dryrun`"),
        "{v}"
    );
    let body = json!({"documents": [{"content": GATEWAY}]}).to_string();
    let (st, v) = api
        .call("POST", "/v1/apply", Some(("application/json", body)))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("missing field `file`"),
        "{v}"
    );
    assert_eq!(api.revision_and_count().await, (0, 0));
}

#[tokio::test]
async fn gateways_sandboxes_run_without_naming_them_are_protected() {
    let api = Api::new().await;
    api.seed_alice().await;
    let (st, v) = api
        .call("DELETE", "/v1/records/gateway/erangel", None)
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("sandbox/alice uses it"),
        "{v}"
    );
    let (st, v) = api
        .apply(&[("second.toml", &GATEWAY.replace("erangel", "second"))])
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("leaves sandbox/alice without a gateway"),
        "{v}"
    );
    let (_, gw) = api
        .call("GET", "/v1/agents/gateway/assignments", None)
        .await;
    assert_eq!(
        gw["sandboxes"].as_array().unwrap().len(),
        1,
        "alice keeps its gateway"
    );
}

#[tokio::test]
async fn every_error_is_a_json_body() {
    let api = Api::new().await;
    for (method, uri, status) in [
        (
            "GET",
            "/v1/agents/micro/assignments?wait=-1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/agents/micro/assignments?advertise=10.0.0.5:9999",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/v1/agents/micro/assignments?advertise=evil.com%23",
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/v1/records/service/%FF", StatusCode::BAD_REQUEST),
        (
            "GET",
            "/v1/records/service/..%2Fsandbox%2Fx",
            StatusCode::BAD_REQUEST,
        ),
        ("DELETE", "/v1/records/service/Bad", StatusCode::BAD_REQUEST),
        ("GET", "/v1/nothing-here", StatusCode::NOT_FOUND),
        (
            "PATCH",
            "/v1/records/service/eredar",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let (st, v) = api.call(method, uri, None).await;
        assert_eq!(st, status, "{method} {uri}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {uri}: {v}"
        );
    }
    let big = "x".repeat(3 * 1024 * 1024);
    let (st, v) = api
        .call("POST", "/v1/apply", Some(("application/toml", big)))
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error"].is_string(), "{v}");
    assert_eq!(
        api.revision_and_count().await,
        (0, 0),
        "no bad advertise was registered"
    );
}

#[tokio::test]
async fn applied_by_is_printable_and_bounded() {
    let api = Api::new().await;
    let req = ApplyRequest {
        documents: vec![SourceDocument {
            file: "g.toml".into(),
            content: GATEWAY.into(),
        }],
        dry_run: false,
        applied_by: Some(format!("mallory\n2026 INFO forged{}", "x".repeat(10_000))),
    };
    let (st, _) = api
        .call(
            "POST",
            "/v1/apply",
            Some(("application/json", serde_json::to_string(&req).unwrap())),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, rec) = api.call("GET", "/v1/records/gateway/erangel", None).await;
    let by = rec["applied_by"].as_str().unwrap();
    assert!(!by.contains('\n') && by.chars().count() <= 64, "{by}");
}
