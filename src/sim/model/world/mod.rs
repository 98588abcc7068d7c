//! The simulated organization: a seeded, deterministic world of users, teams, projects, sections,
//! tasks, subtasks, stories, tags, custom fields, attachments, time-tracking entries, portfolios,
//! goals, status updates, the memberships between them, and audit-log events.
//!
//! Objects are plain typed structs ([`objects`]) kept in [`Table`]s ([`table`]). The rest is split
//! by what is done with them:
//! - [`generate`]: the seeded world a simulator starts with, and generated audit events;
//!   [`relations`] adds what links its objects (memberships, dependencies, attachments, time
//!   entries, portfolios, goals, status updates);
//! - [`render`]: each object as "shallow" JSON whose references to other objects are markers
//!   ([`wire::reference`](crate::sim::wire::reference)), expanded per `opt_fields` by
//!   [`wire::project`](crate::sim::wire::project), so every endpoint gets Asana's
//!   compact/full/opt_fields behaviour from one place; [`render_relations`] renders the objects
//!   that link others;
//! - [`mutate`]: the changes requests and background activity make to tasks' own fields;
//!   [`relate`]: the changes to what links objects (placements, dependencies, followers, tags,
//!   sections, attachments, time entries, archiving).
//!
//! This file holds the [`World`] and its lookups. It imports [`table`] and [`objects`] (and hands
//! their names on); the other submodules import it, never the other way round. Nothing here
//! imports anything above the model layer.

pub mod generate;
pub mod mutate;
pub mod objects;
pub mod relate;
pub mod relations;
pub mod render;
pub mod render_relations;
pub mod table;

use rand_chacha::ChaCha8Rng;

pub use objects::{
    Attachment, AuditEvent, CustomField, CustomValue, EnumOption, Goal, Portfolio,
    PortfolioMembership, Project, ProjectMembership, Section, StatusUpdate, Story, Tag, Task, Team,
    TeamMembership, TimeEntry, User, Workspace,
};
pub use table::{GidSource, HasGid, Table};

/// Whether the world holds an object of some type with a given gid.
type Holds = fn(&World, &str) -> bool;

/// Each resource type with how to tell whether the world holds an object of it; the biggest
/// tables come first, as most lookups are of tasks and stories.
const KINDS: &[(&str, Holds)] = &[
    ("task", |w, gid| w.tasks.get(gid).is_some()),
    ("story", |w, gid| w.stories.get(gid).is_some()),
    ("workspace", |w, gid| w.workspace.gid == gid),
    ("user", |w, gid| w.users.get(gid).is_some()),
    ("team", |w, gid| w.teams.get(gid).is_some()),
    ("project", |w, gid| w.projects.get(gid).is_some()),
    ("section", |w, gid| w.sections.get(gid).is_some()),
    ("tag", |w, gid| w.tags.get(gid).is_some()),
    ("custom_field", |w, gid| w.custom_fields.get(gid).is_some()),
    ("status_update", |w, gid| {
        w.status_updates.get(gid).is_some()
    }),
    ("attachment", |w, gid| w.attachments.get(gid).is_some()),
    ("time_tracking_entry", |w, gid| {
        w.time_entries.get(gid).is_some()
    }),
    ("team_membership", |w, gid| {
        w.team_memberships.get(gid).is_some()
    }),
    ("project_membership", |w, gid| {
        w.project_memberships.get(gid).is_some()
    }),
    ("portfolio", |w, gid| w.portfolios.get(gid).is_some()),
    ("portfolio_membership", |w, gid| {
        w.portfolio_memberships.get(gid).is_some()
    }),
    ("goal", |w, gid| w.goals.get(gid).is_some()),
];

/// The whole simulated organization.
#[derive(Debug, Clone)]
pub struct World {
    /// The single organization.
    pub workspace: Workspace,
    /// Users; index 0 is the service account's user.
    pub users: Table<User>,
    /// Teams.
    pub teams: Table<Team>,
    /// Who is in which team.
    pub team_memberships: Table<TeamMembership>,
    /// Projects.
    pub projects: Table<Project>,
    /// Who is in which project, with what access.
    pub project_memberships: Table<ProjectMembership>,
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
    /// Attachments of tasks and projects.
    pub attachments: Table<Attachment>,
    /// Time logged on tasks.
    pub time_entries: Table<TimeEntry>,
    /// Portfolios.
    pub portfolios: Table<Portfolio>,
    /// Who is in which portfolio, with what access.
    pub portfolio_memberships: Table<PortfolioMembership>,
    /// Goals.
    pub goals: Table<Goal>,
    /// Status updates of projects, portfolios and goals.
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
        KINDS
            .iter()
            .find(|(_, holds)| holds(self, gid))
            .map(|(kind, _)| *kind)
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

    /// Whether a task exists and neither it nor an ancestor is in the trash: as in Asana,
    /// deleting a task takes its subtasks with it (they answer 404 until it is restored).
    pub fn task_alive(&self, gid: &str) -> bool {
        let mut current = gid;
        for _ in 0..64 {
            match self.tasks.get(current) {
                Some(task) if !task.deleted => match &task.parent {
                    Some(parent) => current = parent,
                    None => return true,
                },
                _ => return false,
            }
        }
        false
    }

    /// Live subtasks of a task, in creation order.
    pub fn subtasks_of<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.within(task).filter(|t| !t.deleted)
    }

    /// The members of a team, in the order they joined.
    pub fn team_members<'a>(&'a self, team: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.team_memberships.within(team).map(|m| &m.user)
    }

    /// The members of a team still in the organization, in the order they joined.
    pub fn active_team_members(&self, team: &str) -> Vec<String> {
        self.team_members(team)
            .filter(|user| self.users.get(user).is_some_and(|u| u.active))
            .cloned()
            .collect()
    }

    /// The members of a project, in the order they joined.
    pub fn project_members<'a>(&'a self, project: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.project_memberships.within(project).map(|m| &m.user)
    }

    /// The members of a portfolio, in the order they joined.
    pub fn portfolio_members<'a>(
        &'a self,
        portfolio: &str,
    ) -> impl Iterator<Item = &'a String> + 'a {
        self.portfolio_memberships
            .within(portfolio)
            .map(|m| &m.user)
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
