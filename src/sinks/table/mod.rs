//! Tables: the sink family of syncs. A job keeps SQL tables equal to what it reads: it upserts
//! rows by key, updates and deletes them, and advances its checkpoint, all in **one database
//! transaction** ([`TableSink::apply`]). A crash at any instant leaves either the rows and the
//! checkpoint of a batch, or neither; a restarted run resumes from the checkpoint it reads back
//! with [`TableSink::state`], so rows are never lost nor applied twice.
//!
//! The checkpoint lives in the target database itself (tables `_asana_worker_streams` and
//! `_asana_worker_checkpoints`), because only there can it share a transaction with the rows.
//! Every stream (job) has a version that each [`TableBatch`] must name: a batch whose expected
//! version is stale (a run whose lease was taken over, still writing) is refused with
//! [`SinkError::Conflict`] and changes nothing.
//!
//! SQLite (a file, the default) and PostgreSQL (a database and schema by URL) share the SQL and
//! the transaction logic ([`engine`]); each supplies its column types, parameter syntax and
//! value encoding ([`sqlite`], [`postgres`]).

pub mod engine;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{SinkContext, SinkError};
use crate::config::jobs::SettingsCheck;

/// Name of the table holding each stream's version.
pub const STREAMS_TABLE: &str = "_asana_worker_streams";
/// Name of the table holding each stream's checkpoint values.
pub const CHECKPOINTS_TABLE: &str = "_asana_worker_checkpoints";

/// A table sink's settings, chosen by `type` in a `[settings.sink]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(extend("x-noun" = "sink"))]
pub enum TableSinkSettings {
    /// Tables in a SQLite file.
    Sqlite(SqliteTableSettings),
    /// Tables in a PostgreSQL schema.
    Postgres(PostgresTableSettings),
}

impl TableSinkSettings {
    /// The sink's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            TableSinkSettings::Sqlite(_) => "sqlite",
            TableSinkSettings::Postgres(_) => "postgres",
        }
    }

    /// Checks what the schema cannot; call inside `check.scoped(key, …)`.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        match self {
            TableSinkSettings::Sqlite(settings) => settings.validate(check),
            TableSinkSettings::Postgres(settings) => settings.validate(check),
        }
    }
}

/// Settings of the `sqlite` table sink.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqliteTableSettings {
    /// the SQLite file the tables are written to (created with mode 0640 if missing)
    pub path: PathBuf,
}

impl SqliteTableSettings {
    /// The file's directory must be writable (SQLite writes its journal beside it).
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        let dir = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        check.writable_dir("path", &dir);
    }
}

fn default_schema() -> String {
    "asana".into()
}

fn default_max_connections() -> u32 {
    4
}

/// Settings of the `postgres` table sink. The URL may be given in the job file only without a
/// password; a password comes from a file or the environment, or the whole URL does.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresTableSettings {
    /// database URL without a password, e.g. "postgres://sync@db.example.com/analytics"
    #[serde(default)]
    pub url: Option<String>,
    /// file holding the whole database URL (it may carry the password)
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// environment variable holding the whole database URL
    #[serde(default)]
    pub url_env: Option<String>,
    /// file holding the password for `url`
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// environment variable holding the password for `url`
    #[serde(default)]
    pub password_env: Option<String>,
    /// schema the tables are created in (created if missing)
    #[serde(default = "default_schema")]
    pub schema: String,
    /// connections to the database at most
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 64))]
    pub max_connections: u32,
}

impl PostgresTableSettings {
    /// One URL source, no password in the job file, secrets present, a valid schema name.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        let sources = [
            self.url.is_some(),
            self.url_file.is_some(),
            self.url_env.is_some(),
        ];
        match sources.iter().filter(|set| **set).count() {
            0 => check.problem(
                "",
                "the postgres sink needs its database URL",
                "set url (without a password), url_file or url_env",
            ),
            1 => {}
            _ => check.problem(
                "url",
                "set one of `url`, `url_file` and `url_env`",
                "keep the one that holds the database URL",
            ),
        }
        if let Some(url) = &self.url {
            match url::Url::parse(url) {
                Ok(parsed) if !matches!(parsed.scheme(), "postgres" | "postgresql") => {
                    check.problem(
                        "url",
                        format!("`url` is not a PostgreSQL URL (scheme {:?})", parsed.scheme()),
                        "e.g. url = \"postgres://sync@db.example.com/analytics\"",
                    )
                }
                Ok(parsed) if parsed.password().is_some() => check.problem(
                    "url",
                    "`url` holds a password; job files are not secret",
                    "remove the password from url and put it in password_file or password_env (or the whole URL in url_file)",
                ),
                Ok(_) => {}
                Err(error) => check.problem(
                    "url",
                    format!("`url` is not a URL: {error}"),
                    "e.g. url = \"postgres://sync@db.example.com/analytics\"",
                ),
            }
        }
        if let Some(file) = &self.url_file {
            check.secret_file("url_file", file);
        }
        if let Some(variable) = &self.url_env {
            check.secret_env("url_env", variable);
        }
        match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => check.problem(
                "password_env",
                "set `password_file` or `password_env`, not both",
                "keep the one that holds the password",
            ),
            (Some(file), None) => check.secret_file("password_file", file),
            (None, Some(variable)) => check.secret_env("password_env", variable),
            (None, None) => {}
        }
        if (self.password_file.is_some() || self.password_env.is_some()) && self.url.is_none() {
            check.problem(
                "",
                "a password is set but `url` is not",
                "a password completes `url`; with url_file or url_env put the password in that URL",
            );
        }
        if !is_identifier(&self.schema) {
            check.problem(
                "schema",
                format!("`schema` {:?} is not a plain SQL name", self.schema),
                "use lowercase letters, digits and '_', starting with a letter, e.g. schema = \"asana\"",
            );
        }
    }
}

/// Whether `name` is a plain lowercase SQL identifier (no quoting surprises in either database).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// A column's type, mapped to each database's own (`Timestamp`: TEXT in SQLite, TIMESTAMPTZ in
/// PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Text.
    Text,
    /// A 64-bit integer.
    Integer,
    /// A double.
    Real,
    /// A boolean.
    Boolean,
    /// A calendar date.
    Date,
    /// An instant in UTC.
    Timestamp,
    /// A JSON document.
    Json,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name (a plain identifier).
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
}

impl Column {
    /// A column.
    pub fn new(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.to_string(),
            ty,
        }
    }
}

/// A table a job writes: created if missing, and given the columns it lacks (columns are
/// added, never dropped or retyped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// Its name (a plain identifier).
    pub name: String,
    /// The primary-key columns.
    pub key: Vec<String>,
    /// Every column, the key's included.
    pub columns: Vec<Column>,
    /// Secondary indexes, each a list of columns.
    pub indexes: Vec<Vec<String>>,
}

impl TableDef {
    /// The type of column `name`.
    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.columns.iter().find(|c| c.name == name).map(|c| c.ty)
    }

    fn check(&self) -> Result<(), SinkError> {
        let names =
            std::iter::once(self.name.as_str()).chain(self.columns.iter().map(|c| c.name.as_str()));
        if let Some(bad) = names.into_iter().find(|name| !is_identifier(name)) {
            return Err(definition_error(format!(
                "{bad:?} is not a plain SQL name (table {})",
                self.name
            )));
        }
        if self.key.is_empty() {
            return Err(definition_error(format!("table {} has no key", self.name)));
        }
        for name in self.key.iter().chain(self.indexes.iter().flatten()) {
            if self.column_type(name).is_none() {
                return Err(definition_error(format!(
                    "table {} names column {name:?}, which it does not define",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

pub(super) fn definition_error(message: String) -> SinkError {
    SinkError::Config {
        sink: "table",
        message: format!("{message}; this is a bug in the job kind"),
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Text.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A double.
    Real(f64),
    /// A boolean.
    Boolean(bool),
    /// A date.
    Date(NaiveDate),
    /// An instant.
    Timestamp(DateTime<Utc>),
    /// JSON.
    Json(Value),
}

/// Column name to value.
pub type Row = BTreeMap<String, Cell>;

/// One change to a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Inserts the row, or replaces the given columns of the row with the same key.
    Upsert {
        /// The table.
        table: String,
        /// The row; must hold the key columns.
        row: Row,
    },
    /// Sets columns of the rows whose columns equal `filter` (a soft delete sets `deleted_at`).
    Update {
        /// The table.
        table: String,
        /// Columns and the values they must equal.
        filter: Row,
        /// Columns and their new values.
        set: Row,
    },
    /// Deletes the rows whose columns equal `filter` (a key, or a parent's gid to replace all
    /// its children).
    Delete {
        /// The table.
        table: String,
        /// Columns and the values they must equal.
        filter: Row,
    },
}

/// Changes committed together with the stream's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TableBatch {
    /// The stream (the job's name).
    pub stream: String,
    /// The stream's version this batch was built from ([`StreamState::version`]): a batch built
    /// from a stale version is refused.
    pub expected_version: u64,
    /// The changes, applied in order.
    pub changes: Vec<Change>,
    /// Checkpoint values to store (replacing the same keys; other keys are kept).
    pub checkpoint: BTreeMap<String, Value>,
    /// The job clock's time, recorded as the stream's `updated_at`.
    pub now: DateTime<Utc>,
}

/// A stream's checkpoint as the target database holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamState {
    /// Batches applied so far (0: none).
    pub version: u64,
    /// Checkpoint values by key.
    pub checkpoint: BTreeMap<String, Value>,
}

/// SQL tables kept by keyed changes, with the job's checkpoint in the same transaction.
#[async_trait]
pub trait TableSink: Send + Sync + std::fmt::Debug {
    /// Creates the tables that are missing and adds the columns and indexes they lack.
    async fn ensure_tables(&self, tables: &[TableDef]) -> Result<(), SinkError>;

    /// The stream's version and checkpoint.
    async fn state(&self, stream: &str) -> Result<StreamState, SinkError>;

    /// Applies the batch's changes and checkpoint in one transaction, if the stream is still at
    /// `expected_version`; returns the new version. Nothing is applied on any error.
    async fn apply(&self, batch: TableBatch) -> Result<u64, SinkError>;

    /// Every row of `table`, ordered by its key, decoded by the definition's column types (for
    /// readers of the mirror and for checks).
    async fn read_table(&self, table: &TableDef) -> Result<Vec<Row>, SinkError>;

    /// The rows of `table` whose columns equal `filter` (NULL matches NULL), ordered by key: what
    /// a sync compares with a fresh listing to find what disappeared (a project's tasks). Only
    /// the definition's columns are read: a reader that needs fewer passes a definition
    /// without the others (the digest leaves out `data`).
    async fn read_where(&self, table: &TableDef, filter: &Row) -> Result<Vec<Row>, SinkError>;
}

/// Builds the table sink a job's settings describe and connects to its database.
pub async fn build(
    settings: &TableSinkSettings,
    context: &SinkContext,
) -> Result<Arc<dyn TableSink>, SinkError> {
    let _ = context;
    match settings {
        TableSinkSettings::Sqlite(settings) => {
            Ok(Arc::new(sqlite::SqliteTables::open(&settings.path).await?))
        }
        TableSinkSettings::Postgres(settings) => {
            Ok(Arc::new(postgres::PostgresTables::connect(settings).await?))
        }
    }
}
