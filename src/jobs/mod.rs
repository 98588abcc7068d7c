//! Job kinds, one module each, the registry that lists them, and the runner that dispatches a
//! claimed run to its kind.
//!
//! A kind is a [`JobKind`]: a name, a settings struct (read, checked and documented from the
//! struct alone), extra checks run at load, and a runner. The list below is the only place the
//! kinds are named: the [`Kind`] enum, the names, the settings schemas, the job-file reader's
//! [`Catalog`] and the dispatch all come from it (see ARCHITECTURE.md, "Adding a job kind").
//!
//! A kind gets a [`KindContext`] (the run with its cancellation token and fenced checkpoints,
//! the job, the Asana client of the job's credential, the sink context) and returns a
//! [`JobOutcome`]. [`outcome_for_error`] maps client errors to outcomes the same way for every
//! kind: transient errors retry, a rejected credential needs re-authorization, everything else
//! fails with Asana's message.

pub mod audit_log;
pub mod credential_check;
pub mod digest;
pub mod export;
pub mod graph_export;
mod kind;
pub mod org_export;
pub mod reference;
pub mod resource_export;
pub mod sync;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::asana::{AsanaClient, AsanaError, CallContext};
use crate::budget::{BudgetError, Priority};
use crate::config::diagnostics::{Diagnostic, Diagnostics};
use crate::config::jobs::{JobSpec, ValidationContext};
use crate::credentials::{ClientPool, CredentialError};
use crate::scheduler::JobSet;
use crate::sinks::SinkContext;
use crate::store::Trigger;
use crate::worker::{JobOutcome, JobRunner, RunContext};

pub use kind::{JobKind, KindContext};

kind::job_kinds! {
    /// Calls `users/me` with the job's credential and records its owner and validity.
    CredentialCheck => credential_check::CredentialCheck,
    /// Pulls a workspace's audit-log events into a record sink, exactly once.
    AuditLog => audit_log::AuditLog,
    /// Exports the organization and downloads the file.
    OrgExport => org_export::OrgExport,
    /// Exports a project, portfolio, team or goal graph and downloads the file.
    GraphExport => graph_export::GraphExport,
    /// Exports a workspace's objects of some types and downloads the file.
    ResourceExport => resource_export::ResourceExport,
    /// Mirrors a workspace's work graph into SQL tables, incrementally.
    Sync => sync::Sync,
    /// Summarises a scope's tasks and delivers the digest once per period.
    Digest => digest::Digest,
}

/// A job of this build: its definition with its kind's typed settings.
pub type Job = JobSpec<Kind>;

/// Parses and validates one job file's text against the registered kinds.
pub fn parse_job(
    path: &Path,
    source: &str,
    context: &ValidationContext,
) -> Result<Job, Vec<Diagnostic>> {
    crate::config::jobs::parse_job(path, source, context, &Catalog)
}

/// Reads and validates one job file.
pub fn load_file(path: &Path, context: &ValidationContext) -> Result<Job, Vec<Diagnostic>> {
    crate::config::jobs::load_file(path, context, &Catalog)
}

/// Loads and validates every job file of `dir` (see [`crate::config::jobs::load_dir`]).
pub fn load_dir(dir: &Path, context: &ValidationContext) -> Result<Vec<Job>, Diagnostics> {
    crate::config::jobs::load_dir(dir, context, &Catalog)
}

/// The fingerprint of the job set in `dir`: a digest of the names and contents of its `*.toml`
/// files (following symlinks, as a ConfigMap mount has them), the first 12 hex digits. Two
/// processes with the same files report the same version, whatever their build; `/readyz`,
/// `jobs list` and the `asana_worker_job_set_info` metric show it.
pub fn job_set_version(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut files: Vec<(std::ffi::OsString, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "toml"))
                .filter_map(|entry| Some((entry.file_name(), std::fs::read(entry.path()).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut hasher = Sha256::new();
    for (name, content) in &files {
        let name = name.to_string_lossy();
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content);
    }
    hex::encode(hasher.finalize())[..12].to_string()
}

/// Why a manual run could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum RunNowError {
    /// No job of that name in the job set.
    #[error("no job named {name:?}; known jobs: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The jobs there are, comma-separated.
        known: String,
    },
    /// A run with the same key exists (a fresh key was drawn twice: practically never).
    #[error("a manual run with the same key already exists; try again")]
    Duplicate,
    /// The store refused.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Enqueues a manual run of the job named `name` at `now`, ahead of scheduled work: what
/// `asana-worker jobs run` and the status page's "run now" both do. A running daemon (any
/// replica) claims it; a paused job's manual runs still run.
pub async fn run_now(
    store: &dyn crate::store::Store,
    jobs: &[Job],
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::store::Run, RunNowError> {
    let job = jobs
        .iter()
        .find(|job| job.name == name)
        .ok_or_else(|| RunNowError::Unknown {
            name: name.to_string(),
            known: jobs
                .iter()
                .map(|job| job.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    match store
        .enqueue(crate::scheduler::manual_run(job, now), now)
        .await?
    {
        crate::store::Enqueued::Inserted(run) => Ok(*run),
        crate::store::Enqueued::Duplicate => Err(RunNowError::Duplicate),
    }
}

/// Checks between jobs of one set: a digest reading a sync job's tables names a sync job of the
/// set, of the same workspace, that mirrors what the digest reads.
pub fn check_job_set(jobs: &[Job]) -> Vec<Diagnostic> {
    use digest::settings::Source;
    use sync::settings::Resource;
    let mut problems = Vec::new();
    for job in jobs {
        let Kind::Digest(settings) = &job.kind else {
            continue;
        };
        let Source::Mirror { sync_job, .. } = &settings.source else {
            continue;
        };
        let problem =
            |message: String, hint: String| Diagnostic::file(&job.source, message).hint(hint);
        let Some(sync) = jobs.iter().find(|other| &other.name == sync_job) else {
            let known: Vec<&str> = jobs
                .iter()
                .filter(|j| matches!(j.kind, Kind::Sync(_)))
                .map(|j| j.name.as_str())
                .collect();
            problems.push(problem(
                format!("settings.source: no sync job named {sync_job:?} in the jobs directory"),
                if known.is_empty() {
                    "add a `kind = \"sync\"` job for the workspace, or set source = \"api\""
                        .to_string()
                } else {
                    format!("sync jobs here: {}", known.join(", "))
                },
            ));
            continue;
        };
        let Kind::Sync(sync_settings) = &sync.kind else {
            problems.push(problem(
                format!(
                    "settings.source: the job {sync_job:?} is a {} job, not a sync job",
                    sync.kind.name()
                ),
                "name a `kind = \"sync\"` job, or set source = \"api\"".into(),
            ));
            continue;
        };
        if sync_settings.workspace != settings.workspace {
            problems.push(problem(
                format!(
                    "settings.source: the sync job {sync_job:?} mirrors workspace {}, not {}",
                    sync_settings.workspace, settings.workspace
                ),
                "read a sync job of the digest's workspace, or set source = \"api\"".into(),
            ));
        }
        let mut needed = vec![
            Resource::Tasks,
            Resource::Projects,
            Resource::Users,
            Resource::Sections,
        ];
        if settings.portfolio.is_some() {
            needed.push(Resource::Portfolios);
        }
        let missing: Vec<&str> = needed
            .iter()
            .filter(|r| !sync_settings.wants(**r))
            .map(|r| r.as_str())
            .collect();
        if !missing.is_empty() {
            problems.push(problem(
                format!(
                    "settings.source: the sync job {sync_job:?} does not mirror {}, which the digest reads",
                    missing.join(", ")
                ),
                format!("add {} to that job's resources", missing.join(", ")),
            ));
        }
    }
    problems
}

/// Maps a client error to an outcome: what every kind does with errors it has no special
/// handling for.
pub fn outcome_for_error(job: &Job, error: &AsanaError) -> JobOutcome {
    let credential = &job.credential;
    let job_name = &job.name;
    match error {
        // The credential layer's message already says how to authorize again.
        AsanaError::Credential { message, .. } if error.needs_reauth() => JobOutcome::NeedsReauth {
            error: format!("{message}; then run `asana-worker jobs run {job_name}`"),
        },
        error if error.needs_reauth() => JobOutcome::NeedsReauth {
            error: format!(
                "credential {credential:?} was rejected by Asana: {}. Replace its token (the token file or variable, `asana-worker creds add {credential} --replace`, or for OAuth `asana-worker creds authorize {credential} --replace`), then run `asana-worker jobs run {job_name}`",
                error.rejection()
            ),
        },
        AsanaError::Cancelled | AsanaError::Budget(BudgetError::Cancelled) => {
            JobOutcome::Interrupted
        }
        error if error.is_transient() => JobOutcome::Retry {
            delay: None,
            error: error.to_string(),
        },
        error => JobOutcome::Failed {
            error: error.to_string(),
        },
    }
}

/// Maps a sink's error the same way for every kind: a transient one (a database busy or
/// unreachable, a collector timing out) retries, anything else fails with the sink's message.
pub fn outcome_for_sink_error(error: crate::sinks::SinkError) -> JobOutcome {
    if error.is_transient() {
        JobOutcome::Retry {
            delay: None,
            error: error.to_string(),
        }
    } else {
        JobOutcome::Failed {
            error: error.to_string(),
        }
    }
}

/// Maps a failure to store a checkpoint the same way for every kind: a lost lease interrupts the
/// run (another worker has taken it over and must not be written over), anything else (the
/// database busy or unreachable) retries, naming what could not be recorded.
pub fn outcome_for_checkpoint_error(
    error: crate::worker::CheckpointError,
    recording: &str,
) -> JobOutcome {
    match error {
        crate::worker::CheckpointError::LeaseLost => JobOutcome::Interrupted,
        other => JobOutcome::Retry {
            delay: None,
            error: format!("cannot record {recording}: {other}"),
        },
    }
}

/// Maps a problem obtaining a credential's client: an unreadable or half-written token file is
/// transient, a credential missing from the configuration or a client that cannot be built is a
/// configuration error; neither is a rejection by Asana.
fn outcome_for_credential_error(error: &CredentialError) -> JobOutcome {
    match error {
        CredentialError::ReadFile { .. }
        | CredentialError::Empty(_)
        | CredentialError::MissingEnv { .. } => JobOutcome::Retry {
            delay: None,
            error: error.to_string(),
        },
        _ => JobOutcome::Failed {
            error: error.to_string(),
        },
    }
}

/// The daemon's [`JobRunner`]: finds the run's job in the current job set and runs its kind
/// with the client of its credential.
#[derive(Debug)]
pub struct KindRunner {
    jobs: watch::Receiver<JobSet<Kind>>,
    clients: Arc<ClientPool>,
    sink_context: SinkContext,
}

impl KindRunner {
    /// A runner over the live job set and the process's clients.
    pub fn new(jobs: watch::Receiver<JobSet<Kind>>, clients: Arc<ClientPool>) -> Self {
        Self {
            jobs,
            clients,
            sink_context: SinkContext {
                state_dir: std::path::PathBuf::from("."),
            },
        }
    }

    /// Sets what sinks are built with (the daemon's state directory).
    pub fn with_sink_context(mut self, sink_context: SinkContext) -> Self {
        self.sink_context = sink_context;
        self
    }

    fn job(&self, name: &str) -> Option<Job> {
        self.jobs
            .borrow()
            .iter()
            .find(|job| job.name == name)
            .cloned()
    }
}

impl KindRunner {
    /// Records what the run taught about its credential: rejected (state `revoked`, metric,
    /// error log naming what to run next), or used (and, for `credential_check`, validated).
    async fn note_credential(&self, job: &Job, outcome: &JobOutcome) {
        let monitor = self.clients.monitor();
        match outcome {
            JobOutcome::NeedsReauth { error } => {
                if monitor.state(&job.credential).as_deref() != Some("revoked") {
                    monitor.rejected(&job.credential, error).await;
                }
                monitor.count_rejected_run(&job.credential);
            }
            JobOutcome::Completed { progress } => {
                monitor.used(&job.credential).await;
                if matches!(job.kind, Kind::CredentialCheck(_))
                    && let Some(gid) = progress.get("gid").and_then(|v| v.as_str())
                {
                    let text = |key: &str| {
                        progress
                            .get(key)
                            .and_then(|v| v.as_str())
                            .map(str::to_string)
                    };
                    let owner = crate::credentials::monitor::Owner {
                        gid: gid.to_string(),
                        name: text("name"),
                        email: text("email"),
                    };
                    monitor.validated(&job.credential, &owner).await;
                }
            }
            _ => {}
        }
    }
}

#[async_trait]
impl JobRunner for KindRunner {
    async fn run(&self, ctx: RunContext) -> JobOutcome {
        let Some(job) = self.job(&ctx.run.job_name) else {
            return crate::worker::unknown_job_outcome(
                &ctx.run.job_name,
                ctx.run.created_at,
                ctx.clock.now(),
            );
        };
        let client = match self.clients.client(&job.credential) {
            Ok(client) => client,
            Err(error) => return outcome_for_credential_error(&error),
        };
        let priority = match ctx.run.trigger {
            Trigger::Manual => Priority::Manual,
            Trigger::Schedule => Priority::Scheduled,
            Trigger::Misfire => Priority::Backfill,
        };
        let client: AsanaClient =
            client.for_job(CallContext::new(&job.name, priority).with_cancel(ctx.cancel.clone()));
        let jobs = self.jobs.borrow().clone();
        let cx = KindContext {
            run: &ctx,
            job: &job,
            jobs: &jobs,
            client: &client,
            sinks: &self.sink_context,
        };
        let outcome = job.kind.run(&cx).await;
        self.note_credential(&job, &outcome).await;
        outcome
    }

    fn timeout(&self, job_name: &str) -> Option<Duration> {
        self.job(job_name).map(|job| job.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_job() -> Job {
        let context = ValidationContext {
            credentials: ["sa".to_string()].into_iter().collect(),
            ..ValidationContext::default()
        };
        parse_job(
            std::path::Path::new("jobs/check.toml"),
            "name = \"check\"\nkind = \"credential_check\"\nevery = \"5m\"\ncredential = \"sa\"\n",
            &context,
        )
        .expect("valid job")
    }

    #[test]
    fn errors_map_to_outcomes() {
        let cancelled = AsanaError::Budget(BudgetError::Cancelled);
        assert_eq!(
            outcome_for_error(&test_job(), &cancelled),
            JobOutcome::Interrupted,
            "waiting for budget at shutdown releases the run"
        );
        let rejected = AsanaError::Unauthorized {
            message: "Not Authorized".into(),
        };
        match outcome_for_error(&test_job(), &rejected) {
            JobOutcome::NeedsReauth { error } => {
                assert!(error.contains("credential \"sa\""), "{error}");
                assert!(error.contains("asana-worker jobs run check"), "{error}");
                assert!(error.contains("Not Authorized"), "{error}");
                // The advice is given once, in the job's words.
                assert!(!error.contains("replace the credential"), "{error}");
                assert_eq!(error.matches("Replace its token").count(), 1, "{error}");
            }
            other => panic!("a rejected token needs re-authorization, got {other:?}"),
        }
        let revoked = AsanaError::Credential {
            message: "the OAuth grant of credential \"sa\" was revoked; run `asana-worker creds authorize sa --replace` to authorize it again".into(),
            transient: false,
        };
        match outcome_for_error(&test_job(), &revoked) {
            JobOutcome::NeedsReauth { error } => {
                assert_eq!(error.matches("creds authorize").count(), 1, "{error}");
                assert!(
                    error.ends_with("then run `asana-worker jobs run check`"),
                    "{error}"
                );
            }
            other => panic!("a revoked grant needs re-authorization, got {other:?}"),
        }
        let missing = AsanaError::NotFound {
            message: "task: Unknown object".into(),
        };
        assert!(matches!(
            outcome_for_error(&test_job(), &missing),
            JobOutcome::Failed { .. }
        ));
        let unreadable = CredentialError::Empty("sa".into());
        assert!(matches!(
            outcome_for_credential_error(&unreadable),
            JobOutcome::Retry { .. }
        ));
        let unknown = CredentialError::Unknown("sa".into());
        assert!(matches!(
            outcome_for_credential_error(&unknown),
            JobOutcome::Failed { .. }
        ));
    }
}
