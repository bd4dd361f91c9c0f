//! Dev mode: a controller and local agents in one process, on loopback, with
//! an embedded data directory — for trying SDP on one machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::docker::Engine;

pub struct DevOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// One local agent per name; records say which agent runs what.
    pub agents: Vec<String>,
}

/// Runs until `shutdown` flips to true; returns once everything stopped.
pub async fn run(opts: DevOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let engine = Arc::new(
        Engine::connect()
            .await
            .context("dev mode needs the Docker engine")?,
    );
    // On one machine, containers reach published ports through the bridge.
    let address = engine.bridge_gateway().await?;
    let config = sdp_controller::Config {
        listen: opts.listen,
        data_dir: opts.data_dir.join("controller"),
        settings: Default::default(),
    };
    let bound = sdp_controller::bind(&config).await?;
    let url = format!("http://{}", bound.local_addr());
    tracing::info!(controller = %url, agents = ?opts.agents, address = %address, "dev mode");
    eprintln!(
        "sdp dev: controller on {url}; agents {} publishing on {address}",
        opts.agents.join(", ")
    );
    let mut ctl_shutdown = shutdown.clone();
    let controller = tokio::spawn(bound.serve(async move {
        let _ = ctl_shutdown.wait_for(|s| *s).await;
    }));
    let mut agents = Vec::new();
    for name in &opts.agents {
        let cfg = AgentConfig::new(
            name,
            &url,
            opts.data_dir.join("agents").join(name),
            &address,
        );
        agents.push(tokio::spawn(crate::run::run(
            cfg,
            engine.clone(),
            shutdown.clone(),
        )));
    }
    for a in agents {
        a.await??;
    }
    controller.await??;
    Ok(())
}
