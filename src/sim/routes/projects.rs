//! Projects and sections: `GET /projects?workspace=&team=&archived=`, `GET /projects/{gid}`,
//! `GET /teams/{gid}/projects`, `GET /workspaces/{gid}/projects`, `GET /projects/{gid}/sections`,
//! `GET /sections/{gid}`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;

use super::support::{bool_param, require_workspace};
use super::{Params, paginate, single};
use crate::sim::model::world::World;
use crate::sim::state::SharedState;
use crate::sim::wire::{ApiError, ApiResult};

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/projects", get(projects))
        .route("/projects/{project_gid}", get(project))
        .route("/teams/{team_gid}/projects", get(team_projects))
        .route(
            "/workspaces/{workspace_gid}/projects",
            get(workspace_projects),
        )
        .route("/projects/{project_gid}/sections", get(project_sections))
        .route("/sections/{section_gid}", get(section))
}

fn project_gids(world: &World, team: Option<&str>, archived: Option<bool>) -> Vec<String> {
    world
        .projects
        .iter()
        .filter(|p| team.is_none_or(|t| p.team == t))
        .filter(|p| archived.is_none_or(|a| p.archived == a))
        .map(|p| p.gid.clone())
        .collect()
}

/// `GET /projects`: Asana now requires a `workspace` or a `team` (2025 change to
/// `GET /projects`, `GET /users` and `GET /tags`).
async fn projects(
    State(state): State<SharedState>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let archived = bool_param(&params, "archived")?;
    let world = state.world();
    let workspace = params.get("workspace");
    let team = params.get("team");
    if workspace.is_none() && team.is_none() {
        return Err(ApiError::bad_request(
            "workspace: Missing input. You must specify a workspace or a team",
        ));
    }
    if let Some(workspace) = workspace {
        require_workspace(&world, workspace)?;
    }
    if let Some(team) = team
        && world.teams.get(team).is_none()
    {
        return Err(ApiError::not_found("team"));
    }
    let gids = project_gids(&world, team, archived);
    paginate(&state, &world, "/projects", &params, &gids)
}

async fn project(
    State(state): State<SharedState>,
    Path(project_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.projects.get(&project_gid).is_none() {
        return Err(ApiError::not_found("project"));
    }
    single(&world, &project_gid, &params, "project")
}

async fn team_projects(
    State(state): State<SharedState>,
    Path(team_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let archived = bool_param(&params, "archived")?;
    let world = state.world();
    if world.teams.get(&team_gid).is_none() {
        return Err(ApiError::not_found("team"));
    }
    let gids = project_gids(&world, Some(&team_gid), archived);
    let path = format!("/teams/{team_gid}/projects");
    paginate(&state, &world, &path, &params, &gids)
}

async fn workspace_projects(
    State(state): State<SharedState>,
    Path(workspace_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let archived = bool_param(&params, "archived")?;
    let world = state.world();
    require_workspace(&world, &workspace_gid)?;
    let gids = project_gids(&world, None, archived);
    let path = format!("/workspaces/{workspace_gid}/projects");
    paginate(&state, &world, &path, &params, &gids)
}

async fn project_sections(
    State(state): State<SharedState>,
    Path(project_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.projects.get(&project_gid).is_none() {
        return Err(ApiError::not_found("project"));
    }
    let gids: Vec<String> = world
        .sections
        .iter()
        .filter(|s| s.project == project_gid)
        .map(|s| s.gid.clone())
        .collect();
    let path = format!("/projects/{project_gid}/sections");
    paginate(&state, &world, &path, &params, &gids)
}

async fn section(
    State(state): State<SharedState>,
    Path(section_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.sections.get(&section_gid).is_none() {
        return Err(ApiError::not_found("section"));
    }
    single(&world, &section_gid, &params, "section")
}
