//! Time tracking (premium: free tokens get 402): `GET /tasks/{gid}/time_tracking_entries`,
//! `GET /time_tracking_entries/{gid}`, and `GET /time_tracking_entries` filtered by `task`,
//! `attributable_to` (a project), `portfolio` (its projects), `user` and `workspace` with
//! `entered_on_start_date` / `entered_on_end_date` (inclusive).

use axum::Router;

use super::read::{
    PORTFOLIO, PROJECT, Read, ReadRoutes, TASK, TIME_TRACKING_ENTRY, TIME_TRACKING_PREMIUM, USER,
    WORKSPACE,
};
use crate::sim::input::parse_date;
use crate::sim::model::world::TimeEntry;
use crate::sim::state::SharedState;
use crate::sim::wire::ApiError;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_list("/tasks/{task_gid}/time_tracking_entries", |read| {
            read.premium(TIME_TRACKING_PREMIUM)?;
            let task = read.path(TASK)?;
            Ok(read.world.time_entries.gids_within(&task, |_| true))
        })
        .get_one(
            "/time_tracking_entries/{time_tracking_entry_gid}",
            TIME_TRACKING_ENTRY,
        )
        .get_list("/time_tracking_entries", list_entries)
}

/// `GET /time_tracking_entries`: the entries every given filter keeps.
fn list_entries(read: &Read<'_>) -> Result<Vec<String>, ApiError> {
    read.premium(TIME_TRACKING_PREMIUM)?;
    let task = read.find_param(TASK, "task")?;
    let project = read.find_param(PROJECT, "attributable_to")?;
    let portfolio = read.find_param(PORTFOLIO, "portfolio")?;
    let user = read.find_param(USER, "user")?;
    let workspace = read.find_param(WORKSPACE, "workspace")?;
    let date = |key: &str| {
        read.params
            .get(key)
            .map(|raw| parse_date(key, raw))
            .transpose()
    };
    let start = date("entered_on_start_date")?;
    let end = date("entered_on_end_date")?;
    if workspace.is_some() && start.is_none() && end.is_none() {
        return Err(ApiError::bad_request(
            "entered_on_start_date: Missing input. Filtering by workspace needs \
             entered_on_start_date or entered_on_end_date",
        ));
    }
    if [&task, &project, &portfolio, &user, &workspace]
        .iter()
        .all(|f| f.is_none())
    {
        return Err(ApiError::bad_request(
            "Must specify one of task, attributable_to, portfolio, user or workspace",
        ));
    }
    let world = read.world;
    let portfolio_items = portfolio
        .and_then(|p| world.portfolios.get(&p))
        .map(|p| p.items.as_slice());
    let keep = |e: &TimeEntry| {
        task.as_ref().is_none_or(|t| &e.task == t)
            && project
                .as_ref()
                .is_none_or(|p| e.attributable_to.as_ref() == Some(p))
            && portfolio_items.is_none_or(|items| {
                e.attributable_to
                    .as_ref()
                    .is_some_and(|p| items.contains(p))
            })
            && user.as_ref().is_none_or(|u| &e.created_by == u)
            && start.as_ref().is_none_or(|s| &e.entered_on >= s)
            && end.as_ref().is_none_or(|d| &e.entered_on <= d)
    };
    Ok(match &task {
        Some(task) => world.time_entries.gids_within(task, keep),
        None => world.time_entries.gids_where(keep),
    })
}
