//! SDP benchmarks. Run with `cargo run --release -p sdp-bench -- <which>`:
//!
//! - `latency`: time from `apply` returning to an agent's long-poll
//!   answering with its new work (the moment the agent starts working), over
//!   real HTTP on loopback against a real controller and redb on disk.
//! - `steady`: 50 sandboxes × 3 services converged on the real Docker engine,
//!   then the cost of passes that find nothing to do: Docker API calls (all,
//!   and writes), CPU time and wall time.
//!
//! Results are printed as Markdown for BENCHMARKS.md. Nothing here asserts a
//! time: speed is measured, not tested.

mod latency;
mod steady;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("latency") => latency::run().await,
        Some("steady") => steady::run().await,
        _ => {
            eprintln!("usage: sdp-bench latency|steady");
            std::process::exit(64);
        }
    }
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> std::time::Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Median, 90th and 99th percentile and maximum of samples.
pub fn summary(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9), at(0.99), *v.last().expect("samples"))
}
