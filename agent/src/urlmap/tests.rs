use std::collections::BTreeMap;

use super::*;

const C02: &[u8] = include_bytes!("../../tests/fixtures/urlmap/C02-config.php");
const C03: &[u8] = include_bytes!("../../tests/fixtures/urlmap/C03-config.php");
const C04: &[u8] = include_bytes!("../../tests/fixtures/urlmap/C04-config.php");

fn edits(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn changed_lines(a: &[u8], b: &[u8]) -> Vec<usize> {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    a.lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn c03_patches_only_the_live_whole_key() {
    let map = UrlMap::parse(C03).unwrap();
    assert_eq!(
        map.value("eredar_url").unwrap(),
        "http://eredar.ocp.example.internal/"
    );
    let out = patch(C03, &edits(&[("eredar_url", "http://172.17.0.1:9001/")])).unwrap();
    assert_eq!(
        changed_lines(C03, &out),
        vec![15],
        "not the commented-out lines, not eredar_url_timeout"
    );
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("$config['eredar_url'] = 'http://172.17.0.1:9001/';"));
    assert!(text.contains("//$config['eredar_url'] = 'http://localhost:8080/';"));
    let restored = patch(
        &out,
        &edits(&[("eredar_url", "http://eredar.ocp.example.internal/")]),
    )
    .unwrap();
    assert_eq!(restored, C03);
}

#[test]
fn c03_refuses_keys_assigned_twice_or_compound() {
    let map = UrlMap::parse(C03).unwrap();
    let err = map.entry("base_url").unwrap_err();
    assert_eq!(
        err.to_string(),
        "key `base_url` is assigned more than once (lines 6, 7, 9); SDP patches only a key assigned exactly once"
    );
    let err = patch(C03, &edits(&[("eredar_url", "x"), ("base_url", "y")])).unwrap_err();
    assert!(
        matches!(err, MapError::Duplicate { .. }),
        "one bad key refuses the whole patch"
    );
    let src = b"<?php\n$config['a'] = 'x';\n";
    let only_compound = b"<?php\n$config['a'] .= 'x';\n";
    assert!(UrlMap::parse(src).unwrap().entry("a").is_ok());
    let err = UrlMap::parse(only_compound)
        .unwrap()
        .entry("a")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "key `a` at line 2 is changed with `.=`; SDP cannot patch a value built over several statements"
    );
    assert_eq!(
        UrlMap::parse(C03)
            .unwrap()
            .entry("nope")
            .unwrap_err()
            .to_string(),
        "key `nope` is not in the URL map"
    );
}

#[test]
fn c04_escapes_for_the_quoting_in_use_and_refuses_computed() {
    let map = UrlMap::parse(C04).unwrap();
    let err = map.entry("ledger_url").unwrap_err();
    assert_eq!(
        err.to_string(),
        "key `ledger_url` at line 13 is computed, not a literal (it interpolates a variable); make it a plain string to let SDP route it"
    );
    assert_eq!(
        map.value("reports_url").unwrap(),
        "http://reports.ocp.example.internal/?tenant=$default"
    );
    assert_eq!(
        map.value("cache_servers").unwrap(),
        "cache0:11211\ncache1:11211"
    );

    let out = patch(C04, &edits(&[("eredar_url", "http://h:1/?a=$b&c=\"d\"\\")])).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.contains(r#"$config['eredar_url'] = "http://h:1/?a=\$b&c=\"d\"\\";"#),
        "{text}"
    );
    assert_eq!(
        UrlMap::parse(&out).unwrap().value("eredar_url").unwrap(),
        "http://h:1/?a=$b&c=\"d\"\\"
    );

    let out = patch(
        C04,
        &edits(&[("reports_url", "http://x/?t=$default&q='1'")]),
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r"$config['reports_url'] = 'http://x/?t=$default&q=\'1\'';"),
        "$ stays as it is in single quotes: {text}"
    );
}

#[test]
fn c02_env_fallbacks_are_recognized() {
    let map = UrlMap::parse(C02).unwrap();
    assert_eq!(map.env_override("eredar_url"), Some("EREDAR_URL"));
    assert_eq!(
        map.value("eredar_url").unwrap(),
        "http://eredar.ocp.example.internal/"
    );
    let out = patch(C02, &edits(&[("ledger_url", "http://s:9/")])).unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("env('LEDGER_URL', 'http://s:9/')")
    );
}

#[test]
fn returned_and_nested_arrays_define_and_const() {
    let src = br#"<?php
define('EREDAR_URL', 'http://e/');
const LEDGER_URL = "http://l/";
return [
    'services' => [
        'eredar' => ['url' => 'http://e2/', 'timeout' => 5],
        'billing' => array('url' => getenv('BILLING_URL') ?: 'http://b/'),
    ],
    'flat_url' => 'http://f/',
    'list' => ['a', 'b'],
];
"#;
    let map = UrlMap::parse(src).unwrap();
    assert_eq!(map.value("EREDAR_URL").unwrap(), "http://e/");
    assert_eq!(map.value("LEDGER_URL").unwrap(), "http://l/");
    assert_eq!(map.value("services.eredar.url").unwrap(), "http://e2/");
    assert_eq!(
        map.env_override("services.billing.url"),
        Some("BILLING_URL")
    );
    assert_eq!(map.value("flat_url").unwrap(), "http://f/");
    assert!(matches!(
        map.entry("services.eredar.timeout"),
        Err(MapError::Computed { .. })
    ));
    let out = patch(src, &edits(&[("services.eredar.url", "http://n/")])).unwrap();
    assert_eq!(changed_lines(src, &out), vec![6]);
}

#[test]
fn bytes_outside_the_literal_never_change() {
    let src = b"\xef\xbb\xbf<?php\r\n\t$config['eredar_url']\t=  'http://old/' ;  \r\n?>\r\ntrailing <b>html</b> $config['eredar_url'] = 'no';\n";
    let out = patch(src, &edits(&[("eredar_url", "http://new:9001/")])).unwrap();
    let expected = b"\xef\xbb\xbf<?php\r\n\t$config['eredar_url']\t=  'http://new:9001/' ;  \r\n?>\r\ntrailing <b>html</b> $config['eredar_url'] = 'no';\n";
    assert_eq!(out, expected.to_vec());
    assert_eq!(
        patch(&out, &edits(&[("eredar_url", "http://old/")])).unwrap(),
        src.to_vec()
    );
}

#[test]
fn values_equal_to_the_current_ones_write_the_same_bytes() {
    let out = patch(
        C03,
        &edits(&[("eredar_url", "http://eredar.ocp.example.internal/")]),
    )
    .unwrap();
    assert_eq!(out, C03);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = String> {
        // URLs plus the characters that need escaping in one quoting or the other.
        proptest::string::string_regex("[a-zA-Z0-9:/._?=&%$'\"\\\\ \n-]{0,40}").unwrap()
    }

    proptest! {
        #[test]
        fn patch_then_restore_is_identity(
            v in value(),
            double in any::<bool>(),
            crlf in any::<bool>(),
            prefix in "[ \t]{0,3}",
            original in value(),
        ) {
            let q = if double { Quote::Double } else { Quote::Single };
            let nl = if crlf { "\r\n" } else { "\n" };
            let src = format!("<?php{nl}// $config['svc_url'] = 'x';{nl}{prefix}$config['svc_url'] = {};{nl}$config['other'] = 'o';{nl}", encode(&original, q));
            let src = src.as_bytes();
            let map = UrlMap::parse(src).unwrap();
            prop_assert_eq!(map.value("svc_url").unwrap(), original.clone());
            let out = patch(src, &edits(&[("svc_url", &v)])).unwrap();
            prop_assert_eq!(UrlMap::parse(&out).unwrap().value("svc_url").unwrap(), v);
            let lit = map.literal("svc_url").unwrap();
            // Outside the literal, bytes are identical.
            prop_assert_eq!(&out[..lit.span.start], &src[..lit.span.start]);
            let tail = src.len() - lit.span.end;
            prop_assert_eq!(&out[out.len() - tail..], &src[lit.span.end..]);
            prop_assert_eq!(patch(&out, &edits(&[("svc_url", &original)])).unwrap(), src.to_vec());
        }
    }
}

#[test]
fn computed_values_say_what_they_are() {
    let src = b"<?php\n$config['a'] = strtolower('X');\n$config['b'] = $base;\n$config['c'] = 'x' . 'y';\n$config['d'] = \"{$h}/\";\n$config['e'] = 42;\n$config['f'] = <<<EOT\nx\nEOT;\n";
    let map = UrlMap::parse(src).unwrap();
    let reason = |k: &str| match map.entry(k) {
        Err(MapError::Computed { reason, .. }) => reason,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(reason("a"), "it calls strtolower()");
    assert_eq!(reason("b"), "it is a variable");
    assert_eq!(reason("c"), "it is a concatenation");
    assert_eq!(reason("d"), "it interpolates a variable");
    assert_eq!(reason("e"), "`42` is not a string");
    assert_eq!(reason("f"), "it is a heredoc, nowdoc or shell string");
}
