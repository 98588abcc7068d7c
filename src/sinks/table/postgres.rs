//! The `postgres` table sink: tables in a schema of a PostgreSQL database, with native types
//! (`TIMESTAMPTZ`, `DATE`, `BOOLEAN`, `JSONB`), so BI tools read them as they are. The URL comes
//! from the job file (without a password), a file or the environment; a password from a file
//! or the environment.

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row as _};

use super::engine::{Dialect, Tables};
use super::{Cell, ColumnType, PostgresTableSettings};
use crate::sinks::SinkError;

/// PostgreSQL's dialect, with the schema the tables live in.
#[derive(Debug, Clone)]
pub struct PostgresDialect {
    schema: String,
}

impl Dialect for PostgresDialect {
    type Db = Postgres;
    const SINK: &'static str = "postgres";
    const MAX_PARAMETERS: usize = 65_535;

    fn column_type(ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Text => "TEXT",
            ColumnType::Integer => "BIGINT",
            ColumnType::Real => "DOUBLE PRECISION",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Date => "DATE",
            ColumnType::Timestamp => "TIMESTAMPTZ",
            ColumnType::Json => "JSONB",
        }
    }

    fn placeholder(index: usize) -> String {
        format!("${index}")
    }

    fn table(&self, name: &str) -> String {
        format!("\"{}\".\"{name}\"", self.schema)
    }

    fn setup(&self) -> Vec<String> {
        vec![format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.schema)]
    }

    fn columns_query(&self, table: &str) -> (String, Vec<String>) {
        (
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2".into(),
            vec![self.schema.clone(), table.to_string()],
        )
    }

    fn bind(
        query: sqlx::query::Query<'_, Postgres, PgArguments>,
        cell: Cell,
        ty: ColumnType,
    ) -> sqlx::query::Query<'_, Postgres, PgArguments> {
        match cell {
            Cell::Null => match ty {
                ColumnType::Text => query.bind(None::<String>),
                ColumnType::Integer => query.bind(None::<i64>),
                ColumnType::Real => query.bind(None::<f64>),
                ColumnType::Boolean => query.bind(None::<bool>),
                ColumnType::Date => query.bind(None::<NaiveDate>),
                ColumnType::Timestamp => query.bind(None::<DateTime<Utc>>),
                ColumnType::Json => query.bind(None::<sqlx::types::Json<serde_json::Value>>),
            },
            Cell::Text(text) => query.bind(text),
            Cell::Integer(n) => query.bind(n),
            Cell::Real(x) => query.bind(x),
            Cell::Boolean(flag) => query.bind(flag),
            Cell::Date(date) => query.bind(date),
            Cell::Timestamp(time) => query.bind(time),
            Cell::Json(value) => query.bind(sqlx::types::Json(value)),
        }
    }

    fn decode(row: &PgRow, index: usize, ty: ColumnType) -> Result<Cell, sqlx::Error> {
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
                .try_get::<Option<bool>, _>(index)?
                .map_or(Cell::Null, Cell::Boolean),
            ColumnType::Date => row
                .try_get::<Option<NaiveDate>, _>(index)?
                .map_or(Cell::Null, Cell::Date),
            ColumnType::Timestamp => row
                .try_get::<Option<DateTime<Utc>>, _>(index)?
                .map_or(Cell::Null, Cell::Timestamp),
            ColumnType::Json => row
                .try_get::<Option<sqlx::types::Json<serde_json::Value>>, _>(index)?
                .map_or(Cell::Null, |json| Cell::Json(json.0)),
        })
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Tables in a PostgreSQL schema.
pub type PostgresTables = Tables<PostgresDialect>;

fn config_error(message: String) -> SinkError {
    SinkError::Config {
        sink: "postgres",
        message,
    }
}

/// Reads a secret from a file or a variable, trimmed.
fn read_secret(
    file: Option<&std::path::Path>,
    variable: Option<&str>,
    what: &str,
) -> Result<Option<SecretString>, SinkError> {
    let text = match (file, variable) {
        (Some(path), _) => {
            let path = crate::config::settings::resolve_secret_path(path);
            std::fs::read_to_string(&path).map_err(|error| {
                config_error(format!(
                    "cannot read the {what} from {}: {error}",
                    path.display()
                ))
            })?
        }
        (None, Some(variable)) => std::env::var(variable).map_err(|_| {
            config_error(format!(
                "the environment variable {variable} (the {what}) is not set"
            ))
        })?,
        (None, None) => return Ok(None),
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(config_error(format!("the {what} is empty")));
    }
    Ok(Some(SecretString::from(text.to_string())))
}

impl PostgresTables {
    /// Connects to the database the settings name (creating nothing yet).
    pub async fn connect(settings: &PostgresTableSettings) -> Result<PostgresTables, SinkError> {
        let url = match &settings.url {
            Some(url) => SecretString::from(url.clone()),
            None => read_secret(
                settings.url_file.as_deref(),
                settings.url_env.as_deref(),
                "database URL",
            )?
            .ok_or_else(|| config_error("the postgres sink has no database URL".into()))?,
        };
        let mut options: PgConnectOptions = url
            .expose_secret()
            .parse()
            .map_err(|error| config_error(format!("the database URL cannot be used: {error}")))?;
        if let Some(password) = read_secret(
            settings.password_file.as_deref(),
            settings.password_env.as_deref(),
            "database password",
        )? {
            options = options.password(password.expose_secret());
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|error| SinkError::Transient {
                sink: "postgres",
                message: format!(
                    "cannot connect to {}: {error}",
                    crate::store::redact_url(url.expose_secret())
                ),
            })?;
        Ok(Tables::new(
            pool,
            PostgresDialect {
                schema: settings.schema.clone(),
            },
        ))
    }
}
