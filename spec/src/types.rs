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
    if s.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{s}` is {} characters long: {allowed}",
            s.chars().count()
        ));
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !s.starts_with('-') && !s.ends_with('-');
    if !ok_chars || !ok_ends {
        return Err(format!("`{s}` is not a valid name: {allowed}"));
    }
    Ok(())
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

fn check_repo_url(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("repository URL must not be empty".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err("repository URL must not contain whitespace".into());
    }
    if let Some((scheme, rest)) = s.split_once("://") {
        let known = ["https", "http", "ssh", "git", "file"];
        if !known.contains(&scheme) {
            return Err(format!(
                "repository URL scheme `{scheme}` is not supported; use one of {}",
                known.join(", ")
            ));
        }
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err("repository URL must not contain a password or token; configure credentials on the agent instead".into());
        }
        return Ok(());
    }
    if s.starts_with('/') || s.contains(':') {
        return Ok(());
    }
    Err(format!(
        "`{s}` is not a repository URL: use https://, ssh://, file://, user@host:path or an absolute path"
    ))
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
        return Err(format!("`{s}` must be an absolute path (start with '/')"));
    }
    if s.split('/').any(|c| c == "..") {
        return Err(format!("`{s}` must not contain '..'"));
    }
    Ok(())
}

fn check_relative_path(s: &str) -> Result<(), String> {
    if s.is_empty() || s.starts_with('/') || s.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!(
            "`{s}` must be a path relative to the checkout that stays inside it (no leading '/', no '..')"
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
            "`{s}` is not a valid branch name (git ref rules: no spaces, '..', '~^:?*[\\', no leading '-' or '/', without the refs/heads/ prefix)"
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u16")]
pub struct Port(u16);

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
        for k in m.keys() {
            let mut chars = k.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`{k}` is not a valid environment variable name: use letters, digits and '_', not starting with a digit"
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
        assert!(check_repo_url("https://git.example.internal/scm/be/eredar.git").is_ok());
        assert!(check_repo_url("https://bob@git.example.internal/x.git").is_ok());
        assert!(check_repo_url("git@git.example.internal:be/x.git").is_ok());
        assert!(check_repo_url("/srv/git/x.git").is_ok());
        let err = check_repo_url("https://bob:s3cret@git.example.internal/x.git").unwrap_err();
        assert!(err.contains("must not contain a password"), "{err}");
        assert!(!err.contains("s3cret"));
        assert!(check_repo_url("ftp://x/y").is_err());
        assert!(check_repo_url("relative/path").is_err());
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
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
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
