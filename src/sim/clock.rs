//! Simulated time. Everything time-dependent in the simulator (rate-limit windows, expiry of
//! offsets, sync tokens, access tokens and download URLs, export progress, event generation) reads
//! this clock, so `--time-scale N` speeds all of it up together.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A clock that runs `scale` times faster than real time from a fixed origin.
#[derive(Debug, Clone)]
pub struct SimClock {
    real_origin: Instant,
    sim_origin: DateTime<Utc>,
    scale: f64,
}

impl SimClock {
    /// A clock reading `sim_origin` now and advancing `scale` simulated seconds per real second.
    /// Built on tokio's clock so tests with paused time control it.
    pub fn new(sim_origin: DateTime<Utc>, scale: f64) -> Self {
        Self {
            real_origin: Instant::now(),
            sim_origin,
            scale,
        }
    }

    /// The current simulated wall time.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = self.real_origin.elapsed().as_secs_f64() * self.scale;
        self.sim_origin + chrono::Duration::microseconds((elapsed * 1e6) as i64)
    }

    /// Simulated seconds since the origin, as a float (for rate-limit windows).
    pub fn sim_secs(&self) -> f64 {
        self.real_origin.elapsed().as_secs_f64() * self.scale
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
