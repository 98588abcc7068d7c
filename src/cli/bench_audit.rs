//! `asana-worker bench audit-log`: a long audit-log backfill against the in-process simulator,
//! once as one sequential page walk (`backfill_slices = 1`) and once split into concurrent time
//! slices, through the real daemon (SQLite store, file sink). Prints both durations in simulated
//! time, the ratio, and the share of the token's quota each used.
//!
//! Simulated time runs `--time-scale` times faster than real time: the 50 ms latency and the
//! 1,500 requests/min paid quota shrink with it, but so does everything the worker does on the
//! machine (JSON, fsync, SQLite) grow in simulated time, so a moderate factor keeps the figures
//! honest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::settings::{CredentialKind, CredentialSettings, CredentialTier, Settings};
use crate::daemon::{self, DaemonHandle};
use crate::sim::config::FaultSpec;
use crate::sim::{SimConfig, SimServer};
use crate::store::{Enqueued, RunState};

/// Arguments of `bench audit-log`.
#[derive(Debug, Args)]
pub struct AuditBenchArgs {
    /// Audit events in the simulator, spread over `--days`.
    #[arg(long, default_value_t = 300_000)]
    pub events: usize,
    /// Days the events span (the job starts 90 days back).
    #[arg(long, default_value_t = 89)]
    pub days: u32,
    /// Simulated latency per request, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Simulated time runs this many times faster.
    #[arg(long, default_value_t = 5.0)]
    pub time_scale: f64,
    /// Time slices of the sliced backfill.
    #[arg(long, default_value_t = 16)]
    pub slices: u32,
}

/// What one backfill measured.
#[derive(Debug)]
struct Figures {
    slices: u32,
    sim_secs: f64,
    events: u64,
    requests: u64,
    rejected: u64,
}

/// Runs the benchmark.
pub async fn run(args: AuditBenchArgs) -> anyhow::Result<u8> {
    if args.days > 89 || args.days == 0 {
        bail!("--days must be 1 to 89 (Asana keeps 90 days of audit events)");
    }
    println!(
        "Audit-log backfill: {} events over {} days, {} ms latency, paid token (1,500 requests/min), time scale {}",
        args.events, args.days, args.latency_ms, args.time_scale
    );
    let sequential = backfill(&args, 1).await?;
    print(&sequential);
    let sliced = backfill(&args, args.slices).await?;
    print(&sliced);
    println!(
        "Sliced backfill is {:.2}x faster than the sequential page walk",
        sequential.sim_secs / sliced.sim_secs.max(f64::EPSILON)
    );
    let complete = sequential.events == args.events as u64 && sliced.events == args.events as u64;
    if !complete {
        println!("UNEXPECTED: a backfill did not deliver every event exactly once");
    }
    Ok(if complete {
        super::EXIT_OK
    } else {
        super::EXIT_FAILURE
    })
}

fn print(f: &Figures) {
    let minutes = f.sim_secs / 60.0;
    // The most a perfect client could send in the span: the full quota per minute, plus the
    // first window's burst.
    let quota = 1500.0 * (1.0 + minutes);
    println!(
        "  {:>2} slice(s): {:>7.1} s simulated ({:.1} min), {} events, {} requests ({:.0}/min), {:.0}% of the quota, {} throttled",
        f.slices,
        f.sim_secs,
        minutes,
        f.events,
        f.requests,
        f.requests as f64 / minutes.max(f64::EPSILON),
        100.0 * f.requests as f64 / quota,
        f.rejected
    );
}

async fn backfill(args: &AuditBenchArgs, slices: u32) -> anyhow::Result<Figures> {
    let mut config = SimConfig {
        time_scale: args.time_scale,
        faults: FaultSpec {
            latency_ms: args.latency_ms,
            ..FaultSpec::default()
        },
        ..SimConfig::default()
    };
    config.world.audit_events = args.events;
    config.world.audit_backfill_days = args.days;
    config.timing.audit_events_per_minute = 0.0;
    config.timing.activity_per_minute = 0.0;
    let sim = SimServer::start(config)
        .await
        .context("starting the simulator")?;
    let dir = tempfile::Builder::new()
        .prefix("asana-worker-bench-audit-")
        .tempdir()?;
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir(&jobs_dir)?;
    let out = dir.path().join("out");
    std::fs::create_dir(&out)?;
    let workspace = sim.state().world().workspace.gid.clone();
    std::fs::write(
        jobs_dir.join("audit.toml"),
        format!(
            "name = \"audit\"\nkind = \"audit_log\"\nschedule = \"@yearly\"\ncredential = \"sa\"\ntimeout = \"6h\"\n\n[settings]\nworkspace = \"{workspace}\"\nstart = \"90d\"\nbackfill_slices = {slices}\n\n[settings.sink]\ntype = \"file\"\ndir = {:?}\ngzip = true\n",
            out.display().to_string()
        ),
    )?;
    let token = dir.path().join("sa.token");
    std::fs::write(&token, sim.token("service-account").context("sim token")?)?;
    let mut settings = Settings::default();
    settings.database.url = format!("sqlite://{}", dir.path().join("state.sqlite").display());
    settings.jobs.dir = jobs_dir;
    settings.asana.base_url = sim.base_url();
    settings.asana.time_scale = args.time_scale;
    settings.admin.enabled = false;
    settings.worker.poll_interval_ms = 50;
    settings.credentials.insert(
        "sa".into(),
        CredentialSettings {
            kind: CredentialKind::ServiceAccount,
            tier: CredentialTier::Paid,
            token_file: Some(token),
            token_env: None,
            requests_per_minute: None,
        },
    );
    let shutdown = CancellationToken::new();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel::<DaemonHandle>();
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(daemon::run(
            settings,
            Arc::new(SystemClock),
            shutdown,
            reload_rx,
            move |handle| {
                let _ = handle_tx.send(handle);
            },
        ))
    };
    let handle = handle_rx.await.context("the daemon did not start")?;
    let job = handle
        .jobs
        .borrow()
        .iter()
        .next()
        .cloned()
        .context("the job did not load")?;
    let now = SystemClock.now();
    let started = Instant::now();
    let Enqueued::Inserted(run) = handle
        .store
        .enqueue(crate::scheduler::manual_run(&job, now), now)
        .await?
    else {
        bail!("the run was not enqueued");
    };
    let run = loop {
        let run = handle
            .store
            .get_run(run.id)
            .await?
            .context("run vanished")?;
        if run.state.is_terminal() {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = task.await;
    if run.state != RunState::Completed {
        bail!("the backfill ended {}: {:?}", run.state, run.last_error);
    }
    let stats = sim
        .state()
        .limits
        .stats(&sim.token("service-account").unwrap_or_default());
    sim.shutdown().await;
    let report = crate::sinks::file::verify_stream_dir(&out.join("audit"))?;
    if !report.problems.is_empty() {
        bail!("verify found problems: {:?}", report.problems);
    }
    Ok(Figures {
        slices,
        sim_secs: elapsed.as_secs_f64() * args.time_scale,
        events: report.records + report.open_records,
        requests: stats.requests,
        rejected: stats.rejected_total(),
    })
}
