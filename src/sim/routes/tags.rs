//! Tags: `GET /tags?workspace=`, `GET /tags/{gid}`, `GET /workspaces/{gid}/tags` (`GET /tags/{gid}/tasks` is with the
//! task lists in [`super::tasks`]).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;

use super::support::require_workspace;
use super::{Params, paginate, single};
use crate::sim::state::SharedState;
use crate::sim::wire::{ApiError, ApiResult};

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/tags", get(tags))
        .route("/tags/{tag_gid}", get(tag))
        .route("/workspaces/{workspace_gid}/tags", get(workspace_tags))
}

async fn tag(
    State(state): State<SharedState>,
    Path(tag_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.tags.get(&tag_gid).is_none() {
        return Err(ApiError::not_found("tag"));
    }
    single(&world, &tag_gid, &params, "tag")
}

/// `GET /tags?workspace=`: the spec's `getTags`, where `workspace` is required.
async fn tags(
    State(state): State<SharedState>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    let workspace = params.require("workspace")?.to_string();
    require_workspace(&world, &workspace)?;
    let gids: Vec<String> = world.tags.iter().map(|t| t.gid.clone()).collect();
    paginate(&state, &world, "/tags", &params, &gids)
}

async fn workspace_tags(
    State(state): State<SharedState>,
    Path(workspace_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    require_workspace(&world, &workspace_gid)?;
    let gids: Vec<String> = world.tags.iter().map(|t| t.gid.clone()).collect();
    let path = format!("/workspaces/{workspace_gid}/tags");
    paginate(&state, &world, &path, &params, &gids)
}
