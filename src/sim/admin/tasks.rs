//! `POST /_sim/tasks/{gid}`: a test changes a task as another user would, and the change records
//! its events like any other.
//!
//! Imports the state, the model and `wire` (field selection for the answer).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::admin_error;
use crate::sim::model::requests::parse_patch;
use crate::sim::model::world::render::render;
use crate::sim::state::SharedState;
use crate::sim::wire::{Detail, FieldTree};

/// Changes a task (a JSON object of fields: `name`, `notes`, `completed`, `assignee`, `due_on`;
/// optional `user` gid as the actor, `comment` text to add a comment too, or `"deleted": true` to
/// delete it) and records the events. Answers the task's writable fields and `modified_at`, and the
/// names of the fields that changed.
pub async fn change_task(
    State(state): State<SharedState>,
    Path(task_gid): Path<String>,
    body: Bytes,
) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return admin_error(StatusCode::BAD_REQUEST, format!("invalid JSON: {error}"));
        }
    };
    let fields = match value.get("data").cloned().unwrap_or(value) {
        Value::Object(map) => map,
        _ => return admin_error(StatusCode::BAD_REQUEST, "expected a JSON object"),
    };
    let user = fields.get("user").and_then(Value::as_str);
    state.edit(|edit| {
        if edit.world().tasks.get(&task_gid).is_none_or(|t| t.deleted) {
            return admin_error(StatusCode::NOT_FOUND, format!("no task {task_gid}"));
        }
        let patch = match parse_patch(edit.world(), None, &fields) {
            Ok(patch) => patch,
            Err(error) => return admin_error(StatusCode::BAD_REQUEST, error.message),
        };
        if fields.get("deleted") == Some(&Value::Bool(true)) {
            edit.delete_task(&task_gid, user);
            return axum::Json(json!({ "data": { "gid": task_gid }, "changed": ["deleted"] }))
                .into_response();
        }
        let Some(changes) = edit.change_task(&task_gid, &patch, user) else {
            return admin_error(StatusCode::NOT_FOUND, format!("no task {task_gid}"));
        };
        if let Some(Value::String(text)) = fields.get("comment") {
            let author = match user {
                Some(user) => user.to_string(),
                None => edit
                    .world()
                    .users
                    .at(0)
                    .map(|u| u.gid.clone())
                    .unwrap_or_default(),
            };
            edit.comment_on_task(&task_gid, &author, text, false);
        }
        // The writable fields only: tests call this in bulk, and a full task is costly to render.
        let writable =
            FieldTree::parse("name,notes,completed,completed_at,assignee,due_on,modified_at").ok();
        let task =
            render(edit.world(), &task_gid, writable.as_ref(), Detail::Full).unwrap_or(Value::Null);
        let changed: Vec<&str> = changes.iter().map(|c| c.field).collect();
        axum::Json(json!({ "data": task, "changed": changed })).into_response()
    })
}
