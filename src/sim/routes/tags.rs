//! Tags: `GET /tags?workspace=`, `GET /tags/{gid}`, `GET /workspaces/{gid}/tags`,
//! `GET /tasks/{gid}/tags` (`GET /tags/{gid}/tasks` is with the task lists in [`super::tasks`]).

use axum::Router;

use super::read::{ReadRoutes, TAG, TASK, WORKSPACE};
use crate::sim::state::SharedState;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        // The spec's `getTags`, where `workspace` is required.
        .get_list("/tags", |read| {
            read.find(WORKSPACE, read.params.require("workspace")?)?;
            Ok(read.world.tags.gids())
        })
        .get_one("/tags/{tag_gid}", TAG)
        .get_list("/workspaces/{workspace_gid}/tags", |read| {
            read.path(WORKSPACE)?;
            Ok(read.world.tags.gids())
        })
        .get_list("/tasks/{task_gid}/tags", |read| {
            let task = read.path(TASK)?;
            Ok(read
                .world
                .tasks
                .get(&task)
                .map(|t| t.tags.clone())
                .unwrap_or_default())
        })
}
