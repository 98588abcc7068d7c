//! Teams: `GET /teams/{gid}`, `GET /workspaces/{gid}/teams`, `GET /users/{gid}/teams?organization=`.

use axum::Router;

use super::read::{ReadRoutes, TEAM, USER, WORKSPACE};
use crate::sim::state::SharedState;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_one("/teams/{team_gid}", TEAM)
        .get_list("/workspaces/{workspace_gid}/teams", |read| {
            read.path(WORKSPACE)?;
            Ok(read.world.teams.gids())
        })
        .get_list("/users/{user_gid}/teams", |read| {
            read.find(WORKSPACE, read.params.require("organization")?)?;
            let user = read.path(USER)?;
            Ok(read.world.teams.gids_where(|t| t.members.contains(&user)))
        })
}
