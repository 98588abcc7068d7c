//! Teams: `GET /teams/{gid}`, `GET /workspaces/{gid}/teams` (also under its older name
//! `GET /organizations/{gid}/teams`, which connectors still call), `GET /teams/{gid}/users`,
//! `GET /users/{gid}/teams?organization=`.

use axum::Router;

use super::read::{Read, ReadRoutes, TEAM, USER, WORKSPACE};
use crate::sim::state::SharedState;
use crate::sim::wire::ApiError;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_one("/teams/{team_gid}", TEAM)
        .get_list("/workspaces/{workspace_gid}/teams", workspace_teams)
        .get_list("/organizations/{workspace_gid}/teams", workspace_teams)
        .get_list("/teams/{team_gid}/users", |read| {
            let team = read.path(TEAM)?;
            Ok(read.world.active_team_members(&team))
        })
        .get_list("/users/{user_gid}/teams", |read| {
            read.find(WORKSPACE, read.params.require("organization")?)?;
            let user = read.path(USER)?;
            Ok(read
                .world
                .team_memberships
                .iter()
                .filter(|m| m.user == user)
                .map(|m| m.team.clone())
                .collect())
        })
}

/// The teams of the workspace the path names.
fn workspace_teams(read: &Read<'_>) -> Result<Vec<String>, ApiError> {
    read.path(WORKSPACE)?;
    Ok(read.world.teams.gids())
}
