//! Task changes read from Asana request bodies: the writable fields of `PUT /tasks/{gid}` (also
//! what the admin API's task changes are made of) and the new task of `POST /tasks`, checked
//! against the world with Asana's 400s.
//!
//! Part of the model layer: imports [`super::world`], [`super::rich_text`], [`crate::sim::input`]
//! and [`crate::sim::wire`] (for [`ApiError`]).

use serde_json::{Map, Value};

use super::rich_text::rich_text_to_plain;
use super::world::World;
use super::world::mutate::{NewTask, TaskPatch};
use crate::sim::input::{
    body_bool, body_gid_list, body_nullable_string, body_string, parse_date, unrecognized,
};
use crate::sim::wire::ApiError;

/// Reads the writable fields of a task from a request's `data`: `name`, `notes` (or `html_notes`),
/// `completed`, `assignee` (gid, email, `me` or null) and `due_on` (`YYYY-MM-DD` or null).
/// `me` is the caller's user gid; without one (admin API) the assignee must be a user's gid.
pub fn parse_patch(
    world: &World,
    me: Option<&str>,
    data: &Map<String, Value>,
) -> Result<TaskPatch, ApiError> {
    let mut patch = TaskPatch {
        name: body_string(data, "name")?,
        notes: body_string(data, "notes")?,
        completed: body_bool(data, "completed")?,
        ..TaskPatch::default()
    };
    if let Some(html) = body_string(data, "html_notes")? {
        if patch.notes.is_some() {
            return Err(ApiError::bad_request(
                "You may only provide one of notes or html_notes",
            ));
        }
        patch.notes = Some(rich_text_to_plain(&html, "html_notes")?);
    }
    if let Some(assignee) = body_nullable_string(data, "assignee")? {
        patch.assignee = Some(match assignee {
            None => None,
            Some(raw) => {
                let user = match me {
                    Some(me) => world.find_user(&raw, me),
                    None => world.users.get(&raw).map(|u| u.gid.clone()),
                };
                Some(user.ok_or_else(|| unrecognized("assignee", &raw))?)
            }
        });
    }
    if let Some(due_on) = body_nullable_string(data, "due_on")? {
        patch.due_on = Some(match due_on {
            None => None,
            Some(raw) => Some(parse_date("due_on", &raw)?),
        });
    }
    Ok(patch)
}

/// Reads a new task from a `POST /tasks` body made by the user `me`: its fields as
/// [`parse_patch`] reads them, and where it goes (`workspace`, `projects`, `memberships` of
/// project and section, or a `parent` task), each checked to exist.
pub fn parse_new_task(
    world: &World,
    me: &str,
    data: &Map<String, Value>,
) -> Result<NewTask, ApiError> {
    let patch = parse_patch(world, Some(me), data)?;
    let workspace = body_string(data, "workspace")?;
    let projects = body_gid_list(data, "projects")?;
    let parent = body_string(data, "parent")?;
    let mut memberships = Vec::new();
    if let Some(Value::Array(items)) = data.get("memberships") {
        for item in items {
            let project = item
                .get("project")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let section = item
                .get("section")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match world.sections.get(section) {
                Some(found) if found.project == project => {
                    memberships.push((project.to_string(), section.to_string()))
                }
                _ => return Err(unrecognized("memberships", section)),
            }
        }
    }
    for project in &projects {
        if world.projects.get(project).is_none() {
            return Err(unrecognized("projects", project));
        }
        if memberships.iter().any(|(p, _)| p == project) {
            continue;
        }
        let first_section = world
            .sections
            .iter()
            .find(|s| &s.project == project)
            .map(|s| s.gid.clone())
            .unwrap_or_default();
        memberships.push((project.clone(), first_section));
    }
    if let Some(parent) = &parent
        && world.tasks.get(parent).is_none_or(|t| t.deleted)
    {
        return Err(unrecognized("parent", parent));
    }
    if let Some(workspace) = &workspace
        && workspace != &world.workspace.gid
    {
        return Err(unrecognized("workspace", workspace));
    }
    if workspace.is_none() && memberships.is_empty() && parent.is_none() {
        return Err(ApiError::bad_request(
            "You should specify one of workspace, parent, projects",
        ));
    }
    Ok(NewTask {
        name: patch.name.unwrap_or_default(),
        notes: patch.notes.unwrap_or_default(),
        assignee: patch.assignee.flatten(),
        created_by: me.to_string(),
        completed: patch.completed.unwrap_or(false),
        due_on: patch.due_on.flatten(),
        memberships,
        parent,
    })
}
