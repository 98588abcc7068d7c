//! Teams: `GET /teams/{gid}`, `GET /workspaces/{gid}/teams`, `GET /users/{gid}/teams?organization=`.

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::routing::get;

use super::support::{require_workspace, resolve_user};
use super::{Params, paginate, single};
use crate::sim::state::{Caller, SharedState};
use crate::sim::wire::{ApiError, ApiResult};

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/teams/{team_gid}", get(team))
        .route("/workspaces/{workspace_gid}/teams", get(workspace_teams))
        .route("/users/{user_gid}/teams", get(user_teams))
}

async fn team(
    State(state): State<SharedState>,
    Path(team_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.teams.get(&team_gid).is_none() {
        return Err(ApiError::not_found("team"));
    }
    single(&world, &team_gid, &params, "team")
}

async fn workspace_teams(
    State(state): State<SharedState>,
    Path(workspace_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    require_workspace(&world, &workspace_gid)?;
    let gids: Vec<String> = world.teams.iter().map(|t| t.gid.clone()).collect();
    let path = format!("/workspaces/{workspace_gid}/teams");
    paginate(&state, &world, &path, &params, &gids)
}

async fn user_teams(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(user_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let organization = params.require("organization")?.to_string();
    let world = state.world();
    require_workspace(&world, &organization)?;
    let user =
        resolve_user(&world, &caller, &user_gid).ok_or_else(|| ApiError::not_found("user"))?;
    let gids: Vec<String> = world
        .teams
        .iter()
        .filter(|t| t.members.contains(&user))
        .map(|t| t.gid.clone())
        .collect();
    let path = format!("/users/{user_gid}/teams");
    paginate(&state, &world, &path, &params, &gids)
}
