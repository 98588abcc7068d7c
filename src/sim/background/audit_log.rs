//! The audit-log generator: the organization's audit events keep coming while the simulator runs,
//! and drop out of the log past the retention period.
//!
//! Imports the state only.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sim::state::SharedState;

/// Starts the generator adding `timing.audit_events_per_minute` events per simulated minute, and
/// dropping events past the retention period, until `shutdown`.
pub fn spawn(state: &SharedState, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let rate = state.config.timing.audit_events_per_minute;
    if !(rate.is_finite() && rate > 0.0) {
        return;
    }
    let state = state.clone();
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut rng = ChaCha8Rng::seed_from_u64(state.config.seed ^ 0xa0d1_7109);
        let interval = state
            .clock
            .to_real(Duration::from_secs_f64(60.0 / rate))
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        let start = state.clock.sim_secs();
        let mut emitted: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            let due = ((state.clock.sim_secs() - start) * rate / 60.0).floor() as u64;
            let mut world = state.world_mut();
            // Read the clock under the lock so no reader can pass this instant before the
            // events exist: generated events are never "late".
            let now = state.clock.now();
            for _ in emitted..due {
                let event = world.make_audit_event(&mut rng, now, None);
                world.insert_audit_event(event);
            }
            emitted = emitted.max(due);
            world.expire_audit_events(state.audit_cutoff(now));
        }
    });
}
