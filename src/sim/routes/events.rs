//! Events API: `GET /events?resource=&sync=` (a task, project or goal; also the
//! `/tasks/{gid}/events`, `/projects/{gid}/events` forms) and `GET /workspaces/{gid}/events?sync=`,
//! over the event log of [`crate::sim::model::events`] that task writes, new comments, the admin
//! API and the background activity generator record into.
//!
//! On the wire: the first call (no sync token) and any call with an unknown or expired token answer
//! `412` with a fresh `sync`; a valid token returns at most 100 events (1,000 for the workspace
//! stream) with `has_more`; tokens expire after `timing.sync_token_ttl_secs` simulated seconds.

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::params::Params;
use super::read::{GOAL, PROJECT, TASK, WORKSPACE, admit};
use super::request::ApiRequest;
use crate::sim::model::world::World;
use crate::sim::state::SharedState;
use crate::sim::wire::{self, ApiError, ApiResult, Detail};

/// Asana's 412 message for a missing, unknown or expired sync token.
pub const SYNC_INVALID_MESSAGE: &str = "Sync token invalid or too old. If you are attempting to keep \
resources in sync, you must fetch the full dataset for this query now and use the new sync token \
for the next sync.";

/// Events per answer on a task or project stream.
pub const RESOURCE_EVENTS_CAP: usize = 100;

/// Events per answer on the workspace stream.
pub const WORKSPACE_EVENTS_CAP: usize = 1000;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/events", get(resource_events))
        .route(
            "/tasks/{task_gid}/events",
            get(|request: ApiRequest| async move { typed_events(&request, "task") }),
        )
        .route(
            "/projects/{project_gid}/events",
            get(|request: ApiRequest| async move { typed_events(&request, "project") }),
        )
        .route("/workspaces/{workspace_gid}/events", get(workspace_events))
}

async fn resource_events(request: ApiRequest) -> ApiResult {
    let resource = request.params.require("resource")?;
    stream_events(&request, resource, false)
}

/// The stream of the object the path names; 404 naming `kind` unless it is one (a task in the
/// trash still has its stream).
fn typed_events(request: &ApiRequest, kind: &str) -> ApiResult {
    if request.state.world().kind_of(&request.gid) != Some(kind) {
        return Err(ApiError::not_found(kind));
    }
    stream_events(request, &request.gid, false)
}

async fn workspace_events(request: ApiRequest) -> ApiResult {
    WORKSPACE.find(&request.state.world(), &request.gid, request.me())?;
    if request.caller.record.workspace_events_refused {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "You do not have permission to read this workspace's events.",
        ));
    }
    stream_events(&request, &request.gid, true)
}

/// Answers a read of `stream` (a resource's, or the workspace's when `workspace`): the caller
/// must be allowed to read the resource (402 for a goal and a free token, 403 for a project it
/// may not access).
fn stream_events(request: &ApiRequest, stream: &str, workspace: bool) -> ApiResult {
    let (state, params) = (&request.state, &request.params);
    if !workspace {
        let world = state.world();
        let kind = match world.kind_of(stream) {
            Some("task") => TASK,
            Some("project") => PROJECT,
            Some("goal") => GOAL,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "resource: Events are only available for tasks, projects and goals.",
                ));
            }
            None => return Err(ApiError::not_found("resource")),
        };
        admit(&world, &request.caller, kind, stream)?;
    }
    let cap = if workspace {
        WORKSPACE_EVENTS_CAP
    } else {
        RESOURCE_EVENTS_CAP
    };
    let answer = state.events().read(
        stream,
        params.get("sync"),
        cap,
        state.clock.now(),
        state.config.timing.sync_token_ttl_secs,
    );
    match answer {
        Err(fresh) => Err(
            ApiError::new(StatusCode::PRECONDITION_FAILED, SYNC_INVALID_MESSAGE)
                .with_field("sync", json!(fresh)),
        ),
        Ok(answer) => {
            let world = state.world();
            let data: Vec<Value> = answer
                .events
                .iter()
                .map(|body| render_event(&world, body, params))
                .collect();
            Ok(axum::Json(json!({
                "data": data,
                "sync": answer.sync,
                "has_more": answer.has_more,
            }))
            .into_response())
        }
    }
}

fn render_event(world: &World, body: &Value, params: &Params) -> Value {
    const ALL: &[&str] = &[
        "user",
        "resource",
        "type",
        "action",
        "parent",
        "created_at",
        "change",
    ];
    wire::project(body, ALL, params.fields(), Detail::Full, world)
}
