//! Goals (premium: free tokens get 402): `GET /goals?workspace=|team=|portfolio=|project=|task=
//! [&is_workspace_level=]`, `GET /goals/{gid}`, `GET /goals/{gid}/parentGoals`. A goal's status
//! updates are under `GET /status_updates?parent=`.

use axum::Router;

use super::read::{
    GOAL, GOALS_PREMIUM, PORTFOLIO, PROJECT, Read, ReadRoutes, TASK, TEAM, WORKSPACE,
};
use crate::sim::state::SharedState;
use crate::sim::wire::ApiError;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_list("/goals", list_goals)
        .get_one("/goals/{goal_gid}", GOAL)
        .get_list("/goals/{goal_gid}/parentGoals", |read| {
            let goal = read.path(GOAL)?;
            Ok(read
                .world
                .goals
                .gids_where(|g| g.supporting.contains(&goal)))
        })
}

/// `GET /goals`: the goals of a team or workspace, or those a portfolio, project or task
/// supports; the filters given all apply.
fn list_goals(read: &Read<'_>) -> Result<Vec<String>, ApiError> {
    read.premium(GOALS_PREMIUM)?;
    let workspace = read.find_param(WORKSPACE, "workspace")?;
    let team = read.find_param(TEAM, "team")?;
    let supporter = match (
        read.find_param(PORTFOLIO, "portfolio")?,
        read.find_param(PROJECT, "project")?,
        read.find_param(TASK, "task")?,
    ) {
        (Some(gid), _, _) | (None, Some(gid), _) | (None, None, Some(gid)) => Some(gid),
        (None, None, None) => None,
    };
    let workspace_level = read.params.bool("is_workspace_level")?;
    if workspace_level.is_some() && workspace.is_none() {
        return Err(ApiError::bad_request(
            "is_workspace_level: Must be used with the workspace parameter",
        ));
    }
    if workspace.is_none() && team.is_none() && supporter.is_none() {
        return Err(ApiError::bad_request(
            "Must specify one of workspace, team, portfolio, project or task",
        ));
    }
    Ok(read.world.goals.gids_where(|g| {
        team.as_ref().is_none_or(|t| g.team.as_ref() == Some(t))
            && supporter.as_ref().is_none_or(|s| g.supporting.contains(s))
            && workspace_level.is_none_or(|level| g.team.is_none() == level)
    }))
}
