//! The worker pool: claims due runs with a lease, keeps the lease alive while the job runs, maps
//! the job's outcome to a state change, and drains cleanly on shutdown.
//!
//! Outcomes are values ([`JobOutcome`]), each mapped to exactly one [`Transition`]: completed,
//! retry after a delay (exponential backoff with full jitter, parameters stored on the run),
//! snooze, failed permanently, or needs re-authorization. Exhausted attempts end in `dead` with
//! the last error. A worker that dies simply stops renewing its leases; any worker rescues those
//! runs once the lease has expired.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde_json::Value;
use std::sync::Mutex;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::health::{FaultLog, Health};
use crate::store::{ClaimFilter, Run, RunState, Store, StoreError, Transition, retry_delay};

pub mod credential_leases;

pub use credential_leases::CredentialLeases;

/// How a job attempt ended. Jobs return values, never panic for control flow.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// Done; the figures are kept on the run.
    Completed {
        /// Counts, bytes, cursors reached: whatever the job reports.
        progress: Value,
    },
    /// A transient failure: try again (after `delay`, or the run's backoff when None).
    Retry {
        /// Explicit delay (e.g. a `Retry-After`).
        delay: Option<Duration>,
        /// What went wrong.
        error: String,
    },
    /// Not now, and not a failure (e.g. an export is still being prepared): run again after
    /// `delay` without using up an attempt.
    Snooze {
        /// How long to wait.
        delay: Duration,
        /// Why.
        note: String,
    },
    /// A failure retrying cannot fix (bad settings, 403, 404).
    Failed {
        /// What went wrong and what to do.
        error: String,
    },
    /// The credential was revoked or expired: a person must re-authorize it.
    NeedsReauth {
        /// Which credential and what to run.
        error: String,
    },
    /// The job stopped because the worker is shutting down or lost its lease; it has
    /// checkpointed what it finished. The run goes back to the queue.
    Interrupted,
}

impl JobOutcome {
    /// Label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            JobOutcome::Completed { .. } => "completed",
            JobOutcome::Retry { .. } => "retry",
            JobOutcome::Snooze { .. } => "snooze",
            JobOutcome::Failed { .. } => "failed",
            JobOutcome::NeedsReauth { .. } => "needs_reauth",
            JobOutcome::Interrupted => "interrupted",
        }
    }
}

/// How long a run of a job this process does not define is left for a replica that defines it,
/// counted from the run's creation: long enough for job files to reach every replica (a
/// ConfigMap update, a reload), short enough that runs of a job removed everywhere end.
pub const UNKNOWN_JOB_GRACE: Duration = Duration::from_secs(600);

/// What a worker does with a run of a job its job set does not define. Replicas load job files
/// at different times, so another one may know the job: the run goes back to the queue without
/// using an attempt, and only once no replica has taken it for [`UNKNOWN_JOB_GRACE`] does it
/// fail (see ARCHITECTURE.md, "Scheduler and failover").
pub fn unknown_job_outcome(
    job_name: &str,
    created_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> JobOutcome {
    let age = (now - created_at).to_std().unwrap_or_default();
    if age < UNKNOWN_JOB_GRACE {
        tracing::warn!(
            job = %job_name,
            "This replica's job files do not define the job; leaving the run for a replica that does"
        );
        JobOutcome::Snooze {
            delay: Duration::from_secs(5),
            note: format!(
                "job {job_name:?} is not defined in the job files of the replica that claimed it; left for one that defines it"
            ),
        }
    } else {
        JobOutcome::Failed {
            error: format!(
                "job {job_name:?} is not defined in the job files of any replica that claimed its run in {} s; restore the job file or cancel the run",
                UNKNOWN_JOB_GRACE.as_secs()
            ),
        }
    }
}

/// Maps an outcome of attempt `run.attempt` to the state change, at `now`, with `jitter` in
/// 0..=1 for the backoff.
pub fn transition_for(
    run: &Run,
    outcome: JobOutcome,
    now: DateTime<Utc>,
    jitter: f64,
) -> Transition {
    match outcome {
        JobOutcome::Completed { progress } => Transition::Complete { progress },
        JobOutcome::Retry { delay, error } => {
            if run.attempt >= run.max_attempts {
                Transition::Dead {
                    error: format!(
                        "{error} (attempt {} of {}; no attempts left)",
                        run.attempt, run.max_attempts
                    ),
                }
            } else {
                let backoff = retry_delay(
                    run.attempt,
                    Duration::from_secs(run.retry_initial_secs.max(0) as u64),
                    Duration::from_secs(run.retry_max_secs.max(0) as u64),
                    jitter,
                );
                let delay = delay.map_or(backoff, |explicit| explicit.max(backoff));
                Transition::Retry {
                    run_after: now + chrono::Duration::from_std(delay).unwrap_or_default(),
                    error,
                }
            }
        }
        JobOutcome::Snooze { delay, note } => Transition::Snooze {
            run_after: now + chrono::Duration::from_std(delay).unwrap_or_default(),
            note,
        },
        JobOutcome::Failed { error } => Transition::Fail { error },
        JobOutcome::NeedsReauth { error } => Transition::NeedsReauth { error },
        JobOutcome::Interrupted => Transition::Release,
    }
}

/// What a job gets to run with.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The run being executed (attempt already counted).
    pub run: Run,
    /// Cancelled on shutdown, on timeout and when the lease is lost: stop at the next safe
    /// point, keep what is checkpointed, return [`JobOutcome::Interrupted`].
    pub cancel: CancellationToken,
    /// Checkpoints and progress, fenced by this run's lease.
    pub checkpoints: Checkpoints,
    /// Wall time (injected so tests control it).
    pub clock: SharedClock,
}

/// A run's access to its job's checkpoints, fenced by the run's lease: once the lease is lost
/// (the run was rescued by another worker) writes are refused, so a zombie cannot move a cursor.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    store: Arc<dyn Store>,
    clock: SharedClock,
    run_id: uuid::Uuid,
    owner: String,
    job_name: String,
}

/// Errors of checkpoint access.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This worker no longer holds the run's lease.
    #[error("the run's lease was lost (another worker took it over); stop without writing")]
    LeaseLost,
}

impl Checkpoints {
    /// The value under `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, CheckpointError> {
        Ok(self.store.get_checkpoint(&self.job_name, key).await?)
    }

    /// Stores `value` under `key`, only while the lease is held. Call it only after the sink
    /// durably holds the data the value covers.
    pub async fn put(&self, key: &str, value: Value) -> Result<(), CheckpointError> {
        let now = self.clock.now();
        if self
            .store
            .put_checkpoint(self.run_id, &self.owner, &self.job_name, key, value, now)
            .await?
        {
            Ok(())
        } else {
            Err(CheckpointError::LeaseLost)
        }
    }

    /// Records progress figures on the run (shown by `runs show` and `jobs run --wait`).
    pub async fn progress(&self, progress: Value) -> Result<(), CheckpointError> {
        if self
            .store
            .set_progress(self.run_id, &self.owner, progress)
            .await?
        {
            Ok(())
        } else {
            Err(CheckpointError::LeaseLost)
        }
    }
}

/// Runs one attempt of a run. The daemon's implementation dispatches on the job kind.
#[async_trait]
pub trait JobRunner: Send + Sync + std::fmt::Debug {
    /// Executes the attempt. Must return promptly with `Interrupted` once `ctx.cancel` fires.
    async fn run(&self, ctx: RunContext) -> JobOutcome;

    /// The longest an attempt of `job_name` may take (its `timeout`), None if the job is gone.
    fn timeout(&self, job_name: &str) -> Option<Duration>;
}

/// Worker pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Unique id of this worker process (lease owner).
    pub owner: String,
    /// Runs at once.
    pub concurrency: usize,
    /// Per-kind caps.
    pub per_kind: BTreeMap<String, usize>,
    /// Every kind name this process runs (the registry's), so that while some kinds are at
    /// their cap the others stay claimable. The worker knows no kind itself.
    pub kinds: Vec<String>,
    /// Lease length.
    pub lease: Duration,
    /// Lease renewal interval.
    pub heartbeat: Duration,
    /// Idle polling interval.
    pub poll_interval: Duration,
    /// Time running jobs get to stop on shutdown.
    pub shutdown_grace: Duration,
}

/// A run counted under a key (its kind, against the kind's cap; its job, for the credential
/// leases); gives the count back when dropped, also when the job panicked, so a crashing job
/// cannot use up its kind's slots for good.
#[derive(Debug)]
struct CountedRun {
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
    kind: String,
}

impl CountedRun {
    fn take(counts: &Arc<Mutex<BTreeMap<String, usize>>>, kind: &str) -> Self {
        *counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
        Self {
            counts: counts.clone(),
            kind: kind.to_string(),
        }
    }
}

impl Drop for CountedRun {
    fn drop(&mut self) {
        if let Some(count) = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&self.kind)
        {
            *count = count.saturating_sub(1);
        }
    }
}

/// The pool.
#[derive(Debug)]
pub struct WorkerPool {
    store: Arc<dyn Store>,
    clock: SharedClock,
    runner: Arc<dyn JobRunner>,
    settings: PoolSettings,
    running_by_kind: Arc<Mutex<BTreeMap<String, usize>>>,
    /// Failing claims (the database cannot be read or written): logged once, and at `/readyz`.
    claim_faults: FaultLog,
    /// Failing lease rescues, likewise.
    rescue_faults: FaultLog,
    /// With several replicas on one database: which credentials' jobs this process runs.
    credential_leases: Option<Arc<CredentialLeases>>,
    /// Runs in progress here by job (shared with `credential_leases`).
    running_by_job: Arc<Mutex<BTreeMap<String, usize>>>,
}

/// The worker pool's keys in [`Health`]: claims and rescues read and write the database.
pub const HEALTH_COMPONENTS: [&str; 2] = ["store (claims)", "store (lease rescue)"];

impl WorkerPool {
    /// A pool executing runs with `runner`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: SharedClock,
        runner: Arc<dyn JobRunner>,
        settings: PoolSettings,
    ) -> Self {
        Self {
            store,
            clock,
            runner,
            settings,
            running_by_kind: Arc::new(Mutex::new(BTreeMap::new())),
            claim_faults: FaultLog::new(HEALTH_COMPONENTS[0], "claim runs", Health::new()),
            rescue_faults: FaultLog::new(
                HEALTH_COMPONENTS[1],
                "rescue expired leases",
                Health::new(),
            ),
            credential_leases: None,
            running_by_job: Arc::default(),
        }
    }

    /// Claims only runs of jobs whose credential `leases` holds (PostgreSQL replicas; see
    /// ARCHITECTURE.md, "Replicas share a token's budget").
    pub fn with_credential_leases(mut self, leases: Arc<CredentialLeases>) -> Self {
        self.running_by_job = leases.running_jobs();
        self.credential_leases = Some(leases);
        self
    }

    /// Reports failing claims and rescues to `health` (for `/readyz`).
    pub fn with_health(mut self, health: Health) -> Self {
        self.claim_faults = FaultLog::new(HEALTH_COMPONENTS[0], "claim runs", health.clone());
        self.rescue_faults = FaultLog::new(HEALTH_COMPONENTS[1], "rescue expired leases", health);
        self
    }

    fn claimable_kinds(&self) -> Option<Vec<String>> {
        if self.settings.per_kind.is_empty() {
            return None;
        }
        let running = self
            .running_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Only restrict when some kind is at its cap; kinds without a cap stay claimable by
        // listing every capped kind that still has room plus a wildcard handled by the store
        // call below.
        let full: Vec<&String> = self
            .settings
            .per_kind
            .iter()
            .filter(|(kind, cap)| running.get(*kind).copied().unwrap_or(0) >= **cap)
            .map(|(kind, _)| kind)
            .collect();
        if full.is_empty() {
            return None;
        }
        Some(
            self.settings
                .kinds
                .iter()
                .filter(|k| !full.contains(k))
                .cloned()
                .collect(),
        )
    }

    /// Claims and runs jobs until `shutdown`; then stops claiming, tells running jobs to stop,
    /// waits up to the grace period for them to checkpoint and release their runs, and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let tracker = TaskTracker::new();
        let jobs_cancel = CancellationToken::new();
        let mut rescue_every = tokio::time::interval(self.settings.heartbeat);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = rescue_every.tick() => {
                    match self.store.rescue_expired(self.clock.now()).await {
                        Ok(count) => {
                            self.rescue_faults.succeeded();
                            if count > 0 {
                                tracing::warn!(count, "Rescued runs whose worker stopped renewing its lease");
                                metrics::counter!("asana_worker_lease_rescues_total").increment(count);
                            }
                        }
                        Err(error) => self.rescue_faults.failed(&error),
                    }
                    continue;
                }
                permit = slots.clone().acquire_owned() => {
                    let Ok(permit) = permit else { break };
                    let kinds = self.claimable_kinds();
                    let excluded_jobs = self
                        .credential_leases
                        .as_ref()
                        .map(|leases| leases.excluded_jobs())
                        .unwrap_or_default();
                    // Each claim gets its own lease owner: a run rescued and re-claimed by this
                    // same process must not let the old attempt's heartbeats and checkpoints
                    // pass the fence.
                    let claim_owner = format!("{}#{}", self.settings.owner, uuid::Uuid::new_v4().simple());
                    let claimed = self
                        .store
                        .claim(
                            &claim_owner,
                            self.clock.now(),
                            self.settings.lease,
                            ClaimFilter { kinds: kinds.as_deref(), excluded_jobs: &excluded_jobs },
                        )
                        .await;
                    if claimed.is_ok() {
                        self.claim_faults.succeeded();
                    }
                    match claimed {
                        Ok(Some(run)) => {
                            // Count the run against its kind before the next claim looks at
                            // the caps; `execute` gives the count back when it ends.
                            let kind_slot = CountedRun::take(&self.running_by_kind, &run.kind);
                            let job_slot = CountedRun::take(&self.running_by_job, &run.job_name);
                            let pool = self.clone();
                            let cancel = jobs_cancel.child_token();
                            // Every line logged while the run executes (the job's own, the
                            // client's, the sinks') carries these fields, and with trace export
                            // on, the W3C trace id of the run's trace.
                            let span = tracing::info_span!(
                                "run",
                                job = %run.job_name,
                                kind = %run.kind,
                                run_id = %run.id,
                                attempt = run.attempt,
                                trace_id = tracing::field::Empty,
                            );
                            crate::telemetry::record_trace_id(&span);
                            tracker.spawn(
                                async move {
                                    pool.execute(run, claim_owner, cancel).await;
                                    drop(kind_slot);
                                    drop(job_slot);
                                    drop(permit);
                                }
                                .instrument(span),
                            );
                        }
                        Ok(None) => {
                            drop(permit);
                            tokio::select! {
                                _ = shutdown.cancelled() => {}
                                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                            }
                        }
                        Err(error) => {
                            drop(permit);
                            // Logged once per outage (then every minute), not once per poll.
                            self.claim_faults.failed(&error);
                            tokio::select! {
                                _ = shutdown.cancelled() => {}
                                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                            }
                        }
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!(
            grace_secs = self.settings.shutdown_grace.as_secs(),
            "Stopping: running jobs checkpoint and release their runs"
        );
        jobs_cancel.cancel();
        tracker.close();
        if tokio::time::timeout(self.settings.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "Some jobs did not stop within the grace period; their leases expire and another worker resumes them"
            );
        }
    }

    /// Records a run's transition, retrying a failing store for as long as the lease would last
    /// (renewing it meanwhile), so a completed run is not later rescued and counted as lost.
    async fn record_outcome(
        &self,
        run_id: uuid::Uuid,
        owner: &str,
        job_name: &str,
        transition: Transition,
    ) {
        let deadline = tokio::time::Instant::now() + self.settings.lease;
        let mut delay = Duration::from_millis(100);
        loop {
            match self
                .store
                .finish(run_id, owner, transition.clone(), self.clock.now())
                .await
            {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(job = %job_name, %run_id, "Run finished after its lease was lost; its outcome was discarded");
                    return;
                }
                Err(error) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(job = %job_name, %run_id, %error, "Could not record the outcome of a run; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    let _ = self
                        .store
                        .heartbeat(run_id, owner, self.clock.now(), self.settings.lease)
                        .await;
                }
                Err(error) => {
                    tracing::error!(job = %job_name, %run_id, %error, "Could not record the outcome of a run; its lease will expire and it will be retried");
                    return;
                }
            }
        }
    }

    /// Runs one claimed run to its transition.
    async fn execute(&self, run: Run, owner: String, cancel: CancellationToken) {
        let kind = run.kind.clone();
        metrics::gauge!("asana_worker_runs_in_progress", "kind" => kind.clone()).increment(1.0);
        let started = tokio::time::Instant::now();
        let run_id = run.id;
        let job_name = run.job_name.clone();
        let attempt_cancel = cancel.child_token();
        let lease_lost = CancellationToken::new();
        let heartbeat = {
            let store = self.store.clone();
            let clock = self.clock.clone();
            let owner = owner.clone();
            let every = self.settings.heartbeat;
            let lease = self.settings.lease;
            let attempt_cancel = attempt_cancel.clone();
            let lease_lost = lease_lost.clone();
            async move {
                let mut ticker = tokio::time::interval(every);
                ticker.tick().await;
                let mut renewed = clock.now();
                loop {
                    ticker.tick().await;
                    let now = clock.now();
                    if now - renewed > chrono::Duration::from_std(lease).unwrap_or_default() {
                        tracing::warn!(%run_id, "Could not renew the lease for longer than it lasts; stopping the run so that the rescuing worker alone owns it");
                        lease_lost.cancel();
                        attempt_cancel.cancel();
                        return;
                    }
                    match store.heartbeat(run_id, &owner, now, lease).await {
                        Ok(true) => renewed = now,
                        Ok(false) => {
                            tracing::warn!(%run_id, "Lost the lease of a run (another worker rescued it); stopping it");
                            lease_lost.cancel();
                            attempt_cancel.cancel();
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(%error, %run_id, "Could not renew a lease; will retry")
                        }
                    }
                }
            }
        };
        let ctx = RunContext {
            run: run.clone(),
            cancel: attempt_cancel.clone(),
            checkpoints: Checkpoints {
                store: self.store.clone(),
                clock: self.clock.clone(),
                run_id,
                owner: owner.clone(),
                job_name: job_name.clone(),
            },
            clock: self.clock.clone(),
        };
        let timeout = self.runner.timeout(&job_name);
        let outcome = {
            tracing::info!("Starting run");
            let runner = self.runner.clone();
            let attempt = async {
                match timeout {
                    None => unknown_job_outcome(&job_name, run.created_at, self.clock.now()),
                    Some(limit) => match tokio::time::timeout(limit, runner.run(ctx)).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            attempt_cancel.cancel();
                            JobOutcome::Retry {
                                delay: None,
                                error: format!(
                                    "timed out after {}s (the job's timeout)",
                                    limit.as_secs()
                                ),
                            }
                        }
                    },
                }
            };
            tokio::select! {
                outcome = attempt => outcome,
                _ = heartbeat => JobOutcome::Interrupted,
            }
        };
        let elapsed = started.elapsed();
        let label = outcome.label();
        let jitter: f64 = rand::rng().random();
        let transition = transition_for(&run, outcome.clone(), self.clock.now(), jitter);
        let state_label = match &transition {
            Transition::Complete { .. } => RunState::Completed,
            Transition::Retry { .. } => RunState::Retrying,
            Transition::Snooze { .. } | Transition::Release => RunState::Queued,
            Transition::Fail { .. } => RunState::Failed,
            Transition::Dead { .. } => RunState::Dead,
            Transition::NeedsReauth { .. } => RunState::NeedsReauth,
            Transition::Cancel { .. } => RunState::Cancelled,
        };
        if lease_lost.is_cancelled() {
            tracing::warn!(job = %job_name, %run_id, "Run abandoned after losing its lease; the rescuing worker owns it now");
        } else {
            self.record_outcome(run_id, &owner, &job_name, transition)
                .await;
        }
        match &outcome {
            JobOutcome::Completed { .. } => {
                tracing::info!(job = %job_name, %run_id, elapsed_ms = elapsed.as_millis() as u64, "Run completed");
                metrics::gauge!("asana_worker_last_success_timestamp_seconds", "job" => job_name.clone())
                    .set(self.clock.now().timestamp() as f64);
            }
            JobOutcome::Retry { error, .. } => {
                tracing::warn!(job = %job_name, %run_id, %error, state = %state_label, "Run attempt failed")
            }
            JobOutcome::Snooze { note, .. } => {
                tracing::info!(job = %job_name, %run_id, %note, "Run snoozed")
            }
            JobOutcome::Failed { error } => {
                tracing::error!(job = %job_name, %run_id, %error, "Run failed permanently")
            }
            JobOutcome::NeedsReauth { error } => {
                tracing::error!(job = %job_name, %run_id, %error, "Run needs re-authorization of its credential")
            }
            JobOutcome::Interrupted => {
                tracing::info!(job = %job_name, %run_id, "Run interrupted; released to the queue")
            }
        }
        metrics::counter!("asana_worker_runs_total", "job" => job_name.clone(), "kind" => kind.clone(), "outcome" => label).increment(1);
        metrics::histogram!("asana_worker_run_duration_seconds", "job" => job_name, "kind" => kind.clone()).record(elapsed.as_secs_f64());
        metrics::gauge!("asana_worker_runs_in_progress", "kind" => kind.clone()).decrement(1.0);
    }
}
