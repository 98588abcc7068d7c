//! Projects and sections: `GET /projects?workspace=&team=&archived=`, `GET /projects/{gid}`,
//! `GET /teams/{gid}/projects`, `GET /workspaces/{gid}/projects`, `GET /tasks/{gid}/projects`,
//! `GET /projects/{gid}/sections`, `GET /sections/{gid}`.

use axum::Router;

use super::read::{PROJECT, ReadRoutes, SECTION, TASK, TEAM, WORKSPACE};
use crate::sim::model::world::World;
use crate::sim::state::SharedState;
use crate::sim::wire::ApiError;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        // Asana now requires a `workspace` or a `team` (2025 change to `GET /projects`,
        // `GET /users` and `GET /tags`).
        .get_list("/projects", |read| {
            let archived = read.params.bool("archived")?;
            let workspace = read.params.get("workspace");
            let team = read.params.get("team");
            if workspace.is_none() && team.is_none() {
                return Err(ApiError::bad_request(
                    "workspace: Missing input. You must specify a workspace or a team",
                ));
            }
            if let Some(workspace) = workspace {
                read.find(WORKSPACE, workspace)?;
            }
            if let Some(team) = team {
                read.find(TEAM, team)?;
            }
            Ok(project_gids(read.world, team, archived))
        })
        .get_one("/projects/{project_gid}", PROJECT)
        .get_list("/teams/{team_gid}/projects", |read| {
            let archived = read.params.bool("archived")?;
            let team = read.path(TEAM)?;
            Ok(project_gids(read.world, Some(&team), archived))
        })
        .get_list("/workspaces/{workspace_gid}/projects", |read| {
            let archived = read.params.bool("archived")?;
            read.path(WORKSPACE)?;
            Ok(project_gids(read.world, None, archived))
        })
        .get_list("/tasks/{task_gid}/projects", |read| {
            let task = read.path(TASK)?;
            let memberships = read.world.tasks.get(&task).map(|t| &t.memberships);
            Ok(memberships
                .into_iter()
                .flatten()
                .map(|(project, _)| project.clone())
                .collect())
        })
        .get_list("/projects/{project_gid}/sections", |read| {
            let project = read.path(PROJECT)?;
            Ok(read.world.sections.gids_within(&project, |_| true))
        })
        .get_one("/sections/{section_gid}", SECTION)
}

/// Projects of `team` (all when `None`), archived or not as asked, in order.
fn project_gids(world: &World, team: Option<&str>, archived: Option<bool>) -> Vec<String> {
    world.projects.gids_where(|p| {
        team.is_none_or(|t| p.team == t) && archived.is_none_or(|a| p.archived == a)
    })
}
