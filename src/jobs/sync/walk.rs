//! A sequential page walk of everything a sync mirrors, the way a single-threaded connector
//! reads it: one request at a time, every list in full, no events. It is the yardstick of
//! `asana-worker bench sync` and the reference the sync tests compare the mirror with: what
//! the tables should hold, read back through the API independently of the sync's passes,
//! events and sweeps.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde_json::Value;

use super::reader::{
    ATTACHMENT_FIELDS, CUSTOM_FIELD_FIELDS, GOAL_FIELDS, PORTFOLIO_FIELDS,
    PORTFOLIO_MEMBERSHIP_FIELDS, PROJECT_FIELDS, PROJECT_MEMBERSHIP_FIELDS, SECTION_FIELDS,
    STATUS_UPDATE_FIELDS, STORY_FIELDS, TAG_FIELDS, TASK_FIELDS, TEAM_FIELDS,
    TEAM_MEMBERSHIP_FIELDS, TIME_ENTRY_FIELDS, USER_FIELDS, gid_of, with,
};
use super::settings::{Resource, SyncSettings};
use super::tables::{self, TableShape};
use crate::asana::{ApiRequest, AsanaClient, AsanaError, ListWalk, Query, segment};
use crate::sinks::table::{Cell, Row};

/// Rows by table, each table's rows by key (key cells joined with `/`), `synced_at` left out.
pub type Snapshot = BTreeMap<String, BTreeMap<String, Row>>;

/// The walk's result: the rows, and the requests it took.
#[derive(Debug, Default)]
pub struct Walked {
    /// What the tables should hold (live rows only).
    pub snapshot: Snapshot,
    /// Requests made.
    pub requests: u64,
}

/// A row as compared: without `synced_at` (and, for resources, only live ones).
pub fn comparable(table: &str, row: &Row) -> Option<(String, Row)> {
    let spec = tables::spec(table);
    if spec.shape == TableShape::Resource
        && !matches!(row.get("deleted_at"), None | Some(Cell::Null))
    {
        return None;
    }
    let mut row = row.clone();
    row.remove("synced_at");
    let key = spec
        .key
        .iter()
        .map(|k| match row.get(*k) {
            Some(Cell::Text(text)) => text.clone(),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("/");
    Some((key, row))
}

struct Walker<'a> {
    client: &'a AsanaClient,
    settings: &'a SyncSettings,
    walked: Walked,
}

/// Walks what `settings` mirrors, sequentially, with `client`. Lists the token may not read
/// (402, 403) are left out, as the sync leaves them out (it records them in `sync_status`).
pub async fn walk(client: &AsanaClient, settings: &SyncSettings) -> Result<Walked, AsanaError> {
    let mut walker = Walker {
        client,
        settings,
        walked: Walked::default(),
    };
    walker.everything().await?;
    Ok(walker.walked)
}

fn gid(object: &Value) -> String {
    gid_of(object).unwrap_or_default().to_string()
}

fn refused(error: &AsanaError) -> bool {
    matches!(
        error,
        AsanaError::PaymentRequired { .. } | AsanaError::Forbidden { .. }
    )
}

impl Walker<'_> {
    fn put(&mut self, table: &str, object: &Value) {
        let row = tables::spec(table).row(object, chrono::DateTime::UNIX_EPOCH);
        if let Some((key, row)) = comparable(table, &row) {
            self.walked
                .snapshot
                .entry(table.to_string())
                .or_default()
                .insert(key, row);
        }
    }

    async fn list(
        &mut self,
        path: String,
        query: Query,
        fields: &[&str],
    ) -> Result<Option<Vec<Value>>, AsanaError> {
        // The client's own page walk, one page at a time, as a sequential connector reads.
        let walk = ListWalk::<Value>::new(self.client.clone(), path, query.opt_fields(fields));
        let mut pages = std::pin::pin!(walk.pages());
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            self.walked.requests += 1;
            match page {
                Ok(page) => items.extend(page.data),
                Err(error) if refused(&error) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
        Ok(Some(items))
    }

    async fn get(&mut self, path: String, fields: &[&str]) -> Result<Option<Value>, AsanaError> {
        self.walked.requests += 1;
        match self
            .client
            .execute(&ApiRequest::get(path, Query::new().opt_fields(fields)))
            .await
        {
            Ok(body) => Ok(body.get("data").cloned()),
            Err(error) if refused(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn wants(&self, resource: Resource) -> bool {
        self.settings.wants(resource)
    }

    async fn everything(&mut self) -> Result<(), AsanaError> {
        let ws = self.settings.workspace.as_str().to_string();
        let ws_path = |tail: &str| format!("/workspaces/{}{tail}", segment(&ws));
        if self.wants(Resource::Workspace)
            && let Some(workspace) = self
                .get(ws_path(""), &["name", "is_organization", "email_domains"])
                .await?
        {
            self.put("workspaces", &workspace);
        }
        if self.wants(Resource::Users) {
            for user in self
                .list(ws_path("/users"), Query::new(), USER_FIELDS)
                .await?
                .unwrap_or_default()
            {
                self.put("users", &user);
            }
        }
        let teams = self
            .list(ws_path("/teams"), Query::new(), TEAM_FIELDS)
            .await?
            .unwrap_or_default();
        for team in &teams {
            if self.wants(Resource::Teams) {
                self.put("teams", team);
            }
            if self.wants(Resource::TeamMemberships) {
                let path = format!("/teams/{}/team_memberships", segment(&gid(team)));
                for membership in self
                    .list(path, Query::new(), TEAM_MEMBERSHIP_FIELDS)
                    .await?
                    .unwrap_or_default()
                {
                    self.put("team_memberships", &membership);
                }
            }
        }
        if self.wants(Resource::Tags) {
            for tag in self
                .list(ws_path("/tags"), Query::new(), TAG_FIELDS)
                .await?
                .unwrap_or_default()
            {
                self.put("tags", &tag);
            }
        }
        if self.wants(Resource::CustomFields) {
            for field in self
                .list(ws_path("/custom_fields"), Query::new(), CUSTOM_FIELD_FIELDS)
                .await?
                .unwrap_or_default()
            {
                self.put("custom_fields", &field);
                for option in field
                    .get("enum_options")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    self.put(
                        "custom_field_enum_options",
                        &with(&option, "custom_field_gid", &gid(&field)),
                    );
                }
            }
        }
        let projects = self.projects(&ws).await?;
        if self.wants(Resource::Portfolios)
            && let Some(portfolios) = self
                .list(
                    "/portfolios".into(),
                    Query::new().param("workspace", &ws),
                    PORTFOLIO_FIELDS,
                )
                .await?
        {
            for portfolio in &portfolios {
                let portfolio_gid = gid(portfolio);
                self.put("portfolios", portfolio);
                let items_path = format!("/portfolios/{}/items", segment(&portfolio_gid));
                for item in self
                    .list(items_path, Query::new(), &["name", "resource_type"])
                    .await?
                    .unwrap_or_default()
                {
                    self.put(
                        "portfolio_items",
                        &with(&item, "portfolio_gid", &portfolio_gid),
                    );
                }
                let query = Query::new().param("portfolio", &portfolio_gid);
                for membership in self
                    .list(
                        "/portfolio_memberships".into(),
                        query,
                        PORTFOLIO_MEMBERSHIP_FIELDS,
                    )
                    .await?
                    .unwrap_or_default()
                {
                    self.put("portfolio_memberships", &membership);
                }
                self.status_updates(&portfolio_gid).await?;
            }
        }
        if self.wants(Resource::Goals)
            && let Some(goals) = self
                .list(
                    "/goals".into(),
                    Query::new().param("workspace", &ws),
                    GOAL_FIELDS,
                )
                .await?
        {
            for goal in &goals {
                self.put("goals", goal);
                self.status_updates(&gid(goal)).await?;
            }
        }
        for project in &projects {
            self.project(project).await?;
        }
        Ok(())
    }

    async fn projects(&mut self, ws: &str) -> Result<Vec<Value>, AsanaError> {
        let mut projects = Vec::new();
        if !self.settings.projects.is_empty() {
            for project in self.settings.projects.clone() {
                let path = format!("/projects/{}", segment(project.as_str()));
                projects.extend(self.get(path, PROJECT_FIELDS).await?);
            }
        } else if !self.settings.teams.is_empty() {
            for team in self.settings.teams.clone() {
                let path = format!("/teams/{}/projects", segment(team.as_str()));
                projects.extend(
                    self.list(path, Query::new(), PROJECT_FIELDS)
                        .await?
                        .unwrap_or_default(),
                );
            }
        } else {
            let query = Query::new().param("workspace", ws);
            projects = self
                .list("/projects".into(), query, PROJECT_FIELDS)
                .await?
                .unwrap_or_default();
        }
        if self.wants(Resource::Projects) {
            for project in &projects {
                self.put("projects", project);
            }
        }
        Ok(projects)
    }

    async fn status_updates(&mut self, parent: &str) -> Result<(), AsanaError> {
        if self.wants(Resource::StatusUpdates) {
            let query = Query::new().param("parent", parent);
            for update in self
                .list("/status_updates".into(), query, STATUS_UPDATE_FIELDS)
                .await?
                .unwrap_or_default()
            {
                self.put("status_updates", &update);
            }
        }
        Ok(())
    }

    async fn project(&mut self, project: &Value) -> Result<(), AsanaError> {
        let project_gid = gid(project);
        let path = |tail: &str| format!("/projects/{}{tail}", segment(&project_gid));
        let Some(sections) = self
            .list(path("/sections"), Query::new(), SECTION_FIELDS)
            .await?
        else {
            return Ok(());
        };
        if self.wants(Resource::Sections) {
            for section in &sections {
                self.put("sections", section);
            }
        }
        if self.wants(Resource::ProjectMemberships) {
            for membership in self
                .list(
                    path("/project_memberships"),
                    Query::new(),
                    PROJECT_MEMBERSHIP_FIELDS,
                )
                .await?
                .unwrap_or_default()
            {
                self.put("project_memberships", &membership);
            }
        }
        self.status_updates(&project_gid).await?;
        if !self.wants(Resource::Tasks) {
            return Ok(());
        }
        let query = Query::new().param("project", &project_gid);
        let mut tasks = self
            .list("/tasks".into(), query, TASK_FIELDS)
            .await?
            .unwrap_or_default();
        while let Some(task) = tasks.pop() {
            tasks.extend(self.task(&task).await?);
        }
        Ok(())
    }

    /// Puts a task and what hangs on it; returns its subtasks.
    async fn task(&mut self, task: &Value) -> Result<Vec<Value>, AsanaError> {
        let task_gid = gid(task);
        self.put("tasks", task);
        for (table, key) in [
            ("task_projects", "memberships"),
            ("task_dependencies", "dependencies"),
            ("task_followers", "followers"),
            ("task_tags", "tags"),
            ("task_custom_fields", "custom_fields"),
        ] {
            for item in task
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                self.put(table, &with(&item, "task_gid", &task_gid));
            }
        }
        let path = |tail: &str| format!("/tasks/{}{tail}", segment(&task_gid));
        if self.wants(Resource::Stories) {
            for story in self
                .list(path("/stories"), Query::new(), STORY_FIELDS)
                .await?
                .unwrap_or_default()
            {
                self.put("stories", &story);
            }
        }
        if self.wants(Resource::Attachments) {
            let query = Query::new().param("parent", &task_gid);
            for attachment in self
                .list("/attachments".into(), query, ATTACHMENT_FIELDS)
                .await?
                .unwrap_or_default()
            {
                self.put("attachments", &attachment);
            }
        }
        let tracked = task
            .get("actual_time_minutes")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            > 0.0;
        if self.wants(Resource::TimeTrackingEntries) && tracked {
            for entry in self
                .list(
                    path("/time_tracking_entries"),
                    Query::new(),
                    TIME_ENTRY_FIELDS,
                )
                .await?
                .unwrap_or_default()
            {
                self.put("time_tracking_entries", &entry);
            }
        }
        let has_subtasks = task
            .get("num_subtasks")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0;
        if !has_subtasks {
            return Ok(Vec::new());
        }
        Ok(self
            .list(path("/subtasks"), Query::new(), TASK_FIELDS)
            .await?
            .unwrap_or_default())
    }
}

/// The mirror's rows in the same shape as a [`Snapshot`] (live rows, no `synced_at`), for the
/// tables the walk fills.
pub async fn mirror_snapshot(
    sink: &dyn crate::sinks::table::TableSink,
) -> Result<Snapshot, crate::sinks::SinkError> {
    let mut snapshot = Snapshot::new();
    for spec in tables::TABLES
        .iter()
        .filter(|t| t.name != tables::STATUS_TABLE)
    {
        let rows = sink.read_table(&spec.def()).await?;
        let table: BTreeMap<String, Row> = rows
            .iter()
            .filter_map(|row| comparable(spec.name, row))
            .collect();
        if !table.is_empty() {
            snapshot.insert(spec.name.to_string(), table);
        }
    }
    Ok(snapshot)
}

/// What differs between two snapshots, table by table, in a few lines (empty: equal).
pub fn differences(expected: &Snapshot, actual: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let empty = BTreeMap::new();
    for name in names {
        let want = expected.get(name).unwrap_or(&empty);
        let got = actual.get(name).unwrap_or(&empty);
        let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        let changed: Vec<&String> = want
            .iter()
            .filter(|(k, row)| got.get(*k).is_some_and(|other| other != *row))
            .map(|(k, _)| k)
            .collect();
        if !missing.is_empty() {
            out.push(format!(
                "{name}: {} missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(3)]
            ));
        }
        if !extra.is_empty() {
            out.push(format!(
                "{name}: {} extra, e.g. {:?}",
                extra.len(),
                &extra[..extra.len().min(3)]
            ));
        }
        if let Some(first) = changed.first() {
            out.push(format!(
                "{name}: {} differ, e.g. {first}: {}",
                changed.len(),
                row_difference(&want[*first], &got[*first])
            ));
        }
    }
    out
}

/// The columns (and, in `data`, the fields) two rows differ in.
fn row_difference(expected: &Row, actual: &Row) -> String {
    let mut parts = Vec::new();
    for (column, want) in expected {
        let got = actual.get(column).unwrap_or(&Cell::Null);
        match (want, got) {
            (Cell::Json(Value::Object(a)), Cell::Json(Value::Object(b))) => {
                for key in a
                    .keys()
                    .chain(b.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    if a.get(key) != b.get(key) {
                        parts.push(format!(
                            "data.{key}: expected {:?}, got {:?}",
                            a.get(key),
                            b.get(key)
                        ));
                    }
                }
            }
            _ if want != got => parts.push(format!("{column}: expected {want:?}, got {got:?}")),
            _ => {}
        }
    }
    parts.join("; ")
}
