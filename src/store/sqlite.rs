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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::rows::{PortableColumns, StoredRow, column, corrupt, decode_run};
use super::sql::{Backend, Dialect, Sql, Statement, Transaction};
use super::{Run, StoreError, StoreResult};

/// How long a writer waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite implementation of [`super::Store`].
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
    async fn commit_write<T, F>(&self, shape: Shape, op: F) -> StoreResult<T>
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
pub(crate) fn sqlite_path(url: &str) -> Option<&str> {
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

/// SQLite keeps timestamps as INTEGER microseconds since the Unix epoch (exact, ordered, and
/// PostgreSQL's precision) and ids as hyphenated TEXT.
impl Dialect for Sqlite {
    type Time = Option<i64>;
    type Id = String;

    fn time(time: Option<DateTime<Utc>>) -> Option<i64> {
        time.map(|time| time.timestamp_micros())
    }

    fn id(id: Uuid) -> String {
        id.to_string()
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Reads back what [`Dialect for Sqlite`](Dialect) binds.
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

impl SqliteStore {
    /// Runs a statement that returns a run as a write of `shape`, decoding the run inside the
    /// write so that with a savepoint a run that cannot be decoded is not left changed.
    async fn write_returning_run(
        &self,
        shape: Shape,
        statement: Statement,
    ) -> StoreResult<Option<Run>> {
        self.commit_write(shape, move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let row = Sqlite::execute_returning(conn, statement).await?;
                row.as_ref().map(decode_run).transpose()
            })
        })
        .await
    }
}

/// Every write holds SQLite's single write lock from its first statement (`BEGIN IMMEDIATE`),
/// so claims and checkpoint writes need no row locks of their own; the claim walks the
/// `runs_claim` index in claim order and stops at the first due run of a job not already
/// running (the planner would otherwise sort every due run).
#[async_trait]
impl Backend for SqliteStore {
    type Db = Sqlite;

    const CLAIM_CANDIDATES: &'static str = "runs r INDEXED BY runs_claim";
    const CLAIM_LOCK: &'static str = "";
    const FENCE_LOCK: &'static str = "";

    fn readers(&self) -> &SqlitePool {
        &self.pool
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
        &MIGRATOR
    }

    async fn apply_migrations(&self) -> StoreResult<()> {
        Self::migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn size_bytes(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn applied_migrations(&self) -> StoreResult<Option<Vec<i64>>> {
        let table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await?;
        if table.is_none() {
            return Ok(None);
        }
        let versions = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(versions))
    }

    async fn write(&self, statement: Statement) -> StoreResult<u64> {
        self.commit_write(Shape::OneStatement, move |conn: &mut SqliteConnection| {
            Sqlite::execute(conn, statement)
        })
        .await
    }

    async fn write_run(&self, statement: Statement) -> StoreResult<Option<Run>> {
        self.write_returning_run(Shape::OneStatement, statement)
            .await
    }

    async fn claim_run(&self, statement: Statement) -> StoreResult<Option<Run>> {
        // A corrupt row fails the claim and rolls it back rather than leaving a run claimed by
        // nobody.
        self.write_returning_run(Shape::Savepoint, statement).await
    }

    async fn write_transaction(&self, transaction: Transaction) -> StoreResult<Option<Vec<u64>>> {
        self.commit_write(Shape::Savepoint, move |conn: &mut SqliteConnection| {
            Sqlite::transaction(conn, transaction)
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
