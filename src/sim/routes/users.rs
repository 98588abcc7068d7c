//! Users and workspaces: `GET /users/{gid}` (a gid, an email address or `me`, which also answers
//! `GET /users/me`), `GET /users?workspace=&team=`, `GET /workspaces`, `GET /workspaces/{gid}`,
//! `GET /workspaces/{gid}/users`.

use axum::Router;

use super::read::{ReadRoutes, TEAM, USER, WORKSPACE};
use crate::sim::model::world::World;
use crate::sim::state::SharedState;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_one("/users/{user_gid}", USER)
        .get_list("/users", |read| {
            read.find_param(WORKSPACE, "workspace")?;
            match read.find_param(TEAM, "team")? {
                Some(team) => Ok(read.world.active_team_members(&team)),
                None => Ok(active_users(read.world)),
            }
        })
        .get_list("/workspaces", |read| {
            Ok(vec![read.world.workspace.gid.clone()])
        })
        .get_one("/workspaces/{workspace_gid}", WORKSPACE)
        .get_list("/workspaces/{workspace_gid}/users", |read| {
            read.path(WORKSPACE)?;
            Ok(active_users(read.world))
        })
}

/// Users still in the organization, in order.
fn active_users(world: &World) -> Vec<String> {
    world.users.gids_where(|u| u.active)
}
