//! The `sqlite` table sink: tables in a SQLite file (WAL, `synchronous=FULL`, so a committed
//! batch survives a power cut). Timestamps are stored as RFC 3339 text in UTC, dates as
//! `YYYY-MM-DD`, booleans as 0/1 and JSON as text, so every client reads them the same way.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite};

use super::Cell;
use super::ColumnType;
use super::engine::{Dialect, Tables, json_text};
use crate::sinks::SinkError;

/// How long a statement waits for another writer's lock before failing (as transient).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite's dialect.
#[derive(Debug, Clone, Copy)]
pub struct SqliteDialect;

fn timestamp_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Dialect for SqliteDialect {
    type Db = Sqlite;
    const SINK: &'static str = "sqlite";
    const MAX_PARAMETERS: usize = 32_766;

    fn column_type(ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Integer | ColumnType::Boolean => "INTEGER",
            ColumnType::Real => "REAL",
            ColumnType::Text | ColumnType::Date | ColumnType::Timestamp | ColumnType::Json => {
                "TEXT"
            }
        }
    }

    fn placeholder(index: usize) -> String {
        format!("?{index}")
    }

    fn table(&self, name: &str) -> String {
        format!("\"{name}\"")
    }

    fn setup(&self) -> Vec<String> {
        Vec::new()
    }

    fn columns_query(&self, table: &str) -> (String, Vec<String>) {
        (
            "SELECT name FROM pragma_table_info(?1)".into(),
            vec![table.to_string()],
        )
    }

    fn bind(
        query: sqlx::query::Query<'_, Sqlite, SqliteArguments>,
        cell: Cell,
        _ty: ColumnType,
    ) -> sqlx::query::Query<'_, Sqlite, SqliteArguments> {
        match cell {
            Cell::Null => query.bind(None::<String>),
            Cell::Text(text) => query.bind(text),
            Cell::Integer(n) => query.bind(n),
            Cell::Real(x) => query.bind(x),
            Cell::Boolean(flag) => query.bind(i64::from(flag)),
            Cell::Date(date) => query.bind(date.format("%Y-%m-%d").to_string()),
            Cell::Timestamp(time) => query.bind(timestamp_text(time)),
            Cell::Json(value) => query.bind(json_text(&value)),
        }
    }

    fn decode(row: &SqliteRow, index: usize, ty: ColumnType) -> Result<Cell, sqlx::Error> {
        let invalid = |what: &str, text: &str| sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!("{text:?} is not {what}").into(),
        };
        Ok(match ty {
            ColumnType::Text => row
                .try_get::<Option<String>, _>(index)?
                .map_or(Cell::Null, Cell::Text),
            ColumnType::Integer => row
                .try_get::<Option<i64>, _>(index)?
                .map_or(Cell::Null, Cell::Integer),
            ColumnType::Real => row
                .try_get::<Option<f64>, _>(index)?
                .map_or(Cell::Null, Cell::Real),
            ColumnType::Boolean => row
                .try_get::<Option<i64>, _>(index)?
                .map_or(Cell::Null, |n| Cell::Boolean(n != 0)),
            ColumnType::Date => match row.try_get::<Option<String>, _>(index)? {
                None => Cell::Null,
                Some(text) => Cell::Date(
                    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                        .map_err(|_| invalid("a date", &text))?,
                ),
            },
            ColumnType::Timestamp => match row.try_get::<Option<String>, _>(index)? {
                None => Cell::Null,
                Some(text) => Cell::Timestamp(
                    DateTime::parse_from_rfc3339(&text)
                        .map_err(|_| invalid("an RFC 3339 time", &text))?
                        .with_timezone(&Utc),
                ),
            },
            ColumnType::Json => match row.try_get::<Option<String>, _>(index)? {
                None => Cell::Null,
                Some(text) => {
                    Cell::Json(serde_json::from_str(&text).map_err(|_| invalid("JSON", &text))?)
                }
            },
        })
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Tables in a SQLite file.
pub type SqliteTables = Tables<SqliteDialect>;

impl SqliteTables {
    /// Opens (creating if missing, mode 0640) the SQLite file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteTables, SinkError> {
        let io = |action: &'static str| {
            move |source| SinkError::Io {
                action,
                path: path.display().to_string(),
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
        }
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)
                .map_err(io("create"))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|error| SinkError::Transient {
                sink: "sqlite",
                message: format!("cannot open {}: {error}", path.display()),
            })?;
        Ok(Tables::new(pool, SqliteDialect))
    }
}
