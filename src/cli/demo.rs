//! `asana-worker demo`: the daemon's main path on the embedded defaults, in under a minute.
//!
//! It starts the built-in simulator on a free loopback port, writes the simulator's tokens to
//! files (mode 0600) in a temporary directory, points a SQLite database in that directory and the
//! example jobs of `jobs/` at them, runs the daemon, triggers every job once, then revokes one
//! token in the simulator and triggers again to show a revoked credential being detected. It
//! prints a summary and removes the temporary directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::settings::{CredentialKind, CredentialSettings, CredentialTier, Settings};
use crate::daemon::{self, DaemonHandle};
use crate::sim::{SimConfig, SimServer};
use crate::store::{Enqueued, Run, RunState};

/// The example job files, embedded so the demo works from any directory.
const EXAMPLE_JOBS: &[(&str, &str)] = &[
    (
        "check-service-account.toml",
        include_str!("../../jobs/check-service-account.toml"),
    ),
    (
        "check-pat-paid.toml",
        include_str!("../../jobs/check-pat-paid.toml"),
    ),
    (
        "check-pat-free.toml",
        include_str!("../../jobs/check-pat-free.toml"),
    ),
    ("audit-log.toml", include_str!("../../jobs/audit-log.toml")),
    (
        "org-export.toml",
        include_str!("../../jobs/org-export.toml"),
    ),
    ("sync.toml", include_str!("../../jobs/sync.toml")),
    ("digest.toml", include_str!("../../jobs/digest.toml")),
];

/// The digest directory written in `jobs/digest.toml`, replaced by `digests` beside the
/// audit-log directory.
const DIGEST_DIR: &str = "/var/lib/asana-worker/digests";

/// The mirror written in `jobs/sync.toml`, replaced by `mirror.sqlite` beside the audit-log
/// directory.
const SYNC_MIRROR: &str = "/var/lib/asana-worker/mirror.sqlite";

/// The sink directory written in `jobs/audit-log.toml`, replaced by one in the demo's
/// temporary directory.
const AUDIT_LOG_DIR: &str = "/var/lib/asana-worker/audit-log";

/// The output directory written in `jobs/org-export.toml`, replaced likewise.
const EXPORT_DIR: &str = "/var/lib/asana-worker/exports";

/// The poll interval of `jobs/org-export.toml`, shortened so the demo's export (which the
/// simulator finishes in seconds) is seen done at once.
const EXPORT_POLL: (&str, &str) = ("poll_interval = \"1m\"", "poll_interval = \"1s\"");

/// The example job files of `jobs/` (name, text) pointed at a simulator's workspace, with their
/// audit-log sink and export directories moved to `audit_dir` and `export_dir` and the export's
/// poll interval shortened: what the demo runs, and what the status page's tests run.
pub fn example_jobs(
    workspace: &str,
    team: &str,
    audit_dir: &Path,
    export_dir: &Path,
) -> Vec<(&'static str, String)> {
    EXAMPLE_JOBS
        .iter()
        .map(|(name, text)| {
            (
                *name,
                text.replace("WORKSPACE_GID", workspace)
                    .replace("TEAM_GID", team)
                    .replace(
                        DIGEST_DIR,
                        &audit_dir.with_file_name("digests").display().to_string(),
                    )
                    .replace(AUDIT_LOG_DIR, &audit_dir.display().to_string())
                    .replace(EXPORT_DIR, &export_dir.display().to_string())
                    .replace(
                        SYNC_MIRROR,
                        &audit_dir
                            .with_file_name("mirror.sqlite")
                            .display()
                            .to_string(),
                    )
                    .replace(EXPORT_POLL.0, EXPORT_POLL.1),
            )
        })
        .collect()
}

/// Writes the example job files into `jobs_dir`, pointed at `sim`'s workspace and first team
/// (see [`example_jobs`]).
pub fn write_example_jobs(
    sim: &crate::sim::SimServer,
    jobs_dir: &Path,
    audit_dir: &Path,
    export_dir: &Path,
) -> std::io::Result<()> {
    let (workspace, team) = {
        let world = sim.state().world();
        (
            world.workspace.gid.clone(),
            world.teams.gids().first().cloned().unwrap_or_default(),
        )
    };
    for (name, text) in example_jobs(&workspace, &team, audit_dir, export_dir) {
        std::fs::write(jobs_dir.join(name), text)?;
    }
    Ok(())
}

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed of the simulated world.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the temporary directory (database, job files, token files) and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut sim_config = SimConfig {
        seed: args.seed,
        ..SimConfig::default()
    };
    sim_config.timing.activity_per_minute = 0.0;
    sim_config.timing.export_pending_secs = 1;
    sim_config.timing.export_running_secs = 2;
    // Small enough that the sync's first pass (about 3 requests per task) fits in one minute of
    // the service account's 1,500 requests beside the other jobs: the demo shows, it does not wait.
    sim_config.world.tasks_per_project = 12;
    let sim = SimServer::start(sim_config)
        .await
        .context("starting the simulator")?;
    println!("1. Simulator listening at {}", sim.base_url());

    let dir = tempfile::Builder::new()
        .prefix("asana-worker-demo-")
        .tempdir()?;
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir(&jobs_dir)?;
    let audit_dir = dir.path().join("audit-log");
    let export_dir = dir.path().join("exports");
    write_example_jobs(&sim, &jobs_dir, &audit_dir, &export_dir)?;
    let mut settings = Settings::default();
    settings.database.url = format!(
        "sqlite://{}",
        dir.path().join("asana-worker.sqlite").display()
    );
    settings.jobs.dir = jobs_dir.clone();
    settings.asana.base_url = sim.base_url();
    settings.admin.listen = "127.0.0.1:0".parse()?;
    settings.worker.poll_interval_ms = 100;
    settings.scheduler.tick_ms = 200;
    for (name, kind, tier) in [
        (
            "service-account",
            CredentialKind::ServiceAccount,
            CredentialTier::Paid,
        ),
        ("pat-paid", CredentialKind::Pat, CredentialTier::Paid),
        ("pat-free", CredentialKind::Pat, CredentialTier::Free),
    ] {
        let token = sim
            .token(name)
            .with_context(|| format!("simulator token {name}"))?;
        let path = dir.path().join(format!("{name}.token"));
        super::common::write_private(&path, &token)?;
        settings.credentials.insert(
            name.to_string(),
            CredentialSettings {
                kind,
                tier,
                token_file: Some(path),
                token_env: None,
                requests_per_minute: None,
            },
        );
    }
    println!(
        "2. Temporary directory {}: SQLite database, {} example jobs, token files (0600)",
        dir.path().display(),
        EXAMPLE_JOBS.len()
    );

    let shutdown = CancellationToken::new();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel::<DaemonHandle>();
    let daemon_task = {
        let shutdown = shutdown.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            daemon::run(
                settings,
                Arc::new(SystemClock),
                shutdown,
                reload_rx,
                move |handle| {
                    let _ = handle_tx.send(handle);
                },
            )
            .await
        })
    };
    let handle = match tokio::time::timeout(Duration::from_secs(20), handle_rx).await {
        Ok(Ok(handle)) => handle,
        _ => {
            shutdown.cancel();
            return match daemon_task.await {
                Ok(Err(error)) => Err(error.into()),
                _ => bail!("the daemon did not start within 20 s"),
            };
        }
    };
    let admin = handle
        .admin_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into());
    println!("3. Daemon running; status page at http://{admin}/status, metrics at /metrics");

    let first = trigger_all(&handle).await?;
    println!("4. Ran every example job once:");
    print_runs(&first);
    match crate::sinks::file::verify_stream_dir(&audit_dir.join("audit-log")) {
        Ok(report) => println!(
            "   audit-log wrote {} event(s) to {} ({} sealed segment(s)); manifest chain {}",
            report.records + report.open_records,
            audit_dir.display(),
            report.segments,
            if report.problems.is_empty() {
                "verified"
            } else {
                "BROKEN"
            }
        ),
        Err(error) => println!("   audit-log wrote nothing readable: {error}"),
    }
    let export_ok = print_export(&first, &export_dir);
    print_mirror(&audit_dir.with_file_name("mirror.sqlite")).await;
    print_digest(&audit_dir.with_file_name("digests"));

    let revoke = reqwest::Client::new()
        .post(format!("{}/_sim/revoke", sim.origin()))
        .json(&serde_json::json!({ "name": "pat-paid" }))
        .send()
        .await?;
    if !revoke.status().is_success() {
        bail!(
            "the simulator refused to revoke a token: {}",
            revoke.status()
        );
    }
    let second = trigger_all(&handle).await?;
    println!(
        "5. Revoked the pat-paid token in the simulator and ran again: the revocation is detected"
    );
    print_runs(&second);

    let schedules = handle.store.list_schedules().await?;
    println!("6. Next scheduled fires:");
    for schedule in schedules {
        println!(
            "   {:<24} {}",
            schedule.job_name,
            schedule.next_fire_at.to_rfc3339()
        );
    }

    shutdown.cancel();
    match daemon_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error.into()),
        Err(error) => bail!("the daemon task failed: {error}"),
    }
    sim.shutdown().await;
    let completed_first = first.values().all(|r| r.state == RunState::Completed) && export_ok;
    let detected = second
        .get("check-pat-paid")
        .is_some_and(|r| r.state == RunState::NeedsReauth);
    if args.keep {
        let kept = dir.keep();
        println!("Kept {}", kept.display());
    }
    println!(
        "Demo finished in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        if completed_first && detected {
            "every job completed, and the revoked credential was reported as needing re-authorization"
        } else {
            "UNEXPECTED results above"
        }
    );
    Ok(if completed_first && detected {
        super::EXIT_OK
    } else {
        super::EXIT_FAILURE
    })
}

/// Prints the sync job's tables with their row counts (live rows; deleted ones kept apart).
async fn print_mirror(path: &Path) {
    use crate::jobs::sync::tables;
    use crate::sinks::table::{Cell, TableSink};
    let sink = match crate::sinks::table::sqlite::SqliteTables::open(path).await {
        Ok(sink) => sink,
        Err(error) => {
            println!("   sync wrote no mirror: {error}");
            return;
        }
    };
    println!("   sync mirrored the workspace into {}:", path.display());
    let mut line = String::new();
    for spec in tables::TABLES {
        let rows = match sink.read_table(&spec.def()).await {
            Ok(rows) => rows,
            Err(error) => {
                println!("   {}: unreadable ({error})", spec.name);
                continue;
            }
        };
        let live = rows
            .iter()
            .filter(|r| matches!(r.get("deleted_at"), None | Some(Cell::Null)))
            .count();
        let entry = format!("{} {live}", spec.name);
        if line.len() + entry.len() > 88 {
            println!("     {}", line.trim_end_matches(", "));
            line.clear();
        }
        line.push_str(&entry);
        line.push_str(", ");
    }
    if !line.is_empty() {
        println!("     {}", line.trim_end_matches(", "));
    }
}

/// Prints the digest the `digest` job wrote (the newest file of its directory).
fn print_digest(dir: &Path) {
    let newest = std::fs::read_dir(dir.join("digest"))
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
                .max()
        });
    let Some(path) = newest else {
        println!(
            "   digest wrote nothing to {} (an empty digest is skipped)",
            dir.display()
        );
        return;
    };
    println!("   digest wrote {}:", path.display());
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    const SHOWN: usize = 40;
    for line in text.lines().take(SHOWN) {
        println!("   | {line}");
    }
    let total = text.lines().count();
    if total > SHOWN {
        println!("   | ... ({} more lines)", total - SHOWN);
    }
}

/// Enqueues a manual run of every job and waits (at most 90 s) until all have finished.
async fn trigger_all(handle: &DaemonHandle) -> anyhow::Result<BTreeMap<String, Run>> {
    let jobs = handle.jobs.borrow().clone();
    let mut ids = Vec::new();
    for job in jobs.iter() {
        let now = SystemClock.now();
        if let Enqueued::Inserted(run) = handle
            .store
            .enqueue(crate::scheduler::manual_run(job, now), now)
            .await?
        {
            ids.push((job.name.clone(), run.id));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut done = BTreeMap::new();
        for (name, id) in &ids {
            if let Some(run) = handle.store.get_run(*id).await?
                && run.state.is_terminal()
            {
                done.insert(name.clone(), run);
            }
        }
        if done.len() == ids.len() {
            return Ok(done);
        }
        if Instant::now() > deadline {
            bail!("runs did not finish within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the file the org-export run installed and whether its bytes hash to the sha256 in
/// its manifest; false when there is none or it does not match.
fn print_export(runs: &BTreeMap<String, Run>, dir: &Path) -> bool {
    let Some(run) = runs.get("org-export") else {
        return false;
    };
    let (Some(file), Some(sha256)) = (
        run.progress["file"].as_str(),
        run.progress["sha256"].as_str(),
    ) else {
        println!("   org-export installed no file");
        return false;
    };
    let path = dir.join(file);
    let actual = match std::fs::read(&path) {
        Ok(bytes) => hex::encode(sha2::Sha256::digest(&bytes)),
        Err(error) => {
            println!(
                "   org-export file {} is unreadable: {error}",
                path.display()
            );
            return false;
        }
    };
    let matches = actual == sha256;
    println!(
        "   org-export installed {} ({} bytes), sha256 {sha256} ({})",
        path.display(),
        run.progress["size"].as_u64().unwrap_or(0),
        if matches {
            "matches the file"
        } else {
            "DOES NOT match the file"
        }
    );
    matches
}

fn print_runs(runs: &BTreeMap<String, Run>) {
    for (name, run) in runs {
        let detail = match run.state {
            RunState::Completed if run.kind == "audit_log" => format!(
                "delivered {} event(s), newest {}",
                run.progress["events"].as_u64().unwrap_or(0),
                run.progress["newest"].as_str().unwrap_or("-")
            ),
            RunState::Completed if run.kind.ends_with("_export") => format!(
                "export {} downloaded: {} bytes",
                run.progress["export_gid"].as_str().unwrap_or("?"),
                run.progress["size"].as_u64().unwrap_or(0)
            ),
            RunState::Completed if run.kind == "sync" => format!(
                "{} run: {} request(s), {} event(s), {} row change(s), gaps {}",
                run.progress["mode"].as_str().unwrap_or("?"),
                run.progress["requests"],
                run.progress["events"],
                run.progress["rows_written"],
                run.progress["gaps"]
            ),
            RunState::Completed
                if run.kind == "digest" && run.progress["skipped_empty"] == true =>
            {
                "nothing to report: the empty digest was skipped".to_string()
            }
            RunState::Completed if run.kind == "digest" => format!(
                "{} task(s) read with {} in {} request(s), delivered to {}",
                run.progress["tasks"],
                run.progress["read_with"].as_str().unwrap_or("?"),
                run.progress["requests"],
                run.progress["delivered"]
                    .as_array()
                    .map(|d| d
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            RunState::Completed => format!(
                "acts as {} <{}>",
                run.progress["name"].as_str().unwrap_or("?"),
                run.progress["email"].as_str().unwrap_or("?")
            ),
            _ => run.last_error.clone().unwrap_or_default(),
        };
        println!("   {name:<24} {:<13} {detail}", run.state.as_str());
    }
}
