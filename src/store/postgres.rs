//! The PostgreSQL store, for several daemon replicas sharing one queue.
//!
//! Claims lock their candidate with `FOR UPDATE SKIP LOCKED` inside the `UPDATE`'s subquery, so
//! concurrent claimers never wait on each other and never get the same run. Timestamps are
//! `timestamptz` (microseconds), progress and checkpoints `jsonb`, ids `uuid`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::rows::{
    COUNT_BY_STATE, JOB_SUMMARIES, PortableColumns, StoredRow, column, counts_in_state_order,
    credential_columns, decode_credential, decode_job_summary, decode_run, decode_schedule,
    run_columns, schedule_columns,
};
use super::{
    CredentialRow, CredentialStatus, Enqueued, JobSummary, NewRun, Reencrypted, Run, RunFilter,
    RunState, ScheduleRow, Store, StoreResult, Transition, until, whole_secs,
};

/// PostgreSQL keeps timestamps as `timestamptz` and ids as `uuid`, both of which sqlx decodes
/// directly.
impl StoredRow for PgRow {
    fn optional_time(&self, table: &'static str, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
        column(self, table, name)
    }

    fn id(&self, table: &'static str, name: &str) -> StoreResult<Uuid> {
        column(self, table, name)
    }
}

/// How often a claim retries after losing the race for a job's single running slot.
const CLAIM_RACE_RETRIES: usize = 16;

/// The partial unique index that allows one running run per job.
const ONE_RUNNING_INDEX: &str = "runs_one_running_per_job";

/// The PostgreSQL implementation of [`Store`].
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

/// Whether `error` is a unique violation of the constraint or index `name`.
fn violates(error: &sqlx::Error, name: &str) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(name))
}

/// Inserts a run unless its (job, unique key) exists; the new row, or None for a duplicate.
async fn insert_run<'c, E>(
    executor: E,
    run: &NewRun,
    now: DateTime<Utc>,
) -> StoreResult<Option<Run>>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let finished_at = run.state.is_terminal().then_some(now);
    let row = sqlx::query(concat!(
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
    .bind(finished_at)
    .bind(&run.note)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(decode_run).transpose()
}

/// Semantics are those of [`super::sqlite::SqliteStore`] (documented there; the conformance
/// suite checks both). Differences in mechanism only:
///
/// - `claim` picks its candidate with `FOR UPDATE SKIP LOCKED`. Two claimers may pick two runs
///   of the same job at once; the partial unique index `runs_one_running_per_job` lets only one
///   commit, and the loser retries (and then skips that job).
/// - `put_checkpoint` locks the run row (`FOR UPDATE`) in the same statement as the upsert, so a
///   concurrent rescue either happens before (and the write is refused) or waits.
#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn enqueue(&self, run: NewRun, now: DateTime<Utc>) -> StoreResult<Enqueued> {
        Ok(match insert_run(&self.pool, &run, now).await? {
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
        let mut tx = self.pool.begin().await?;
        let advanced = match expected_next {
            None => sqlx::query(
                "INSERT INTO schedules (job_name, next_fire_at, last_fire_at, definition) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (job_name) DO NOTHING",
            )
            .bind(&schedule.job_name)
            .bind(schedule.next_fire_at)
            .bind(schedule.last_fire_at)
            .bind(&schedule.definition)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(expected) => sqlx::query(
                "UPDATE schedules SET next_fire_at = $1, last_fire_at = $2, definition = $3 \
                 WHERE job_name = $4 AND next_fire_at = $5",
            )
            .bind(schedule.next_fire_at)
            .bind(schedule.last_fire_at)
            .bind(&schedule.definition)
            .bind(&schedule.job_name)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if advanced != 1 {
            return Ok(false); // dropping `tx` rolls back
        }
        for run in &runs {
            insert_run(&mut *tx, run, now).await?;
        }
        tx.commit().await?;
        Ok(true)
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
        let kinds: Option<Vec<String>> = kinds.map(<[String]>::to_vec);
        let mut attempts = 0;
        loop {
            let claimed = sqlx::query(concat!(
                "UPDATE runs SET state = 'running', attempt = attempt + 1, lease_owner = $1, \
                 lease_expires_at = $2, started_at = $3 \
                 WHERE state IN ('queued', 'retrying') AND id = ( \
                     SELECT r.id FROM runs r \
                     WHERE r.state IN ('queued', 'retrying') AND r.run_after <= $3 \
                       AND ($4::text[] IS NULL OR r.kind = ANY($4)) \
                       AND NOT EXISTS (SELECT 1 FROM runs x \
                                       WHERE x.job_name = r.job_name AND x.state = 'running') \
                     ORDER BY r.priority DESC, r.run_after ASC, r.created_at ASC, r.id ASC \
                     LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING ",
                run_columns!()
            ))
            .bind(owner)
            .bind(until(now, lease))
            .bind(now)
            .bind(&kinds)
            .fetch_optional(&self.pool)
            .await;
            match claimed {
                Ok(row) => return row.as_ref().map(decode_run).transpose(),
                Err(error)
                    if violates(&error, ONE_RUNNING_INDEX) && attempts < CLAIM_RACE_RETRIES =>
                {
                    attempts += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn heartbeat(
        &self,
        run_id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE runs SET lease_expires_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(until(now, lease))
        .bind(run_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish(
        &self,
        run_id: Uuid,
        owner: &str,
        transition: Transition,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let query = match &transition {
            Transition::Complete { progress } => sqlx::query(
                "UPDATE runs SET state = 'completed', finished_at = $3, progress = $4, \
                 lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            )
            .bind(run_id)
            .bind(owner)
            .bind(now)
            .bind(progress),
            Transition::Retry { run_after, error } => sqlx::query(
                "UPDATE runs SET state = 'retrying', run_after = $3, last_error = $4, \
                 lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            )
            .bind(run_id)
            .bind(owner)
            .bind(*run_after)
            .bind(error),
            Transition::Snooze { run_after, note } => sqlx::query(
                "UPDATE runs SET state = 'queued', run_after = $3, last_error = $4, \
                 attempt = GREATEST(attempt - 1, 0), lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            )
            .bind(run_id)
            .bind(owner)
            .bind(*run_after)
            .bind(note),
            Transition::Release => sqlx::query(
                "UPDATE runs SET state = 'queued', attempt = GREATEST(attempt - 1, 0), \
                 lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            )
            .bind(run_id)
            .bind(owner),
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
                sqlx::query(
                    "UPDATE runs SET state = $3, finished_at = $4, last_error = $5, \
                     lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                )
                .bind(run_id)
                .bind(owner)
                .bind(state.as_str())
                .bind(now)
                .bind(message)
            }
        };
        let done = query.execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE runs SET \
               state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'retrying' END, \
               run_after = CASE WHEN attempt >= max_attempts THEN run_after ELSE $1 END, \
               finished_at = CASE WHEN attempt >= max_attempts THEN $1 ELSE NULL END, \
               rescues = rescues + 1, last_error = 'lease expired (worker lost)', \
               lease_owner = NULL, lease_expires_at = NULL \
             WHERE state = 'running' AND lease_expires_at <= $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn set_progress(&self, run_id: Uuid, owner: &str, progress: Value) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE runs SET progress = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(run_id)
        .bind(owner)
        .bind(progress)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_run(&self, run_id: Uuid) -> StoreResult<Option<Run>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = $1"
        ))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_run).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let states: Option<Vec<String>> = (!filter.states.is_empty()).then(|| {
            filter
                .states
                .iter()
                .map(|state| state.as_str().to_owned())
                .collect()
        });
        let limit = (filter.limit > 0).then_some(filter.limit);
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE ($1::text IS NULL OR job_name = $1) \
             AND ($2::text[] IS NULL OR state = ANY($2)) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(&filter.job_name)
        .bind(states)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_run).collect()
    }

    async fn has_active_run(&self, job_name: &str) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE job_name = $1 \
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
            " FROM schedules WHERE job_name = $1"
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
        sqlx::query("DELETE FROM schedules WHERE job_name = $1")
            .bind(job_name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
               expires_at = excluded.expires_at \
             WHERE leases.owner = excluded.owner OR leases.expires_at <= $4",
        )
        .bind(name)
        .bind(owner)
        .bind(until(now, ttl))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_checkpoint(&self, job_name: &str, key: &str) -> StoreResult<Option<Value>> {
        let row = sqlx::query("SELECT value FROM checkpoints WHERE job_name = $1 AND key = $2")
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
        let done = sqlx::query(
            "WITH fence AS (SELECT id FROM runs \
                            WHERE id = $1 AND lease_owner = $2 AND state = 'running' \
                            FOR UPDATE) \
             INSERT INTO checkpoints (job_name, key, value, updated_at) \
             SELECT $3, $4, $5, $6 FROM fence \
             ON CONFLICT (job_name, key) DO UPDATE SET value = excluded.value, \
               updated_at = excluded.updated_at",
        )
        .bind(run_id)
        .bind(owner)
        .bind(job_name)
        .bind(key)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn prune_runs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM runs WHERE finished_at < $1 AND state NOT IN \
             ('queued', 'retrying', 'running')",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
    async fn put_credential(&self, row: &CredentialRow, replace: bool) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        if replace {
            sqlx::query("DELETE FROM credentials WHERE name = $1")
                .bind(&row.name)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(concat!(
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
        .bind(&row.nonce)
        .bind(&row.ciphertext)
        .bind(&row.owner_gid)
        .bind(&row.owner_name)
        .bind(&row.owner_email)
        .bind(&row.state)
        .bind(row.created_at)
        .bind(row.last_used_at)
        .bind(row.last_validated_at)
        .bind(&row.last_error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_credential(&self, name: &str) -> StoreResult<Option<CredentialRow>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials WHERE name = $1"
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
        let done = sqlx::query("DELETE FROM credentials WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_credential_status(
        &self,
        name: &str,
        status: &CredentialStatus,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
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
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_credential_secret(
        &self,
        id: Uuid,
        key_version: i32,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
        state: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE credentials SET key_version = $1, nonce = $2, ciphertext = $3, state = $4, \
               last_error = NULL WHERE id = $5",
        )
        .bind(key_version)
        .bind(nonce)
        .bind(ciphertext)
        .bind(state)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_credential(&self, name: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE credentials SET last_used_at = $1 WHERE name = $2")
            .bind(at)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn reencrypt_credentials(&self, batch: Vec<Reencrypted>) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut changed = 0;
        for row in batch {
            let done = sqlx::query(
                "UPDATE credentials SET key_version = $1, nonce = $2, ciphertext = $3 \
                 WHERE id = $4 AND key_version = $5",
            )
            .bind(row.key_version)
            .bind(row.nonce)
            .bind(row.ciphertext)
            .bind(row.id)
            .bind(row.from_version)
            .execute(&mut *tx)
            .await?;
            changed += done.rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }
}
