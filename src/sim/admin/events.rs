//! The Events API's knobs: `GET /_sim/events` (events retained and lost, tokens outstanding) and
//! `POST /_sim/events/expire {"resource": gid}`, which expires every sync token of one stream so
//! its next read answers 412, as Asana's tokens may expire early. The share of events lost as
//! they happen is the `drop_events` fault (`PUT /_sim/faults`).
//!
//! Imports the state only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::admin_error;
use crate::sim::state::SharedState;

/// The log's counters.
pub async fn stats(State(state): State<SharedState>) -> Response {
    Json(state.events().stats()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireRequest {
    /// The stream: a task, project or goal gid, or the workspace's.
    resource: String,
}

/// Expires the sync tokens of one stream; answers how many there were.
pub async fn expire(
    State(state): State<SharedState>,
    Json(request): Json<ExpireRequest>,
) -> Response {
    if state.world().kind_of(&request.resource).is_none() {
        return admin_error(
            StatusCode::NOT_FOUND,
            format!("no object {:?} to expire the stream of", request.resource),
        );
    }
    let expired = state.events().expire_stream(&request.resource);
    Json(json!({ "resource": request.resource, "expired": expired })).into_response()
}
