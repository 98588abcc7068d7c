//! `asana-worker bench budget`: measures how fully the rate budget spends a token's quota against
//! the in-process simulator with time scaling, and what it costs in CPU and memory.
//!
//! Scenarios (each with four jobs of different sizes sharing one token, enough work for several
//! quota windows):
//! - `a`: a paid token (1,500/min);
//! - `b`: the same with 50 ms (simulated) latency per request;
//! - `c`: a free token (150/min);
//! - `d`: a paid token of which another client spends part of the quota, sim-side.
//!
//! Utilization is the number of requests over the most a perfect client could have started in
//! the same span under a sliding 60 s window: `N × (1 + span / 60 s)`, where `span` runs from the
//! first to the last request start (a perfect client starts N at once, then N more each time the
//! window slides past them). The simulator runs on its own runtime thread(s) so the worker's CPU
//! time can be told apart from the simulator's.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::asana::{ApiRequest, AsanaClient, CallContext, ClientConfig, Query};
use crate::budget::{Budget, BudgetConfig, Priority, Tier};
use crate::sim::limits::TokenStats;
use crate::sim::{SimConfig, SimServer};

/// The most requests a perfect client could start within `span_sim_secs` (simulated) under a
/// sliding 60 s window of `limit` requests: `limit × (1 + span / 60 s)`. Every benchmark's
/// "share of the quota bound" divides by it.
pub(super) fn quota_bound(limit: f64, span_sim_secs: f64) -> f64 {
    limit * (1.0 + span_sim_secs / 60.0)
}

/// Name given to the simulator's runtime threads, to subtract their CPU time.
const SIM_THREAD: &str = "bench-sim";

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub target: BenchTarget,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Simple GETs per second the simulator serves on one core.
    Sim(super::bench_sim::BenchSimArgs),
    /// Queue throughput: enqueue, claim and complete runs on SQLite (or `--url`).
    Queue(super::bench_daemon::QueueBenchArgs),
    /// Scheduler overhead with many schedules.
    Scheduler(super::bench_daemon::SchedulerBenchArgs),
    /// The per-token rate budget against the simulator: utilization, 429s, CPU, memory.
    Budget(BudgetBenchArgs),
    /// Downloading a large export from the simulator: peak RSS and speed against curl.
    ExportDownload(super::bench_export::ExportBenchArgs),
    /// A 90-day audit-log backfill: sequential page walk versus concurrent time slices.
    AuditLog(super::bench_audit::AuditBenchArgs),
    /// The status page's cost: the daemon's CPU while browsers poll it.
    Status(super::bench_status::StatusBenchArgs),
    /// A full and an incremental sync through the daemon, against a sequential page walk.
    Sync(super::bench_sync::SyncBenchArgs),
    /// A digest of many projects from task lists, task search and a sync mirror.
    Digest(super::bench_digest::DigestBenchArgs),
}

/// Arguments of `bench budget`.
#[derive(Debug, Args)]
pub struct BudgetBenchArgs {
    /// Simulated time runs this many times faster (windows and Retry-After shrink with it).
    /// Every real millisecond the machine spends becomes this many simulated ones, so a high
    /// factor measures the CPU more than the budget: 20 keeps a run near ten seconds per scenario
    /// while CPU time stays small next to a window.
    #[arg(long, default_value_t = 20.0)]
    pub time_scale: f64,
    /// Quota windows of work per scenario (the work is this many times the token's per-minute
    /// limit).
    #[arg(long, default_value_t = 4)]
    pub windows: u32,
    /// Concurrent callers per job.
    #[arg(long, default_value_t = 25)]
    pub callers: usize,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
    /// Share of the quota the other client spends in scenario d.
    #[arg(long, default_value_t = 0.2)]
    pub external_share: f64,
    /// Exit with status 1 when a scenario misses its target.
    #[arg(long)]
    pub strict: bool,
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Paid token, four jobs.
    A,
    /// Paid token, 50 ms simulated latency.
    B,
    /// Free token.
    C,
    /// Paid token shared with another client.
    D,
}

impl Scenario {
    fn describe(self) -> &'static str {
        match self {
            Scenario::A => "a: paid, 4 jobs",
            Scenario::B => "b: paid, 50 ms latency",
            Scenario::C => "c: free, 4 jobs",
            Scenario::D => "d: paid, shared token",
        }
    }
    fn token(self) -> (&'static str, Tier) {
        match self {
            Scenario::C => ("pat-free", Tier::Free),
            _ => ("service-account", Tier::Paid),
        }
    }
}

struct Outcome {
    scenario: Scenario,
    limit: u32,
    requests: u64,
    sim: TokenStats,
    utilization: f64,
    external: u64,
    span_sim_secs: f64,
    wall: Duration,
    worker_cpu: Duration,
    cooldowns: u64,
    job_finish_sim_secs: Vec<(String, f64)>,
    met: bool,
}

/// Runs `bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    match args.target {
        BenchTarget::Budget(args) => budget(args).await,
        BenchTarget::AuditLog(args) => super::bench_audit::run(args).await,
        BenchTarget::Queue(args) => super::bench_daemon::queue(args).await,
        BenchTarget::Scheduler(args) => super::bench_daemon::scheduler(args).await,
        BenchTarget::ExportDownload(args) => super::bench_export::run(args).await,
        BenchTarget::Status(args) => super::bench_status::run(args).await,
        BenchTarget::Sync(args) => super::bench_sync::run(args).await,
        BenchTarget::Digest(args) => super::bench_digest::run(args).await,
        // Builds its own runtimes (simulator on one thread, load on another); the CLI runs it
        // before creating one, this arm only serves callers already inside a runtime.
        BenchTarget::Sim(args) => {
            tokio::task::spawn_blocking(move || super::bench_sim::run(args)).await?
        }
    }
}

async fn budget(args: BudgetBenchArgs) -> anyhow::Result<u8> {
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        bail!("--time-scale must be a positive number");
    }
    let scenarios = if args.scenarios.is_empty() {
        vec![Scenario::A, Scenario::B, Scenario::C, Scenario::D]
    } else {
        args.scenarios.clone()
    };
    let sim_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SIM_THREAD)
        .enable_all()
        .build()
        .context("cannot start the simulator's runtime")?;
    println!(
        "Rate budget benchmark: time scale {}x, {} windows of work per scenario, 4 jobs x {} callers",
        args.time_scale, args.windows, args.callers
    );
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        let outcome = run_scenario(&sim_runtime, &args, scenario).await?;
        outcomes.push(outcome);
    }
    sim_runtime.shutdown_background();
    print_table(&outcomes);
    println!(
        "Peak RSS of the process (worker + in-process simulator): {}",
        peak_rss()
    );
    let all_met = outcomes.iter().all(|o| o.met);
    println!(
        "Targets (a-c: utilization >= 95 % with zero 429s; d: >= 95 % of what the other client leaves, <= 20 429s per 6,000 requests): {}",
        if all_met { "met" } else { "MISSED" }
    );
    Ok(if args.strict && !all_met {
        super::EXIT_FAILURE
    } else {
        super::EXIT_OK
    })
}

async fn run_scenario(
    sim_runtime: &tokio::runtime::Runtime,
    args: &BudgetBenchArgs,
    scenario: Scenario,
) -> anyhow::Result<Outcome> {
    let mut config = SimConfig {
        time_scale: args.time_scale,
        ..SimConfig::default()
    };
    config.timing.audit_events_per_minute = 0.0;
    config.timing.activity_per_minute = 0.0;
    if scenario == Scenario::B {
        config.faults.latency_ms = 50;
    }
    let server = sim_runtime
        .spawn(SimServer::start(config))
        .await
        .context("simulator task failed")??;
    let (token_name, tier) = scenario.token();
    let token = server
        .token(token_name)
        .with_context(|| format!("the simulator has no token {token_name}"))?;
    let budget = Budget::new(BudgetConfig {
        time_scale: args.time_scale,
        ..BudgetConfig::new(token_name, tier)
    })?;
    let limit = budget.config().limit();
    let client = AsanaClient::new(
        ClientConfig::with_base_url(server.base_url()),
        SecretString::from(token.clone()),
        budget.clone(),
    )?;

    // Scenario d: another client spends part of the quota at a steady pace, sim-side.
    let stop_external = CancellationToken::new();
    let external = if scenario == Scenario::D {
        let per_minute = (f64::from(limit) * args.external_share).round() as u32;
        let state = server.state().clone();
        let token = token.clone();
        let stop = stop_external.clone();
        let tick = Duration::from_secs_f64(1.0 / args.time_scale);
        let time_scale = args.time_scale;
        Some(tokio::spawn(async move {
            let mut spent = 0u64;
            let started = Instant::now();
            let mut interval = tokio::time::interval(tick);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = interval.tick() => {}
                }
                // Spend what is due by now, so the pace holds even if ticks are late.
                let due = (started.elapsed().as_secs_f64() * time_scale / 60.0
                    * f64::from(per_minute)) as u64;
                if due > spent {
                    let count = (due - spent) as u32;
                    state
                        .limits
                        .consume_external(&token, count, state.clock.sim_secs());
                    spent = due;
                }
            }
            spent
        }))
    } else {
        None
    };

    let total = u64::from(limit) * u64::from(args.windows);
    // Four jobs of different sizes: 40 %, 30 %, 20 %, 10 % of the work.
    let shares = [
        ("backfill", 4u64),
        ("sync", 3),
        ("digest", 2),
        ("hourly", 1),
    ];
    let cpu_before = worker_cpu();
    let started = Instant::now();
    let mut handles = Vec::new();
    for (job, share) in shares {
        let count = total * share / 10;
        let client = client.for_job(CallContext::new(job, Priority::Scheduled));
        let callers = args.callers;
        handles.push(tokio::spawn(async move {
            futures::stream::iter(0..count)
                .map(|i| {
                    let client = client.clone();
                    async move {
                        if i % 2 == 0 {
                            client.me(&["name"]).await.map(|_| ())
                        } else {
                            let query = Query::new().param("limit", "10").opt_fields(&["name"]);
                            client
                                .execute(&ApiRequest::get("/users", query))
                                .await
                                .map(|_| ())
                        }
                    }
                })
                .buffer_unordered(callers)
                .try_collect::<Vec<()>>()
                .await
                .map(|_| (job.to_string(), started.elapsed()))
        }));
    }
    let mut job_finish_sim_secs = Vec::new();
    for handle in handles {
        let (job, finished) = handle.await.context("job task failed")??;
        job_finish_sim_secs.push((job, finished.as_secs_f64() * args.time_scale));
    }
    let wall = started.elapsed();
    let worker_cpu = worker_cpu().saturating_sub(cpu_before);
    stop_external.cancel();
    let external = match external {
        Some(handle) => handle.await.unwrap_or(0),
        None => 0,
    };
    let stats = budget.stats();
    let sim = server.state().limits.stats(&token);
    sim_runtime.spawn(server.shutdown());

    let span = match (stats.first_grant, stats.last_grant) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    };
    let span_sim_secs = span.as_secs_f64() * args.time_scale;
    let capacity = quota_bound(f64::from(limit), span_sim_secs);
    let utilization = sim.accepted as f64 / capacity;
    let rejected = sim.rejected_total();
    let met = match scenario {
        // What is left to the worker is the quota minus the other client's share: at least
        // 95 % of it, with at most 20 429s per 6,000 requests.
        Scenario::D => {
            sim.accepted == total
                && utilization / (1.0 - args.external_share) >= 0.95
                && rejected as f64 <= 20.0 * total as f64 / 6000.0
        }
        _ => utilization >= 0.95 && rejected == 0 && sim.accepted == total,
    };
    Ok(Outcome {
        scenario,
        limit,
        requests: sim.accepted,
        utilization,
        external,
        span_sim_secs,
        wall,
        worker_cpu,
        cooldowns: stats.cooldowns,
        job_finish_sim_secs,
        met,
        sim,
    })
}

fn print_table(outcomes: &[Outcome]) {
    println!();
    println!(
        "| scenario | limit/min | requests | 429s | utilization | with other client | req/min (sim) | span (sim s) | wall s | peak reads | peak window | worker CPU ms / 1,000 req | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let per_minute = if o.span_sim_secs > 0.0 {
            o.requests as f64 / (o.span_sim_secs / 60.0)
        } else {
            0.0
        };
        let combined = if o.external > 0 {
            let capacity = quota_bound(f64::from(o.limit), o.span_sim_secs);
            format!(
                "{:.1} %",
                (o.requests + o.external) as f64 / capacity * 100.0
            )
        } else {
            "-".into()
        };
        let cpu_per_k =
            o.worker_cpu.as_secs_f64() * 1000.0 / (o.sim.requests.max(1) as f64 / 1000.0);
        println!(
            "| {} | {} | {} | {} | {:.1} % | {} | {:.0} | {:.1} | {:.2} | {} | {} | {:.0} | {} |",
            o.scenario.describe(),
            o.limit,
            o.requests,
            o.sim.rejected_total(),
            o.utilization * 100.0,
            combined,
            per_minute,
            o.span_sim_secs,
            o.wall.as_secs_f64(),
            o.sim.peak_concurrent_reads,
            o.sim.peak_window_requests,
            cpu_per_k,
            if o.met { "met" } else { "MISSED" },
        );
    }
    println!();
    for o in outcomes {
        let finishes = o
            .job_finish_sim_secs
            .iter()
            .map(|(job, secs)| format!("{job} {secs:.0}s"))
            .collect::<Vec<_>>()
            .join(", ");
        let rejected = o
            .sim
            .rejected
            .iter()
            .map(|(cause, n)| format!("{cause:?}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{}: jobs finished at (sim) {finishes}; pauses {}; 429s by cause [{}]; other client spent {}",
            o.scenario.describe(),
            o.cooldowns,
            rejected,
            o.external
        );
    }
}

/// CPU time (user + system) of the process minus the simulator's threads, from `/proc`.
fn worker_cpu() -> Duration {
    let ticks_per_sec = 100.0; // USER_HZ on Linux.
    let parse = |stat: &str| -> Option<(String, u64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let name = stat.get(open + 1..close)?.to_string();
        let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
        // After the name: state is field 3, utime 14 and stime 15 (1-based over the whole line).
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((name, utime + stime))
    };
    let total = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse(&s))
        .map(|(_, t)| t)
        .unwrap_or(0);
    let mut sim = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Some((name, ticks)) = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|s| parse(&s))
                && name.starts_with(SIM_THREAD)
            {
                sim += ticks;
            }
        }
    }
    Duration::from_secs_f64(total.saturating_sub(sim) as f64 / ticks_per_sec)
}

/// Peak resident set size (`VmHWM`), as `/proc/self/status` prints it.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown (no /proc)".into())
}
