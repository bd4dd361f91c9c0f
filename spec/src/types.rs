//! Validated scalar types used by records. Each checks itself while it is
//! deserialized, so a bad value is reported at its own line and column.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub const MAX_NAME_LEN: usize = 63;

/// Checks a DNS-label-like record name: lowercase letters, digits and `-`,
/// starting and ending with a letter or digit, at most 63 characters.
pub fn check_name(s: &str) -> Result<(), String> {
    let allowed = "use lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters";
    if s.is_empty() {
        return Err(format!("name must not be empty: {allowed}"));
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !s.starts_with('-') && !s.ends_with('-');
    if !ok_chars || !ok_ends {
        return Err(format!("`{}` is not a valid name: {allowed}", shown(s)));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("`{s}` is {} characters long: {allowed}", s.len()));
    }
    Ok(())
}

/// A value as it may be echoed in a message: control characters escaped,
/// and cut short if long.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 80 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Replaces the user-info of any URL in `text` (`https://user:pw@host` →
/// `https://***@host`), so no message can carry a credential.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '`' | '\'') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $ty:ident, $check:expr, $schema:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = String;
            fn try_from(s: &str) -> Result<Self, String> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

string_newtype!(
    /// A record name: DNS-label-like.
    Name,
    check_name,
    json_schema!({
        "type": "string",
        "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        "description": "Lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters."
    })
);

string_newtype!(
    /// A git repository location without credentials.
    RepoUrl,
    check_repo_url,
    json_schema!({
        "type": "string",
        "minLength": 1,
        "description": "Git URL (https://, http://, ssh://, file://, user@host:path) or an absolute local path. Must not contain a password or token: credentials are configured on the agent."
    })
);

string_newtype!(
    /// A Docker image reference that must already be loaded on the agent's host.
    ImageRef,
    check_image,
    json_schema!({
        "type": "string",
        "pattern": "^[^\\s]+$",
        "description": "Image reference (name[:tag] or name@digest). It must already be loaded on the agent's host: SDP never pulls."
    })
);

string_newtype!(
    /// An absolute path inside a container.
    ContainerPath,
    check_container_path,
    json_schema!({
        "type": "string",
        "pattern": "^/",
        "description": "Absolute path inside the container."
    })
);

string_newtype!(
    /// A relative path inside a checkout.
    RelativePath,
    check_relative_path,
    json_schema!({
        "type": "string",
        "pattern": "^[^/]",
        "description": "Path relative to the checkout; must not leave it."
    })
);

string_newtype!(
    /// A git branch name.
    BranchName,
    check_branch,
    json_schema!({
        "type": "string",
        "minLength": 1,
        "description": "Branch name as pushed (e.g. feature/PAY-123), without refs/heads/."
    })
);

string_newtype!(
    /// A git commit id, abbreviated or full.
    CommitId,
    check_commit,
    json_schema!({
        "type": "string",
        "pattern": "^[0-9a-f]{7,40}$",
        "description": "Commit id: 7 to 40 lowercase hex digits."
    })
);

string_newtype!(
    /// An HTTP path for health checks.
    UrlPath,
    check_url_path,
    json_schema!({
        "type": "string",
        "pattern": "^/",
        "description": "HTTP path starting with '/'."
    })
);

string_newtype!(
    /// A key in the gateway's URL map (a dotted path for nested arrays).
    RouteKey,
    check_route_key,
    json_schema!({
        "type": "string",
        "pattern": "^[A-Za-z0-9_.-]+$",
        "description": "Key of the service's base URL in the gateway's config file, e.g. eredar_url, or services.eredar.url for nested arrays."
    })
);

/// Repository locations. Credentials belong to the agent, never to a record,
/// so anything that could carry one is refused, and the value is never echoed.
fn check_repo_url(s: &str) -> Result<(), String> {
    const FORMS: &str = "use https://host/path, ssh://[user@]host/path, git://, file:///path, user@host:path or an absolute path";
    const NO_CREDS: &str = "repository URL must not carry credentials (user-info with a password or token, or a token in the query); configure them on the agent (--git-username, SDP_GIT_PASSWORD)";
    if s.trim().is_empty() {
        return Err("repository URL must not be empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("repository URL must not contain spaces or control characters".into());
    }
    if let Some((scheme, rest)) = s.split_once("://") {
        let known = ["https", "http", "ssh", "git", "file"];
        if !known.contains(&scheme) {
            return Err(format!("repository URL scheme is not supported: {FORMS}"));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            // ssh names a login user (git@); over HTTP any user-info is a credential.
            let user_ok = scheme == "ssh" && !userinfo.contains(':') && !userinfo.contains('%');
            if !user_ok {
                return Err(NO_CREDS.into());
            }
        }
        if rest.contains('?') || rest.contains('#') {
            return Err(NO_CREDS.into());
        }
        if scheme != "file" && authority.is_empty() {
            return Err(format!("repository URL has no host: {FORMS}"));
        }
        return Ok(());
    }
    if s.starts_with('/') {
        return Ok(());
    }
    // scp-like: [user@]host:path, with a plain host and no password.
    if let Some((front, path)) = s.split_once(':') {
        let (user, host) = front
            .rsplit_once('@')
            .map_or((None, front), |(u, h)| (Some(u), h));
        if path.contains('@') || user.is_some_and(|u| u.contains(':')) {
            return Err(NO_CREDS.into());
        }
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        let user_ok = user.is_none_or(|u| {
            !u.is_empty()
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        });
        if host_ok && user_ok && !path.is_empty() {
            return Ok(());
        }
    }
    Err(format!("not a repository URL: {FORMS}"))
}

fn check_image(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{s}` is not an image reference: expected name[:tag] or name@digest without spaces"
        ));
    }
    Ok(())
}

fn check_container_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!(
            "`{}` must be an absolute path (start with '/')",
            shown(s)
        ));
    }
    if s.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!(
            "`{}` must not contain '.' or '..' components",
            shown(s)
        ));
    }
    // Docker reads `:` and `,` in a bind as options.
    if s.chars().any(|c| c == ':' || c == ',' || c.is_control()) {
        return Err(format!(
            "`{}` must not contain ':', ',' or control characters",
            shown(s)
        ));
    }
    if s.trim_end_matches('/').is_empty() {
        return Err("the checkout cannot be mounted over the container's root `/`".into());
    }
    Ok(())
}

fn check_relative_path(s: &str) -> Result<(), String> {
    let bad_component = s
        .split(['/', '\\'])
        .any(|c| c.is_empty() || c == "." || c == ".." || c == ".git");
    if s.starts_with('/') || bad_component || s.chars().any(char::is_control) {
        return Err(format!(
            "`{}` must be a file path relative to the checkout that stays inside it (no leading '/', no empty, '.', '..' or .git components)",
            shown(s)
        ));
    }
    Ok(())
}

/// Follows git's own rules for ref names, the subset that matters here.
fn check_branch(s: &str) -> Result<(), String> {
    let bad = s.is_empty()
        || s.starts_with('-')
        || s.starts_with('/')
        || s.ends_with('/')
        || s.ends_with('.')
        || s.ends_with(".lock")
        || s.contains("..")
        || s.contains("//")
        || s.contains("@{")
        || s.starts_with("refs/")
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err(format!(
            "`{}` is not a valid branch name (git ref rules: no spaces, '..', '~^:?*[\\', no leading '-' or '/', without the refs/heads/ prefix)",
            shown(s)
        ));
    }
    Ok(())
}

fn check_commit(s: &str) -> Result<(), String> {
    let ok = (7..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(format!(
            "`{}` is not a commit id: use 7 to 40 lowercase hex digits",
            shown(s)
        ));
    }
    Ok(())
}

fn check_url_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') || s.chars().any(char::is_whitespace) {
        return Err(format!("`{s}` must be an HTTP path starting with '/'"));
    }
    Ok(())
}

fn check_route_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !ok {
        return Err(format!(
            "`{s}` is not a route key: use letters, digits, '_', '-', and '.' between nested keys"
        ));
    }
    Ok(())
}

/// A TCP port, 1-65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "u16")]
pub struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, 1-65535")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Port, E> {
                Port::try_from(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Port, E> {
                Port::try_from(i64::try_from(v).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Port, E> {
                Port::try_from(i64::try_from(v).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Port, E> {
                Port::try_from(i64::try_from(v).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Port, E> {
                Err(E::custom(format!(
                    "a port is a whole number 1-65535, not {v}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Port, E> {
                Err(E::custom(format!(
                    "a port is a number 1-65535 without quotes, not the string \"{}\"",
                    shown(v)
                )))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Port, E> {
                Err(E::custom(format!("a port is a number 1-65535, not {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl Port {
    pub fn new(p: u16) -> Option<Self> {
        (p != 0).then_some(Self(p))
    }
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for Port {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match u16::try_from(v) {
            Ok(p) if p > 0 => Ok(Self(p)),
            _ if v == i64::MAX => Err("port is out of range: allowed 1-65535".to_string()),
            _ => Err(format!("port {v} is out of range: allowed 1-65535")),
        }
    }
}

impl From<Port> for u16 {
    fn from(p: Port) -> u16 {
        p.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for Port {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 1, "maximum": 65535 })
    }
}

/// A command as an argv list: never run through a shell, so nothing needs quoting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Argv(Vec<String>);

impl Argv {
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
    pub fn program(&self) -> &str {
        &self.0[0]
    }
    pub fn args(&self) -> &[String] {
        &self.0[1..]
    }
}

impl TryFrom<Vec<String>> for Argv {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        if v.iter().any(|a| a.contains('\0')) {
            return Err("command arguments must not contain NUL characters".into());
        }
        match v.first() {
            None => Err("command must not be empty: give the program and its arguments as a list, e.g. [\"go\", \"build\", \"./...\"]".into()),
            Some(p) if p.trim().is_empty() => Err("the program (first element) must not be empty".into()),
            Some(_) => Ok(Self(v)),
        }
    }
}

impl From<Argv> for Vec<String> {
    fn from(a: Argv) -> Self {
        a.0
    }
}

impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

impl JsonSchema for Argv {
    fn schema_name() -> Cow<'static, str> {
        "Argv".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "items": { "type": "string" },
            "minItems": 1,
            "description": "Program and arguments as a list; run directly, never through a shell."
        })
    }
}

/// Environment variables for a container: names follow POSIX shell rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct EnvVars(BTreeMap<String, String>);

impl EnvVars {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
    pub fn get(&self, k: &str) -> Option<&String> {
        self.0.get(k)
    }
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl TryFrom<BTreeMap<String, String>> for EnvVars {
    type Error = String;
    fn try_from(m: BTreeMap<String, String>) -> Result<Self, String> {
        if m.values().any(|v| v.contains('\0')) {
            return Err("environment values must not contain NUL characters".into());
        }
        for k in m.keys() {
            let mut chars = k.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`{}` is not a valid environment variable name: use letters, digits and '_', not starting with a digit",
                    shown(k)
                ));
            }
        }
        Ok(Self(m))
    }
}

impl From<EnvVars> for BTreeMap<String, String> {
    fn from(e: EnvVars) -> Self {
        e.0
    }
}

impl FromIterator<(String, String)> for EnvVars {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl JsonSchema for EnvVars {
    fn schema_name() -> Cow<'static, str> {
        "EnvVars".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
            "additionalProperties": { "type": "string" }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(
            check_name(&"ä".repeat(32))
                .unwrap_err()
                .contains("not a valid name")
        );
        for ok in ["a", "eredar", "alice-checkout", "a1", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Alice", "-a", "a-", "a_b", "a.b", "ä", &"x".repeat(64)] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains("lowercase letters"), "{bad}: {err}");
        }
    }

    #[test]
    fn repo_urls_with_credentials_are_refused() {
        for ok in [
            "https://git.example.internal/scm/be/eredar.git",
            "ssh://git@git.example.internal/be/x.git",
            "git@git.example.internal:be/x.git",
            "git.example.internal:be/x.git",
            "file:///srv/git/x.git",
            "/srv/git/x.git",
        ] {
            assert!(check_repo_url(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            (
                "https://bob:s3cret@git.example.internal/x.git",
                "credentials",
            ),
            ("https://ghp_s3cretTOKEN@github.com/x.git", "credentials"),
            (
                "https://bob%3As3cret@git.example.internal/x.git",
                "credentials",
            ),
            (
                "https://git.example.internal/x.git?private_token=s3cret",
                "credentials",
            ),
            ("ssh://git:s3cret@host/x.git", "credentials"),
            ("bob:s3cret@git.example.internal:be/x.git", "credentials"),
            (
                "https:/bob:s3cret@git.example.internal/x.git",
                "credentials",
            ),
            (
                "https//bob:s3cret@git.example.internal/x.git",
                "credentials",
            ),
            ("s3cretTOKEN@github.com/x.git", "not a repository URL"),
            ("ftp://x/y", "not supported"),
            ("relative/path", "not a repository URL"),
            ("https:///x.git", "no host"),
        ] {
            let err = check_repo_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(
                !err.contains("s3cret") && !err.contains("TOKEN"),
                "never echoed: {err}"
            );
        }
    }

    #[test]
    fn credentials_are_redacted_from_any_text() {
        assert_eq!(
            redact_credentials("invalid type: string \"https://bob:pw@h/x\", expected i64"),
            "invalid type: string \"https://***@h/x\", expected i64"
        );
        assert_eq!(
            redact_credentials("at http://u:p@127.0.0.1:1 now"),
            "at http://***@127.0.0.1:1 now"
        );
        assert_eq!(redact_credentials("no urls here"), "no urls here");
        assert_eq!(redact_credentials("https://h/x@y"), "https://h/x@y");
    }

    #[test]
    fn container_paths_cannot_change_bind_options() {
        assert!(check_container_path("/var/www/html/erangel").is_ok());
        for bad in [
            "/",
            "//",
            "/a:/b",
            "/a,readonly=false",
            "/a/../b",
            "/a/./b",
            "rel",
            "/a\0b",
        ] {
            assert!(check_container_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert!(Port::try_from(1).is_ok());
        assert!(Port::try_from(65535).is_ok());
        for bad in [0, -1, 65536, 70000] {
            let err = Port::try_from(bad).unwrap_err();
            assert!(err.contains("allowed 1-65535"), "{err}");
        }
    }

    #[test]
    fn branches_follow_git_ref_rules() {
        for ok in ["main", "feature/PAY-123", "release-1.2", "user/alice/x"] {
            assert!(check_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "a b",
            "-x",
            "x/",
            "refs/heads/x",
            "x.lock",
            "a~1",
            "a:b",
        ] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert!(check_relative_path("application/config/config.php").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            ".",
            "./",
            "a//b",
            ".git/config",
            "c.php\0",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names_are_checked() {
        let ok: BTreeMap<_, _> = [("LOG_LEVEL".to_string(), "debug".to_string())].into();
        assert!(EnvVars::try_from(ok).is_ok());
        let bad: BTreeMap<_, _> = [("1X".to_string(), "v".to_string())].into();
        assert!(EnvVars::try_from(bad).is_err());
    }
}

/// Parses a duration like `500ms`, `90s`, `5m`, `2h` or `3d` (one unit).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` needs a unit: ms, s, m, h or d (e.g. 90s)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 90s, 5m, 2h or 3d"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "`{s}` has unknown unit `{unit}`: use ms, s, m, h or d"
            ));
        }
    }
    .ok_or_else(|| format!("`{s}` is too long"))?;
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
    }
}

/// An address others can reach: an IPv4 or IPv6 address, or a DNS host name.
/// No port, scheme or path.
pub fn check_host(s: &str) -> Result<(), String> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if s.len() <= 253 && s.split('.').all(label_ok) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not an IP address or host name (no port, scheme or path)",
        shown(s)
    ))
}

#[cfg(test)]
mod host_tests {
    use super::check_host;

    #[test]
    fn hosts() {
        for ok in [
            "10.0.0.5",
            "fd00::1",
            "micro.vm.example.internal",
            "localhost",
            "172.17.0.1",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.5:9999",
            "evil.com#",
            "",
            "a..b",
            "http:",
            "x';",
            "a?b",
            "-a",
            "a b",
            "\u{200b}",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }
}
