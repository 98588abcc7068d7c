//! Status updates: `POST /status_updates`, `GET /status_updates?parent=&created_since=`,
//! `GET /status_updates/{gid}`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::routing::get;

use super::support::{created_object, read_body, time_param};
use super::{Params, paginate, single};
use crate::sim::input::{body_string, unrecognized};
use crate::sim::model::rich_text::{escape_xml, rich_text_to_plain};
use crate::sim::model::world::StatusUpdate;
use crate::sim::state::{Caller, SharedState};
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
        .route("/status_updates", get(list).post(create))
        .route("/status_updates/{status_update_gid}", get(status_update))
}

async fn status_update(
    State(state): State<SharedState>,
    Path(gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.status_updates.get(&gid).is_none() {
        return Err(ApiError::not_found("status_update"));
    }
    single(&world, &gid, &params, "status_update")
}

async fn list(
    State(state): State<SharedState>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let parent = params.require("parent")?.to_string();
    let created_since = time_param(&params, "created_since")?;
    let world = state.world();
    if !matches!(
        world.kind_of(&parent),
        Some("project" | "portfolio" | "goal")
    ) {
        return Err(ApiError::not_found("parent"));
    }
    let gids: Vec<String> = world
        .status_updates
        .iter()
        .filter(|u| u.parent == parent)
        .filter(|u| created_since.is_none_or(|since| u.created_at >= since))
        .map(|u| u.gid.clone())
        .collect();
    paginate(&state, &world, "/status_updates", &params, &gids)
}

async fn create(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let mut params = Params::parse(query)?;
    let data = read_body(&body, &mut params)?;
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
            author: caller.record.user_gid.clone(),
            status_type,
            title,
            text,
            html_text,
            created_at: now,
        })
    };
    let world = state.world();
    created_object(&world, &gid, &params, &format!("/status_updates/{gid}"))
}
