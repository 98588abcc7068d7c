//! The tables a `sync` job keeps: one per resource, the gid as key, typed columns for the fields
//! people query, the full object as JSON (`data`), `synced_at`, and `deleted_at` on resources
//! (NULL while the object exists). Link tables (`task_projects`, `task_dependencies`, …) hold
//! only current links: a removed link is a deleted row, whatever the job's delete mode.
//!
//! Every table is declared once here, as a [`TableSpec`]: its columns and where each column's
//! value is in Asana's JSON. The same list creates the tables, turns API objects into rows and
//! generates the table-by-table reference in docs/sync.md (`asana-worker jobs tables sync`), so
//! the documentation cannot drift from the schema. The digest kind reads `tasks`, `projects`,
//! `task_projects`, `task_dependencies`, `users` and the `caught_up_at` checkpoint: renaming any of
//! them is a breaking change (ARCHITECTURE.md, "The sync mirror").

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::sinks::table::{Cell, Column, ColumnType, Row, TableDef};

/// The table holding each (resource, scope) the token could not read, and why.
pub const STATUS_TABLE: &str = "sync_status";

/// The checkpoint key holding the instant the mirror was last complete up to: the start of the
/// last run that finished (events read to the end, every scheduled sweep done). Digests show it.
pub const CAUGHT_UP_AT: &str = "caught_up_at";

/// One column of a [`TableSpec`]: its name, type, where its value is, and what it means.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    /// The column's name.
    pub name: &'static str,
    /// Its SQL type.
    pub ty: ColumnType,
    /// Where the value is in the object: a dotted path (`assignee.gid`); alternatives separated
    /// by `|` are tried in order (`project.gid|parent.gid`).
    pub path: &'static str,
    /// One line for the docs.
    pub doc: &'static str,
}

const fn col(
    name: &'static str,
    ty: ColumnType,
    path: &'static str,
    doc: &'static str,
) -> ColumnSpec {
    ColumnSpec {
        name,
        ty,
        path,
        doc,
    }
}

use ColumnType::{Boolean as B, Date as D, Integer as I, Real as R, Text as T, Timestamp as TS};

/// Whether a table holds objects (with `deleted_at` and `data`) or links between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableShape {
    /// Objects keyed by gid, soft- or hard-deleted.
    Resource,
    /// Current links only, keyed by the linked gids.
    Link,
}

/// One table of the mirror.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    /// The table's name.
    pub name: &'static str,
    /// Objects or links.
    pub shape: TableShape,
    /// The key columns.
    pub key: &'static [&'static str],
    /// The typed columns (the key's included), before the common ones.
    pub columns: &'static [ColumnSpec],
    /// Indexed columns (each its own index).
    pub indexes: &'static [&'static str],
    /// What the table holds, for the docs.
    pub doc: &'static str,
}

impl TableSpec {
    /// The SQL definition: the typed columns, then `data`, `synced_at` and (for resources)
    /// `deleted_at`.
    pub fn def(&self) -> TableDef {
        let mut columns: Vec<Column> = self
            .columns
            .iter()
            .map(|c| Column::new(c.name, c.ty))
            .collect();
        if self.shape == TableShape::Resource {
            columns.push(Column::new("data", ColumnType::Json));
            columns.push(Column::new("deleted_at", ColumnType::Timestamp));
        }
        columns.push(Column::new("synced_at", ColumnType::Timestamp));
        TableDef {
            name: self.name.into(),
            key: self.key.iter().map(|k| k.to_string()).collect(),
            columns,
            indexes: self.indexes.iter().map(|c| vec![c.to_string()]).collect(),
        }
    }

    /// The row for one object (or link object): every typed column read from `object`, the
    /// object itself as `data`, `deleted_at` cleared and `synced_at` = `now`.
    pub fn row(&self, object: &Value, now: DateTime<Utc>) -> Row {
        let mut row: Row = self
            .columns
            .iter()
            .map(|c| (c.name.to_string(), cell_at(object, c.path, c.ty)))
            .collect();
        if self.shape == TableShape::Resource {
            row.insert("data".into(), Cell::Json(object.clone()));
            row.insert("deleted_at".into(), Cell::Null);
        }
        row.insert("synced_at".into(), Cell::Timestamp(now));
        row
    }
}

/// The value at `path` (see [`ColumnSpec::path`]) as a cell of type `ty`; NULL when absent or
/// of another shape (a malformed field never fails a sync: the raw object is kept in `data`).
pub fn cell_at(object: &Value, path: &str, ty: ColumnType) -> Cell {
    let value = path
        .split('|')
        .map(|alternative| {
            alternative
                .split('.')
                .try_fold(object, |value, key| value.get(key))
        })
        .find_map(|found| found.filter(|v| !v.is_null()));
    let Some(value) = value else {
        return Cell::Null;
    };
    match ty {
        ColumnType::Text => match value {
            Value::String(s) => Cell::Text(s.clone()),
            Value::Number(n) => Cell::Text(n.to_string()),
            Value::Bool(b) => Cell::Text(b.to_string()),
            _ => Cell::Null,
        },
        ColumnType::Integer => value.as_i64().map(Cell::Integer).unwrap_or(Cell::Null),
        ColumnType::Real => value.as_f64().map(Cell::Real).unwrap_or(Cell::Null),
        ColumnType::Boolean => value.as_bool().map(Cell::Boolean).unwrap_or(Cell::Null),
        ColumnType::Date => value
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .map(Cell::Date)
            .unwrap_or(Cell::Null),
        ColumnType::Timestamp => value
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Cell::Timestamp(t.with_timezone(&Utc)))
            .unwrap_or(Cell::Null),
        ColumnType::Json => Cell::Json(value.clone()),
    }
}

const GID: ColumnSpec = col("gid", T, "gid", "Asana's id of the object");

/// Every table, in the order the docs list them.
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "workspaces",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "the workspace's name"),
            col(
                "is_organization",
                B,
                "is_organization",
                "whether it is an organization",
            ),
        ],
        indexes: &[],
        doc: "the synced workspace",
    },
    TableSpec {
        name: "users",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "display name"),
            col("email", T, "email", "email address"),
        ],
        indexes: &[],
        doc: "the workspace's users",
    },
    TableSpec {
        name: "teams",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "the team's name"),
            col("description", T, "description", "its description"),
            col(
                "permalink_url",
                T,
                "permalink_url",
                "link to the team in Asana",
            ),
        ],
        indexes: &[],
        doc: "the workspace's teams",
    },
    TableSpec {
        name: "team_memberships",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("team_gid", T, "team.gid", "the team"),
            col("user_gid", T, "user.gid", "the member"),
            col("is_admin", B, "is_admin", "team admin"),
            col("is_guest", B, "is_guest", "guest of the organization"),
        ],
        indexes: &["team_gid", "user_gid"],
        doc: "who is in which team",
    },
    TableSpec {
        name: "projects",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "the project's name"),
            col("team_gid", T, "team.gid", "the team it belongs to"),
            col("owner_gid", T, "owner.gid", "its owner"),
            col(
                "archived",
                B,
                "archived",
                "archived projects are kept, with this flag",
            ),
            col("completed", B, "completed", "marked complete"),
            col("color", T, "color", "its color"),
            col("created_at", TS, "created_at", "creation time"),
            col("modified_at", TS, "modified_at", "last change"),
            col("start_on", D, "start_on", "start date"),
            col("due_on", D, "due_on|due_date", "due date"),
            col(
                "permalink_url",
                T,
                "permalink_url",
                "link to the project in Asana",
            ),
        ],
        indexes: &["team_gid"],
        doc: "the projects synced (all, a team's, or a list: the job's `projects`/`teams`)",
    },
    TableSpec {
        name: "project_memberships",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("project_gid", T, "project.gid|parent.gid", "the project"),
            col("user_gid", T, "user.gid|member.gid", "the member"),
            col(
                "access_level",
                T,
                "access_level",
                "admin, editor, commenter or viewer",
            ),
        ],
        indexes: &["project_gid"],
        doc: "who is a member of which synced project",
    },
    TableSpec {
        name: "sections",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("project_gid", T, "project.gid", "the project"),
            col("name", T, "name", "the section's name"),
            col("created_at", TS, "created_at", "creation time"),
        ],
        indexes: &["project_gid"],
        doc: "the synced projects' sections",
    },
    TableSpec {
        name: "tasks",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "the task's name"),
            col(
                "resource_subtype",
                T,
                "resource_subtype",
                "default_task, milestone, approval or section",
            ),
            col(
                "approval_status",
                T,
                "approval_status",
                "approval tasks: pending, approved, …",
            ),
            col("completed", B, "completed", "done"),
            col("completed_at", TS, "completed_at", "when it was completed"),
            col("created_at", TS, "created_at", "creation time"),
            col("modified_at", TS, "modified_at", "last change"),
            col("due_on", D, "due_on", "due date"),
            col("due_at", TS, "due_at", "due time, when it has one"),
            col("start_on", D, "start_on", "start date"),
            col("assignee_gid", T, "assignee.gid", "the assignee"),
            col(
                "parent_gid",
                T,
                "parent.gid",
                "the parent task of a subtask",
            ),
            col(
                "num_subtasks",
                I,
                "num_subtasks",
                "how many subtasks it has",
            ),
            col(
                "actual_time_minutes",
                R,
                "actual_time_minutes",
                "time tracked on it",
            ),
            col(
                "permalink_url",
                T,
                "permalink_url",
                "link to the task in Asana",
            ),
        ],
        indexes: &["assignee_gid", "parent_gid", "due_on"],
        doc: "tasks and subtasks of the synced projects, every field Asana returns in `data` (custom field values included)",
    },
    TableSpec {
        name: "task_projects",
        shape: TableShape::Link,
        key: &["task_gid", "project_gid"],
        columns: &[
            col("task_gid", T, "task_gid", "the task"),
            col("project_gid", T, "project.gid", "a project it is in"),
            col(
                "section_gid",
                T,
                "section.gid",
                "its section in that project",
            ),
        ],
        indexes: &["project_gid"],
        doc: "where each task is placed: project and section (a task may be in several projects)",
    },
    TableSpec {
        name: "task_dependencies",
        shape: TableShape::Link,
        key: &["task_gid", "dependency_gid"],
        columns: &[
            col("task_gid", T, "task_gid", "the blocked task"),
            col(
                "dependency_gid",
                T,
                "gid",
                "a task it depends on (its blocker)",
            ),
        ],
        indexes: &["dependency_gid"],
        doc: "task dependencies (premium)",
    },
    TableSpec {
        name: "task_followers",
        shape: TableShape::Link,
        key: &["task_gid", "user_gid"],
        columns: &[
            col("task_gid", T, "task_gid", "the task"),
            col("user_gid", T, "gid", "a follower"),
        ],
        indexes: &["user_gid"],
        doc: "who follows which task",
    },
    TableSpec {
        name: "task_tags",
        shape: TableShape::Link,
        key: &["task_gid", "tag_gid"],
        columns: &[
            col("task_gid", T, "task_gid", "the task"),
            col("tag_gid", T, "gid", "a tag on it"),
        ],
        indexes: &["tag_gid"],
        doc: "which tags are on which task",
    },
    TableSpec {
        name: "task_custom_fields",
        shape: TableShape::Link,
        key: &["task_gid", "custom_field_gid"],
        columns: &[
            col("task_gid", T, "task_gid", "the task"),
            col("custom_field_gid", T, "gid", "the custom field"),
            col(
                "display_value",
                T,
                "display_value",
                "the value as Asana shows it",
            ),
            col("text_value", T, "text_value", "text fields"),
            col("number_value", R, "number_value", "number fields"),
            col(
                "enum_option_gid",
                T,
                "enum_value.gid",
                "enum fields: the option chosen",
            ),
        ],
        indexes: &["custom_field_gid"],
        doc: "custom field values of each task",
    },
    TableSpec {
        name: "tags",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "the tag's name"),
            col("color", T, "color", "its color"),
            col("created_at", TS, "created_at", "creation time"),
        ],
        indexes: &[],
        doc: "the workspace's tags",
    },
    TableSpec {
        name: "custom_fields",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "the field's name"),
            col(
                "type",
                T,
                "resource_subtype|type",
                "text, number, enum, multi_enum, date, people",
            ),
            col("description", T, "description", "its description"),
        ],
        indexes: &[],
        doc: "the workspace's custom fields",
    },
    TableSpec {
        name: "custom_field_enum_options",
        shape: TableShape::Link,
        key: &["gid"],
        columns: &[
            GID,
            col("custom_field_gid", T, "custom_field_gid", "the field"),
            col("name", T, "name", "the option's name"),
            col("enabled", B, "enabled", "whether it can be chosen"),
            col("color", T, "color", "its color"),
        ],
        indexes: &["custom_field_gid"],
        doc: "the options of enum custom fields (replaced with their field)",
    },
    TableSpec {
        name: "stories",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("task_gid", T, "target.gid", "the task"),
            col(
                "resource_subtype",
                T,
                "resource_subtype",
                "comment_added, assigned, …",
            ),
            col("type", T, "type", "comment or system"),
            col("text", T, "text", "the story's text"),
            col("created_at", TS, "created_at", "when"),
            col("created_by_gid", T, "created_by.gid", "who"),
        ],
        indexes: &["task_gid"],
        doc: "stories of the synced tasks: comments and system stories",
    },
    TableSpec {
        name: "attachments",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col(
                "parent_gid",
                T,
                "parent.gid",
                "the task (or project) it is on",
            ),
            col("name", T, "name", "file name"),
            col(
                "host",
                T,
                "host|resource_subtype",
                "asana (uploaded), dropbox, gdrive, box, …",
            ),
            col("size", I, "size", "bytes, for uploads"),
            col("created_at", TS, "created_at", "when"),
            col("view_url", T, "view_url", "where to view it"),
        ],
        indexes: &["parent_gid"],
        doc: "attachments of the synced tasks (metadata only, no contents)",
    },
    TableSpec {
        name: "portfolios",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "the portfolio's name"),
            col("owner_gid", T, "owner.gid", "its owner"),
            col("start_on", D, "start_on", "start date"),
            col("due_on", D, "due_on", "due date"),
            col("permalink_url", T, "permalink_url", "link to it in Asana"),
        ],
        indexes: &[],
        doc: "portfolios the token can see (premium)",
    },
    TableSpec {
        name: "portfolio_items",
        shape: TableShape::Link,
        key: &["portfolio_gid", "item_gid"],
        columns: &[
            col("portfolio_gid", T, "portfolio_gid", "the portfolio"),
            col("item_gid", T, "gid", "a project or portfolio in it"),
            col("item_type", T, "resource_type", "project or portfolio"),
        ],
        indexes: &["item_gid"],
        doc: "what each portfolio holds",
    },
    TableSpec {
        name: "portfolio_memberships",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col(
                "portfolio_gid",
                T,
                "portfolio.gid|parent.gid",
                "the portfolio",
            ),
            col("user_gid", T, "user.gid|member.gid", "the member"),
            col("access_level", T, "access_level", "admin, editor or viewer"),
        ],
        indexes: &["portfolio_gid"],
        doc: "who is a member of which portfolio",
    },
    TableSpec {
        name: "goals",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("name", T, "name", "the goal's name"),
            col("owner_gid", T, "owner.gid", "its owner"),
            col(
                "team_gid",
                T,
                "team.gid",
                "its team (NULL: workspace level)",
            ),
            col(
                "is_workspace_level",
                B,
                "is_workspace_level",
                "a workspace goal",
            ),
            col("status", T, "status", "green, yellow, red, …"),
            col("start_on", D, "start_on", "start date"),
            col("due_on", D, "due_on", "due date"),
        ],
        indexes: &[],
        doc: "the workspace's goals (premium)",
    },
    TableSpec {
        name: "status_updates",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col(
                "parent_gid",
                T,
                "parent.gid",
                "the project, portfolio or goal",
            ),
            col(
                "status_type",
                T,
                "status_type",
                "on_track, at_risk, off_track, …",
            ),
            col("title", T, "title", "its title"),
            col("text", T, "text", "its text"),
            col("created_at", TS, "created_at", "when"),
            col("author_gid", T, "author.gid|created_by.gid", "who"),
        ],
        indexes: &["parent_gid"],
        doc: "status updates of the synced projects, portfolios and goals",
    },
    TableSpec {
        name: "time_tracking_entries",
        shape: TableShape::Resource,
        key: &["gid"],
        columns: &[
            GID,
            col("task_gid", T, "task.gid", "the task"),
            col("duration_minutes", I, "duration_minutes", "minutes tracked"),
            col("entered_on", D, "entered_on", "the day it counts for"),
            col("created_at", TS, "created_at", "when it was entered"),
            col("created_by_gid", T, "created_by.gid", "who entered it"),
        ],
        indexes: &["task_gid"],
        doc: "time tracked on the synced tasks (premium)",
    },
    TableSpec {
        name: STATUS_TABLE,
        shape: TableShape::Link,
        key: &["resource", "scope_gid"],
        columns: &[
            col(
                "resource",
                T,
                "resource",
                "the resource that could not be read",
            ),
            col(
                "scope_gid",
                T,
                "scope_gid",
                "where: the workspace or a project",
            ),
            col(
                "state",
                T,
                "state",
                "payment_required (402), forbidden (403) or not_found (404)",
            ),
            col("http_status", I, "http_status", "Asana's status code"),
            col("reason", T, "reason", "Asana's message"),
        ],
        indexes: &[],
        doc: "what the token could not read, and why: a gap is recorded here, never left as an empty table",
    },
];

/// The table named `name`.
pub fn spec(name: &str) -> &'static TableSpec {
    TABLES
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no sync table {name:?}: a bug in the sync kind"))
}

/// Every table's SQL definition.
pub fn defs() -> Vec<TableDef> {
    TABLES.iter().map(TableSpec::def).collect()
}

/// A one-cell filter: `column = value`.
pub fn filter(column: &str, value: &str) -> Row {
    Row::from([(column.to_string(), Cell::Text(value.to_string()))])
}

/// The reference of docs/sync.md: one table per section, its columns with type and meaning.
pub fn markdown() -> String {
    let mut out = String::new();
    for table in TABLES {
        out.push_str(&format!(
            "### `{}`\n\n{}.",
            table.name,
            capitalise(table.doc)
        ));
        out.push_str(&format!(
            " Key: `{}`.\n\n| column | type | meaning |\n|---|---|---|\n",
            table.key.join("`, `")
        ));
        for column in table.columns {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                column.name,
                type_name(column.ty),
                column.doc
            ));
        }
        if table.shape == TableShape::Resource {
            out.push_str("| `data` | json | the whole object as Asana returned it |\n");
            out.push_str("| `deleted_at` | timestamp | when the sync saw it deleted (NULL: it exists; hard deletes remove the row) |\n");
        }
        out.push_str("| `synced_at` | timestamp | when the sync last wrote the row |\n\n");
    }
    out
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Integer => "integer",
        ColumnType::Real => "real",
        ColumnType::Boolean => "boolean",
        ColumnType::Date => "date",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Json => "json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_table_is_a_valid_definition_with_its_key_among_its_columns() {
        for table in TABLES {
            let def = table.def();
            for key in &def.key {
                assert!(def.column_type(key).is_some(), "{}: key {key}", table.name);
            }
            assert!(crate::sinks::table::is_identifier(&def.name));
        }
    }

    /// docs/sync.md's table reference is generated from [`TABLES`]; when they differ the
    /// expected text is written to `target/sync-tables.md` to paste in.
    #[test]
    fn docs_list_every_table_and_column() {
        let docs = include_str!("../../../docs/sync.md");
        let marker =
            "<!-- generated from src/jobs/sync/tables.rs; a unit test keeps it equal -->\n";
        let generated = markdown();
        let found = docs.split_once(marker).map(|(_, tail)| tail.trim_end());
        if found != Some(generated.trim_end()) {
            let _ = std::fs::write("target/sync-tables.md", &generated);
            panic!(
                "docs/sync.md's tables differ from src/jobs/sync/tables.rs: replace everything after its marker line with target/sync-tables.md"
            );
        }
    }

    #[test]
    fn cells_follow_paths_alternatives_and_types() {
        let task = json!({"gid": "1", "assignee": {"gid": "9"}, "due_on": "2026-12-05",
            "completed": true, "num_subtasks": 3, "due_at": null, "parent": null,
            "created_at": "2026-01-02T03:04:05.678Z"});
        assert_eq!(cell_at(&task, "assignee.gid", T), Cell::Text("9".into()));
        assert_eq!(cell_at(&task, "parent.gid", T), Cell::Null);
        assert_eq!(
            cell_at(&task, "due_on", D),
            Cell::Date(NaiveDate::from_ymd_opt(2026, 12, 5).unwrap())
        );
        assert_eq!(cell_at(&task, "completed", B), Cell::Boolean(true));
        assert_eq!(cell_at(&task, "num_subtasks", I), Cell::Integer(3));
        assert_eq!(cell_at(&task, "missing|gid", T), Cell::Text("1".into()));
        assert!(matches!(
            cell_at(&task, "created_at", TS),
            Cell::Timestamp(_)
        ));
        // A malformed value is NULL, never an error: the object stays in `data`.
        assert_eq!(cell_at(&json!({"due_on": "soon"}), "due_on", D), Cell::Null);
    }
}
