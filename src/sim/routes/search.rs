//! Task search: `GET /workspaces/{gid}/tasks/search`. Premium only (402 for free-tier tokens),
//! 60 requests a minute (enforced by the middleware), at most 100 results and no `next_page`:
//! clients page by sorting on `created_at` and narrowing the next query, as Asana documents.

use std::cmp::Ordering;

use axum::Router;
use axum::routing::get;
use chrono::{DateTime, Utc};

use super::params::Params;
use super::read::WORKSPACE;
use super::request::ApiRequest;
use crate::sim::config::Tier;
use crate::sim::input::split_list;
use crate::sim::model::world::render::render;
use crate::sim::model::world::{Task, World};
use crate::sim::state::SharedState;
use crate::sim::wire::{self, ApiError, ApiResult, Detail};

fn in_projects(task: &Task) -> Vec<&str> {
    task.memberships.iter().map(|(p, _)| p.as_str()).collect()
}

/// Asana's 402 message for search with a non-premium token.
pub const SEARCH_PREMIUM_MESSAGE: &str = "Search is only available to premium users.";

/// Results when no `limit` is given (Asana does not document its default).
pub const DEFAULT_SEARCH_LIMIT: usize = 20;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new().route("/workspaces/{workspace_gid}/tasks/search", get(search))
}

/// A user-list filter (`assignee.any` …): gids, emails or `me`; `null` stands for "nobody".
fn users(world: &World, me: &str, raw: &str) -> Vec<Option<String>> {
    split_list(raw)
        .iter()
        .map(|item| {
            if item == "null" {
                None
            } else {
                Some(world.find_user(item, me).unwrap_or_else(|| item.clone()))
            }
        })
        .collect()
}

struct TimeRange {
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
}

impl TimeRange {
    fn parse(params: &Params, field: &str) -> Result<TimeRange, ApiError> {
        Ok(TimeRange {
            after: params.time(&format!("{field}.after"))?,
            before: params.time(&format!("{field}.before"))?,
        })
    }

    fn keeps(&self, value: Option<DateTime<Utc>>) -> bool {
        if self.after.is_none() && self.before.is_none() {
            return true;
        }
        // Compared at millisecond precision, the precision of the timestamps clients see, so a
        // client paging by `created_at.after=<last seen>` never gets the last task again.
        value.is_some_and(|v| {
            let v = v.timestamp_millis();
            self.after.is_none_or(|a| v > a.timestamp_millis())
                && self.before.is_none_or(|b| v < b.timestamp_millis())
        })
    }
}

async fn search(request: ApiRequest) -> ApiResult {
    let params = &request.params;
    let world = request.state.world();
    let me = request.me();
    WORKSPACE.find(&world, &request.gid, me)?;
    if request.caller.record.tier == Tier::Free {
        return Err(ApiError::payment_required(SEARCH_PREMIUM_MESSAGE));
    }
    let text = params.get("text").map(str::to_lowercase);
    let assignee_any = params.get("assignee.any").map(|r| users(&world, me, r));
    let assignee_not = params.get("assignee.not").map(|r| users(&world, me, r));
    let projects_any = params.get("projects.any").map(split_list);
    let projects_not = params.get("projects.not").map(split_list);
    let projects_all = params.get("projects.all").map(split_list);
    let sections_any = params.get("sections.any").map(split_list);
    let tags_any = params.get("tags.any").map(split_list);
    let subtype = params.get("resource_subtype");
    let completed = params.bool("completed")?;
    let is_subtask = params.bool("is_subtask")?;
    let modified = TimeRange::parse(params, "modified_at")?;
    let created = TimeRange::parse(params, "created_at")?;
    let completed_at = TimeRange::parse(params, "completed_at")?;
    // `due_on.before` / `due_on.after` (exclusive) and `due_on` (that day) take dates; a task
    // without a due date matches none of them.
    let day = |key: &str| -> Result<Option<chrono::NaiveDate>, ApiError> {
        params
            .get(key)
            .map(|raw| {
                chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                    .map_err(|_| ApiError::bad_request(format!("{key}: Invalid date: {raw}")))
            })
            .transpose()
    };
    let due_before = day("due_on.before")?;
    let due_after = day("due_on.after")?;
    let due_on = day("due_on")?;
    let sort_by = params.get("sort_by").unwrap_or("modified_at");
    if !matches!(
        sort_by,
        "due_date" | "created_at" | "completed_at" | "likes" | "modified_at" | "relevance"
    ) {
        return Err(ApiError::bad_request(format!(
            "sort_by: Invalid value: {sort_by}"
        )));
    }
    let ascending = params.bool("sort_ascending")?.unwrap_or(false);
    let limit = params.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);

    let mut found: Vec<&Task> = world
        .tasks
        .iter()
        .filter(|t| !t.deleted)
        .filter(|t| {
            text.as_ref().is_none_or(|needle| {
                t.name.to_lowercase().contains(needle) || t.notes.to_lowercase().contains(needle)
            })
        })
        .filter(|t| {
            assignee_any
                .as_ref()
                .is_none_or(|any| any.contains(&t.assignee))
        })
        .filter(|t| {
            assignee_not
                .as_ref()
                .is_none_or(|not| !not.contains(&t.assignee))
        })
        .filter(|t| {
            // `projects.any` with `sections.any` is a union, as Asana documents.
            let in_any_project = projects_any
                .as_ref()
                .map(|any| in_projects(t).iter().any(|p| any.iter().any(|a| a == p)));
            let in_any_section = sections_any
                .as_ref()
                .map(|any| t.memberships.iter().any(|(_, s)| any.contains(s)));
            match (in_any_project, in_any_section) {
                (None, None) => true,
                (Some(p), None) => p,
                (None, Some(s)) => s,
                (Some(p), Some(s)) => p || s,
            }
        })
        .filter(|t| {
            projects_not
                .as_ref()
                .is_none_or(|not| !in_projects(t).iter().any(|p| not.iter().any(|n| n == p)))
        })
        .filter(|t| {
            projects_all
                .as_ref()
                .is_none_or(|all| all.iter().all(|a| in_projects(t).contains(&a.as_str())))
        })
        .filter(|t| {
            tags_any
                .as_ref()
                .is_none_or(|any| t.tags.iter().any(|g| any.contains(g)))
        })
        .filter(|t| subtype.is_none_or(|s| t.resource_subtype == s))
        .filter(|t| completed.is_none_or(|c| t.completed == c))
        .filter(|t| is_subtask.is_none_or(|s| t.parent.is_some() == s))
        .filter(|t| modified.keeps(Some(t.modified_at)))
        .filter(|t| created.keeps(Some(t.created_at)))
        .filter(|t| completed_at.keeps(t.completed_at))
        .filter(|t| {
            let wanted = due_before.is_some() || due_after.is_some() || due_on.is_some();
            !wanted
                || t.due_on
                    .as_deref()
                    .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .is_some_and(|d| {
                        due_before.is_none_or(|b| d < b)
                            && due_after.is_none_or(|a| d > a)
                            && due_on.is_none_or(|o| d == o)
                    })
        })
        .collect();
    found.sort_by(|a, b| {
        let order = match sort_by {
            "created_at" => a.created_at.cmp(&b.created_at),
            "completed_at" => a.completed_at.cmp(&b.completed_at),
            "due_date" => a.due_on.cmp(&b.due_on),
            "likes" => a.num_likes.cmp(&b.num_likes),
            _ => a.modified_at.cmp(&b.modified_at),
        };
        let order = if ascending { order } else { order.reverse() };
        if order == Ordering::Equal {
            a.gid
                .len()
                .cmp(&b.gid.len())
                .then_with(|| a.gid.cmp(&b.gid))
        } else {
            order
        }
    });
    let data = found
        .iter()
        .take(limit)
        .map(|t| {
            render(&world, &t.gid, params.fields(), Detail::Compact)
                .unwrap_or_else(|| serde_json::json!({ "gid": t.gid }))
        })
        .collect();
    wire::page(data, None, false)
}
