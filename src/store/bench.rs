//! Queue throughput benchmark (`asana-worker bench`): how many runs per second a store can
//! enqueue, and hand out and complete with several concurrent workers. The figures depend on the
//! disk (`synchronous=FULL` syncs every commit), so they are printed, never asserted.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{Enqueued, NewRun, RunState, Store, StoreResult, Transition, Trigger, priority};
use crate::clock::{Clock, SystemClock};

/// Distinct job names the benchmark spreads its runs over (one job runs one run at a time).
const BENCH_JOBS: usize = 64;

/// Result of [`queue_throughput`].
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Runs enqueued.
    pub runs: u64,
    /// Concurrent workers.
    pub workers: usize,
    /// Time to enqueue every run.
    pub enqueue_secs: f64,
    /// Time for the workers to claim and complete every run.
    pub drain_secs: f64,
    /// Runs enqueued per second.
    pub enqueue_per_sec: f64,
    /// Runs claimed and completed per second.
    pub claim_complete_per_sec: f64,
    /// Runs per second over both phases.
    pub total_per_sec: f64,
}

impl fmt::Display for ThroughputReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} runs, {} workers: enqueue {:.0}/s ({:.2} s), claim+complete {:.0}/s ({:.2} s), \
             total {:.0} jobs/s",
            self.runs,
            self.workers,
            self.enqueue_per_sec,
            self.enqueue_secs,
            self.claim_complete_per_sec,
            self.drain_secs,
            self.total_per_sec
        )
    }
}

fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        f64::INFINITY
    }
}

/// Opens the store at `url` (migrating it), enqueues `runs` runs over 64 jobs from `workers`
/// concurrent tasks, then lets `workers` concurrent workers claim and complete runs until all of
/// them are done. Use a fresh database: runs already queued there are drained too.
pub async fn queue_throughput(
    url: &str,
    runs: usize,
    workers: usize,
) -> StoreResult<ThroughputReport> {
    let store = super::open(url).await?;
    let workers = workers.max(1);
    let clock = SystemClock;

    let started = Instant::now();
    let inserted = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let store = Arc::clone(&store);
        let inserted = Arc::clone(&inserted);
        tasks.spawn(async move {
            for index in (worker..runs).step_by(workers) {
                let now = clock.now();
                let run = NewRun {
                    job_name: format!("bench-{}", index % BENCH_JOBS),
                    kind: "bench".to_owned(),
                    trigger: Trigger::Manual,
                    fire_time: None,
                    unique_key: Uuid::new_v4().to_string(),
                    priority: priority::MANUAL,
                    run_after: now,
                    max_attempts: 3,
                    retry_initial: Duration::from_secs(1),
                    retry_max: Duration::from_secs(60),
                    state: RunState::Queued,
                    note: None,
                };
                if let Enqueued::Inserted(_) = store.enqueue(run, now).await? {
                    inserted.fetch_add(1, Ordering::Relaxed);
                }
            }
            StoreResult::Ok(())
        });
    }
    join_all(&mut tasks).await?;
    let enqueue_secs = started.elapsed().as_secs_f64();
    let target = inserted.load(Ordering::Relaxed);

    let drain_started = Instant::now();
    let completed = Arc::new(AtomicU64::new(0));
    for worker in 0..workers {
        let store = Arc::clone(&store);
        let completed = Arc::clone(&completed);
        tasks.spawn(async move { work(store.as_ref(), worker, &completed, target).await });
    }
    join_all(&mut tasks).await?;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let done = completed.load(Ordering::Relaxed);

    Ok(ThroughputReport {
        runs: target,
        workers,
        enqueue_secs,
        drain_secs,
        enqueue_per_sec: per_sec(target, enqueue_secs),
        claim_complete_per_sec: per_sec(done, drain_secs),
        total_per_sec: per_sec(done, enqueue_secs + drain_secs),
    })
}

/// One benchmark worker: claim → complete until `target` runs are completed in total.
async fn work(
    store: &dyn Store,
    worker: usize,
    completed: &AtomicU64,
    target: u64,
) -> StoreResult<()> {
    let clock = SystemClock;
    let owner = format!("bench-worker-{worker}");
    let lease = Duration::from_secs(60);
    loop {
        match store
            .claim(&owner, clock.now(), lease, super::ClaimFilter::default())
            .await?
        {
            Some(run) => {
                let progress = json!({ "items": 1 });
                store
                    .finish(
                        run.id,
                        &owner,
                        Transition::Complete { progress },
                        clock.now(),
                    )
                    .await?;
                completed.fetch_add(1, Ordering::Relaxed);
            }
            // Nothing claimable: either done, or the rest belongs to jobs running elsewhere.
            None if completed.load(Ordering::Relaxed) >= target => return Ok(()),
            None => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

async fn join_all(tasks: &mut tokio::task::JoinSet<StoreResult<()>>) -> StoreResult<()> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            // A panicking worker is a bug: re-raise it here rather than report figures.
            Err(join_error) if join_error.is_panic() => {
                std::panic::resume_unwind(join_error.into_panic())
            }
            Err(join_error) => {
                first_error.get_or_insert(super::StoreError::Io {
                    path: "benchmark task".to_owned(),
                    source: std::io::Error::other(join_error.to_string()),
                });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_throughput_drains_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let report = queue_throughput(&url, 60, 3).await.unwrap();
        assert_eq!(report.runs, 60);
        assert_eq!(report.workers, 3);
        assert!(report.claim_complete_per_sec > 0.0);
        let store = crate::store::open(&url).await.unwrap();
        let counts = store.count_by_state().await.unwrap();
        let completed = counts
            .iter()
            .find(|(s, _)| *s == RunState::Completed)
            .unwrap()
            .1;
        assert_eq!(completed, 60);
        let active: i64 = counts
            .iter()
            .filter(|(s, _)| !s.is_terminal())
            .map(|(_, n)| n)
            .sum();
        assert_eq!(active, 0);
    }
}
