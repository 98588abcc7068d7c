//! The events Asana sends for each kind of change, and the streams each belongs to.
//!
//! Shapes, as Asana documents `EventResponse`: a change to a field of a resource is `changed`
//! with `change: {field, action: changed, new_value}`; an item added to or removed from one of
//! its lists (a follower, a tag, a dependency) is `changed` with `change: {field, action:
//! added|removed, added_value|removed_value}`; a resource put into or taken out of another (a
//! task into a project or section, a subtask under its parent, a story or attachment onto a task,
//! a section into a project) is `added`/`removed` with that other as `parent`; a task going to or
//! coming back from the trash is `deleted`/`undeleted`. `parent` is null unless the action is
//! `added` or `removed`.
//!
//! Streams: an event about a task bubbles up to the task, its ancestors and all their projects;
//! one about a story or an attachment to those of the task (or project) it is on; one about a
//! project or a section to the project. The log adds the workspace stream.
//!
//! Imports [`crate::sim::model::world`] and [`crate::sim::wire`] (reference markers, timestamps).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::NewEvent;
use crate::sim::model::world::World;
use crate::sim::model::world::mutate::FieldChange;
use crate::sim::wire::{reference, timestamp};

/// The `resource`/`parent` object of an event: a snapshot of the object's name at event time.
fn named(world: &World, gid: &str) -> Value {
    let Some(kind) = world.kind_of(gid) else {
        return json!({ "gid": gid });
    };
    let mut out = Map::new();
    out.insert("gid".into(), json!(gid));
    out.insert("resource_type".into(), json!(kind));
    let (name, subtype) = match kind {
        "task" => world
            .tasks
            .get(gid)
            .map(|t| (Some(&t.name), Some(&t.resource_subtype)))
            .unwrap_or_default(),
        "story" => (None, world.stories.get(gid).map(|s| &s.resource_subtype)),
        "attachment" => world
            .attachments
            .get(gid)
            .map(|a| (Some(&a.name), Some(&a.host)))
            .unwrap_or_default(),
        "project" => (world.projects.get(gid).map(|p| &p.name), None),
        "section" => (world.sections.get(gid).map(|s| &s.name), None),
        "tag" => (world.tags.get(gid).map(|t| &t.name), None),
        "goal" => (world.goals.get(gid).map(|g| &g.name), None),
        _ => (None, None),
    };
    if let Some(name) = name {
        out.insert("name".into(), json!(name));
    }
    if let Some(subtype) = subtype {
        out.insert("resource_subtype".into(), json!(subtype));
    }
    Value::Object(out)
}

/// The streams an event about `resource` belongs to (the log adds the workspace).
fn streams_of(world: &World, resource: &str) -> Vec<String> {
    match world.kind_of(resource) {
        Some("task") => world.task_streams(resource),
        Some("story") => world
            .stories
            .get(resource)
            .map(|s| world.task_streams(&s.target))
            .unwrap_or_default(),
        Some("attachment") => match world.attachments.get(resource) {
            Some(a) if world.tasks.get(&a.parent).is_some() => world.task_streams(&a.parent),
            Some(a) => vec![a.parent.clone()],
            None => Vec::new(),
        },
        Some("section") => world
            .sections
            .get(resource)
            .map(|s| vec![s.project.clone()])
            .unwrap_or_default(),
        _ => vec![resource.to_string()],
    }
}

/// One event about `resource` by `user` (`None`: the system), in the streams it belongs to now.
fn event(
    world: &World,
    user: Option<&str>,
    resource: &str,
    action: &str,
    parent: Option<&str>,
    change: Option<Value>,
    now: DateTime<Utc>,
) -> NewEvent {
    let mut body = json!({
        "user": user.map(reference).unwrap_or(Value::Null),
        "created_at": timestamp(now),
        "action": action,
        "resource": named(world, resource),
        "type": world.kind_of(resource).unwrap_or("task"),
        "parent": parent.map(|p| named(world, p)).unwrap_or(Value::Null),
    });
    if let (Some(change), Value::Object(map)) = (change, &mut body) {
        map.insert("change".into(), change);
    }
    NewEvent {
        streams: streams_of(world, resource),
        created_at: now,
        body,
    }
}

/// `changed` events for fields of a task, project or section, one per changed field.
pub fn changed_events(
    world: &World,
    resource: &str,
    user: Option<&str>,
    changes: &[FieldChange],
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    changes
        .iter()
        .map(|change| {
            let change =
                json!({"field": change.field, "action": "changed", "new_value": change.new_value});
            event(world, user, resource, "changed", None, Some(change), now)
        })
        .collect()
}

/// The `changed` event of an item added to (or removed from) the list `field` of `resource`:
/// a follower, a tag, a dependency.
pub fn list_changed_event(
    world: &World,
    resource: &str,
    field: &str,
    item: &str,
    added: bool,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> NewEvent {
    let change = if added {
        json!({"field": field, "action": "added", "added_value": reference(item)})
    } else {
        json!({"field": field, "action": "removed", "removed_value": reference(item)})
    };
    event(world, user, resource, "changed", None, Some(change), now)
}

/// The `added` event of `resource` put into `parent` (a task into a project, a section or
/// under its parent task; a story or attachment onto a task; a section into a project).
pub fn added_event(
    world: &World,
    resource: &str,
    parent: &str,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> NewEvent {
    event(world, user, resource, "added", Some(parent), None, now)
}

/// The `removed` event of a task taken out of `project`, built before it leaves, so the event
/// still reaches the project's stream.
pub fn removed_event(
    world: &World,
    task: &str,
    project: &str,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> NewEvent {
    event(world, user, task, "removed", Some(project), None, now)
}

/// `added` events for a new task: one per project it was added to and one per section it went
/// into, or one for its parent task; a task in none of them gets a bare `added`.
pub fn task_added_events(
    world: &World,
    task: &str,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let Some(record) = world.tasks.get(task) else {
        return Vec::new();
    };
    let mut parents: Vec<&str> = Vec::new();
    for (project, section) in &record.memberships {
        parents.push(project);
        if world.sections.get(section).is_some() {
            parents.push(section);
        }
    }
    parents.extend(record.parent.as_deref());
    if parents.is_empty() {
        return vec![event(world, user, task, "added", None, None, now)];
    }
    parents
        .iter()
        .map(|parent| added_event(world, task, parent, user, now))
        .collect()
}

/// The `deleted` event of a task, built before the task goes to the trash.
pub fn task_deleted_event(
    world: &World,
    task: &str,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> NewEvent {
    event(world, user, task, "deleted", None, None, now)
}

/// The `undeleted` event of a task back from the trash.
pub fn task_undeleted_event(
    world: &World,
    task: &str,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> NewEvent {
    event(world, user, task, "undeleted", None, None, now)
}
