//! Attachments, metadata only: `GET /attachments?parent=` (a task, or a project's key
//! resources) and `GET /attachments/{gid}`.

use axum::Router;

use super::read::{ATTACHMENT, PROJECT, ReadRoutes, TASK};
use crate::sim::state::SharedState;
use crate::sim::wire::ApiError;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_list("/attachments", |read| {
            let raw = read.params.require("parent")?;
            let parent = match read.world.kind_of(raw) {
                Some("project") => read.find(PROJECT, raw)?,
                Some("task") => read.find(TASK, raw)?,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "parent: Must be the gid of a task, project or project brief",
                    ));
                }
                None => return Err(ApiError::not_found("parent")),
            };
            Ok(read.world.attachments.gids_within(&parent, |_| true))
        })
        .get_one("/attachments/{attachment_gid}", ATTACHMENT)
}
