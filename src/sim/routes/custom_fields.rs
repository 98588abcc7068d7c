//! Custom fields: `GET /custom_fields/{gid}`, `GET /workspaces/{gid}/custom_fields`,
//! `GET /projects/{gid}/custom_field_settings`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::Value;

use super::support::{paginate_values, require_workspace};
use super::{Params, paginate, single};
use crate::sim::state::SharedState;
use crate::sim::wire::{ApiError, ApiResult};

/// Compact fields of a custom field setting (`CustomFieldSettingCompact` plus what Asana's list
/// returns by default).
const SETTING_COMPACT: &[&str] = &[
    "gid",
    "resource_type",
    "is_important",
    "custom_field",
    "project",
    "parent",
];

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/custom_fields/{custom_field_gid}", get(custom_field))
        .route(
            "/workspaces/{workspace_gid}/custom_fields",
            get(workspace_custom_fields),
        )
        .route(
            "/projects/{project_gid}/custom_field_settings",
            get(project_settings),
        )
}

async fn custom_field(
    State(state): State<SharedState>,
    Path(custom_field_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.custom_fields.get(&custom_field_gid).is_none() {
        return Err(ApiError::not_found("custom_field"));
    }
    single(&world, &custom_field_gid, &params, "custom_field")
}

async fn workspace_custom_fields(
    State(state): State<SharedState>,
    Path(workspace_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    require_workspace(&world, &workspace_gid)?;
    let gids: Vec<String> = world.custom_fields.iter().map(|f| f.gid.clone()).collect();
    let path = format!("/workspaces/{workspace_gid}/custom_fields");
    paginate(&state, &world, &path, &params, &gids)
}

async fn project_settings(
    State(state): State<SharedState>,
    Path(project_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    let project = world
        .projects
        .get(&project_gid)
        .ok_or_else(|| ApiError::not_found("project"))?;
    let settings: Vec<Value> = project
        .custom_fields
        .iter()
        .filter_map(|gid| world.custom_fields.get(gid))
        .map(|field| world.render_custom_field_setting(&project_gid, field))
        .collect();
    let path = format!("/projects/{project_gid}/custom_field_settings");
    paginate_values(&state, &world, &path, &params, &settings, SETTING_COMPACT)
}
