//! Simulated time. Everything time-dependent in the simulator (rate-limit windows, expiry of
//! offsets, sync tokens, access tokens and download URLs, export progress, event generation) reads
//! this clock, so `--time-scale N` speeds all of it up together.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A clock that runs `scale` times faster than real time from a fixed origin.
#[derive(Debug, Clone)]
pub struct SimClock {
    real_origin: Instant,
    sim_origin: DateTime<Utc>,
    scale: f64,
    /// Simulated microseconds added by [`SimClock::advance`] (shared by clones).
    jumped_us: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock reading `sim_origin` now and advancing `scale` simulated seconds per real second.
    /// Built on tokio's clock so tests with paused time control it.
    pub fn new(sim_origin: DateTime<Utc>, scale: f64) -> Self {
        Self {
            real_origin: Instant::now(),
            sim_origin,
            scale,
            jumped_us: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Jumps simulated time forward by `by` (tests: e.g. past the audit log's retention between
    /// two runs). Every clone of this clock jumps with it; negative durations are ignored.
    pub fn advance(&self, by: chrono::Duration) {
        let us = by.num_microseconds().unwrap_or(i64::MAX).max(0);
        self.jumped_us.fetch_add(us, Ordering::SeqCst);
    }

    fn jumped_secs(&self) -> f64 {
        self.jumped_us.load(Ordering::SeqCst) as f64 / 1e6
    }

    /// The current simulated wall time.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = self.real_origin.elapsed().as_secs_f64() * self.scale + self.jumped_secs();
        self.sim_origin + chrono::Duration::microseconds((elapsed * 1e6) as i64)
    }

    /// Simulated seconds since the origin, as a float (for rate-limit windows).
    pub fn sim_secs(&self) -> f64 {
        self.real_origin.elapsed().as_secs_f64() * self.scale + self.jumped_secs()
    }

    /// How long a simulated duration lasts in real time.
    pub fn to_real(&self, simulated: Duration) -> Duration {
        Duration::from_secs_f64(simulated.as_secs_f64() / self.scale)
    }

    /// The speed-up factor.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}
