//! The durable queue and state of the daemon: schedules, runs, checkpoints and the scheduler's
//! leader lease, behind one [`Store`] trait with a SQLite implementation (the default) and a
//! PostgreSQL one (for several replicas). Both run the same statements (`sql.rs`, rows decoded
//! by `rows.rs`) and pass the same conformance suite (`tests/store_conformance.rs`); each keeps
//! only how it reaches its database, how it stores timestamps and ids, and how it locks.
//!
//! The database is the queue: uniqueness of a fire is a constraint, claims are atomic
//! (`BEGIN IMMEDIATE` + `UPDATE … RETURNING` on SQLite, `FOR UPDATE SKIP LOCKED` on PostgreSQL),
//! leases let another worker rescue the runs of a crashed one, and retry parameters live on the
//! row.

pub mod bench;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not one we support.
    #[error("unsupported database URL {0:?}; use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// Connecting or a query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}; the database may be newer than this binary")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database's schema is not this build's, and this command does not migrate.
    #[error("{}", schema_mismatch(status))]
    SchemaMismatch {
        /// How it differs.
        status: SchemaStatus,
    },
    /// A row holds a value this binary does not understand.
    #[error("corrupt row in {table}: {message}; inspect the database or restore a backup")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A file-system problem around the database file.
    #[error("cannot prepare database file {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How a database's schema compares with the migrations a build carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaStatus {
    /// No schema yet: a fresh database.
    Empty,
    /// Every migration of this build is applied, and no other.
    Current,
    /// Some of this build's migrations are not applied yet.
    Older {
        /// The newest migration applied.
        database: i64,
        /// The newest migration of this build.
        build: i64,
    },
    /// The database carries migrations this build does not know: a newer release applied them.
    Newer {
        /// The newest migration applied.
        database: i64,
        /// The newest migration of this build.
        build: i64,
    },
}

fn schema_mismatch(status: &SchemaStatus) -> String {
    match status {
        SchemaStatus::Older { database, build } => format!(
            "the database schema is older than this asana-worker (migration {database}, this build needs {build}); \
             run `asana-worker migrate` (or start the daemon, `asana-worker run`, which migrates) \
             once every replica runs this release"
        ),
        SchemaStatus::Newer { database, build } => format!(
            "the database schema is newer than this asana-worker (migration {database}, this build knows up to {build}); \
             use the asana-worker release the daemons run, or a newer one"
        ),
        SchemaStatus::Empty | SchemaStatus::Current => "the database schema matches".into(),
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// State of a run. Stored as text with a CHECK constraint listing exactly these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for `run_after`, then for a worker.
    Queued,
    /// Claimed by a worker holding a lease.
    Running,
    /// An attempt failed; waiting for `run_after` to try again.
    Retrying,
    /// Finished successfully.
    Completed,
    /// Failed permanently (the outcome said retrying cannot help).
    Failed,
    /// Every attempt failed.
    Dead,
    /// The credential was revoked or expired; a person must re-authorize it.
    NeedsReauth,
    /// Cancelled before it finished.
    Cancelled,
    /// Not run: the overlap or misfire policy skipped this fire (kept for the record).
    Skipped,
}

impl RunState {
    /// Every state, in a stable order (for metrics and CHECK constraints).
    pub const ALL: [RunState; 9] = [
        RunState::Queued,
        RunState::Running,
        RunState::Retrying,
        RunState::Completed,
        RunState::Failed,
        RunState::Dead,
        RunState::NeedsReauth,
        RunState::Cancelled,
        RunState::Skipped,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Retrying => "retrying",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Dead => "dead",
            RunState::NeedsReauth => "needs_reauth",
            RunState::Cancelled => "cancelled",
            RunState::Skipped => "skipped",
        }
    }

    /// Whether the run will not change any more.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RunState::Queued | RunState::Running | RunState::Retrying
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt {
                table: "runs",
                message: format!("unknown run state {text:?}"),
            })
    }
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A scheduled fire.
    Schedule,
    /// A fire missed while the daemon was down, run by the misfire policy.
    Misfire,
    /// `jobs run NAME`.
    Manual,
}

impl Trigger {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Misfire => "misfire",
            Trigger::Manual => "manual",
        }
    }
}

impl FromStr for Trigger {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "schedule" => Ok(Trigger::Schedule),
            "misfire" => Ok(Trigger::Misfire),
            "manual" => Ok(Trigger::Manual),
            other => Err(StoreError::Corrupt {
                table: "runs",
                message: format!("unknown trigger {other:?}"),
            }),
        }
    }
}

/// Priority of a run: manual work first, then scheduled work, then backfills.
pub mod priority {
    /// `jobs run NAME`.
    pub const MANUAL: i32 = 100;
    /// Scheduled fires.
    pub const SCHEDULED: i32 = 50;
    /// Catch-up of missed fires.
    pub const MISFIRE: i32 = 40;
}

/// A run to enqueue.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Job name.
    pub job_name: String,
    /// Job kind (for per-kind concurrency).
    pub kind: String,
    /// Why.
    pub trigger: Trigger,
    /// The scheduled fire time this run is for (None for manual runs).
    pub fire_time: Option<DateTime<Utc>>,
    /// Uniqueness key within the job: the fire time for scheduled runs, a fresh id for manual
    /// ones. The database rejects a second run with the same (job, key).
    pub unique_key: String,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this time.
    pub run_after: DateTime<Utc>,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Initial state: `Queued`, or `Skipped` to record a fire the policy skipped.
    pub state: RunState,
    /// Why it was skipped, when it was.
    pub note: Option<String>,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Id.
    pub id: Uuid,
    /// Job name.
    pub job_name: String,
    /// Job kind.
    pub kind: String,
    /// Why it exists.
    pub trigger: Trigger,
    /// Scheduled fire time.
    pub fire_time: Option<DateTime<Utc>>,
    /// Uniqueness key within the job.
    pub unique_key: String,
    /// Priority.
    pub priority: i32,
    /// State.
    pub state: RunState,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Not before this time.
    pub run_after: DateTime<Utc>,
    /// First retry delay (seconds).
    pub retry_initial_secs: i64,
    /// Longest retry delay (seconds).
    pub retry_max_secs: i64,
    /// Worker holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease runs out unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// How many times a lease of this run expired and it was rescued.
    pub rescues: i32,
    /// Enqueued at.
    pub created_at: DateTime<Utc>,
    /// Last attempt started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last error or note.
    pub last_error: Option<String>,
    /// Progress and result figures reported by the job (counts, bytes, …).
    pub progress: Value,
}

/// How a claimed run ends (or pauses): the worker maps each job outcome to one of these.
#[derive(Debug, Clone)]
pub enum Transition {
    /// Done. `progress` is the final figures.
    Complete {
        /// Final figures.
        progress: Value,
    },
    /// Try again at `run_after` (the attempt counts).
    Retry {
        /// When.
        run_after: DateTime<Utc>,
        /// Why the attempt failed.
        error: String,
    },
    /// Not now: run again at `run_after` without using up an attempt.
    Snooze {
        /// When.
        run_after: DateTime<Utc>,
        /// Why.
        note: String,
    },
    /// Failed permanently.
    Fail {
        /// Why.
        error: String,
    },
    /// Failed and no attempts are left.
    Dead {
        /// Why.
        error: String,
    },
    /// The credential needs re-authorization.
    NeedsReauth {
        /// Why.
        error: String,
    },
    /// Shutdown: give the run back to the queue, the attempt not counted.
    Release,
    /// Cancelled by an operator.
    Cancel {
        /// Why.
        note: String,
    },
}

/// Which due runs a worker may claim. The default claims any.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaimFilter<'a> {
    /// Only runs of these kinds, when given (kinds at their per-process cap are left out);
    /// `Some(&[])` claims nothing.
    pub kinds: Option<&'a [String]>,
    /// Never runs of these jobs: their credential is held by another replica (ARCHITECTURE.md,
    /// "Replicas share a token's budget").
    pub excluded_jobs: &'a [String],
}

/// A named lease as stored (the scheduler's leadership, a credential's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    /// The lease's name (`scheduler`, `credential:NAME`).
    pub name: String,
    /// Who holds or last held it.
    pub owner: String,
    /// When it expires; a released lease keeps its row with `expires_at` at the moment its
    /// holder last used what it guards, so the next holder knows how recent that use was.
    pub expires_at: DateTime<Utc>,
}

/// A running daemon process as it announces itself to the others (PostgreSQL replicas, or one
/// SQLite daemon): what its job files say and when it was last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaRow {
    /// The process's lease owner id (`host:pid:random`).
    pub owner: String,
    /// The fingerprint of the job set it runs (`jobs::job_set_version`).
    pub job_set: String,
    /// How many jobs that set has.
    pub jobs: i32,
    /// The build's version.
    pub version: String,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub seen_at: DateTime<Utc>,
    /// When it counts as gone without another heartbeat.
    pub expires_at: DateTime<Utc>,
    /// Since when it has run this job set (its last reload).
    pub job_set_since: DateTime<Utc>,
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this job.
    pub job_name: Option<String>,
    /// Only these states.
    pub states: Vec<RunState>,
    /// Only runs created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Only runs created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// An operator's pause of a job, shared by every replica through the database: the scheduler
/// records the job's fires as skipped runs while it holds (the status page pauses and resumes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobControl {
    /// The paused job.
    pub job_name: String,
    /// When it was paused.
    pub paused_at: DateTime<Utc>,
    /// Who paused it (the status page's session or `bearer token`), for the record.
    pub paused_by: String,
}

/// Where a schedule stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleRow {
    /// Job name.
    pub job_name: String,
    /// Next fire time the scheduler will enqueue.
    pub next_fire_at: DateTime<Utc>,
    /// Last fire time enqueued (or skipped).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// A fingerprint of the schedule definition; a change resets `next_fire_at`.
    pub definition: String,
}

/// Last outcome of a job, for `jobs list` and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// Job name.
    pub job_name: String,
    /// State of its newest run.
    pub last_state: Option<RunState>,
    /// When its newest run finished.
    pub last_finished_at: Option<DateTime<Utc>>,
    /// When a run of it last completed.
    pub last_success_at: Option<DateTime<Utc>>,
}

/// A stored credential. The token is only ever here sealed (`nonce` + `ciphertext` under the
/// master key `key_version`, bound to `id`); see `credentials::crypto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    /// Id (the associated data of the ciphertext).
    pub id: Uuid,
    /// Name jobs refer to; unique.
    pub name: String,
    /// `service_account`, `pat` or `oauth`.
    pub kind: String,
    /// `free` or `paid`.
    pub tier: String,
    /// Who the credential is for (a team or customer label), if anyone.
    pub tenant: Option<String>,
    /// Version of the master key that sealed the token.
    pub key_version: i32,
    /// Nonce.
    pub nonce: Vec<u8>,
    /// Sealed token.
    pub ciphertext: Vec<u8>,
    /// Asana user behind the token, once validated.
    pub owner_gid: Option<String>,
    /// Their name.
    pub owner_name: Option<String>,
    /// Their email.
    pub owner_email: Option<String>,
    /// `active`, `refreshing`, `expired`, `revoked` or `error`.
    pub state: String,
    /// Added at.
    pub created_at: DateTime<Utc>,
    /// Last used by a job.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Last checked against Asana.
    pub last_validated_at: Option<DateTime<Utc>>,
    /// Last problem seen (never contains the token).
    pub last_error: Option<String>,
}

/// The states a stored credential can be in (the CHECK constraint lists exactly these).
pub const CREDENTIAL_STATES: [&str; 5] = ["active", "refreshing", "expired", "revoked", "error"];

/// A credential's status after a check against Asana.
#[derive(Debug, Clone, Default)]
pub struct CredentialStatus {
    /// One of [`CREDENTIAL_STATES`].
    pub state: String,
    /// Asana user gid.
    pub owner_gid: Option<String>,
    /// Their name.
    pub owner_name: Option<String>,
    /// Their email.
    pub owner_email: Option<String>,
    /// When it was checked.
    pub validated_at: Option<DateTime<Utc>>,
    /// What went wrong, if anything.
    pub last_error: Option<String>,
}

/// One row re-sealed by key rotation; applied only while the row is still sealed under
/// `from_version` (a concurrent `creds add` replacing it wins).
#[derive(Debug, Clone)]
pub struct Reencrypted {
    /// Row id.
    pub id: Uuid,
    /// The version it was read under.
    pub from_version: i32,
    /// New version.
    pub key_version: i32,
    /// New nonce.
    pub nonce: Vec<u8>,
    /// New ciphertext.
    pub ciphertext: Vec<u8>,
}

/// What `enqueue` did.
#[derive(Debug, Clone)]
pub enum Enqueued {
    /// A new run.
    Inserted(Box<Run>),
    /// A run with the same (job, unique key) existed; nothing was added.
    Duplicate,
}

/// The daemon's durable state. Every method is atomic.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;

    /// The database's size in bytes (SQLite: its pages; PostgreSQL: `pg_database_size`), for
    /// the `asana_worker_database_size_bytes` gauge and its disk-full alert.
    async fn database_size_bytes(&self) -> StoreResult<u64>;

    /// How the database's schema compares with this build's migrations.
    async fn schema_status(&self) -> StoreResult<SchemaStatus>;

    /// Checks the database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Adds a run unless one with the same (job, unique key) exists.
    async fn enqueue(&self, run: NewRun, now: DateTime<Utc>) -> StoreResult<Enqueued>;

    /// Atomically advances a job's schedule from `expected_next` to `schedule.next_fire_at` and
    /// enqueues `runs` in the same transaction. Returns false (and changes nothing) when the
    /// stored next fire is no longer `expected_next` (another scheduler got there first).
    /// `expected_next = None` means the schedule row must not exist yet.
    async fn fire(
        &self,
        schedule: &ScheduleRow,
        expected_next: Option<DateTime<Utc>>,
        runs: Vec<NewRun>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Claims the best due run: highest priority, then oldest `run_after`; only what `filter`
    /// allows; never a second concurrent run of the same job. Sets state `running`, counts the
    /// attempt and takes a lease for `owner` until `now + lease`.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        filter: ClaimFilter<'_>,
    ) -> StoreResult<Option<Run>>;

    /// Renews a lease. False when `owner` no longer holds it (it was rescued).
    async fn heartbeat(
        &self,
        run_id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<bool>;

    /// Applies a transition to a run `owner` holds. False when the lease was lost.
    async fn finish(
        &self,
        run_id: Uuid,
        owner: &str,
        transition: Transition,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Returns runs whose lease expired before `now` to the queue (`retrying`, due now), or to
    /// `dead` when no attempts are left. Returns how many were rescued.
    async fn rescue_expired(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Like [`Store::rescue_expired`] for every `running` run, whatever its lease: for a daemon
    /// that knows no other process can hold one (it holds the SQLite database's daemon lock), so
    /// the runs of its crashed predecessor resume at once instead of after their leases.
    async fn rescue_running(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Records progress figures on a run `owner` holds.
    async fn set_progress(&self, run_id: Uuid, owner: &str, progress: Value) -> StoreResult<bool>;

    /// One run.
    async fn get_run(&self, run_id: Uuid) -> StoreResult<Option<Run>>;

    /// Runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>>;

    /// Whether a job has a run queued, retrying or running.
    async fn has_active_run(&self, job_name: &str) -> StoreResult<bool>;

    /// Run counts by state.
    async fn count_by_state(&self) -> StoreResult<Vec<(RunState, i64)>>;

    /// Last outcome of every job that has runs.
    async fn job_summaries(&self) -> StoreResult<Vec<JobSummary>>;

    /// A job's schedule.
    async fn get_schedule(&self, job_name: &str) -> StoreResult<Option<ScheduleRow>>;

    /// Every schedule.
    async fn list_schedules(&self) -> StoreResult<Vec<ScheduleRow>>;

    /// Removes the schedules of jobs that no longer exist.
    async fn delete_schedule(&self, job_name: &str) -> StoreResult<()>;

    /// Takes or renews the named lease (the scheduler's leadership) for `owner` until
    /// `now + ttl`. True when `owner` holds it afterwards.
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// Gives a named lease up (on shutdown) so another replica takes over at once.
    async fn release_lease(&self, name: &str, owner: &str) -> StoreResult<()>;

    /// Gives a named lease up, recording `last_use` (not later than now) as its expiry: the next
    /// holder reads it with [`Store::get_lease`] and knows how recently what the lease guards
    /// was used (a credential's requests still count in Asana's window for a minute).
    async fn hand_over_lease(
        &self,
        name: &str,
        owner: &str,
        last_use: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The named lease's row, held, expired or handed over; None if it never existed.
    async fn get_lease(&self, name: &str) -> StoreResult<Option<LeaseRow>>;

    /// Announces (or renews) a running process: its job set and liveness until `expires_at`.
    async fn announce_replica(&self, replica: &ReplicaRow) -> StoreResult<()>;

    /// The processes whose announcement has not expired at `now`, by owner.
    async fn live_replicas(&self, now: DateTime<Utc>) -> StoreResult<Vec<ReplicaRow>>;

    /// Removes a process's announcement (on shutdown), and those expired before `before`.
    async fn retire_replica(&self, owner: &str, before: DateTime<Utc>) -> StoreResult<()>;

    /// A job's checkpoint value under `key`.
    async fn get_checkpoint(&self, job_name: &str, key: &str) -> StoreResult<Option<Value>>;

    /// Stores a checkpoint, but only while `owner` still holds the lease of `run_id` (a rescued
    /// zombie must not move a checkpoint). False when the lease was lost.
    async fn put_checkpoint(
        &self,
        run_id: Uuid,
        owner: &str,
        job_name: &str,
        key: &str,
        value: Value,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Pauses a job for every replica; false (nothing changes) when it already was paused.
    async fn pause_job(&self, job_name: &str, by: &str, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Lifts a job's pause; false when it was not paused.
    async fn resume_job(&self, job_name: &str) -> StoreResult<bool>;

    /// The paused jobs, by name.
    async fn job_controls(&self) -> StoreResult<Vec<JobControl>>;

    /// Deletes terminal runs that finished before `before`. Returns how many.
    async fn prune_runs(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Stores a credential. With `replace`, a credential of the same name is replaced (in one
    /// transaction); without, an existing name leaves everything unchanged and returns false.
    async fn put_credential(&self, row: &CredentialRow, replace: bool) -> StoreResult<bool>;

    /// A credential by name.
    async fn get_credential(&self, name: &str) -> StoreResult<Option<CredentialRow>>;

    /// Every credential, by name.
    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>>;

    /// Deletes a credential. False when there was none of that name.
    async fn delete_credential(&self, name: &str) -> StoreResult<bool>;

    /// Records the outcome of a check. False when there is no credential of that name.
    async fn set_credential_status(
        &self,
        name: &str,
        status: &CredentialStatus,
    ) -> StoreResult<bool>;

    /// Replaces the sealed secret of the credential with id `id` (an OAuth refresh persisting its
    /// new tokens) and sets its state, clearing `last_error`. Keyed by id, not name, so a
    /// credential replaced meanwhile (`creds add --replace` gives a new id) is never overwritten
    /// with the old one's tokens. False when no row has that id.
    async fn update_credential_secret(
        &self,
        id: Uuid,
        key_version: i32,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
        state: &str,
    ) -> StoreResult<bool>;

    /// Records that a job used the credential.
    async fn touch_credential(&self, name: &str, at: DateTime<Utc>) -> StoreResult<()>;

    /// Applies a batch of re-sealed rows in one transaction. Returns how many rows changed
    /// (a row whose version moved meanwhile is left alone).
    async fn reencrypt_credentials(&self, batch: Vec<Reencrypted>) -> StoreResult<u64>;
}

/// Opens the store named by `url` and applies pending migrations (what `migrate` and `run` do): `sqlite://PATH` (created
/// with mode 0600 if missing), `sqlite::memory:` (tests), or `postgres://…`/`postgresql://…`.
/// Any other scheme is [`StoreError::UnsupportedUrl`].
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    let store = connect(url).await?;
    store.migrate().await?;
    Ok(store)
}

/// Connects to the store named by `url` without touching its schema.
async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    Ok(if url.starts_with("sqlite:") {
        Arc::new(sqlite::SqliteStore::connect(url).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(postgres::PgStore::connect(url).await?)
    } else {
        return Err(StoreError::UnsupportedUrl(redact_url(url)));
    })
}

/// Opens the store named by `url` for a command that must not change the schema under a
/// running fleet (every command but `migrate` and `run`): an empty database gets the schema
/// created, as there is no fleet yet; a database whose schema is older or newer than this
/// build is refused with [`StoreError::SchemaMismatch`], which says what to run.
pub async fn open_current(url: &str) -> StoreResult<Arc<dyn Store>> {
    let store = connect(url).await?;
    match store.schema_status().await? {
        SchemaStatus::Current => {}
        SchemaStatus::Empty => store.migrate().await?,
        status => return Err(StoreError::SchemaMismatch { status }),
    }
    Ok(store)
}

/// The file of a SQLite URL (`sqlite://PATH`, `sqlite:PATH`), None for `:memory:` and other
/// databases: what a daemon locks and a backup copies.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    sqlite::sqlite_path(url)
        .filter(|path| *path != ":memory:")
        .map(std::path::PathBuf::from)
}

/// Hides passwords in a database URL for logs and errors: the password of the user part (the
/// user part ends at the last `@` before the path) and any `password=` query value.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:****@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=****"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{}{authority}{tail}", &url[..scheme_end])
}

/// Delay before retry number `attempt` (1-based): exponential from `initial`, capped at `max`,
/// with full jitter from `jitter` in 0..=1 (the caller supplies randomness so this stays pure).
pub fn retry_delay(attempt: i32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 30) as u32;
    let base = initial
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(max);
    base.mul_f64(jitter.clamp(0.0, 1.0))
        .max(initial.min(max) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>().unwrap(), state);
        }
        assert!("exploded".parse::<RunState>().is_err());
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db/asana"),
            "postgres://app:****@db/asana"
        );
        assert_eq!(
            redact_url("postgres://app:p@ss@db:5432/asana"),
            "postgres://app:****@db:5432/asana"
        );
        assert_eq!(
            redact_url("postgres://db/asana?user=app&password=s3cret&sslmode=require"),
            "postgres://db/asana?user=app&password=****&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/asana"),
            "postgres://app@db/asana"
        );
        assert_eq!(redact_url("sqlite://x.sqlite"), "sqlite://x.sqlite");
        assert_eq!(redact_url("postgress://u:pw@h/d"), "postgress://u:****@h/d");
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let initial = Duration::from_secs(10);
        let max = Duration::from_secs(300);
        assert_eq!(retry_delay(1, initial, max, 1.0), Duration::from_secs(10));
        assert_eq!(retry_delay(3, initial, max, 1.0), Duration::from_secs(40));
        assert_eq!(retry_delay(20, initial, max, 1.0), max);
        // Full jitter, but never less than half the initial delay.
        assert_eq!(retry_delay(3, initial, max, 0.0), Duration::from_secs(5));
    }
}
