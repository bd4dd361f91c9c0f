//! Properties of the URL map reader and patcher over generated PHP files:
//! every entry form, mixed with look-alikes in comments, strings and
//! heredocs, in any line-ending, BOM and `?>` variant.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sdp_agent::urlmap::{Quote, UrlMap, encode, patch};

#[derive(Clone, Debug)]
enum Form {
    Assign,
    Define,
    Const,
    Getenv,
    ArrayItem,
    ArrayEnv,
    Nested,
}

#[derive(Clone, Debug)]
struct Entry {
    form: Form,
    value: String,
    double: bool,
}

fn value() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9:/._?=&%$'\"\\\\ -]{0,30}").unwrap()
}

fn entry() -> impl Strategy<Value = Entry> {
    let form = prop_oneof![
        Just(Form::Assign),
        Just(Form::Define),
        Just(Form::Const),
        Just(Form::Getenv),
        Just(Form::ArrayItem),
        Just(Form::ArrayEnv),
        Just(Form::Nested),
    ];
    (form, value(), any::<bool>()).prop_map(|(form, value, double)| Entry {
        form,
        value,
        double,
    })
}

/// Text that looks like an entry but is not live code.
fn noise(i: usize) -> &'static [&'static str] {
    const N: &[&str] = &[
        "// $config['svc0_url'] = 'http://comment/';",
        "# $config['svc1_url'] = 'http://hash/';",
        "/* define('SVC2_URL', 'http://block/'); */",
        "$s = 'define(\\'SVC0_URL\\', \\'x\\')';",
        "$h = <<<'EOT'\n$config['svc0_url'] = 'http://nowdoc/';\nEOT;",
        "$d = \"\\$config['svc1_url'] = 'http://dq/'\";",
        "$config['svc0_url_timeout'] = 5;",
    ];
    &N[i % N.len()..=i % N.len()]
}

struct Generated {
    bytes: Vec<u8>,
    /// key -> value as generated
    values: BTreeMap<String, String>,
}

fn render(
    entries: &[Entry],
    noise_at: &[usize],
    crlf: bool,
    bom: bool,
    closetag: bool,
) -> Generated {
    let q = |e: &Entry| {
        if e.double {
            Quote::Double
        } else {
            Quote::Single
        }
    };
    let mut lines: Vec<String> = vec!["<?php".into()];
    let mut array_items = Vec::new();
    let mut values = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let lit = encode(&e.value, q(e));
        let upper = format!("SVC{i}_URL");
        let lower = format!("svc{i}_url");
        if let Some(n) = noise_at.get(i) {
            lines.extend(noise(*n).iter().map(|s| s.to_string()));
        }
        match e.form {
            Form::Assign => {
                lines.push(format!("$config['{lower}'] = {lit};"));
                values.insert(lower, e.value.clone());
            }
            Form::Define => {
                lines.push(format!("define('{upper}', {lit});"));
                values.insert(upper, e.value.clone());
            }
            Form::Const => {
                lines.push(format!("const {upper} = {lit};"));
                values.insert(upper, e.value.clone());
            }
            Form::Getenv => {
                lines.push(format!("$config['{lower}'] = getenv('{upper}') ?: {lit};"));
                values.insert(lower, e.value.clone());
            }
            Form::ArrayItem => {
                array_items.push(format!("    '{lower}' => {lit},"));
                values.insert(lower, e.value.clone());
            }
            Form::ArrayEnv => {
                array_items.push(format!("    '{lower}' => env('{upper}', {lit}),"));
                values.insert(lower, e.value.clone());
            }
            Form::Nested => {
                array_items.push(format!("    'svc{i}' => ['url' => {lit}, 'timeout' => 3],"));
                values.insert(format!("svc{i}.url"), e.value.clone());
            }
        }
    }
    if !array_items.is_empty() {
        lines.push("return [".into());
        lines.extend(array_items);
        lines.push("];".into());
    }
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut text = lines.join(nl);
    text.push_str(nl);
    if closetag {
        text.push_str(&format!(
            "?>{nl}<p>$config['svc0_url'] = 'not php';</p>{nl}"
        ));
    }
    let mut bytes = if bom { vec![0xef, 0xbb, 0xbf] } else { vec![] };
    bytes.extend(text.into_bytes());
    Generated { bytes, values }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn reader_finds_every_entry_and_no_lookalike(
        entries in proptest::collection::vec(entry(), 1..8),
        noise_at in proptest::collection::vec(0usize..7, 0..8),
        crlf in any::<bool>(), bom in any::<bool>(), closetag in any::<bool>(),
    ) {
        let g = render(&entries, &noise_at, crlf, bom, closetag);
        let map = UrlMap::parse(&g.bytes).unwrap();
        for (key, value) in &g.values {
            prop_assert_eq!(&map.value(key).unwrap(), value, "{}", key);
        }
    }

    #[test]
    fn patch_touches_only_literals_and_restore_is_identity(
        entries in proptest::collection::vec(entry(), 1..8),
        noise_at in proptest::collection::vec(0usize..7, 0..8),
        crlf in any::<bool>(), bom in any::<bool>(), closetag in any::<bool>(),
        new_values in proptest::collection::vec(value(), 8),
        pick in proptest::collection::vec(any::<bool>(), 8),
    ) {
        let g = render(&entries, &noise_at, crlf, bom, closetag);
        let keys: Vec<&String> = g.values.keys().collect();
        let edits: BTreeMap<String, String> = keys.iter().enumerate()
            .filter(|(i, _)| pick[*i % pick.len()])
            .map(|(i, k)| ((*k).clone(), new_values[i % new_values.len()].clone()))
            .collect();
        let out = patch(&g.bytes, &edits).unwrap();
        let after = UrlMap::parse(&out).unwrap();
        for (key, value) in &g.values {
            let want = edits.get(key).unwrap_or(value);
            prop_assert_eq!(&after.value(key).unwrap(), want);
        }
        // Outside the literals, the bytes are the same: removing each
        // literal's bytes from both files leaves equal sequences.
        let before_map = UrlMap::parse(&g.bytes).unwrap();
        let strip = |bytes: &[u8], map: &UrlMap| {
            let mut spans: Vec<_> = g.values.keys().map(|k| map.literal(k).unwrap().span.clone()).collect();
            spans.sort_by_key(|s| s.start);
            let mut rest = Vec::new();
            let mut at = 0;
            for s in spans {
                rest.extend_from_slice(&bytes[at..s.start]);
                at = s.end;
            }
            rest.extend_from_slice(&bytes[at..]);
            rest
        };
        prop_assert_eq!(strip(&out, &after), strip(&g.bytes, &before_map));
        let restore: BTreeMap<String, String> = edits.keys().map(|k| (k.clone(), g.values[k].clone())).collect();
        prop_assert_eq!(patch(&out, &restore).unwrap(), g.bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_files_round_trip(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        prefix in any::<bool>(),
        v in value(),
    ) {
        let input = if prefix { [b"<?php ".as_slice(), &bytes].concat() } else { bytes };
        if let Ok(map) = UrlMap::parse(&input) {
            let keys: Vec<String> = map.entries().iter().map(|e| e.key.clone()).collect();
            for key in keys {
                if let Ok(old) = map.value(&key) {
                    let out = patch(&input, &BTreeMap::from([(key.clone(), v.clone())])).unwrap();
                    prop_assert_eq!(patch(&out, &BTreeMap::from([(key, old)])).unwrap(), input.clone());
                }
            }
        }
    }
}
