//! The simulated organization: a seeded, deterministic world of users, teams, projects, sections,
//! tasks, subtasks, stories, tags, custom fields, status updates and audit-log events.
//!
//! Objects are plain typed structs ([`objects`]) kept in [`Table`]s ([`table`]). The rest is split
//! by what is done with them:
//! - [`generate`]: the seeded world a simulator starts with, and generated audit events;
//! - [`render`]: each object as "shallow" JSON whose references to other objects are markers
//!   ([`wire::reference`](crate::sim::wire::reference)), expanded per `opt_fields` by
//!   [`wire::project`](crate::sim::wire::project), so every endpoint gets Asana's
//!   compact/full/opt_fields behaviour from one place;
//! - [`mutate`]: the changes requests and background activity make.
//!
//! This file holds the [`World`] and its lookups. It imports [`table`] and [`objects`] (and hands
//! their names on); the other submodules import it, never the other way round. Nothing here
//! imports anything above the model layer.

pub mod generate;
pub mod mutate;
pub mod objects;
pub mod render;
pub mod table;

use rand_chacha::ChaCha8Rng;

pub use objects::{
    AuditEvent, CustomField, CustomValue, EnumOption, Project, Section, StatusUpdate, Story, Tag,
    Task, Team, User, Workspace,
};
pub use table::{GidSource, HasGid, Table};

/// The whole simulated organization.
#[derive(Debug, Clone)]
pub struct World {
    /// The single organization.
    pub workspace: Workspace,
    /// Users; index 0 is the service account's user.
    pub users: Table<User>,
    /// Teams.
    pub teams: Table<Team>,
    /// Projects.
    pub projects: Table<Project>,
    /// Sections.
    pub sections: Table<Section>,
    /// Tasks and subtasks.
    pub tasks: Table<Task>,
    /// Stories.
    pub stories: Table<Story>,
    /// Tags.
    pub tags: Table<Tag>,
    /// Custom fields.
    pub custom_fields: Table<CustomField>,
    /// Status updates.
    pub status_updates: Table<StatusUpdate>,
    /// Audit-log events sorted by `created_at`, then gid.
    pub audit_events: Vec<AuditEvent>,
    /// Gid issuer for new objects.
    pub gids: GidSource,
    /// Random source for generated activity, seeded.
    pub rng: ChaCha8Rng,
}

impl World {
    /// The resource type of the object `gid`, if it exists.
    pub fn kind_of(&self, gid: &str) -> Option<&'static str> {
        if gid == self.workspace.gid {
            Some("workspace")
        } else if self.users.get(gid).is_some() {
            Some("user")
        } else if self.teams.get(gid).is_some() {
            Some("team")
        } else if self.projects.get(gid).is_some() {
            Some("project")
        } else if self.sections.get(gid).is_some() {
            Some("section")
        } else if self.tasks.get(gid).is_some() {
            Some("task")
        } else if self.stories.get(gid).is_some() {
            Some("story")
        } else if self.tags.get(gid).is_some() {
            Some("tag")
        } else if self.custom_fields.get(gid).is_some() {
            Some("custom_field")
        } else if self.status_updates.get(gid).is_some() {
            Some("status_update")
        } else {
            None
        }
    }

    /// The user a request names: `me` (the caller, whose gid is `me`), a gid, or an email
    /// address in any case, as Asana accepts user references.
    pub fn find_user(&self, raw: &str, me: &str) -> Option<String> {
        if raw == "me" {
            return Some(me.to_string());
        }
        if let Some(user) = self.users.get(raw) {
            return Some(user.gid.clone());
        }
        self.users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(raw))
            .map(|u| u.gid.clone())
    }

    /// Subtasks of a task, in creation order.
    pub fn subtasks_of<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks
            .iter()
            .filter(move |t| t.parent.as_deref() == Some(task) && !t.deleted)
    }

    /// The task, its ancestors, and every project any of them is in: the event streams an event
    /// about the task bubbles up to. The workspace stream is not included.
    pub fn task_streams(&self, gid: &str) -> Vec<String> {
        let mut streams = Vec::new();
        let mut current = self.tasks.get(gid);
        let mut depth = 0;
        while let Some(task) = current {
            streams.push(task.gid.clone());
            for (project, _) in &task.memberships {
                if !streams.contains(project) {
                    streams.push(project.clone());
                }
            }
            depth += 1;
            if depth > 32 {
                break;
            }
            current = task.parent.as_deref().and_then(|p| self.tasks.get(p));
        }
        streams
    }
}
