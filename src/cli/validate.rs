//! `asana-worker validate`: checks the settings, every credential's token source and every job
//! file (with each kind's own checks); exit 2 on any problem, with every problem listed as
//! `file:line:col: message` and a hint.

use clap::Args;

use super::common::{ConfigArgs, UsageError};
use crate::config::diagnostics::{Diagnostic, Diagnostics};
use crate::config::jobs::ValidationContext;

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
    let config_file = crate::daemon::config_path(args.config.config.clone())
        .unwrap_or_else(|| "ASANA_WORKER__CREDENTIALS__*".into());
    // A declared credential whose token cannot be read fails every job that uses it: report it
    // even when no job uses it yet.
    let mut problems: Vec<Diagnostic> = ValidationContext::from_settings(&settings)
        .checking_secrets(&settings)
        .unavailable
        .iter()
        .map(|(name, reason)| {
            Diagnostic::file(&config_file, format!("credential {name:?} has no token: {reason}"))
                .hint(format!(
                    "provide the token where [credentials.{name}] says (token_file or token_env), or remove the credential"
                ))
        })
        .collect();
    let jobs = match crate::daemon::load_jobs_with(
        &settings,
        &super::creds::stored_names(&settings).await,
    ) {
        Ok(jobs) => jobs,
        Err(found) => {
            problems.extend(found.0);
            Vec::new()
        }
    };
    if !problems.is_empty() {
        let count = problems.len();
        return Err(UsageError(format!(
            "{}\n{count} problem(s) found; nothing was changed",
            Diagnostics(problems)
        ))
        .into());
    }
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
