//! Harness for SDP's end-to-end tests: real git repositories (from the
//! bundled example), a real Go build, real containers on this machine's
//! Docker engine, a real PHP gateway under Apache, and a controller and
//! agents talking real HTTP.
//!
//! Each test is a `World` with its own name: its agents, sandboxes and
//! containers carry that name, so tests run side by side and a test clears
//! its own leftovers from an earlier (crashed) run when it starts.
//! Traffic goes only to loopback and to the test's own containers through
//! Docker's bridge address on this machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::query_parameters::ListContainersOptionsBuilder;
use sdp_agent::config::AgentConfig;
use sdp_agent::docker::{ContainerSpec, Engine, LABEL_AGENT, LABEL_MANAGED};
use sdp_spec::wire::{
    ApplyRequest, ApplyResponse, Assignments, ErrorBody, SandboxStatus, SourceDocument,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const RUNTIME_IMAGE: &str = "sdp/runtime:busybox";
pub const GATEWAY_IMAGE: &str = "sdp/php-apache:bookworm";
/// The gateway image with OPcache revalidating only every 60 s.
pub const STRICT_GATEWAY_IMAGE: &str = "sdp/php-apache:opcache-strict";
/// Set to 1 to skip tests that need Docker (they say so; they never pass silently).
pub const SKIP_ENV: &str = "SDP_SKIP_DOCKER_TESTS";
/// Label on containers a test makes itself (the OCP stand-in).
pub const LABEL_E2E: &str = "sdp.e2e";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs git in `dir` (as the test's own committer); its trimmed output.
pub fn git(args: &[&str], dir: &Path) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@sdp.invalid",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `sdp-agent` binary of this build (built if missing).
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("sdp-agent");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "sdp-agent", "--bin", "sdp-agent"])
            .current_dir(repo_root())
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building sdp-agent failed");
    }
    assert!(bin.exists(), "no sdp-agent binary at {}", bin.display());
    bin
}

/// The Docker engine, or `None` when the runner asked to skip Docker tests.
/// Without Docker and without that request, the test fails and says why.
pub async fn engine_or_skip(test: &str) -> Option<Arc<Engine>> {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {SKIP_ENV}=1 (this test needs the Docker engine)");
        return None;
    }
    let engine = match Engine::connect().await {
        Ok(e) => e,
        Err(e) => panic!(
            "{test} needs the Docker engine and cannot reach it ({e}). Start Docker, or set {SKIP_ENV}=1 to skip Docker tests explicitly."
        ),
    };
    for image in [RUNTIME_IMAGE, GATEWAY_IMAGE, STRICT_GATEWAY_IMAGE] {
        assert!(
            engine
                .image_present(image)
                .await
                .expect("inspecting images"),
            "{test} needs image {image}: build it with `bash examples/images/build.sh` (or run .ci/run)"
        );
    }
    Some(Arc::new(engine))
}

pub struct Running {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Host ports one test uses on the bridge address: OCP stand-in, then its sandboxes.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub base: u16,
}

impl Ports {
    pub fn ocp(self) -> u16 {
        self.base
    }
    pub fn nth(self, n: u16) -> u16 {
        self.base + 1 + n
    }
}

pub struct World {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub git_dir: PathBuf,
    pub address: String,
    pub ports: Ports,
    pub engine: Arc<Engine>,
    pub controller_url: String,
    controller: Option<Running>,
    agents: Vec<(String, Running)>,
    http: reqwest::Client,
}

impl World {
    /// Sets up repositories, the OCP stand-in and a controller; `None` when
    /// Docker tests are skipped on request.
    pub async fn new(name: &str, ports: Ports) -> Option<World> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        let engine = engine_or_skip(name).await?;
        let address = engine.bridge_gateway().await.expect("bridge address");
        let dir = tempfile::Builder::new()
            .prefix(&format!("sdp-e2e-{name}-"))
            .tempdir()
            .unwrap();
        let git_dir = dir.path().join("git");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut world = World {
            name: name.to_string(),
            git_dir,
            address,
            ports,
            engine,
            controller_url: String::new(),
            controller: None,
            agents: Vec::new(),
            http,
            dir,
        };
        world.clear_leftovers().await;
        world.make_repos().await;
        world.start_ocp().await;
        world.start_controller().await;
        Some(world)
    }

    pub fn agent_name(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    pub fn sandbox_name(&self, short: &str) -> String {
        format!("{}-{short}", self.name)
    }

    pub fn ocp_url(&self) -> String {
        format!("http://{}:{}/", self.address, self.ports.ocp())
    }

    /// Removes containers an earlier run of this test left behind.
    pub async fn clear_leftovers(&self) {
        let opts = ListContainersOptionsBuilder::new().all(true).build();
        let all = self
            .engine
            .raw()
            .list_containers(Some(opts))
            .await
            .expect("listing containers");
        let prefix = format!("{}-", self.name);
        for c in all {
            let labels = c.labels.unwrap_or_default();
            let ours = labels.get(LABEL_E2E).is_some_and(|v| v == &self.name)
                || (labels.get(LABEL_MANAGED).is_some_and(|v| v == "true")
                    && labels
                        .get(LABEL_AGENT)
                        .is_some_and(|a| a.starts_with(&prefix)));
            if ours && let Some(id) = c.id {
                self.engine
                    .remove(&id)
                    .await
                    .expect("removing a leftover container");
            }
        }
    }

    async fn make_repos(&self) {
        let script = repo_root().join("examples/make-repos.sh");
        let ocp = format!("{}:{}", self.address, self.ports.ocp());
        let out = tokio::process::Command::new("bash")
            .arg(&script)
            .arg(&self.git_dir)
            .arg(&ocp)
            .output()
            .await
            .expect("running make-repos.sh");
        assert!(
            out.status.success(),
            "make-repos.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The OCP stand-in: the example service built from main, answering as
    /// `ocp-baseline` for every path.
    async fn start_ocp(&self) {
        let bin_dir = self.dir.path().join("ocp");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let out = tokio::process::Command::new("go")
            .args(["build", "-o"])
            .arg(bin_dir.join("service"))
            .arg(".")
            .current_dir(repo_root().join("examples/service"))
            .env("CGO_ENABLED", "0")
            .output()
            .await
            .expect("running `go build` (install golang-go)");
        assert!(
            out.status.success(),
            "go build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let spec = ContainerSpec {
            name: format!("sdp-e2e-{}-ocp", self.name),
            image: RUNTIME_IMAGE.into(),
            cmd: Some(vec!["/app/service".into()]),
            env: vec!["SERVICE_NAME=ocp-baseline".into(), "BRANCH=main".into()],
            binds: vec![format!("{}:/app:ro", bin_dir.display())],
            container_port: 8080,
            host_ip: self.address.clone(),
            host_port: self.ports.ocp(),
            extra_hosts: vec![],
            labels: [(LABEL_E2E.to_string(), self.name.clone())].into(),
        };
        self.engine
            .create_and_start(&spec, "e2e")
            .await
            .expect("starting the OCP stand-in");
        self.wait_http(self.ports.ocp(), "/healthz", Duration::from_secs(20))
            .await;
    }

    async fn start_controller(&mut self) {
        self.start_controller_at("127.0.0.1:0".parse().unwrap(), Default::default())
            .await;
    }

    async fn start_controller_at(
        &mut self,
        listen: std::net::SocketAddr,
        settings: sdp_controller::Settings,
    ) {
        let config = sdp_controller::Config {
            listen,
            data_dir: self.dir.path().join("controller"),
            settings,
        };
        let bound = sdp_controller::bind(&config)
            .await
            .expect("controller binds");
        self.controller_url = format!("http://{}", bound.local_addr());
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            bound
                .serve(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
                .expect("controller serves");
        });
        self.controller = Some(Running { shutdown: tx, task });
    }

    pub async fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            let _ = c.shutdown.send(true);
            let _ = c.task.await;
        }
    }

    /// The configuration an agent of this world runs with.
    pub fn agent_config(&self, role: &str) -> AgentConfig {
        let name = self.agent_name(role);
        AgentConfig::new(
            &name,
            &self.controller_url,
            self.dir.path().join("agents").join(&name),
            &self.address,
        )
    }

    pub fn spawn_agent(&mut self, role: &str) {
        self.spawn_agent_with(role, self.agent_config(role));
    }

    /// An agent that looks at its work, and asks remotes for branch heads,
    /// every `period` (drift is found sooner).
    pub fn spawn_watchful_agent(&mut self, role: &str, period: Duration) {
        let mut cfg = self.agent_config(role);
        cfg.poll_wait = period;
        cfg.branch_check = period;
        self.spawn_agent_with(role, cfg);
    }

    /// What the controller knows of an agent, with what it cleaned up.
    pub async fn agent_view(&self, role: &str) -> sdp_spec::wire::AgentView {
        self.http
            .get(format!(
                "{}/v1/agents/{}",
                self.controller_url,
                self.agent_name(role)
            ))
            .send()
            .await
            .expect("agent request")
            .json()
            .await
            .expect("agent body")
    }

    /// Pushes a new commit to a branch of a service repository (the greeting changes).
    pub fn push_service_commit(&self, repo: &str, branch: &str, greeting: &str) -> String {
        let work = self
            .dir
            .path()
            .join(format!("push-{repo}-{}", greeting.len()));
        let url = self.git_dir.join(format!("{repo}.git"));
        git(
            &[
                "clone",
                "-q",
                "-b",
                branch,
                url.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
            self.dir.path(),
        );
        let main_go = work.join("main.go");
        let text = std::fs::read_to_string(&main_go).unwrap();
        let start =
            text.find("var greeting = \"").expect("greeting line") + "var greeting = \"".len();
        let end = start + text[start..].find('"').unwrap();
        std::fs::write(
            &main_go,
            format!("{}{greeting}{}", &text[..start], &text[end..]),
        )
        .unwrap();
        git(&["commit", "-q", "-am", greeting], &work);
        git(&["push", "-q", "origin", branch], &work);
        git(&["rev-parse", "HEAD"], &work)
    }

    /// Starts the controller again on the address it had, over the same data.
    pub async fn restart_controller(&mut self) {
        self.stop_controller().await;
        let addr: std::net::SocketAddr = self
            .controller_url
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        self.start_controller_at(addr, Default::default()).await;
    }

    /// A second controller over the same data on another port, which agents
    /// do not know: shows what the controller thinks without them.
    pub async fn controller_view(&self, settings: sdp_controller::Settings) -> (String, Running) {
        let config = sdp_controller::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: self.dir.path().join("controller"),
            settings,
        };
        let bound = sdp_controller::bind(&config)
            .await
            .expect("controller binds");
        let url = format!("http://{}", bound.local_addr());
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            bound
                .serve(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
                .expect("controller serves");
        });
        (url, Running { shutdown: tx, task })
    }

    fn spawn_agent_with(&mut self, role: &str, cfg: AgentConfig) {
        let engine = self.engine.clone();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            sdp_agent::run::run(cfg, engine, rx)
                .await
                .expect("agent runs");
        });
        self.agents
            .push((role.to_string(), Running { shutdown: tx, task }));
    }

    /// Stops every agent (each finishes its pass in flight).
    pub async fn stop_agents(&mut self) {
        for (_, a) in self.agents.drain(..) {
            let _ = a.shutdown.send(true);
            let _ = a.task.await;
        }
    }

    /// The example catalog, pointed at this world's repositories and agents.
    pub fn catalog(&self) -> Vec<SourceDocument> {
        let dir = repo_root().join("examples/specs/catalog");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| SourceDocument {
                file: p.file_name().unwrap().to_string_lossy().into_owned(),
                content: self.localize(&std::fs::read_to_string(&p).unwrap()),
            })
            .collect()
    }

    /// Pushes `branch` to the gateway repository: main with its config file
    /// passed through `edit`.
    pub fn push_gateway_branch(&self, branch: &str, edit: impl FnOnce(String) -> String) {
        let work = self
            .dir
            .path()
            .join(format!("push-{}", branch.replace('/', "-")));
        let repo = self.git_dir.join("erangel.git");
        git(
            &[
                "clone",
                "-q",
                "-b",
                "main",
                repo.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
            self.dir.path(),
        );
        git(&["checkout", "-q", "-b", branch], &work);
        let config = work.join("application/config/config.php");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, edit(text)).unwrap();
        git(
            &["commit", "-q", "-am", &format!("{branch}: config change")],
            &work,
        );
        git(&["push", "-q", "origin", branch], &work);
    }

    /// Where an agent keeps a sandbox unit's checkout.
    pub fn checkout(&self, role: &str, sandbox: &str, unit_dir: &str) -> PathBuf {
        self.work_dir(role)
            .join("sandboxes")
            .join(sandbox)
            .join(unit_dir)
    }

    /// Rewrites the example's repository paths and agent names for this world.
    pub fn localize(&self, text: &str) -> String {
        text.replace(
            "file:///tmp/sdp-demo/git/",
            &format!("file://{}/", self.git_dir.display()),
        )
        .replace(
            "agent = \"micro\"",
            &format!("agent = \"{}\"", self.agent_name("micro")),
        )
        .replace(
            "agent = \"gateway\"",
            &format!("agent = \"{}\"", self.agent_name("gw")),
        )
    }

    /// The example sandbox, renamed for this world, with ports and the
    /// eredar branch and route chosen by the test.
    pub fn sandbox_doc(
        &self,
        short: &str,
        eredar_branch: &str,
        route: bool,
        svc_port: u16,
        gw_port: u16,
    ) -> SourceDocument {
        let text = std::fs::read_to_string(
            repo_root().join("examples/specs/sandboxes/alice-checkout.toml"),
        )
        .unwrap();
        let text = text
            .replace(
                "name = \"alice-checkout\"",
                &format!("name = \"{}\"", self.sandbox_name(short)),
            )
            .replace(
                "branch = \"feature/PAY-123\"",
                &format!("branch = \"{eredar_branch}\""),
            )
            .replace("route = true", &format!("route = {route}"))
            .replace("host_port = 9001", &format!("host_port = {svc_port}"))
            .replace("host_port = 8101", &format!("host_port = {gw_port}"));
        SourceDocument {
            file: format!("{short}.toml"),
            content: text,
        }
    }

    pub async fn apply(&self, documents: Vec<SourceDocument>) -> anyhow::Result<ApplyResponse> {
        let resp = self
            .http
            .post(format!("{}/v1/apply", self.controller_url))
            .json(&ApplyRequest {
                documents,
                dry_run: false,
                applied_by: Some("e2e".into()),
            })
            .send()
            .await?;
        if !resp.status().is_success() {
            let body: ErrorBody = resp.json().await?;
            bail!("{}", body.error);
        }
        Ok(resp.json().await?)
    }

    pub async fn delete(&self, kind: &str, name: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .delete(format!("{}/v1/records/{kind}/{name}", self.controller_url))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("delete answered {}", resp.status());
        }
        Ok(())
    }

    /// The sandbox's status, or `None` once the controller no longer knows it.
    pub async fn status_opt(&self, sandbox: &str) -> Option<SandboxStatus> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/sandboxes/{sandbox}/status",
                self.controller_url
            ))
            .send()
            .await
            .expect("status request");
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        Some(resp.json().await.expect("status body"))
    }

    pub async fn status(&self, sandbox: &str) -> SandboxStatus {
        self.http
            .get(format!(
                "{}/v1/sandboxes/{sandbox}/status",
                self.controller_url
            ))
            .send()
            .await
            .expect("status request")
            .json()
            .await
            .expect("status body")
    }

    /// The assignments the controller gives an agent right now.
    pub async fn assignments(&self, role: &str) -> Assignments {
        self.http
            .get(format!(
                "{}/v1/agents/{}/assignments",
                self.controller_url,
                self.agent_name(role)
            ))
            .query(&[("advertise", self.address.as_str())])
            .send()
            .await
            .expect("assignments request")
            .json()
            .await
            .expect("assignments body")
    }

    /// Polls the sandbox's status until `pred` holds; fails after `within`
    /// with the last status seen.
    pub async fn wait_until(
        &self,
        sandbox: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&SandboxStatus) -> bool,
    ) -> SandboxStatus {
        let start = Instant::now();
        loop {
            let st = self.status(sandbox).await;
            if pred(&st) {
                return st;
            }
            if start.elapsed() > within {
                panic!("{sandbox} did not become {what} within {within:?}; last status: {st:#?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// GET on this machine's bridge address; JSON body.
    pub async fn get_json(&self, port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("http://{}:{port}{path}", self.address);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("GET {url} answered {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON: {text}"))
    }

    /// GETs until the JSON answer satisfies `pred`; fails after `within`
    /// with the last answer.
    pub async fn get_json_until(
        &self,
        port: u16,
        path: &str,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let answer = self.get_json(port, path).await;
            if let Ok(a) = &answer
                && pred(a)
            {
                return a.clone();
            }
            assert!(
                start.elapsed() < within,
                "GET {path} on port {port} did not give the expected answer within {within:?}; last: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until a GET on the bridge address succeeds.
    pub async fn wait_http(&self, port: u16, path: &str, within: Duration) {
        let start = Instant::now();
        let url = format!("http://{}:{port}{path}", self.address);
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{url} did not answer within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Names of this world's SDP containers (all states).
    pub async fn sdp_containers(&self) -> Vec<String> {
        let opts = ListContainersOptionsBuilder::new().all(true).build();
        let all = self
            .engine
            .raw()
            .list_containers(Some(opts))
            .await
            .expect("listing containers");
        let prefix = format!("{}-", self.name);
        let mut names: Vec<String> = all
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_AGENT))
                    .is_some_and(|a| a.starts_with(&prefix))
            })
            .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
            .map(|n| n.trim_start_matches('/').to_string())
            .collect();
        names.sort();
        names
    }

    /// The agent's work directory for a role.
    pub fn work_dir(&self, role: &str) -> PathBuf {
        self.agent_config(role).work_dir
    }

    /// Stops everything and removes what the test made.
    pub async fn finish(mut self) {
        self.stop_agents().await;
        self.stop_controller().await;
        self.clear_leftovers().await;
    }
}
