//! The simulator's control surface under `/_sim/`, for tests, benchmarks and people trying job
//! files: read per-token statistics, change faults, revoke tokens, forbid projects to a token,
//! spend quota as another client, append audit events, change tasks as other users, make random
//! or scripted changes to the work graph, expire event streams. It is not part of Asana's API and
//! needs no token: the simulator listens on loopback only.
//!
//! The admin layer sits beside the routes: it imports the state, the model and the foundations,
//! never a route module.

pub mod events;
pub mod exports;
pub mod mutate;
pub mod tasks;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::FaultSpec;
use super::limits::TokenStats;
use super::state::SharedState;

/// Admin routes, nested under `/_sim`.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_stats))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/tokens", get(tokens))
        .route(
            "/tokens/{name}/forbidden_projects",
            axum::routing::put(forbid_projects),
        )
        .route(
            "/tokens/{name}/workspace_events",
            axum::routing::put(workspace_events_access),
        )
        .route("/revoke", post(revoke))
        .route("/consume", post(consume))
        .route("/audit_events", post(append_audit_events))
        .route("/clock", get(clock).post(advance_clock))
        .route("/users/{user_gid}/deactivate", post(deactivate_user))
        .route("/tasks/{task_gid}", post(tasks::change_task))
        .route("/mutate", post(mutate::mutate))
        .route("/events", get(events::stats))
        .route("/events/expire", post(events::expire))
        .merge(exports::routes())
}

fn admin_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Statistics by token name.
async fn stats(State(state): State<SharedState>) -> Response {
    let tokens = state
        .tokens
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut by_name: BTreeMap<String, TokenStats> = BTreeMap::new();
    for (token, record) in tokens {
        let stats = state.limits.stats(&token);
        let entry = by_name.entry(record.name.clone()).or_default();
        merge(entry, stats);
    }
    axum::Json(json!({ "tokens": by_name })).into_response()
}

fn merge(into: &mut TokenStats, from: TokenStats) {
    into.requests += from.requests;
    into.accepted += from.accepted;
    for (cause, count) in from.rejected {
        *into.rejected.entry(cause).or_default() += count;
    }
    for (status, count) in from.statuses {
        *into.statuses.entry(status).or_default() += count;
    }
    into.peak_concurrent_reads = into.peak_concurrent_reads.max(from.peak_concurrent_reads);
    into.peak_concurrent_writes = into.peak_concurrent_writes.max(from.peak_concurrent_writes);
    into.peak_window_requests = into.peak_window_requests.max(from.peak_window_requests);
    into.peak_window_searches = into.peak_window_searches.max(from.peak_window_searches);
    into.peak_concurrent_jobs = into.peak_concurrent_jobs.max(from.peak_concurrent_jobs);
}

async fn reset_stats(State(state): State<SharedState>) -> Response {
    state.limits.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(state): State<SharedState>) -> Response {
    axum::Json(state.faults()).into_response()
}

/// Replaces the faults; fields left out are zero.
async fn put_faults(State(state): State<SharedState>, Json(faults): Json<FaultSpec>) -> Response {
    if let Err(why) = faults.check() {
        return admin_error(StatusCode::BAD_REQUEST, why);
    }
    *state.faults.write().unwrap_or_else(|p| p.into_inner()) = faults.clone();
    axum::Json(faults).into_response()
}

/// Token names, kinds and strings (this is a simulator: its tokens are not secrets).
async fn tokens(State(state): State<SharedState>) -> Response {
    let tokens = state
        .tokens
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let list: Vec<Value> = tokens
        .iter()
        .map(|(token, record)| {
            json!({
                "name": record.name, "token": token, "kind": record.kind, "tier": record.tier,
                "user_gid": record.user_gid, "enterprise": record.enterprise,
                "revoked": record.revoked,
                "expires_at": record.expires_at.map(|t| t.to_rfc3339()),
                "forbidden_projects": record.forbidden_projects,
                "workspace_events": !record.workspace_events_refused,
            })
        })
        .collect();
    axum::Json(json!({ "tokens": list })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForbidRequest {
    /// Gids of the projects the token may no longer access (replacing the previous list).
    projects: Vec<String>,
}

/// Replaces the projects a token (by name) may not access: reading them, their sections, their
/// tasks (when in no other project) or their events answers 403.
/// Body of `PUT /_sim/tokens/{name}/workspace_events`.
#[derive(Debug, Deserialize)]
struct WorkspaceEventsRequest {
    allowed: bool,
}

/// Lets a token read the workspace's event stream or not (403, as Asana's spec lists for tokens
/// without access), so a sync's fallback to per-project streams can be tested.
async fn workspace_events_access(
    State(state): State<SharedState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Json(request): Json<WorkspaceEventsRequest>,
) -> Response {
    let mut tokens = state.tokens.write().unwrap_or_else(|p| p.into_inner());
    let mut matched = 0;
    for record in tokens.values_mut().filter(|r| r.name == name) {
        record.workspace_events_refused = !request.allowed;
        matched += 1;
    }
    if matched == 0 {
        return admin_error(StatusCode::NOT_FOUND, format!("no token named {name:?}"));
    }
    axum::Json(json!({ "name": name, "workspace_events": request.allowed })).into_response()
}

async fn forbid_projects(
    State(state): State<SharedState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Json(request): Json<ForbidRequest>,
) -> Response {
    if let Some(unknown) = {
        let world = state.world();
        request
            .projects
            .iter()
            .find(|gid| world.projects.get(gid).is_none())
            .cloned()
    } {
        return admin_error(StatusCode::NOT_FOUND, format!("no project {unknown:?}"));
    }
    let mut tokens = state.tokens.write().unwrap_or_else(|p| p.into_inner());
    let mut matched = 0;
    for record in tokens.values_mut().filter(|r| r.name == name) {
        record.forbidden_projects = request.projects.clone();
        matched += 1;
    }
    if matched == 0 {
        return admin_error(StatusCode::NOT_FOUND, format!("no token named {name:?}"));
    }
    axum::Json(json!({ "name": name, "forbidden_projects": request.projects })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    /// A configured token's name (revokes that token).
    name: Option<String>,
    /// A token string: an access token, or an OAuth refresh token (revokes the grant and every
    /// access token issued from it).
    token: Option<String>,
}

async fn revoke(State(state): State<SharedState>, Json(request): Json<RevokeRequest>) -> Response {
    let mut revoked = 0;
    {
        let mut grants = state.grants.write().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = &request.token
            && let Some(grant) = grants.get_mut(token)
        {
            grant.revoked = true;
            revoked += 1;
        }
    }
    let mut tokens = state.tokens.write().unwrap_or_else(|p| p.into_inner());
    for (token, record) in tokens.iter_mut() {
        let by_name = request.name.as_deref() == Some(record.name.as_str());
        let by_token = request.token.as_deref() == Some(token.as_str());
        let by_grant =
            request.token.is_some() && record.grant.as_deref() == request.token.as_deref();
        if by_name || by_token || by_grant {
            record.revoked = true;
            revoked += 1;
        }
    }
    if revoked == 0 {
        return admin_error(StatusCode::NOT_FOUND, "no token or grant matched");
    }
    axum::Json(json!({ "revoked": revoked })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeRequest {
    /// Token name.
    name: String,
    /// Requests to count against its quota, as if another client had made them now.
    count: u32,
}

async fn consume(
    State(state): State<SharedState>,
    Json(request): Json<ConsumeRequest>,
) -> Response {
    let token = {
        let tokens = state.tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens
            .iter()
            .find(|(_, r)| r.name == request.name)
            .map(|(t, _)| t.clone())
    };
    match token {
        Some(token) => {
            state
                .limits
                .consume_external(&token, request.count, state.clock.sim_secs());
            StatusCode::NO_CONTENT.into_response()
        }
        None => admin_error(
            StatusCode::NOT_FOUND,
            format!("no token named {:?}", request.name),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendAuditRequest {
    /// How many events to add.
    #[serde(default = "one")]
    count: usize,
    /// Their creation time (default: now); a time in the past makes "late" events.
    created_at: Option<DateTime<Utc>>,
    /// Their type (default: random).
    event_type: Option<String>,
}

fn one() -> usize {
    1
}

async fn append_audit_events(
    State(state): State<SharedState>,
    Json(request): Json<AppendAuditRequest>,
) -> Response {
    let created_at = request.created_at.unwrap_or_else(|| state.clock.now());
    let mut world = state.world_mut();
    let mut rng = ChaCha8Rng::seed_from_u64(world.audit_events.len() as u64);
    let mut gids = Vec::new();
    for _ in 0..request.count {
        let event = world.make_audit_event(&mut rng, created_at, request.event_type.as_deref());
        gids.push(event.gid.clone());
        world.insert_audit_event(event);
    }
    axum::Json(json!({ "gids": gids })).into_response()
}

/// Deactivates a user, as an admin removing them from the organization would: their tokens
/// (PATs, OAuth access tokens) answer 401 from then on, so owner checks fail.
async fn deactivate_user(
    State(state): State<SharedState>,
    axum::extract::Path(user_gid): axum::extract::Path<String>,
) -> Response {
    let mut world = state.world_mut();
    match world.users.get_mut(&user_gid) {
        Some(user) => {
            user.active = false;
            axum::Json(json!({ "gid": user_gid, "active": false })).into_response()
        }
        None => admin_error(StatusCode::NOT_FOUND, format!("no user {user_gid:?}")),
    }
}

async fn clock(State(state): State<SharedState>) -> Response {
    axum::Json(json!({
        "now": state.clock.now().to_rfc3339(),
        "time_scale": state.clock.scale(),
    }))
    .into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceRequest {
    /// Simulated seconds to jump forward.
    advance_secs: u64,
}

/// Jumps simulated time forward (offsets, download URLs and sync tokens age with it; audit
/// events older than the retention period stop being served).
async fn advance_clock(
    State(state): State<SharedState>,
    axum::Json(request): axum::Json<AdvanceRequest>,
) -> Response {
    state.clock.advance(chrono::Duration::seconds(
        request.advance_secs.min(i64::MAX as u64) as i64,
    ));
    clock(State(state)).await
}
