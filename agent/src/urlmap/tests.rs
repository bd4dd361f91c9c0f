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
        "key `base_url` is changed with `.=` (at lines 6, 7, 9); SDP cannot patch a value built over several statements"
    );
    let err = patch(C03, &edits(&[("eredar_url", "x"), ("base_url", "y")])).unwrap_err();
    assert!(
        matches!(err, MapError::Compound { .. }),
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
        "key `a` is changed with `.=` (at line 2); SDP cannot patch a value built over several statements"
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

mod review_cases {
    //! Inputs found by a review against PHP 8.2 (`php -r 'var_dump(include ...)'`).
    use super::*;

    fn value(src: &str, key: &str) -> Result<String, MapError> {
        UrlMap::parse(src.as_bytes()).unwrap().value(key)
    }

    #[test]
    fn positional_items_are_indexed_and_never_end_the_parent_early() {
        let src = "<?php\nreturn ['eredar' => [['w' => 1], 'url' => 'http://a/'], 'url' => 'http://b/'];\n";
        assert_eq!(value(src, "url").unwrap(), "http://b/");
        assert_eq!(value(src, "eredar.url").unwrap(), "http://a/");
        let out = patch(src.as_bytes(), &edits(&[("url", "http://n/")])).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("'url' => 'http://a/'], 'url' => 'http://n/'")
        );
        let src = "<?php\nreturn ['routes' => [['url' => 'http://a/'], ['url' => 'http://c/']], 'hosts' => array(array('name' => 'x')), 'eredar_url' => 'http://e/'];\n";
        assert_eq!(value(src, "routes.0.url").unwrap(), "http://a/");
        assert_eq!(value(src, "routes.1.url").unwrap(), "http://c/");
        assert!(matches!(
            value(src, "routes.url"),
            Err(MapError::Missing { .. })
        ));
        assert_eq!(value(src, "eredar_url").unwrap(), "http://e/");
        let src = "<?php\nreturn [5 => 'five', 'next', 'k' => ['x', 'y']];\n";
        assert_eq!(value(src, "5").unwrap(), "five");
        assert_eq!(value(src, "6").unwrap(), "next");
        assert_eq!(value(src, "k.1").unwrap(), "y");
    }

    #[test]
    fn getenv_with_null_coalescing_is_not_a_fallback() {
        let err = value("<?php\n$config['a'] = getenv('V') ?? 'x';\n", "a").unwrap_err();
        assert!(matches!(err, MapError::Computed { .. }), "{err}");
        let map =
            UrlMap::parse(b"<?php\n$config['a'] = \\getenv('V') ?: 'x';\n\\define('K', 'v');\n")
                .unwrap();
        assert_eq!(map.env_override("a"), Some("V"));
        assert_eq!(map.value("K").unwrap(), "v");
    }

    #[test]
    fn later_computed_writes_to_a_parent_are_seen() {
        let err = value("<?php\n$config['eredar']['url'] = 'http://a/';\n$config['eredar'] = array_merge($config['eredar'], ['url' => 'http://b/']);\n", "eredar.url").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key `eredar.url` is overwritten by a computed assignment to $config['eredar'] at line 3 (it calls array_merge()); SDP cannot tell what it ends up as"
        );
        let err = value("<?php\n$config['eredar_url'] = 'http://a/';\n$config = array_merge($config, ['eredar_url' => 'http://b/']);\n", "eredar_url").unwrap_err();
        assert!(
            err.to_string()
                .contains("computed assignment to all of $config at line 3"),
            "{err}"
        );
        // A literal array assigned to the whole variable is read like a returned one.
        assert_eq!(
            value(
                "<?php\n$config = ['eredar_url' => 'http://e/'];\n",
                "eredar_url"
            )
            .unwrap(),
            "http://e/"
        );
        // Chained assignments are seen (and here make the key ambiguous).
        let err = value(
            "<?php\n$config['a'] = 'x';\n$config['b'] = $config['a'] = 'y';\n",
            "a",
        )
        .unwrap_err();
        assert!(matches!(err, MapError::Duplicate { .. }), "{err}");
    }

    #[test]
    fn code_that_is_not_configuration_is_skipped() {
        let src = "<?php\nfunction h() { return ['eredar_url' => 'http://h/']; }\n$f = function () { $config['eredar_url'] = 'http://c/'; };\n$g = fn() => ['eredar_url' => 'http://g/'];\nclass C { private $config = ['eredar_url' => 'http://p/']; }\n$config['eredar_url'] = 'http://real/';\n";
        assert_eq!(value(src, "eredar_url").unwrap(), "http://real/");
        let src = "<?php\n$config['eredar_url'] = 'http://real/';\n__halt_compiler();\n$config['eredar_url'] = 'http://data/';\n";
        assert_eq!(value(src, "eredar_url").unwrap(), "http://real/");
        let src = "<p>Don<?'t</p>\n<? $config['eredar_url'] = 'short-tag'; ?>\n<?php\n$config['eredar_url'] = 'http://a/';\n";
        assert_eq!(
            value(src, "eredar_url").unwrap(),
            "http://a/",
            "a bare <? is text"
        );
    }

    #[test]
    fn more_forms_and_better_lines() {
        let map = UrlMap::parse(
            b"<?php\nconst A_URL = 'http://a/', B_URL = 'http://b/';\n$config['k']\n    = 'v';\n",
        )
        .unwrap();
        assert_eq!(map.value("B_URL").unwrap(), "http://b/");
        assert_eq!(map.entry("k").unwrap().line, 3, "the statement's line");
        let err = value("<?php\n$config['k'] = 'a';\n$config['k'] .= 'b';\n", "k").unwrap_err();
        assert!(
            err.to_string()
                .contains("changed with `.=` (at lines 2, 3)"),
            "{err}"
        );
    }

    #[test]
    fn restoring_gives_the_same_bytes_for_unusual_literals() {
        for src in [
            "<?php\n$config['k'] = \"http://a/$\";\n",
            "<?php\n$config['k'] = 'http://k/\\d+';\n",
            "<?php\n$config['k'] = 'a-z 0-9~%.:_\\-';\n",
            "<?php\n$config['k'] = \"tab\there\";\n",
        ] {
            let old = value(src, "k").unwrap();
            let out = patch(src.as_bytes(), &edits(&[("k", "http://new/")])).unwrap();
            assert_eq!(
                patch(&out, &edits(&[("k", &old)])).unwrap(),
                src.as_bytes(),
                "{src}"
            );
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 5000;
        let src = format!(
            "<?php\nreturn {}'x'{};\n$config['eredar_url'] = 'http://e/';\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let map = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || UrlMap::parse(src.as_bytes()).map(|m| m.value("eredar_url")))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(map.unwrap().unwrap(), "http://e/");
    }

    #[test]
    fn large_files_are_read_whole() {
        let mut src = String::from("<?php\n");
        for i in 0..20_000 {
            src.push_str(&format!("$config['k{i}_url'] = 'http://k{i}/';\n"));
        }
        let map = UrlMap::parse(src.as_bytes()).unwrap();
        assert_eq!(map.value("k19999_url").unwrap(), "http://k19999/");
        assert_eq!(map.entry("k19999_url").unwrap().line, 20_001);
    }
}
