//! Work the simulator does on its own while it runs, tied to the server's lifetime: the activity
//! of other users (task changes and comments), new audit-log events, and finishing exports.
//!
//! Background tasks change the model through the state, like requests do; they import `state` and
//! `model`, never `routes` or `admin`.

pub mod activity;
pub mod audit_log;
pub mod exports;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::SharedState;

/// Starts every background task; each stops when `shutdown` is cancelled.
pub fn spawn(state: &SharedState, tasks: &TaskTracker, shutdown: &CancellationToken) {
    activity::spawn(state, tasks, shutdown);
    audit_log::spawn(state, tasks, shutdown);
    exports::spawn(state, tasks, shutdown);
}
