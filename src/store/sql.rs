//! The one implementation of [`Store`] for both databases.
//!
//! Every operation is written once, as [`Statement`]s: SQL that SQLite and PostgreSQL both
//! accept, numbering its parameters `$1`, `$2`, … (PostgreSQL's syntax, which sqlx also maps to
//! the N-th bound value on SQLite), with the parameters kept as plain values. A store is a
//! [`Backend`]: it says how statements reach its database (SQLite through its group-commit
//! writer, PostgreSQL straight through its pool), how a claim and a checkpoint write lock the
//! run they depend on, and, through its [`Dialect`], how it keeps timestamps and ids.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Database, Encode, Executor, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::rows::{
    PortableColumns, StoredRow, counts_in_state_order, credential_columns, decode_credential,
    decode_job_control, decode_job_summary, decode_lease, decode_replica, decode_run,
    decode_schedule, replica_columns, run_columns, schedule_columns,
};
use super::{
    ClaimFilter, CredentialRow, CredentialStatus, Enqueued, JobControl, JobSummary, LeaseRow,
    NewRun, Reencrypted, ReplicaRow, Run, RunFilter, RunState, ScheduleRow, SchemaStatus, Store,
    StoreResult, Transition,
};

/// One SQL statement and its parameters, for either database.
#[derive(Debug, Clone)]
pub(super) struct Statement {
    sql: Cow<'static, str>,
    params: Vec<Param>,
}

/// A parameter of a [`Statement`]. Timestamps and ids stay as they are until a [`Dialect`]
/// binds them the way its database keeps them; the rest bind alike in both.
#[derive(Debug, Clone)]
enum Param {
    Text(Option<String>),
    Int(i32),
    BigInt(i64),
    Bytes(Vec<u8>),
    Json(Value),
    Time(Option<DateTime<Utc>>),
    Id(Uuid),
}

impl Statement {
    /// A statement of `sql`, whose parameters `$1`, `$2`, … the following [`Statement::bind`]s
    /// fill in order.
    fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// Binds the next parameter.
    fn bind(mut self, value: impl Into<Param>) -> Self {
        self.params.push(value.into());
        self
    }

    /// Appends SQL text.
    fn push_sql(mut self, sql: &str) -> Self {
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Appends a placeholder for the next parameter and binds `value` to it.
    fn push_bind(self, value: impl Into<Param>) -> Self {
        let placeholder = format!("${}", self.params.len() + 1);
        self.push_sql(&placeholder).bind(value)
    }

    /// Appends `$a, $b, …`, one placeholder per value, and binds the values to them.
    fn push_bind_list<V: Into<Param>>(self, values: impl IntoIterator<Item = V>) -> Self {
        values
            .into_iter()
            .enumerate()
            .fold(self, |statement, (index, value)| {
                let statement = if index == 0 {
                    statement
                } else {
                    statement.push_sql(", ")
                };
                statement.push_bind(value)
            })
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Param::Text(Some(value.to_owned()))
    }
}

impl From<&String> for Param {
    fn from(value: &String) -> Self {
        Param::Text(Some(value.clone()))
    }
}

impl From<&Option<String>> for Param {
    fn from(value: &Option<String>) -> Self {
        Param::Text(value.clone())
    }
}

impl From<i32> for Param {
    fn from(value: i32) -> Self {
        Param::Int(value)
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::BigInt(value)
    }
}

impl From<&[u8]> for Param {
    fn from(value: &[u8]) -> Self {
        Param::Bytes(value.to_vec())
    }
}

impl From<Value> for Param {
    fn from(value: Value) -> Self {
        Param::Json(value)
    }
}

impl From<DateTime<Utc>> for Param {
    fn from(value: DateTime<Utc>) -> Self {
        Param::Time(Some(value))
    }
}

impl From<Option<DateTime<Utc>>> for Param {
    fn from(value: Option<DateTime<Utc>>) -> Self {
        Param::Time(value)
    }
}

impl From<Uuid> for Param {
    fn from(value: Uuid) -> Self {
        Param::Id(value)
    }
}

/// How one database keeps the values the two databases store differently, timestamps and ids
/// (its rows read them back through [`StoredRow`]).
pub(super) trait Dialect: Database<Row: StoredRow> {
    /// A timestamp, or NULL, as bound.
    type Time: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    /// An id as bound.
    type Id: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;

    /// The stored form of a timestamp (None is NULL).
    fn time(time: Option<DateTime<Utc>>) -> Self::Time;

    /// The stored form of an id.
    fn id(id: Uuid) -> Self::Id;

    /// How many rows a statement changed (sqlx has no trait for it).
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// Running [`Statement`]s with sqlx. Implemented for every [`Dialect`] whose database encodes
/// the portable parameter types and runs queries on its connections, so the code above it names
/// this one trait instead of sqlx's bounds.
pub(super) trait Sql: Dialect {
    /// The statement as an sqlx query, its parameters bound.
    fn query(statement: Statement) -> Query<'static, Self, Self::Arguments>;

    /// Every row the statement returns, read through `pool`.
    fn read_all(
        pool: &Pool<Self>,
        statement: Statement,
    ) -> BoxFuture<'_, StoreResult<Vec<Self::Row>>>;

    /// The row the statement returns, if any, read through `pool`.
    fn read_optional(
        pool: &Pool<Self>,
        statement: Statement,
    ) -> BoxFuture<'_, StoreResult<Option<Self::Row>>>;

    /// Runs the statement on `conn`; how many rows it changed.
    fn execute(
        conn: &mut Self::Connection,
        statement: Statement,
    ) -> BoxFuture<'_, StoreResult<u64>>;

    /// Runs the statement on `conn`; the row it returns, if any.
    fn execute_returning(
        conn: &mut Self::Connection,
        statement: Statement,
    ) -> BoxFuture<'_, StoreResult<Option<Self::Row>>>;

    /// Runs a [`Transaction`]'s statements on `conn`, which the caller has put in a
    /// transaction (and commits).
    fn transaction(
        conn: &mut Self::Connection,
        transaction: Transaction,
    ) -> BoxFuture<'_, StoreResult<Option<Vec<u64>>>>;
}

impl<DB> Sql for DB
where
    DB: Dialect,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'q> Value: Encode<'q, DB> + Type<DB>,
{
    fn query(statement: Statement) -> Query<'static, DB, DB::Arguments> {
        let query = match statement.sql {
            Cow::Borrowed(sql) => sqlx::query(sql),
            // Built only from this module's SQL and placeholders, never from input.
            Cow::Owned(sql) => sqlx::query(AssertSqlSafe(sql)),
        };
        statement
            .params
            .into_iter()
            .fold(query, |query, param| match param {
                Param::Text(value) => query.bind(value),
                Param::Int(value) => query.bind(value),
                Param::BigInt(value) => query.bind(value),
                Param::Bytes(value) => query.bind(value),
                Param::Json(value) => query.bind(value),
                Param::Time(value) => query.bind(DB::time(value)),
                Param::Id(value) => query.bind(DB::id(value)),
            })
    }

    fn read_all(pool: &Pool<DB>, statement: Statement) -> BoxFuture<'_, StoreResult<Vec<DB::Row>>> {
        Box::pin(async move { Ok(Self::query(statement).fetch_all(pool).await?) })
    }

    fn read_optional(
        pool: &Pool<DB>,
        statement: Statement,
    ) -> BoxFuture<'_, StoreResult<Option<DB::Row>>> {
        Box::pin(async move { Ok(Self::query(statement).fetch_optional(pool).await?) })
    }

    fn execute(conn: &mut DB::Connection, statement: Statement) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let result = Self::query(statement).execute(conn).await?;
            Ok(DB::rows_affected(&result))
        })
    }

    fn execute_returning(
        conn: &mut DB::Connection,
        statement: Statement,
    ) -> BoxFuture<'_, StoreResult<Option<DB::Row>>> {
        Box::pin(async move { Ok(Self::query(statement).fetch_optional(conn).await?) })
    }

    fn transaction(
        conn: &mut DB::Connection,
        transaction: Transaction,
    ) -> BoxFuture<'_, StoreResult<Option<Vec<u64>>>> {
        Box::pin(async move {
            if let Some(precondition) = transaction.precondition
                && Self::execute(&mut *conn, precondition).await? != 1
            {
                return Ok(None);
            }
            let mut changed = Vec::with_capacity(transaction.statements.len());
            for statement in transaction.statements {
                changed.push(Self::execute(&mut *conn, statement).await?);
            }
            Ok(Some(changed))
        })
    }
}

/// Statements that commit together or not at all.
#[derive(Debug)]
pub(super) struct Transaction {
    /// Runs first; unless it changes exactly one row, nothing else runs and the transaction
    /// reports `None`. It must change at most one row, so that a failed precondition has
    /// changed nothing.
    precondition: Option<Statement>,
    /// The writes.
    statements: Vec<Statement>,
}

/// A database behind the shared [`Store`]: how statements reach it and the SQL that differs.
#[async_trait]
pub(super) trait Backend: Send + Sync + fmt::Debug + 'static {
    /// The database.
    type Db: Sql;

    /// What a claim picks its candidate from (`runs r`, with an index hint where the planner
    /// needs one).
    const CLAIM_CANDIDATES: &'static str;

    /// Appended to the claim's candidate subquery: how it keeps concurrent claimers off the
    /// candidate it picked, where the database's own write lock does not already.
    const CLAIM_LOCK: &'static str;

    /// Appended to a checkpoint write's lease check: how it keeps a concurrent rescue from
    /// taking the lease between the check and the write, where the database's own write lock
    /// does not already.
    const FENCE_LOCK: &'static str;

    /// The pool reads go through.
    fn readers(&self) -> &Pool<Self::Db>;

    /// The migrations this build carries for the database.
    fn migrator() -> &'static sqlx::migrate::Migrator;

    /// Applies the database's migrations ([`Backend::migrator`]).
    async fn apply_migrations(&self) -> StoreResult<()>;

    /// The database's size in bytes, as the database reports it.
    async fn size_bytes(&self) -> StoreResult<i64>;

    /// Versions of the migrations applied to the database, None when it has no schema yet (no
    /// migrations table).
    async fn applied_migrations(&self) -> StoreResult<Option<Vec<i64>>>;

    /// Runs one write statement; how many rows it changed.
    async fn write(&self, statement: Statement) -> StoreResult<u64>;

    /// Runs one write statement that returns a run (an insert); the run, if one came back.
    async fn write_run(&self, statement: Statement) -> StoreResult<Option<Run>>;

    /// Runs the claim statement built by [`claim_statement`]; the claimed run, if any.
    async fn claim_run(&self, statement: Statement) -> StoreResult<Option<Run>>;

    /// Runs `transaction` in one database transaction: the rows each statement changed, or
    /// `None` when its precondition failed (nothing changed then).
    async fn write_transaction(&self, transaction: Transaction) -> StoreResult<Option<Vec<u64>>>;
}

/// A row of `B`'s database.
type RowOf<B> = <<B as Backend>::Db as Database>::Row;

/// The row `statement` reads, if any, decoded by `decode`.
async fn read_row<B: Backend, T>(
    backend: &B,
    statement: Statement,
    decode: impl Fn(&RowOf<B>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let row = B::Db::read_optional(backend.readers(), statement).await?;
    row.as_ref().map(decode).transpose()
}

/// Every row `statement` reads, decoded by `decode`.
async fn read_rows<B: Backend, T>(
    backend: &B,
    statement: Statement,
    decode: impl Fn(&RowOf<B>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let rows = B::Db::read_all(backend.readers(), statement).await?;
    rows.iter().map(decode).collect()
}

/// A duration in whole seconds as the stores keep retry delays, saturating on absurd ones.
fn whole_secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// `now + duration` (a lease's end), saturating instead of overflowing on absurd durations.
fn until(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The fence of every write by a worker: it must still hold the run's lease. The run's id and
/// the worker are always parameters `$1` and `$2`.
macro_rules! held {
    () => {
        "id = $1 AND lease_owner = $2 AND state = 'running'"
    };
}

/// What every transition out of `running` does to the lease.
/// The `UPDATE` that returns rescued runs to the queue (`retrying`, due at `$1`) or, without
/// attempts left, to `dead`, with `reason` as their last error; the caller adds the `WHERE`.
macro_rules! rescue_update {
    ($reason:literal) => {
        concat!(
            "UPDATE runs SET \
               state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'retrying' END, \
               run_after = CASE WHEN attempt >= max_attempts THEN run_after ELSE $1 END, \
               finished_at = CASE WHEN attempt >= max_attempts THEN $1 ELSE NULL END, \
               rescues = rescues + 1, last_error = '",
            $reason,
            "', ",
            lease_cleared!()
        )
    };
}

macro_rules! lease_cleared {
    () => {
        "lease_owner = NULL, lease_expires_at = NULL"
    };
}

/// Gives an attempt back (a snooze or a release did not use it up).
macro_rules! attempt_returned {
    () => {
        "attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END"
    };
}

/// Inserts a run unless its (job, unique key) exists, returning it.
fn insert_run(run: &NewRun, now: DateTime<Utc>) -> Statement {
    Statement::new(concat!(
        "INSERT INTO runs (id, job_name, kind, \"trigger\", fire_time, unique_key, priority, \
         state, attempt, max_attempts, run_after, retry_initial_secs, retry_max_secs, rescues, \
         created_at, finished_at, last_error, progress) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, $12, 0, $13, $14, $15, '{}') \
         ON CONFLICT (job_name, unique_key) DO NOTHING RETURNING ",
        run_columns!()
    ))
    .bind(Uuid::new_v4())
    .bind(&run.job_name)
    .bind(&run.kind)
    .bind(run.trigger.as_str())
    .bind(run.fire_time)
    .bind(&run.unique_key)
    .bind(run.priority)
    .bind(run.state.as_str())
    .bind(run.max_attempts)
    .bind(run.run_after)
    .bind(whole_secs(run.retry_initial))
    .bind(whole_secs(run.retry_max))
    .bind(now)
    .bind(run.state.is_terminal().then_some(now))
    .bind(&run.note)
}

/// Claims the best due run (see [`Store::claim`]) for `B`'s database.
fn claim_statement<B: Backend>(
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
    filter: ClaimFilter<'_>,
) -> Statement {
    let statement = Statement::new(format!(
        "UPDATE runs SET state = 'running', attempt = attempt + 1, lease_owner = $1, \
         lease_expires_at = $2, started_at = $3 \
         WHERE state IN ('queued', 'retrying') AND id = ( \
             SELECT r.id FROM {candidates} \
             WHERE r.state IN ('queued', 'retrying') AND r.run_after <= $3",
        candidates = B::CLAIM_CANDIDATES
    ))
    .bind(owner)
    .bind(until(now, lease))
    .bind(now);
    let statement = match filter.kinds {
        Some(kinds) => statement
            .push_sql(" AND r.kind IN (")
            .push_bind_list(kinds.iter().map(String::as_str))
            .push_sql(")"),
        None => statement,
    };
    let statement = if filter.excluded_jobs.is_empty() {
        statement
    } else {
        statement
            .push_sql(" AND r.job_name NOT IN (")
            .push_bind_list(filter.excluded_jobs.iter().map(String::as_str))
            .push_sql(")")
    };
    statement
        .push_sql(
            " AND NOT EXISTS (SELECT 1 FROM runs x \
                              WHERE x.job_name = r.job_name AND x.state = 'running') \
             ORDER BY r.priority DESC, r.run_after ASC, r.created_at ASC, r.id ASC \
             LIMIT 1",
        )
        .push_sql(B::CLAIM_LOCK)
        .push_sql(concat!(") RETURNING ", run_columns!()))
}

/// Semantics (the conformance suite checks both stores against them):
///
/// - `enqueue`: `INSERT … ON CONFLICT (job_name, unique_key) DO NOTHING`; a conflict is
///   [`Enqueued::Duplicate`]. A run enqueued in a terminal state (`skipped`) gets
///   `finished_at = now` so pruning removes it in time. `note` goes to `last_error`.
/// - `fire`: one transaction: compare-and-set of the schedule row (insert when
///   `expected_next` is None, else update where `next_fire_at = expected_next`), then the runs
///   with `ON CONFLICT DO NOTHING`; nothing changes when the compare fails.
/// - `claim`: only `queued`/`retrying` runs with `run_after <= now`, of `kinds` when given, of
///   jobs with no `running` run (also a partial unique index); best `priority` first, then
///   oldest `run_after`, then oldest `created_at`. Sets `running`, `attempt + 1`, `started_at`,
///   and the lease. `kinds = Some(&[])` claims nothing. How concurrent claims are kept apart is
///   the backend's: SQLite's single write lock, PostgreSQL's `FOR UPDATE SKIP LOCKED`.
/// - `heartbeat`, `finish`, `set_progress`, `put_checkpoint`: only while the run is `running`
///   with `lease_owner = owner`; otherwise false and nothing changes.
/// - `finish`: `Release` → `queued`, attempt − 1, lease cleared; `Retry` → `retrying` at
///   `run_after` with `last_error`; `Snooze` → `queued` at `run_after`, attempt − 1, note in
///   `last_error`; `Complete` (progress stored), `Fail`, `Dead`, `NeedsReauth`, `Cancel` →
///   their terminal state with `finished_at = now`. Every transition clears the lease.
/// - `rescue_expired`: `running` runs with `lease_expires_at <= now` go to `retrying` (due now,
///   `rescues + 1`, `last_error = "lease expired (worker lost)"`), or to `dead` (finished now)
///   when `attempt >= max_attempts`.
/// - `acquire_lease`: upsert that only overwrites a row held by `owner` or expired
///   (`expires_at <= now`).
/// - `prune_runs`: deletes terminal runs with `finished_at < before`.
/// - `list_runs`: newest `created_at` first; `limit <= 0` means no limit.
/// - `count_by_state`: every state of [`RunState::ALL`], zero counts included.
/// - `job_summaries`: per job, the state and `finished_at` of its newest run (by `created_at`)
///   and its latest `completed` `finished_at`, ordered by job name.
#[async_trait]
impl<B: Backend> Store for B {
    async fn migrate(&self) -> StoreResult<()> {
        self.apply_migrations().await
    }

    async fn database_size_bytes(&self) -> StoreResult<u64> {
        Ok(self.size_bytes().await?.max(0) as u64)
    }

    async fn schema_status(&self) -> StoreResult<SchemaStatus> {
        let known: Vec<i64> = B::migrator().iter().map(|m| m.version).collect();
        let build = known.iter().copied().max().unwrap_or(0);
        Ok(match self.applied_migrations().await? {
            None => SchemaStatus::Empty,
            Some(applied) if applied.iter().any(|v| !known.contains(v)) => SchemaStatus::Newer {
                database: applied.iter().copied().max().unwrap_or(0),
                build,
            },
            Some(applied) if known.iter().any(|v| !applied.contains(v)) => SchemaStatus::Older {
                database: applied.iter().copied().max().unwrap_or(0),
                build,
            },
            Some(_) => SchemaStatus::Current,
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        B::Db::read_optional(self.readers(), Statement::new("SELECT 1"))
            .await
            .map(drop)
    }

    async fn enqueue(&self, run: NewRun, now: DateTime<Utc>) -> StoreResult<Enqueued> {
        Ok(match self.write_run(insert_run(&run, now)).await? {
            Some(run) => Enqueued::Inserted(Box::new(run)),
            None => Enqueued::Duplicate,
        })
    }

    async fn fire(
        &self,
        schedule: &ScheduleRow,
        expected_next: Option<DateTime<Utc>>,
        runs: Vec<NewRun>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let advance = match expected_next {
            None => Statement::new(
                "INSERT INTO schedules (job_name, next_fire_at, last_fire_at, definition) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (job_name) DO NOTHING",
            ),
            Some(_) => Statement::new(
                "UPDATE schedules SET next_fire_at = $2, last_fire_at = $3, definition = $4 \
                 WHERE job_name = $1 AND next_fire_at = $5",
            ),
        }
        .bind(&schedule.job_name)
        .bind(schedule.next_fire_at)
        .bind(schedule.last_fire_at)
        .bind(&schedule.definition);
        let advance = match expected_next {
            Some(expected) => advance.bind(expected),
            None => advance,
        };
        let transaction = Transaction {
            precondition: Some(advance),
            statements: runs.iter().map(|run| insert_run(run, now)).collect(),
        };
        Ok(self.write_transaction(transaction).await?.is_some())
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        filter: ClaimFilter<'_>,
    ) -> StoreResult<Option<Run>> {
        if filter.kinds.is_some_and(<[String]>::is_empty) {
            return Ok(None);
        }
        self.claim_run(claim_statement::<B>(owner, now, lease, filter))
            .await
    }

    async fn heartbeat(
        &self,
        run_id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<bool> {
        let statement = Statement::new(concat!(
            "UPDATE runs SET lease_expires_at = $3 WHERE ",
            held!()
        ))
        .bind(run_id)
        .bind(owner)
        .bind(until(now, lease));
        Ok(self.write(statement).await? == 1)
    }

    async fn finish(
        &self,
        run_id: Uuid,
        owner: &str,
        transition: Transition,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let fenced = |sql: &'static str| Statement::new(sql).bind(run_id).bind(owner);
        let statement = match transition {
            Transition::Complete { progress } => fenced(concat!(
                "UPDATE runs SET state = 'completed', finished_at = $3, progress = $4, ",
                lease_cleared!(),
                " WHERE ",
                held!()
            ))
            .bind(now)
            .bind(progress),
            Transition::Retry { run_after, error } => fenced(concat!(
                "UPDATE runs SET state = 'retrying', run_after = $3, last_error = $4, ",
                lease_cleared!(),
                " WHERE ",
                held!()
            ))
            .bind(run_after)
            .bind(&error),
            Transition::Snooze { run_after, note } => fenced(concat!(
                "UPDATE runs SET state = 'queued', run_after = $3, last_error = $4, ",
                attempt_returned!(),
                ", ",
                lease_cleared!(),
                " WHERE ",
                held!()
            ))
            .bind(run_after)
            .bind(&note),
            Transition::Release => fenced(concat!(
                "UPDATE runs SET state = 'queued', ",
                attempt_returned!(),
                ", ",
                lease_cleared!(),
                " WHERE ",
                held!()
            )),
            Transition::Fail { error } => ended(fenced, RunState::Failed, now, &error),
            Transition::Dead { error } => ended(fenced, RunState::Dead, now, &error),
            Transition::NeedsReauth { error } => ended(fenced, RunState::NeedsReauth, now, &error),
            Transition::Cancel { note } => ended(fenced, RunState::Cancelled, now, &note),
        };
        Ok(self.write(statement).await? == 1)
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let statement = Statement::new(concat!(
            rescue_update!("lease expired (worker lost)"),
            " WHERE state = 'running' AND lease_expires_at <= $1"
        ))
        .bind(now);
        self.write(statement).await
    }

    async fn rescue_running(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let statement = Statement::new(concat!(
            rescue_update!("the daemon that ran it stopped (rescued at restart)"),
            " WHERE state = 'running'"
        ))
        .bind(now);
        self.write(statement).await
    }

    async fn set_progress(&self, run_id: Uuid, owner: &str, progress: Value) -> StoreResult<bool> {
        let statement = Statement::new(concat!("UPDATE runs SET progress = $3 WHERE ", held!()))
            .bind(run_id)
            .bind(owner)
            .bind(progress);
        Ok(self.write(statement).await? == 1)
    }

    async fn get_run(&self, run_id: Uuid) -> StoreResult<Option<Run>> {
        let statement = Statement::new(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = $1"
        ))
        .bind(run_id);
        read_row(self, statement, decode_run).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let mut statement =
            Statement::new(concat!("SELECT ", run_columns!(), " FROM runs WHERE 1 = 1"));
        if let Some(job_name) = &filter.job_name {
            statement = statement.push_sql(" AND job_name = ").push_bind(job_name);
        }
        if !filter.states.is_empty() {
            statement = statement
                .push_sql(" AND state IN (")
                .push_bind_list(filter.states.iter().map(|state| state.as_str()))
                .push_sql(")");
        }
        if let Some(from) = filter.created_from {
            statement = statement.push_sql(" AND created_at >= ").push_bind(from);
        }
        if let Some(before) = filter.created_before {
            statement = statement.push_sql(" AND created_at < ").push_bind(before);
        }
        statement = statement.push_sql(" ORDER BY created_at DESC, id DESC");
        if filter.limit > 0 {
            statement = statement.push_sql(" LIMIT ").push_bind(filter.limit);
        }
        read_rows(self, statement, decode_run).await
    }

    async fn has_active_run(&self, job_name: &str) -> StoreResult<bool> {
        let statement = Statement::new(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE job_name = $1 \
             AND state IN ('queued', 'retrying', 'running')) AS active",
        )
        .bind(job_name);
        let active = read_row(self, statement, |row| row.flag("runs", "active")).await?;
        Ok(active.unwrap_or(false))
    }

    async fn count_by_state(&self) -> StoreResult<Vec<(RunState, i64)>> {
        let statement = Statement::new("SELECT state, COUNT(*) AS n FROM runs GROUP BY state");
        let rows = B::Db::read_all(self.readers(), statement).await?;
        counts_in_state_order(&rows)
    }

    async fn job_summaries(&self) -> StoreResult<Vec<JobSummary>> {
        let statement = Statement::new(
            "SELECT j.job_name, \
               (SELECT r.state FROM runs r WHERE r.job_name = j.job_name \
                ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS last_state, \
               (SELECT r.finished_at FROM runs r WHERE r.job_name = j.job_name \
                ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS last_finished_at, \
               (SELECT MAX(r.finished_at) FROM runs r WHERE r.job_name = j.job_name \
                AND r.state = 'completed') AS last_success_at \
             FROM (SELECT DISTINCT job_name FROM runs) j ORDER BY j.job_name",
        );
        read_rows(self, statement, decode_job_summary).await
    }

    async fn get_schedule(&self, job_name: &str) -> StoreResult<Option<ScheduleRow>> {
        let statement = Statement::new(concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules WHERE job_name = $1"
        ))
        .bind(job_name);
        read_row(self, statement, decode_schedule).await
    }

    async fn list_schedules(&self) -> StoreResult<Vec<ScheduleRow>> {
        let statement = Statement::new(concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules ORDER BY job_name"
        ));
        read_rows(self, statement, decode_schedule).await
    }

    async fn delete_schedule(&self, job_name: &str) -> StoreResult<()> {
        let statement = Statement::new("DELETE FROM schedules WHERE job_name = $1").bind(job_name);
        self.write(statement).await.map(drop)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let statement = Statement::new(
            "INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
               expires_at = excluded.expires_at \
             WHERE leases.owner = excluded.owner OR leases.expires_at <= $4",
        )
        .bind(name)
        .bind(owner)
        .bind(until(now, ttl))
        .bind(now);
        Ok(self.write(statement).await? == 1)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> StoreResult<()> {
        let statement = Statement::new("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner);
        self.write(statement).await.map(drop)
    }

    async fn hand_over_lease(
        &self,
        name: &str,
        owner: &str,
        last_use: DateTime<Utc>,
    ) -> StoreResult<()> {
        // Never later than the lease's own expiry, so the row reads as free no later than it
        // would have (CASE rather than LEAST/MIN: the two databases spell that differently).
        let statement = Statement::new(
            "UPDATE leases SET expires_at = CASE WHEN $3 < expires_at THEN $3 ELSE expires_at END \
             WHERE name = $1 AND owner = $2",
        )
        .bind(name)
        .bind(owner)
        .bind(last_use);
        self.write(statement).await.map(drop)
    }

    async fn get_lease(&self, name: &str) -> StoreResult<Option<LeaseRow>> {
        let statement =
            Statement::new("SELECT name, owner, expires_at FROM leases WHERE name = $1").bind(name);
        read_row(self, statement, decode_lease).await
    }

    async fn announce_replica(&self, replica: &ReplicaRow) -> StoreResult<()> {
        let statement = Statement::new(concat!(
            "INSERT INTO replicas (",
            replica_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (owner) DO UPDATE SET job_set = excluded.job_set, jobs = excluded.jobs, \
               version = excluded.version, seen_at = excluded.seen_at, \
               expires_at = excluded.expires_at, job_set_since = excluded.job_set_since"
        ))
        .bind(&replica.owner)
        .bind(&replica.job_set)
        .bind(replica.jobs)
        .bind(&replica.version)
        .bind(replica.started_at)
        .bind(replica.seen_at)
        .bind(replica.expires_at)
        .bind(replica.job_set_since);
        self.write(statement).await.map(drop)
    }

    async fn live_replicas(&self, now: DateTime<Utc>) -> StoreResult<Vec<ReplicaRow>> {
        let statement = Statement::new(concat!(
            "SELECT ",
            replica_columns!(),
            " FROM replicas WHERE expires_at > $1 ORDER BY owner"
        ))
        .bind(now);
        read_rows(self, statement, decode_replica).await
    }

    async fn retire_replica(&self, owner: &str, before: DateTime<Utc>) -> StoreResult<()> {
        let statement = Statement::new("DELETE FROM replicas WHERE owner = $1 OR expires_at < $2")
            .bind(owner)
            .bind(before);
        self.write(statement).await.map(drop)
    }

    async fn get_checkpoint(&self, job_name: &str, key: &str) -> StoreResult<Option<Value>> {
        let statement =
            Statement::new("SELECT value FROM checkpoints WHERE job_name = $1 AND key = $2")
                .bind(job_name)
                .bind(key);
        read_row(self, statement, |row| row.json("checkpoints", "value")).await
    }

    async fn put_checkpoint(
        &self,
        run_id: Uuid,
        owner: &str,
        job_name: &str,
        key: &str,
        value: Value,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // The fence and the write in one statement. `WHERE true` keeps SQLite from reading the
        // upsert's `ON` as a join's.
        let statement = Statement::new(concat!(
            "WITH fence AS (SELECT id FROM runs WHERE ",
            held!()
        ))
        .push_sql(B::FENCE_LOCK)
        .push_sql(
            ") INSERT INTO checkpoints (job_name, key, value, updated_at) \
             SELECT $3, $4, $5, $6 FROM fence WHERE true \
             ON CONFLICT (job_name, key) DO UPDATE SET value = excluded.value, \
               updated_at = excluded.updated_at",
        )
        .bind(run_id)
        .bind(owner)
        .bind(job_name)
        .bind(key)
        .bind(value)
        .bind(now);
        Ok(self.write(statement).await? == 1)
    }

    async fn pause_job(&self, job_name: &str, by: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let statement = Statement::new(
            "INSERT INTO job_controls (job_name, paused_at, paused_by) VALUES ($1, $2, $3) \
             ON CONFLICT (job_name) DO NOTHING",
        )
        .bind(job_name)
        .bind(now)
        .bind(by);
        Ok(self.write(statement).await? == 1)
    }

    async fn resume_job(&self, job_name: &str) -> StoreResult<bool> {
        let statement =
            Statement::new("DELETE FROM job_controls WHERE job_name = $1").bind(job_name);
        Ok(self.write(statement).await? == 1)
    }

    async fn job_controls(&self) -> StoreResult<Vec<JobControl>> {
        let statement = Statement::new(
            "SELECT job_name, paused_at, paused_by FROM job_controls ORDER BY job_name",
        );
        read_rows(self, statement, decode_job_control).await
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let statement = Statement::new(
            "DELETE FROM runs WHERE finished_at < $1 AND state NOT IN \
             ('queued', 'retrying', 'running')",
        )
        .bind(before);
        self.write(statement).await
    }

    async fn put_credential(&self, row: &CredentialRow, replace: bool) -> StoreResult<bool> {
        let delete = Statement::new("DELETE FROM credentials WHERE name = $1").bind(&row.name);
        let insert = Statement::new(concat!(
            "INSERT INTO credentials (",
            credential_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (name) DO NOTHING"
        ))
        .bind(row.id)
        .bind(&row.name)
        .bind(&row.kind)
        .bind(&row.tier)
        .bind(&row.tenant)
        .bind(row.key_version)
        .bind(row.nonce.as_slice())
        .bind(row.ciphertext.as_slice())
        .bind(&row.owner_gid)
        .bind(&row.owner_name)
        .bind(&row.owner_email)
        .bind(&row.state)
        .bind(row.created_at)
        .bind(row.last_used_at)
        .bind(row.last_validated_at)
        .bind(&row.last_error);
        let statements = if replace {
            vec![delete, insert]
        } else {
            vec![insert]
        };
        let changed = self
            .write_transaction(Transaction {
                precondition: None,
                statements,
            })
            .await?;
        Ok(changed.and_then(|changed| changed.last().copied()) == Some(1))
    }

    async fn get_credential(&self, name: &str) -> StoreResult<Option<CredentialRow>> {
        let statement = Statement::new(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials WHERE name = $1"
        ))
        .bind(name);
        read_row(self, statement, decode_credential).await
    }

    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        let statement = Statement::new(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials ORDER BY name"
        ));
        read_rows(self, statement, decode_credential).await
    }

    async fn delete_credential(&self, name: &str) -> StoreResult<bool> {
        let statement = Statement::new("DELETE FROM credentials WHERE name = $1").bind(name);
        Ok(self.write(statement).await? == 1)
    }

    async fn set_credential_status(
        &self,
        name: &str,
        status: &CredentialStatus,
    ) -> StoreResult<bool> {
        let statement = Statement::new(
            "UPDATE credentials SET state = $1, owner_gid = COALESCE($2, owner_gid), \
               owner_name = COALESCE($3, owner_name), owner_email = COALESCE($4, owner_email), \
               last_validated_at = COALESCE($5, last_validated_at), last_error = $6 \
             WHERE name = $7",
        )
        .bind(&status.state)
        .bind(&status.owner_gid)
        .bind(&status.owner_name)
        .bind(&status.owner_email)
        .bind(status.validated_at)
        .bind(&status.last_error)
        .bind(name);
        Ok(self.write(statement).await? == 1)
    }

    async fn update_credential_secret(
        &self,
        id: Uuid,
        key_version: i32,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
        state: &str,
    ) -> StoreResult<bool> {
        let statement = Statement::new(
            "UPDATE credentials SET key_version = $1, nonce = $2, ciphertext = $3, state = $4, \
               last_error = NULL WHERE id = $5",
        )
        .bind(key_version)
        .bind(nonce.as_slice())
        .bind(ciphertext.as_slice())
        .bind(state)
        .bind(id);
        Ok(self.write(statement).await? == 1)
    }

    async fn touch_credential(&self, name: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let statement = Statement::new("UPDATE credentials SET last_used_at = $1 WHERE name = $2")
            .bind(at)
            .bind(name);
        self.write(statement).await.map(drop)
    }

    async fn reencrypt_credentials(&self, batch: Vec<Reencrypted>) -> StoreResult<u64> {
        let statements = batch
            .iter()
            .map(|row| {
                Statement::new(
                    "UPDATE credentials SET key_version = $1, nonce = $2, ciphertext = $3 \
                     WHERE id = $4 AND key_version = $5",
                )
                .bind(row.key_version)
                .bind(row.nonce.as_slice())
                .bind(row.ciphertext.as_slice())
                .bind(row.id)
                .bind(row.from_version)
            })
            .collect();
        let changed = self
            .write_transaction(Transaction {
                precondition: None,
                statements,
            })
            .await?;
        Ok(changed.unwrap_or_default().iter().sum())
    }
}

/// A transition to terminal `state` at `now`, with `message` as the run's last error or note.
fn ended(
    fenced: impl FnOnce(&'static str) -> Statement,
    state: RunState,
    now: DateTime<Utc>,
    message: &str,
) -> Statement {
    fenced(concat!(
        "UPDATE runs SET state = $3, finished_at = $4, last_error = $5, ",
        lease_cleared!(),
        " WHERE ",
        held!()
    ))
    .bind(state.as_str())
    .bind(now)
    .bind(message)
}
