//! The agent's loop: long-poll the controller for work, converge, report.
//!
//! Invariants:
//! - When the controller is unreachable the agent keeps converging the last
//!   work it received (saved on disk, so a restart does too) and retries with
//!   backoff and jitter.
//! - On shutdown it stops taking work, finishes the pass in flight, and exits.

use std::sync::Arc;
use std::time::Duration;

use sdp_spec::wire::Assignments;
use tokio::sync::watch;

use crate::client::Client;
use crate::config::AgentConfig;
use crate::docker::Engine;
use crate::layout;
use crate::reconcile::Reconciler;
use crate::retry::Backoff;

pub async fn run(
    cfg: AgentConfig,
    engine: Arc<Engine>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.work_dir)?;
    let client = Client::new(&cfg);
    let mut reconciler = Reconciler::new(cfg.clone(), engine);
    let mut work: Option<Assignments> = load_saved(&cfg);
    let mut backoff = Backoff::controller();
    let mut wait = Duration::ZERO;
    tracing::info!(agent = %cfg.name, controller = %cfg.controller, advertise = %cfg.advertise, bind_ip = %cfg.bind_ip, "agent started");
    loop {
        let etag = work.as_ref().map(|w| w.etag.clone());
        let polled = tokio::select! {
            r = client.poll(etag.as_deref(), wait) => r,
            _ = shutdown.changed() => break,
        };
        match polled {
            Ok(new) => {
                if backoff.failures() > 0 {
                    tracing::info!("controller reachable again");
                }
                backoff.reset();
                if work.as_ref().map(|w| &w.etag) != Some(&new.etag) {
                    save(&cfg, &new);
                }
                work = Some(new);
            }
            Err(e) => {
                let delay = backoff.fail();
                tracing::warn!(error = %e, retry_in = ?delay, keeping = work.is_some(), "cannot get work from the controller");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
        let Some(current) = &work else { continue };
        // A pass is never cut short by shutdown: it finishes what it started.
        let outcome = reconciler.pass(current, Some(&client)).await;
        if let Err(e) = client.report(&outcome.report).await {
            tracing::debug!(error = %e, "report not delivered");
        }
        wait = outcome.requeue.unwrap_or(cfg.poll_wait).min(cfg.poll_wait);
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::info!(agent = %cfg.name, "agent stopped");
    Ok(())
}

fn load_saved(cfg: &AgentConfig) -> Option<Assignments> {
    let bytes = std::fs::read(layout::assignments_file(&cfg.work_dir)).ok()?;
    match serde_json::from_slice::<Assignments>(&bytes) {
        Ok(a) if a.agent == cfg.name => Some(a),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable saved assignments");
            None
        }
    }
}

fn save(cfg: &AgentConfig, work: &Assignments) {
    let bytes = serde_json::to_vec(work).expect("assignments serialize");
    if let Err(e) = layout::write_atomic(&layout::assignments_file(&cfg.work_dir), &bytes) {
        tracing::warn!(error = %e, "cannot save assignments");
    }
}
