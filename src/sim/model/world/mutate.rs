//! The changes made to the world: task edits, new tasks, deletions, comments, status updates and
//! audit events ([`super::relate`] has the changes to what links objects). Changes here do not
//! record events; [`crate::sim::model::edit`] wraps the ones the Events API reports.
//!
//! Imports [`super`] (the world and its objects) and `wire` (reference markers in changes).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{AuditEvent, StatusUpdate, Story, Task, World};
use crate::sim::wire::reference;

/// A change to a task's fields, as `PUT /tasks/{gid}`, the admin API and the activity generator
/// make it. `None` leaves a field alone; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPatch {
    /// New name.
    pub name: Option<String>,
    /// New notes.
    pub notes: Option<String>,
    /// New completion state.
    pub completed: Option<bool>,
    /// New assignee (user gid) or unassigned.
    pub assignee: Option<Option<String>>,
    /// New due date (`YYYY-MM-DD`) or none.
    pub due_on: Option<Option<String>>,
}

/// A new task, as `POST /tasks` makes it.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    /// Name.
    pub name: String,
    /// Notes.
    pub notes: String,
    /// Assignee user gid.
    pub assignee: Option<String>,
    /// Creator user gid.
    pub created_by: String,
    /// Whether created completed.
    pub completed: bool,
    /// Due date.
    pub due_on: Option<String>,
    /// (project, section) memberships.
    pub memberships: Vec<(String, String)>,
    /// Parent task.
    pub parent: Option<String>,
}

/// One field a patch changed, with its new value (shallow JSON; references as markers).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// Field name as in `TaskResponse`.
    pub field: &'static str,
    /// The value after the change.
    pub new_value: Value,
}

impl World {
    /// Applies `patch` to a live task at `now`: only fields whose value differs change, and
    /// `modified_at` moves forward when anything did (as Asana's `modified_since` expects).
    /// Returns the changes, or `None` when the task does not exist.
    pub fn update_task(
        &mut self,
        gid: &str,
        patch: &TaskPatch,
        now: DateTime<Utc>,
    ) -> Option<Vec<FieldChange>> {
        let task = self.tasks.get_mut(gid).filter(|t| !t.deleted)?;
        let mut changes = Vec::new();
        if let Some(name) = &patch.name
            && name != &task.name
        {
            task.name = name.clone();
            changes.push(FieldChange {
                field: "name",
                new_value: json!(name),
            });
        }
        if let Some(notes) = &patch.notes
            && notes != &task.notes
        {
            task.notes = notes.clone();
            changes.push(FieldChange {
                field: "notes",
                new_value: json!(notes),
            });
        }
        if let Some(completed) = patch.completed
            && completed != task.completed
        {
            task.completed = completed;
            task.completed_at = completed.then_some(now);
            changes.push(FieldChange {
                field: "completed",
                new_value: json!(completed),
            });
        }
        if let Some(assignee) = &patch.assignee
            && assignee != &task.assignee
        {
            task.assignee = assignee.clone();
            if let Some(user) = assignee
                && !task.followers.contains(user)
            {
                task.followers.push(user.clone());
            }
            changes.push(FieldChange {
                field: "assignee",
                new_value: assignee.as_deref().map(reference).unwrap_or(Value::Null),
            });
        }
        if let Some(due_on) = &patch.due_on
            && due_on != &task.due_on
        {
            task.due_on = due_on.clone();
            changes.push(FieldChange {
                field: "due_on",
                new_value: json!(due_on),
            });
        }
        if !changes.is_empty() {
            task.modified_at = task.modified_at.max(now);
        }
        Some(changes)
    }

    /// Creates a task at `now` and returns its gid; a new subtask counts as a change to its
    /// parent. Callers check that referenced objects exist.
    pub fn create_task(&mut self, new: NewTask, now: DateTime<Utc>) -> String {
        let gid = self.gids.next_gid();
        if let Some(parent) = new.parent.as_deref().and_then(|p| self.tasks.get_mut(p)) {
            parent.modified_at = parent.modified_at.max(now);
        }
        let mut followers = vec![new.created_by.clone()];
        if let Some(assignee) = &new.assignee
            && assignee != &new.created_by
        {
            followers.push(assignee.clone());
        }
        self.tasks.insert(Task {
            gid: gid.clone(),
            name: new.name,
            notes: new.notes,
            resource_subtype: "default_task".into(),
            assignee: new.assignee,
            created_by: new.created_by,
            completed: new.completed,
            completed_at: new.completed.then_some(now),
            created_at: now,
            modified_at: now,
            due_on: new.due_on,
            start_on: None,
            memberships: new.memberships,
            parent: new.parent,
            tags: Vec::new(),
            followers,
            custom_fields: Vec::new(),
            dependencies: Vec::new(),
            dependents: Vec::new(),
            num_likes: 0,
            deleted: false,
        });
        gid
    }

    /// Moves a live task to the trash at `now` (it stays in the table, flagged, so events and
    /// streams can still name it). Returns whether it was live.
    pub fn delete_task(&mut self, gid: &str, now: DateTime<Utc>) -> bool {
        match self.tasks.get_mut(gid).filter(|t| !t.deleted) {
            Some(task) => {
                task.deleted = true;
                task.modified_at = task.modified_at.max(now);
                true
            }
            None => false,
        }
    }

    /// Adds a comment story by `author` to a live task at `now` and bumps the task's
    /// `modified_at` ("adding stories" counts as modifying a task). Returns the story's gid.
    pub fn add_comment(
        &mut self,
        task: &str,
        author: &str,
        text: &str,
        is_pinned: bool,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let target = self.tasks.get_mut(task).filter(|t| !t.deleted)?;
        target.modified_at = target.modified_at.max(now);
        let gid = self.gids.next_gid();
        self.stories.insert(Story {
            gid: gid.clone(),
            target: task.to_string(),
            created_by: author.to_string(),
            created_at: now,
            resource_subtype: "comment_added".into(),
            text: text.to_string(),
            is_pinned,
        });
        Some(gid)
    }

    /// Stores a status update and returns its gid. Callers validate the parent and type.
    pub fn add_status_update(&mut self, update: StatusUpdate) -> String {
        let gid = update.gid.clone();
        self.status_updates.insert(update);
        gid
    }

    /// Inserts an audit event at its place in creation order (late events land in the past).
    pub fn insert_audit_event(&mut self, event: AuditEvent) {
        let position = self.audit_events.partition_point(|e| {
            (e.created_at, gid_key(&e.gid)) <= (event.created_at, gid_key(&event.gid))
        });
        self.audit_events.insert(position, event);
    }

    /// Drops the audit events created before `cutoff` (past the retention period).
    pub fn expire_audit_events(&mut self, cutoff: DateTime<Utc>) {
        let expired = self.audit_events.partition_point(|e| e.created_at < cutoff);
        self.audit_events.drain(..expired);
    }
}

fn gid_key(gid: &str) -> (usize, &str) {
    (gid.len(), gid)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::sim::config::WorldSize;

    #[test]
    fn late_audit_events_are_inserted_in_order() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut world = World::generate(1, &WorldSize::default(), now);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let late = world.make_audit_event(&mut rng, now - Duration::days(3), None);
        let gid = late.gid.clone();
        world.insert_audit_event(late);
        assert!(
            world
                .audit_events
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at)
        );
        assert!(world.audit_events.iter().any(|e| e.gid == gid));
    }
}
