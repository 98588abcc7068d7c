//! The SQL and the transactions of the table sink, written once for SQLite and PostgreSQL: each
//! database supplies a [`Dialect`] (column types, parameter syntax, how a [`Cell`] is bound and
//! read back), [`Tables`] builds the statements and runs every batch in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use tokio::sync::RwLock;

use serde_json::Value;
use sqlx::{AssertSqlSafe, Database, Executor, Pool};

use super::{
    CHECKPOINTS_TABLE, Cell, Change, Column, ColumnType, Row, STREAMS_TABLE, StreamState,
    TableBatch, TableDef, TableSink, definition_error,
};
use crate::sinks::SinkError;

/// What differs between the databases.
pub trait Dialect: Send + Sync + std::fmt::Debug + 'static {
    /// The sqlx driver.
    type Db: Database<Arguments: sqlx::IntoArguments<Self::Db>> + sqlx::database::HasStatementCache;

    /// The sink's type name, for errors.
    const SINK: &'static str;

    /// Most bound parameters one statement may take.
    const MAX_PARAMETERS: usize;

    /// The database's type for a column type.
    fn column_type(ty: ColumnType) -> &'static str;

    /// The `index`th (1-based) parameter placeholder.
    fn placeholder(index: usize) -> String;

    /// The quoted, qualified name of a table.
    fn table(&self, name: &str) -> String;

    /// Statements run before any table is created (PostgreSQL: the schema).
    fn setup(&self) -> Vec<String>;

    /// A query returning the names of a table's columns (one text column), and its parameters.
    fn columns_query(&self, table: &str) -> (String, Vec<String>);

    /// Binds one value of a column of type `ty` (a NULL must still carry its column's type in
    /// PostgreSQL).
    fn bind(
        query: sqlx::query::Query<'_, Self::Db, <Self::Db as Database>::Arguments>,
        cell: Cell,
        ty: ColumnType,
    ) -> sqlx::query::Query<'_, Self::Db, <Self::Db as Database>::Arguments>;

    /// Reads column `index` of a row as a value of type `ty`.
    fn decode(
        row: &<Self::Db as Database>::Row,
        index: usize,
        ty: ColumnType,
    ) -> Result<Cell, sqlx::Error>;

    /// Rows a statement changed.
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;
}

/// Tables in one target database: a pool to it, its dialect, and the definitions given to
/// [`TableSink::ensure_tables`], which every change is checked against.
#[derive(Debug)]
pub struct Tables<D: Dialect> {
    pool: Pool<D::Db>,
    dialect: D,
    tables: RwLock<BTreeMap<String, TableDef>>,
}

#[async_trait]
impl<D: Dialect> TableSink for Tables<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'c> &'c Pool<D::Db>: Executor<'c, Database = D::Db>,
{
    async fn ensure_tables(&self, tables: &[TableDef]) -> Result<(), SinkError> {
        self.create(tables).await?;
        let mut known = self.tables.write().await;
        for table in tables {
            known.insert(table.name.clone(), table.clone());
        }
        Ok(())
    }

    async fn state(&self, stream: &str) -> Result<StreamState, SinkError> {
        self.read_state(stream).await
    }

    async fn apply(&self, batch: TableBatch) -> Result<u64, SinkError> {
        let tables = self.tables.read().await;
        self.write(batch, &tables).await
    }

    async fn read_table(&self, table: &TableDef) -> Result<Vec<Row>, SinkError> {
        self.read_rows(table, &Row::new()).await
    }

    async fn read_where(&self, table: &TableDef, filter: &Row) -> Result<Vec<Row>, SinkError> {
        self.read_rows(table, filter).await
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn store_error<D: Dialect>(action: &str, error: sqlx::Error) -> SinkError {
    let message = format!("{action}: {error}");
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => SinkError::Transient {
            sink: D::SINK,
            message,
        },
        sqlx::Error::Database(db)
            if db.message().contains("locked") || db.message().contains("busy") =>
        {
            SinkError::Transient {
                sink: D::SINK,
                message,
            }
        }
        sqlx::Error::Database(_) => SinkError::Rejected {
            sink: D::SINK,
            message: format!("{message}; check the target database's permissions and free space"),
        },
        _ => SinkError::Transient {
            sink: D::SINK,
            message,
        },
    }
}

/// The internal tables every target holds.
fn internal_tables() -> [TableDef; 2] {
    [
        TableDef {
            name: STREAMS_TABLE.into(),
            key: vec!["stream".into()],
            columns: vec![
                Column::new("stream", ColumnType::Text),
                Column::new("version", ColumnType::Integer),
                Column::new("updated_at", ColumnType::Timestamp),
            ],
            indexes: vec![],
        },
        TableDef {
            name: CHECKPOINTS_TABLE.into(),
            key: vec!["stream".into(), "key".into()],
            columns: vec![
                Column::new("stream", ColumnType::Text),
                Column::new("key", ColumnType::Text),
                Column::new("value", ColumnType::Json),
            ],
            indexes: vec![],
        },
    ]
}

impl<D: Dialect> Tables<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'c> &'c Pool<D::Db>: Executor<'c, Database = D::Db>,
{
    /// Tables reached through `pool`.
    pub(super) fn new(pool: Pool<D::Db>, dialect: D) -> Self {
        Self {
            pool,
            dialect,
            tables: RwLock::new(BTreeMap::new()),
        }
    }

    /// Creates what is missing: the schema, the internal tables, `tables`, their columns and
    /// indexes.
    async fn create(&self, tables: &[TableDef]) -> Result<(), SinkError> {
        for table in tables {
            table.check()?;
        }
        for statement in self.dialect.setup() {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&self.pool)
                .await
                .map_err(|e| store_error::<D>("prepare the target database", e))?;
        }
        for table in internal_tables().iter().chain(tables) {
            self.ensure_table(table).await?;
        }
        Ok(())
    }

    async fn ensure_table(&self, table: &TableDef) -> Result<(), SinkError> {
        let name = self.dialect.table(&table.name);
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("{} {}", quote(&c.name), D::column_type(c.ty)))
            .collect();
        let key: Vec<String> = table.key.iter().map(|k| quote(k)).collect();
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {name} ({}, PRIMARY KEY ({}))",
            columns.join(", "),
            key.join(", ")
        );
        let what = format!("create table {}", table.name);
        sqlx::query(AssertSqlSafe(create))
            .execute(&self.pool)
            .await
            .map_err(|e| store_error::<D>(&what, e))?;
        let (sql, parameters) = self.dialect.columns_query(&table.name);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for parameter in parameters {
            query = D::bind(query, Cell::Text(parameter), ColumnType::Text);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| store_error::<D>(&what, e))?;
        let mut existing = BTreeSet::new();
        for row in &rows {
            if let Cell::Text(column) =
                D::decode(row, 0, ColumnType::Text).map_err(|e| store_error::<D>(&what, e))?
            {
                existing.insert(column);
            }
        }
        for column in table.columns.iter().filter(|c| !existing.contains(&c.name)) {
            let alter = format!(
                "ALTER TABLE {name} ADD COLUMN {} {}",
                quote(&column.name),
                D::column_type(column.ty)
            );
            sqlx::query(AssertSqlSafe(alter))
                .execute(&self.pool)
                .await
                .map_err(|e| store_error::<D>(&format!("add column {}", column.name), e))?;
        }
        for index in &table.indexes {
            let index_name = format!("{}_{}_idx", table.name, index.join("_"));
            let columns: Vec<String> = index.iter().map(|c| quote(c)).collect();
            let create = format!(
                "CREATE INDEX IF NOT EXISTS {} ON {name} ({})",
                quote(&index_name),
                columns.join(", ")
            );
            sqlx::query(AssertSqlSafe(create))
                .execute(&self.pool)
                .await
                .map_err(|e| store_error::<D>(&format!("create index {index_name}"), e))?;
        }
        Ok(())
    }

    /// The stream's version and checkpoint.
    async fn read_state(&self, stream: &str) -> Result<StreamState, SinkError> {
        let version_sql = format!(
            "SELECT version FROM {} WHERE stream = {}",
            self.dialect.table(STREAMS_TABLE),
            D::placeholder(1)
        );
        let row = D::bind(
            sqlx::query(AssertSqlSafe(version_sql)),
            Cell::Text(stream.into()),
            ColumnType::Text,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| store_error::<D>("read the stream's version", e))?;
        let version = match row {
            Some(row) => match D::decode(&row, 0, ColumnType::Integer)
                .map_err(|e| store_error::<D>("read the stream's version", e))?
            {
                Cell::Integer(version) => version.max(0) as u64,
                _ => 0,
            },
            None => 0,
        };
        let checkpoint_sql = format!(
            "SELECT key, value FROM {} WHERE stream = {} ORDER BY key",
            self.dialect.table(CHECKPOINTS_TABLE),
            D::placeholder(1)
        );
        let rows = D::bind(
            sqlx::query(AssertSqlSafe(checkpoint_sql)),
            Cell::Text(stream.into()),
            ColumnType::Text,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| store_error::<D>("read the stream's checkpoint", e))?;
        let mut checkpoint = BTreeMap::new();
        for row in &rows {
            let key = D::decode(row, 0, ColumnType::Text);
            let value = D::decode(row, 1, ColumnType::Json);
            match (key, value) {
                (Ok(Cell::Text(key)), Ok(Cell::Json(value))) => {
                    checkpoint.insert(key, value);
                }
                (Err(error), _) | (_, Err(error)) => {
                    return Err(SinkError::Corrupt {
                        sink: D::SINK,
                        message: format!(
                            "the checkpoint of stream {stream:?} cannot be read ({error}); delete its rows in {CHECKPOINTS_TABLE} to sync again from scratch"
                        ),
                    });
                }
                _ => {}
            }
        }
        Ok(StreamState {
            version,
            checkpoint,
        })
    }

    /// Applies a batch in one transaction (see [`TableSink::apply`]).
    async fn write(
        &self,
        batch: TableBatch,
        tables: &BTreeMap<String, TableDef>,
    ) -> Result<u64, SinkError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| store_error::<D>("begin a transaction", e))?;
        // The version first: it takes the write lock, so two writers of one stream serialize
        // here and the second finds the version moved.
        let next = batch.expected_version + 1;
        let streams = self.dialect.table(STREAMS_TABLE);
        let now = Cell::Timestamp(batch.now);
        let bumped = if batch.expected_version == 0 {
            let sql = format!(
                "INSERT INTO {streams} (stream, version, updated_at) VALUES ({}, {}, {}) ON CONFLICT (stream) DO NOTHING",
                D::placeholder(1),
                D::placeholder(2),
                D::placeholder(3)
            );
            bind_all::<D>(
                sqlx::query(AssertSqlSafe(sql)),
                [
                    (Cell::Text(batch.stream.clone()), ColumnType::Text),
                    (Cell::Integer(next as i64), ColumnType::Integer),
                    (now, ColumnType::Timestamp),
                ],
            )
            .execute(&mut *tx)
            .await
        } else {
            let sql = format!(
                "UPDATE {streams} SET version = {}, updated_at = {} WHERE stream = {} AND version = {}",
                D::placeholder(1),
                D::placeholder(2),
                D::placeholder(3),
                D::placeholder(4)
            );
            bind_all::<D>(
                sqlx::query(AssertSqlSafe(sql)),
                [
                    (Cell::Integer(next as i64), ColumnType::Integer),
                    (now, ColumnType::Timestamp),
                    (Cell::Text(batch.stream.clone()), ColumnType::Text),
                    (Cell::Integer(batch.expected_version as i64), ColumnType::Integer),
                ],
            )
            .execute(&mut *tx)
            .await
        }
        .map_err(|e| store_error::<D>("advance the stream's version", e))?;
        if D::rows_affected(&bumped) != 1 {
            return Err(SinkError::Conflict {
                sink: D::SINK,
                message: format!(
                    "stream {:?} moved past version {} while this batch was built (another run wrote it); nothing was applied",
                    batch.stream, batch.expected_version
                ),
            });
        }
        for statement in plan::<D>(&self.dialect, &batch.changes, tables)? {
            // Not prepared for reuse: a batch's statements differ in their row counts, and a
            // cache of hundreds of multi-row statements per connection costs tens of MiB.
            bind_all::<D>(
                sqlx::query(AssertSqlSafe(statement.sql)).persistent(false),
                statement.parameters,
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| store_error::<D>(&statement.what, e))?;
        }
        let checkpoints = self.dialect.table(CHECKPOINTS_TABLE);
        for (key, value) in batch.checkpoint {
            let sql = format!(
                "INSERT INTO {checkpoints} (stream, key, value) VALUES ({}, {}, {}) ON CONFLICT (stream, key) DO UPDATE SET value = excluded.value",
                D::placeholder(1),
                D::placeholder(2),
                D::placeholder(3)
            );
            bind_all::<D>(
                sqlx::query(AssertSqlSafe(sql)),
                [
                    (Cell::Text(batch.stream.clone()), ColumnType::Text),
                    (Cell::Text(key), ColumnType::Text),
                    (Cell::Json(value), ColumnType::Json),
                ],
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| store_error::<D>("write the checkpoint", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| store_error::<D>("commit the batch", e))?;
        Ok(next)
    }

    /// Every row of `table`, ordered by key.
    async fn read_rows(&self, table: &TableDef, filter: &Row) -> Result<Vec<Row>, SinkError> {
        table.check()?;
        if let Some(unknown) = filter.keys().find(|c| table.column_type(c).is_none()) {
            return Err(definition_error(format!(
                "a read of table {} filters on column {unknown:?}, which it does not define",
                table.name
            )));
        }
        let columns: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
        let key: Vec<String> = table.key.iter().map(|k| quote(k)).collect();
        let mut parameters = Vec::new();
        let condition = conditions::<D>(table, filter, &mut parameters);
        let sql = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {}",
            columns.join(", "),
            self.dialect.table(&table.name),
            key.join(", ")
        );
        let what = format!("read table {}", table.name);
        let rows = bind_all::<D>(sqlx::query(AssertSqlSafe(sql)), parameters)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| store_error::<D>(&what, e))?;
        rows.iter()
            .map(|row| {
                table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(index, column)| {
                        D::decode(row, index, column.ty)
                            .map(|cell| (column.name.clone(), cell))
                            .map_err(|e| store_error::<D>(&what, e))
                    })
                    .collect()
            })
            .collect()
    }
}

/// Binds every parameter in order.
fn bind_all<D: Dialect>(
    mut query: sqlx::query::Query<'_, D::Db, <D::Db as Database>::Arguments>,
    parameters: impl IntoIterator<Item = (Cell, ColumnType)>,
) -> sqlx::query::Query<'_, D::Db, <D::Db as Database>::Arguments> {
    for (cell, ty) in parameters {
        query = D::bind(query, cell, ty);
    }
    query
}

/// One statement of a batch with its parameters and their column types.
struct Statement {
    sql: String,
    parameters: Vec<(Cell, ColumnType)>,
    what: String,
}

/// The statements of a batch's changes: consecutive upserts of one table with the same columns
/// become one multi-row `INSERT … ON CONFLICT`, as large as the parameter limit allows.
fn plan<D: Dialect>(
    dialect: &D,
    changes: &[Change],
    tables: &BTreeMap<String, TableDef>,
) -> Result<Vec<Statement>, SinkError> {
    let definition = |name: &str| {
        tables.get(name).ok_or_else(|| SinkError::Config {
            sink: D::SINK,
            message: format!(
                "table {name:?} was not set up with ensure_tables; this is a bug in the job kind"
            ),
        })
    };
    let check_columns = |table: &TableDef, row: &Row| -> Result<(), SinkError> {
        match row.keys().find(|name| table.column_type(name).is_none()) {
            Some(unknown) => Err(SinkError::Config {
                sink: D::SINK,
                message: format!(
                    "table {} has no column {unknown:?}; this is a bug in the job kind",
                    table.name
                ),
            }),
            None => Ok(()),
        }
    };
    let mut statements = Vec::new();
    let mut index = 0;
    while index < changes.len() {
        match &changes[index] {
            Change::Upsert { table, row } => {
                let def = definition(table)?;
                check_columns(def, row)?;
                if let Some(missing) = def.key.iter().find(|k| !row.contains_key(*k)) {
                    return Err(SinkError::Config {
                        sink: D::SINK,
                        message: format!(
                            "an upsert into {table} lacks key column {missing:?}; this is a bug in the job kind"
                        ),
                    });
                }
                let columns: Vec<&String> = row.keys().collect();
                let per_statement = (D::MAX_PARAMETERS / columns.len().max(1)).clamp(1, 500);
                let mut rows = vec![row];
                while rows.len() < per_statement
                    && let Some(Change::Upsert {
                        table: next_table,
                        row: next,
                    }) = changes.get(index + rows.len())
                    && next_table == table
                    && next.keys().eq(row.keys())
                {
                    rows.push(next);
                }
                index += rows.len();
                statements.push(upsert::<D>(dialect, def, &columns, &rows));
            }
            Change::Update { table, filter, set } => {
                let def = definition(table)?;
                check_columns(def, filter)?;
                check_columns(def, set)?;
                let mut parameters = Vec::new();
                let assignments: Vec<String> = set
                    .iter()
                    .map(|(column, cell)| {
                        parameters.push((cell.clone(), column_type(def, column)));
                        format!("{} = {}", quote(column), D::placeholder(parameters.len()))
                    })
                    .collect();
                let condition = conditions::<D>(def, filter, &mut parameters);
                statements.push(Statement {
                    sql: format!(
                        "UPDATE {} SET {} WHERE {condition}",
                        dialect.table(table),
                        assignments.join(", ")
                    ),
                    parameters,
                    what: format!("update {table}"),
                });
                index += 1;
            }
            Change::Delete { table, filter } => {
                let def = definition(table)?;
                check_columns(def, filter)?;
                let mut parameters = Vec::new();
                let condition = conditions::<D>(def, filter, &mut parameters);
                statements.push(Statement {
                    sql: format!("DELETE FROM {} WHERE {condition}", dialect.table(table)),
                    parameters,
                    what: format!("delete from {table}"),
                });
                index += 1;
            }
        }
    }
    Ok(statements)
}

/// The type of a column the caller checked exists.
fn column_type(table: &TableDef, column: &str) -> ColumnType {
    table.column_type(column).unwrap_or(ColumnType::Text)
}

/// `a = $1 AND b IS NULL`; an empty filter matches every row.
fn conditions<D: Dialect>(
    table: &TableDef,
    filter: &Row,
    parameters: &mut Vec<(Cell, ColumnType)>,
) -> String {
    if filter.is_empty() {
        return "1 = 1".into();
    }
    filter
        .iter()
        .map(|(column, cell)| {
            if *cell == Cell::Null {
                format!("{} IS NULL", quote(column))
            } else {
                parameters.push((cell.clone(), column_type(table, column)));
                format!("{} = {}", quote(column), D::placeholder(parameters.len()))
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn upsert<D: Dialect>(
    dialect: &D,
    table: &TableDef,
    columns: &[&String],
    rows: &[&Row],
) -> Statement {
    let mut parameters = Vec::with_capacity(columns.len() * rows.len());
    let values: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = columns
                .iter()
                .map(|column| {
                    let cell = row.get(*column).cloned().unwrap_or(Cell::Null);
                    parameters.push((cell, column_type(table, column)));
                    D::placeholder(parameters.len())
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    let names: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let key: Vec<String> = table.key.iter().map(|k| quote(k)).collect();
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !table.key.contains(c))
        .map(|c| format!("{} = excluded.{}", quote(c), quote(c)))
        .collect();
    let on_conflict = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    Statement {
        sql: format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) {on_conflict}",
            dialect.table(&table.name),
            names.join(", "),
            values.join(", "),
            key.join(", ")
        ),
        parameters,
        what: format!("upsert into {}", table.name),
    }
}

/// JSON text of a value, for databases that store JSON as text.
pub(super) fn json_text(value: &Value) -> String {
    value.to_string()
}
