//! `credential_check`: calls `users/me` with the job's credential and records who it acts as
//! (gid, name, email) and when it was last validated. A revoked or expired credential ends the
//! run as needing re-authorization, so it shows up in `runs list`, the logs and the metrics
//! instead of failing silently in every other job.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{JobKind, KindContext};
use crate::config::jobs::SettingsCheck;
use crate::config::values::is_gid;
use crate::worker::JobOutcome;

/// Checkpoint key under which the owner is recorded.
pub const OWNER_KEY: &str = "owner";

/// The `credential_check` kind.
#[derive(Debug)]
pub struct CredentialCheck;

/// Settings of `credential_check` jobs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialCheckSettings {
    /// The gid or email of the user the credential must act as; the check fails when the token
    /// belongs to someone else (a swapped or mis-pasted token)
    #[serde(default)]
    pub expected_owner: Option<String>,
}

impl JobKind for CredentialCheck {
    const NAME: &'static str = "credential_check";
    const SUMMARY: &'static str =
        "calls users/me with the job's credential and records who it acts as";
    type Settings = CredentialCheckSettings;

    fn validate(settings: &Self::Settings, check: &mut SettingsCheck<'_>) {
        if let Some(owner) = &settings.expected_owner
            && !is_gid(owner)
            && !(owner.contains('@') && !owner.starts_with('@') && !owner.ends_with('@'))
        {
            check.problem(
                "expected_owner",
                format!("`expected_owner` {owner:?} is neither a user gid nor an email address"),
                "write the user's gid (digits) or email, e.g. expected_owner = \"ops-bot@example.com\"",
            );
        }
    }

    async fn run(settings: &Self::Settings, cx: &KindContext<'_>) -> JobOutcome {
        run(settings, cx).await
    }
}

/// Runs one check.
async fn run(settings: &CredentialCheckSettings, cx: &KindContext<'_>) -> JobOutcome {
    let (ctx, job, client) = (cx.run, cx.job, cx.client);
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
        return super::outcome_for_checkpoint_error(error, "the credential's owner");
    }
    tracing::info!(credential = %job.credential, owner = %me.gid, "Credential is valid");
    JobOutcome::Completed { progress: owner }
}
