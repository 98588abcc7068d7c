//! The PostgreSQL store, for several daemon replicas sharing one queue.
//!
//! Claims lock their candidate with `FOR UPDATE SKIP LOCKED` inside the `UPDATE`'s subquery, so
//! concurrent claimers never wait on each other and never get the same run. Timestamps are
//! `timestamptz` (microseconds), progress and checkpoints `jsonb`, ids `uuid`. The statements
//! themselves are shared with the SQLite store (`src/store/sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgPoolOptions, PgQueryResult, PgRow};
use uuid::Uuid;

use super::rows::{StoredRow, column, decode_run};
use super::sql::{Backend, Dialect, Sql, Statement, Transaction};
use super::{Run, StoreError, StoreResult};

/// How often a claim retries after losing the race for a job's single running slot.
const CLAIM_RACE_RETRIES: usize = 16;

/// The partial unique index that allows one running run per job.
const ONE_RUNNING_INDEX: &str = "runs_one_running_per_job";

/// The PostgreSQL implementation of [`super::Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`). Does not migrate; [`super::open`] does.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// PostgreSQL keeps timestamps as `timestamptz` and ids as `uuid`, both of which sqlx binds
/// directly.
impl Dialect for Postgres {
    type Time = Option<DateTime<Utc>>;
    type Id = Uuid;

    fn time(time: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        time
    }

    fn id(id: Uuid) -> Uuid {
        id
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Reads back what [`Dialect for Postgres`](Dialect) binds: sqlx decodes both directly.
impl StoredRow for PgRow {
    fn optional_time(&self, table: &'static str, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
        column(self, table, name)
    }

    fn id(&self, table: &'static str, name: &str) -> StoreResult<Uuid> {
        column(self, table, name)
    }
}

/// Whether `error` is a unique violation of the constraint or index `name`.
fn violates(error: &StoreError, name: &str) -> bool {
    let StoreError::Database(error) = error else {
        return false;
    };
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(name))
}

/// Statements run on a pooled connection, outside a transaction unless several must commit
/// together. Differences from SQLite in mechanism only:
///
/// - a claim picks its candidate with `FOR UPDATE SKIP LOCKED`. Two claimers may pick two runs
///   of the same job at once; the partial unique index `runs_one_running_per_job` lets only one
///   commit, and the loser retries (and then skips that job).
/// - a checkpoint write locks the run row (`FOR UPDATE`) in the same statement as the upsert, so
///   a concurrent rescue either happens before (and the write is refused) or waits.
#[async_trait]
impl Backend for PgStore {
    type Db = Postgres;

    const CLAIM_CANDIDATES: &'static str = "runs r";
    const CLAIM_LOCK: &'static str = " FOR UPDATE SKIP LOCKED";
    const FENCE_LOCK: &'static str = " FOR UPDATE";

    fn readers(&self) -> &PgPool {
        &self.pool
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
        &MIGRATOR
    }

    async fn apply_migrations(&self) -> StoreResult<()> {
        Self::migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn size_bytes(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn applied_migrations(&self) -> StoreResult<Option<Vec<i64>>> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
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
        Postgres::execute(&mut *self.pool.acquire().await?, statement).await
    }

    async fn write_run(&self, statement: Statement) -> StoreResult<Option<Run>> {
        let row = Postgres::execute_returning(&mut *self.pool.acquire().await?, statement).await?;
        row.as_ref().map(decode_run).transpose()
    }

    async fn claim_run(&self, statement: Statement) -> StoreResult<Option<Run>> {
        let mut attempts = 0;
        loop {
            match self.write_run(statement.clone()).await {
                Err(error)
                    if violates(&error, ONE_RUNNING_INDEX) && attempts < CLAIM_RACE_RETRIES =>
                {
                    attempts += 1;
                }
                claimed => return claimed,
            }
        }
    }

    async fn write_transaction(&self, transaction: Transaction) -> StoreResult<Option<Vec<u64>>> {
        // Dropping `tx` un-committed (an error) rolls back.
        let mut tx = self.pool.begin().await?;
        let changed = Postgres::transaction(&mut tx, transaction).await?;
        tx.commit().await?;
        Ok(changed)
    }
}
