//! Reading records: valid documents, and every kind of bad input refused with
//! file, line, column, field and what is allowed.

use sdp_spec::{Kind, Record, SpecError, parse_json, parse_toml};

const SERVICE: &str = r#"kind = "service"
name = "eredar"
repo = "https://git.example.internal/scm/be/eredar.git"
agent = "micro"
build = ["go", "build", "-o", ".sdp/bin/eredar", "./cmd/eredar"]
image = "alpine:3.20"
command = ["/src/.sdp/bin/eredar"]
container_port = 8080
route_key = "eredar_url"
health = "/healthz"
"#;

const GATEWAY: &str = r#"kind = "gateway"
name = "erangel"
repo = "https://git.example.internal/scm/be/erangel-ocean.git"
agent = "gateway"
image = "php:8.3-apache"
mount = "/var/www/html/erangel-ocean"
env = { APACHE_DOCUMENT_ROOT = "/var/www/html/erangel-ocean" }
container_port = 80
prepare = ["composer", "install", "--no-interaction"]
config_file = "application/config/config.php"
reload = ["apache2ctl", "-k", "graceful"]
"#;

const SANDBOX: &str = r#"kind = "sandbox"
name = "alice-checkout"

[gateway]
branch = "feature/checkout-v2"
host_port = 8101

[services.eredar]
branch = "feature/PAY-123"
host_port = 9001
route = true
env = { LOG_LEVEL = "debug" }
"#;

fn one_error(text: &str) -> SpecError {
    let errs = parse_toml(text, "spec.toml").expect_err("must be refused");
    assert_eq!(errs.0.len(), 1, "{errs}");
    errs.0.into_iter().next().unwrap()
}

#[test]
fn product_brief_examples_parse() {
    let s = parse_toml(SERVICE, "svc.toml").unwrap().record;
    let Record::Service(s) = s else { panic!() };
    assert_eq!(s.route_key(), "eredar_url");
    assert_eq!(s.mount(), "/src");
    assert_eq!(s.container_port.get(), 8080);

    let g = parse_toml(GATEWAY, "gw.toml").unwrap().record;
    assert_eq!(g.kind(), Kind::Gateway);

    let sb = parse_toml(SANDBOX, "sb.toml").unwrap().record;
    let Record::Sandbox(sb) = sb else { panic!() };
    let eredar = &sb.services["eredar"];
    assert!(eredar.route);
    assert_eq!(eredar.env.get("LOG_LEVEL").unwrap(), "debug");
}

#[test]
fn route_defaults_to_true_and_route_key_to_name_url() {
    let text = SERVICE.replace("route_key = \"eredar_url\"\n", "");
    let Record::Service(s) = parse_toml(&text, "x").unwrap().record else {
        panic!()
    };
    assert_eq!(s.route_key(), "eredar_url");
    let text = SANDBOX.replace("route = true\n", "");
    let Record::Sandbox(sb) = parse_toml(&text, "x").unwrap().record else {
        panic!()
    };
    assert!(sb.services.values().all(|s| s.route));
}

#[test]
fn toml_round_trips() {
    for text in [SERVICE, GATEWAY, SANDBOX] {
        let rec = parse_toml(text, "x").unwrap().record;
        let again = parse_toml(&rec.to_toml(), "y").unwrap().record;
        assert_eq!(rec, again);
    }
}

#[test]
fn json_bodies_parse_too() {
    let rec = parse_toml(SANDBOX, "x").unwrap().record;
    let json = serde_json::to_string(&rec).unwrap();
    assert_eq!(parse_json(&json, "<body>").unwrap().record, rec);
    let err = parse_json(r#"{"kind":"sandbox","name":"Bad"}"#, "<body>").unwrap_err();
    assert!(err.to_string().contains("not a valid name"), "{err}");
    assert!(err.0[0].line.is_some());
}

#[test]
fn malformed_toml_names_line_and_column() {
    let e = one_error("kind = \"service\"\nname = \"x\nrepo = 1\n");
    assert_eq!(e.file, "spec.toml");
    assert_eq!(e.line, Some(2));
    assert!(e.message.starts_with("invalid TOML (1.1)"), "{e}");
}

#[test]
fn unknown_key_is_located_and_suggests_the_close_one() {
    let text = SANDBOX.replace("host_port = 9001", "host_prot = 9001");
    let e = one_error(&text);
    assert_eq!(e.line, Some(10), "{e}");
    assert_eq!(e.column, Some(1));
    assert_eq!(e.field.as_deref(), Some("services.eredar.host_prot"));
    assert!(e.message.contains("unknown key `host_prot`"), "{e}");
    assert!(e.message.contains("did you mean `host_port`?"), "{e}");
    assert!(
        e.message
            .contains("allowed keys: branch, host_port, route, env"),
        "{e}"
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with("spec.toml:10:1: field `services.eredar.host_prot`: unknown key"),
        "{shown}"
    );
}

#[test]
fn unknown_top_level_key_is_refused() {
    let e = one_error(&format!("{SERVICE}contaner_port = 1\n"));
    assert_eq!(e.line, Some(11));
    assert!(e.message.contains("did you mean `container_port`?"), "{e}");
}

#[test]
fn bad_names_are_refused_at_their_value() {
    let e = one_error(&SANDBOX.replace("alice-checkout", "Alice_Checkout"));
    assert_eq!((e.line, e.column), (Some(2), Some(8)));
    assert_eq!(e.field.as_deref(), Some("name"));
    assert!(
        e.message.contains("`Alice_Checkout` is not a valid name"),
        "{e}"
    );
    assert!(
        e.message.contains("lowercase letters, digits and '-'"),
        "{e}"
    );

    let e = one_error(&SANDBOX.replace("[services.eredar]", "[services.Eredar]"));
    assert!(e.message.contains("`Eredar` is not a valid name"), "{e}");
    assert_eq!(e.line, Some(8), "{e}");
}

#[test]
fn ports_out_of_range_are_refused() {
    let e = one_error(&SANDBOX.replace("9001", "70000"));
    assert_eq!(e.line, Some(10));
    assert_eq!(e.field.as_deref(), Some("services.eredar.host_port"));
    assert!(
        e.message
            .contains("port 70000 is out of range: allowed 1-65535"),
        "{e}"
    );
    let e = one_error(&SERVICE.replace("8080", "0"));
    assert!(e.message.contains("allowed 1-65535"), "{e}");
}

#[test]
fn missing_required_keys_are_named() {
    let e = one_error(&SERVICE.replace("image = \"alpine:3.20\"\n", ""));
    assert_eq!(e.field.as_deref(), Some("image"));
    assert!(e.message.contains("missing required key `image`"), "{e}");

    let e = one_error(&SANDBOX.replace("branch = \"feature/PAY-123\"\n", ""));
    assert_eq!(e.field.as_deref(), Some("services.eredar.branch"), "{e}");
    assert!(e.message.contains("in [services.eredar]"), "{e}");

    let e = one_error("name = \"x\"\n");
    assert!(e.message.contains("missing required key `kind`"), "{e}");
}

#[test]
fn unknown_kind_suggests() {
    let e = one_error("kind = \"sandbx\"\nname = \"x\"\n");
    assert_eq!((e.line, e.column), (Some(1), Some(8)));
    assert!(e.message.contains("did you mean `sandbox`?"), "{e}");
}

#[test]
fn wrong_types_are_explained() {
    let e = one_error(&SANDBOX.replace("route = true", "route = \"yes\""));
    assert_eq!(e.line, Some(11));
    assert_eq!(e.message, "expected true or false, found string \"yes\"");
}

#[test]
fn duplicate_host_ports_in_one_sandbox_name_both_lines() {
    let text = format!("{SANDBOX}\n[services.ledger]\nbranch = \"main\"\nhost_port = 9001\n");
    let e = one_error(&text);
    assert_eq!(e.field.as_deref(), Some("services.ledger.host_port"));
    assert_eq!(e.line, Some(16));
    assert!(
        e.message
            .contains("host port 9001 is already used by service `eredar`"),
        "{e}"
    );
    assert!(e.message.contains("(see line 10)"), "{e}");

    let e = one_error(&SANDBOX.replace("9001", "8101"));
    assert!(e.message.contains("already used by the gateway"), "{e}");
}

#[test]
fn empty_sandbox_is_refused() {
    let e = one_error("kind = \"sandbox\"\nname = \"x\"\n");
    assert!(e.message.contains("needs a [gateway] table"), "{e}");
}

#[test]
fn credentials_in_repo_urls_are_refused_without_echoing_them() {
    let e = one_error(&SERVICE.replace("https://git", "https://bob:hunter2@git"));
    assert_eq!(e.field.as_deref(), Some("repo"));
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn c12_multiline_inline_table_is_toml_1_1() {
    let text = include_str!("fixtures/C12-spec.toml");
    let Record::Sandbox(sb) = parse_toml(text, "C12-spec.toml").unwrap().record else {
        panic!()
    };
    let eredar = &sb.services["eredar"];
    assert_eq!(eredar.env.get("PAY_PROVIDER").unwrap(), "stub");
}

#[test]
fn c12_duplicate_table_names_both_lines_and_a_fix() {
    let text = include_str!("fixtures/C12-spec-dup.toml");
    let e = one_error(text);
    assert_eq!(e.line, Some(11));
    assert!(
        e.message
            .contains("table [services] is defined twice: first at line 8, again at line 11"),
        "{e}"
    );
    assert!(e.message.contains("merge them"), "{e}");
}

#[test]
fn duplicate_key_names_the_first_line() {
    let e = one_error(
        "kind = \"sandbox\"\nname = \"a\"\n\n[gateway]\nbranch = \"x\"\nbranch = \"y\"\nhost_port = 1\n",
    );
    assert_eq!(e.line, Some(6));
    assert!(
        e.message.contains(
            "key `branch` is defined twice in [gateway]: first at line 5, again at line 6"
        ),
        "{e}"
    );
}

#[test]
fn bad_env_names_are_located_at_their_table() {
    let e = one_error(&SANDBOX.replace("LOG_LEVEL = \"debug\"", "1X = \"debug\""));
    assert_eq!(e.field.as_deref(), Some("services.eredar.env"), "{e}");
    assert!(
        e.message
            .contains("`1X` is not a valid environment variable name"),
        "{e}"
    );
}

#[test]
fn ports_of_the_wrong_type_say_what_a_port_is() {
    for (value, expect) in [
        ("8200.0", "a port is a whole number 1-65535, not 8200"),
        (
            "\"8200\"",
            "a port is a number 1-65535 without quotes, not the string \"8200\"",
        ),
        ("99999999999999999999", "out of range: allowed 1-65535"),
        ("true", "a port is a number 1-65535, not true"),
    ] {
        let e = one_error(&SANDBOX.replace("9001", value));
        assert_eq!(
            e.field.as_deref(),
            Some("services.eredar.host_port"),
            "{value}: {e}"
        );
        assert!(e.message.contains(expect), "{value}: {e}");
    }
}

#[test]
fn control_characters_are_escaped_in_messages() {
    let e = one_error(&SANDBOX.replace("feature/PAY-123", "feat\\u0000ure"));
    assert!(!e.to_string().contains('\0'), "{e:?}");
    assert!(e.message.contains("\\u{0}"), "{e}");
}

#[test]
fn json_errors_name_the_field_and_never_echo_credentials() {
    let err = parse_json(r#"{"kind":"sandbox","name":"a","services":{"eredar":{"branch":"m","host_port":"https://bob:S3CRET@h/x"}}}"#, "<body>").unwrap_err();
    let e = &err.0[0];
    assert_eq!(e.field.as_deref(), Some("services.eredar.host_port"), "{e}");
    assert!(!e.to_string().contains("S3CRET"), "{e}");
    let err = parse_json(r#"{"kind":"sandbox","name":null}"#, "<body>").unwrap_err();
    assert_eq!(err.0[0].field.as_deref(), Some("name"), "{}", err.0[0]);
    assert!(
        err.0[0].message.contains("expected a string, found null"),
        "{}",
        err.0[0]
    );
    let err = parse_json(r#"{"kind":"sandbox","name":"a"} trailing"#, "<body>").unwrap_err();
    assert!(err.0[0].message.contains("trailing"), "{}", err.0[0]);
}
