//! The admin routes that steer exports in tests: `POST /_sim/exports/fail_next {"count":N}` makes
//! the next N exports end in `error`/`failed`; `POST /_sim/exports/size {"bytes":N}` pads later
//! files to about N compressed bytes (streamed into the encoder, never held in memory);
//! `GET /_sim/exports[/{gid}]` shows state, size and sha256 of the files (the list also counts
//! downloads served, ranged, refused as expired and cut); `POST /_sim/downloads/expire
//! {"abort_in_flight":bool,"next":N}` expires every download URL handed out so far, optionally
//! cuts the downloads in flight and makes the next N URLs born expired, so a test can make a URL
//! expire in the middle of a job's download.
//!
//! Imports the state, the export model and `wire` only.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Json, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sim::model::exports::Export;
use crate::sim::state::SharedState;
use crate::sim::wire::timestamp;

/// Routes of this group, nested under `/_sim`.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/downloads/expire", post(admin_expire_downloads))
        .route("/exports", get(admin_list))
        .route("/exports/fail_next", post(admin_fail_next))
        .route("/exports/size", post(admin_size))
        .route("/exports/{gid}", get(admin_get))
}

fn admin_view(export: &Export, now: DateTime<Utc>) -> Value {
    let file = export.file();
    json!({
        "gid": export.gid,
        "result_gid": export.result_gid,
        "kind": export.kind.name(),
        "status": export.phase(now).job_status(),
        "user_gid": export.user_gid,
        "created_at": timestamp(export.created_at),
        "completed_at": export.completed_at.map(timestamp),
        "fail": export.fail,
        "error": match &export.outcome { Some(Err(e)) => json!(e), _ => Value::Null },
        "padding_bytes": export.padding_bytes,
        "sha256": file.map(|f| f.sha256.clone()),
        "bytes": file.map(|f| f.bytes),
        "path": file.map(|f| f.path.display().to_string()),
    })
}

async fn admin_list(State(state): State<SharedState>) -> Response {
    let now = state.clock.now();
    let registry = state.exports();
    let list: Vec<Value> = registry
        .exports
        .values()
        .map(|e| admin_view(e, now))
        .collect();
    axum::Json(json!({
        "exports": list,
        "fail_next": registry.fail_next,
        "padding_bytes": registry.padding_bytes,
        "url_generation": registry.url_generation,
        "downloads": registry.download_stats,
    }))
    .into_response()
}

async fn admin_get(State(state): State<SharedState>, Path(gid): Path<String>) -> Response {
    let now = state.clock.now();
    match state.exports().exports.get(&gid) {
        Some(export) => axum::Json(admin_view(export, now)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": format!("no export or job {gid}") })),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNextRequest {
    /// How many of the next exports end in `error` / `failed`.
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn admin_fail_next(
    State(state): State<SharedState>,
    Json(request): Json<FailNextRequest>,
) -> Response {
    let mut registry = state.exports();
    registry.fail_next = request.count;
    axum::Json(json!({ "fail_next": registry.fail_next })).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpireRequest {
    /// Also cut the downloads being served right now (as a dropped connection would).
    #[serde(default)]
    abort_in_flight: bool,
    /// The next N download URLs handed out are already expired when minted (as if the client
    /// had waited too long before using them).
    #[serde(default)]
    next: u32,
}

/// Expires every download URL handed out so far: they answer S3's 403 `Request has expired`,
/// so a client must read the export again for a fresh URL.
async fn admin_expire_downloads(State(state): State<SharedState>, body: Bytes) -> Response {
    let request: ExpireRequest = if body.is_empty() {
        ExpireRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "error": format!("bad request body: {error}") })),
                )
                    .into_response();
            }
        }
    };
    let mut registry = state.exports();
    registry.expire_downloads(request.next, request.abort_in_flight);
    axum::Json(json!({
        "url_generation": registry.url_generation,
        "expired_urls_next": registry.expired_urls_next,
        "aborted_in_flight": request.abort_in_flight,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeRequest {
    /// Pad later export files to about this many compressed bytes (0 = no padding).
    bytes: u64,
}

async fn admin_size(
    State(state): State<SharedState>,
    Json(request): Json<SizeRequest>,
) -> Response {
    let mut registry = state.exports();
    registry.padding_bytes = request.bytes;
    axum::Json(json!({ "padding_bytes": registry.padding_bytes })).into_response()
}
