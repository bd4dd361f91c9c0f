//! The declarative records people write: `service`, `gateway` and `sandbox`.
//!
//! Each struct is exactly one TOML document. Unknown keys are refused
//! (`deny_unknown_fields`), and every scalar validates itself while it is read,
//! so errors carry the line and column of the offending value.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::{
    Argv, BranchName, CommitId, ContainerPath, EnvVars, ImageRef, Name, Port, RelativePath,
    RepoUrl, RouteKey, UrlPath,
};

/// Where a service's checkout is mounted in its container unless it says otherwise.
pub const DEFAULT_SERVICE_MOUNT: &str = "/src";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Service,
    Gateway,
    Sandbox,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::Gateway, Kind::Sandbox];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Gateway => "gateway",
            Kind::Sandbox => "sandbox",
        }
    }

    /// Accepts the singular and plural (`sandboxes`) spellings people type.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "service" | "services" | "svc" => Some(Kind::Service),
            "gateway" | "gateways" | "gw" => Some(Kind::Gateway),
            "sandbox" | "sandboxes" | "sb" => Some(Kind::Sandbox),
            _ => None,
        }
    }

    pub fn names() -> String {
        Kind::ALL.map(Kind::as_str).join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! kind_tag {
    ($ty:ident, $lit:literal) => {
        #[doc = concat!("Always `\"", $lit, "\"`.")]
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
        )]
        pub enum $ty {
            #[default]
            #[serde(rename = $lit)]
            Tag,
        }
    };
}
kind_tag!(ServiceKind, "service");
kind_tag!(GatewayKind, "gateway");
kind_tag!(SandboxKind, "sandbox");

/// A microservice in the catalog (admin-owned): how to build and run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub kind: ServiceKind,
    pub name: Name,
    /// Git repository of the service.
    pub repo: RepoUrl,
    /// The agent (VM) that runs this service's containers.
    pub agent: Name,
    /// Build command, run on the agent's host in the checkout (e.g. go build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Argv>,
    /// Runtime image; must already be loaded on the agent's host.
    pub image: ImageRef,
    /// Container command; the checkout is bind-mounted at `mount` (default /src).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Argv>,
    /// Port the service listens on inside the container.
    pub container_port: Port,
    /// Key of this service's base URL in the gateway's URL map (default `<name>_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_key: Option<RouteKey>,
    /// HTTP path checked once the container runs, e.g. /healthz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<UrlPath>,
    /// Environment for every sandbox's container of this service.
    #[serde(default, skip_serializing_if = "EnvVars::is_empty")]
    pub env: EnvVars,
    /// Where the checkout is mounted in the container (default /src).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<ContainerPath>,
}

impl Service {
    pub fn route_key(&self) -> String {
        match &self.route_key {
            Some(k) => k.to_string(),
            None => format!("{}_url", self.name),
        }
    }

    pub fn mount(&self) -> &str {
        self.mount
            .as_ref()
            .map_or(DEFAULT_SERVICE_MOUNT, |m| m.as_str())
    }
}

/// The PHP API gateway (admin-owned): how to run it and where its URL map lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub kind: GatewayKind,
    pub name: Name,
    /// Git repository of the gateway.
    pub repo: RepoUrl,
    /// The agent (VM) that runs the gateway containers.
    pub agent: Name,
    /// Runtime image (PHP + Apache); must already be loaded on the agent's host.
    pub image: ImageRef,
    /// Where the checkout is mounted in the container.
    pub mount: ContainerPath,
    /// Container environment.
    #[serde(default, skip_serializing_if = "EnvVars::is_empty")]
    pub env: EnvVars,
    /// Port the gateway listens on inside the container.
    pub container_port: Port,
    /// Container command, if the image's default is not right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Argv>,
    /// Best-effort preparation on the host in the checkout (e.g. composer install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<Argv>,
    /// The PHP file, relative to the checkout, that holds the service URL map.
    pub config_file: RelativePath,
    /// Run inside the container after the URL map changed (e.g. apache2ctl -k graceful).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<Argv>,
    /// When a routed entry falls back to an environment variable
    /// (`env('EREDAR_URL', '...')`), route by setting that variable in the
    /// container instead of patching the file's fallback (default false:
    /// patch the fallback, and refuse if the container env sets the variable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub routes_via_env: bool,
}

/// A developer's sandbox: which branches run, on which host ports, and what the
/// sandbox's own gateway routes to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    pub kind: SandboxKind,
    pub name: Name,
    /// The sandbox's own gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SandboxGateway>,
    /// Services of the catalog that run from a branch in this sandbox, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<Name, SandboxService>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxGateway {
    /// Gateway record to run; may be left out when the catalog has exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// Gateway branch this sandbox runs.
    pub branch: BranchName,
    /// Host port the gateway is published on.
    pub host_port: Port,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxService {
    /// Branch to build and run.
    pub branch: BranchName,
    /// Host port the container port is published on.
    pub host_port: Port,
    /// Whether the sandbox's gateway sends this service's traffic here (default true).
    #[serde(default = "default_true")]
    pub route: bool,
    /// Extra environment, over the catalog's.
    #[serde(default, skip_serializing_if = "EnvVars::is_empty")]
    pub env: EnvVars,
    /// Pin this commit of the branch (7-40 hex digits) instead of following
    /// the branch head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitId>,
}

fn default_true() -> bool {
    true
}

/// Any record, as stored and exchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    Service(Service),
    Gateway(Gateway),
    Sandbox(Sandbox),
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self {
            Record::Service(_) => Kind::Service,
            Record::Gateway(_) => Kind::Gateway,
            Record::Sandbox(_) => Kind::Sandbox,
        }
    }

    pub fn name(&self) -> &Name {
        match self {
            Record::Service(s) => &s.name,
            Record::Gateway(g) => &g.name,
            Record::Sandbox(s) => &s.name,
        }
    }

    /// `kind/name`, the record's identity.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }

    pub fn to_toml(&self) -> String {
        let out = match self {
            Record::Service(s) => toml::to_string_pretty(s),
            Record::Gateway(g) => toml::to_string_pretty(g),
            Record::Sandbox(s) => toml::to_string_pretty(s),
        };
        out.expect("records always serialize to TOML")
    }

    /// Checks that need the whole record but nothing else: what a single file
    /// can get wrong on its own.
    pub fn check(&self) -> Vec<Issue> {
        match self {
            Record::Sandbox(s) => check_sandbox(s),
            Record::Service(_) | Record::Gateway(_) => Vec::new(),
        }
    }
}

/// A problem with one field of a record, found after it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Path of the field, e.g. `["services", "eredar", "host_port"]`.
    pub path: Vec<String>,
    pub message: String,
    /// Another field the message refers to (its line is added to the message).
    pub related: Option<Vec<String>>,
}

impl Issue {
    pub fn new(path: &[&str], message: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
            related: None,
        }
    }

    pub fn related_to(mut self, path: &[&str]) -> Self {
        self.related = Some(path.iter().map(|s| s.to_string()).collect());
        self
    }
}

fn check_sandbox(s: &Sandbox) -> Vec<Issue> {
    let mut issues = Vec::new();
    if s.gateway.is_none() && s.services.is_empty() {
        issues.push(Issue::new(
            &[],
            "a sandbox needs a [gateway] table, a [services.<name>] table, or both",
        ));
    }
    // Host ports must be distinct inside one sandbox, whatever agent runs what:
    // the common case is one VM, and a clash there is always a mistake.
    let mut seen: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    if let Some(g) = &s.gateway {
        seen.insert(
            g.host_port.get(),
            vec!["gateway".into(), "host_port".into()],
        );
    }
    for (name, svc) in &s.services {
        let path = vec!["services".to_string(), name.to_string(), "host_port".into()];
        if let Some(first) = seen.get(&svc.host_port.get()) {
            let owner = if first[0] == "gateway" {
                "the gateway".to_string()
            } else {
                format!("service `{}`", first[1])
            };
            let first_refs: Vec<&str> = first.iter().map(String::as_str).collect();
            let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
            issues.push(
                Issue::new(
                    &path_refs,
                    format!(
                        "host port {} is already used by {owner} in this sandbox; give each a distinct host_port",
                        svc.host_port
                    ),
                )
                .related_to(&first_refs),
            );
        } else {
            seen.insert(svc.host_port.get(), path);
        }
    }
    issues
}
