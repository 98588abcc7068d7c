//! The scheduler: turns job schedules into queued runs, exactly once per fire.
//!
//! The next fire of every job lives in the store, so restarts neither lose nor repeat fires.
//! Only the holder of the `scheduler` leader lease enqueues (several replicas may run one
//! scheduler each); even so, each fire is enqueued through [`Store::fire`], a compare-and-set on
//! the schedule row plus inserts guarded by the (job, fire time) unique constraint, so two
//! schedulers that both believe they lead still enqueue a fire once.
//!
//! Fires missed while the daemon was down are handled by the job's misfire policy and recorded
//! (as `skipped` runs when not run). A fire that comes while the job's previous run is still
//! active is handled by its overlap policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::jobs::{JobSpec, MisfirePolicy, NamedKind, OverlapPolicy};
use crate::health::{FaultLog, Health};
use crate::store::{
    JobControl, NewRun, RunState, ScheduleRow, Store, StoreError, Trigger, priority,
};

/// The scheduler's key in [`Health`]: its ticks read and write the database.
pub const HEALTH_COMPONENT: &str = "store (scheduler)";

/// Name of the scheduler's leader lease.
pub const LEADER_LEASE: &str = "scheduler";

/// Most fires looked at for one job in one tick (bounds the work after a very long downtime).
pub const MAX_FIRES_PER_TICK: usize = 10_000;

/// How late a fire may be and still count as on time rather than missed.
pub const ON_TIME_GRACE: Duration = Duration::from_secs(60);

/// The set of jobs currently in force, swapped whole on reload. `K` is the kind registry's enum
/// (`crate::jobs::Kind`); the scheduler needs only each kind's name.
pub type JobSet<K> = Arc<Vec<JobSpec<K>>>;

/// What one tick did, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Whether this scheduler held the leader lease.
    pub leader: bool,
    /// Runs enqueued for on-time fires.
    pub enqueued: usize,
    /// Runs enqueued for missed fires.
    pub misfires_run: usize,
    /// Fires recorded as skipped (misfire or overlap policy).
    pub skipped: usize,
    /// Schedules another scheduler advanced first (lost compare-and-set).
    pub conflicts: usize,
}

/// Plans the runs for the fires of `job` that are due at `now`, given the stored schedule, with
/// fires up to [`ON_TIME_GRACE`] late counting as on time. Pure: the caller writes the plan with
/// [`Store::fire`].
pub fn plan<K: NamedKind>(
    job: &JobSpec<K>,
    stored: Option<&ScheduleRow>,
    now: DateTime<Utc>,
    previous_active: bool,
) -> Plan {
    plan_within(job, stored, now, previous_active, ON_TIME_GRACE)
}

/// [`plan`] with fires up to `on_time_window` late counting as on time: each is enqueued as a
/// scheduled run (the overlap policy still applies), and only older ones go to the misfire
/// policy. The scheduler widens the window by its leader lease, so fires that fell due while
/// leadership moved between replicas are not mistaken for fires missed while the daemon was
/// down (see ARCHITECTURE.md, "Scheduler and failover").
pub fn plan_within<K: NamedKind>(
    job: &JobSpec<K>,
    stored: Option<&ScheduleRow>,
    now: DateTime<Utc>,
    previous_active: bool,
    on_time_window: Duration,
) -> Plan {
    let definition = job.schedule_definition();
    let fresh = stored.is_none_or(|row| row.definition != definition);
    if fresh {
        // A new or changed schedule starts from now: nothing was missed under a definition
        // that did not exist.
        let next = job.next_fire_after(now);
        return Plan {
            next_fire_at: next,
            last_fire_at: stored.and_then(|row| row.last_fire_at),
            runs: Vec::new(),
        };
    }
    let Some(row) = stored else {
        return Plan::default();
    };
    if row.next_fire_at > now {
        return Plan {
            next_fire_at: Some(row.next_fire_at),
            last_fire_at: row.last_fire_at,
            runs: Vec::new(),
        };
    }
    let mut fires = Vec::new();
    let mut cursor = Some(row.next_fire_at);
    while let Some(fire) = cursor {
        if fire > now || fires.len() >= MAX_FIRES_PER_TICK {
            break;
        }
        fires.push(fire);
        cursor = job.next_fire_after(fire);
    }
    // When the cap cut the catch-up short, the next tick continues from where this one
    // stopped, so no missed fire goes unrecorded.
    let next_fire_at = match cursor {
        Some(next) => Some(next),
        None => job.next_fire_after(now),
    };
    let window = chrono::Duration::from_std(on_time_window).unwrap_or_default();
    let first_on_time = fires
        .iter()
        .position(|fire| now - *fire <= window)
        .unwrap_or(fires.len());
    let (missed, on_time) = fires.split_at(first_on_time);
    let (missed, on_time) = (missed.to_vec(), on_time.to_vec());
    let mut runs = Vec::new();
    let mut to_run: Vec<(DateTime<Utc>, Trigger)> = Vec::new();
    let mut to_skip: Vec<(DateTime<Utc>, String)> = Vec::new();
    match job.misfire {
        MisfirePolicy::Skip => {
            for fire in &missed {
                to_skip.push((
                    *fire,
                    "missed while the daemon was down (misfire = skip)".into(),
                ));
            }
        }
        MisfirePolicy::Once => {
            // A catch-up cut short by the cap runs nothing yet: a later tick holds later fires.
            let capped = cursor.is_some_and(|next| next <= now);
            let run_one = on_time.is_empty() && !capped;
            for (i, fire) in missed.iter().enumerate() {
                if run_one && i + 1 == missed.len() {
                    to_run.push((*fire, Trigger::Misfire));
                } else {
                    to_skip.push((
                        *fire,
                        "missed while the daemon was down; misfire = once runs only the latest"
                            .into(),
                    ));
                }
            }
        }
        MisfirePolicy::All { max } => {
            let keep_from = missed.len().saturating_sub(max as usize);
            for (i, fire) in missed.iter().enumerate() {
                if i >= keep_from {
                    to_run.push((*fire, Trigger::Misfire));
                } else {
                    to_skip.push((
                        *fire,
                        format!("missed while the daemon was down; beyond misfire_max = {max}"),
                    ));
                }
            }
        }
    }
    for fire in on_time {
        to_run.push((fire, Trigger::Schedule));
    }
    let mut active = previous_active;
    for (fire, trigger) in to_run {
        if active && job.overlap == OverlapPolicy::Skip {
            to_skip.push((
                fire,
                "the previous run was still active (overlap = skip)".into(),
            ));
            continue;
        }
        runs.push(new_run(job, fire, trigger, RunState::Queued, None));
        active = true;
    }
    for (fire, note) in to_skip {
        runs.push(new_run(
            job,
            fire,
            Trigger::Misfire,
            RunState::Skipped,
            Some(note),
        ));
    }
    Plan {
        next_fire_at,
        last_fire_at: fires.last().copied().or(row.last_fire_at),
        runs,
    }
}

/// Holds a paused job's fires: every run the plan would queue is recorded as skipped instead,
/// with a note naming the pause, so the run history says why nothing ran (the schedule still
/// advances: resuming runs the next fire, not the ones held meanwhile).
pub fn hold_paused(mut plan: Plan, control: &JobControl) -> Plan {
    let note = format!(
        "the job is paused (by {} since {}); resume it on the status page to run its fires",
        control.paused_by,
        control
            .paused_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    for run in plan.runs.iter_mut().filter(|r| r.state == RunState::Queued) {
        run.state = RunState::Skipped;
        run.note = Some(note.clone());
    }
    plan
}

/// The unique key of a scheduled fire.
pub fn fire_key(fire: DateTime<Utc>) -> String {
    fire.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_run<K: NamedKind>(
    job: &JobSpec<K>,
    fire: DateTime<Utc>,
    trigger: Trigger,
    state: RunState,
    note: Option<String>,
) -> NewRun {
    NewRun {
        job_name: job.name.clone(),
        kind: job.kind.name().to_string(),
        trigger,
        fire_time: Some(fire),
        unique_key: fire_key(fire),
        priority: match trigger {
            Trigger::Manual => priority::MANUAL,
            Trigger::Schedule => priority::SCHEDULED,
            Trigger::Misfire => priority::MISFIRE,
        },
        run_after: fire,
        max_attempts: job.max_attempts as i32,
        retry_initial: job.retry_initial,
        retry_max: job.retry_max,
        state,
        note,
    }
}

/// The next fire of `job` after `now`: the one its stored schedule row names when the row is
/// of the job's current definition, else the next one its schedule gives (for `jobs list` and
/// the status page).
pub fn next_fire<K>(
    job: &JobSpec<K>,
    schedules: &[ScheduleRow],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedules
        .iter()
        .find(|s| s.job_name == job.name && s.definition == job.schedule_definition())
        .map(|s| s.next_fire_at)
        .or_else(|| job.next_fire_after(now))
}

/// A manual run of `job` (`jobs run NAME`), ahead of scheduled work.
pub fn manual_run<K: NamedKind>(job: &JobSpec<K>, now: DateTime<Utc>) -> NewRun {
    NewRun {
        job_name: job.name.clone(),
        kind: job.kind.name().to_string(),
        trigger: Trigger::Manual,
        fire_time: None,
        unique_key: format!("manual:{}", uuid::Uuid::new_v4()),
        priority: priority::MANUAL,
        run_after: now,
        max_attempts: job.max_attempts as i32,
        retry_initial: job.retry_initial,
        retry_max: job.retry_max,
        state: RunState::Queued,
        note: None,
    }
}

/// What to write for one job in one tick.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The next fire after this tick (None: the schedule never fires again).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The newest fire handled.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// Runs to insert (queued and skipped).
    pub runs: Vec<NewRun>,
}

/// Whether this process may lead the scheduler now. A replica whose job files are older than
/// another live replica's must not: it would drop the schedules of jobs it does not know yet
/// and keep firing jobs that were removed (ARCHITECTURE.md, "Scheduler and failover").
pub trait LeadershipGate: Send + Sync + std::fmt::Debug {
    /// False while another live replica runs a newer job set; the reason is logged.
    fn may_lead(&self) -> Result<(), String>;
}

/// The scheduler loop.
#[derive(Debug)]
pub struct Scheduler<K> {
    store: Arc<dyn Store>,
    clock: SharedClock,
    jobs: watch::Receiver<JobSet<K>>,
    owner: String,
    tick: Duration,
    lease: Duration,
    /// Unix millis of the last completed tick, read by `/readyz`.
    last_tick: Arc<AtomicI64>,
    /// Failing ticks (the database cannot be written): logged once, and at `/readyz`.
    faults: FaultLog,
    /// Stands down while this process's job files are stale.
    gate: Option<Arc<dyn LeadershipGate>>,
    /// Whether the last tick stood down (to log the change once).
    standing_down: std::sync::atomic::AtomicBool,
}

impl<K: NamedKind + Send + Sync + 'static> Scheduler<K> {
    /// A scheduler identified as `owner` (unique per process) over the job set in `jobs`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: SharedClock,
        jobs: watch::Receiver<JobSet<K>>,
        owner: String,
        tick: Duration,
        lease: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            jobs,
            owner,
            tick,
            lease,
            last_tick: Arc::new(AtomicI64::new(0)),
            faults: FaultLog::new(HEALTH_COMPONENT, "schedule fires", Health::new()),
            gate: None,
            standing_down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Leads only while `gate` allows it.
    pub fn with_leadership_gate(mut self, gate: Arc<dyn LeadershipGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Reports failing ticks to `health` (for `/readyz`).
    pub fn with_health(mut self, health: Health) -> Self {
        self.faults = FaultLog::new(HEALTH_COMPONENT, "schedule fires", health);
        self
    }

    /// Unix millis of the last completed tick (0 before the first), shared for health checks.
    pub fn last_tick(&self) -> Arc<AtomicI64> {
        self.last_tick.clone()
    }

    /// One pass: take or renew leadership, then enqueue every due fire.
    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        let now = self.clock.now();
        if let Some(gate) = &self.gate {
            match gate.may_lead() {
                Err(reason) => {
                    if !self.standing_down.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%reason, "Not leading the scheduler: another replica runs newer job files");
                    }
                    // A no-op unless this process holds the lease: the up-to-date replica
                    // takes over at its next tick.
                    self.store.release_lease(LEADER_LEASE, &self.owner).await?;
                    return Ok(TickReport::default());
                }
                Ok(()) => {
                    if self.standing_down.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            "Job files up to date again; this replica may lead the scheduler"
                        );
                    }
                }
            }
        }
        let leader = self
            .store
            .acquire_lease(LEADER_LEASE, &self.owner, now, self.lease)
            .await?;
        let mut report = TickReport {
            leader,
            ..TickReport::default()
        };
        if !report.leader {
            return Ok(report);
        }
        let jobs = self.jobs.borrow().clone();
        // Paused jobs (shared by every replica through the store): one query per tick.
        let paused: std::collections::HashMap<String, JobControl> = self
            .store
            .job_controls()
            .await?
            .into_iter()
            .map(|control| (control.job_name.clone(), control))
            .collect();
        // One query for every schedule per tick, not one per job: with thousands of jobs the
        // tick stays a single read plus work for the jobs that are due.
        let mut schedules: std::collections::HashMap<String, ScheduleRow> = self
            .store
            .list_schedules()
            .await?
            .into_iter()
            .map(|row| (row.job_name.clone(), row))
            .collect();
        for job in jobs.iter().filter(|job| job.enabled) {
            let stored = schedules.remove(&job.name);
            let due = stored.as_ref().is_none_or(|row| {
                row.next_fire_at <= now || row.definition != job.schedule_definition()
            });
            if !due {
                continue;
            }
            let active = self.store.has_active_run(&job.name).await?;
            let plan = plan_within(
                job,
                stored.as_ref(),
                now,
                active,
                ON_TIME_GRACE + self.lease,
            );
            let plan = match paused.get(&job.name) {
                Some(control) => {
                    let held = plan
                        .runs
                        .iter()
                        .filter(|r| r.state == RunState::Queued)
                        .count();
                    if held > 0 {
                        tracing::info!(job = %job.name, fires = held, paused_by = %control.paused_by, "Skipped the fires of a paused job");
                    }
                    hold_paused(plan, control)
                }
                None => plan,
            };
            let Some(next_fire_at) = plan.next_fire_at else {
                continue;
            };
            let row = ScheduleRow {
                job_name: job.name.clone(),
                next_fire_at,
                last_fire_at: plan.last_fire_at,
                definition: job.schedule_definition(),
            };
            let queued = plan
                .runs
                .iter()
                .filter(|r| r.state == RunState::Queued)
                .count();
            let misfires = plan
                .runs
                .iter()
                .filter(|r| r.state == RunState::Queued && r.trigger == Trigger::Misfire)
                .count();
            let skipped = plan.runs.len() - queued;
            let expected = stored.as_ref().map(|row| row.next_fire_at);
            if self.store.fire(&row, expected, plan.runs, now).await? {
                report.enqueued += queued - misfires;
                report.misfires_run += misfires;
                report.skipped += skipped;
                if queued + skipped > 0 {
                    tracing::info!(job = %job.name, queued, misfires, skipped, next_fire_at = %next_fire_at, "Scheduled fires");
                }
            } else {
                report.conflicts += 1;
            }
            let lag = (now - row.last_fire_at.unwrap_or(now))
                .num_milliseconds()
                .max(0) as f64
                / 1000.0;
            metrics::gauge!("asana_worker_scheduler_lag_seconds", "job" => job.name.clone())
                .set(lag);
        }
        // Schedules of jobs that were removed or disabled are forgotten, so a job enabled again
        // starts from its next fire instead of treating the whole pause as missed fires.
        for name in schedules.keys() {
            self.store.delete_schedule(name).await?;
            tracing::info!(job = %name, "Forgot the schedule of a removed or disabled job");
        }
        metrics::counter!("asana_worker_scheduler_fires_total", "outcome" => "enqueued")
            .increment(report.enqueued as u64);
        metrics::counter!("asana_worker_scheduler_fires_total", "outcome" => "misfire_run")
            .increment(report.misfires_run as u64);
        metrics::counter!("asana_worker_scheduler_fires_total", "outcome" => "skipped")
            .increment(report.skipped as u64);
        Ok(report)
    }

    /// Ticks until `shutdown`, then gives up leadership so another replica takes over at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            match self.tick().await {
                Ok(report) => {
                    self.faults.succeeded();
                    self.last_tick
                        .store(self.clock.now().timestamp_millis(), Ordering::Relaxed);
                    metrics::gauge!("asana_worker_scheduler_leader").set(if report.leader {
                        1.0
                    } else {
                        0.0
                    });
                }
                Err(error) => {
                    // Logged once per outage (then every minute), not once per tick.
                    self.faults.failed(&error);
                    metrics::counter!("asana_worker_scheduler_errors_total").increment(1);
                    continue;
                }
            }
        }
        if let Err(error) = self.store.release_lease(LEADER_LEASE, &self.owner).await {
            tracing::warn!(%error, "Could not release the scheduler lease; another replica takes over when it expires");
        }
    }
}
