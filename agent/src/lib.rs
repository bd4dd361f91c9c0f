//! The SDP agent: long-polls the controller for its work and converges git
//! checkouts, host builds, Docker containers and the gateway's URL map until
//! what runs matches what was applied; reports what it observed.
//!
//! Code map: `run` (loop) → `reconcile` (one pass: resolve, observe, plan,
//! execute, report) → `plan` (pure) and the shells `git`, `hostcmd`,
//! `docker`, `urlmap` (pure PHP reader/patcher), `layout` (files on disk).
//! `retry` owns every backoff number. `dev` runs controller + agents together.

pub mod client;
pub mod config;
pub mod dev;
pub mod docker;
pub mod gateway;
pub mod git;
pub mod hostcmd;
pub mod layout;
pub mod plan;
pub mod reconcile;
pub mod retry;
pub mod run;
pub mod urlmap;
