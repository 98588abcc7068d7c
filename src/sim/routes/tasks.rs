//! Tasks: `GET /tasks` (by project, section, tag, or assignee + workspace, with `completed_since`
//! and `modified_since`), `GET /projects/{gid}/tasks`, `GET /sections/{gid}/tasks`,
//! `GET /tags/{gid}/tasks`, `GET /tasks/{gid}`, `GET /tasks/{gid}/subtasks`,
//! `GET /tasks/{gid}/dependencies` and `/dependents` (premium), `PUT /tasks/{gid}`,
//! `DELETE /tasks/{gid}` and `POST /tasks`. Writes go through `SimState::edit`, which records their
//! events.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::routing::{post, put};
use chrono::{DateTime, Utc};

use super::answer::{created, single};
use super::params::Params;
use super::read::{DEPENDENCIES_PREMIUM, PROJECT, Read, ReadRoutes, SECTION, TAG, TASK, WORKSPACE};
use super::request::ApiWrite;
use crate::sim::input::unrecognized;
use crate::sim::model::requests::{parse_new_task, parse_patch};
use crate::sim::model::world::{Task, World};
use crate::sim::state::{Caller, SharedState};
use crate::sim::wire::{ApiError, ApiResult};

/// Asana's message when `GET /tasks` gets no (or more than one) way to select tasks.
pub const TASKS_SELECTOR_MESSAGE: &str =
    "Must specify exactly one of project, tag, section, user task list, or assignee + workspace";

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_list("/tasks", list_tasks)
        .route("/tasks", post(create_task))
        .get_one("/tasks/{task_gid}", TASK)
        .route("/tasks/{task_gid}", put(update_task).delete(delete_task))
        .get_list("/tasks/{task_gid}/subtasks", |read| {
            let task = read.path(TASK)?;
            Ok(read
                .world
                .subtasks_of(&task)
                .map(|t| t.gid.clone())
                .collect())
        })
        .get_list("/tasks/{task_gid}/dependencies", |read| {
            linked(read, |t| &t.dependencies)
        })
        .get_list("/tasks/{task_gid}/dependents", |read| {
            linked(read, |t| &t.dependents)
        })
        .get_list("/projects/{project_gid}/tasks", |read| {
            let filter = TaskFilter::parse(read.params, false)?;
            let project = read.path(PROJECT)?;
            Ok(filter.select(read.world, |t| t.in_project(&project)))
        })
        .get_list("/sections/{section_gid}/tasks", |read| {
            let filter = TaskFilter::parse(read.params, false)?;
            let section = read.path(SECTION)?;
            Ok(filter.select(read.world, |t| t.in_section(&section)))
        })
        .get_list("/tags/{tag_gid}/tasks", |read| {
            let tag = read.path(TAG)?;
            Ok(TaskFilter::default().select(read.world, |t| t.has_tag(&tag)))
        })
}

/// The live tasks a premium-only link of the path's task names (its dependencies or dependents).
fn linked(read: &Read<'_>, links: fn(&Task) -> &Vec<String>) -> Result<Vec<String>, ApiError> {
    read.premium(DEPENDENCIES_PREMIUM)?;
    let task = read.path(TASK)?;
    let world = read.world;
    let gids = world.tasks.get(&task).map(links).into_iter().flatten();
    Ok(gids
        .filter(|gid| world.tasks.get(gid).is_some_and(|t| !t.deleted))
        .cloned()
        .collect())
}

/// `completed_since` as Asana reads it: `now` keeps only incomplete tasks; a time keeps incomplete
/// tasks and those completed at or after it.
#[derive(Debug, Clone, Copy)]
enum CompletedSince {
    Now,
    At(DateTime<Utc>),
}

/// Time filters shared by the task lists.
#[derive(Debug, Clone, Copy, Default)]
struct TaskFilter {
    completed_since: Option<CompletedSince>,
    modified_since: Option<DateTime<Utc>>,
}

impl TaskFilter {
    fn parse(params: &Params, allow_modified: bool) -> Result<TaskFilter, ApiError> {
        let completed_since = match params.get("completed_since") {
            None => None,
            Some("now") => Some(CompletedSince::Now),
            Some(_) => params.time("completed_since")?.map(CompletedSince::At),
        };
        let modified_since = if allow_modified {
            params.time("modified_since")?
        } else {
            None
        };
        Ok(TaskFilter {
            completed_since,
            modified_since,
        })
    }

    fn keeps(&self, task: &Task) -> bool {
        if task.deleted {
            return false;
        }
        let completed_ok = match self.completed_since {
            None => true,
            Some(CompletedSince::Now) => !task.completed,
            Some(CompletedSince::At(since)) => {
                !task.completed
                    || task
                        .completed_at
                        .is_some_and(|at| at.timestamp_millis() >= since.timestamp_millis())
            }
        };
        // Millisecond precision, like the timestamps clients see and send back.
        let modified_ok = self
            .modified_since
            .is_none_or(|since| task.modified_at.timestamp_millis() >= since.timestamp_millis());
        completed_ok && modified_ok
    }

    /// The live tasks `keep` takes that pass the filter, in order.
    fn select(&self, world: &World, keep: impl Fn(&Task) -> bool) -> Vec<String> {
        world.tasks.gids_where(|t| self.keeps(t) && keep(t))
    }
}

/// `GET /tasks`: exactly one way of selecting tasks (a project, a section, a tag, or an assignee
/// in a workspace), filtered by `completed_since` and `modified_since`.
fn list_tasks(read: &Read<'_>) -> Result<Vec<String>, ApiError> {
    let params = read.params;
    let world = read.world;
    let filter = TaskFilter::parse(params, true)?;
    let project = params.get("project");
    let section = params.get("section");
    let tag = params.get("tag");
    let assignee = params.get("assignee");
    let workspace = params.get("workspace");
    let selectors = [
        project.is_some(),
        section.is_some(),
        tag.is_some(),
        assignee.is_some() || workspace.is_some(),
    ]
    .iter()
    .filter(|&&s| s)
    .count();
    if selectors != 1 || assignee.is_some() != workspace.is_some() {
        return Err(ApiError::bad_request(TASKS_SELECTOR_MESSAGE));
    }
    if let Some(project) = project {
        let project = read.find(PROJECT, project)?;
        Ok(filter.select(world, |t| t.in_project(&project)))
    } else if let Some(section) = section {
        let section = read.find(SECTION, section)?;
        Ok(filter.select(world, |t| t.in_section(&section)))
    } else if let Some(tag) = tag {
        let tag = read.find(TAG, tag)?;
        Ok(filter.select(world, |t| t.has_tag(&tag)))
    } else {
        read.find(WORKSPACE, workspace.unwrap_or_default())?;
        let raw = assignee.unwrap_or_default();
        let user = world
            .find_user(raw, read.me())
            .ok_or_else(|| unrecognized("assignee", raw))?;
        Ok(filter.select(world, |t| t.assignee.as_deref() == Some(user.as_str())))
    }
}

/// `PUT /tasks/{gid}`: changes the task's writable fields; answers the task.
async fn update_task(mut write: ApiWrite) -> ApiResult {
    let request = &write.request;
    TASK.find(&request.state.world(), &request.gid, request.me())?;
    let data = write.data()?;
    let request = &write.request;
    let (state, task, me) = (&request.state, &request.gid, request.me());
    let patch = parse_patch(&state.world(), Some(me), &data)?;
    state
        .edit(|edit| edit.change_task(task, &patch, Some(me)))
        .ok_or_else(|| ApiError::not_found(TASK.name))?;
    single(&state.world(), task, &request.params, TASK.name)
}

/// `POST /tasks`: creates a task; answers it with its `Location`.
async fn create_task(mut write: ApiWrite) -> ApiResult {
    let data = write.data()?;
    let request = &write.request;
    let (state, me) = (&request.state, request.me());
    let new = parse_new_task(&state.world(), me, &data)?;
    let gid = state.edit(|edit| edit.create_task(new, Some(me)));
    created(
        &state.world(),
        &gid,
        &request.params,
        &format!("/tasks/{gid}"),
    )
}

/// `DELETE /tasks/{gid}`: trashes the task; answers an empty data record, as Asana does.
async fn delete_task(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(task_gid): Path<String>,
) -> ApiResult {
    let me = &caller.record.user_gid;
    if !state.edit(|edit| edit.delete_task(&task_gid, Some(me))) {
        return Err(ApiError::not_found("task"));
    }
    crate::sim::wire::ok(serde_json::json!({}))
}
