//! Tasks: `GET /tasks` (by project, section, tag, or assignee + workspace, with `completed_since`
//! and `modified_since`), `GET /projects/{gid}/tasks`, `GET /sections/{gid}/tasks`,
//! `GET /tags/{gid}/tasks`, `GET /tasks/{gid}`, `GET /tasks/{gid}/subtasks`, `PUT /tasks/{gid}`,
//! `DELETE /tasks/{gid}` and `POST /tasks`. Writes go through `SimState::edit`, which records their
//! events.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::routing::get;
use chrono::{DateTime, Utc};

use super::support::{created_object, read_body, resolve_user, time_param};
use super::{Params, paginate, single};
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
        .route("/tasks", get(list_tasks).post(create_task))
        .route(
            "/tasks/{task_gid}",
            get(get_task).put(update_task).delete(delete_task),
        )
        .route("/tasks/{task_gid}/subtasks", get(subtasks))
        .route("/projects/{project_gid}/tasks", get(project_tasks))
        .route("/sections/{section_gid}/tasks", get(section_tasks))
        .route("/tags/{tag_gid}/tasks", get(tag_tasks))
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
            Some(_) => time_param(params, "completed_since")?.map(CompletedSince::At),
        };
        let modified_since = if allow_modified {
            time_param(params, "modified_since")?
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
}

fn gids<'a>(tasks: impl Iterator<Item = &'a Task>, filter: &TaskFilter) -> Vec<String> {
    tasks
        .filter(|t| filter.keeps(t))
        .map(|t| t.gid.clone())
        .collect()
}

async fn list_tasks(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let filter = TaskFilter::parse(&params, true)?;
    let world = state.world();
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
    let selected = if let Some(project) = project {
        if world.projects.get(project).is_none() {
            return Err(ApiError::not_found("project"));
        }
        gids(world.project_tasks(project), &filter)
    } else if let Some(section) = section {
        section_gids(&world, section, &filter)?
    } else if let Some(tag) = tag {
        tag_gids(&world, tag, &filter)?
    } else {
        let workspace = workspace.unwrap_or_default();
        super::support::require_workspace(&world, workspace)?;
        let raw = assignee.unwrap_or_default();
        let user =
            resolve_user(&world, &caller, raw).ok_or_else(|| unrecognized("assignee", raw))?;
        gids(
            world
                .tasks
                .iter()
                .filter(|t| t.assignee.as_deref() == Some(user.as_str())),
            &filter,
        )
    };
    paginate(&state, &world, "/tasks", &params, &selected)
}

fn section_gids(
    world: &World,
    section: &str,
    filter: &TaskFilter,
) -> Result<Vec<String>, ApiError> {
    if world.sections.get(section).is_none() {
        return Err(ApiError::not_found("section"));
    }
    Ok(gids(
        world
            .tasks
            .iter()
            .filter(|t| t.memberships.iter().any(|(_, s)| s == section)),
        filter,
    ))
}

fn tag_gids(world: &World, tag: &str, filter: &TaskFilter) -> Result<Vec<String>, ApiError> {
    if world.tags.get(tag).is_none() {
        return Err(ApiError::not_found("tag"));
    }
    Ok(gids(
        world
            .tasks
            .iter()
            .filter(|t| t.tags.iter().any(|g| g == tag)),
        filter,
    ))
}

async fn project_tasks(
    State(state): State<SharedState>,
    Path(project_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let filter = TaskFilter::parse(&params, false)?;
    let world = state.world();
    if world.projects.get(&project_gid).is_none() {
        return Err(ApiError::not_found("project"));
    }
    let selected = gids(world.project_tasks(&project_gid), &filter);
    let path = format!("/projects/{project_gid}/tasks");
    paginate(&state, &world, &path, &params, &selected)
}

async fn section_tasks(
    State(state): State<SharedState>,
    Path(section_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let filter = TaskFilter::parse(&params, false)?;
    let world = state.world();
    let selected = section_gids(&world, &section_gid, &filter)?;
    let path = format!("/sections/{section_gid}/tasks");
    paginate(&state, &world, &path, &params, &selected)
}

async fn tag_tasks(
    State(state): State<SharedState>,
    Path(tag_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    let selected = tag_gids(&world, &tag_gid, &TaskFilter::default())?;
    let path = format!("/tags/{tag_gid}/tasks");
    paginate(&state, &world, &path, &params, &selected)
}

fn live_task<'a>(world: &'a World, gid: &str) -> Result<&'a Task, ApiError> {
    world
        .tasks
        .get(gid)
        .filter(|t| !t.deleted)
        .ok_or_else(|| ApiError::not_found("task"))
}

async fn get_task(
    State(state): State<SharedState>,
    Path(task_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    live_task(&world, &task_gid)?;
    single(&world, &task_gid, &params, "task")
}

async fn subtasks(
    State(state): State<SharedState>,
    Path(task_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    live_task(&world, &task_gid)?;
    let selected: Vec<String> = world
        .subtasks_of(&task_gid)
        .map(|t| t.gid.clone())
        .collect();
    let path = format!("/tasks/{task_gid}/subtasks");
    paginate(&state, &world, &path, &params, &selected)
}

async fn update_task(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(task_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let mut params = Params::parse(query)?;
    let patch = {
        let world = state.world();
        live_task(&world, &task_gid)?;
        let data = read_body(&body, &mut params)?;
        parse_patch(&world, Some(&caller.record.user_gid), &data)?
    };
    let me = &caller.record.user_gid;
    state
        .edit(|edit| edit.change_task(&task_gid, &patch, Some(me)))
        .ok_or_else(|| ApiError::not_found("task"))?;
    let world = state.world();
    single(&world, &task_gid, &params, "task")
}

async fn create_task(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let mut params = Params::parse(query)?;
    let new = {
        let world = state.world();
        let data = read_body(&body, &mut params)?;
        parse_new_task(&world, &caller.record.user_gid, &data)?
    };
    let me = &caller.record.user_gid;
    let gid = state.edit(|edit| edit.create_task(new, Some(me)));
    let world = state.world();
    created_object(&world, &gid, &params, &format!("/tasks/{gid}"))
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
