//! What is wrong with the daemon right now, for `/readyz` and the logs: components report a
//! repeating fault once and its recovery once ([`FaultLog`]), instead of an error line per
//! retry, and the readiness probe lists every open fault with its cause ([`Health`]).
//!
//! Below every other layer (it imports nothing of the crate), so the scheduler, the workers and
//! the daemon can all report to it and the admin server can read it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a fault that keeps repeating is logged again (with its count).
pub const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The open faults, by component.
#[derive(Debug, Clone, Default)]
pub struct Health {
    faults: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Health {
    /// A registry with no faults.
    pub fn new() -> Health {
        Health::default()
    }

    /// Records that `component` is failing, with the cause an operator reads.
    pub fn fault(&self, component: &str, cause: impl Into<String>) {
        self.lock().insert(component.to_string(), cause.into());
    }

    /// Records that `component` works again.
    pub fn clear(&self, component: &str) {
        self.lock().remove(component);
    }

    /// Every open fault: component and cause.
    pub fn faults(&self) -> BTreeMap<String, String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    last_logged: Instant,
    failures: u64,
}

/// The log and health state of one repeating operation (a scheduler tick, a claim): the first
/// failure is logged at error level and opens a fault in [`Health`]; further failures are counted
/// and logged at most every [`REPEAT_LOG_EVERY`]; the first success after them is logged once
/// and closes the fault.
#[derive(Debug)]
pub struct FaultLog {
    component: &'static str,
    what: &'static str,
    health: Health,
    state: Mutex<Option<Failing>>,
}

impl FaultLog {
    /// The fault log of `component` (its key in [`Health`]), doing `what` ("schedule fires").
    pub fn new(component: &'static str, what: &'static str, health: Health) -> FaultLog {
        FaultLog {
            component,
            what,
            health,
            state: Mutex::new(None),
        }
    }

    /// Reports a failure; logs it unless it repeats within [`REPEAT_LOG_EVERY`].
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let cause = format!("cannot {}: {error}", self.what);
        self.health.fault(self.component, cause.clone());
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.as_mut() {
            None => {
                tracing::error!(component = self.component, error = %error, "{}", capitalised(&cause));
                *state = Some(Failing {
                    since: now,
                    last_logged: now,
                    failures: 1,
                });
            }
            Some(failing) => {
                failing.failures += 1;
                if now.duration_since(failing.last_logged) >= REPEAT_LOG_EVERY {
                    failing.last_logged = now;
                    tracing::error!(
                        component = self.component,
                        error = %error,
                        failures = failing.failures,
                        failing_for_secs = now.duration_since(failing.since).as_secs(),
                        "Still failing: {}", cause
                    );
                }
            }
        }
    }

    /// Reports a success; logs the recovery once after failures.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(failing) = state.take() {
            self.health.clear(self.component);
            tracing::info!(
                component = self.component,
                failures = failing.failures,
                failed_for_secs = failing.since.elapsed().as_secs(),
                "Recovered: can {} again",
                self.what
            );
        }
    }

    /// Whether the operation is failing now.
    pub fn is_failing(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_opens_once_counts_repeats_and_closes_on_success() {
        let health = Health::new();
        let log = FaultLog::new("scheduler", "schedule fires", health.clone());
        assert!(health.faults().is_empty());
        log.failed(&"attempt to write a readonly database");
        log.failed(&"attempt to write a readonly database");
        assert!(log.is_failing());
        assert_eq!(
            health.faults()["scheduler"],
            "cannot schedule fires: attempt to write a readonly database"
        );
        log.succeeded();
        assert!(!log.is_failing());
        assert!(health.faults().is_empty());
        // A success without failures changes nothing.
        log.succeeded();
        assert!(health.faults().is_empty());
    }
}
