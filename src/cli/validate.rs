//! `asana-worker validate`: checks the settings and every job file; exit 2 on any problem, with
//! every problem listed as `file:line:col: message` and a hint.

use clap::Args;

use super::common::{ConfigArgs, UsageError};

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Validates.
pub async fn run(args: ValidateArgs) -> anyhow::Result<u8> {
    let settings = args
        .config
        .load()
        .map_err(|e| UsageError(format!("{e:#}")))?;
    match crate::daemon::load_jobs_with(&settings, &super::creds::stored_names(&settings).await) {
        Ok(jobs) => {
            println!(
                "{} job(s) in {} are valid",
                jobs.len(),
                settings.jobs.dir.display()
            );
            for job in jobs {
                println!(
                    "  {:<28} {:<18} {:<24} {}{}",
                    job.name,
                    job.kind.name(),
                    job.schedule.definition(),
                    job.timezone.name(),
                    if job.enabled { "" } else { " (disabled)" }
                );
            }
            Ok(super::EXIT_OK)
        }
        Err(problems) => {
            let count = problems.0.len();
            Err(UsageError(format!(
                "{problems}\n{count} problem(s) found; nothing was changed"
            ))
            .into())
        }
    }
}
