//! sdpctl as people run it: the real binary against a real controller over
//! HTTP (in this process, on a loopback port, with its redb in a temp dir).

use std::path::Path;
use std::process::Output;

use tokio::sync::watch;

struct Ctl {
    url: String,
    _stop: watch::Sender<bool>,
    dir: tempfile::TempDir,
}

async fn controller() -> Ctl {
    let dir = tempfile::tempdir().unwrap();
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
    Ctl {
        url,
        _stop: tx,
        dir,
    }
}

async fn sdpctl(ctl: &Ctl, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sdpctl"))
        .args(args)
        .env("SDP_CONTROLLER", &ctl.url)
        .env("USER", "tester")
        .output()
        .await
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/specs"))
}

#[tokio::test]
async fn apply_a_directory_then_get_and_delete() {
    let ctl = controller().await;
    let dir = examples().to_str().unwrap();
    let out = sdpctl(&ctl, &["apply", "-f", dir]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        "service/billing created\ngateway/erangel created\nservice/eredar created\nservice/ledger created\nsandbox/alice-checkout created\n"
    );
    let out = sdpctl(&ctl, &["apply", "-f", dir]).await;
    assert!(
        text(&out).0.lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        text(&out).0
    );

    let out = sdpctl(&ctl, &["get", "services"]).await;
    let (stdout, _) = text(&out);
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stdout.contains("eredar   micro  sdp/runtime:busybox  8080  eredar_url"),
        "{stdout}"
    );

    let out = sdpctl(&ctl, &["get", "sandbox", "alice-checkout", "-o", "toml"]).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains("name = \"alice-checkout\""), "{stdout}");
    sdp_spec::parse_toml(&stdout, "roundtrip").expect("get -o toml prints an appliable record");

    let out = sdpctl(&ctl, &["describe", "sandbox", "alice-checkout"]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("Phase:     Pending"),
        "no agent has connected: {stdout}"
    );
    assert!(
        stdout.contains("waiting for agent `micro` to connect"),
        "{stdout}"
    );

    let changed = ctl.dir.path().join("alice.toml");
    let alice = std::fs::read_to_string(examples().join("sandboxes/alice-checkout.toml")).unwrap();
    std::fs::write(
        &changed,
        alice
            .replace("feature/PAY-123", "main")
            .replace("\"debug\"", "\"secret-value\""),
    )
    .unwrap();
    assert!(
        sdpctl(&ctl, &["apply", "-f", changed.to_str().unwrap()])
            .await
            .status
            .success()
    );
    let out = sdpctl(&ctl, &["history", "sandbox", "alice-checkout"]).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains("tester"), "{stdout}");
    assert!(stdout.contains("created"), "{stdout}");
    assert!(
        stdout.contains(
            "services.eredar.branch: feature/PAY-123 -> main; services.eredar.env.LOG_LEVEL changed"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("secret-value"),
        "env values are not shown: {stdout}"
    );

    let out = sdpctl(&ctl, &["delete", "service", "eredar"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("sandbox/alice-checkout uses it"),
        "{}",
        text(&out).1
    );
    let out = sdpctl(&ctl, &["delete", "sandbox", "alice-checkout"]).await;
    assert!(out.status.success());
    assert!(
        text(&out)
            .0
            .starts_with("sandbox/alice-checkout deleted; its agents are removing it"),
        "{}",
        text(&out).0
    );
    // No agent ever ran it, so its removal waits for them: tracked as Deleting.
    let out = sdpctl(&ctl, &["get", "sandboxes"]).await;
    assert!(
        text(&out).0.contains("alice-checkout  Deleting"),
        "{}",
        text(&out).0
    );
    let out = sdpctl(&ctl, &["get", "sandbox", "alice-checkout"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out).1, "error: sandbox `alice-checkout` not found\n");
    let out = sdpctl(&ctl, &["describe", "sandbox", "alice-checkout"]).await;
    assert!(
        text(&out).0.contains("Phase:     Deleting"),
        "{}",
        text(&out).0
    );
    assert!(
        text(&out)
            .0
            .contains("waiting for agent `micro` to pick up the deletion"),
        "{}",
        text(&out).0
    );
}

#[tokio::test]
async fn bad_files_are_refused_with_file_line_and_field_and_store_nothing() {
    let ctl = controller().await;
    let bad = ctl.dir.path().join("specs");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(
        examples().join("catalog/eredar.toml"),
        bad.join("eredar.toml"),
    )
    .unwrap();
    let cases = [
        (
            "kind = \"service\"\nname = \"x\nrepo = 1\n",
            "bad.toml:2:",
            "invalid TOML",
        ),
        (
            "kind = \"sandbox\"\nname = \"s\"\n[services.eredar]\nbranch = \"main\"\nhost_prot = 9001\n",
            "bad.toml:5:1: field `services.eredar.host_prot`",
            "did you mean `host_port`?",
        ),
        (
            "kind = \"sandbox\"\nname = \"Sandbox_1\"\n[gateway]\nbranch = \"main\"\nhost_port = 9001\n",
            "bad.toml:2:8: field `name`",
            "not a valid name",
        ),
        (
            "kind = \"sandbox\"\nname = \"s\"\n[gateway]\nbranch = \"main\"\nhost_port = 0\n",
            "bad.toml:5:13: field `gateway.host_port`",
            "allowed 1-65535",
        ),
    ];
    for (content, location, what) in cases {
        std::fs::write(bad.join("bad.toml"), content).unwrap();
        let out = sdpctl(&ctl, &["apply", "-f", bad.to_str().unwrap()]).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stdout.is_empty(), "nothing reported as applied: {stdout}");
        assert!(stderr.contains(location), "{location} in {stderr}");
        assert!(stderr.contains(what), "{what} in {stderr}");
        let out = sdpctl(&ctl, &["get", "services", "-o", "json"]).await;
        assert_eq!(
            text(&out).0.trim(),
            "[]",
            "the good file of the batch was not stored either"
        );
    }
}

#[tokio::test]
async fn port_conflict_across_sandboxes_is_refused_by_the_controller() {
    let ctl = controller().await;
    let out = sdpctl(&ctl, &["apply", "-f", examples().to_str().unwrap()]).await;
    assert!(out.status.success());
    let other = ctl.dir.path().join("bob.toml");
    std::fs::write(&other, "kind = \"sandbox\"\nname = \"bob\"\n\n[services.eredar]\nbranch = \"main\"\nhost_port = 9001\n").unwrap();
    let out = sdpctl(&ctl, &["apply", "-f", other.to_str().unwrap()]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("bob.toml:6:13: field `services.eredar.host_port`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("already taken by sandbox `alice-checkout` (service `eredar`)"),
        "{stderr}"
    );
    let out = sdpctl(&ctl, &["get", "sandboxes", "-o", "json"]).await;
    assert!(!text(&out).0.contains("\"bob\""), "nothing stored");
}

#[tokio::test]
async fn usage_errors_and_an_absent_controller_are_explained() {
    let ctl = controller().await;
    let out = sdpctl(&ctl, &["get", "sandboxez"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out)
            .1
            .contains("unknown kind `sandboxez`; allowed: service, gateway, sandbox"),
        "{}",
        text(&out).1
    );
    let out = sdpctl(&ctl, &["apply"]).await;
    assert_eq!(out.status.code(), Some(64), "usage errors exit 64");
    for args in [
        &["delete", "service", "../sandbox/x"][..],
        &["get", "service", "eredar?x=1"],
        &["describe", "service", "eredar"],
        &["wait"],
        &["get", "services", "--controller", "notaurl"],
    ] {
        let out = sdpctl(&ctl, args).await;
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out).1);
    }
    let out = sdpctl(
        &ctl,
        &[
            "get",
            "services",
            "--controller",
            "http://user:S3CRET@127.0.0.1:9",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out).1.contains("S3CRET"), "{}", text(&out).1);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sdpctl"))
        .args(["get", "sandboxes", "--controller", "http://127.0.0.1:9"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .contains("cannot reach the controller at http://127.0.0.1:9"),
        "{}",
        text(&out).1
    );
}

#[tokio::test]
async fn json_files_apply_like_toml_ones() {
    let ctl = controller().await;
    let file = ctl.dir.path().join("gw.json");
    let gw = std::fs::read_to_string(examples().join("catalog/erangel.toml")).unwrap();
    let rec = sdp_spec::parse_toml(&gw, "x").unwrap().record;
    std::fs::write(&file, serde_json::to_string(&rec).unwrap()).unwrap();
    let out = sdpctl(&ctl, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0, "gateway/erangel created\n");
}

#[tokio::test]
async fn diff_shows_per_agent_changes_with_detailed_exit_codes() {
    let ctl = controller().await;
    let dir = examples().to_str().unwrap();
    let out = sdpctl(&ctl, &["diff", "-f", dir]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "something would change: {stderr}"
    );
    assert!(stdout.contains("agent micro:\n  + alice-checkout/eredar: create (branch feature/PAY-123, image sdp/runtime:busybox, host port 9001)"), "{stdout}");
    assert!(
        stdout.contains("agent gateway:\n  + alice-checkout/erangel: create"),
        "{stdout}"
    );
    let out = sdpctl(&ctl, &["get", "sandboxes", "-o", "json"]).await;
    assert_eq!(text(&out).0.trim(), "[]", "a diff stores nothing");

    let out = sdpctl(&ctl, &["apply", "--dry-run", "-f", dir]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .0
            .contains("sandbox/alice-checkout created (dry run)"),
        "{}",
        text(&out).0
    );

    assert!(sdpctl(&ctl, &["apply", "-f", dir]).await.status.success());
    let out = sdpctl(&ctl, &["diff", "-f", dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).0);
    assert_eq!(text(&out).0, "No changes: the agents would do nothing.\n");

    let changed = ctl.dir.path().join("alice.toml");
    let text_in =
        std::fs::read_to_string(examples().join("sandboxes/alice-checkout.toml")).unwrap();
    std::fs::write(
        &changed,
        text_in
            .replace("feature/PAY-123", "main")
            .replace("LOG_LEVEL = \"debug\"", "LOG_LEVEL = \"s3cret-value\""),
    )
    .unwrap();
    let out = sdpctl(&ctl, &["diff", "-f", changed.to_str().unwrap()]).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout.contains("~ alice-checkout/eredar: replace (branch feature/PAY-123 -> main; env LOG_LEVEL changed)"), "{stdout}");
    assert!(!stdout.contains("s3cret-value"), "env values are not shown");

    std::fs::write(
        &changed,
        "kind = \"sandbox\"\nname = \"x\"\n[services.nope]\nbranch = \"main\"\nhost_port = 1\n",
    )
    .unwrap();
    let out = sdpctl(&ctl, &["diff", "-f", changed.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "errors exit 1");
    assert!(
        text(&out)
            .1
            .contains("service `nope` is not in the catalog"),
        "{}",
        text(&out).1
    );
}
