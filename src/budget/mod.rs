//! The per-token rate budget. Asana limits every token separately (requests per minute by tier,
//! 60 searches per minute, 50 concurrent reads, 15 concurrent writes, 5 concurrent export jobs
//! per user) and counts refused requests against the quota, so the cheapest 429 is the one never
//! provoked. Every request made with a token first takes a [`Permit`] from that token's
//! [`Budget`]; nothing bypasses it.
//!
//! How it decides:
//! - **Rate:** a request counts against the window from the moment its permit is granted until
//!   60 s (+ a small margin) after its response arrived. Asana counts it at the instant it
//!   arrives, which lies somewhere between those two, so counting it over the whole span means no
//!   more than the limit can ever land in one of Asana's windows, however requests queue in the
//!   client or the network. The cost is the request's latency, negligible next to 60 s.
//! - **Concurrency:** read and write slots held by the permit for the request's duration.
//! - **Cooldown:** a 429 pauses the whole token until its `Retry-After` has passed, for every job.
//!   Since the budget itself never overfills a window, a quota 429 means someone else spends the
//!   same token: the effective limit drops by 10 % per episode (3 % once the edge has been
//!   probed, below) and grows back by a twentieth of the limit per quiet window.
//! - **Meeting another client cheaply:** every request in flight when Asana's window fills comes
//!   back 429. So in the window's upper quarter, above the most it has held without a 429 (that
//!   level is forgotten every ten windows), the budget keeps only a few requests in flight
//!   (`CAUTIOUS_IN_FLIGHT`, or enough for 1.5 times the limit's rate at the observed latency);
//!   after a quota 429, above the level that fitted beside the other client, one at a time. A
//!   token shared with a script spending 20 % of it takes about a dozen 429s per 6,000 requests
//!   instead of a hundred (`bench budget`, scenario d).
//! - **Fairness:** waiters queue per job (FIFO) and jobs are served round-robin within a priority;
//!   higher priorities first. A waiter held back only by its class's slots lets others pass; a
//!   waiter held back by the rate stops the scan, so a large request (a batch costing 10) is not
//!   starved by a stream of small ones.
//! - **Time** is tokio's clock (`#[tokio::test(start_paused = true)]` drives it in tests), and
//!   `time_scale` divides every window and `Retry-After` for the simulator's fast time.
//!
//! Waiting is async and cancellable (a `CancellationToken`, or dropping the future).
//!
//! Metrics (all labelled `token` with the budget's name, never the secret):
//! - `asana_worker_budget_wait_seconds` (histogram; `class`, `priority`): time spent waiting for a permit.
//! - `asana_worker_budget_in_flight` (gauge; `class`): requests holding a permit.
//! - `asana_worker_budget_waiting` (gauge): callers waiting for a permit.
//! - `asana_worker_budget_utilization_ratio` (gauge): share of the effective per-window limit used in the
//!   current window, 0..=1.
//! - `asana_worker_budget_cooldowns_total` (counter; `cause` = `quota` | `other`): pauses (`quota`
//!   pauses also lower the effective limit).
//! - `asana_worker_budget_export_slots_in_use` (gauge; `user`): export jobs holding a slot.

mod registry;

pub use registry::{BudgetRegistry, ExportSlot};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Length of Asana's quota window, in (simulated) seconds.
pub const WINDOW_SECS: f64 = 60.0;

/// Windows of spending history a budget keeps (an hour against Asana).
pub const HISTORY_WINDOWS: usize = 60;

/// Requests in flight at least allowed while the window is more than three quarters used; the cap there
/// is this or what keeps 1.5 times the limit's rate flowing at the latency observed, whichever
/// is more (see `Shared::cautious_in_flight`).
pub const CAUTIOUS_IN_FLIGHT: usize = 4;

/// Errors from waiting for budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The caller's cancellation token fired while it waited.
    #[error(
        "cancelled while waiting for rate budget; nothing was sent, retry when the job runs again"
    )]
    Cancelled,
    /// The configuration cannot work.
    #[error("invalid rate budget configuration: {0}; fix the token's budget settings")]
    Invalid(String),
}

/// Rate-limit tier of the workspace a token acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Free workspaces: 150 requests per minute.
    Free,
    /// Paid workspaces: 1,500 requests per minute.
    Paid,
}

impl Tier {
    /// Asana's documented requests per minute for the tier.
    pub fn requests_per_minute(self) -> u32 {
        match self {
            Tier::Free => 150,
            Tier::Paid => 1500,
        }
    }
}

/// What a request spends besides quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestClass {
    /// GET/HEAD: a read slot.
    Read,
    /// POST/PUT/PATCH/DELETE: a write slot.
    Write,
    /// Task search: a read slot and the separate search bucket.
    Search,
}

impl RequestClass {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::Read => "read",
            RequestClass::Write => "write",
            RequestClass::Search => "search",
        }
    }
}

/// Who goes first when several jobs wait for the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Catching up on history (a 90-day backfill): runs in whatever is left.
    Backfill,
    /// Scheduled work.
    Scheduled,
    /// A run started by a person, who is waiting for it.
    Manual,
}

impl Priority {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Backfill => "backfill",
            Priority::Scheduled => "scheduled",
            Priority::Manual => "manual",
        }
    }
}

/// Identifies a job for fair sharing: requests of one job queue behind each other, jobs take
/// turns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey(Arc<str>);

impl JobKey {
    /// A key from any job identifier (name, run id).
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one request asks of the budget.
#[derive(Debug, Clone)]
pub struct Demand {
    /// Its class.
    pub class: RequestClass,
    /// Requests it counts as against the quota (a batch of 10 actions counts as 10).
    pub cost: u32,
    /// Its job's priority.
    pub priority: Priority,
    /// Its job.
    pub job: JobKey,
}

impl Demand {
    /// One request of `class` for `job` at `priority`.
    pub fn new(class: RequestClass, priority: Priority, job: JobKey) -> Self {
        Self {
            class,
            cost: 1,
            priority,
            job,
        }
    }

    /// The same demand counting as `cost` requests.
    pub fn with_cost(mut self, cost: u32) -> Self {
        self.cost = cost.max(1);
        self
    }
}

/// Settings of one token's budget. Defaults are Asana's documented limits for a paid token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Name in logs and metrics (the credential id; never the token).
    pub name: String,
    /// The token's tier, which sets the default requests per minute.
    pub tier: Tier,
    /// Overrides the tier's requests per minute (e.g. to leave room for another client).
    pub requests_per_minute: Option<u32>,
    /// Task-search requests per minute.
    pub search_per_minute: u32,
    /// Concurrent reads.
    pub concurrent_reads: u32,
    /// Concurrent writes.
    pub concurrent_writes: u32,
    /// Concurrent export jobs per Asana user (shared by all that user's tokens).
    pub export_slots: u32,
    /// Extra (simulated) seconds added to the 60 s window, so requests that reach Asana in a
    /// different order than they left cannot put one too many into Asana's window.
    pub window_margin_secs: f64,
    /// How much faster than real time the server's clock runs (the simulator's `--time-scale`);
    /// windows and `Retry-After` are divided by it. 1.0 against Asana.
    pub time_scale: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            tier: Tier::Paid,
            requests_per_minute: None,
            search_per_minute: 60,
            concurrent_reads: 50,
            concurrent_writes: 15,
            export_slots: 5,
            window_margin_secs: 0.25,
            time_scale: 1.0,
        }
    }
}

impl BudgetConfig {
    /// A config for a token of `tier` named `name`, with Asana's limits.
    pub fn new(name: impl Into<String>, tier: Tier) -> Self {
        Self {
            name: name.into(),
            tier,
            ..Self::default()
        }
    }

    /// Requests per window in effect (override or tier).
    pub fn limit(&self) -> u32 {
        self.requests_per_minute
            .unwrap_or_else(|| self.tier.requests_per_minute())
    }

    /// Checks values the types cannot.
    pub fn validate(&self) -> Result<(), BudgetError> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(BudgetError::Invalid(format!(
                "time_scale must be a positive number, got {}",
                self.time_scale
            )));
        }
        if !(self.window_margin_secs.is_finite() && self.window_margin_secs >= 0.0) {
            return Err(BudgetError::Invalid(format!(
                "window_margin_secs must be zero or positive, got {}",
                self.window_margin_secs
            )));
        }
        for (name, value) in [
            ("requests_per_minute", self.limit()),
            ("search_per_minute", self.search_per_minute),
            ("concurrent_reads", self.concurrent_reads),
            ("concurrent_writes", self.concurrent_writes),
            ("export_slots", self.export_slots),
        ] {
            if value == 0 {
                return Err(BudgetError::Invalid(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    /// Converts a server-side (simulated) duration into real time.
    pub fn to_real(&self, simulated: Duration) -> Duration {
        Duration::from_secs_f64(simulated.as_secs_f64() / self.time_scale)
    }

    fn window(&self) -> Duration {
        Duration::from_secs_f64((WINDOW_SECS + self.window_margin_secs) / self.time_scale)
    }
}

/// Counters of one budget, for tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetStats {
    /// Permits granted.
    pub granted: u64,
    /// Requests counted against the quota (a permit of cost 10 counts 10).
    pub spent: u64,
    /// Most reads (searches included) holding a permit at once.
    pub peak_reads: u32,
    /// Most writes holding a permit at once.
    pub peak_writes: u32,
    /// Most requests started within one window.
    pub peak_window: u32,
    /// Pauses caused by 429s.
    pub cooldowns: u64,
    /// Times a 429 lowered the effective limit (someone else spends the token).
    pub limit_decreases: u64,
    /// Total time callers spent waiting for permits.
    pub total_wait: Duration,
    /// When the first permit was granted.
    pub first_grant: Option<Instant>,
    /// When the last permit was granted.
    pub last_grant: Option<Instant>,
}

/// One token's budget. Cheap to clone; every clone is the same budget.
#[derive(Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("name", &self.shared.config.name)
            .field("limit", &self.shared.config.limit())
            .finish()
    }
}

struct Shared {
    config: BudgetConfig,
    window: Duration,
    /// Start of the first window of the spending history.
    origin: Instant,
    exports: Arc<Semaphore>,
    export_user: String,
    state: Mutex<State>,
}

struct Waiter {
    ticket: u64,
    class: RequestClass,
    cost: u32,
    tx: oneshot::Sender<Permit>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Level {
    /// Jobs with waiters, in turn order.
    order: VecDeque<JobKey>,
    /// Each job's waiters, FIFO.
    queues: HashMap<JobKey, VecDeque<Waiter>>,
}

struct State {
    /// Completion times of finished requests still in the window, one entry per unit of cost.
    log: VecDeque<Instant>,
    /// Completion times of finished searches still in the window.
    search_log: VecDeque<Instant>,
    /// Cost of requests granted and not finished: they count against the window until they finish
    /// and then for a window more.
    in_flight_cost: u32,
    /// Searches granted and not finished.
    searches_in_flight: u32,
    reads: u32,
    writes: u32,
    /// No permit is granted before this instant (a 429's `Retry-After`).
    cooldown_until: Option<Instant>,
    /// Requests per window currently allowed; below the limit after quota 429s.
    effective_limit: u32,
    /// When `effective_limit` was last lowered or raised.
    limit_changed_at: Option<Instant>,
    /// After a quota 429 (someone else spends the token): the most requests per window known
    /// to fit beside the other client. Above it the budget probes one request at a time, so
    /// that finding the edge again costs one 429, not a burst of every request in flight.
    safe_limit: Option<u32>,
    /// Smoothed time from grant to response, for the in-flight cap of the upper quarter.
    latency: Option<Duration>,
    /// Concurrent reads and writes allowed now: the configured caps, lower after a 429 that
    /// came while many of this budget's requests were in flight (another client holds some of
    /// the token's concurrency slots); they grow back by a tenth per quiet window.
    read_cap: u32,
    write_cap: u32,
    /// When a concurrency cap was last lowered or raised.
    caps_changed_at: Option<Instant>,
    /// Requests spent per window since `Shared::origin` (window index, cost), the last
    /// [`HISTORY_WINDOWS`], for the status page's chart.
    history: VecDeque<(u64, u32)>,
    /// The most requests the window has held without a 429 since `reached_since`: up to there
    /// the cap of the upper quarter does not apply (nobody else was seen spending the token).
    reached_quietly: u32,
    /// When `reached_quietly` was last reset; it is forgotten every ten windows, so a client
    /// that starts spending the token later is met cautiously again.
    reached_since: Option<Instant>,
    levels: BTreeMap<Priority, Level>,
    waiting: usize,
    next_ticket: u64,
    /// The waiter that sleeps until `deadline` and then dispatches on everyone's behalf.
    timer: Option<(u64, Arc<Notify>)>,
    deadline: Option<Instant>,
    stats: BudgetStats,
}

/// Permission to send one request. Holds its concurrency slot until dropped; drop it when the
/// response (body included) has been read.
pub struct Permit {
    shared: Arc<Shared>,
    class: RequestClass,
    cost: u32,
    granted_at: Instant,
    sequence: u64,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("budget", &self.shared.config.name)
            .field("class", &self.class)
            .field("granted_at", &self.granted_at)
            .finish()
    }
}

impl Permit {
    /// When the permit was granted (the request's start as far as the quota is concerned).
    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }

    /// Its place in the order of grants of this budget (1 for the first permit).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The request class it was granted for.
    pub fn class(&self) -> RequestClass {
        self.class
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut failed = Vec::new();
        {
            let mut state = self.shared.lock();
            let now = Instant::now();
            match self.class {
                RequestClass::Write => state.writes = state.writes.saturating_sub(1),
                RequestClass::Read => state.reads = state.reads.saturating_sub(1),
                RequestClass::Search => {
                    state.reads = state.reads.saturating_sub(1);
                    state.searches_in_flight = state.searches_in_flight.saturating_sub(1);
                    state.search_log.push_back(now);
                }
            }
            // Smoothed latency (a fifth of each new sample).
            let sample = now.saturating_duration_since(self.granted_at);
            state.latency = Some(match state.latency {
                None => sample,
                Some(smoothed) => smoothed.mul_f64(0.8) + sample.mul_f64(0.2),
            });
            // A response outside a pause: the window held this many without a 429.
            if state.cooldown_until.is_none_or(|until| until <= now) {
                let count = state.window_count() as u32;
                state.reached_quietly = state.reached_quietly.max(count);
            }
            // From now on the request counts from its completion time.
            state.in_flight_cost = state.in_flight_cost.saturating_sub(self.cost);
            for _ in 0..self.cost {
                state.log.push_back(now);
            }
            self.shared.report_in_flight(&state);
            self.shared.settle(&mut state, now, &mut failed);
        }
        drop(failed);
    }
}

/// Removes a waiter that stopped waiting (cancelled or dropped) from its queue.
struct QueueGuard<'a> {
    budget: &'a Budget,
    ticket: u64,
    priority: Priority,
    job: JobKey,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        let mut failed = Vec::new();
        {
            let mut state = self.budget.shared.lock();
            let mut removed = false;
            if let Some(level) = state.levels.get_mut(&self.priority)
                && let Some(queue) = level.queues.get_mut(&self.job)
                && let Some(pos) = queue.iter().position(|w| w.ticket == self.ticket)
            {
                queue.remove(pos);
                removed = true;
                if queue.is_empty() {
                    level.queues.remove(&self.job);
                    level.order.retain(|j| j != &self.job);
                }
            }
            if removed {
                state.waiting -= 1;
                self.budget.shared.report_waiting(&state);
                self.budget
                    .shared
                    .settle(&mut state, Instant::now(), &mut failed);
            }
        }
        drop(failed);
    }
}

impl State {
    /// Requests counting against the current window: in flight, or finished within it.
    fn window_count(&self) -> usize {
        self.in_flight_cost as usize + self.log.len()
    }

    /// Searches counting against the current window.
    fn search_count(&self) -> usize {
        self.searches_in_flight as usize + self.search_log.len()
    }
}

enum Fit {
    Yes,
    /// Held back by its class's slots or the search bucket: others may pass.
    Skip,
    /// Held back by the shared rate: nobody behind may take quota before it.
    Stop,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn labels(&self) -> [(&'static str, String); 1] {
        [("token", self.config.name.clone())]
    }

    fn report_in_flight(&self, state: &State) {
        metrics::gauge!("asana_worker_budget_in_flight", "token" => self.config.name.clone(), "class" => "read")
            .set(state.reads as f64);
        metrics::gauge!("asana_worker_budget_in_flight", "token" => self.config.name.clone(), "class" => "write")
            .set(state.writes as f64);
    }

    fn report_waiting(&self, state: &State) {
        metrics::gauge!("asana_worker_budget_waiting", &self.labels()).set(state.waiting as f64);
    }

    fn prune(&self, state: &mut State, now: Instant) {
        let window = self.window;
        let expired = |t: &Instant| *t + window <= now;
        while state.log.front().is_some_and(expired) {
            state.log.pop_front();
        }
        while state.search_log.front().is_some_and(expired) {
            state.search_log.pop_front();
        }
        if state
            .reached_since
            .is_none_or(|since| now >= since + self.window * 10)
        {
            state.reached_quietly = 0;
            state.reached_since = Some(now);
        }
        // Concurrency caps grow back by a tenth per quiet window after a concurrency 429.
        if (state.read_cap < self.config.concurrent_reads
            || state.write_cap < self.config.concurrent_writes)
            && state
                .caps_changed_at
                .is_none_or(|changed| now >= changed + self.window)
        {
            let reads = self.config.concurrent_reads;
            let writes = self.config.concurrent_writes;
            state.read_cap = (state.read_cap + (reads / 10).max(1)).min(reads);
            state.write_cap = (state.write_cap + (writes / 10).max(1)).min(writes);
            state.caps_changed_at = Some(now);
        }
        // Recover the effective limit by a twentieth per quiet window after a quota 429.
        let limit = self.config.limit();
        if state.effective_limit < limit
            && let Some(changed) = state.limit_changed_at
            && now >= changed + self.window
        {
            let step = (limit / 20).max(1);
            // The level just left was quiet for a window: it becomes the safe one, and the
            // step above it is probed one request at a time.
            state.safe_limit = Some(state.effective_limit);
            state.effective_limit = (state.effective_limit + step).min(limit);
            state.limit_changed_at = Some(now);
        } else if state.effective_limit >= limit
            && state.safe_limit.is_some()
            && state
                .limit_changed_at
                .is_none_or(|changed| now >= changed + self.window)
        {
            // A whole window at the full limit without a 429: the other client is gone.
            state.safe_limit = None;
        }
    }

    /// The in-flight cap of the window's upper quarter: enough to send at 1.5 times the
    /// effective limit's rate at the observed latency (so saturating the token is never held
    /// back by it), at least [`CAUTIOUS_IN_FLIGHT`]. At 1,500/min and 300 ms that is 12.
    fn cautious_in_flight(&self, state: &State) -> usize {
        let per_sec = f64::from(state.effective_limit) / self.window.as_secs_f64();
        let latency = state.latency.unwrap_or_default().as_secs_f64();
        ((per_sec * latency * 3.0).ceil() as usize).max(CAUTIOUS_IN_FLIGHT)
    }

    fn fits(&self, state: &State, class: RequestClass, cost: u32) -> Fit {
        let limit = state.effective_limit;
        let cost = cost.min(limit) as usize;
        if state.window_count() + cost > limit as usize {
            return Fit::Stop;
        }
        // In the window's upper quarter, a few requests at a time: if another client spends
        // the token too, Asana's window fills before this budget's does, and every request in
        // flight at that moment comes back 429.
        let cautious_from = ((limit as usize * 3) / 4).max(state.reached_quietly as usize);
        if state.window_count() + cost > cautious_from
            && state.in_flight_cost as usize >= self.cautious_in_flight(state)
        {
            return Fit::Stop;
        }
        // Above the level known to fit beside another client, one request at a time.
        if let Some(safe) = state.safe_limit
            && state.window_count() + cost > safe as usize
            && state.in_flight_cost > 0
        {
            return Fit::Stop;
        }
        match class {
            RequestClass::Write if state.writes >= state.write_cap => Fit::Skip,
            RequestClass::Read if state.reads >= state.read_cap => Fit::Skip,
            RequestClass::Search
                if state.reads >= state.read_cap
                    || state.search_count() >= self.config.search_per_minute as usize =>
            {
                Fit::Skip
            }
            _ => Fit::Yes,
        }
    }

    /// Grants every permit that can be granted now, in fairness order, then arms the timer for
    /// the next instant something time-based changes. Permits whose waiter has gone are pushed to
    /// `failed`, to be dropped (and their slots released) after the lock is released.
    fn settle(self: &Arc<Self>, state: &mut State, now: Instant, failed: &mut Vec<Permit>) {
        self.prune(state, now);
        let cooling = state.cooldown_until.is_some_and(|until| now < until);
        let mut blocked_cost: Option<u32> = None;
        let mut search_blocked = false;
        if !cooling {
            loop {
                // Find the first waiter that may go, in priority then round-robin order.
                let mut found: Option<(Priority, usize, usize)> = None;
                'levels: for (&priority, level) in state.levels.iter().rev() {
                    for (job_index, job) in level.order.iter().enumerate() {
                        let Some(queue) = level.queues.get(job) else {
                            continue;
                        };
                        for (pos, waiter) in queue.iter().enumerate() {
                            match self.fits(state, waiter.class, waiter.cost) {
                                Fit::Yes => {
                                    found = Some((priority, job_index, pos));
                                    break 'levels;
                                }
                                Fit::Stop => {
                                    blocked_cost = Some(waiter.cost);
                                    break 'levels;
                                }
                                Fit::Skip => {
                                    if waiter.class == RequestClass::Search
                                        && state.search_count()
                                            >= self.config.search_per_minute as usize
                                    {
                                        search_blocked = true;
                                    }
                                }
                            }
                        }
                    }
                }
                let Some((priority, job_index, pos)) = found else {
                    break;
                };
                let waiter = {
                    let Some(level) = state.levels.get_mut(&priority) else {
                        break;
                    };
                    let Some(job) = level.order.remove(job_index) else {
                        break;
                    };
                    let Some(queue) = level.queues.get_mut(&job) else {
                        break;
                    };
                    let Some(waiter) = queue.remove(pos) else {
                        break;
                    };
                    if queue.is_empty() {
                        level.queues.remove(&job);
                    } else {
                        // Served: to the back of the round.
                        level.order.push_back(job);
                    }
                    if level.order.is_empty() {
                        state.levels.remove(&priority);
                    }
                    waiter
                };
                state.waiting -= 1;
                let permit = self.grant(state, &waiter, now);
                if let Err(permit) = waiter.tx.send(permit) {
                    failed.push(permit);
                }
            }
        }
        self.report_waiting(state);
        // Arm the timer: the next instant a waiter may become eligible without a permit being
        // returned (cooldown end, a log entry leaving the window).
        let deadline = if state.waiting == 0 {
            None
        } else if cooling {
            state.cooldown_until
        } else {
            let mut deadline: Option<Instant> = None;
            if let Some(cost) = blocked_cost {
                let limit = state.effective_limit as usize;
                let needed = (state.window_count() + cost.min(state.effective_limit) as usize)
                    .saturating_sub(limit);
                // Entries of finished requests leave the window in order; requests still in
                // flight wake the waiters when their permits are dropped.
                if needed > 0
                    && let Some(entry) = state.log.get(needed - 1).or(state.log.back())
                {
                    deadline = Some(*entry + self.window);
                }
            }
            if search_blocked && let Some(entry) = state.search_log.front() {
                let at = *entry + self.window;
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            }
            if state.effective_limit < self.config.limit()
                && let Some(changed) = state.limit_changed_at
            {
                let at = changed + self.window;
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            }
            deadline
        };
        let timer_alive = state.timer.as_ref().is_some_and(|(ticket, _)| {
            state.levels.values().any(|l| {
                l.queues
                    .values()
                    .any(|q| q.iter().any(|w| w.ticket == *ticket))
            })
        });
        if deadline.is_none() {
            state.deadline = None;
            return;
        }
        if !timer_alive {
            state.timer = state.levels.values().rev().find_map(|l| {
                l.order
                    .front()
                    .and_then(|job| l.queues.get(job))
                    .and_then(|q| q.front())
                    .map(|w| (w.ticket, w.wake.clone()))
            });
        }
        if deadline != state.deadline || !timer_alive {
            state.deadline = deadline;
            if let Some((_, wake)) = &state.timer {
                wake.notify_one();
            }
        }
    }

    fn grant(self: &Arc<Self>, state: &mut State, waiter: &Waiter, now: Instant) -> Permit {
        let cost = waiter.cost.min(state.effective_limit);
        state.in_flight_cost += cost;
        match waiter.class {
            RequestClass::Write => {
                state.writes += 1;
                state.stats.peak_writes = state.stats.peak_writes.max(state.writes);
            }
            RequestClass::Read => {
                state.reads += 1;
                state.stats.peak_reads = state.stats.peak_reads.max(state.reads);
            }
            RequestClass::Search => {
                state.reads += 1;
                state.stats.peak_reads = state.stats.peak_reads.max(state.reads);
                state.searches_in_flight += 1;
            }
        }
        state.stats.granted += 1;
        state.stats.spent += u64::from(waiter.cost);
        let index = (now.saturating_duration_since(self.origin).as_nanos()
            / self.window.as_nanos().max(1)) as u64;
        match state.history.back_mut() {
            Some((last, count)) if *last == index => *count += waiter.cost,
            _ => {
                state.history.push_back((index, waiter.cost));
                while state.history.len() > HISTORY_WINDOWS {
                    state.history.pop_front();
                }
            }
        }
        state.stats.peak_window = state.stats.peak_window.max(state.window_count() as u32);
        state.stats.first_grant.get_or_insert(now);
        state.stats.last_grant = Some(now);
        self.report_in_flight(state);
        metrics::gauge!("asana_worker_budget_utilization_ratio", &self.labels())
            .set(state.window_count() as f64 / f64::from(state.effective_limit.max(1)));
        Permit {
            shared: self.clone(),
            class: waiter.class,
            cost,
            granted_at: now,
            sequence: state.stats.granted,
        }
    }
}

impl Budget {
    /// A budget with its own export slots (use [`BudgetRegistry`] to share export slots between
    /// the tokens of one Asana user).
    pub fn new(config: BudgetConfig) -> Result<Self, BudgetError> {
        let slots = Arc::new(Semaphore::new(config.export_slots as usize));
        Self::with_export_slots(config, slots, String::new())
    }

    pub(crate) fn with_export_slots(
        config: BudgetConfig,
        exports: Arc<Semaphore>,
        export_user: String,
    ) -> Result<Self, BudgetError> {
        config.validate()?;
        let window = config.window();
        let effective_limit = config.limit();
        Ok(Self {
            shared: Arc::new(Shared {
                window,
                origin: Instant::now(),
                exports,
                export_user,
                state: Mutex::new(State {
                    log: VecDeque::new(),
                    search_log: VecDeque::new(),
                    in_flight_cost: 0,
                    searches_in_flight: 0,
                    safe_limit: None,
                    latency: None,
                    read_cap: config.concurrent_reads,
                    write_cap: config.concurrent_writes,
                    caps_changed_at: None,
                    history: VecDeque::new(),
                    reached_quietly: 0,
                    reached_since: None,
                    reads: 0,
                    writes: 0,
                    cooldown_until: None,
                    effective_limit,
                    limit_changed_at: None,
                    levels: BTreeMap::new(),
                    waiting: 0,
                    next_ticket: 0,
                    timer: None,
                    deadline: None,
                    stats: BudgetStats::default(),
                }),
                config,
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.shared.config
    }

    /// The server's time scale (1.0 against Asana).
    pub fn time_scale(&self) -> f64 {
        self.shared.config.time_scale
    }

    /// Waits until `demand` may be sent, then returns the permit that must be held while the
    /// request is in flight. Cancellable through `cancel` or by dropping the future; a cancelled
    /// waiter leaves the queue and spends nothing.
    pub async fn acquire(
        &self,
        demand: Demand,
        cancel: &CancellationToken,
    ) -> Result<Permit, BudgetError> {
        let started = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        let wake = Arc::new(Notify::new());
        let ticket = {
            let mut failed = Vec::new();
            let mut state = self.shared.lock();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            let level = state.levels.entry(demand.priority).or_default();
            let queue = level.queues.entry(demand.job.clone()).or_default();
            if queue.is_empty() {
                level.order.push_back(demand.job.clone());
            }
            queue.push_back(Waiter {
                ticket,
                class: demand.class,
                cost: demand.cost.max(1),
                tx,
                wake: wake.clone(),
            });
            state.waiting += 1;
            self.shared.settle(&mut state, started, &mut failed);
            drop(state);
            drop(failed);
            ticket
        };
        let guard = QueueGuard {
            budget: self,
            ticket,
            priority: demand.priority,
            job: demand.job.clone(),
        };
        let permit = loop {
            let deadline = {
                let state = self.shared.lock();
                match &state.timer {
                    Some((t, _)) if *t == ticket => state.deadline,
                    _ => None,
                }
            };
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                granted = &mut rx => match granted {
                    Ok(permit) => break permit,
                    // The sender is only dropped with the permit sent or the waiter removed by
                    // this guard, so this cannot happen; treat it as a cancellation.
                    Err(_) => return Err(BudgetError::Cancelled),
                },
                () = cancel.cancelled() => return Err(BudgetError::Cancelled),
                () = wake.notified() => {}
                () = sleep => {
                    let mut failed = Vec::new();
                    {
                        let mut state = self.shared.lock();
                        // Force re-arming even if the next deadline equals this one.
                        state.deadline = None;
                        self.shared.settle(&mut state, Instant::now(), &mut failed);
                    }
                    drop(failed);
                }
            }
        };
        // Granted: the waiter is no longer queued, so the guard has nothing to remove.
        drop(guard);
        let waited = started.elapsed();
        {
            let mut state = self.shared.lock();
            state.stats.total_wait += waited;
        }
        metrics::histogram!(
            "asana_worker_budget_wait_seconds",
            "token" => self.shared.config.name.clone(),
            "class" => demand.class.as_str(),
            "priority" => demand.priority.as_str(),
        )
        .record(waited.as_secs_f64());
        Ok(permit)
    }

    /// Pauses the whole token for `retry_after` (server time, divided by `time_scale`): no permit
    /// is granted to any job before it has passed.
    ///
    /// With `adapt`, the 429 is also taken as proof that someone else spends this token's quota
    /// (this budget never lets more than the limit into a window, so a quota 429 means the
    /// server counted requests it did not see): the effective limit drops to 90 % of what this
    /// budget had in the window, at most once per pause (the requests already in flight may bring
    /// more 429s of the same episode), never below a quarter of the limit. It grows back by a
    /// twentieth of the limit per window without a 429.
    pub fn cool_down(&self, retry_after: Duration, adapt: bool) {
        let now = Instant::now();
        let until = now + self.shared.config.to_real(retry_after);
        let mut failed = Vec::new();
        {
            let mut state = self.shared.lock();
            self.shared.prune(&mut state, now);
            let already_paused = state.cooldown_until.is_some_and(|u| u > now);
            state.cooldown_until = Some(state.cooldown_until.map_or(until, |u| u.max(until)));
            state.stats.cooldowns += 1;
            let new_episode = state.limit_changed_at.is_none_or(|at| now >= at);
            if adapt && new_episode {
                let floor = (self.shared.config.limit() / 4).max(1);
                let base = state
                    .effective_limit
                    .min(state.window_count().max(1) as u32);
                // With the edge probed one request at a time (`safe_limit`), the window count
                // at a 429 is close to what fits beside the other client: settle just below.
                let factor = if state.safe_limit.is_some() {
                    0.97
                } else {
                    0.9
                };
                let lowered = ((f64::from(base) * factor) as u32).max(floor);
                if lowered < state.effective_limit {
                    state.effective_limit = lowered;
                    state.stats.limit_decreases += 1;
                }
                state.safe_limit = Some(state.effective_limit);
                state.reached_quietly = 0;
            }
            if adapt {
                state.limit_changed_at =
                    Some(state.limit_changed_at.map_or(until, |at| at.max(until)));
            }
            metrics::counter!(
                "asana_worker_budget_cooldowns_total",
                "token" => self.shared.config.name.clone(),
                "cause" => if adapt { "quota" } else { "other" },
            )
            .increment(1);
            if already_paused {
                tracing::debug!(
                    token = %self.shared.config.name,
                    retry_after_secs = retry_after.as_secs_f64(),
                    "Another 429 during the pause; extending it if needed"
                );
            } else {
                tracing::warn!(
                    token = %self.shared.config.name,
                    retry_after_secs = retry_after.as_secs_f64(),
                    effective_limit = state.effective_limit,
                    "Rate limited by Asana; pausing every job on this token"
                );
            }
            state.deadline = None;
            self.shared.settle(&mut state, now, &mut failed);
        }
        drop(failed);
    }

    /// How long ago this token's last request that still counts in the window ended: zero while
    /// one is in flight, None when the window holds none. A replica handing the token over to
    /// another records it, so the next holder knows how long Asana still counts those requests.
    pub fn last_use_age(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut state = self.shared.lock();
        self.shared.prune(&mut state, now);
        if state.in_flight_cost > 0 || state.searches_in_flight > 0 {
            return Some(Duration::ZERO);
        }
        state.log.back().map(|t| now.saturating_duration_since(*t))
    }

    /// Takes the token over from another process that last used it `last_use_age` ago: nothing
    /// is granted until a window has passed since that use, because Asana still counts the
    /// other process's requests, whose number this budget cannot know. Not a 429: neither the
    /// cooldown counter nor the effective limit changes.
    pub fn pause_after_handover(&self, last_use_age: Duration) {
        let remaining = self.shared.window.saturating_sub(last_use_age);
        if remaining.is_zero() {
            return;
        }
        let now = Instant::now();
        let until = now + remaining;
        let mut failed = Vec::new();
        {
            let mut state = self.shared.lock();
            state.cooldown_until = Some(state.cooldown_until.map_or(until, |u| u.max(until)));
            tracing::info!(
                token = %self.shared.config.name,
                wait_ms = remaining.as_millis() as u64,
                "Took this token over from another replica; waiting until its last requests have left Asana's window"
            );
            state.deadline = None;
            self.shared.settle(&mut state, now, &mut failed);
        }
        drop(failed);
    }

    /// Whether a 429 that just came for a request of `class` looks like Asana's concurrency
    /// limiter rather than its quota: Asana sends the same status, body and kind of
    /// `Retry-After` for both, so the budget judges by its own state. This budget never exceeds
    /// the concurrency caps itself, so such a 429 means another client holds slots too; it is
    /// taken as one when at least half of the class's slots were held by this budget when it
    /// came, and so are the other 429s until that episode's pause ends. Below that (at most [`CAUTIOUS_IN_FLIGHT`] or so are in flight where the window
    /// nears its limit) it is taken as the quota.
    pub fn concurrency_shaped(&self, class: RequestClass) -> bool {
        let state = self.shared.lock();
        // The other refusals of a burst already judged concurrency (their requests were in
        // flight together) belong to the same episode, whatever is still in flight now.
        if state
            .caps_changed_at
            .is_some_and(|until| until > Instant::now())
        {
            return true;
        }
        let (held, cap) = match class {
            RequestClass::Write => (state.writes, state.write_cap),
            RequestClass::Read | RequestClass::Search => (state.reads, state.read_cap),
        };
        cap > 1 && held * 2 >= cap
    }

    /// After a concurrency 429: pauses the token for `retry_after` without touching the rate,
    /// and halves the class's concurrency cap from what was in flight, so the requests of this
    /// budget and the other client's fit Asana's slots within a few episodes. The cap grows back by a tenth per
    /// quiet window.
    pub fn concurrency_limited(&self, class: RequestClass, retry_after: Duration) {
        {
            let now = Instant::now();
            let mut state = self.shared.lock();
            let new_episode = state.caps_changed_at.is_none_or(|at| now >= at);
            if new_episode {
                match class {
                    RequestClass::Write => {
                        state.write_cap = (state.writes / 2).max(1).min(state.write_cap)
                    }
                    RequestClass::Read | RequestClass::Search => {
                        state.read_cap = (state.reads / 2).max(1).min(state.read_cap)
                    }
                }
                tracing::warn!(
                    token = %self.shared.config.name,
                    class = class.as_str(),
                    read_cap = state.read_cap,
                    write_cap = state.write_cap,
                    "Asana refused a request for concurrency (another client holds some of the token's slots); fewer at once from now on"
                );
            }
            // Once per pause, like the rate's episodes.
            state.caps_changed_at = Some(now + self.shared.config.to_real(retry_after));
        }
        self.cool_down(retry_after, false);
    }

    /// Requests spent in each of the last [`HISTORY_WINDOWS`] windows, oldest first, each with
    /// how long ago its window started (windows without a request are listed with 0).
    pub fn history(&self) -> Vec<(Duration, u32)> {
        let now = Instant::now();
        let state = self.shared.lock();
        let window = self.shared.window;
        let current = (now.saturating_duration_since(self.shared.origin).as_nanos()
            / window.as_nanos().max(1)) as u64;
        let into_current = Duration::from_nanos(
            (now.saturating_duration_since(self.shared.origin).as_nanos()
                % window.as_nanos().max(1)) as u64,
        );
        (0..HISTORY_WINDOWS as u64)
            .rev()
            .map(|back| {
                let count = current
                    .checked_sub(back)
                    .and_then(|index| state.history.iter().find(|(i, _)| *i == index))
                    .map_or(0, |(_, c)| *c);
                (into_current + window * back as u32, count)
            })
            .collect()
    }

    /// Concurrent reads and writes allowed now (below the configured caps after concurrency
    /// 429s).
    pub fn concurrency_caps(&self) -> (u32, u32) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        self.shared.prune(&mut state, now);
        (state.read_cap, state.write_cap)
    }

    /// How long the token stays paused, if it is.
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        let now = Instant::now();
        let state = self.shared.lock();
        state
            .cooldown_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Requests per window currently allowed (below the limit after quota 429s).
    pub fn effective_limit(&self) -> u32 {
        let now = Instant::now();
        let mut state = self.shared.lock();
        self.shared.prune(&mut state, now);
        state.effective_limit
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BudgetStats {
        self.shared.lock().stats.clone()
    }

    /// Callers currently waiting.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiting
    }

    /// Waits for one of the Asana user's export slots (5 concurrent export jobs per user, shared
    /// by all that user's tokens). Hold the slot until the export job has finished or failed.
    pub async fn export_slot(&self, cancel: &CancellationToken) -> Result<ExportSlot, BudgetError> {
        let semaphore = self.shared.exports.clone();
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(BudgetError::Cancelled),
            permit = semaphore.acquire_owned() => permit.map_err(|_| BudgetError::Cancelled)?,
        };
        Ok(ExportSlot::new(
            permit,
            self.shared.exports.clone(),
            self.shared.config.export_slots,
            self.shared.export_user.clone(),
        ))
    }

    /// Export slots currently free for this token's user.
    pub fn export_slots_free(&self) -> usize {
        self.shared.exports.available_permits()
    }
}
