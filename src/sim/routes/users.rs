//! Users and workspaces: `GET /users/me`, `GET /users/{gid}`, `GET /users`,
//! `GET /workspaces`, `GET /workspaces/{gid}`, `GET /workspaces/{gid}/users`.

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::routing::get;

use super::{Params, paginate, single};
use crate::sim::state::{Caller, SharedState};
use crate::sim::wire::{ApiError, ApiResult};

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/users/me", get(me))
        .route("/users/{user_gid}", get(user))
        .route("/users", get(users))
        .route("/workspaces", get(workspaces))
        .route("/workspaces/{workspace_gid}", get(workspace))
        .route("/workspaces/{workspace_gid}/users", get(workspace_users))
}

async fn me(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    single(&world, &caller.record.user_gid, &params, "user")
}

async fn user(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(user_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    let gid = if user_gid == "me" {
        caller.record.user_gid.clone()
    } else if let Some(found) = world.users.iter().find(|u| u.email == user_gid) {
        found.gid.clone()
    } else {
        user_gid
    };
    if world.users.get(&gid).is_none() {
        return Err(ApiError::not_found("user"));
    }
    single(&world, &gid, &params, "user")
}

async fn users(
    State(state): State<SharedState>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if let Some(workspace) = params.get("workspace")
        && workspace != world.workspace.gid
    {
        return Err(ApiError::not_found("workspace"));
    }
    let gids: Vec<String> = world.users.iter().filter(|u| u.active).map(|u| u.gid.clone()).collect();
    paginate(&state, &world, "/users", &params, &gids)
}

async fn workspaces(
    State(state): State<SharedState>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    let gids = vec![world.workspace.gid.clone()];
    paginate(&state, &world, "/workspaces", &params, &gids)
}

async fn workspace(
    State(state): State<SharedState>,
    Path(workspace_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if workspace_gid != world.workspace.gid {
        return Err(ApiError::not_found("workspace"));
    }
    single(&world, &workspace_gid, &params, "workspace")
}

async fn workspace_users(
    State(state): State<SharedState>,
    Path(workspace_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if workspace_gid != world.workspace.gid {
        return Err(ApiError::not_found("workspace"));
    }
    let gids: Vec<String> = world.users.iter().filter(|u| u.active).map(|u| u.gid.clone()).collect();
    let path = format!("/workspaces/{workspace_gid}/users");
    paginate(&state, &world, &path, &params, &gids)
}
