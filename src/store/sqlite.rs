//! The SQLite store: the default, a single file next to the daemon.
//!
//! The file runs in WAL mode with `synchronous=FULL` (a committed claim or finish survives a
//! power cut), a 10 s busy timeout (writers queue instead of failing) and foreign keys on.
//! Every read-modify-write runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's single
//! write lock up front: two writers can never both read the same snapshot and then race to
//! upgrade, so a claim's `UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING …` hands a run to
//! exactly one worker.
//!
//! Timestamps are stored as INTEGER microseconds since the Unix epoch: exact, ordered, and the
//! same precision as PostgreSQL's `timestamptz`, so both stores read back the same instants.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::rows::{
    COUNT_BY_STATE, JOB_SUMMARIES, PortableColumns, StoredRow, column, corrupt,
    counts_in_state_order, credential_columns, decode_credential, decode_job_summary, decode_run,
    decode_schedule, run_columns, schedule_columns,
};
use super::{
    CredentialRow, CredentialStatus, Enqueued, JobSummary, NewRun, Reencrypted, Run, RunFilter,
    RunState, ScheduleRow, Store, StoreError, StoreResult, Transition, until, whole_secs,
};

/// How long a writer waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The fence of every write by a worker: it must still hold the run's lease.
macro_rules! held {
    () => {
        "id = ? AND lease_owner = ? AND state = 'running'"
    };
}

/// The SQLite implementation of [`Store`].
///
/// Reads use a pool of connections (WAL readers never block the writer). Writes on a file
/// database go through one writer task with a connection of its own that groups the writes
/// waiting at that moment into one `BEGIN IMMEDIATE … COMMIT`: SQLite has a single writer
/// anyway, and with `synchronous=FULL` every commit costs an fsync, so sharing one commit
/// between concurrent writers (group commit) multiplies throughput while every caller still
/// returns only after its change is durable. A failing write is undone alone (a savepoint around
/// multi-statement writes, statement atomicity for single statements); a failing commit fails
/// the whole group.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// None for `:memory:` (one connection does everything).
    writer: Option<writer::Writer>,
}

/// How a write must be isolated from the others of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One statement with nothing to undo after it fails: SQLite's statement atomicity suffices.
    OneStatement,
    /// Several statements, or one whose result can still fail afterwards: needs a savepoint.
    Savepoint,
}

impl SqliteStore {
    /// Opens (creating if missing, mode 0600) the database at `url`: `sqlite://PATH`,
    /// `sqlite:PATH` or `sqlite::memory:`. Does not migrate; [`super::open`] does. Must be
    /// called inside a Tokio runtime (it starts the writer task, which ends when the store
    /// and its clones are dropped).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let path =
            sqlite_path(url).ok_or_else(|| StoreError::UnsupportedUrl(super::redact_url(url)))?;
        let options = SqliteConnectOptions::new()
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if path == ":memory:" {
            // Every connection to `:memory:` is a separate database: keep exactly one, forever.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options.in_memory(true))
                .await?;
            return Ok(Self { pool, writer: None });
        }
        create_private_file(Path::new(path))?;
        let options = options
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await?;
        let writer = writer::Writer::start(SqliteConnection::connect_with(&options).await?);
        Ok(Self {
            pool,
            writer: Some(writer),
        })
    }

    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Runs `op` in a write transaction holding SQLite's write lock (`BEGIN IMMEDIATE`), and
    /// returns once it is committed. An error from `op` undoes everything it did.
    async fn write<T, F>(&self, shape: Shape, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        match &self.writer {
            Some(writer) => writer.submit(shape == Shape::Savepoint, op).await,
            None => {
                // Dropping the transaction un-committed rolls back (sqlx issues the ROLLBACK),
                // so an error or a cancelled future never leaves a connection mid-transaction.
                let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = op(&mut tx).await?;
                tx.commit().await?;
                Ok(out)
            }
        }
    }
}

/// The group-commit writer of a file database.
mod writer {
    use futures::future::BoxFuture;
    use sqlx::{Executor, SqliteConnection};
    use tokio::sync::{mpsc, oneshot};

    use crate::store::{StoreError, StoreResult};

    /// Most writes committed together.
    const MAX_GROUP: usize = 256;

    /// Handle to the writer task.
    #[derive(Debug, Clone)]
    pub(super) struct Writer {
        queue: mpsc::Sender<Box<dyn Pending>>,
    }

    /// A write waiting for the writer.
    trait Pending: Send {
        /// Whether it needs a savepoint of its own.
        fn savepoint(&self) -> bool;
        /// Runs the write inside the open transaction.
        fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Ran>>;
        /// Fails the write without running it.
        fn abort(self: Box<Self>, why: &str);
    }

    /// A write that ran, waiting for its group's commit.
    trait Ran: Send {
        fn succeeded(&self) -> bool;
        /// Answers the caller: its own result once committed, else the commit's failure.
        fn deliver(self: Box<Self>, commit_failure: Option<&str>);
    }

    struct Op<T, F> {
        savepoint: bool,
        op: F,
        reply: oneshot::Sender<StoreResult<T>>,
    }

    struct Done<T> {
        result: StoreResult<T>,
        reply: oneshot::Sender<StoreResult<T>>,
    }

    fn group_failure(why: &str) -> StoreError {
        StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!(
            "the write's transaction failed: {why}"
        ))))
    }

    impl<T, F> Pending for Op<T, F>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        fn savepoint(&self) -> bool {
            self.savepoint
        }

        fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Ran>> {
            Box::pin(async move {
                let Op { op, reply, .. } = *self;
                let result = op(conn).await;
                Box::new(Done { result, reply }) as Box<dyn Ran>
            })
        }

        fn abort(self: Box<Self>, why: &str) {
            let _ = self.reply.send(Err(group_failure(why)));
        }
    }

    impl<T: Send> Ran for Done<T> {
        fn succeeded(&self) -> bool {
            self.result.is_ok()
        }

        fn deliver(self: Box<Self>, commit_failure: Option<&str>) {
            let result = match (self.result, commit_failure) {
                (Ok(_), Some(why)) => Err(group_failure(why)),
                (result, _) => result,
            };
            // The caller may have stopped waiting (cancelled); the write stands regardless.
            let _ = self.reply.send(result);
        }
    }

    impl Writer {
        /// Starts the writer task on `conn`; it ends when every handle is dropped.
        pub(super) fn start(conn: SqliteConnection) -> Self {
            let (queue, receiver) = mpsc::channel(4 * MAX_GROUP);
            tokio::spawn(run(conn, receiver));
            Self { queue }
        }

        /// Queues `op` and waits until its group is committed.
        pub(super) async fn submit<T, F>(&self, savepoint: bool, op: F) -> StoreResult<T>
        where
            T: Send + 'static,
            F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
                + Send
                + 'static,
        {
            let (reply, answer) = oneshot::channel();
            let stopped = || group_failure("the database writer has stopped");
            self.queue
                .send(Box::new(Op {
                    savepoint,
                    op,
                    reply,
                }))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
    }

    async fn run(mut conn: SqliteConnection, mut receiver: mpsc::Receiver<Box<dyn Pending>>) {
        let mut group: Vec<Box<dyn Pending>> = Vec::with_capacity(MAX_GROUP);
        while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
            if let Err(error) = conn.execute("BEGIN IMMEDIATE").await {
                let why = error.to_string();
                group.drain(..).for_each(|op| op.abort(&why));
                continue;
            }
            let mut ran: Vec<Box<dyn Ran>> = Vec::with_capacity(group.len());
            let mut broken: Option<String> = None;
            for op in group.drain(..) {
                if let Some(why) = &broken {
                    op.abort(why);
                    continue;
                }
                let savepoint = op.savepoint();
                if savepoint && let Err(error) = conn.execute("SAVEPOINT write").await {
                    let why = error.to_string();
                    op.abort(&why);
                    broken = Some(why);
                    continue;
                }
                let done = op.run(&mut conn).await;
                if savepoint {
                    let end = if done.succeeded() {
                        "RELEASE write"
                    } else {
                        "ROLLBACK TO write; RELEASE write"
                    };
                    if let Err(error) = conn.execute(end).await {
                        broken = Some(error.to_string());
                    }
                }
                ran.push(done);
            }
            let failure = match broken {
                Some(why) => Some(why),
                None => conn
                    .execute("COMMIT")
                    .await
                    .err()
                    .map(|error| error.to_string()),
            };
            if failure.is_some() {
                let _ = conn.execute("ROLLBACK").await;
            }
            ran.into_iter()
                .for_each(|done| done.deliver(failure.as_deref()));
        }
    }
}

/// The file path in a SQLite URL (`sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:`), without
/// any `?query`; `:memory:` for an in-memory database.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() { None } else { Some(path) }
}

/// Creates the database file with mode 0600 (it holds job state and, later, encrypted
/// credentials) and its parent directory, before SQLite would create it with the umask's mode.
fn create_private_file(path: &Path) -> StoreResult<()> {
    let io = |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop).map_err(io)
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn opt_micros(time: Option<DateTime<Utc>>) -> Option<i64> {
    time.map(micros)
}

/// SQLite keeps timestamps as INTEGER microseconds since the Unix epoch and ids as hyphenated
/// TEXT.
impl StoredRow for SqliteRow {
    fn optional_time(&self, table: &'static str, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
        column::<_, Option<i64>>(self, table, name)?
            .map(|value| {
                DateTime::from_timestamp_micros(value).ok_or_else(|| {
                    corrupt(
                        table,
                        format!("column {name}: timestamp {value} out of range"),
                    )
                })
            })
            .transpose()
    }

    fn id(&self, table: &'static str, name: &str) -> StoreResult<Uuid> {
        let id = self.text(table, name)?;
        Uuid::parse_str(&id)
            .map_err(|error| corrupt(table, format!("column {name}: {id:?}: {error}")))
    }
}

/// `?, ?, …` for `count` values.
fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// Inserts a run unless its (job, unique key) exists; the new row, or None for a duplicate.
async fn insert_run<'c, E>(
    executor: E,
    run: &NewRun,
    now: DateTime<Utc>,
) -> StoreResult<Option<Run>>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let finished_at = run.state.is_terminal().then_some(micros(now));
    let row = sqlx::query(concat!(
        "INSERT INTO runs (id, job_name, kind, \"trigger\", fire_time, unique_key, priority, \
         state, attempt, max_attempts, run_after, retry_initial_secs, retry_max_secs, rescues, \
         created_at, finished_at, last_error, progress) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, 0, ?, ?, ?, '{}') \
         ON CONFLICT (job_name, unique_key) DO NOTHING RETURNING ",
        run_columns!()
    ))
    .bind(Uuid::new_v4().to_string())
    .bind(&run.job_name)
    .bind(&run.kind)
    .bind(run.trigger.as_str())
    .bind(opt_micros(run.fire_time))
    .bind(&run.unique_key)
    .bind(run.priority)
    .bind(run.state.as_str())
    .bind(run.max_attempts)
    .bind(micros(run.run_after))
    .bind(whole_secs(run.retry_initial))
    .bind(whole_secs(run.retry_max))
    .bind(micros(now))
    .bind(finished_at)
    .bind(&run.note)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(decode_run).transpose()
}

/// Semantics shared with the PostgreSQL store (the conformance suite checks both):
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
///   and the lease. `kinds = Some(&[])` claims nothing.
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
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn enqueue(&self, run: NewRun, now: DateTime<Utc>) -> StoreResult<Enqueued> {
        let inserted = self
            .write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
                Box::pin(async move { insert_run(conn, &run, now).await })
            })
            .await?;
        Ok(match inserted {
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
        let schedule = schedule.clone();
        self.write(Shape::Savepoint, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let advanced = match expected_next {
                    None => sqlx::query(
                        "INSERT INTO schedules (job_name, next_fire_at, last_fire_at, \
                         definition) VALUES (?, ?, ?, ?) ON CONFLICT (job_name) DO NOTHING",
                    )
                    .bind(&schedule.job_name)
                    .bind(micros(schedule.next_fire_at))
                    .bind(opt_micros(schedule.last_fire_at))
                    .bind(&schedule.definition)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected(),
                    Some(expected) => sqlx::query(
                        "UPDATE schedules SET next_fire_at = ?, last_fire_at = ?, definition = ? \
                         WHERE job_name = ? AND next_fire_at = ?",
                    )
                    .bind(micros(schedule.next_fire_at))
                    .bind(opt_micros(schedule.last_fire_at))
                    .bind(&schedule.definition)
                    .bind(&schedule.job_name)
                    .bind(micros(expected))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected(),
                };
                if advanced != 1 {
                    return Ok(false); // nothing was changed
                }
                for run in &runs {
                    insert_run(&mut *conn, run, now).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        kinds: Option<&[String]>,
    ) -> StoreResult<Option<Run>> {
        if kinds.is_some_and(<[String]>::is_empty) {
            return Ok(None);
        }
        let kind_filter = match kinds {
            Some(kinds) => format!("AND r.kind IN ({})", placeholders(kinds.len())),
            None => String::new(),
        };
        // `INDEXED BY`: walk the claimable runs in claim order and stop at the first due one of
        // a job not already running (the planner would otherwise sort every due run).
        let sql = format!(
            "UPDATE runs SET state = 'running', attempt = attempt + 1, lease_owner = ?, \
             lease_expires_at = ?, started_at = ? \
             WHERE state IN ('queued', 'retrying') AND id = ( \
                 SELECT r.id FROM runs r INDEXED BY runs_claim \
                 WHERE r.state IN ('queued', 'retrying') AND r.run_after <= ? {kind_filter} \
                   AND NOT EXISTS (SELECT 1 FROM runs x \
                                   WHERE x.job_name = r.job_name AND x.state = 'running') \
                 ORDER BY r.priority DESC, r.run_after ASC, r.created_at ASC, r.id ASC \
                 LIMIT 1) \
             RETURNING {}",
            run_columns!()
        );
        let owner = owner.to_owned();
        let kinds: Vec<String> = kinds.map(<[String]>::to_vec).unwrap_or_default();
        self.write(Shape::Savepoint, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let mut query = sqlx::query(AssertSqlSafe(sql))
                    .bind(owner)
                    .bind(micros(until(now, lease)))
                    .bind(micros(now))
                    .bind(micros(now));
                for kind in kinds {
                    query = query.bind(kind);
                }
                let row = query.fetch_optional(&mut *conn).await?;
                // Decoded inside the transaction: a corrupt row fails the claim and rolls it
                // back rather than leaving a run claimed by nobody.
                row.as_ref().map(decode_run).transpose()
            })
        })
        .await
    }

    async fn heartbeat(
        &self,
        run_id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<bool> {
        let owner = owner.to_owned();
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let done = sqlx::query(concat!(
                    "UPDATE runs SET lease_expires_at = ? WHERE ",
                    held!()
                ))
                .bind(micros(until(now, lease)))
                .bind(run_id.to_string())
                .bind(owner)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn finish(
        &self,
        run_id: Uuid,
        owner: &str,
        transition: Transition,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let owner = owner.to_owned();
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let now = micros(now);
                let query = match &transition {
                    Transition::Complete { progress } => sqlx::query(concat!(
                        "UPDATE runs SET state = 'completed', finished_at = ?, progress = ?, \
                         lease_owner = NULL, lease_expires_at = NULL WHERE ",
                        held!()
                    ))
                    .bind(now)
                    .bind(progress.to_string()),
                    Transition::Retry { run_after, error } => sqlx::query(concat!(
                        "UPDATE runs SET state = 'retrying', run_after = ?, last_error = ?, \
                         lease_owner = NULL, lease_expires_at = NULL WHERE ",
                        held!()
                    ))
                    .bind(micros(*run_after))
                    .bind(error),
                    Transition::Snooze { run_after, note } => sqlx::query(concat!(
                        "UPDATE runs SET state = 'queued', run_after = ?, last_error = ?, \
                         attempt = MAX(attempt - 1, 0), lease_owner = NULL, \
                         lease_expires_at = NULL WHERE ",
                        held!()
                    ))
                    .bind(micros(*run_after))
                    .bind(note),
                    Transition::Release => sqlx::query(concat!(
                        "UPDATE runs SET state = 'queued', attempt = MAX(attempt - 1, 0), \
                         lease_owner = NULL, lease_expires_at = NULL WHERE ",
                        held!()
                    )),
                    Transition::Fail { error: message }
                    | Transition::Dead { error: message }
                    | Transition::NeedsReauth { error: message }
                    | Transition::Cancel { note: message } => {
                        let state = match &transition {
                            Transition::Fail { .. } => RunState::Failed,
                            Transition::Dead { .. } => RunState::Dead,
                            Transition::NeedsReauth { .. } => RunState::NeedsReauth,
                            _ => RunState::Cancelled,
                        };
                        sqlx::query(concat!(
                            "UPDATE runs SET state = ?, finished_at = ?, last_error = ?, \
                             lease_owner = NULL, lease_expires_at = NULL WHERE ",
                            held!()
                        ))
                        .bind(state.as_str())
                        .bind(now)
                        .bind(message)
                    }
                };
                let done = query
                    .bind(run_id.to_string())
                    .bind(owner)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE runs SET \
                       state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'retrying' END, \
                       run_after = CASE WHEN attempt >= max_attempts THEN run_after ELSE ?1 END, \
                       finished_at = CASE WHEN attempt >= max_attempts THEN ?1 ELSE NULL END, \
                       rescues = rescues + 1, last_error = 'lease expired (worker lost)', \
                       lease_owner = NULL, lease_expires_at = NULL \
                     WHERE state = 'running' AND lease_expires_at <= ?1",
                )
                .bind(micros(now))
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    async fn set_progress(&self, run_id: Uuid, owner: &str, progress: Value) -> StoreResult<bool> {
        let owner = owner.to_owned();
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let done = sqlx::query(concat!("UPDATE runs SET progress = ? WHERE ", held!()))
                    .bind(progress.to_string())
                    .bind(run_id.to_string())
                    .bind(owner)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn get_run(&self, run_id: Uuid) -> StoreResult<Option<Run>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = ?"
        ))
        .bind(run_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_run).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let mut sql = concat!("SELECT ", run_columns!(), " FROM runs WHERE 1 = 1").to_owned();
        if filter.job_name.is_some() {
            sql.push_str(" AND job_name = ?");
        }
        if !filter.states.is_empty() {
            sql.push_str(&format!(
                " AND state IN ({})",
                placeholders(filter.states.len())
            ));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        if filter.limit > 0 {
            sql.push_str(" LIMIT ?");
        }
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(job_name) = &filter.job_name {
            query = query.bind(job_name);
        }
        for state in &filter.states {
            query = query.bind(state.as_str());
        }
        if filter.limit > 0 {
            query = query.bind(filter.limit);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(decode_run).collect()
    }

    async fn has_active_run(&self, job_name: &str) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE job_name = ? \
             AND state IN ('queued', 'retrying', 'running')) AS active",
        )
        .bind(job_name)
        .fetch_one(&self.pool)
        .await?;
        row.flag("runs", "active")
    }

    async fn count_by_state(&self) -> StoreResult<Vec<(RunState, i64)>> {
        let rows = sqlx::query(COUNT_BY_STATE).fetch_all(&self.pool).await?;
        counts_in_state_order(&rows)
    }

    async fn job_summaries(&self) -> StoreResult<Vec<JobSummary>> {
        let rows = sqlx::query(JOB_SUMMARIES).fetch_all(&self.pool).await?;
        rows.iter().map(decode_job_summary).collect()
    }

    async fn get_schedule(&self, job_name: &str) -> StoreResult<Option<ScheduleRow>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules WHERE job_name = ?"
        ))
        .bind(job_name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_schedule).transpose()
    }

    async fn list_schedules(&self) -> StoreResult<Vec<ScheduleRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules ORDER BY job_name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_schedule).collect()
    }

    async fn delete_schedule(&self, job_name: &str) -> StoreResult<()> {
        let job_name = job_name.to_owned();
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                sqlx::query("DELETE FROM schedules WHERE job_name = ?")
                    .bind(job_name)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let done = sqlx::query(
                    "INSERT INTO leases (name, owner, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                       expires_at = excluded.expires_at \
                     WHERE leases.owner = excluded.owner OR leases.expires_at <= ?4",
                )
                .bind(name)
                .bind(owner)
                .bind(micros(until(now, ttl)))
                .bind(micros(now))
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> StoreResult<()> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                sqlx::query("DELETE FROM leases WHERE name = ? AND owner = ?")
                    .bind(name)
                    .bind(owner)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn get_checkpoint(&self, job_name: &str, key: &str) -> StoreResult<Option<Value>> {
        let row = sqlx::query("SELECT value FROM checkpoints WHERE job_name = ? AND key = ?")
            .bind(job_name)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|row| row.json("checkpoints", "value"))
            .transpose()
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
        let (owner, job_name, key) = (owner.to_owned(), job_name.to_owned(), key.to_owned());
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                // The fence and the write in one statement under SQLite's write lock.
                let done = sqlx::query(concat!(
                    "INSERT INTO checkpoints (job_name, key, value, updated_at) \
                     SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM runs WHERE ",
                    held!(),
                    ") ON CONFLICT (job_name, key) DO UPDATE SET value = excluded.value, \
                     updated_at = excluded.updated_at"
                ))
                .bind(job_name)
                .bind(key)
                .bind(value.to_string())
                .bind(micros(now))
                .bind(run_id.to_string())
                .bind(owner)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let done = sqlx::query(
                    "DELETE FROM runs WHERE finished_at < ? AND state NOT IN \
                     ('queued', 'retrying', 'running')",
                )
                .bind(micros(before))
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }
    async fn put_credential(&self, row: &CredentialRow, replace: bool) -> StoreResult<bool> {
        let row = row.clone();
        self.write(Shape::Savepoint, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                if replace {
                    sqlx::query("DELETE FROM credentials WHERE name = ?")
                        .bind(&row.name)
                        .execute(&mut *conn)
                        .await?;
                }
                let done = sqlx::query(concat!(
                    "INSERT INTO credentials (",
                    credential_columns!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (name) DO NOTHING"
                ))
                .bind(row.id.to_string())
                .bind(row.name)
                .bind(row.kind)
                .bind(row.tier)
                .bind(row.tenant)
                .bind(row.key_version)
                .bind(row.nonce)
                .bind(row.ciphertext)
                .bind(row.owner_gid)
                .bind(row.owner_name)
                .bind(row.owner_email)
                .bind(row.state)
                .bind(micros(row.created_at))
                .bind(opt_micros(row.last_used_at))
                .bind(opt_micros(row.last_validated_at))
                .bind(row.last_error)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn get_credential(&self, name: &str) -> StoreResult<Option<CredentialRow>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_credential).transpose()
    }

    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_credential).collect()
    }

    async fn delete_credential(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM credentials WHERE name = ?")
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn set_credential_status(
        &self,
        name: &str,
        status: &CredentialStatus,
    ) -> StoreResult<bool> {
        let (name, status) = (name.to_owned(), status.clone());
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE credentials SET state = ?, owner_gid = COALESCE(?, owner_gid), \
                       owner_name = COALESCE(?, owner_name), \
                       owner_email = COALESCE(?, owner_email), \
                       last_validated_at = COALESCE(?, last_validated_at), last_error = ? \
                     WHERE name = ?",
                )
                .bind(status.state)
                .bind(status.owner_gid)
                .bind(status.owner_name)
                .bind(status.owner_email)
                .bind(opt_micros(status.validated_at))
                .bind(status.last_error)
                .bind(name)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn update_credential_secret(
        &self,
        id: Uuid,
        key_version: i32,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
        state: &str,
    ) -> StoreResult<bool> {
        let state = state.to_owned();
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE credentials SET key_version = ?, nonce = ?, ciphertext = ?, \
                       state = ?, last_error = NULL WHERE id = ?",
                )
                .bind(key_version)
                .bind(nonce)
                .bind(ciphertext)
                .bind(state)
                .bind(id.to_string())
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn touch_credential(&self, name: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                sqlx::query("UPDATE credentials SET last_used_at = ? WHERE name = ?")
                    .bind(micros(at))
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn reencrypt_credentials(&self, batch: Vec<Reencrypted>) -> StoreResult<u64> {
        self.write(Shape::Savepoint, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let mut changed = 0;
                for row in batch {
                    let done = sqlx::query(
                        "UPDATE credentials SET key_version = ?, nonce = ?, ciphertext = ? \
                         WHERE id = ? AND key_version = ?",
                    )
                    .bind(row.key_version)
                    .bind(row.nonce)
                    .bind(row.ciphertext)
                    .bind(row.id.to_string())
                    .bind(row.from_version)
                    .execute(&mut *conn)
                    .await?;
                    changed += done.rows_affected();
                }
                Ok(changed)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/aw/db.sqlite"),
            Some("/var/lib/aw/db.sqlite")
        );
        assert_eq!(sqlite_path("sqlite://rel.db?mode=rwc"), Some("rel.db"));
        assert_eq!(sqlite_path("sqlite:rel.db"), Some("rel.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), Some(":memory:"));
        assert_eq!(sqlite_path("sqlite://"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }
}
