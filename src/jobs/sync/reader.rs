//! What a sync reads from Asana and the table changes it makes of it: the workspace-level
//! steps, a project's step, a task with its stories, attachments, time entries and subtasks,
//! and the objects events name.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::settings::{DeleteMode, Resource, SyncSettings};
use super::tables::{self, TableShape, filter};
use super::{Gap, SyncError, Syncer, gap_status};
use crate::asana::{ApiRequest, Query, segment};
use crate::asana::{AsanaError, ListWalk};
use crate::sinks::table::{Cell, Change, Row};

/// Fields read for a task: every field Asana returns, custom field values included.
pub const TASK_FIELDS: &[&str] = &[
    "name",
    "resource_subtype",
    "approval_status",
    "assignee",
    "assignee_status",
    "completed",
    "completed_at",
    "completed_by",
    "created_at",
    "created_by",
    "modified_at",
    "due_on",
    "due_at",
    "start_on",
    "start_at",
    "notes",
    "html_notes",
    "parent",
    "memberships.project",
    "memberships.section",
    "projects",
    "dependencies",
    "dependents",
    "followers",
    "tags",
    "custom_fields.gid",
    "custom_fields.name",
    "custom_fields.type",
    "custom_fields.resource_subtype",
    "custom_fields.display_value",
    "custom_fields.text_value",
    "custom_fields.number_value",
    "custom_fields.enum_value",
    "custom_fields.multi_enum_values",
    "custom_fields.date_value",
    "num_subtasks",
    "num_likes",
    "actual_time_minutes",
    "permalink_url",
    "workspace",
];

pub(super) const USER_FIELDS: &[&str] = &["name", "email"];
pub(super) const TEAM_FIELDS: &[&str] = &[
    "name",
    "description",
    "html_description",
    "organization",
    "permalink_url",
    "visibility",
];
pub(super) const TEAM_MEMBERSHIP_FIELDS: &[&str] =
    &["team", "user", "is_admin", "is_guest", "is_limited_access"];
pub(super) const PROJECT_FIELDS: &[&str] = &[
    "name",
    "archived",
    "color",
    "created_at",
    "modified_at",
    "due_on",
    "start_on",
    "notes",
    "owner",
    "team",
    "workspace",
    "public",
    "privacy_setting",
    "completed",
    "completed_at",
    "default_view",
    "permalink_url",
    "members",
    "followers",
    "custom_field_settings.custom_field",
];
pub(super) const PROJECT_MEMBERSHIP_FIELDS: &[&str] =
    &["parent", "member", "access_level", "user", "project"];
pub(super) const SECTION_FIELDS: &[&str] = &["name", "created_at", "project"];
pub(super) const TAG_FIELDS: &[&str] = &["name", "color", "created_at", "notes", "permalink_url"];
pub(super) const CUSTOM_FIELD_FIELDS: &[&str] = &[
    "name",
    "type",
    "resource_subtype",
    "description",
    "enabled",
    "precision",
    "format",
    "is_global_to_workspace",
    "enum_options",
];
pub(super) const STORY_FIELDS: &[&str] = &[
    "created_at",
    "created_by",
    "resource_subtype",
    "text",
    "type",
    "is_pinned",
    "target",
];
pub(super) const ATTACHMENT_FIELDS: &[&str] = &[
    "name",
    "resource_subtype",
    "host",
    "size",
    "created_at",
    "parent",
    "view_url",
    "permanent_url",
];
pub(super) const PORTFOLIO_FIELDS: &[&str] = &[
    "name",
    "color",
    "start_on",
    "due_on",
    "created_at",
    "owner",
    "workspace",
    "permalink_url",
    "public",
];
pub(super) const PORTFOLIO_MEMBERSHIP_FIELDS: &[&str] = &["portfolio", "user", "access_level"];
pub(super) const GOAL_FIELDS: &[&str] = &[
    "name",
    "notes",
    "due_on",
    "start_on",
    "is_workspace_level",
    "team",
    "owner",
    "status",
    "workspace",
    "time_period",
];
pub(super) const STATUS_UPDATE_FIELDS: &[&str] = &[
    "title",
    "text",
    "status_type",
    "resource_subtype",
    "author",
    "created_by",
    "created_at",
    "parent",
];
pub(super) const TIME_ENTRY_FIELDS: &[&str] = &[
    "duration_minutes",
    "entered_on",
    "created_by",
    "created_at",
    "task",
    "attributable_to",
];

/// Changes gathered before they are committed ahead of their step's end (see
/// `Syncer::in_chunks`).
const FLUSH_CHANGES: usize = 500;

/// Tasks read per chunk in `Syncer::in_chunks`.
const CHUNK_ITEMS: usize = 32;

/// A workspace-level step of a pass.
#[derive(Debug, Clone, Copy)]
pub struct WorkspaceStep {
    /// Its name in the pass's `done` set.
    pub name: &'static str,
    resource: Resource,
}

impl WorkspaceStep {
    /// Whether the job mirrors this step's resource (projects are always listed: they are the
    /// scope of everything else).
    pub fn wanted(&self, settings: &SyncSettings) -> bool {
        self.resource == Resource::Projects || settings.wants(self.resource)
    }
}

/// The workspace-level steps, in order.
pub const WORKSPACE_STEPS: &[WorkspaceStep] = &[
    WorkspaceStep {
        name: "workspace",
        resource: Resource::Workspace,
    },
    WorkspaceStep {
        name: "users",
        resource: Resource::Users,
    },
    WorkspaceStep {
        name: "teams",
        resource: Resource::Teams,
    },
    WorkspaceStep {
        name: "team_memberships",
        resource: Resource::TeamMemberships,
    },
    WorkspaceStep {
        name: "tags",
        resource: Resource::Tags,
    },
    WorkspaceStep {
        name: "custom_fields",
        resource: Resource::CustomFields,
    },
    WorkspaceStep {
        name: "projects",
        resource: Resource::Projects,
    },
    WorkspaceStep {
        name: "portfolios",
        resource: Resource::Portfolios,
    },
    WorkspaceStep {
        name: "goals",
        resource: Resource::Goals,
    },
];

/// How a project's tasks are read.
#[derive(Debug, Clone, Copy)]
pub enum ProjectMode {
    /// Every task, with its stories, attachments, time entries and subtasks.
    Full,
    /// Tasks modified since `since` (all when None) in full; the task list, gids only, to find
    /// tasks that left the project.
    Sweep {
        /// The previous sweep's start.
        since: Option<DateTime<Utc>>,
    },
}

/// What a list or object read gave: the objects, or a gap.
enum Read<T> {
    Got(T),
    Gap(Gap),
}

/// `object` with one more field (the parent's gid a link row needs: `task_gid`, …).
pub(super) fn with(object: &Value, key: &str, value: &str) -> Value {
    let mut object = object.clone();
    if let Value::Object(map) = &mut object {
        map.insert(key.into(), json!(value));
    }
    object
}

/// An object's `gid`, when it has one.
pub(super) fn gid_of(object: &Value) -> Option<&str> {
    object.get("gid").and_then(Value::as_str)
}

fn array(object: &Value, key: &str) -> Vec<Value> {
    object
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

impl Syncer<'_> {
    /// Walks a list, each page through the budget; a 402/403/404 is a gap for `resource` in
    /// `scope`.
    async fn list(
        &self,
        path: String,
        query: Query,
        fields: &[&str],
        resource: &'static str,
        scope: &str,
    ) -> Result<Read<Vec<Value>>, SyncError> {
        let walk = ListWalk::<Value>::new(self.client.clone(), path, query.opt_fields(fields));
        let mut pages = std::pin::pin!(walk.pages());
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            self.count_request();
            match page {
                Ok(page) => items.extend(page.data),
                Err(error) => return self.gap_or_error(error, resource, scope),
            }
        }
        Ok(Read::Got(items))
    }

    /// Reads one object.
    async fn get(
        &self,
        path: String,
        fields: &[&str],
        resource: &'static str,
        scope: &str,
    ) -> Result<Read<Value>, SyncError> {
        self.count_request();
        let request = ApiRequest::get(path, Query::new().opt_fields(fields));
        match self.client.execute(&request).await {
            Ok(body) => Ok(Read::Got(body.get("data").cloned().unwrap_or(Value::Null))),
            Err(error) => self.gap_or_error(error, resource, scope),
        }
    }

    fn gap_or_error<T>(
        &self,
        error: AsanaError,
        resource: &'static str,
        scope: &str,
    ) -> Result<Read<T>, SyncError> {
        match gap_status(&error) {
            Some(status) => Ok(Read::Gap(Gap {
                resource,
                scope: scope.to_string(),
                status,
                reason: match &error {
                    AsanaError::PaymentRequired { message }
                    | AsanaError::Forbidden { message }
                    | AsanaError::NotFound { message } => message.clone(),
                    other => other.to_string(),
                },
            })),
            None => Err(error.into()),
        }
    }

    fn upsert(&self, table: &str, object: &Value) -> Change {
        Change::Upsert {
            table: table.into(),
            row: tables::spec(table).row(object, self.now()),
        }
    }

    /// Marks deleted (or deletes) the rows of `table` whose `column` equals `value`, that are
    /// not deleted yet; links are always deleted.
    fn retire(&self, table: &str, column: Option<(&str, &str)>) -> Change {
        let mut matching = Row::new();
        if let Some((column, value)) = column {
            matching.insert(column.into(), Cell::Text(value.into()));
        }
        let spec = tables::spec(table);
        if spec.shape == TableShape::Link || self.settings.deletes == DeleteMode::Hard {
            return Change::Delete {
                table: table.into(),
                filter: matching,
            };
        }
        matching.insert("deleted_at".into(), Cell::Null);
        Change::Update {
            table: table.into(),
            filter: matching,
            set: Row::from([("deleted_at".to_string(), Cell::Timestamp(self.now()))]),
        }
    }

    /// Replaces the rows of `table` under a parent (or all, with None) by `objects`: those not
    /// listed any more are retired, the listed ones upserted (undeleting them).
    fn replace(
        &self,
        changes: &mut Vec<Change>,
        table: &str,
        parent: Option<(&str, &str)>,
        objects: &[Value],
    ) {
        changes.push(self.retire(table, parent));
        changes.extend(objects.iter().map(|o| self.upsert(table, o)));
    }

    /// A workspace-level step's changes (and, for `projects`, the new project scope, committed
    /// with them).
    pub(super) async fn workspace_step(
        &self,
        step: &WorkspaceStep,
    ) -> Result<Vec<Change>, SyncError> {
        let ws = self.workspace.clone();
        let mut changes = Vec::new();
        let resource = step.resource.as_str();
        let outcome: Read<()> = match step.name {
            "workspace" => match self
                .get(
                    format!("/workspaces/{}", segment(&ws)),
                    &["name", "is_organization", "email_domains"],
                    resource,
                    &ws,
                )
                .await?
            {
                Read::Got(workspace) => {
                    changes.push(self.upsert("workspaces", &workspace));
                    Read::Got(())
                }
                Read::Gap(gap) => Read::Gap(gap),
            },
            "users" => {
                self.replace_list(
                    &mut changes,
                    "users",
                    format!("/workspaces/{}/users", segment(&ws)),
                    Query::new(),
                    USER_FIELDS,
                    resource,
                )
                .await?
            }
            "teams" => {
                self.replace_list(
                    &mut changes,
                    "teams",
                    format!("/workspaces/{}/teams", segment(&ws)),
                    Query::new(),
                    TEAM_FIELDS,
                    resource,
                )
                .await?
            }
            "team_memberships" => {
                let teams = self.live_gids("teams", None).await?;
                let mut all = Vec::new();
                let mut outcome = Read::Got(());
                for team in teams {
                    match self
                        .list(
                            format!("/teams/{}/team_memberships", segment(&team)),
                            Query::new(),
                            TEAM_MEMBERSHIP_FIELDS,
                            resource,
                            &team,
                        )
                        .await?
                    {
                        Read::Got(items) => all.extend(items),
                        Read::Gap(gap) => outcome = Read::Gap(gap),
                    }
                }
                self.replace(&mut changes, "team_memberships", None, &all);
                outcome
            }
            "tags" => {
                self.replace_list(
                    &mut changes,
                    "tags",
                    format!("/workspaces/{}/tags", segment(&ws)),
                    Query::new(),
                    TAG_FIELDS,
                    resource,
                )
                .await?
            }
            "custom_fields" => {
                match self
                    .list(
                        format!("/workspaces/{}/custom_fields", segment(&ws)),
                        Query::new(),
                        CUSTOM_FIELD_FIELDS,
                        resource,
                        &ws,
                    )
                    .await?
                {
                    Read::Got(fields) => {
                        self.replace(&mut changes, "custom_fields", None, &fields);
                        changes.push(self.retire("custom_field_enum_options", None));
                        for field in &fields {
                            let field_gid = gid_of(field).unwrap_or_default();
                            for option in array(field, "enum_options") {
                                let option = with(&option, "custom_field_gid", field_gid);
                                changes.push(self.upsert("custom_field_enum_options", &option));
                            }
                        }
                        Read::Got(())
                    }
                    Read::Gap(gap) => Read::Gap(gap),
                }
            }
            "projects" => self.projects_step(&mut changes).await?,
            "portfolios" => self.portfolios_step(&mut changes).await?,
            "goals" => {
                match self
                    .list(
                        "/goals".into(),
                        Query::new().param("workspace", &ws),
                        GOAL_FIELDS,
                        resource,
                        &ws,
                    )
                    .await?
                {
                    Read::Got(goals) => {
                        self.replace(&mut changes, "goals", None, &goals);
                        for goal in &goals {
                            self.status_updates_of(&mut changes, gid_of(goal).unwrap_or_default())
                                .await?;
                        }
                        Read::Got(())
                    }
                    Read::Gap(gap) => Read::Gap(gap),
                }
            }
            other => unreachable!("unknown sync step {other}"),
        };
        match outcome {
            Read::Got(()) => changes.push(Syncer::gap_cleared(resource, &ws)),
            Read::Gap(gap) => changes.push(self.gap_change(&gap)),
        }
        Ok(changes)
    }

    async fn replace_list(
        &self,
        changes: &mut Vec<Change>,
        table: &str,
        path: String,
        query: Query,
        fields: &[&str],
        resource: &'static str,
    ) -> Result<Read<()>, SyncError> {
        let ws = self.workspace.clone();
        Ok(match self.list(path, query, fields, resource, &ws).await? {
            Read::Got(items) => {
                self.replace(changes, table, None, &items);
                Read::Got(())
            }
            Read::Gap(gap) => Read::Gap(gap),
        })
    }

    /// The first key column of the live rows of `table` (under `parent`): their gids, or for a
    /// link table keyed by task first, the tasks it links.
    async fn live_gids(
        &self,
        table: &str,
        parent: Option<(&str, &str)>,
    ) -> Result<Vec<String>, SyncError> {
        let spec = tables::spec(table);
        let mut matching = Row::new();
        if let Some((column, value)) = parent {
            matching.insert(column.into(), Cell::Text(value.into()));
        }
        if spec.shape == TableShape::Resource {
            matching.insert("deleted_at".into(), Cell::Null);
        }
        let rows = self.sink.read_where(&spec.def(), &matching).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match row.get(spec.key[0]) {
                Some(Cell::Text(gid)) => Some(gid.clone()),
                _ => None,
            })
            .collect())
    }

    /// The projects in scope (all, a team's, or a list), their rows, and the scope in the state.
    async fn projects_step(&self, changes: &mut Vec<Change>) -> Result<Read<()>, SyncError> {
        let ws = self.workspace.clone();
        let resource = Resource::Projects.as_str();
        let mut projects = Vec::new();
        if !self.settings.projects.is_empty() {
            for gid in &self.settings.projects {
                match self
                    .get(
                        format!("/projects/{}", segment(gid.as_str())),
                        PROJECT_FIELDS,
                        resource,
                        gid.as_str(),
                    )
                    .await?
                {
                    Read::Got(project) => projects.push(project),
                    Read::Gap(gap) => changes.push(self.gap_change(&gap)),
                }
            }
        } else if !self.settings.teams.is_empty() {
            for team in &self.settings.teams {
                match self
                    .list(
                        format!("/teams/{}/projects", segment(team.as_str())),
                        Query::new(),
                        PROJECT_FIELDS,
                        resource,
                        team.as_str(),
                    )
                    .await?
                {
                    Read::Got(items) => projects.extend(items),
                    Read::Gap(gap) => return Ok(Read::Gap(gap)),
                }
            }
        } else {
            match self
                .list(
                    "/projects".into(),
                    Query::new().param("workspace", &ws),
                    PROJECT_FIELDS,
                    resource,
                    &ws,
                )
                .await?
            {
                Read::Got(items) => projects = items,
                Read::Gap(gap) => return Ok(Read::Gap(gap)),
            }
        }
        let scope: BTreeSet<String> = projects
            .iter()
            .filter_map(|p| gid_of(p).map(str::to_string))
            .collect();
        if self.settings.wants(Resource::Projects) {
            self.replace(changes, "projects", None, &projects);
        }
        self.writer.lock().await.pending_projects = Some(scope);
        Ok(Read::Got(()))
    }

    async fn portfolios_step(&self, changes: &mut Vec<Change>) -> Result<Read<()>, SyncError> {
        let ws = self.workspace.clone();
        let resource = Resource::Portfolios.as_str();
        let mut listed = self
            .list(
                "/portfolios".into(),
                Query::new().param("workspace", &ws),
                PORTFOLIO_FIELDS,
                resource,
                &ws,
            )
            .await;
        if matches!(listed, Err(SyncError::Api(AsanaError::BadRequest { .. }))) {
            // Tokens other than service accounts must name the owner: their own portfolios.
            listed = self
                .list(
                    "/portfolios".into(),
                    Query::new().param("workspace", &ws).param("owner", "me"),
                    PORTFOLIO_FIELDS,
                    resource,
                    &ws,
                )
                .await;
        }
        let portfolios = match listed? {
            Read::Got(items) => items,
            Read::Gap(gap) => return Ok(Read::Gap(gap)),
        };
        self.replace(changes, "portfolios", None, &portfolios);
        for portfolio in &portfolios {
            let gid = gid_of(portfolio).unwrap_or_default().to_string();
            if let Read::Got(items) = self
                .list(
                    format!("/portfolios/{}/items", segment(&gid)),
                    Query::new(),
                    &["name", "resource_type"],
                    resource,
                    &gid,
                )
                .await?
            {
                changes.push(self.retire("portfolio_items", Some(("portfolio_gid", &gid))));
                for item in &items {
                    changes
                        .push(self.upsert("portfolio_items", &with(item, "portfolio_gid", &gid)));
                }
            }
            if let Read::Got(members) = self
                .list(
                    "/portfolio_memberships".into(),
                    Query::new().param("portfolio", &gid),
                    PORTFOLIO_MEMBERSHIP_FIELDS,
                    resource,
                    &gid,
                )
                .await?
            {
                self.replace(
                    changes,
                    "portfolio_memberships",
                    Some(("portfolio_gid", &gid)),
                    &members,
                );
            }
            self.status_updates_of(changes, &gid).await?;
        }
        Ok(Read::Got(()))
    }

    async fn status_updates_of(
        &self,
        changes: &mut Vec<Change>,
        parent: &str,
    ) -> Result<(), SyncError> {
        if !self.settings.wants(Resource::StatusUpdates) {
            return Ok(());
        }
        match self
            .list(
                "/status_updates".into(),
                Query::new().param("parent", parent),
                STATUS_UPDATE_FIELDS,
                "status_updates",
                parent,
            )
            .await?
        {
            Read::Got(updates) => self.replace(
                changes,
                "status_updates",
                Some(("parent_gid", parent)),
                &updates,
            ),
            Read::Gap(gap) => changes.push(self.gap_change(&gap)),
        }
        Ok(())
    }

    /// One project's changes: its row, sections, memberships, status updates and tasks.
    pub(super) async fn project_changes(
        &self,
        gid: &str,
        mode: ProjectMode,
    ) -> Result<Vec<Change>, SyncError> {
        let mut changes = Vec::new();
        let path = |tail: &str| format!("/projects/{}{tail}", segment(gid));
        if matches!(mode, ProjectMode::Full) && self.settings.wants(Resource::Projects) {
            match self.get(path(""), PROJECT_FIELDS, "project", gid).await? {
                Read::Got(project) => changes.push(self.upsert("projects", &project)),
                Read::Gap(gap) => {
                    changes.push(self.gap_change(&gap));
                    return Ok(changes);
                }
            }
        }
        if self.settings.wants(Resource::Sections) {
            let Some(sections) = self
                .project_list(
                    &mut changes,
                    gid,
                    path("/sections"),
                    Query::new(),
                    SECTION_FIELDS,
                )
                .await?
            else {
                return Ok(changes);
            };
            self.replace(
                &mut changes,
                "sections",
                Some(("project_gid", gid)),
                &sections,
            );
        }
        if self.settings.wants(Resource::ProjectMemberships) {
            let Some(members) = self
                .project_list(
                    &mut changes,
                    gid,
                    path("/project_memberships"),
                    Query::new(),
                    PROJECT_MEMBERSHIP_FIELDS,
                )
                .await?
            else {
                return Ok(changes);
            };
            self.replace(
                &mut changes,
                "project_memberships",
                Some(("project_gid", gid)),
                &members,
            );
        }
        self.status_updates_of(&mut changes, gid).await?;
        if self.settings.wants(Resource::Tasks) {
            let tasks_query = |since: Option<DateTime<Utc>>| {
                let query = Query::new().param("project", gid);
                match since {
                    Some(since) => query.param(
                        "modified_since",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    ),
                    None => query,
                }
            };
            let (changed, listed, unchanged) = match mode {
                ProjectMode::Full | ProjectMode::Sweep { since: None } => {
                    let Some(tasks) = self
                        .project_list(
                            &mut changes,
                            gid,
                            "/tasks".into(),
                            tasks_query(None),
                            TASK_FIELDS,
                        )
                        .await?
                    else {
                        return Ok(changes);
                    };
                    let listed = gids(&tasks);
                    (tasks, listed, Vec::new())
                }
                ProjectMode::Sweep { since: Some(since) } => {
                    let Some(changed) = self
                        .project_list(
                            &mut changes,
                            gid,
                            "/tasks".into(),
                            tasks_query(Some(since)),
                            TASK_FIELDS,
                        )
                        .await?
                    else {
                        return Ok(changes);
                    };
                    // The whole list, small: finds tasks that left, and parents whose
                    // subtasks may have changed without them.
                    let Some(all) = self
                        .project_list(
                            &mut changes,
                            gid,
                            "/tasks".into(),
                            tasks_query(None),
                            &["num_subtasks"],
                        )
                        .await?
                    else {
                        return Ok(changes);
                    };
                    let changed_gids = gids(&changed);
                    let unchanged = all
                        .iter()
                        .filter(|t| gid_of(t).is_some_and(|g| !changed_gids.contains(g)))
                        .cloned()
                        .collect();
                    (changed, gids(&all), unchanged)
                }
            };
            // Listed tasks are new or changed ones: their subtasks are walked too.
            let walk_all_subtasks = true;
            changes.extend(
                self.in_chunks(changed, |task| self.task_tree(task, walk_all_subtasks))
                    .await?,
            );
            changes.extend(
                self.in_chunks(
                    unchanged,
                    |task| async move { self.sweep_parent(&task).await },
                )
                .await?,
            );
            // `task_projects` is keyed by task first: its live gids are the tasks placed here.
            let vanished: Vec<String> = self
                .live_gids("task_projects", Some(("project_gid", gid)))
                .await?
                .into_iter()
                .filter(|task| !listed.contains(task))
                .collect();
            changes.extend(self.check_tasks(vanished, true).await?);
        }
        changes.push(Syncer::gap_cleared("project", gid));
        Ok(changes)
    }

    /// The mirror's row of a task, if it holds one.
    async fn mirror_task(&self, gid: &str) -> Result<Option<Row>, SyncError> {
        let rows = self
            .sink
            .read_where(&tables::spec("tasks").def(), &filter("gid", gid))
            .await?;
        Ok(rows.into_iter().next())
    }

    /// A sweep's check of a task `modified_since` did not return (listed with its subtask
    /// count only): a count unlike the mirror's re-reads it; otherwise its subtasks are
    /// compared with the mirror, since a subtask's change does not move its parent.
    async fn sweep_parent(&self, listed: &Value) -> Result<Vec<Change>, SyncError> {
        let gid = gid_of(listed).unwrap_or_default().to_string();
        let count = listed
            .get("num_subtasks")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let mirrored = self.mirror_task(&gid).await?;
        let mirrored_count = match mirrored.as_ref().and_then(|r| r.get("num_subtasks")) {
            Some(Cell::Integer(n)) => Some(*n),
            _ => None,
        };
        let live = mirrored
            .as_ref()
            .is_some_and(|r| r.get("deleted_at") == Some(&Cell::Null));
        if !live || mirrored_count != Some(count) {
            return self.refresh_task(&gid, false).await;
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        self.sweep_subtasks(&gid).await
    }

    /// Compares a task's subtasks with the mirror's: new or changed ones are re-read with what
    /// hangs on them, unchanged ones have their own subtasks compared, vanished ones checked.
    fn sweep_subtasks(
        &self,
        parent: &str,
    ) -> futures::future::BoxFuture<'_, Result<Vec<Change>, SyncError>> {
        let parent = parent.to_string();
        Box::pin(async move {
            let subtasks = match self
                .list(
                    format!("/tasks/{}/subtasks", segment(&parent)),
                    Query::new(),
                    TASK_FIELDS,
                    "tasks",
                    &parent,
                )
                .await?
            {
                Read::Got(subtasks) => subtasks,
                Read::Gap(_) => return Ok(Vec::new()),
            };
            let mut changes = Vec::new();
            let listed = gids(&subtasks);
            for subtask in subtasks {
                let gid = gid_of(&subtask).unwrap_or_default().to_string();
                let same = match self.mirror_task(&gid).await? {
                    Some(row) => {
                        row.get("deleted_at") == Some(&Cell::Null)
                            && row.get("data") == Some(&Cell::Json(subtask.clone()))
                    }
                    None => false,
                };
                if !same {
                    changes.extend(self.task_tree(subtask, true).await?);
                } else if subtask
                    .get("num_subtasks")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    > 0
                {
                    changes.extend(self.sweep_subtasks(&gid).await?);
                }
            }
            let vanished: Vec<String> = self
                .live_gids("tasks", Some(("parent_gid", &parent)))
                .await?
                .into_iter()
                .filter(|child| !listed.contains(child))
                .collect();
            changes.extend(self.check_tasks(vanished, false).await?);
            Ok(changes)
        })
    }

    /// Lists something of project `gid`; when the token may not (a gap, recorded in `changes`),
    /// None: the project is left as the mirror has it.
    async fn project_list(
        &self,
        changes: &mut Vec<Change>,
        gid: &str,
        path: String,
        query: Query,
        fields: &[&str],
    ) -> Result<Option<Vec<Value>>, SyncError> {
        match self.list(path, query, fields, "project", gid).await? {
            Read::Got(items) => Ok(Some(items)),
            Read::Gap(gap) => {
                changes.push(self.gap_change(&gap));
                Ok(None)
            }
        }
    }

    /// A task as listed, with its stories, attachments, time entries and its subtasks,
    /// recursively: walked when `all_subtasks` and it has any, or when its count differs from
    /// the mirror's (a subtask added, deleted or restored with its parent). Subtasks the mirror
    /// holds under it but Asana no longer lists are checked one by one.
    fn task_tree(
        &self,
        task: Value,
        all_subtasks: bool,
    ) -> futures::future::BoxFuture<'_, Result<Vec<Change>, SyncError>> {
        Box::pin(async move {
            let gid = gid_of(&task).unwrap_or_default().to_string();
            let mut changes = self.task_bundle(&task).await?;
            let subtask_count = task
                .get("num_subtasks")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let mirror_children = self.live_gids("tasks", Some(("parent_gid", &gid))).await?;
            let mut listed = BTreeSet::new();
            let counts_differ = usize::try_from(subtask_count).ok() != Some(mirror_children.len());
            if counts_differ || (all_subtasks && subtask_count > 0) {
                let subtasks = match self
                    .list(
                        format!("/tasks/{}/subtasks", segment(&gid)),
                        Query::new(),
                        TASK_FIELDS,
                        "tasks",
                        &gid,
                    )
                    .await?
                {
                    Read::Got(subtasks) => subtasks,
                    Read::Gap(_) => Vec::new(),
                };
                listed = gids(&subtasks);
                for subtask in subtasks {
                    changes.extend(self.task_tree(subtask, all_subtasks).await?);
                }
            }
            let vanished: Vec<String> = mirror_children
                .into_iter()
                .filter(|child| !listed.contains(child))
                .collect();
            changes.extend(self.check_tasks(vanished, false).await?);
            Ok(changes)
        })
    }

    /// A task's row, its links, and its stories, attachments and time entries.
    async fn task_bundle(&self, task: &Value) -> Result<Vec<Change>, SyncError> {
        let gid = gid_of(task).unwrap_or_default().to_string();
        self.figure(|f| f.tasks_refreshed += 1);
        let mut changes = vec![self.upsert("tasks", task)];
        let links: [(&str, Vec<Value>); 5] = [
            ("task_projects", array(task, "memberships")),
            ("task_dependencies", array(task, "dependencies")),
            ("task_followers", array(task, "followers")),
            ("task_tags", array(task, "tags")),
            ("task_custom_fields", array(task, "custom_fields")),
        ];
        for (table, items) in links {
            changes.push(self.retire(table, Some(("task_gid", &gid))));
            for item in items {
                changes.push(self.upsert(table, &with(&item, "task_gid", &gid)));
            }
        }
        if self.settings.wants(Resource::Stories)
            && let Read::Got(stories) = self
                .list(
                    format!("/tasks/{}/stories", segment(&gid)),
                    Query::new(),
                    STORY_FIELDS,
                    "stories",
                    &gid,
                )
                .await?
        {
            self.replace(&mut changes, "stories", Some(("task_gid", &gid)), &stories);
        }
        if self.settings.wants(Resource::Attachments)
            && let Read::Got(attachments) = self
                .list(
                    "/attachments".into(),
                    Query::new().param("parent", &gid),
                    ATTACHMENT_FIELDS,
                    "attachments",
                    &gid,
                )
                .await?
        {
            self.replace(
                &mut changes,
                "attachments",
                Some(("parent_gid", &gid)),
                &attachments,
            );
        }
        if self.settings.wants(Resource::TimeTrackingEntries)
            && !self.no_time_tracking.load(Ordering::Relaxed)
        {
            let tracked = task
                .get("actual_time_minutes")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
                > 0.0;
            if !tracked {
                self.replace(
                    &mut changes,
                    "time_tracking_entries",
                    Some(("task_gid", &gid)),
                    &[],
                );
            } else {
                match self
                    .list(
                        format!("/tasks/{}/time_tracking_entries", segment(&gid)),
                        Query::new(),
                        TIME_ENTRY_FIELDS,
                        "time_tracking_entries",
                        &self.workspace,
                    )
                    .await?
                {
                    Read::Got(entries) => self.replace(
                        &mut changes,
                        "time_tracking_entries",
                        Some(("task_gid", &gid)),
                        &entries,
                    ),
                    Read::Gap(gap) if gap.status == 402 => {
                        self.no_time_tracking.store(true, Ordering::Relaxed);
                        changes.push(self.gap_change(&gap));
                    }
                    Read::Gap(_) => {}
                }
            }
        }
        Ok(changes)
    }

    /// Re-reads tasks by gid (ones that left a list, or that events name): a 404 retires the
    /// task and what hangs on it; a task outside the synced projects leaves the mirror; others
    /// are refreshed.
    pub(super) async fn check_tasks(
        &self,
        gids: Vec<String>,
        refresh_parents: bool,
    ) -> Result<Vec<Change>, SyncError> {
        self.in_chunks(gids, |gid| async move {
            self.refresh_task(&gid, refresh_parents).await
        })
        .await
    }

    /// Runs `read` on every item, [`Syncer::settings`]`.concurrency` at a time, and gathers the
    /// changes, committing them (without moving the checkpoint) whenever [`FLUSH_CHANGES`] have
    /// gathered, so memory stays bounded however large a project or an events page is; returns
    /// the rest. Items go in chunks, each drained before a commit: a commit awaited while other
    /// reads sat unpolled mid-query would wait for the connections they hold. A task's bundle
    /// is never split between two transactions, and a crash after such a commit repeats the
    /// step, which rewrites the same keyed rows.
    async fn in_chunks<T, F, Fut>(&self, items: Vec<T>, read: F) -> Result<Vec<Change>, SyncError>
    where
        F: Fn(T) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Change>, SyncError>>,
    {
        let mut pending = Vec::new();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<T> = items.by_ref().take(CHUNK_ITEMS).collect();
            let bundles: Vec<Vec<Change>> = futures::stream::iter(chunk)
                .map(&read)
                .buffer_unordered(self.settings.concurrency)
                .try_collect()
                .await?;
            pending.extend(bundles.into_iter().flatten());
            if pending.len() >= FLUSH_CHANGES {
                self.commit(std::mem::take(&mut pending), |_| {}).await?;
            }
        }
        Ok(pending)
    }

    fn refresh_task(
        &self,
        gid: &str,
        refresh_parent: bool,
    ) -> futures::future::BoxFuture<'_, Result<Vec<Change>, SyncError>> {
        let gid = gid.to_string();
        Box::pin(async move {
            match self
                .get(
                    format!("/tasks/{}", segment(&gid)),
                    TASK_FIELDS,
                    "tasks",
                    &gid,
                )
                .await?
            {
                Read::Got(task) => {
                    if self.in_scope(&task).await? {
                        // A subtask new to the mirror (restored from the trash: no event names
                        // its parent) changes its parent's subtask count.
                        let parent = task.get("parent").and_then(gid_of).map(str::to_string);
                        let new = self
                            .live_gids("tasks", Some(("gid", &gid)))
                            .await?
                            .is_empty();
                        let mut changes = self.task_tree(task, false).await?;
                        if let (Some(parent), true, true) = (parent, new, refresh_parent) {
                            changes.extend(self.refresh_task(&parent, false).await?);
                        }
                        Ok(changes)
                    } else {
                        Ok(self.remove_task(&gid, true))
                    }
                }
                Read::Gap(gap) if gap.status == 404 => {
                    let mut changes = self.remove_task(&gid, false);
                    // Its parent's subtask count changed, and no event says so.
                    let mirrored = self.mirror_task(&gid).await?;
                    if let Some(Cell::Text(parent)) =
                        mirrored.as_ref().and_then(|r| r.get("parent_gid"))
                        && mirrored.as_ref().and_then(|r| r.get("deleted_at")) == Some(&Cell::Null)
                        && refresh_parent
                    {
                        changes.extend(self.refresh_task(parent, false).await?);
                    }
                    let children = self.live_gids("tasks", Some(("parent_gid", &gid))).await?;
                    changes.extend(self.check_tasks(children, false).await?);
                    Ok(changes)
                }
                // Readable no more (a project that became private): it leaves the mirror.
                Read::Gap(_) => Ok(self.remove_task(&gid, true)),
            }
        })
    }

    /// Whether a task belongs in the mirror: placed in a synced project, or a subtask of a
    /// task that is (the mirror's copy of the parent, or, for a parent the mirror does not hold
    /// yet, the parent as Asana has it).
    fn in_scope<'s>(
        &'s self,
        task: &'s Value,
    ) -> futures::future::BoxFuture<'s, Result<bool, SyncError>> {
        Box::pin(async move {
            let placed = {
                let writer = self.writer.lock().await;
                array(task, "memberships").iter().any(|m| {
                    m.get("project")
                        .and_then(gid_of)
                        .is_some_and(|p| writer.state.projects.contains(p))
                })
            };
            if placed {
                return Ok(true);
            }
            let Some(parent) = task.get("parent").and_then(gid_of) else {
                return Ok(false);
            };
            if !self
                .live_gids("tasks", Some(("gid", parent)))
                .await?
                .is_empty()
            {
                return Ok(true);
            }
            match self
                .get(
                    format!("/tasks/{}", segment(parent)),
                    &["parent", "memberships.project"],
                    "tasks",
                    parent,
                )
                .await?
            {
                Read::Got(parent) => self.in_scope(&parent).await,
                Read::Gap(_) => Ok(false),
            }
        })
    }

    /// Retires a deleted task (or removes, with `leaves_scope`, a task that is no longer in the
    /// synced projects), its links and what hangs on it.
    fn remove_task(&self, gid: &str, leaves_scope: bool) -> Vec<Change> {
        let mut changes = Vec::new();
        let key = Some(("task_gid", gid));
        for table in [
            "task_projects",
            "task_dependencies",
            "task_followers",
            "task_tags",
            "task_custom_fields",
        ] {
            changes.push(self.retire(table, key));
        }
        let hanging = [
            ("stories", "task_gid"),
            ("attachments", "parent_gid"),
            ("time_tracking_entries", "task_gid"),
        ];
        if leaves_scope {
            changes.push(Change::Delete {
                table: "tasks".into(),
                filter: filter("gid", gid),
            });
            for (table, column) in hanging {
                changes.push(Change::Delete {
                    table: table.into(),
                    filter: filter(column, gid),
                });
            }
        } else {
            changes.push(self.retire("tasks", Some(("gid", gid))));
            for (table, column) in hanging {
                changes.push(self.retire(table, Some((column, gid))));
            }
        }
        changes
    }

    /// The changes the events of one page call for: every task they name (a story's or an
    /// attachment's task, a dependency's other end, a subtask's parent) is re-read; projects,
    /// sections and goals likewise.
    pub(super) async fn apply_events(&self, events: &[Value]) -> Result<Vec<Change>, SyncError> {
        self.figure(|f| f.events += events.len() as u64);
        let mut tasks = BTreeSet::new();
        let mut projects = BTreeSet::new();
        let mut sections_of = BTreeSet::new();
        let mut goals = BTreeSet::new();
        for event in events {
            let kind = event
                .pointer("/resource/resource_type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let gid = event.pointer("/resource/gid").and_then(Value::as_str);
            let parent_kind = event
                .pointer("/parent/resource_type")
                .and_then(Value::as_str);
            let parent = event.pointer("/parent/gid").and_then(Value::as_str);
            match (kind, gid) {
                ("task", Some(gid)) => {
                    tasks.insert(gid.to_string());
                    if parent_kind == Some("task") {
                        tasks.extend(parent.map(str::to_string));
                    }
                    for key in ["/change/added_value", "/change/removed_value"] {
                        if event.pointer("/change/field").and_then(Value::as_str)
                            == Some("dependencies")
                            && let Some(other) = event.pointer(key).and_then(gid_of)
                        {
                            tasks.insert(other.to_string());
                        }
                    }
                }
                ("story" | "attachment", _) if parent_kind == Some("task") => {
                    tasks.extend(parent.map(str::to_string));
                }
                ("project", Some(gid)) => {
                    projects.insert(gid.to_string());
                }
                ("section", Some(_)) if parent_kind == Some("project") => {
                    sections_of.extend(parent.map(str::to_string));
                }
                ("section", Some(section)) => {
                    // A renamed section names no parent: re-read its project's sections.
                    if let Ok(rows) = self
                        .sink
                        .read_where(&tables::spec("sections").def(), &filter("gid", section))
                        .await
                        && let Some(Cell::Text(project)) =
                            rows.first().and_then(|r| r.get("project_gid"))
                    {
                        sections_of.insert(project.clone());
                    }
                }
                ("goal", Some(gid)) => {
                    goals.insert(gid.to_string());
                }
                _ => {}
            }
        }
        let mut changes = Vec::new();
        let scope = self.writer.lock().await.state.projects.clone();
        for project in projects.iter().filter(|p| scope.contains(*p)) {
            if self.settings.wants(Resource::Projects) {
                match self
                    .get(
                        format!("/projects/{}", segment(project)),
                        PROJECT_FIELDS,
                        "projects",
                        project,
                    )
                    .await?
                {
                    Read::Got(object) => changes.push(self.upsert("projects", &object)),
                    Read::Gap(gap) if gap.status == 404 => {
                        changes.push(self.retire("projects", Some(("gid", project))))
                    }
                    Read::Gap(gap) => changes.push(self.gap_change(&gap)),
                }
            }
        }
        if self.settings.wants(Resource::Sections) {
            for project in sections_of.iter().filter(|p| scope.contains(*p)) {
                if let Read::Got(sections) = self
                    .list(
                        format!("/projects/{}/sections", segment(project)),
                        Query::new(),
                        SECTION_FIELDS,
                        "project",
                        project,
                    )
                    .await?
                {
                    self.replace(
                        &mut changes,
                        "sections",
                        Some(("project_gid", project)),
                        &sections,
                    );
                }
            }
        }
        if self.settings.wants(Resource::Goals) {
            for goal in &goals {
                match self
                    .get(
                        format!("/goals/{}", segment(goal)),
                        GOAL_FIELDS,
                        "goals",
                        goal,
                    )
                    .await?
                {
                    Read::Got(object) => changes.push(self.upsert("goals", &object)),
                    Read::Gap(gap) if gap.status == 404 => {
                        changes.push(self.retire("goals", Some(("gid", goal))))
                    }
                    Read::Gap(_) => {}
                }
            }
        }
        if self.settings.wants(Resource::Tasks) {
            changes.extend(self.check_tasks(tasks.into_iter().collect(), true).await?);
        }
        Ok(changes)
    }
}

fn gids(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|o| gid_of(o).map(str::to_string))
        .collect()
}
