//! The URL map corpus: every supported form, in LF, CRLF, BOM, `?>`-trailer
//! and tabs/trailing-whitespace variants, each with a golden patched file.
//! Patching gives the golden bytes; restoring gives the input bytes; nothing
//! outside the literal changes. `UPDATE_GOLDEN=1` rewrites variants and
//! goldens (review the diff before committing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sdp_agent::urlmap::{UrlMap, patch};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/urlmap/corpus")
}

type Transform = fn(&[u8]) -> Vec<u8>;

const VARIANTS: &[(&str, Transform)] = &[
    ("lf", |b| b.to_vec()),
    ("crlf", |b| {
        String::from_utf8_lossy(b)
            .replace('\n', "\r\n")
            .into_bytes()
    }),
    ("bom", |b| [&[0xef, 0xbb, 0xbf][..], b].concat()),
    ("closetag", |b| {
        let trailer = "?>\n<!-- served as HTML -->\n$config['eredar_url'] = 'http://not-php/';\n";
        [b, trailer.as_bytes()].concat()
    }),
    ("tabs", |b| {
        let text = String::from_utf8_lossy(b);
        let mut out = String::new();
        for line in text.split_inclusive('\n') {
            let body = line.strip_suffix('\n').unwrap_or(line);
            let body = body.replace("    ", "\t");
            out.push_str(&body);
            // PHP allows no trailing blanks after a heredoc opener.
            if !body.contains("<<<") {
                out.push_str(" \t ");
            }
            if line.ends_with('\n') {
                out.push('\n');
            }
        }
        out.into_bytes()
    }),
];

/// `// sdp-test: <key> => <value>` on the file's second line.
fn instruction(base: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(base);
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("// sdp-test: "))
        .expect("sdp-test line");
    let (k, v) = line.split_once(" => ").expect("key => value");
    (k.to_string(), v.to_string())
}

fn check_or_write(path: &Path, bytes: &[u8], update: bool, stale: &mut Vec<String>) {
    if update {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    } else if std::fs::read(path).ok().as_deref() != Some(bytes) {
        stale.push(path.display().to_string());
    }
}

#[test]
fn every_form_and_variant_patches_to_its_golden_and_restores_exactly() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    let mut bases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "php"))
        .collect();
    bases.sort();
    assert!(bases.len() >= 11, "the corpus covers every form");
    for base_path in bases {
        let case = base_path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let base = std::fs::read(&base_path).unwrap();
        let (key, value) = instruction(&base);
        for (variant, transform) in VARIANTS {
            let input = transform(&base);
            let what = format!("{case} ({variant})");
            if *variant != "lf" {
                check_or_write(
                    &corpus()
                        .join("variants")
                        .join(format!("{case}.{variant}.php")),
                    &input,
                    update,
                    &mut stale,
                );
            }
            let map = UrlMap::parse(&input).unwrap_or_else(|e| panic!("{what}: {e}"));
            let original = map.value(&key).unwrap_or_else(|e| panic!("{what}: {e}"));
            let lit = map.literal(&key).unwrap().clone();

            let out = patch(&input, &BTreeMap::from([(key.clone(), value.clone())])).unwrap();
            check_or_write(
                &corpus()
                    .join("golden")
                    .join(format!("{case}.{variant}.php")),
                &out,
                update,
                &mut stale,
            );
            assert_eq!(
                UrlMap::parse(&out).unwrap().value(&key).unwrap(),
                value,
                "{what}"
            );
            assert_eq!(
                &out[..lit.span.start],
                &input[..lit.span.start],
                "{what}: bytes before the literal"
            );
            let tail = input.len() - lit.span.end;
            assert_eq!(
                &out[out.len() - tail..],
                &input[lit.span.end..],
                "{what}: bytes after the literal"
            );

            let restored = patch(&out, &BTreeMap::from([(key.clone(), original)])).unwrap();
            assert_eq!(
                restored, input,
                "{what}: restoring gives the input byte for byte"
            );
        }
    }
    assert!(
        stale.is_empty(),
        "corpus files differ (UPDATE_GOLDEN=1 rewrites them): {stale:#?}"
    );
}

#[test]
fn the_golden_of_each_form_shows_the_expected_literal() {
    let golden = |name: &str| {
        String::from_utf8(std::fs::read(corpus().join("golden").join(name)).unwrap()).unwrap()
    };
    assert!(
        golden("codeigniter-double.lf.php")
            .contains(r#"$config["eredar_url"] = "http://172.17.0.1:9001/?t=\$x&q=\"1\"";"#)
    );
    assert!(golden("env-fallback.lf.php").contains("env('EREDAR_URL', 'http://172.17.0.1:9001/')"));
    assert!(
        golden("getenv-fallback.crlf.php")
            .contains("getenv('EREDAR_URL') ?: 'http://172.17.0.1:9001/';\r\n")
    );
    assert!(
        golden("nested-dotted.lf.php")
            .contains("'eredar' => ['url' => 'http://172.17.0.1:9001/', 'timeout' => 5],")
    );
    assert!(
        golden("lookalikes.lf.php").contains("// $config['eredar_url'] = 'http://commented-out/';")
    );
    assert!(
        golden(
            "closetag.lf.php"
                .replace("closetag.lf", "define.closetag")
                .as_str()
        )
        .ends_with("$config['eredar_url'] = 'http://not-php/';\n")
    );
    assert!(
        golden("codeigniter-spacing.tabs.php")
            .contains("$config [ 'eredar_url' ]\t=\t  'http://172.17.0.1:9001/' ;   ")
    );
}
