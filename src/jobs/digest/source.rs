//! Where a digest's tasks come from: the Asana API (task lists with `completed_since`, one
//! list per project or assignee, read concurrently under the credential's budget), or the
//! tables of a `sync` job (no API call; the mirror's last catch-up is the data's freshness).
//! Both produce the same [`Collected`] for [`super::model::build`].

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use serde_json::Value;

use super::model::{Collected, Named, Person, Placement, ProjectInfo, TaskFacts};
use super::settings::DigestSettings;
use crate::asana::{ApiRequest, AsanaClient, AsanaError, ListWalk, Query, segment};
use crate::sinks::SinkError;
use crate::sinks::table::{Cell, Row, TableSink};

/// The task fields the API path asks for: everything a section or a template needs, with the
/// names of assignees, projects, sections and dependencies, so no second request is needed.
pub const TASK_FIELDS: &[&str] = &[
    "name",
    "resource_subtype",
    "approval_status",
    "completed",
    "completed_at",
    "created_at",
    "modified_at",
    "due_on",
    "due_at",
    "permalink_url",
    "assignee.name",
    "assignee.email",
    "memberships.project.name",
    "memberships.project.permalink_url",
    "memberships.section.name",
    "dependencies.name",
    "dependencies.completed",
];

/// Task lists read at once; the credential's budget still paces every request.
const CONCURRENT_LISTS: usize = 8;

/// Why a digest's data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Asana refused or failed.
    #[error(transparent)]
    Api(#[from] AsanaError),
    /// The mirror's database failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The mirror cannot serve this digest (not caught up, too old, another workspace).
    #[error("{0}")]
    Mirror(String),
    /// The mirror is not caught up yet; worth retrying later.
    #[error("{0}")]
    MirrorBehind(String),
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

fn time(value: &Value, key: &str) -> Option<DateTime<Utc>> {
    value
        .get(key)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn date(value: &Value, key: &str) -> Option<NaiveDate> {
    value
        .get(key)
        .and_then(Value::as_str)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

fn person(value: &Value) -> Option<Person> {
    let gid = text(value, "gid")?;
    Some(Person {
        name: text(value, "name").unwrap_or_else(|| gid.clone()),
        email: text(value, "email"),
        gid,
    })
}

/// A task as the API returns it with [`TASK_FIELDS`]; None without a gid.
pub fn facts_from_api(task: &Value) -> Option<TaskFacts> {
    let gid = text(task, "gid")?;
    let placements = task
        .get("memberships")
        .and_then(Value::as_array)
        .map(|memberships| {
            memberships
                .iter()
                .filter_map(|m| {
                    let project = m.get("project")?;
                    Some(Placement {
                        project: text(project, "gid")?,
                        section: m.get("section").and_then(|s| {
                            Some(Named {
                                gid: text(s, "gid")?,
                                name: text(s, "name").unwrap_or_default(),
                            })
                        }),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let blocked_by = task
        .get("dependencies")
        .and_then(Value::as_array)
        .map(|deps| {
            deps.iter()
                .filter(|d| d.get("completed") != Some(&Value::Bool(true)))
                .map(|d| {
                    text(d, "name")
                        .or_else(|| text(d, "gid"))
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    Some(TaskFacts {
        name: text(task, "name").unwrap_or_default(),
        url: text(task, "permalink_url").unwrap_or_default(),
        subtype: text(task, "resource_subtype").unwrap_or_else(|| "default_task".into()),
        approval_status: text(task, "approval_status"),
        completed: task.get("completed") == Some(&Value::Bool(true)),
        completed_at: time(task, "completed_at"),
        created_at: time(task, "created_at"),
        modified_at: time(task, "modified_at"),
        due_on: date(task, "due_on"),
        due_at: time(task, "due_at"),
        assignee: task.get("assignee").and_then(person),
        placements,
        blocked_by,
        gid,
    })
}

/// The projects named by the tasks' memberships (for scopes that do not list them).
fn projects_of_tasks(tasks: &[Value]) -> BTreeMap<String, ProjectInfo> {
    let mut found = BTreeMap::new();
    for task in tasks {
        for membership in task
            .get("memberships")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(project) = membership.get("project")
                && let Some(gid) = text(project, "gid")
            {
                found.entry(gid.clone()).or_insert_with(|| ProjectInfo {
                    name: text(project, "name").unwrap_or_else(|| gid.clone()),
                    url: text(project, "permalink_url"),
                    gid,
                });
            }
        }
    }
    found
}

/// How the API was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadWith {
    /// Task search: only the tasks the sections can hold (paid tiers).
    Search,
    /// Task lists with `completed_since`: every open task of the scope.
    TaskLists,
}

impl ReadWith {
    /// Its name in the run's figures.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadWith::Search => "search",
            ReadWith::TaskLists => "task_lists",
        }
    }
}

/// What an API read covers.
#[derive(Debug, Clone, Copy)]
pub struct ApiWindow {
    /// Where `completed` and `created` start.
    pub since: DateTime<Utc>,
    /// The digest's instant.
    pub as_of: DateTime<Utc>,
    /// The first local day after the due window (today + `due_within`).
    pub due_before: NaiveDate,
}

/// Whether the search API can serve these sections: each must be decided by a due date or a
/// completion time, which search filters on; the others need every open task of the scope.
pub fn search_serves(settings: &DigestSettings) -> bool {
    use super::settings::SectionKind;
    settings.search
        && settings.sections.iter().all(|section| {
            matches!(
                section,
                SectionKind::Overdue
                    | SectionKind::DueSoon
                    | SectionKind::Milestones
                    | SectionKind::Approvals
                    | SectionKind::Completed
            )
        })
}

/// Projects named in one search (`projects.any`), so the query stays a reasonable URL.
const PROJECTS_PER_SEARCH: usize = 50;

/// Reads the tasks the sections can hold with task search: incomplete tasks due before the end
/// of the window, and (when `completed` is shown) tasks completed since the previous digest,
/// 100 per request, paged by `created_at` as Asana documents for search. Returns the tasks and
/// the requests made.
async fn search_tasks(
    client: &AsanaClient,
    settings: &DigestSettings,
    scope: &[(&'static str, String)],
    window: ApiWindow,
) -> Result<(Vec<Value>, u64), AsanaError> {
    use super::settings::SectionKind;
    let path = format!(
        "/workspaces/{}/tasks/search",
        segment(settings.workspace.as_str())
    );
    let mut filters: Vec<Vec<(&str, String)>> = vec![vec![
        ("completed", "false".into()),
        (
            "due_on.before",
            window.due_before.format("%Y-%m-%d").to_string(),
        ),
    ]];
    if settings.sections.contains(&SectionKind::Completed) {
        filters.push(vec![(
            "completed_at.after",
            window
                .since
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )]);
    }
    let mut tasks = Vec::new();
    let mut requests = 0u64;
    for (scope_key, scope_value) in scope {
        for filter in &filters {
            let mut after: Option<String> = None;
            let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
            loop {
                let mut query = Query::new()
                    .param(*scope_key, scope_value.clone())
                    .param("sort_by", "created_at")
                    .param("sort_ascending", "true")
                    .param("limit", "100");
                for (key, value) in filter {
                    query = query.param(*key, value.clone());
                }
                if let Some(after) = &after {
                    query = query.param("created_at.after", after.clone());
                }
                let request = ApiRequest::get(path.clone(), query.opt_fields(TASK_FIELDS))
                    .class(crate::budget::RequestClass::Search);
                let page: Vec<Value> = client.data(&request).await?;
                requests += 1;
                let full = page.len() == 100;
                // The next page starts a millisecond before the last task's creation, so tasks
                // created in the same millisecond are not skipped; repeats are dropped by gid.
                let last = page.last().and_then(|task| time(task, "created_at"));
                let before = seen.len();
                for task in page {
                    if let Some(gid) = text(&task, "gid")
                        && seen.insert(gid)
                    {
                        tasks.push(task);
                    }
                }
                let Some(last) = last.filter(|_| full && seen.len() > before) else {
                    break;
                };
                after = Some(
                    (last - chrono::Duration::milliseconds(1))
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
            }
        }
    }
    Ok((tasks, requests))
}

/// Reads the digest's tasks from the API: task search where the tier and the sections allow it
/// (falling back to task lists on a 402), task lists otherwise. Returns what was collected, the
/// requests made and how.
pub async fn from_api(
    client: &AsanaClient,
    settings: &DigestSettings,
    window: ApiWindow,
) -> Result<(Collected, u64, ReadWith), SourceError> {
    let mut requests = 0u64;
    let mut collected = Collected {
        data_as_of: Some(window.as_of),
        ..Collected::default()
    };
    // The scope: the projects (listed for a team or a portfolio), or the people.
    let by_person = !settings.assignees.is_empty();
    let projects = if by_person {
        Vec::new()
    } else {
        let (projects, count) = scope_projects(client, settings).await?;
        requests += count;
        projects
    };
    let (all, count, read_with) = read_tasks(client, settings, window, &projects).await?;
    requests += count;
    if by_person {
        // Each person's name and email, for their group and their email.
        for assignee in &settings.assignees {
            let user: Value = client
                .data(&ApiRequest::get(
                    format!("/users/{}", segment(assignee.as_str())),
                    Query::new().opt_fields(&["name", "email"]),
                ))
                .await?;
            requests += 1;
            collected.assignees.extend(person(&user));
        }
        collected.projects = projects_of_tasks(&all).into_values().collect();
    } else {
        // Names of listed projects come with their tasks' memberships: no request per project.
        let named = projects_of_tasks(&all);
        collected.projects = projects
            .into_iter()
            .map(|project| match named.get(&project.gid) {
                Some(found) if project.url.is_none() => found.clone(),
                _ => project,
            })
            .collect();
    }
    collected.tasks = all.iter().filter_map(facts_from_api).collect();
    Ok((collected, requests, read_with))
}

/// The projects of a project scope, in order: listed for a team or a portfolio (archived ones
/// left out), named by gid for a list (their names come with the tasks). Also the requests made.
async fn scope_projects(
    client: &AsanaClient,
    settings: &DigestSettings,
) -> Result<(Vec<ProjectInfo>, u64), AsanaError> {
    let fields = ["name", "permalink_url", "archived", "resource_type"];
    let path = if let Some(team) = &settings.team {
        format!("/teams/{}/projects", segment(team.as_str()))
    } else if let Some(portfolio) = &settings.portfolio {
        format!("/portfolios/{}/items", segment(portfolio.as_str()))
    } else {
        let named = settings
            .projects
            .iter()
            .map(|gid| ProjectInfo {
                gid: gid.to_string(),
                name: gid.to_string(),
                url: None,
            })
            .collect();
        return Ok((named, 0));
    };
    let mut query = Query::new().opt_fields(&fields);
    if settings.team.is_some() {
        query = query.param("archived", "false");
    }
    let (items, count) = list_all(client, path, query).await?;
    let projects = items
        .iter()
        .filter(|item| item.get("resource_type").and_then(Value::as_str) != Some("portfolio"))
        .filter_map(project_info)
        .collect();
    Ok((projects, count))
}

/// Every item of a list, and the pages it took.
async fn list_all(
    client: &AsanaClient,
    path: String,
    query: Query,
) -> Result<(Vec<Value>, u64), AsanaError> {
    let walk = ListWalk::<Value>::new(client.clone(), path, query);
    let mut pages = std::pin::pin!(walk.pages());
    let mut items = Vec::new();
    let mut count = 0u64;
    while let Some(page) = pages.next().await {
        count += 1;
        items.extend(page?.data);
    }
    Ok((items, count))
}

/// The scope's tasks: by search where it serves (see [`search_serves`]) and the tier is paid,
/// else (or after a 402) by task lists, eight at a time. Also the requests made and how.
async fn read_tasks(
    client: &AsanaClient,
    settings: &DigestSettings,
    window: ApiWindow,
    projects: &[ProjectInfo],
) -> Result<(Vec<Value>, u64, ReadWith), AsanaError> {
    let mut requests = 0u64;
    let people: Vec<String> = settings.assignees.iter().map(|a| a.to_string()).collect();
    if search_serves(settings) && client.budget().config().tier == crate::budget::Tier::Paid {
        let scope: Vec<(&'static str, String)> = if people.is_empty() {
            projects
                .chunks(PROJECTS_PER_SEARCH)
                .map(|chunk| {
                    let gids: Vec<&str> = chunk.iter().map(|p| p.gid.as_str()).collect();
                    ("projects.any", gids.join(","))
                })
                .collect()
        } else {
            vec![("assignee.any", people.join(","))]
        };
        match search_tasks(client, settings, &scope, window).await {
            Ok((tasks, count)) => return Ok((tasks, count, ReadWith::Search)),
            Err(AsanaError::PaymentRequired { .. }) => {
                requests += 1;
                tracing::info!(
                    "Task search answered 402 (not a premium workspace); reading task lists instead"
                );
            }
            Err(error) => return Err(error),
        }
    }
    let completed_since = window
        .since
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let workspace = settings.workspace.to_string();
    let selectors: Vec<Vec<(&'static str, String)>> = if people.is_empty() {
        projects
            .iter()
            .map(|p| vec![("project", p.gid.clone())])
            .collect()
    } else {
        people
            .into_iter()
            .map(|person| vec![("assignee", person), ("workspace", workspace.clone())])
            .collect()
    };
    let queries: Vec<Query> = selectors
        .into_iter()
        .map(|selector| {
            let mut query = Query::new();
            for (key, value) in selector {
                query = query.param(key, value);
            }
            query
                .param("completed_since", completed_since.clone())
                .opt_fields(TASK_FIELDS)
        })
        .collect();
    let lists = futures::stream::iter(
        queries
            .into_iter()
            .map(|query| list_all(client, "/tasks".to_string(), query)),
    )
    .buffered(CONCURRENT_LISTS)
    .collect::<Vec<_>>()
    .await;
    let mut all = Vec::new();
    for result in lists {
        let (tasks, count) = result?;
        requests += count;
        all.extend(tasks);
    }
    Ok((all, requests, ReadWith::TaskLists))
}

fn project_info(item: &Value) -> Option<ProjectInfo> {
    if item.get("archived") == Some(&Value::Bool(true)) {
        return None;
    }
    let gid = text(item, "gid")?;
    Some(ProjectInfo {
        name: text(item, "name").unwrap_or_else(|| gid.clone()),
        url: text(item, "permalink_url"),
        gid,
    })
}

fn cell_text(row: &Row, column: &str) -> Option<String> {
    match row.get(column) {
        Some(Cell::Text(text)) => Some(text.clone()),
        Some(Cell::Integer(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn cell_time(row: &Row, column: &str) -> Option<DateTime<Utc>> {
    match row.get(column) {
        Some(Cell::Timestamp(at)) => Some(*at),
        Some(Cell::Text(text)) => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}

fn cell_date(row: &Row, column: &str) -> Option<NaiveDate> {
    match row.get(column) {
        Some(Cell::Date(date)) => Some(*date),
        Some(Cell::Text(text)) => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok(),
        _ => None,
    }
}

fn cell_bool(row: &Row, column: &str) -> bool {
    match row.get(column) {
        Some(Cell::Boolean(value)) => *value,
        Some(Cell::Integer(value)) => *value != 0,
        _ => false,
    }
}

fn live() -> Row {
    Row::from([("deleted_at".to_string(), Cell::Null)])
}

/// The columns the mirror source reads, of every table (keys are always read).
const MIRROR_COLUMNS: &[&str] = &[
    "name",
    "email",
    "permalink_url",
    "team_gid",
    "archived",
    "project_gid",
    "section_gid",
    "resource_subtype",
    "approval_status",
    "completed",
    "completed_at",
    "created_at",
    "modified_at",
    "due_on",
    "due_at",
    "assignee_gid",
    "deleted_at",
    "item_type",
];

/// Reads the digest's tasks from a sync job's tables: `tasks`, `task_projects`,
/// `task_dependencies`, `projects`, `sections`, `users` and, for a portfolio scope,
/// `portfolio_items` (ARCHITECTURE.md, "The sync mirror"). Fails as behind when the mirror has
/// not caught up since `max_age` before `as_of`.
pub async fn from_mirror(
    sink: &dyn TableSink,
    sync_job: &str,
    settings: &DigestSettings,
    as_of: DateTime<Utc>,
    max_age: std::time::Duration,
) -> Result<Collected, SourceError> {
    use crate::jobs::sync::tables;
    let state = sink.state(sync_job).await?;
    let caught_up = state
        .checkpoint
        .get(tables::CAUGHT_UP_AT)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            SourceError::MirrorBehind(format!(
                "the sync job {sync_job:?} has not finished a pass yet, so its tables are incomplete; the digest waits for it (run `asana-worker jobs run {sync_job}`)"
            ))
        })?;
    let age = as_of.signed_duration_since(caught_up);
    if age.to_std().is_ok_and(|age| age > max_age) {
        return Err(SourceError::MirrorBehind(format!(
            "the sync job {sync_job:?} last caught up at {caught_up} ({} minutes ago), longer ago than the digest's source.max_age; check that job's runs (`asana-worker jobs show {sync_job}`)",
            age.num_minutes()
        )));
    }
    // Only the columns the digest uses are read (the definition's columns are the ones
    // selected): the `data` column of a large mirror costs more to decode than the rest.
    let read = |name: &'static str, filter: Row| async move {
        let mut def = tables::spec(name).def();
        def.columns.retain(|column| {
            def.key.contains(&column.name) || MIRROR_COLUMNS.contains(&column.name.as_str())
        });
        def.indexes.clear();
        sink.read_where(&def, &filter).await
    };
    let projects_rows = read("projects", live()).await?;
    let users: BTreeMap<String, Person> = read("users", live())
        .await?
        .iter()
        .filter_map(|row| {
            let gid = cell_text(row, "gid")?;
            Some((
                gid.clone(),
                Person {
                    name: cell_text(row, "name").unwrap_or_else(|| gid.clone()),
                    email: cell_text(row, "email"),
                    gid,
                },
            ))
        })
        .collect();
    let sections: BTreeMap<String, String> = read("sections", live())
        .await?
        .iter()
        .filter_map(|row| Some((cell_text(row, "gid")?, cell_text(row, "name")?)))
        .collect();
    let project_of = |row: &Row| -> Option<ProjectInfo> {
        let gid = cell_text(row, "gid")?;
        Some(ProjectInfo {
            name: cell_text(row, "name").unwrap_or_else(|| gid.clone()),
            url: cell_text(row, "permalink_url"),
            gid,
        })
    };
    let all_projects: BTreeMap<String, ProjectInfo> = projects_rows
        .iter()
        .filter_map(|row| project_of(row).map(|p| (p.gid.clone(), p)))
        .collect();
    let mut collected = Collected {
        data_as_of: Some(caught_up),
        ..Collected::default()
    };
    if let Some(team) = &settings.team {
        collected.projects = projects_rows
            .iter()
            .filter(|row| cell_text(row, "team_gid").as_deref() == Some(team.as_str()))
            .filter(|row| !cell_bool(row, "archived"))
            .filter_map(project_of)
            .collect();
        collected.projects.sort_by(|a, b| a.name.cmp(&b.name));
    } else if let Some(portfolio) = &settings.portfolio {
        let items = read(
            "portfolio_items",
            tables::filter("portfolio_gid", portfolio.as_str()),
        )
        .await?;
        collected.projects = items
            .iter()
            .filter(|row| cell_text(row, "item_type").as_deref() != Some("portfolio"))
            .filter_map(|row| all_projects.get(&cell_text(row, "item_gid")?).cloned())
            .collect();
    } else if !settings.projects.is_empty() {
        for gid in &settings.projects {
            let Some(project) = all_projects.get(gid.as_str()) else {
                return Err(SourceError::Mirror(format!(
                    "project {gid} is not in the tables of the sync job {sync_job:?}; add it to that job's projects (or teams), or read the API with source = \"api\""
                )));
            };
            collected.projects.push(project.clone());
        }
    } else {
        for gid in &settings.assignees {
            let person = users.get(gid.as_str()).cloned().unwrap_or(Person {
                gid: gid.to_string(),
                name: gid.to_string(),
                email: None,
            });
            collected.assignees.push(person);
        }
    }
    let placements_rows = read("task_projects", Row::new()).await?;
    let mut placements: BTreeMap<String, Vec<Placement>> = BTreeMap::new();
    for row in &placements_rows {
        let (Some(task), Some(project)) =
            (cell_text(row, "task_gid"), cell_text(row, "project_gid"))
        else {
            continue;
        };
        let section = cell_text(row, "section_gid").map(|gid| Named {
            name: sections.get(&gid).cloned().unwrap_or_default(),
            gid,
        });
        placements
            .entry(task)
            .or_default()
            .push(Placement { project, section });
    }
    let task_rows = read("tasks", live()).await?;
    let by_gid: BTreeMap<String, &Row> = task_rows
        .iter()
        .filter_map(|row| Some((cell_text(row, "gid")?, row)))
        .collect();
    let mut blocked_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in read("task_dependencies", Row::new()).await? {
        let (Some(task), Some(dependency)) = (
            cell_text(&row, "task_gid"),
            cell_text(&row, "dependency_gid"),
        ) else {
            continue;
        };
        let waiting = match by_gid.get(&dependency) {
            Some(dep) if cell_bool(dep, "completed") => None,
            Some(dep) => Some(cell_text(dep, "name").unwrap_or(dependency)),
            // Not mirrored (another project, deleted): counted as incomplete by name only when
            // known; a deleted dependency no longer blocks.
            None => None,
        };
        blocked_by.entry(task).or_default().extend(waiting);
    }
    let scope_projects: std::collections::BTreeSet<&str> =
        collected.projects.iter().map(|p| p.gid.as_str()).collect();
    let scope_people: std::collections::BTreeSet<&str> =
        settings.assignees.iter().map(|g| g.as_str()).collect();
    let since_filter = |row: &Row| {
        // Completed tasks from long ago never reach a section; skip them early.
        !cell_bool(row, "completed") || cell_time(row, "completed_at").is_some()
    };
    let mut tasks = Vec::new();
    let mut extra_projects: BTreeMap<String, ProjectInfo> = BTreeMap::new();
    for (gid, row) in &by_gid {
        let task_placements = placements.get(gid).cloned().unwrap_or_default();
        let assignee = cell_text(row, "assignee_gid").map(|gid| {
            users.get(&gid).cloned().unwrap_or(Person {
                name: gid.clone(),
                email: None,
                gid,
            })
        });
        let in_scope = if scope_people.is_empty() {
            task_placements
                .iter()
                .any(|p| scope_projects.contains(p.project.as_str()))
        } else {
            assignee
                .as_ref()
                .is_some_and(|a| scope_people.contains(a.gid.as_str()))
        };
        if !in_scope || !since_filter(row) {
            continue;
        }
        if !scope_people.is_empty() {
            for placement in &task_placements {
                if let Some(project) = all_projects.get(&placement.project) {
                    extra_projects.insert(project.gid.clone(), project.clone());
                }
            }
        }
        tasks.push(TaskFacts {
            gid: gid.clone(),
            name: cell_text(row, "name").unwrap_or_default(),
            url: cell_text(row, "permalink_url").unwrap_or_default(),
            subtype: cell_text(row, "resource_subtype").unwrap_or_else(|| "default_task".into()),
            approval_status: cell_text(row, "approval_status"),
            completed: cell_bool(row, "completed"),
            completed_at: cell_time(row, "completed_at"),
            created_at: cell_time(row, "created_at"),
            modified_at: cell_time(row, "modified_at"),
            due_on: cell_date(row, "due_on"),
            due_at: cell_time(row, "due_at"),
            assignee,
            placements: task_placements,
            blocked_by: blocked_by.get(gid).cloned().unwrap_or_default(),
        });
    }
    if !scope_people.is_empty() {
        collected.projects = extra_projects.into_values().collect();
    }
    collected.tasks = tasks;
    Ok(collected)
}
