//! Checking that what runs does its job: service health checks, and the
//! gateway serving exactly the URL map SDP wrote (through its probe), with a
//! reload and then a restart as fallbacks.

use std::collections::BTreeMap;
use std::time::Instant;

use sdp_spec::wire::{DriftEvent, now_ms};

use super::desire::{GatewayCtx, Unit};
use super::{Failure, Reconciler};
use crate::docker::LABEL_SPEC_HASH;
use crate::gateway::{self, mismatches};
use crate::retry;

type Served = BTreeMap<String, Option<String>>;

enum Probe {
    Matches(Served),
    /// What it serves, and `(key, expected, served)` for every wrong key.
    Mismatch(Served, Vec<(String, String, Option<String>)>),
    Unreachable(String),
}

impl Reconciler {
    pub(super) async fn check_health(&self, units: &mut [Unit]) {
        for u in units.iter_mut() {
            let Some(path) = &u.health else { continue };
            let running = u.observed.containers.iter().any(|c| c.running());
            if !running || u.error.is_some() {
                continue;
            }
            let host = if self.cfg.bind_ip == "0.0.0.0" {
                "127.0.0.1"
            } else {
                self.cfg.bind_ip.as_str()
            };
            let url = format!("http://{host}:{}{path}", u.host_port);
            u.healthy =
                Some(matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success()));
        }
    }

    async fn probe_until(
        &self,
        ctx: &GatewayCtx,
        fresh: bool,
        bound: std::time::Duration,
    ) -> Probe {
        let start = Instant::now();
        loop {
            let result = match gateway::probe(&self.http, &ctx.probe_url, fresh).await {
                Ok(served) => {
                    let wrong = mismatches(&ctx.plan, &served);
                    if wrong.is_empty() {
                        return Probe::Matches(served);
                    }
                    Probe::Mismatch(served, wrong)
                }
                Err(e) => Probe::Unreachable(e),
            };
            if start.elapsed() >= bound {
                return result;
            }
            tokio::time::sleep(retry::PROBE_INTERVAL).await;
        }
    }

    /// Verifies the running gateway serves the URL map; heals a stale one
    /// (reload, then restart) and returns what was found stale as drift.
    pub(super) async fn verify_gateway(&self, u: &mut Unit) -> Vec<DriftEvent> {
        let Ok(d) = &u.desired else { return Vec::new() };
        let Some(ctx) = u.gateway.as_mut() else {
            return Vec::new();
        };
        let config_path = d.config.as_ref().map(|c| c.path.clone());
        ctx.live_file = match (&config_path, u.changed) {
            (Some(p), true) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || std::fs::read(p).ok())
                    .await
                    .ok()
                    .flatten()
            }
            _ => u.observed.config.clone(),
        };
        if u.error.is_some() {
            return Vec::new();
        }
        let want = d.container.hash();
        let Some(container) = u
            .observed
            .containers
            .iter()
            .find(|c| c.running() && c.label(LABEL_SPEC_HASH) == Some(want.as_str()))
            .map(|c| c.id.clone())
        else {
            return Vec::new();
        };
        let reload = d.reload.clone();
        let bound = if u.changed {
            retry::PROBE_BOUND
        } else {
            std::time::Duration::ZERO
        };
        let ctx = u.gateway.as_ref().expect("checked above");
        let (served, wrong) = match self.probe_until(ctx, u.changed, bound).await {
            Probe::Matches(served) => {
                u.gateway.as_mut().expect("checked").served = Some(served);
                return Vec::new();
            }
            Probe::Unreachable(e) => {
                u.notes.push(format!(
                    "cannot probe the gateway ({e}); routes are shown from its file"
                ));
                return Vec::new();
            }
            Probe::Mismatch(served, wrong) => (served, wrong),
        };
        // A converged gateway that serves something else has drifted
        // (a hand edit, an OPcache that never revalidates, ...).
        let drift: Vec<DriftEvent> = if u.changed {
            Vec::new()
        } else {
            wrong
                .iter()
                .map(|(k, want, got)| DriftEvent {
                    at_ms: now_ms(),
                    agent: String::new(),
                    unit: u.id.name.clone(),
                    what: format!("the gateway serves a stale value for {k}"),
                    desired: Some(want.clone()),
                    found: got.clone(),
                })
                .collect()
        };
        tracing::warn!(unit = %u.id, stale = ?wrong, "gateway does not serve the URL map; reloading");
        if let Some(cmd) = &reload
            && let Err(e) = self.reload(&container, cmd).await
        {
            u.notes.push(e);
        }
        let ctx = u.gateway.as_ref().expect("checked");
        let mut outcome = self.probe_until(ctx, true, retry::PROBE_BOUND).await;
        if !matches!(outcome, Probe::Matches(_)) {
            tracing::warn!(unit = %u.id, "gateway still does not serve the URL map; restarting it");
            match self.engine.restart(&container).await {
                Ok(()) => u.notes.push(
                    "the gateway did not serve the new URL map after a reload; SDP restarted it"
                        .into(),
                ),
                Err(e) => u.notes.push(format!("restarting the gateway failed: {e}")),
            }
            let ctx = u.gateway.as_ref().expect("checked");
            outcome = self.probe_until(ctx, true, retry::PROBE_BOUND).await;
        }
        let ctx = u.gateway.as_mut().expect("checked");
        match outcome {
            Probe::Matches(s) => ctx.served = Some(s),
            Probe::Mismatch(s, wrong) => {
                ctx.served = Some(s);
                let detail: Vec<String> = wrong
                    .iter()
                    .map(|(k, want, got)| {
                        format!(
                            "{k} is {} (should be {want})",
                            got.as_deref().unwrap_or("undefined")
                        )
                    })
                    .collect();
                u.error = Some(Failure::transient(format!(
                    "the gateway does not serve its URL map after reload and restart: {}",
                    detail.join("; ")
                )));
            }
            Probe::Unreachable(e) => {
                ctx.served = Some(served);
                u.error = Some(Failure::transient(format!(
                    "the gateway stopped answering after a restart: {e}"
                )));
            }
        }
        drift
    }
}
