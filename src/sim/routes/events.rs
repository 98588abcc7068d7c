//! Events API: `GET /events?resource=&sync=` with 412 handshakes, `has_more` and 100 events per
//! call, fed by writes and by a background activity generator.

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sim::state::SharedState;

/// Event log and issued sync tokens.
#[derive(Debug, Default)]
pub struct EventLog {}

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
}

/// Starts the background activity generator.
pub fn spawn_activity(_state: &SharedState, _tasks: &TaskTracker, _shutdown: &CancellationToken) {}
