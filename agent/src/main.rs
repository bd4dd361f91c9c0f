use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sdp_agent::config::AgentConfig;
use sdp_agent::docker::Engine;
use sdp_agent::git::Credentials;

/// SDP agent: runs this VM's part of every sandbox.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(clap::Args, Debug)]
struct AgentArgs {
    /// This agent's name, as records name it (agent = "...").
    #[arg(long, env = "SDP_AGENT_NAME")]
    name: Option<String>,
    /// Controller base URL.
    #[arg(long, env = "SDP_CONTROLLER", default_value = "http://127.0.0.1:3452")]
    controller: String,
    /// Address others use to reach ports published here; `auto` = Docker's bridge gateway.
    #[arg(long, env = "SDP_ADVERTISE", default_value = "auto")]
    advertise: String,
    /// Host IP that published ports bind to; `auto` = the advertised address.
    #[arg(long, env = "SDP_BIND_IP", default_value = "auto")]
    bind_ip: String,
    /// Directory for git caches and checkouts.
    #[arg(long, env = "SDP_WORK_DIR", default_value = "/var/lib/sdp-agent")]
    work_dir: PathBuf,
    /// How often to ask remotes for branch heads (e.g. 60s).
    #[arg(long, env = "SDP_BRANCH_CHECK", default_value = "60s", value_parser = duration)]
    branch_check: Duration,
    /// Username for HTTPS git remotes; the password comes from SDP_GIT_PASSWORD.
    #[arg(long, env = "SDP_GIT_USERNAME")]
    git_username: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "SDP_LOG_JSON", global = true)]
    log_json: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Run a controller and local agents together on loopback (for trying SDP).
    Dev {
        /// Data directory for the controller and the agents.
        #[arg(long, default_value = ".sdp-dev")]
        data_dir: PathBuf,
        /// Controller address.
        #[arg(long, default_value = sdp_controller::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Local agent names (repeat or comma-separate).
        #[arg(long = "agent", value_delimiter = ',', default_value = "local")]
        agents: Vec<String>,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    sdp_spec::types::parse_duration(s)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = match sdp_controller::runtime::parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    sdp_controller::runtime::init_logging(args.agent.log_json);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        sdp_controller::runtime::shutdown_signal().await;
        let _ = tx.send(true);
    });
    let result = match args.mode {
        Some(Mode::Dev {
            data_dir,
            listen,
            agents,
        }) => {
            if let Some(bad) = agents
                .iter()
                .find(|a| sdp_spec::types::check_name(a).is_err())
            {
                eprintln!(
                    "sdp-agent: agent name `{bad}` is not valid: lowercase letters, digits and '-'"
                );
                return ExitCode::from(64);
            }
            sdp_agent::dev::run(
                sdp_agent::dev::DevOptions {
                    data_dir,
                    listen,
                    agents,
                },
                rx,
            )
            .await
        }
        None => match agent_config(args.agent) {
            Ok(cfg) => run_agent(cfg, rx).await,
            Err(e) => {
                eprintln!("sdp-agent: {e:#}");
                return ExitCode::from(64);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sdp-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What can be checked without Docker; `auto` addresses are resolved later.
fn agent_config(a: AgentArgs) -> anyhow::Result<AgentConfig> {
    let name = a.name.context("--name (or SDP_AGENT_NAME) is required")?;
    sdp_spec::types::check_name(&name).map_err(|m| anyhow::anyhow!("--name: {m}"))?;
    if !a.controller.starts_with("http://") && !a.controller.starts_with("https://") {
        anyhow::bail!(
            "--controller must be an http:// or https:// URL, got `{}`",
            a.controller
        );
    }
    for (flag, value) in [("--advertise", &a.advertise), ("--bind-ip", &a.bind_ip)] {
        if value != "auto" {
            sdp_spec::types::check_host(value).map_err(|m| anyhow::anyhow!("{flag}: {m}"))?;
        }
    }
    let mut cfg = AgentConfig::new(&name, &a.controller, a.work_dir, &a.advertise);
    cfg.bind_ip = a.bind_ip;
    cfg.branch_check = a.branch_check;
    cfg.git_credentials = match a.git_username {
        Some(username) => Some(Credentials {
            username,
            password: std::env::var("SDP_GIT_PASSWORD")
                .context("--git-username needs SDP_GIT_PASSWORD")?,
        }),
        None => None,
    };
    Ok(cfg)
}

async fn run_agent(
    mut cfg: AgentConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let engine = Arc::new(Engine::connect().await?);
    if cfg.advertise == "auto" {
        cfg.advertise = engine.bridge_gateway().await?;
    }
    if cfg.bind_ip == "auto" {
        cfg.bind_ip = cfg.advertise.clone();
    }
    sdp_agent::run::run(cfg, engine, shutdown).await
}
