//! Stories: `GET /tasks/{gid}/stories`, `POST /tasks/{gid}/stories` (comments only, from `text`
//! or `html_text`) and `GET /stories/{gid}`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::routing::get;

use super::support::{created_object, read_body};
use super::{Params, paginate, single};
use crate::sim::input::{body_bool, body_string};
use crate::sim::model::rich_text::rich_text_to_plain;
use crate::sim::state::{Caller, SharedState};
use crate::sim::wire::{ApiError, ApiResult};

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route(
            "/tasks/{task_gid}/stories",
            get(task_stories).post(create_story),
        )
        .route("/stories/{story_gid}", get(story))
}

async fn task_stories(
    State(state): State<SharedState>,
    Path(task_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.tasks.get(&task_gid).is_none_or(|t| t.deleted) {
        return Err(ApiError::not_found("task"));
    }
    let gids: Vec<String> = world
        .stories
        .iter()
        .filter(|s| s.target == task_gid)
        .map(|s| s.gid.clone())
        .collect();
    let path = format!("/tasks/{task_gid}/stories");
    paginate(&state, &world, &path, &params, &gids)
}

async fn story(
    State(state): State<SharedState>,
    Path(story_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let world = state.world();
    if world.stories.get(&story_gid).is_none() {
        return Err(ApiError::not_found("story"));
    }
    single(&world, &story_gid, &params, "story")
}

async fn create_story(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(task_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let mut params = Params::parse(query)?;
    if state.world().tasks.get(&task_gid).is_none_or(|t| t.deleted) {
        return Err(ApiError::not_found("task"));
    }
    let data = read_body(&body, &mut params)?;
    let text = match (
        body_string(&data, "text")?,
        body_string(&data, "html_text")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "You may only provide one of text or html_text",
            ));
        }
        (Some(text), None) => text,
        (None, Some(html)) => rich_text_to_plain(&html, "html_text")?,
        (None, None) => return Err(ApiError::bad_request("text: Missing input")),
    };
    let is_pinned = body_bool(&data, "is_pinned")?.unwrap_or(false);
    let me = &caller.record.user_gid;
    let gid = state
        .edit(|edit| edit.comment_on_task(&task_gid, me, &text, is_pinned))
        .ok_or_else(|| ApiError::not_found("task"))?;
    let world = state.world();
    created_object(&world, &gid, &params, &format!("/stories/{gid}"))
}
