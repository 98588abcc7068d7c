//! Stories: `GET /tasks/{gid}/stories`, `POST /tasks/{gid}/stories` (comments only, from `text`
//! or `html_text`) and `GET /stories/{gid}`.

use axum::Router;
use axum::routing::post;

use super::answer::created;
use super::read::{ReadRoutes, STORY, TASK};
use super::request::ApiWrite;
use crate::sim::input::{body_bool, body_string};
use crate::sim::model::rich_text::rich_text_to_plain;
use crate::sim::state::SharedState;
use crate::sim::wire::{ApiError, ApiResult};

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_list("/tasks/{task_gid}/stories", |read| {
            let task = read.path(TASK)?;
            Ok(read.world.stories.gids_where(|s| s.target == task))
        })
        .route("/tasks/{task_gid}/stories", post(create_story))
        .get_one("/stories/{story_gid}", STORY)
}

/// `POST /tasks/{gid}/stories`: adds a comment; answers it with its `Location`.
async fn create_story(mut write: ApiWrite) -> ApiResult {
    let request = &write.request;
    TASK.find(&request.state.world(), &request.gid, request.me())?;
    let data = write.data()?;
    let request = &write.request;
    let (state, task, me) = (&request.state, &request.gid, request.me());
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
    let gid = state
        .edit(|edit| edit.comment_on_task(task, me, &text, is_pinned))
        .ok_or_else(|| ApiError::not_found(TASK.name))?;
    created(
        &state.world(),
        &gid,
        &request.params,
        &format!("/stories/{gid}"),
    )
}
