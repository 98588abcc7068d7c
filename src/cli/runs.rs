//! `asana-worker runs list [--job NAME] [--state S] [--json]` and `runs show ID`.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::common::{ConfigArgs, UsageError};
use crate::store::{Run, RunFilter, RunState};

/// Arguments of `runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: RunsCommand,
}

/// `runs` subcommands.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recent runs, newest first.
    List {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Only this state (queued, running, retrying, completed, failed, dead, needs_reauth, cancelled, skipped).
        #[arg(long)]
        state: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run in full.
    Show {
        /// The run's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `runs` subcommand.
pub async fn run(args: RunsArgs) -> anyhow::Result<u8> {
    let settings = args.config.load()?;
    let store = crate::store::open_current(&settings.database.url)
        .await
        .context("opening the database")?;
    match args.command {
        RunsCommand::List {
            job,
            state,
            limit,
            json,
        } => {
            let states = state
                .iter()
                .map(|s| {
                    s.parse::<RunState>().map_err(|_| {
                        UsageError(format!(
                            "unknown state {s:?}; use one of: {}",
                            RunState::ALL.map(|s| s.as_str()).join(", ")
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let runs = store
                .list_runs(&RunFilter {
                    job_name: job,
                    states,
                    limit: limit.max(1),
                    ..RunFilter::default()
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                println!(
                    "{:<36} {:<24} {:<12} {:<9} {:<8} {:<25} ERROR",
                    "ID", "JOB", "STATE", "TRIGGER", "ATTEMPT", "CREATED"
                );
                for run in runs {
                    println!(
                        "{:<36} {:<24} {:<12} {:<9} {:<8} {:<25} {}",
                        run.id,
                        run.job_name,
                        run.state.as_str(),
                        run.trigger.as_str(),
                        format!("{}/{}", run.attempt, run.max_attempts),
                        run.created_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        run.last_error
                            .as_deref()
                            .unwrap_or("")
                            .chars()
                            .take(80)
                            .collect::<String>(),
                    );
                }
            }
            Ok(super::EXIT_OK)
        }
        RunsCommand::Show { id, json } => {
            let id = uuid::Uuid::parse_str(&id).map_err(|_| {
                UsageError(format!(
                    "{id:?} is not a run id; see `asana-worker runs list`"
                ))
            })?;
            let Some(run) = store.get_run(id).await? else {
                return Err(UsageError(format!("no run {id}")).into());
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                print_run(&run);
            }
            Ok(super::EXIT_OK)
        }
    }
}

fn print_run(run: &Run) {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
    };
    println!("run         {}", run.id);
    println!("job         {} ({})", run.job_name, run.kind);
    println!("state       {}", run.state);
    println!("trigger     {}", run.trigger.as_str());
    println!("fire time   {}", time(run.fire_time));
    println!("attempt     {}/{}", run.attempt, run.max_attempts);
    println!("run after   {}", run.run_after.to_rfc3339());
    println!("created     {}", run.created_at.to_rfc3339());
    println!("started     {}", time(run.started_at));
    println!("finished    {}", time(run.finished_at));
    println!(
        "lease       {} until {}",
        run.lease_owner.as_deref().unwrap_or("-"),
        time(run.lease_expires_at)
    );
    println!("rescues     {}", run.rescues);
    println!("last error  {}", run.last_error.as_deref().unwrap_or("-"));
    println!("progress    {}", run.progress);
}
