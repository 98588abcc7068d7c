//! Changes to what links objects: a task's placement in projects and sections, its dependencies,
//! followers and tags, its return from the trash, files attached and time logged on it; a
//! project's name and archived flag; new and renamed sections. Like [`super::mutate`], changes
//! here record no events ([`crate::sim::model::edit`] does), and every change to a task moves its
//! `modified_at` forward: Asana counts a changed association as a modification, and a sync's
//! `modified_since` sweep relies on it.
//!
//! Imports [`super`] (the world and its objects) and [`super::mutate`] (the field changes it
//! reports).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::mutate::FieldChange;
use super::{Attachment, Section, TimeEntry, World};

/// What placing a task in a section did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The task joined the section's project (in that section).
    AddedToProject,
    /// The task was already in the project and moved to the section.
    MovedToSection,
    /// The task was already in that section.
    Unchanged,
}

/// A change to a project's own fields. `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectPatch {
    /// New name.
    pub name: Option<String>,
    /// Archived or not.
    pub archived: Option<bool>,
}

/// A file to attach: its name, host (`asana` for an upload) and size.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAttachment {
    /// File name.
    pub name: String,
    /// `asana`, `dropbox`, `gdrive`, `box`, …
    pub host: String,
    /// Size in bytes.
    pub size: u64,
}

impl World {
    /// Moves a live task's `modified_at` to `now` (never backwards). `false` when there is no
    /// live task `gid`.
    fn touch_task(&mut self, gid: &str, now: DateTime<Utc>) -> bool {
        match self.tasks.get_mut(gid).filter(|t| !t.deleted) {
            Some(task) => {
                task.modified_at = task.modified_at.max(now);
                true
            }
            None => false,
        }
    }

    fn live_task(&self, gid: &str) -> bool {
        self.tasks.get(gid).is_some_and(|t| !t.deleted)
    }

    /// Records that `task` depends on `blocker` on both sides; `false` when either is missing,
    /// they are the same task, or the dependency exists already.
    pub(super) fn link_dependency(&mut self, task: &str, blocker: &str) -> bool {
        let known = self.tasks.get(task).is_some() && self.tasks.get(blocker).is_some();
        let exists = self
            .tasks
            .get(task)
            .is_some_and(|t| t.dependencies.iter().any(|d| d == blocker));
        if !known || exists || task == blocker {
            return false;
        }
        if let Some(t) = self.tasks.get_mut(task) {
            t.dependencies.push(blocker.to_string());
        }
        if let Some(b) = self.tasks.get_mut(blocker) {
            b.dependents.push(task.to_string());
        }
        true
    }

    /// Makes live `task` depend on live `blocker` at `now`; `false` when nothing changed.
    pub fn add_dependency(&mut self, task: &str, blocker: &str, now: DateTime<Utc>) -> bool {
        if !(self.live_task(task) && self.live_task(blocker)) {
            return false;
        }
        let linked = self.link_dependency(task, blocker);
        if linked {
            self.touch_task(task, now);
            self.touch_task(blocker, now);
        }
        linked
    }

    /// Removes the dependency of live `task` on `blocker` at `now`; `false` when there was none.
    pub fn remove_dependency(&mut self, task: &str, blocker: &str, now: DateTime<Utc>) -> bool {
        let Some(t) = self.tasks.get_mut(task).filter(|t| !t.deleted) else {
            return false;
        };
        let before = t.dependencies.len();
        t.dependencies.retain(|d| d != blocker);
        if t.dependencies.len() == before {
            return false;
        }
        if let Some(b) = self.tasks.get_mut(blocker) {
            b.dependents.retain(|d| d != task);
        }
        self.touch_task(task, now);
        self.touch_task(blocker, now);
        true
    }

    /// Adds (`add`) or removes `item` in the list `field` of a live task at `now`: `followers`
    /// (user gids) or `tags` (tag gids). `false` when nothing changed.
    pub fn change_task_list(
        &mut self,
        task: &str,
        field: TaskList,
        item: &str,
        add: bool,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(t) = self.tasks.get_mut(task).filter(|t| !t.deleted) else {
            return false;
        };
        let list = match field {
            TaskList::Followers => &mut t.followers,
            TaskList::Tags => &mut t.tags,
        };
        let present = list.iter().any(|i| i == item);
        match (add, present) {
            (true, false) => list.push(item.to_string()),
            (false, true) => list.retain(|i| i != item),
            _ => return false,
        }
        t.modified_at = t.modified_at.max(now);
        true
    }

    /// Places a live task in `section` (of its project) at `now`: it joins the project, or moves
    /// to that section if it is in the project already. `None` when the task or section does not
    /// exist.
    pub fn place_task(
        &mut self,
        task: &str,
        section: &str,
        now: DateTime<Utc>,
    ) -> Option<Placement> {
        let project = self.sections.get(section)?.project.clone();
        let t = self.tasks.get_mut(task).filter(|t| !t.deleted)?;
        let placement = match t.memberships.iter_mut().find(|(p, _)| *p == project) {
            Some((_, current)) if current == section => Placement::Unchanged,
            Some((_, current)) => {
                *current = section.to_string();
                Placement::MovedToSection
            }
            None => {
                t.memberships.push((project, section.to_string()));
                Placement::AddedToProject
            }
        };
        if placement != Placement::Unchanged {
            t.modified_at = t.modified_at.max(now);
        }
        Some(placement)
    }

    /// Takes a live task out of `project` at `now`; `false` when it was not in it.
    pub fn remove_from_project(&mut self, task: &str, project: &str, now: DateTime<Utc>) -> bool {
        let Some(t) = self.tasks.get_mut(task).filter(|t| !t.deleted) else {
            return false;
        };
        let before = t.memberships.len();
        t.memberships.retain(|(p, _)| p != project);
        if t.memberships.len() == before {
            return false;
        }
        t.modified_at = t.modified_at.max(now);
        true
    }

    /// Brings a task back from the trash at `now`; `false` when it was not in the trash.
    pub fn undelete_task(&mut self, gid: &str, now: DateTime<Utc>) -> bool {
        match self.tasks.get_mut(gid).filter(|t| t.deleted) {
            Some(task) => {
                task.deleted = false;
                task.modified_at = task.modified_at.max(now);
                true
            }
            None => false,
        }
    }

    /// Applies `patch` to a project at `now`; the fields that changed, or `None` when there is no
    /// such project.
    pub fn change_project(
        &mut self,
        gid: &str,
        patch: &ProjectPatch,
        now: DateTime<Utc>,
    ) -> Option<Vec<FieldChange>> {
        let project = self.projects.get_mut(gid)?;
        let mut changes = Vec::new();
        if let Some(name) = &patch.name
            && name != &project.name
        {
            project.name = name.clone();
            changes.push(FieldChange {
                field: "name",
                new_value: json!(name),
            });
        }
        if let Some(archived) = patch.archived
            && archived != project.archived
        {
            project.archived = archived;
            changes.push(FieldChange {
                field: "archived",
                new_value: json!(archived),
            });
        }
        if !changes.is_empty() {
            project.modified_at = project.modified_at.max(now);
        }
        Some(changes)
    }

    /// Adds a section named `name` at the end of `project`; its gid, or `None` when there is no
    /// such project.
    pub fn create_section(
        &mut self,
        project: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Option<String> {
        self.projects.get(project)?;
        let gid = self.gids.next_gid();
        self.sections.insert(Section {
            gid: gid.clone(),
            name: name.to_string(),
            project: project.to_string(),
            created_at: now,
        });
        Some(gid)
    }

    /// Renames a section; `false` when there is no such section or the name is the same.
    pub fn rename_section(&mut self, gid: &str, name: &str) -> bool {
        match self.sections.get_mut(gid).filter(|s| s.name != name) {
            Some(section) => {
                section.name = name.to_string();
                true
            }
            None => false,
        }
    }

    /// Attaches a file by `user` to a live task or a project at `now` (a task counts as
    /// modified); the attachment's gid, or `None` when there is no such parent.
    pub fn attach(
        &mut self,
        parent: &str,
        file: NewAttachment,
        user: &str,
        now: DateTime<Utc>,
    ) -> Option<String> {
        if !(self.touch_task(parent, now) || self.projects.get(parent).is_some()) {
            return None;
        }
        let gid = self.gids.next_gid();
        self.attachments.insert(Attachment {
            gid: gid.clone(),
            parent: parent.to_string(),
            name: file.name,
            host: file.host,
            size: file.size,
            created_by: user.to_string(),
            created_at: now,
        });
        Some(gid)
    }

    /// Logs `minutes` spent by `user` on a live task today (`now`), counted towards the task's
    /// first project; the entry's gid, or `None` when there is no such task.
    pub fn log_time(
        &mut self,
        task: &str,
        user: &str,
        minutes: u32,
        now: DateTime<Utc>,
    ) -> Option<String> {
        if !self.touch_task(task, now) {
            return None;
        }
        let attributable_to = self
            .tasks
            .get(task)
            .and_then(|t| t.memberships.first())
            .map(|(p, _)| p.clone());
        let gid = self.gids.next_gid();
        self.time_entries.insert(TimeEntry {
            gid: gid.clone(),
            task: task.to_string(),
            created_by: user.to_string(),
            duration_minutes: minutes,
            entered_on: now.format("%Y-%m-%d").to_string(),
            attributable_to,
            billable_status: "notApplicable".into(),
            description: String::new(),
            created_at: now,
        });
        Some(gid)
    }

    /// Minutes logged on a task in all, `None` when none were.
    pub fn time_spent(&self, task: &str) -> Option<u64> {
        let mut entries = self.time_entries.within(task).peekable();
        entries.peek()?;
        Some(entries.map(|e| u64::from(e.duration_minutes)).sum())
    }
}

/// The lists of a task that change one item at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskList {
    /// `followers`: user gids.
    Followers,
    /// `tags`: tag gids.
    Tags,
}

impl TaskList {
    /// The field's name in `TaskResponse` and in events.
    pub fn field(self) -> &'static str {
        match self {
            TaskList::Followers => "followers",
            TaskList::Tags => "tags",
        }
    }
}
