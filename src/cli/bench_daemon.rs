//! `asana-worker bench queue` and `bench scheduler`: the durable queue's throughput (enqueue →
//! claim → complete) and the scheduler's overhead with many schedules.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use crate::clock::{ManualClock, SharedClock};
use crate::config::jobs::ValidationContext;
use crate::jobs::{Job as JobSpec, Kind, parse_job};
use crate::scheduler::{JobSet, Scheduler};

/// Arguments of `bench queue`.
#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Runs to push through the queue.
    #[arg(long, default_value_t = 5_000)]
    pub runs: usize,
    /// Concurrent workers claiming and completing.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Database URL; a fresh SQLite file in a temporary directory by default.
    #[arg(long)]
    pub url: Option<String>,
}

/// Arguments of `bench scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerBenchArgs {
    /// Number of job schedules.
    #[arg(long, default_value_t = 10_000)]
    pub schedules: usize,
}

/// Runs the queue benchmark.
pub async fn queue(args: QueueBenchArgs) -> anyhow::Result<u8> {
    let dir = tempfile::tempdir()?;
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.sqlite").display()));
    println!(
        "Queue throughput: {} runs, {} workers, {}",
        args.runs,
        args.workers,
        crate::daemon::redact_url(&url)
    );
    let report = crate::store::bench::queue_throughput(&url, args.runs, args.workers)
        .await
        .context("running the queue benchmark")?;
    println!("{report}");
    println!(
        "  target 1,000 jobs/s: {} (ratio {:.2})",
        if report.total_per_sec >= 1000.0 {
            "met"
        } else {
            "NOT met"
        },
        report.total_per_sec / 1000.0
    );
    Ok(super::EXIT_OK)
}

fn bench_job(i: usize) -> anyhow::Result<JobSpec> {
    let source = format!(
        "name = \"job-{i}\"\nkind = \"credential_check\"\nschedule = \"{} * * * *\"\ncredential = \"bench\"\noverlap = \"queue\"\n",
        i % 60
    );
    let context = ValidationContext {
        credentials: ["bench".to_string()].into_iter().collect(),
        ..ValidationContext::default()
    };
    parse_job(Path::new("bench.toml"), &source, &context)
        .map_err(|problems| anyhow::anyhow!("benchmark job invalid: {problems:?}"))
}

/// Runs the scheduler benchmark: the first tick (creates every schedule), idle ticks (nothing
/// due) and a tick where one minute's share of the jobs is due.
pub async fn scheduler(args: SchedulerBenchArgs) -> anyhow::Result<u8> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.sqlite").display());
    let store = crate::store::open(&url).await?;
    let jobs: Vec<JobSpec> = (0..args.schedules)
        .map(bench_job)
        .collect::<Result<_, _>>()?;
    let start =
        chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:30Z")?.with_timezone(&chrono::Utc);
    let clock = ManualClock::new(start);
    let (_jobs_tx, jobs_rx) = watch::channel::<JobSet<Kind>>(Arc::new(jobs));
    let shared: SharedClock = Arc::new(clock.clone());
    let scheduler = Scheduler::new(
        store.clone(),
        shared,
        jobs_rx,
        "bench".into(),
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    println!(
        "Scheduler overhead: {} cron schedules (one fire per hour each, spread over the minutes), SQLite",
        args.schedules
    );
    let started = Instant::now();
    scheduler.tick().await?;
    let first = started.elapsed();
    let mut idle = Vec::new();
    for _ in 0..5 {
        clock.advance(chrono::Duration::seconds(1));
        let started = Instant::now();
        let report = scheduler.tick().await?;
        idle.push(started.elapsed());
        anyhow::ensure!(report.enqueued == 0, "an idle tick enqueued runs");
    }
    // 10:01:00: the jobs scheduled at minute 1 (one in sixty) are due.
    clock.set(start + chrono::Duration::seconds(30));
    let started = Instant::now();
    let report = scheduler.tick().await?;
    let due = started.elapsed();
    let idle_avg = idle.iter().sum::<std::time::Duration>() / idle.len() as u32;
    let per_job_us = idle_avg.as_secs_f64() * 1e6 / args.schedules as f64;
    println!(
        "  first tick (creates every schedule)  {:>9.1} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "  idle tick (nothing due), average     {:>9.1} ms  ({per_job_us:.2} µs per schedule)",
        idle_avg.as_secs_f64() * 1e3
    );
    println!(
        "  tick with {:>5} fires due            {:>9.1} ms",
        report.enqueued,
        due.as_secs_f64() * 1e3
    );
    println!(
        "  share of a 1 s tick interval spent idle: {:.1} %",
        idle_avg.as_secs_f64() * 100.0
    );
    Ok(super::EXIT_OK)
}
