//! The objects of the simulated organization as plain typed structs: users, teams and their
//! memberships, projects and theirs, sections, tasks, stories, tags, custom fields, attachments,
//! time-tracking entries, portfolios and theirs, goals, status updates and audit-log events. What
//! they look like on the wire is [`super::render`]'s concern; how they change, [`super::mutate`]'s
//! and [`super::relate`]'s.
//!
//! Imports [`super::table`] only.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::table::HasGid;

macro_rules! has_gid {
    ($($t:ty),*) => { $(impl HasGid for $t { fn gid(&self) -> &str { &self.gid } })* };
}

/// Objects that live in another one, named by a field that never changes after creation.
macro_rules! contained {
    ($($t:ty => $field:ident),*) => { $(impl HasGid for $t {
        fn gid(&self) -> &str { &self.gid }
        fn container(&self) -> Option<&str> { Some(&self.$field) }
    })* };
}

/// The organization.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Gid.
    pub gid: String,
    /// Display name.
    pub name: String,
    /// Email domains of the organization.
    pub email_domains: Vec<String>,
}

/// A user of the organization.
#[derive(Debug, Clone)]
pub struct User {
    /// Gid.
    pub gid: String,
    /// Full name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Whether the user is still active in the organization.
    pub active: bool,
}

/// A team.
#[derive(Debug, Clone)]
pub struct Team {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
}

/// A user's membership of a team.
#[derive(Debug, Clone)]
pub struct TeamMembership {
    /// Gid.
    pub gid: String,
    /// The team.
    pub team: String,
    /// The member.
    pub user: String,
    /// Whether the member administers the team.
    pub is_admin: bool,
    /// Whether the member is a guest of the organization.
    pub is_guest: bool,
    /// Whether the member has limited access to the team.
    pub is_limited_access: bool,
}

/// A project.
#[derive(Debug, Clone)]
pub struct Project {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Owning team.
    pub team: String,
    /// Owner user.
    pub owner: String,
    /// Follower user gids.
    pub followers: Vec<String>,
    /// Whether archived.
    pub archived: bool,
    /// Color name.
    pub color: String,
    /// Notes.
    pub notes: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last modified.
    pub modified_at: DateTime<Utc>,
    /// Due date (`YYYY-MM-DD`).
    pub due_on: Option<String>,
    /// Custom field gids attached to the project.
    pub custom_fields: Vec<String>,
}

/// A user's membership of a project, with its access level.
#[derive(Debug, Clone)]
pub struct ProjectMembership {
    /// Gid.
    pub gid: String,
    /// The project.
    pub project: String,
    /// The member.
    pub user: String,
    /// `admin`, `editor`, `commenter` or `viewer`.
    pub access_level: String,
}

/// A section of a project.
#[derive(Debug, Clone)]
pub struct Section {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Project it belongs to.
    pub project: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A value of a custom field on a task.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomValue {
    /// Text.
    Text(String),
    /// Number.
    Number(f64),
    /// Enum option gid.
    Enum(String),
}

/// A task or subtask.
#[derive(Debug, Clone)]
pub struct Task {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Notes.
    pub notes: String,
    /// `default_task`, `milestone`, `approval`.
    pub resource_subtype: String,
    /// Assignee user gid.
    pub assignee: Option<String>,
    /// Creator user gid.
    pub created_by: String,
    /// Whether completed.
    pub completed: bool,
    /// When completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last modified (bumped by every change, including new stories).
    pub modified_at: DateTime<Utc>,
    /// Due date.
    pub due_on: Option<String>,
    /// Start date.
    pub start_on: Option<String>,
    /// (project gid, section gid) memberships.
    pub memberships: Vec<(String, String)>,
    /// Parent task for subtasks.
    pub parent: Option<String>,
    /// Tag gids.
    pub tags: Vec<String>,
    /// Follower user gids.
    pub followers: Vec<String>,
    /// Custom field values by field gid.
    pub custom_fields: Vec<(String, CustomValue)>,
    /// Tasks this one depends on (is blocked by), in the order they were added.
    pub dependencies: Vec<String>,
    /// Tasks that depend on this one; always the mirror of their `dependencies`.
    pub dependents: Vec<String>,
    /// Number of likes.
    pub num_likes: u32,
    /// Whether deleted (kept for events).
    pub deleted: bool,
}

impl Task {
    /// Whether it is a (top-level) member of `project`.
    pub fn in_project(&self, project: &str) -> bool {
        self.memberships.iter().any(|(p, _)| p == project)
    }

    /// Whether it is in `section` of one of its projects.
    pub fn in_section(&self, section: &str) -> bool {
        self.memberships.iter().any(|(_, s)| s == section)
    }

    /// Whether it is tagged `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// A story (comment or system story) on a task.
#[derive(Debug, Clone)]
pub struct Story {
    /// Gid.
    pub gid: String,
    /// Task it belongs to.
    pub target: String,
    /// Author.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// `comment_added` or a system subtype.
    pub resource_subtype: String,
    /// Text.
    pub text: String,
    /// Whether pinned.
    pub is_pinned: bool,
}

/// A tag.
#[derive(Debug, Clone)]
pub struct Tag {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Color.
    pub color: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An enum option of a custom field.
#[derive(Debug, Clone)]
pub struct EnumOption {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Color.
    pub color: String,
}

/// A custom field definition.
#[derive(Debug, Clone)]
pub struct CustomField {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// `text`, `number` or `enum`.
    pub field_type: String,
    /// Options of enum fields.
    pub enum_options: Vec<EnumOption>,
    /// Precision of number fields.
    pub precision: u32,
}

/// A status update on a project, portfolio or goal.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    /// Gid.
    pub gid: String,
    /// Project, portfolio or goal gid.
    pub parent: String,
    /// Author.
    pub author: String,
    /// `on_track`, ….
    pub status_type: String,
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// Rich text.
    pub html_text: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A file attached to a task or to a project's key resources (metadata only: the simulator keeps
/// no file contents).
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Gid.
    pub gid: String,
    /// The task or project it is attached to.
    pub parent: String,
    /// File name.
    pub name: String,
    /// Where the file lives: `asana` (uploaded), `dropbox`, `gdrive`, `box`, `onedrive`, …
    pub host: String,
    /// Size in bytes.
    pub size: u64,
    /// Who attached it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Time logged on a task.
#[derive(Debug, Clone)]
pub struct TimeEntry {
    /// Gid.
    pub gid: String,
    /// The task the time was spent on.
    pub task: String,
    /// Who logged it.
    pub created_by: String,
    /// Minutes spent.
    pub duration_minutes: u32,
    /// The day the time was spent (`YYYY-MM-DD`).
    pub entered_on: String,
    /// The project the time counts towards.
    pub attributable_to: Option<String>,
    /// `billable`, `nonBillable` or `notApplicable`.
    pub billable_status: String,
    /// What was done.
    pub description: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A portfolio: a curated list of projects.
#[derive(Debug, Clone)]
pub struct Portfolio {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Owner user.
    pub owner: String,
    /// Color name.
    pub color: String,
    /// Project gids, in the portfolio's order.
    pub items: Vec<String>,
    /// Start date.
    pub start_on: Option<String>,
    /// Due date.
    pub due_on: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A user's membership of a portfolio, with its access level.
#[derive(Debug, Clone)]
pub struct PortfolioMembership {
    /// Gid.
    pub gid: String,
    /// The portfolio.
    pub portfolio: String,
    /// The member.
    pub user: String,
    /// `admin`, `editor` or `viewer`.
    pub access_level: String,
}

/// A measurable target of a team or of the whole workspace.
#[derive(Debug, Clone)]
pub struct Goal {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Notes.
    pub notes: String,
    /// Owner user.
    pub owner: Option<String>,
    /// The team whose goal it is; `None` for a workspace-level goal.
    pub team: Option<String>,
    /// Start date.
    pub start_on: Option<String>,
    /// Due date.
    pub due_on: Option<String>,
    /// `green`, `yellow`, `red`, `blue`, … or `None` before any status update.
    pub status: Option<String>,
    /// Follower user gids.
    pub followers: Vec<String>,
    /// Projects, portfolios and tasks that support the goal.
    pub supporting: Vec<String>,
    /// How far along the goal's percentage metric is (0..=100).
    pub progress: f64,
}

/// An audit-log event, stored as Asana returns it.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Gid.
    pub gid: String,
    /// Created (the log's sort key).
    pub created_at: DateTime<Utc>,
    /// The event as JSON (`AuditLogEvent`).
    pub body: Value,
}

has_gid!(
    Workspace,
    User,
    Team,
    Project,
    Tag,
    CustomField,
    Portfolio,
    Goal,
    AuditEvent
);

contained!(
    TeamMembership => team,
    ProjectMembership => project,
    Section => project,
    Story => target,
    StatusUpdate => parent,
    Attachment => parent,
    TimeEntry => task,
    PortfolioMembership => portfolio
);

/// Subtasks live in their parent task (which never changes): `within(parent)` lists them in order.
impl HasGid for Task {
    fn gid(&self) -> &str {
        &self.gid
    }

    fn container(&self) -> Option<&str> {
        self.parent.as_deref()
    }
}
