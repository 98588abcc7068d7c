//! `asana-worker jobs list`, `jobs run NAME [--wait]` and `jobs schema [KIND]`.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::common::{ConfigArgs, UsageError};
use crate::clock::{Clock, SystemClock};
use crate::store::RunState;

/// Arguments of `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

/// `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job with its schedule, next fire and last outcome.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a run of NAME now (ahead of scheduled work); the daemon runs it.
    Run {
        /// The job's name.
        name: String,
        /// Wait for the run to finish, showing its progress; exit 1 unless it completed.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// The job kinds, or the settings of KIND as a JSON schema (for editors that check TOML
    /// against a schema) or as Markdown tables (--markdown).
    Schema {
        /// The kind; without it, every kind is listed.
        kind: Option<String>,
        /// Print the settings tables of docs/configuration.md instead of the JSON schema.
        #[arg(long)]
        markdown: bool,
    },
}

/// `jobs schema`: needs no settings, database or job files.
fn schema(kind: Option<&str>, markdown: bool) -> anyhow::Result<u8> {
    use crate::jobs::{Kind, reference};
    let Some(kind) = kind else {
        for name in Kind::NAMES {
            println!("{name:<18} {}", Kind::summary(name).unwrap_or_default());
        }
        return Ok(super::EXIT_OK);
    };
    let unknown = || {
        UsageError(format!(
            "unknown job kind {kind:?}; known kinds: {}",
            Kind::NAMES.join(", ")
        ))
    };
    if markdown {
        for table in reference::tables(kind).ok_or_else(unknown)? {
            println!(
                "{}

{}",
                table.title,
                reference::markdown(&table)
            );
        }
    } else {
        let schema = Kind::schema(kind).ok_or_else(unknown)?;
        println!("{}", serde_json::to_string_pretty(&schema)?);
    }
    Ok(super::EXIT_OK)
}

/// Runs a `jobs` subcommand.
pub async fn run(args: JobsArgs) -> anyhow::Result<u8> {
    if let JobsCommand::Schema { kind, markdown } = &args.command {
        return schema(kind.as_deref(), *markdown);
    }
    let settings = args.config.load()?;
    let jobs = crate::daemon::load_job_definitions(
        &settings,
        &super::creds::stored_names(&settings).await,
    )
    .map_err(|problems| UsageError(format!("invalid job files:\n{problems}")))?;
    let store = crate::store::open_current(&settings.database.url)
        .await
        .context("opening the database")?;
    match args.command {
        JobsCommand::List { json: as_json } => {
            let schedules = store.list_schedules().await?;
            let summaries = store.job_summaries().await?;
            let now = SystemClock.now();
            let job_set = crate::jobs::job_set_version(&settings.jobs.dir);
            let replicas = store.live_replicas(now).await?;
            let mut rows = Vec::new();
            for job in &jobs {
                let next = crate::scheduler::next_fire(job, &schedules, now);
                let summary = summaries.iter().find(|s| s.job_name == job.name);
                rows.push(json!({
                    "name": job.name,
                    "kind": job.kind.name(),
                    "schedule": job.schedule.definition(),
                    "timezone": job.timezone.name(),
                    "enabled": job.enabled,
                    "next_fire_at": if job.enabled { next.map(|t| t.to_rfc3339()) } else { None },
                    "last_state": summary.and_then(|s| s.last_state.map(|st| st.as_str())),
                    "last_finished_at": summary.and_then(|s| s.last_finished_at.map(|t| t.to_rfc3339())),
                    "last_success_at": summary.and_then(|s| s.last_success_at.map(|t| t.to_rfc3339())),
                    "job_set": job_set,
                }));
            }
            if as_json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<28} {:<18} {:<22} {:<26} {:<12}",
                    "NAME", "KIND", "SCHEDULE", "NEXT FIRE", "LAST"
                );
                for row in rows {
                    println!(
                        "{:<28} {:<18} {:<22} {:<26} {:<12}",
                        row["name"].as_str().unwrap_or_default(),
                        row["kind"].as_str().unwrap_or_default(),
                        row["schedule"].as_str().unwrap_or_default(),
                        row["next_fire_at"]
                            .as_str()
                            .unwrap_or(if row["enabled"] == json!(false) {
                                "disabled"
                            } else {
                                "-"
                            }),
                        row["last_state"].as_str().unwrap_or("-"),
                    );
                }
                // Which job files each running daemon uses, so a replica that has not
                // reloaded (or mounts other files) shows here.
                println!();
                println!("Job set of these files: {job_set}");
                if replicas.is_empty() {
                    println!("No daemon is running on this database.");
                }
                for replica in &replicas {
                    println!(
                        "  daemon {:<40} job set {} ({} jobs, since {}){}",
                        replica.owner,
                        replica.job_set,
                        replica.jobs,
                        replica.job_set_since.to_rfc3339(),
                        if replica.job_set == job_set {
                            ""
                        } else {
                            "  <- differs from these files"
                        }
                    );
                }
            }
            Ok(super::EXIT_OK)
        }
        JobsCommand::Schema { kind, markdown } => schema(kind.as_deref(), markdown),
        JobsCommand::Run {
            name,
            wait,
            timeout_secs,
        } => {
            let now = SystemClock.now();
            let run = match crate::jobs::run_now(&*store, &jobs, &name, now).await {
                Ok(run) => run,
                Err(error @ crate::jobs::RunNowError::Unknown { .. }) => {
                    return Err(UsageError(error.to_string()).into());
                }
                Err(error) => return Err(error.into()),
            };
            println!(
                "enqueued run {} of {name}; a running daemon picks it up",
                run.id
            );
            if !wait {
                return Ok(super::EXIT_OK);
            }
            let deadline = tokio::time::Instant::now()
                + Duration::from_secs(timeout_secs.min(365 * 24 * 3600));
            let mut last_line = String::new();
            loop {
                let Some(current) = store.get_run(run.id).await? else {
                    anyhow::bail!("run {} disappeared (pruned?)", run.id);
                };
                let line = format!(
                    "{} attempt {}/{}{} {}",
                    current.state,
                    current.attempt,
                    current.max_attempts,
                    progress_summary(&current.progress),
                    current.progress
                );
                if line != last_line {
                    println!("  {line}");
                    last_line = line;
                }
                if current.state.is_terminal() {
                    if let Some(error) = &current.last_error {
                        println!("  last error: {error}");
                    }
                    return Ok(if current.state == RunState::Completed {
                        super::EXIT_OK
                    } else {
                        super::EXIT_FAILURE
                    });
                }
                if tokio::time::Instant::now() > deadline {
                    println!(
                        "  still {} after {timeout_secs}s; stopped waiting (the run continues)",
                        current.state
                    );
                    return Ok(super::EXIT_FAILURE);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// A readable summary of a run's progress figures for `--wait`: the phase, and bytes and
/// percent while an export downloads (the JSON itself follows it).
fn progress_summary(progress: &serde_json::Value) -> String {
    let Some(phase) = progress.get("phase").and_then(|p| p.as_str()) else {
        return String::new();
    };
    let mib = |v: &serde_json::Value| v.as_f64().map(|b| b / (1024.0 * 1024.0));
    match (
        mib(&progress["bytes"]),
        mib(&progress["total_bytes"]),
        progress["percent"].as_f64(),
    ) {
        (Some(bytes), Some(total), Some(percent)) if phase == "downloading" => {
            format!(" {phase} {percent:.1}% ({bytes:.1} of {total:.1} MiB)")
        }
        _ => match progress.get("asana_state").and_then(|s| s.as_str()) {
            Some(state) => format!(" {phase} (Asana: {state})"),
            None => format!(" {phase}"),
        },
    }
}
