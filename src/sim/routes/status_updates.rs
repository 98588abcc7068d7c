//! Status updates: `POST /status_updates`, `GET /status_updates?parent=&created_since=`,
//! `GET /status_updates/{gid}`.

use axum::Router;
use axum::routing::post;

use super::answer::created;
use super::read::{GOAL, PORTFOLIO, PROJECT, ReadRoutes, STATUS_UPDATE};
use super::request::ApiWrite;
use crate::sim::input::{body_string, unrecognized};
use crate::sim::model::rich_text::{escape_xml, rich_text_to_plain};
use crate::sim::model::world::StatusUpdate;
use crate::sim::state::SharedState;
use crate::sim::wire::{ApiError, ApiResult};

/// `status_type` values allowed on project and portfolio status updates.
pub const PROJECT_STATUS_TYPES: &[&str] = &[
    "on_track",
    "at_risk",
    "off_track",
    "on_hold",
    "complete",
    "dropped",
];

/// `status_type` values allowed on goal status updates.
pub const GOAL_STATUS_TYPES: &[&str] = &[
    "on_track",
    "at_risk",
    "off_track",
    "achieved",
    "partial",
    "missed",
    "dropped",
];

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_list("/status_updates", |read| {
            let raw = read.params.require("parent")?;
            let created_since = read.params.time("created_since")?;
            let kind = match read.world.kind_of(raw) {
                Some("project") => PROJECT,
                Some("portfolio") => PORTFOLIO,
                Some("goal") => GOAL,
                _ => return Err(ApiError::not_found("parent")),
            };
            let parent = read.find(kind, raw)?;
            Ok(read.world.status_updates.gids_within(&parent, |u| {
                created_since.is_none_or(|since| u.created_at >= since)
            }))
        })
        .route("/status_updates", post(create))
        .get_one("/status_updates/{status_update_gid}", STATUS_UPDATE)
}

/// `POST /status_updates`: posts a status update on a project (or portfolio, or goal); answers it
/// with its `Location`.
async fn create(mut write: ApiWrite) -> ApiResult {
    let data = write.data()?;
    let request = &write.request;
    let state = &request.state;
    let required = |key: &str| -> Result<String, ApiError> {
        body_string(&data, key)?
            .ok_or_else(|| ApiError::bad_request(format!("{key}: Missing input")))
    };
    let parent = required("parent")?;
    let text = required("text")?;
    let status_type = required("status_type")?;
    let title = body_string(&data, "title")?.unwrap_or_default();
    let html_text = match body_string(&data, "html_text")? {
        Some(html) => {
            rich_text_to_plain(&html, "html_text")?;
            html
        }
        None => format!("<body>{}</body>", escape_xml(&text)),
    };
    let now = state.clock.now();
    let gid = {
        let mut world = state.world_mut();
        let allowed = match world.kind_of(&parent) {
            Some("project" | "portfolio") => PROJECT_STATUS_TYPES,
            Some("goal") => GOAL_STATUS_TYPES,
            _ => return Err(unrecognized("parent", &parent)),
        };
        if !allowed.contains(&status_type.as_str()) {
            return Err(ApiError::bad_request(format!(
                "status_type: Invalid status type for this parent: {status_type}. Allowed: {}",
                allowed.join(", ")
            )));
        }
        let gid = world.gids.next_gid();
        world.add_status_update(StatusUpdate {
            gid,
            parent,
            author: request.me().to_string(),
            status_type,
            title,
            text,
            html_text,
            created_at: now,
        })
    };
    created(
        &state.world(),
        &gid,
        &request.params,
        &format!("/status_updates/{gid}"),
    )
}
