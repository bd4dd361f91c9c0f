//! The gateway's URL map as a whole: what the file must say, what the
//! running gateway must serve, and how SDP finds out what it does serve.
//!
//! Invariants:
//! - The desired file is computed from the committed blob, never from the
//!   live file: restoring every entry gives the committed bytes.
//! - What a gateway serves is read through an SDP-owned probe script run by
//!   PHP under the gateway's own Apache, so OPcache and the container's
//!   environment are accounted for; status never claims a route that is not
//!   served.

use std::collections::BTreeMap;

use base64_lite::encode as b64;
use sdp_spec::wire::{GatewayWork, RouteReport, RouteTarget};

use crate::urlmap::{self, MapError, UrlMap, Value};

/// The probe's file name, in the gateway's web root.
pub const PROBE_FILE: &str = "sdp-probe.php";

/// What the gateway should serve for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Value(String),
    /// Computed in PHP: SDP cannot predict it (and does not route it).
    Unknown,
}

/// The URL map this sandbox's gateway must have.
#[derive(Clone, Debug)]
pub struct MapPlan {
    pub committed: Vec<u8>,
    /// The file with the sandbox's routes patched in.
    pub desired: Vec<u8>,
    /// Variables set in the container to route env-fallback entries.
    pub extra_env: BTreeMap<String, String>,
    /// What each route key present in the file should serve.
    pub expect: BTreeMap<String, Expect>,
}

/// Works out the desired file and what should be served, or refuses with the
/// key, the line and the reason.
pub fn plan_map(w: &GatewayWork, committed: &[u8]) -> Result<MapPlan, String> {
    let map = UrlMap::parse(committed).map_err(|e| e.to_string())?;
    let mut edits = BTreeMap::new();
    let mut extra_env = BTreeMap::new();
    let mut expect = BTreeMap::new();
    for r in &w.routes {
        match &r.target {
            RouteTarget::Sandbox { url } => {
                let entry = map.entry(&r.key).map_err(|e| e.to_string())?;
                if let Value::EnvFallback { var, .. } = &entry.value {
                    if w.routes_via_env {
                        extra_env.insert(var.clone(), url.clone());
                        expect.insert(r.key.clone(), Expect::Value(url.clone()));
                        continue;
                    }
                    if w.env.contains_key(var) {
                        return Err(format!(
                            "key `{}` (line {}) falls back to the environment variable {var}, which the gateway's env sets: the environment wins, so patching the file would not route anything. Remove {var} from the gateway record's env, or set `routes_via_env = true` there to route by setting {var}",
                            r.key, entry.line
                        ));
                    }
                }
                edits.insert(r.key.clone(), url.clone());
                expect.insert(r.key.clone(), Expect::Value(url.clone()));
            }
            RouteTarget::Default | RouteTarget::Pending { .. } => match map.entry(&r.key) {
                Ok(entry) => {
                    let served = match &entry.value {
                        Value::EnvFallback { var, default } => w
                            .env
                            .get(var)
                            .cloned()
                            .unwrap_or_else(|| default.value.clone()),
                        Value::Literal(l) => l.value.clone(),
                        Value::Computed { .. } => unreachable!("entry() refuses computed values"),
                    };
                    expect.insert(r.key.clone(), Expect::Value(served));
                }
                // Not in this gateway's map: nothing to serve or route.
                Err(MapError::Missing { .. }) => {}
                Err(_) => {
                    expect.insert(r.key.clone(), Expect::Unknown);
                }
            },
        }
    }
    let desired = urlmap::patch(committed, &edits).map_err(|e| e.to_string())?;
    Ok(MapPlan {
        committed: committed.to_vec(),
        desired,
        extra_env,
        expect,
    })
}

/// The directory (relative to the checkout) Apache serves at `/`: from
/// APACHE_DOCUMENT_ROOT when it lies inside the mount, else the checkout root.
pub fn web_root(w: &GatewayWork) -> String {
    let mount = w.mount.trim_end_matches('/');
    w.env
        .get("APACHE_DOCUMENT_ROOT")
        .and_then(|root| root.strip_prefix(mount))
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .map(|rest| rest.trim_matches('/').to_string())
        .unwrap_or_default()
}

/// The probe: includes the config file as the application would (after an
/// explicit OPcache invalidation when asked), and prints the requested keys.
pub fn probe_script(token: &str, config_in_container: &str, keys: &[String]) -> Vec<u8> {
    let keys_json = serde_json::to_string(keys).expect("keys serialize");
    format!(
        r#"<?php
// Written by SDP (sandbox deployment platform): reports the URL map as this
// gateway serves it. Safe to delete; SDP writes it again when it needs it.
if (!isset($_GET['token']) || !hash_equals('{token}', (string) $_GET['token'])) {{
    http_response_code(404);
    exit;
}}
header('Content-Type: application/json');
header('Cache-Control: no-store');
$sdp_file = base64_decode('{file}');
if (isset($_GET['fresh']) && function_exists('opcache_invalidate')) {{
    opcache_invalidate($sdp_file, true);
}}
if (!defined('BASEPATH')) {{
    define('BASEPATH', __DIR__ . '/');
}}
if (!function_exists('env')) {{
    function env($key, $default = null) {{
        $v = getenv($key);
        return $v === false ? $default : $v;
    }}
}}
$sdp_keys = json_decode(base64_decode('{keys}'), true);
$sdp_found = (function () use ($sdp_file) {{
    $config = array();
    $returned = include $sdp_file;
    return array($config, is_array($returned) ? $returned : array());
}})();
$sdp_user_constants = get_defined_constants(true);
$sdp_user_constants = isset($sdp_user_constants['user']) ? $sdp_user_constants['user'] : array();
$sdp_out = array();
foreach ($sdp_keys as $sdp_key) {{
    $sdp_value = null;
    foreach ($sdp_found as $sdp_array) {{
        $cur = $sdp_array;
        $ok = true;
        foreach (explode('.', $sdp_key) as $part) {{
            if (is_array($cur) && array_key_exists($part, $cur)) {{
                $cur = $cur[$part];
            }} else {{
                $ok = false;
                break;
            }}
        }}
        if ($ok) {{
            $sdp_value = $cur;
            break;
        }}
    }}
    if ($sdp_value === null) {{
        foreach ($sdp_user_constants as $name => $v) {{
            if ($name === $sdp_key || substr($name, -strlen($sdp_key) - 1) === '\\' . $sdp_key) {{
                $sdp_value = $v;
                break;
            }}
        }}
    }}
    $sdp_out[$sdp_key] = is_scalar($sdp_value) ? (string) $sdp_value : null;
}}
echo json_encode(array('values' => $sdp_out));
"#,
        file = b64(config_in_container.as_bytes()),
        keys = b64(keys_json.as_bytes()),
    )
    .into_bytes()
}

/// Asks the running gateway what it serves. `fresh` invalidates the config
/// file in OPcache first.
pub async fn probe(
    http: &reqwest::Client,
    url: &str,
    fresh: bool,
) -> Result<BTreeMap<String, Option<String>>, String> {
    let url = if fresh {
        format!("{url}&fresh=1")
    } else {
        url.to_string()
    };
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
    if !status.is_success() {
        let body: String = text.chars().take(200).collect();
        return Err(format!("the probe answered {status}: {}", body.trim()));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        values: BTreeMap<String, Option<String>>,
    }
    serde_json::from_str::<Answer>(&text)
        .map(|a| a.values)
        .map_err(|_| {
            format!(
                "the probe's answer is not what SDP wrote it to say: {}",
                text.chars().take(200).collect::<String>()
            )
        })
}

/// Keys whose served value differs from what it should be:
/// `(key, expected, served)`.
pub fn mismatches(
    plan: &MapPlan,
    served: &BTreeMap<String, Option<String>>,
) -> Vec<(String, String, Option<String>)> {
    plan.expect
        .iter()
        .filter_map(|(k, e)| match e {
            Expect::Value(v) => {
                let got = served.get(k).cloned().flatten();
                (got.as_deref() != Some(v.as_str())).then(|| (k.clone(), v.clone(), got))
            }
            Expect::Unknown => None,
        })
        .collect()
}

/// The route table for status, from the live file and (when probed) what
/// the gateway serves.
pub fn route_reports(
    w: &GatewayWork,
    plan: &MapPlan,
    live_file: Option<&[u8]>,
    served: Option<&BTreeMap<String, Option<String>>>,
) -> Vec<RouteReport> {
    let live_map = live_file.and_then(|b| UrlMap::parse(b).ok());
    let committed_map = UrlMap::parse(&plan.committed).ok();
    w.routes
        .iter()
        .map(|r| {
            let file = live_map.as_ref().and_then(|m| m.value(&r.key).ok());
            let default = committed_map.as_ref().and_then(|m| m.value(&r.key).ok());
            let env_var = committed_map.as_ref().and_then(|m| m.env_override(&r.key)).map(String::from);
            let served_value = served.and_then(|s| s.get(&r.key).cloned().flatten());
            let expected = match plan.expect.get(&r.key) {
                Some(Expect::Value(v)) => Some(v.clone()),
                _ => None,
            };
            let desired = match &r.target {
                RouteTarget::Sandbox { url } => Some(url.clone()),
                _ => expected.clone().or_else(|| default.clone()),
            };
            let live = served_value.clone().or_else(|| file.clone());
            let routed_to_sandbox = matches!(&r.target, RouteTarget::Sandbox { url } if live.as_deref() == Some(url.as_str()));
            let problem = match &r.target {
                RouteTarget::Pending { reason } => Some(format!("not routed yet: {reason}")),
                _ => match (&expected, &live) {
                    (Some(want), Some(got)) if want != got => Some(format!("serves {got}, should serve {want}")),
                    (Some(_), None) if served.is_some() => Some("the gateway does not define it".into()),
                    _ => None,
                },
            };
            RouteReport {
                service: r.service.clone(),
                key: r.key.clone(),
                served: served_value,
                file,
                default,
                desired,
                env_var,
                routed_to_sandbox,
                problem,
            }
        })
        .collect()
}

mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Standard base64 with padding (what PHP's base64_decode reads).
    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[test]
    fn known_vectors() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdp_spec::wire::RouteWork;

    fn work(routes: Vec<RouteWork>, env: &[(&str, &str)], via_env: bool) -> GatewayWork {
        GatewayWork {
            gateway: "erangel".into(),
            repo: "/r".into(),
            branch: "main".into(),
            image: "img".into(),
            command: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            mount: "/var/www/html/erangel".into(),
            container_port: 80,
            host_port: 8101,
            prepare: None,
            config_file: "config.php".into(),
            reload: None,
            routes_via_env: via_env,
            routes,
        }
    }

    fn route(service: &str, key: &str, target: RouteTarget) -> RouteWork {
        RouteWork {
            service: service.into(),
            key: key.into(),
            target,
        }
    }

    const C02: &[u8] = include_bytes!("../tests/fixtures/urlmap/C02-config.php");

    #[test]
    fn env_fallbacks_are_refused_when_the_env_wins_unless_routed_via_env() {
        let routes = vec![
            route(
                "eredar",
                "eredar_url",
                RouteTarget::Sandbox {
                    url: "http://h:9001/".into(),
                },
            ),
            route("ledger", "ledger_url", RouteTarget::Default),
        ];
        let env = [("EREDAR_URL", "http://eredar-canary.ocp.example.internal/")];
        let err = plan_map(&work(routes.clone(), &env, false), C02).unwrap_err();
        assert!(
            err.contains(
                "falls back to the environment variable EREDAR_URL, which the gateway's env sets"
            ),
            "{err}"
        );
        assert!(err.contains("routes_via_env = true"), "{err}");

        let plan = plan_map(&work(routes.clone(), &env, true), C02).unwrap();
        assert_eq!(plan.desired, C02, "the file is left as committed");
        assert_eq!(plan.extra_env["EREDAR_URL"], "http://h:9001/");
        assert_eq!(
            plan.expect["eredar_url"],
            Expect::Value("http://h:9001/".into())
        );

        // Without the variable in the env, the fallback is what is served: patch it.
        let plan = plan_map(&work(routes, &[], false), C02).unwrap();
        assert!(
            String::from_utf8(plan.desired)
                .unwrap()
                .contains("env('EREDAR_URL', 'http://h:9001/')")
        );
    }

    #[test]
    fn defaults_expect_the_environment_when_it_is_set() {
        let routes = vec![
            route("eredar", "eredar_url", RouteTarget::Default),
            route("gone", "gone_url", RouteTarget::Default),
        ];
        let env = [("EREDAR_URL", "http://canary/")];
        let plan = plan_map(&work(routes, &env, false), C02).unwrap();
        assert_eq!(
            plan.expect["eredar_url"],
            Expect::Value("http://canary/".into())
        );
        assert!(
            !plan.expect.contains_key("gone_url"),
            "keys not in the map are not expected"
        );
        let served =
            BTreeMap::from([("eredar_url".to_string(), Some("http://canary/".to_string()))]);
        assert!(mismatches(&plan, &served).is_empty());
        let stale = BTreeMap::from([("eredar_url".to_string(), Some("http://old/".to_string()))]);
        assert_eq!(
            mismatches(&plan, &stale),
            vec![(
                "eredar_url".into(),
                "http://canary/".into(),
                Some("http://old/".into())
            )]
        );
    }

    #[test]
    fn web_root_follows_the_document_root() {
        let mut w = work(
            vec![],
            &[("APACHE_DOCUMENT_ROOT", "/var/www/html/erangel")],
            false,
        );
        assert_eq!(web_root(&w), "");
        w.env.insert(
            "APACHE_DOCUMENT_ROOT".into(),
            "/var/www/html/erangel/public/".into(),
        );
        assert_eq!(web_root(&w), "public");
        w.env
            .insert("APACHE_DOCUMENT_ROOT".into(), "/srv/elsewhere".into());
        assert_eq!(web_root(&w), "");
        w.env.insert(
            "APACHE_DOCUMENT_ROOT".into(),
            "/var/www/html/erangel-other".into(),
        );
        assert_eq!(
            web_root(&w),
            "",
            "a sibling directory is not inside the mount"
        );
    }

    #[test]
    fn probe_script_embeds_path_and_keys_safely() {
        let script = String::from_utf8(probe_script(
            "t0k",
            "/var/www/it's/config.php",
            &["a'b".into()],
        ))
        .unwrap();
        assert!(script.contains("hash_equals('t0k'"));
        assert!(
            !script.contains("it's"),
            "paths and keys are base64, never spliced into PHP source"
        );
    }
}
