//! The Docker engine, through bollard: only what the agent needs, acting by
//! container id and labels, never touching a container SDP does not own.
//!
//! Every call that changes the engine goes through here and is counted, so a
//! test can prove a converged pass changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::retry;

pub const LABEL_MANAGED: &str = "sdp.managed";
pub const LABEL_AGENT: &str = "sdp.agent";
pub const LABEL_SANDBOX: &str = "sdp.sandbox";
pub const LABEL_ROLE: &str = "sdp.role";
pub const LABEL_UNIT: &str = "sdp.unit";
pub const LABEL_SPEC_HASH: &str = "sdp.spec-hash";
pub const LABEL_COMMIT: &str = "sdp.commit";
pub const LABEL_BRANCH: &str = "sdp.branch";
pub const LABEL_IMAGE: &str = "sdp.image";
pub const LABEL_HOST_PORT: &str = "sdp.host-port";
/// Hashes of parts of the spec, so a replacement can say what changed
/// (values, which may be secrets, never go into labels).
pub const LABEL_ENV_HASH: &str = "sdp.env-hash";
pub const LABEL_CMD_HASH: &str = "sdp.cmd-hash";
pub const LABEL_BINDS_HASH: &str = "sdp.binds-hash";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine: {0}")]
    Unreachable(String),
    #[error(
        "image {image} is not loaded on agent {agent}; load it with `docker load` (SDP never pulls)"
    )]
    ImageMissing { image: String, agent: String },
    #[error("host port {port} on {ip} is already in use{holder}")]
    PortTaken {
        ip: String,
        port: u16,
        holder: String,
    },
    #[error("container name {name} is taken by {holder}")]
    NameTaken { name: String, holder: String },
    #[error("{what}: {message}")]
    Call { what: String, message: String },
}

/// Everything that decides a container's configuration. Its hash is stored as
/// a label; a container whose hash differs is replaced.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub binds: Vec<String>,
    pub container_port: u16,
    pub host_ip: String,
    pub host_port: u16,
    pub extra_hosts: Vec<String>,
    /// Labels other than the spec hash itself.
    pub labels: BTreeMap<String, String>,
}

impl ContainerSpec {
    pub fn hash(&self) -> String {
        sdp_spec::wire::content_hash(self)
    }
}

/// A container found by our labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Docker's state word: created, running, exited, ...
    pub state: String,
    /// Docker's status line: "Up 5 minutes", "Restarting (1) 3 seconds ago".
    pub status: String,
}

impl Observed {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.get(k).map(String::as_str)
    }
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

pub struct Engine {
    docker: Docker,
    mutations: AtomicU64,
    calls: AtomicU64,
}

impl Engine {
    /// Connects to the local engine and settles on an API version both speak.
    pub async fn connect() -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| DockerError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(Self {
            docker,
            mutations: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        })
    }

    pub fn raw(&self) -> &Docker {
        &self.docker
    }

    /// Calls that changed something (create, start, stop, remove, exec).
    pub fn mutations(&self) -> u64 {
        self.mutations.load(Ordering::Relaxed)
    }

    /// Every call made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self, mutating: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if mutating {
            self.mutations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The gateway address of Docker's default bridge: on one machine, the
    /// address containers use to reach ports published on the host. Some
    /// engines leave it out of IPAM; then it is the bridge interface's address.
    pub async fn bridge_gateway(&self) -> Result<String, DockerError> {
        self.count(false);
        let what = "finding the address of Docker's bridge";
        let net = self
            .docker
            .inspect_network("bridge", None)
            .await
            .map_err(|e| call_err(what, e))?;
        if let Some(gw) = net
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .into_iter()
            .flatten()
            .find_map(|c| c.gateway.clone())
        {
            return Ok(gw);
        }
        let iface = net
            .options
            .as_ref()
            .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
            .unwrap_or_else(|| "docker0".into());
        interface_ipv4(&iface).ok_or_else(|| DockerError::Call {
            what: what.into(),
            message: format!("the bridge has no gateway in IPAM and interface {iface} has no IPv4 address; pass --advertise and --bind-ip"),
        })
    }

    /// Containers labelled as this agent's, in any state.
    pub async fn list_owned(&self, agent: &str) -> Result<Vec<Observed>, DockerError> {
        self.list(&[
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_AGENT}={agent}"),
        ])
        .await
    }

    async fn list(&self, label_filters: &[String]) -> Result<Vec<Observed>, DockerError> {
        self.count(false);
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), label_filters.to_vec());
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| match e {
                BollardError::DockerResponseServerError { .. } => call_err("listing containers", e),
                other => DockerError::Unreachable(other.to_string()),
            })?;
        Ok(list
            .into_iter()
            .map(|c| Observed {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                status: c.status.unwrap_or_default(),
            })
            .collect())
    }

    pub async fn image_present(&self, image: &str) -> Result<bool, DockerError> {
        self.count(false);
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(call_err(&format!("inspecting image {image}"), e)),
        }
    }

    /// Creates and starts a container. A name held by an SDP container (a
    /// leftover) is cleared first; one held by anything else is an error.
    pub async fn create_and_start(
        &self,
        spec: &ContainerSpec,
        agent: &str,
    ) -> Result<String, DockerError> {
        if !self.image_present(&spec.image).await? {
            return Err(DockerError::ImageMissing {
                image: spec.image.clone(),
                agent: agent.to_string(),
            });
        }
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.insert(LABEL_SPEC_HASH.into(), spec.hash());
        let port_key = format!("{}/tcp", spec.container_port);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.cmd.clone(),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(HostConfig {
                binds: Some(spec.binds.clone()),
                port_bindings: Some(HashMap::from([(
                    port_key,
                    Some(vec![PortBinding {
                        host_ip: Some(spec.host_ip.clone()),
                        host_port: Some(spec.host_port.to_string()),
                    }]),
                )])),
                // Docker's init reaps children and forwards signals, so a
                // process that ignores SIGTERM as PID 1 still stops at once.
                init: Some(true),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                extra_hosts: Some(spec.extra_hosts.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };

        let mut attempt = 0;
        let id = loop {
            attempt += 1;
            self.count(true);
            let opts = CreateContainerOptionsBuilder::new()
                .name(&spec.name)
                .build();
            match self.docker.create_container(Some(opts), body.clone()).await {
                Ok(r) => break r.id,
                Err(BollardError::DockerResponseServerError {
                    status_code: 409,
                    message,
                }) => {
                    let holder = self.inspect_by_name(&spec.name).await?;
                    match holder {
                        Some(h)
                            if h.label(LABEL_MANAGED) == Some("true")
                                && attempt <= retry::CONFLICT_ATTEMPTS =>
                        {
                            // Our own leftover (a crash mid-replace): clear it and retry.
                            self.remove(&h.id).await?;
                        }
                        Some(h) => {
                            return Err(DockerError::NameTaken {
                                name: spec.name.clone(),
                                holder: describe_holder(&h),
                            });
                        }
                        None if attempt <= retry::CONFLICT_ATTEMPTS => {
                            tokio::time::sleep(retry::conflict_delay(attempt)).await;
                        }
                        None => {
                            return Err(DockerError::Call {
                                what: format!("creating {}", spec.name),
                                message,
                            });
                        }
                    }
                }
                Err(e) => return Err(call_err(&format!("creating {}", spec.name), e)),
            }
        };

        self.count(true);
        if let Err(e) = self.docker.start_container(&id, None).await {
            let message = e.to_string();
            // Leave nothing half-made behind.
            let _ = self.remove(&id).await;
            if message.contains("port is already allocated")
                || message.contains("address already in use")
            {
                return Err(DockerError::PortTaken {
                    ip: spec.host_ip.clone(),
                    port: spec.host_port,
                    holder: self.port_holder(spec.host_port).await,
                });
            }
            return Err(call_err(&format!("starting {}", spec.name), e));
        }
        Ok(id)
    }

    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.count(true);
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| call_err(&format!("starting container {}", short(id)), e))
    }

    /// Stops, removes, and waits until the container is really gone (so its
    /// name and port are free). Idempotent: a missing container is success.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        self.count(true);
        let stop = StopContainerOptionsBuilder::new()
            .t(retry::STOP_GRACE_SECS)
            .build();
        match self.docker.stop_container(id, Some(stop)).await {
            Ok(()) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => {} // being removed
            Err(e) => return Err(call_err(&format!("stopping container {}", short(id)), e)),
        }
        for attempt in 1..=retry::REMOVE_ATTEMPTS {
            self.count(true);
            let opts = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            match self.docker.remove_container(id, Some(opts)).await {
                Ok(())
                | Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                // "removal already in progress": wait for it below.
                Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                }) => {}
                Err(e) => return Err(call_err(&format!("removing container {}", short(id)), e)),
            }
            self.count(false);
            match self
                .docker
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
            {
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(()),
                _ => tokio::time::sleep(retry::conflict_delay(attempt)).await,
            }
        }
        Err(DockerError::Call {
            what: format!("removing container {}", short(id)),
            message: "it is still there after repeated attempts".into(),
        })
    }

    /// Restarts a container (its configuration unchanged).
    pub async fn restart(&self, id: &str) -> Result<(), DockerError> {
        self.count(true);
        let opts = RestartContainerOptionsBuilder::new()
            .t(retry::STOP_GRACE_SECS)
            .build();
        self.docker
            .restart_container(id, Some(opts))
            .await
            .map_err(|e| call_err(&format!("restarting container {}", short(id)), e))
    }

    /// Runs `cmd` in a throwaway container of `image` and returns its exit
    /// code and output. The container carries `labels`, so a crash mid-run
    /// leaves nothing the agent would not find and remove.
    pub async fn run_once(
        &self,
        image: &str,
        cmd: &[String],
        binds: &[String],
        labels: &BTreeMap<String, String>,
    ) -> Result<(i64, String), DockerError> {
        let what = format!("running `{}` in a container of {image}", cmd.join(" "));
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(cmd.to_vec()),
            labels: Some(labels.clone().into_iter().collect()),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                binds: Some(binds.to_vec()),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.count(true);
        let id = self
            .docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .map_err(|e| call_err(&what, e))?
            .id;
        let result = async {
            self.count(true);
            self.docker
                .start_container(&id, None)
                .await
                .map_err(|e| call_err(&what, e))?;
            self.count(false);
            let mut wait = Box::pin(self.docker.wait_container(&id, None));
            let code = match wait.next().await {
                Some(Ok(r)) => r.status_code,
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => code,
                Some(Err(e)) => return Err(call_err(&what, e)),
                None => -1,
            };
            self.count(false);
            let opts = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
            let mut logs = Box::pin(self.docker.logs(&id, Some(opts)));
            let mut output = String::new();
            while let Some(chunk) = logs.next().await {
                match chunk {
                    Ok(c) => output.push_str(&String::from_utf8_lossy(&c.into_bytes())),
                    Err(e) => return Err(call_err(&what, e)),
                }
            }
            Ok((code, output))
        }
        .await;
        self.remove(&id).await?;
        result
    }

    /// Runs a command in a container; returns its exit code and output.
    pub async fn exec(&self, id: &str, cmd: &[String]) -> Result<(i64, String), DockerError> {
        self.count(true);
        let what = format!("running `{}` in container {}", cmd.join(" "), short(id));
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| call_err(&what, e))?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| call_err(&what, e))?
        {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => output.push_str(&String::from_utf8_lossy(&c.into_bytes())),
                    Err(e) => return Err(call_err(&what, e)),
                }
            }
        }
        let info = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| call_err(&what, e))?;
        Ok((info.exit_code.unwrap_or(-1), output))
    }

    async fn inspect_by_name(&self, name: &str) -> Result<Option<Observed>, DockerError> {
        self.count(false);
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(Observed {
                id: c.id.unwrap_or_default(),
                name: c
                    .name
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: c
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                state: c
                    .state
                    .and_then(|s| s.status)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                status: String::new(),
            })),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(call_err(&format!("inspecting {name}"), e)),
        }
    }

    /// How often Docker restarted a container.
    pub async fn restart_count(&self, id: &str) -> Option<i64> {
        self.count(false);
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .ok()?
            .restart_count
    }

    /// Names the container publishing `port`, if Docker knows one.
    async fn port_holder(&self, port: u16) -> String {
        self.count(false);
        let Ok(list) = self.docker.list_containers(None).await else {
            return String::new();
        };
        list.into_iter()
            .find(|c| {
                c.ports
                    .iter()
                    .flatten()
                    .any(|p| p.public_port == Some(port))
            })
            .map(|c| {
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default();
                let owner = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_SANDBOX))
                    .map(|s| format!(", sandbox {s}"))
                    .unwrap_or_else(|| ", not managed by SDP".into());
                format!(" by container {}{owner}", name.trim_start_matches('/'))
            })
            .unwrap_or_else(|| " by a process outside Docker".into())
    }
}

fn describe_holder(h: &Observed) -> String {
    match (
        h.label(LABEL_MANAGED),
        h.label(LABEL_SANDBOX),
        h.label(LABEL_UNIT),
    ) {
        (Some("true"), Some(sb), Some(unit)) => format!(
            "SDP's container for sandbox {sb}, {unit} ({})",
            short(&h.id)
        ),
        _ => format!(
            "container {} ({}), which SDP does not manage; rename or remove it",
            h.name,
            short(&h.id)
        ),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn call_err(what: &str, e: BollardError) -> DockerError {
    let message = match e {
        BollardError::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    };
    DockerError::Call {
        what: what.to_string(),
        message,
    }
}

/// The first IPv4 address of a network interface.
fn interface_ipv4(name: &str) -> Option<String> {
    // SAFETY: getifaddrs gives a list we only read and then free with
    // freeifaddrs; each ifa_addr is checked for null and for AF_INET before
    // it is read as a sockaddr_in.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            let ifname = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if ifname == name
                && !ifa.ifa_addr.is_null()
                && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found =
                    Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string());
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_an_ipv4_address() {
        assert_eq!(super::interface_ipv4("lo").as_deref(), Some("127.0.0.1"));
        assert_eq!(super::interface_ipv4("no-such-interface-sdp"), None);
    }
}
