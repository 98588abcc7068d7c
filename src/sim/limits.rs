//! Asana's rate limits, enforced per token exactly as documented: requests per minute by tier
//! (rejected requests still count), 60 searches per minute, 50 concurrent reads and 15 concurrent
//! writes, and 5 concurrent export jobs per user. Also keeps the statistics that tests and
//! benchmarks read back through `/_sim/stats` (peaks, 429s by cause, statuses).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::config::{LimitSpec, Tier};

/// Length of a quota window in simulated seconds.
pub const WINDOW_SECS: f64 = 60.0;

/// `Retry-After` (simulated seconds) for the concurrency limiter: long enough for the other
/// in-flight requests to finish, as Asana describes it.
pub const CONCURRENCY_RETRY_AFTER_SECS: u64 = 2;

/// Why a request was refused with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RejectCause {
    /// The per-minute quota.
    Quota,
    /// The search quota.
    Search,
    /// Too many concurrent reads.
    ConcurrentReads,
    /// Too many concurrent writes.
    ConcurrentWrites,
    /// Too many concurrent export or duplication jobs for the user.
    Jobs,
    /// A 429 injected by the fault knobs.
    Injected,
}

/// Per-token statistics, as served by `/_sim/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TokenStats {
    /// Every request that reached the limiter, accepted or not.
    pub requests: u64,
    /// Requests admitted past the limiter.
    pub accepted: u64,
    /// 429s sent, by cause.
    pub rejected: BTreeMap<RejectCause, u64>,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Most reads in flight at once.
    pub peak_concurrent_reads: u32,
    /// Most writes in flight at once.
    pub peak_concurrent_writes: u32,
    /// Most admitted requests within any 60-second (simulated) window.
    pub peak_window_requests: u32,
    /// Most admitted searches within any 60-second window.
    pub peak_window_searches: u32,
    /// Most export jobs in progress at once for this token's user.
    pub peak_concurrent_jobs: u32,
}

impl TokenStats {
    /// Total 429s of every cause.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

#[derive(Debug, Default)]
struct TokenLimiter {
    /// Every request in the current window, rejected ones included (they count against quota).
    window: VecDeque<f64>,
    /// Admitted requests in the current window, for the peak statistic.
    admitted: VecDeque<f64>,
    /// Searches in the current window.
    searches: VecDeque<f64>,
    /// Admitted searches in the current window, for the peak statistic.
    admitted_searches: VecDeque<f64>,
    reads_in_flight: u32,
    writes_in_flight: u32,
    stats: TokenStats,
}

/// The class of a request for concurrency limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// GET or HEAD.
    Read,
    /// POST, PUT, PATCH or DELETE.
    Write,
}

/// The shared limiter of all tokens.
#[derive(Debug, Clone)]
pub struct Limits {
    spec: LimitSpec,
    tokens: Arc<Mutex<HashMap<String, TokenLimiter>>>,
}

/// Holds a concurrency slot until the request has been answered.
#[derive(Debug)]
pub struct InFlight {
    limits: Limits,
    token: String,
    class: RequestClass,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut tokens = self.limits.lock();
        if let Some(limiter) = tokens.get_mut(&self.token) {
            match self.class {
                RequestClass::Read => limiter.reads_in_flight -= 1,
                RequestClass::Write => limiter.writes_in_flight -= 1,
            }
        }
    }
}

fn prune(window: &mut VecDeque<f64>, now: f64) {
    while window.front().is_some_and(|&t| t <= now - WINDOW_SECS) {
        window.pop_front();
    }
}

/// Seconds until enough entries leave `window` for one more request to fit under `limit`.
fn retry_after(window: &VecDeque<f64>, limit: u32, now: f64) -> u64 {
    let excess = window.len().saturating_sub(limit as usize);
    let expiring = window.get(excess).copied().unwrap_or(now);
    (expiring + WINDOW_SECS - now).ceil().max(1.0) as u64
}

impl Limits {
    /// A limiter enforcing `spec`.
    pub fn new(spec: LimitSpec) -> Self {
        Self {
            spec,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenLimiter>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The configured limits.
    pub fn spec(&self) -> &LimitSpec {
        &self.spec
    }

    /// Requests per minute for a tier.
    pub fn per_minute(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Free => self.spec.free_per_minute,
            Tier::Paid => self.spec.paid_per_minute,
        }
    }

    /// Admits or refuses a request at simulated time `now` (seconds). On refusal returns the cause
    /// and `Retry-After` in simulated seconds; the refused request still counts against the quota.
    pub fn admit(
        &self,
        token: &str,
        tier: Tier,
        class: RequestClass,
        is_search: bool,
        now: f64,
    ) -> Result<InFlight, (RejectCause, u64)> {
        let per_minute = self.per_minute(tier);
        let mut tokens = self.lock();
        let limiter = tokens.entry(token.to_string()).or_default();
        prune(&mut limiter.window, now);
        prune(&mut limiter.admitted, now);
        prune(&mut limiter.searches, now);
        prune(&mut limiter.admitted_searches, now);
        limiter.stats.requests += 1;
        let over_quota = limiter.window.len() >= per_minute as usize;
        limiter.window.push_back(now);
        if over_quota {
            let wait = retry_after(&limiter.window, per_minute, now);
            *limiter
                .stats
                .rejected
                .entry(RejectCause::Quota)
                .or_default() += 1;
            return Err((RejectCause::Quota, wait));
        }
        if is_search {
            let over_search = limiter.searches.len() >= self.spec.search_per_minute as usize;
            limiter.searches.push_back(now);
            if over_search {
                let wait = retry_after(&limiter.searches, self.spec.search_per_minute, now);
                *limiter
                    .stats
                    .rejected
                    .entry(RejectCause::Search)
                    .or_default() += 1;
                return Err((RejectCause::Search, wait));
            }
        }
        match class {
            RequestClass::Read if limiter.reads_in_flight >= self.spec.concurrent_reads => {
                *limiter
                    .stats
                    .rejected
                    .entry(RejectCause::ConcurrentReads)
                    .or_default() += 1;
                return Err((RejectCause::ConcurrentReads, CONCURRENCY_RETRY_AFTER_SECS));
            }
            RequestClass::Write if limiter.writes_in_flight >= self.spec.concurrent_writes => {
                *limiter
                    .stats
                    .rejected
                    .entry(RejectCause::ConcurrentWrites)
                    .or_default() += 1;
                return Err((RejectCause::ConcurrentWrites, CONCURRENCY_RETRY_AFTER_SECS));
            }
            RequestClass::Read => {
                limiter.reads_in_flight += 1;
                limiter.stats.peak_concurrent_reads = limiter
                    .stats
                    .peak_concurrent_reads
                    .max(limiter.reads_in_flight);
            }
            RequestClass::Write => {
                limiter.writes_in_flight += 1;
                limiter.stats.peak_concurrent_writes = limiter
                    .stats
                    .peak_concurrent_writes
                    .max(limiter.writes_in_flight);
            }
        }
        limiter.stats.accepted += 1;
        limiter.admitted.push_back(now);
        limiter.stats.peak_window_requests = limiter
            .stats
            .peak_window_requests
            .max(limiter.admitted.len() as u32);
        if is_search {
            limiter.admitted_searches.push_back(now);
            limiter.stats.peak_window_searches = limiter
                .stats
                .peak_window_searches
                .max(limiter.admitted_searches.len() as u32);
        }
        Ok(InFlight {
            limits: self.clone(),
            token: token.to_string(),
            class,
        })
    }

    /// Records a 429 that happened after admission (injected fault or job cap).
    pub fn record_rejection(&self, token: &str, cause: RejectCause) {
        let mut tokens = self.lock();
        let limiter = tokens.entry(token.to_string()).or_default();
        *limiter.stats.rejected.entry(cause).or_default() += 1;
        if limiter.stats.accepted > 0 {
            limiter.stats.accepted -= 1;
        }
    }

    /// Records the status of a response.
    pub fn record_status(&self, token: &str, status: u16) {
        let mut tokens = self.lock();
        let limiter = tokens.entry(token.to_string()).or_default();
        *limiter.stats.statuses.entry(status).or_default() += 1;
    }

    /// Records the number of jobs now in progress for the token's user.
    pub fn record_jobs(&self, token: &str, in_progress: u32) {
        let mut tokens = self.lock();
        let limiter = tokens.entry(token.to_string()).or_default();
        limiter.stats.peak_concurrent_jobs = limiter.stats.peak_concurrent_jobs.max(in_progress);
    }

    /// Statistics of one token (zeros if it has not been used).
    pub fn stats(&self, token: &str) -> TokenStats {
        self.lock()
            .get(token)
            .map(|limiter| limiter.stats.clone())
            .unwrap_or_default()
    }

    /// Forgets all statistics and windows (between benchmark phases).
    pub fn reset(&self) {
        let mut tokens = self.lock();
        for limiter in tokens.values_mut() {
            limiter.window.clear();
            limiter.admitted.clear();
            limiter.searches.clear();
            limiter.admitted_searches.clear();
            limiter.stats = TokenStats::default();
        }
    }

    /// Takes `reads` read slots and `writes` write slots at once, for the actions of a batch (a
    /// batch of N actions counts as N concurrent requests). All or nothing: when they do not fit,
    /// nothing is held and the cause is returned with a `Retry-After`.
    pub fn hold_concurrent(
        &self,
        token: &str,
        reads: u32,
        writes: u32,
    ) -> Result<Vec<InFlight>, (RejectCause, u64)> {
        let mut tokens = self.lock();
        let limiter = tokens.entry(token.to_string()).or_default();
        if limiter.reads_in_flight + reads > self.spec.concurrent_reads {
            *limiter
                .stats
                .rejected
                .entry(RejectCause::ConcurrentReads)
                .or_default() += 1;
            return Err((RejectCause::ConcurrentReads, CONCURRENCY_RETRY_AFTER_SECS));
        }
        if limiter.writes_in_flight + writes > self.spec.concurrent_writes {
            *limiter
                .stats
                .rejected
                .entry(RejectCause::ConcurrentWrites)
                .or_default() += 1;
            return Err((RejectCause::ConcurrentWrites, CONCURRENCY_RETRY_AFTER_SECS));
        }
        limiter.reads_in_flight += reads;
        limiter.writes_in_flight += writes;
        limiter.stats.peak_concurrent_reads = limiter
            .stats
            .peak_concurrent_reads
            .max(limiter.reads_in_flight);
        limiter.stats.peak_concurrent_writes = limiter
            .stats
            .peak_concurrent_writes
            .max(limiter.writes_in_flight);
        let mut held = Vec::with_capacity((reads + writes) as usize);
        for class in std::iter::repeat_n(RequestClass::Read, reads as usize)
            .chain(std::iter::repeat_n(RequestClass::Write, writes as usize))
        {
            held.push(InFlight {
                limits: self.clone(),
                token: token.to_string(),
                class,
            });
        }
        Ok(held)
    }

    /// Counts `extra` more requests against a token's quota at simulated time `now`: a batch of N
    /// actions counts as N requests, and the batch request itself was already counted once by
    /// [`Limits::admit`]. When they do not all fit, returns `Retry-After` (simulated seconds) and
    /// the whole batch must answer 429; the refused requests still count, like any refused request.
    pub fn charge_extra(&self, token: &str, tier: Tier, extra: u32, now: f64) -> Result<(), u64> {
        let per_minute = self.per_minute(tier);
        let mut tokens = self.lock();
        let limiter = tokens.entry(token.to_string()).or_default();
        prune(&mut limiter.window, now);
        prune(&mut limiter.admitted, now);
        limiter.stats.requests += u64::from(extra);
        let fits = limiter.window.len() + extra as usize <= per_minute as usize;
        for _ in 0..extra {
            limiter.window.push_back(now);
        }
        if !fits {
            let wait = retry_after(&limiter.window, per_minute, now);
            *limiter
                .stats
                .rejected
                .entry(RejectCause::Quota)
                .or_default() += 1;
            limiter.stats.accepted = limiter.stats.accepted.saturating_sub(1);
            return Err(wait);
        }
        limiter.stats.accepted += u64::from(extra);
        for _ in 0..extra {
            limiter.admitted.push_back(now);
        }
        limiter.stats.peak_window_requests = limiter
            .stats
            .peak_window_requests
            .max(limiter.admitted.len() as u32);
        Ok(())
    }

    /// Spends `count` requests of a token's quota as if another client had made them (for
    /// benchmarks where the worker shares its token with someone else).
    pub fn consume_external(&self, token: &str, count: u32, now: f64) {
        let mut tokens = self.lock();
        let limiter = tokens.entry(token.to_string()).or_default();
        prune(&mut limiter.window, now);
        for _ in 0..count {
            limiter.window.push_back(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LimitSpec {
        LimitSpec {
            free_per_minute: 3,
            paid_per_minute: 5,
            search_per_minute: 2,
            concurrent_reads: 2,
            concurrent_writes: 1,
            concurrent_jobs: 1,
        }
    }

    #[test]
    fn quota_counts_rejected_requests_and_names_the_wait() {
        let limits = Limits::new(spec());
        let mut held = Vec::new();
        for i in 0..3 {
            let slot = limits.admit("t", Tier::Free, RequestClass::Write, false, i as f64);
            held.push(slot.expect("within quota"));
            held.clear();
        }
        let (cause, wait) = limits
            .admit("t", Tier::Free, RequestClass::Read, false, 10.0)
            .unwrap_err();
        assert_eq!(cause, RejectCause::Quota);
        // Four requests in the window (one rejected); two must leave for the next to fit: t=1.
        assert_eq!(wait, 51);
        // At t=60.5 the request at 0 has left but the rejected one at 10 still counts.
        assert!(
            limits
                .admit("t", Tier::Free, RequestClass::Read, false, 60.5)
                .is_err()
        );
        assert!(
            limits
                .admit("t", Tier::Free, RequestClass::Read, false, 71.0)
                .is_ok()
        );
        let stats = limits.stats("t");
        assert_eq!(stats.rejected[&RejectCause::Quota], 2);
        assert_eq!(stats.peak_window_requests, 3);
    }

    #[test]
    fn concurrency_slots_are_released_on_drop() {
        let limits = Limits::new(spec());
        let a = limits
            .admit("t", Tier::Paid, RequestClass::Read, false, 0.0)
            .unwrap();
        let _b = limits
            .admit("t", Tier::Paid, RequestClass::Read, false, 0.0)
            .unwrap();
        let third = limits.admit("t", Tier::Paid, RequestClass::Read, false, 0.0);
        assert_eq!(third.unwrap_err().0, RejectCause::ConcurrentReads);
        let _write = limits
            .admit("t", Tier::Paid, RequestClass::Write, false, 0.0)
            .unwrap();
        drop(a);
        assert!(
            limits
                .admit("t", Tier::Paid, RequestClass::Read, false, 0.0)
                .is_ok()
        );
        assert_eq!(limits.stats("t").peak_concurrent_reads, 2);
    }

    #[test]
    fn search_has_its_own_bucket() {
        let limits = Limits::new(spec());
        for i in 0..2 {
            limits
                .admit("t", Tier::Paid, RequestClass::Read, true, i as f64)
                .unwrap();
        }
        let refused = limits.admit("t", Tier::Paid, RequestClass::Read, true, 2.0);
        assert_eq!(refused.unwrap_err().0, RejectCause::Search);
        assert!(
            limits
                .admit("t", Tier::Paid, RequestClass::Read, false, 2.0)
                .is_ok()
        );
        assert!(
            limits
                .admit("other", Tier::Paid, RequestClass::Read, true, 2.0)
                .is_ok()
        );
    }
}
