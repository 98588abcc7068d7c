//! Decoding of stored rows: one function per kind of row, shared by both stores, so a column
//! added to a table is read in one place and both databases report a bad value the same way.
//!
//! The databases keep two column types differently: timestamps (`timestamptz` in PostgreSQL,
//! INTEGER microseconds in SQLite) and ids (`uuid` against TEXT). Each store implements
//! [`StoredRow`] for its row type to read those two; every other column (text, integers, bytes,
//! booleans, JSON) decodes alike in both through [`PortableColumns`].

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::{
    CredentialRow, JobControl, JobSummary, LeaseRow, ReplicaRow, Run, RunState, ScheduleRow,
    StoreError, StoreResult, Trigger,
};

/// The error for a stored value this binary cannot read.
pub(super) fn corrupt(table: &'static str, message: String) -> StoreError {
    StoreError::Corrupt { table, message }
}

/// Column `name` of `row` as `T`. A missing column, a NULL where `T` allows none, or a value of
/// another type is [`StoreError::Corrupt`], never a panic: the database may have been written
/// by a newer binary or by hand.
pub(super) fn column<'r, R, T>(row: &'r R, table: &'static str, name: &str) -> StoreResult<T>
where
    R: Row,
    T: Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
{
    row.try_get(name)
        .map_err(|error| corrupt(table, format!("column {name}: {error}")))
}

/// The columns both databases store and decode alike, read by name. Implemented for the row
/// type of every database that decodes these Rust types, so the decoders below need no
/// per-database bounds.
pub(super) trait PortableColumns {
    /// A NOT NULL text column.
    fn text(&self, table: &'static str, name: &str) -> StoreResult<String>;
    /// A nullable text column.
    fn optional_text(&self, table: &'static str, name: &str) -> StoreResult<Option<String>>;
    /// A 32-bit integer column.
    fn int(&self, table: &'static str, name: &str) -> StoreResult<i32>;
    /// A 64-bit integer column.
    fn bigint(&self, table: &'static str, name: &str) -> StoreResult<i64>;
    /// A binary column.
    fn bytes(&self, table: &'static str, name: &str) -> StoreResult<Vec<u8>>;
    /// A boolean (an `EXISTS`, say).
    fn flag(&self, table: &'static str, name: &str) -> StoreResult<bool>;
    /// A JSON column (`jsonb` in PostgreSQL, TEXT holding JSON in SQLite).
    fn json(&self, table: &'static str, name: &str) -> StoreResult<Value>;
}

impl<R> PortableColumns for R
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Value: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, table: &'static str, name: &str) -> StoreResult<String> {
        column(self, table, name)
    }

    fn optional_text(&self, table: &'static str, name: &str) -> StoreResult<Option<String>> {
        column(self, table, name)
    }

    fn int(&self, table: &'static str, name: &str) -> StoreResult<i32> {
        column(self, table, name)
    }

    fn bigint(&self, table: &'static str, name: &str) -> StoreResult<i64> {
        column(self, table, name)
    }

    fn bytes(&self, table: &'static str, name: &str) -> StoreResult<Vec<u8>> {
        column(self, table, name)
    }

    fn flag(&self, table: &'static str, name: &str) -> StoreResult<bool> {
        column(self, table, name)
    }

    fn json(&self, table: &'static str, name: &str) -> StoreResult<Value> {
        column(self, table, name)
    }
}

/// A row of one of the stores: the columns whose storage differs between the databases.
pub(super) trait StoredRow: PortableColumns {
    /// A nullable timestamp column.
    fn optional_time(&self, table: &'static str, name: &str) -> StoreResult<Option<DateTime<Utc>>>;

    /// An id column.
    fn id(&self, table: &'static str, name: &str) -> StoreResult<Uuid>;

    /// A NOT NULL timestamp column.
    fn time(&self, table: &'static str, name: &str) -> StoreResult<DateTime<Utc>> {
        self.optional_time(table, name)?
            .ok_or_else(|| corrupt(table, format!("column {name} is NULL")))
    }
}

/// The columns of `runs`, in the order [`decode_run`] reads them; every statement that returns
/// a run selects these.
macro_rules! run_columns {
    () => {
        "id, job_name, kind, \"trigger\", fire_time, unique_key, priority, state, attempt, \
         max_attempts, run_after, retry_initial_secs, retry_max_secs, lease_owner, \
         lease_expires_at, rescues, created_at, started_at, finished_at, last_error, progress"
    };
}
pub(super) use run_columns;

/// The columns of `credentials`, in the order [`decode_credential`] reads them (and
/// `put_credential` writes them).
macro_rules! credential_columns {
    () => {
        "id, name, kind, tier, tenant, key_version, nonce, ciphertext, owner_gid, owner_name, \
         owner_email, state, created_at, last_used_at, last_validated_at, last_error"
    };
}
pub(super) use credential_columns;

/// The columns of `schedules`, as [`decode_schedule`] reads them.
macro_rules! schedule_columns {
    () => {
        "job_name, next_fire_at, last_fire_at, definition"
    };
}
pub(super) use schedule_columns;

/// The columns of `replicas`, as [`decode_replica`] reads them.
macro_rules! replica_columns {
    () => {
        "owner, job_set, jobs, version, started_at, seen_at, expires_at, job_set_since"
    };
}
pub(super) use replica_columns;

/// Decodes a `leases` row (`name, owner, expires_at`).
pub(super) fn decode_lease(row: &impl StoredRow) -> StoreResult<LeaseRow> {
    const T: &str = "leases";
    Ok(LeaseRow {
        name: row.text(T, "name")?,
        owner: row.text(T, "owner")?,
        expires_at: row.time(T, "expires_at")?,
    })
}

/// Decodes a `job_controls` row (`job_name, paused_at, paused_by`).
pub(super) fn decode_job_control(row: &impl StoredRow) -> StoreResult<JobControl> {
    const T: &str = "job_controls";
    Ok(JobControl {
        job_name: row.text(T, "job_name")?,
        paused_at: row.time(T, "paused_at")?,
        paused_by: row.text(T, "paused_by")?,
    })
}

/// Decodes a `replicas` row of [`replica_columns!`].
pub(super) fn decode_replica(row: &impl StoredRow) -> StoreResult<ReplicaRow> {
    const T: &str = "replicas";
    Ok(ReplicaRow {
        owner: row.text(T, "owner")?,
        job_set: row.text(T, "job_set")?,
        jobs: row.int(T, "jobs")?,
        version: row.text(T, "version")?,
        started_at: row.time(T, "started_at")?,
        seen_at: row.time(T, "seen_at")?,
        expires_at: row.time(T, "expires_at")?,
        job_set_since: row.time(T, "job_set_since")?,
    })
}

/// Decodes a `runs` row of [`run_columns!`].
pub(super) fn decode_run(row: &impl StoredRow) -> StoreResult<Run> {
    const T: &str = "runs";
    Ok(Run {
        id: row.id(T, "id")?,
        job_name: row.text(T, "job_name")?,
        kind: row.text(T, "kind")?,
        trigger: Trigger::from_str(&row.text(T, "trigger")?)?,
        fire_time: row.optional_time(T, "fire_time")?,
        unique_key: row.text(T, "unique_key")?,
        priority: row.int(T, "priority")?,
        state: RunState::from_str(&row.text(T, "state")?)?,
        attempt: row.int(T, "attempt")?,
        max_attempts: row.int(T, "max_attempts")?,
        run_after: row.time(T, "run_after")?,
        retry_initial_secs: row.bigint(T, "retry_initial_secs")?,
        retry_max_secs: row.bigint(T, "retry_max_secs")?,
        lease_owner: row.optional_text(T, "lease_owner")?,
        lease_expires_at: row.optional_time(T, "lease_expires_at")?,
        rescues: row.int(T, "rescues")?,
        created_at: row.time(T, "created_at")?,
        started_at: row.optional_time(T, "started_at")?,
        finished_at: row.optional_time(T, "finished_at")?,
        last_error: row.optional_text(T, "last_error")?,
        progress: row.json(T, "progress")?,
    })
}

/// Decodes a `credentials` row of [`credential_columns!`].
pub(super) fn decode_credential(row: &impl StoredRow) -> StoreResult<CredentialRow> {
    const T: &str = "credentials";
    Ok(CredentialRow {
        id: row.id(T, "id")?,
        name: row.text(T, "name")?,
        kind: row.text(T, "kind")?,
        tier: row.text(T, "tier")?,
        tenant: row.optional_text(T, "tenant")?,
        key_version: row.int(T, "key_version")?,
        nonce: row.bytes(T, "nonce")?,
        ciphertext: row.bytes(T, "ciphertext")?,
        owner_gid: row.optional_text(T, "owner_gid")?,
        owner_name: row.optional_text(T, "owner_name")?,
        owner_email: row.optional_text(T, "owner_email")?,
        state: row.text(T, "state")?,
        created_at: row.time(T, "created_at")?,
        last_used_at: row.optional_time(T, "last_used_at")?,
        last_validated_at: row.optional_time(T, "last_validated_at")?,
        last_error: row.optional_text(T, "last_error")?,
    })
}

/// Decodes a `schedules` row of [`schedule_columns!`].
pub(super) fn decode_schedule(row: &impl StoredRow) -> StoreResult<ScheduleRow> {
    const T: &str = "schedules";
    Ok(ScheduleRow {
        job_name: row.text(T, "job_name")?,
        next_fire_at: row.time(T, "next_fire_at")?,
        last_fire_at: row.optional_time(T, "last_fire_at")?,
        definition: row.text(T, "definition")?,
    })
}

/// Decodes a row of the job-summaries query: `job_name`, `last_state`, `last_finished_at`,
/// `last_success_at`.
pub(super) fn decode_job_summary(row: &impl StoredRow) -> StoreResult<JobSummary> {
    const T: &str = "runs";
    Ok(JobSummary {
        job_name: row.text(T, "job_name")?,
        last_state: row
            .optional_text(T, "last_state")?
            .map(|state| RunState::from_str(&state))
            .transpose()?,
        last_finished_at: row.optional_time(T, "last_finished_at")?,
        last_success_at: row.optional_time(T, "last_success_at")?,
    })
}

/// Turns the rows of `SELECT state, COUNT(*) AS n … GROUP BY state` into a count for every state in [`RunState::ALL`]
/// order (zero where no row exists), as both stores report them.
pub(super) fn counts_in_state_order(rows: &[impl StoredRow]) -> StoreResult<Vec<(RunState, i64)>> {
    let mut counts: Vec<(RunState, i64)> = RunState::ALL.iter().map(|s| (*s, 0)).collect();
    for row in rows {
        let state: RunState = row.text("runs", "state")?.parse()?;
        let count = row.bigint("runs", "n")?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = count;
        }
    }
    Ok(counts)
}
