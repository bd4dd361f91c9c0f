//! Every retry and backoff number the agent uses, in one place. Retrying is a
//! returned value (`requeue after`), not a sleep scattered through the code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attempts at creating a container when its name is briefly still taken.
pub const CONFLICT_ATTEMPTS: u32 = 5;
/// Attempts at removing a container until Docker no longer knows it.
pub const REMOVE_ATTEMPTS: u32 = 20;
/// Seconds Docker waits after SIGTERM before it kills a stopping container.
/// Containers run under Docker's init, so SIGTERM is honoured at once.
pub const STOP_GRACE_SECS: i32 = 3;
/// A container that runs but is not healthy yet is looked at again after this.
pub const UNHEALTHY_REQUEUE: Duration = Duration::from_secs(2);
/// Longest a health check may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a changed URL map may take to be served before SDP restarts the
/// gateway (and, after that, before it reports the gateway as not serving it).
pub const PROBE_BOUND: Duration = Duration::from_secs(10);
/// Between probes of a gateway that does not serve the expected map yet.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Default long-poll wait; also the steady-state resync period, so the
/// longest drift goes unnoticed (a pass costs ~16 ms CPU per 150 containers).
pub const POLL_WAIT: Duration = Duration::from_secs(10);

/// Short waits between attempts at a conflicting Docker call.
pub fn conflict_delay(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(5)).min(1500))
}

/// Exponential backoff with jitter, for work that keeps failing: the
/// controller being unreachable, or a self-heal that does not take.
#[derive(Clone, Debug)]
pub struct Backoff {
    failures: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn controller() -> Self {
        Self {
            failures: 0,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }

    pub fn heal() -> Self {
        Self {
            failures: 0,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next try.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.current()
    }

    /// The wait after the failures so far (zero if none).
    pub fn current(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let exp = self
            .base
            .saturating_mul(1u32 << (self.failures - 1).min(16));
        jitter(exp.min(self.cap))
    }
}

/// ±20 %, so many agents do not retry (or ask remotes) in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos() as u64)
        ^ (std::process::id() as u64).rotate_left(17);
    let mut x = seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let frac = (x % 401) as f64 / 1000.0 - 0.2; // -0.2 ..= 0.2
    d.mul_f64(1.0 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::controller();
        assert_eq!(b.current(), Duration::ZERO);
        let first = b.fail();
        assert!(
            first >= Duration::from_millis(400) && first <= Duration::from_millis(600),
            "{first:?}"
        );
        for _ in 0..20 {
            b.fail();
        }
        assert!(b.current() <= Duration::from_secs(36) && b.current() >= Duration::from_secs(24));
        b.reset();
        assert_eq!(b.current(), Duration::ZERO);
    }

    #[test]
    fn conflict_delays_are_short_and_bounded() {
        assert_eq!(conflict_delay(1), Duration::from_millis(100));
        assert!(conflict_delay(30) <= Duration::from_millis(1500));
    }
}
