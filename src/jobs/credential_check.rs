//! `credential_check`: calls `users/me` with the job's credential and records who it acts as
//! (gid, name, email) and when it was last validated. A revoked or expired credential ends the
//! run as needing re-authorization, so it shows up in `runs list`, the logs and the metrics
//! instead of failing silently in every other job.

use serde_json::json;

use crate::asana::AsanaClient;
use crate::config::jobs::{CredentialCheckSettings, JobSpec};
use crate::worker::{JobOutcome, RunContext};

/// Checkpoint key under which the owner is recorded.
pub const OWNER_KEY: &str = "owner";

/// Runs one check.
pub async fn run(
    ctx: &RunContext,
    job: &JobSpec,
    settings: &CredentialCheckSettings,
    client: &AsanaClient,
) -> JobOutcome {
    let me = match client.me(&["name", "email", "workspaces.name"]).await {
        Ok(me) => me,
        Err(error) => return super::outcome_for_error(job, &error),
    };
    let owner = json!({
        "gid": me.gid,
        "name": me.name,
        "email": me.email,
        "credential": job.credential,
        "validated_at": ctx.clock.now().to_rfc3339(),
    });
    if let Some(expected) = &settings.expected_owner
        && expected != &me.gid
        && Some(expected) != me.email.as_ref()
    {
        return JobOutcome::Failed {
            error: format!(
                "credential {:?} acts as {} ({}) but expected_owner is {expected:?}; the token was swapped or its user changed: check which token is installed",
                job.credential,
                me.gid,
                me.email.as_deref().unwrap_or("no email")
            ),
        };
    }
    if let Err(error) = ctx.checkpoints.put(OWNER_KEY, owner.clone()).await {
        return match error {
            crate::worker::CheckpointError::LeaseLost => JobOutcome::Interrupted,
            other => JobOutcome::Retry {
                delay: None,
                error: other.to_string(),
            },
        };
    }
    tracing::info!(credential = %job.credential, owner = %me.gid, "Credential is valid");
    JobOutcome::Completed { progress: owner }
}
