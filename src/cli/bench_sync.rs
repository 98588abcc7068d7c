//! `asana-worker bench sync`: a full sync of a generated workspace through the real daemon,
//! then an incremental run after `--changes` random changes, and, in the same run, a
//! sequential page walk of the same data (one request at a time, as a single-threaded
//! connector reads it).
//!
//! The simulator runs in this process with `--latency-ms` of simulated latency per request and
//! `--time-scale` (simulated time runs that many times faster, quota windows included; the
//! daemon's budget is told the same scale). The daemon is a child process (this binary's
//! `run`), so its CPU time and peak RSS (`/proc/PID/status` `VmHWM`) are its own. Figures:
//! requests made, simulated time, the share of the quota bound (requests over the most a
//! perfect client could start in the same span under the sliding 60 s window:
//! `N × (1 + span / 60 s)`, capped by the work itself), 429s, worker CPU per 1,000 rows
//! written, and peak RSS. Per-task collections (stories, attachments, time entries) cost one
//! request per task each; `--all-resources` includes them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use crate::asana::{AsanaClient, ClientConfig};
use crate::budget::{Budget, BudgetConfig, Tier};
use crate::jobs::sync::walk;
use crate::sim::{SimConfig, SimServer};

/// Arguments of `bench sync`.
#[derive(Debug, Args)]
pub struct SyncBenchArgs {
    /// Projects in the generated workspace.
    #[arg(long, default_value_t = 500)]
    pub projects: usize,
    /// Top-level tasks per project (subtasks come on top).
    #[arg(long, default_value_t = 100)]
    pub tasks_per_project: usize,
    /// Simulated latency of every request, in simulated milliseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Simulated time runs this many times faster than real time (the worker's own CPU time
    /// counts this many times in simulated time: higher is quicker but less exact).
    #[arg(long, default_value_t = 5.0)]
    pub time_scale: f64,
    /// Random changes made before the incremental run.
    #[arg(long, default_value_t = 1000)]
    pub changes: u64,
    /// Also sync stories, attachments and time entries (one request per task each).
    #[arg(long)]
    pub all_resources: bool,
    /// The job's `concurrency` (projects, and per-task reads, in flight).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Skip the sequential walk (it takes as long as its requests' latency adds up to).
    #[arg(long)]
    pub no_walk: bool,
}

/// The resources of the benchmark's job.
fn resources(all: bool) -> &'static str {
    if all {
        ""
    } else {
        "resources = [\"workspace\", \"users\", \"teams\", \"team_memberships\", \"tags\", \"custom_fields\", \"projects\", \"portfolios\", \"goals\", \"project_memberships\", \"sections\", \"tasks\", \"status_updates\"]\n"
    }
}

/// One measured run of a job.
pub(super) struct Measured {
    /// Requests the job's token made.
    pub(super) requests: u64,
    /// Of which answered 429.
    pub(super) rejected: u64,
    /// The run's wall time in simulated seconds.
    pub(super) sim_secs: f64,
    /// The daemon's CPU time during the run.
    pub(super) cpu: Duration,
    /// Rows written (sync).
    pub(super) rows: u64,
    /// The run's final figures.
    pub(super) progress: Value,
}

impl Measured {
    /// Requests over the most a perfect client could start in the span (the formula of
    /// `bench budget`).
    fn quota_share(&self, limit: f64) -> f64 {
        self.requests as f64 / super::bench::quota_bound(limit, self.sim_secs)
    }
}

/// Runs the benchmark.
pub async fn run(args: SyncBenchArgs) -> anyhow::Result<u8> {
    let mut config = super::common::generated_world(
        args.projects,
        args.tasks_per_project,
        args.latency_ms,
        args.time_scale,
    );
    let mut tokens = SimConfig::default_tokens();
    let mut walker = tokens[0].clone();
    walker.name = "walker".into();
    walker.secret = Some("sim-walker-0001".into());
    tokens.push(walker);
    config.tokens = tokens;
    println!(
        "Generating {} projects x {} tasks…",
        args.projects, args.tasks_per_project
    );
    let sim = SimServer::start(config)
        .await
        .context("starting the simulator")?;
    let (tasks, workspace) = {
        let world = sim.state().world();
        (world.tasks.len(), world.workspace.gid.clone())
    };
    println!(
        "World: {tasks} tasks and subtasks; latency {} ms (simulated), time scale {}",
        args.latency_ms, args.time_scale
    );
    let dir = tempfile::Builder::new()
        .prefix("asana-worker-bench-sync-")
        .tempdir()?;
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir(&jobs_dir)?;
    let mirror = dir.path().join("mirror.sqlite");
    std::fs::write(
        jobs_dir.join("sync.toml"),
        format!(
            "name = \"sync\"\nkind = \"sync\"\nevery = \"365d\"\ncredential = \"sa\"\ntimeout = \"6h\"\n\n[settings]\nworkspace = \"{workspace}\"\nconcurrency = {}\n{}\n[settings.sink]\ntype = \"sqlite\"\npath = \"{}\"\n",
            args.concurrency,
            resources(args.all_resources),
            mirror.display()
        ),
    )?;
    let (config_path, port) = super::common::write_bench_config(dir.path(), &sim, args.time_scale)?;
    let daemon =
        super::common::BenchDaemon::start(&config_path, &dir.path().join("daemon.log"), port)
            .await?;
    let pid = daemon.pid();
    println!(
        "Daemon pid {pid} ready; resident {:.1} MiB before the first run",
        super::common::process_status_kib(pid, "VmRSS:") as f64 / 1024.0
    );
    let limit = 1500.0;
    let full = measure(&sim, &config_path, "sync", pid, args.time_scale).await?;
    report("Full sync", &full, limit);
    let rss_full = super::common::process_status_kib(pid, "VmHWM:");
    println!(
        "  peak RSS of the daemon: {:.1} MiB",
        rss_full as f64 / 1024.0
    );

    let admin = reqwest::Client::new();
    admin
        .post(format!("{}/_sim/mutate", sim.origin()))
        .json(&serde_json::json!({"seed": 7, "count": args.changes}))
        .send()
        .await?
        .error_for_status()
        .context("making the changes")?;
    let incremental = measure(&sim, &config_path, "sync", pid, args.time_scale).await?;
    report(
        &format!("Incremental run after {} changes", args.changes),
        &incremental,
        limit,
    );
    println!(
        "  {:.2} requests per change; {:.1}% of the full sync's requests",
        incremental.requests as f64 / args.changes.max(1) as f64,
        100.0 * incremental.requests as f64 / full.requests.max(1) as f64
    );
    let rss = super::common::process_status_kib(pid, "VmHWM:");
    println!("  peak RSS of the daemon: {:.1} MiB", rss as f64 / 1024.0);

    if !args.no_walk {
        let settings = crate::jobs::sync::SyncSettings {
            workspace: crate::config::values::Gid::parse(&workspace).map_err(anyhow::Error::msg)?,
            resources: if args.all_resources {
                crate::jobs::sync::Resource::ALL.to_vec()
            } else {
                sequential_resources()
            },
            projects: Vec::new(),
            teams: Vec::new(),
            deletes: Default::default(),
            sweep_every: Duration::from_secs(3600),
            concurrency: 1,
            sink: crate::sinks::table::TableSinkSettings::Sqlite(
                crate::sinks::table::SqliteTableSettings {
                    path: mirror.clone(),
                },
            ),
        };
        let mut budget = BudgetConfig::new("walker", Tier::Paid);
        budget.time_scale = args.time_scale;
        let client = AsanaClient::new(
            ClientConfig::with_base_url(sim.base_url()),
            "sim-walker-0001".to_string().into(),
            Budget::new(budget)?,
        )?;
        let started = Instant::now();
        let walked = walk::walk(&client, &settings).await?;
        let sim_secs = started.elapsed().as_secs_f64() * args.time_scale;
        println!(
            "Sequential page walk of the same data: {} requests in {:.0} s simulated ({:.1} min)",
            walked.requests,
            sim_secs,
            sim_secs / 60.0
        );
        println!(
            "  the sync's full pass was {:.1}x faster",
            sim_secs / full.sim_secs.max(f64::EPSILON)
        );
    }
    let meets = full.quota_share(limit) >= 0.95
        && full.rejected == 0
        && incremental.rejected == 0
        && rss < 100 * 1024;
    println!(
        "Targets (>= 95 % of the quota bound, 0 429s, peak RSS < 100 MiB): {}",
        if meets { "met" } else { "MISSED" }
    );
    drop(daemon);
    Ok(super::EXIT_OK)
}

fn sequential_resources() -> Vec<crate::jobs::sync::Resource> {
    use crate::jobs::sync::Resource;
    Resource::ALL
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                Resource::Stories | Resource::Attachments | Resource::TimeTrackingEntries
            )
        })
        .collect()
}

/// Runs the job `job` once through the daemon (`jobs run JOB --wait`) and measures it: the
/// requests of the simulator's `service-account` token, simulated time, the daemon's CPU.
pub(super) async fn measure(
    sim: &SimServer,
    config: &std::path::Path,
    job: &str,
    pid: u32,
    time_scale: f64,
) -> anyhow::Result<Measured> {
    sim.state().limits.reset();
    let cpu_before = super::common::process_cpu(pid);
    let started = Instant::now();
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "jobs",
            "run",
            job,
            "--wait",
            "--timeout-secs",
            "36000",
            "--config",
        ])
        .arg(config)
        .output()
        .await?;
    let wall = started.elapsed();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        let log = config.with_file_name("daemon.log");
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        bail!(
            "the {job} run failed:\n{text}\n--- the daemon's log, last lines ---\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let progress: Value = text
        .lines()
        .rev()
        .find_map(|l| l.find('{').and_then(|i| serde_json::from_str(&l[i..]).ok()))
        .unwrap_or(Value::Null);
    let token = sim.token("service-account").context("the job's token")?;
    let stats = sim.state().limits.stats(&token);
    Ok(Measured {
        requests: stats.requests,
        rejected: stats.rejected_total(),
        sim_secs: wall.as_secs_f64() * time_scale,
        cpu: super::common::process_cpu(pid).saturating_sub(cpu_before),
        rows: progress["rows_written"].as_u64().unwrap_or(0),
        progress,
    })
}

fn report(what: &str, run: &Measured, limit: f64) {
    println!(
        "{what}: {} requests in {:.0} s simulated ({:.1} min), {:.1}% of the quota bound, {} 429s",
        run.requests,
        run.sim_secs,
        run.sim_secs / 60.0,
        100.0 * run.quota_share(limit),
        run.rejected
    );
    println!(
        "  worker CPU {:.2} s, {:.1} ms per 1,000 rows written ({} rows); figures {}",
        run.cpu.as_secs_f64(),
        1000.0 * run.cpu.as_secs_f64() / (run.rows.max(1) as f64 / 1000.0),
        run.rows,
        run.progress
    );
}
