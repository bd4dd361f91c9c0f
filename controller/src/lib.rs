//! The SDP controller: validates and stores desired state (records) in redb,
//! serves each agent its resolved work by long-poll, and keeps what agents
//! report to derive every sandbox's status.
//!
//! Code map: `store` (redb) → `state` (in-memory snapshot, the only writer) →
//! `api` (axum routes). Pure logic: `catalog` (cross-record checks), `resolve`
//! (records → agent work), `diff` (what an apply would change, per agent),
//! `status` (reports → sandbox status).

pub mod api;
pub mod catalog;
pub mod diff;
pub mod error;
pub mod resolve;
pub mod runtime;
pub mod state;
pub mod status;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use api::app;
pub use state::{AppState, Controller, Settings};

/// Default listen address: loopback only; put a proxy in front to expose it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3452";

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub settings: Settings,
}

/// A bound, not yet serving controller; `local_addr` is known (port 0 works).
pub struct Bound {
    pub state: AppState,
    pub listener: tokio::net::TcpListener,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops taking requests, ends
    /// open long-polls and waits for in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        axum::serve(self.listener, app(self.state))
            .with_graceful_shutdown(async move {
                shutdown.await;
                state.begin_shutdown();
            })
            .await
    }
}

pub async fn bind(config: &Config) -> anyhow::Result<Bound> {
    use anyhow::Context;
    let state = Controller::open(&config.data_dir, config.settings.clone())
        .await
        .with_context(|| format!("opening data dir {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    Ok(Bound { state, listener })
}
