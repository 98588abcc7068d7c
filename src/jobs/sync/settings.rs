//! The settings of `sync` jobs and the resources they can mirror.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::jobs::SettingsCheck;
use crate::config::values::{DurationText, Gid};
use crate::sinks::table::TableSinkSettings;

/// A resource a sync can mirror (`resources = [...]`); each names the tables it fills.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// The workspace itself (`workspaces`).
    Workspace,
    /// Its users (`users`).
    Users,
    /// Its teams (`teams`).
    Teams,
    /// Who is in which team (`team_memberships`).
    TeamMemberships,
    /// The synced projects, archived ones included (`projects`).
    Projects,
    /// Who is a member of which project (`project_memberships`).
    ProjectMemberships,
    /// The projects' sections (`sections`).
    Sections,
    /// Tasks and subtasks with placements, dependencies, followers, tags and custom field values
    /// (`tasks`, `task_projects`, `task_dependencies`, `task_followers`, `task_tags`,
    /// `task_custom_fields`).
    Tasks,
    /// Tags (`tags`).
    Tags,
    /// Custom fields and their enum options (`custom_fields`, `custom_field_enum_options`).
    CustomFields,
    /// Comments and system stories of the tasks (`stories`).
    Stories,
    /// Attachment metadata of the tasks (`attachments`).
    Attachments,
    /// Portfolios, their items and memberships (`portfolios`, `portfolio_items`,
    /// `portfolio_memberships`); premium.
    Portfolios,
    /// Goals (`goals`); premium.
    Goals,
    /// Status updates of projects, portfolios and goals (`status_updates`).
    StatusUpdates,
    /// Time tracked on the tasks (`time_tracking_entries`); premium.
    TimeTrackingEntries,
}

impl Resource {
    /// Every resource, in the order a full pass reads them.
    pub const ALL: [Resource; 16] = [
        Resource::Workspace,
        Resource::Users,
        Resource::Teams,
        Resource::TeamMemberships,
        Resource::Tags,
        Resource::CustomFields,
        Resource::Projects,
        Resource::Portfolios,
        Resource::Goals,
        Resource::ProjectMemberships,
        Resource::Sections,
        Resource::Tasks,
        Resource::Stories,
        Resource::Attachments,
        Resource::StatusUpdates,
        Resource::TimeTrackingEntries,
    ];

    /// The name written in `resources`, and in `sync_status.resource`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Workspace => "workspace",
            Resource::Users => "users",
            Resource::Teams => "teams",
            Resource::TeamMemberships => "team_memberships",
            Resource::Projects => "projects",
            Resource::ProjectMemberships => "project_memberships",
            Resource::Sections => "sections",
            Resource::Tasks => "tasks",
            Resource::Tags => "tags",
            Resource::CustomFields => "custom_fields",
            Resource::Stories => "stories",
            Resource::Attachments => "attachments",
            Resource::Portfolios => "portfolios",
            Resource::Goals => "goals",
            Resource::StatusUpdates => "status_updates",
            Resource::TimeTrackingEntries => "time_tracking_entries",
        }
    }
}

/// What a sync does with objects deleted in Asana.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// Keep the row and set `deleted_at`.
    #[default]
    Soft,
    /// Delete the row.
    Hard,
}

fn all_resources() -> Vec<Resource> {
    Resource::ALL.to_vec()
}

fn default_sweep_every() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn default_concurrency() -> usize {
    16
}

/// Settings of `sync` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// The gid of the workspace to mirror
    pub workspace: Gid,
    /// The resources to mirror (default: all). `tasks` is needed by `stories`, `attachments` and
    /// `time_tracking_entries`, which are read per task
    #[serde(default = "all_resources")]
    #[schemars(length(min = 1))]
    pub resources: Vec<Resource>,
    /// Only these projects (gids); default: every project the token can see
    #[serde(default)]
    pub projects: Vec<Gid>,
    /// Only the projects of these teams (gids); default: every project the token can see
    #[serde(default)]
    pub teams: Vec<Gid>,
    /// Objects deleted in Asana: `soft` keeps the row with `deleted_at`, `hard` deletes it
    #[serde(default)]
    pub deletes: DeleteMode,
    /// How often a run also sweeps every project with `modified_since` and compares task lists,
    /// catching what the events streams missed (Asana delivers events at most once)
    #[serde(
        default = "default_sweep_every",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub sweep_every: Duration,
    /// Projects (and per-task reads) in flight at once; the token's budget still caps requests
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 50))]
    pub concurrency: usize,
    /// Where the tables are written: `type = "sqlite"` (a file) or `type = "postgres"`
    pub sink: TableSinkSettings,
}

impl SyncSettings {
    /// Whether `resource` is mirrored.
    pub fn wants(&self, resource: Resource) -> bool {
        self.resources.contains(&resource)
    }

    /// Checks the schema cannot express.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        if !self.projects.is_empty() && !self.teams.is_empty() {
            check.problem(
                "teams",
                "set `projects` or `teams`, not both",
                "keep the list of projects, or the list of teams whose projects to mirror",
            );
        }
        let per_task = [
            Resource::Stories,
            Resource::Attachments,
            Resource::TimeTrackingEntries,
        ];
        if !self.wants(Resource::Tasks)
            && let Some(needs) = per_task.iter().find(|r| self.wants(**r))
        {
            check.problem(
                "resources",
                format!(
                    "`{}` is read per task, but `tasks` is not in `resources`",
                    needs.as_str()
                ),
                "add \"tasks\" to resources, or remove the per-task resources",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = self.resources.iter().find(|r| !seen.insert(**r)) {
            check.problem(
                "resources",
                format!("`{}` is listed twice", twice.as_str()),
                "list each resource once",
            );
        }
        check.scoped("sink", |check| self.sink.validate(check));
    }
}
