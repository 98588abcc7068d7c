//! What `org_export`, `graph_export` and `resource_export` share: request an export, persist
//! its gid at once, poll it with backoff, download its file safely, write a manifest, prune old
//! exports and optionally deliver the file to a sink.
//!
//! The job's checkpoint `export` ([`ExportState`]) is written right after Asana accepted the
//! request, so a crash at any later instant resumes the *same* export (polling it, or resuming
//! its download from the partial file's synced offset) and never requests a second one. Only a
//! finished (`done`) or failed export lets the next run request a new one.
//!
//! Export slots: Asana allows 5 export jobs in progress per user. Each run holds one of the
//! user's slots from the request until the export finished or failed (not during the download,
//! which no longer counts), so extra export jobs wait for a slot instead of drawing 429s.

pub mod download;
pub mod retention;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Job, KindContext};
use crate::asana::{AsanaClient, AsanaError};
use crate::budget::ExportSlot;
use crate::config::jobs::SettingsCheck;
use crate::config::values::{DurationText, format_duration};
use crate::sinks::document::{Content, Document, DocumentSinkSettings};
use crate::sinks::{SinkContext, SinkError};
use crate::worker::{CheckpointError, JobOutcome, RunContext};

use download::{DownloadError, DownloadPolicy, Downloader, ProgressSink};
use retention::{MANIFEST_SUFFIX, Manifest, Retention};

/// Checkpoint key of the export in progress.
pub const CHECKPOINT_KEY: &str = "export";

/// Directory (inside `output_dir`) holding partial downloads.
pub const PARTIAL_DIR: &str = ".partial";

/// Failed download attempts in a row (without new bytes) before the run is retried later.
const MAX_DOWNLOAD_FAILURES: u32 = 5;
/// Fresh URLs fetched in a row without new bytes before the run is retried later.
const MAX_URL_REFRESHES: u32 = 5;

fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_poll_max() -> Duration {
    Duration::from_secs(300)
}
fn default_keep_last() -> u32 {
    7
}
fn default_max_size_mb() -> u64 {
    102_400
}
fn default_download_timeout() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_max_redirects() -> u32 {
    5
}

/// Settings shared by the export kinds (flattened into each kind's settings).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct ExportSettings {
    /// Where export files and manifests go (created if missing; checked writable at load).
    /// Partial downloads live in `output_dir/.partial/`
    pub output_dir: PathBuf,
    /// First wait between status checks; doubles after each check up to `poll_max_interval`
    #[serde(
        default = "default_poll_interval",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// Longest wait between status checks
    #[serde(default = "default_poll_max", with = "crate::config::values::duration")]
    #[schemars(with = "DurationText")]
    pub poll_max_interval: Duration,
    /// Keep this job's newest N exports (0: no count rule)
    #[serde(default = "default_keep_last")]
    pub keep_last: u32,
    /// Also keep exports downloaded within this long, e.g. `"30d"`. An export is pruned (file
    /// and manifest) only when neither rule keeps it; with `keep_last = 0` and no `keep_for`
    /// nothing is pruned
    #[serde(default, with = "crate::config::values::optional_duration")]
    #[schemars(with = "Option<DurationText>")]
    pub keep_for: Option<Duration>,
    /// Largest file accepted, MiB
    #[serde(default = "default_max_size_mb")]
    #[schemars(range(min = 1))]
    pub max_size_mb: u64,
    /// Longest one download attempt may take; the next attempt resumes
    #[serde(
        default = "default_download_timeout",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub download_timeout: Duration,
    /// Redirects followed at most (up to 20); every target is checked like the first URL
    #[serde(default = "default_max_redirects")]
    #[schemars(range(max = 20))]
    pub max_redirects: u32,
    /// Download at most this many KiB per second (0: unlimited), to spare a shared uplink
    #[serde(default)]
    pub download_rate_limit_kib: u64,
    /// Also deliver each downloaded file with its manifest to this document sink:
    /// `[settings.deliver]` with `type = "file"` or `"s3"` (see below)
    #[serde(default)]
    pub deliver: Option<DocumentSinkSettings>,
}

/// The checks every export kind runs at load: the output directory can be written, the poll
/// intervals are in order, the delivery sink can work.
pub fn validate(settings: &ExportSettings, check: &mut SettingsCheck<'_>) {
    check.writable_dir("output_dir", &settings.output_dir);
    if settings.poll_interval > settings.poll_max_interval {
        check.problem(
            "poll_interval",
            format!(
                "`poll_interval` ({}) is longer than `poll_max_interval` ({})",
                format_duration(settings.poll_interval),
                format_duration(settings.poll_max_interval)
            ),
            "the wait grows from poll_interval up to poll_max_interval; make poll_interval the shorter (defaults: 30s and 5m)",
        );
    }
    if let Some(deliver) = &settings.deliver {
        check.scoped("deliver", |check| deliver.validate(check));
    }
}

impl ExportSettings {
    /// Retention rules.
    pub fn retention(&self) -> Retention {
        Retention {
            keep_last: self.keep_last,
            keep_for: self.keep_for,
        }
    }

    /// The download policy for a client with `base_url`.
    pub fn download_policy(&self, base_url: &str) -> DownloadPolicy {
        let mut policy = DownloadPolicy::for_base_url(base_url);
        policy.max_redirects = self.max_redirects as usize;
        policy.max_bytes = self.max_size_mb.saturating_mul(1 << 20);
        policy.timeout = self.download_timeout;
        policy.rate_limit =
            (self.download_rate_limit_kib > 0).then(|| self.download_rate_limit_kib * 1024);
        policy
    }
}

/// What is exported.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The whole organization (`POST /organization_exports`).
    Organization {
        /// Organization (workspace) gid.
        organization: String,
    },
    /// A project, portfolio, team or goal graph (`POST /exports/graph`).
    Graph {
        /// Parent gid.
        parent: String,
    },
    /// Objects of some types in a workspace (`POST /exports/resource`).
    Resource {
        /// Workspace gid.
        workspace: String,
        /// `task`, `team`, `message`, …
        resource_types: Vec<String>,
    },
}

/// An export's status as Asana reports it.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    /// Pending or running; Asana's word for it.
    Running(String),
    /// Finished; the URL when Asana gave one.
    Finished(Option<String>),
    /// Failed; Asana's word for it.
    Failed(String),
}

impl Target {
    /// The job kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Organization { .. } => "org_export",
            Target::Graph { .. } => "graph_export",
            Target::Resource { .. } => "resource_export",
        }
    }

    /// The gid of what is exported.
    pub fn parent(&self) -> &str {
        match self {
            Target::Organization { organization } => organization,
            Target::Graph { parent } => parent,
            Target::Resource { workspace, .. } => workspace,
        }
    }

    fn extension(&self) -> &'static str {
        match self {
            Target::Resource { .. } => ".jsonl.gz",
            _ => ".json.gz",
        }
    }

    async fn create(&self, client: &AsanaClient) -> Result<String, AsanaError> {
        match self {
            Target::Organization { organization } => client
                .create_organization_export(organization)
                .await
                .map(|e| e.gid),
            Target::Graph { parent } => client.create_graph_export(parent).await.map(|j| j.gid),
            Target::Resource {
                workspace,
                resource_types,
            } => {
                let parameters = resource_types
                    .iter()
                    .map(|t| json!({ "resource_type": t }))
                    .collect();
                client
                    .create_resource_export(workspace, parameters)
                    .await
                    .map(|j| j.gid)
            }
        }
    }

    async fn status(&self, client: &AsanaClient, gid: &str) -> Result<Status, AsanaError> {
        if let Target::Organization { .. } = self {
            let export = client.organization_export(gid).await?;
            let state = export.state.unwrap_or_else(|| "unknown".into());
            return Ok(match state.as_str() {
                "finished" => Status::Finished(export.download_url),
                "error" => Status::Failed(state),
                _ => Status::Running(state),
            });
        }
        let job = client.job(gid).await?;
        let status = job.status.unwrap_or_else(|| "unknown".into());
        Ok(match status.as_str() {
            "succeeded" => Status::Finished(
                job.new_graph_export
                    .or(job.new_resource_export)
                    .and_then(|f| f.download_url),
            ),
            "failed" => Status::Failed(status),
            _ => Status::Running(status),
        })
    }
}

/// Where an export stands; stored under [`CHECKPOINT_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Requested; waiting for Asana to finish it.
    Polling,
    /// Finished; its file is being downloaded.
    Downloading,
    /// Downloaded; being uploaded to the `deliver` sink.
    Delivering,
    /// Complete: the next run requests a new export.
    Done,
    /// Asana reported it failed: the next run requests a new export.
    Failed,
}

/// The checkpoint of a job's current export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportState {
    /// Organization export gid or export job gid.
    pub export_gid: String,
    /// The kind that requested it.
    pub kind: String,
    /// What it exports.
    pub parent: String,
    /// Phase.
    pub phase: Phase,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it was first seen finished.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Bytes of the file synced in the partial file.
    #[serde(default)]
    pub partial_offset: u64,
    /// The file's size, once known.
    #[serde(default)]
    pub total_bytes: Option<u64>,
    /// The installed file's name (from `downloading` on).
    #[serde(default)]
    pub file: Option<String>,
    /// Its sha256.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// The run that requested it: a retry of that run after the export is `done` (a crash
    /// between the last checkpoint and the run's completion) completes without a new export.
    #[serde(default)]
    pub run_id: Option<String>,
}

impl ExportState {
    fn progress(&self) -> Value {
        let percent = self
            .total_bytes
            .filter(|t| *t > 0)
            .map(|t| ((self.partial_offset as f64 / t as f64) * 1000.0).round() / 10.0);
        json!({
            "phase": self.phase,
            "export_gid": self.export_gid,
            "kind": self.kind,
            "parent": self.parent,
            "bytes": self.partial_offset,
            "total_bytes": self.total_bytes,
            "percent": percent,
            "file": self.file,
        })
    }
}

/// Runs one export job attempt.
pub async fn run(cx: &KindContext<'_>, target: Target, settings: &ExportSettings) -> JobOutcome {
    let (ctx, job, client) = (cx.run, cx.job, cx.client);
    let downloader = match Downloader::new(settings.download_policy(client.base_url())) {
        Ok(downloader) => downloader,
        Err(error) => {
            return JobOutcome::Retry {
                delay: None,
                error: error.to_string(),
            };
        }
    };
    let export = Exporter {
        ctx,
        job,
        target,
        settings,
        client,
        sinks: cx.sinks,
        downloader,
    };
    let outcome = match export.run().await {
        Ok(progress) => JobOutcome::Completed { progress },
        Err(outcome) => outcome,
    };
    metrics::counter!(
        "asana_worker_exports_total",
        "kind" => export.target.kind(),
        "outcome" => outcome.label(),
    )
    .increment(1);
    outcome
}

struct Exporter<'a> {
    ctx: &'a RunContext,
    job: &'a Job,
    target: Target,
    settings: &'a ExportSettings,
    client: &'a AsanaClient,
    sinks: &'a SinkContext,
    downloader: Downloader,
}

type Step<T> = Result<T, JobOutcome>;

impl Exporter<'_> {
    async fn run(&self) -> Step<Value> {
        let stored = self.load().await?;
        let (mut state, mut slot) = match stored {
            Some(state)
                if matches!(
                    state.phase,
                    Phase::Polling | Phase::Downloading | Phase::Delivering
                ) =>
            {
                tracing::info!(
                    job = %self.job.name, export = %state.export_gid, phase = ?state.phase,
                    "Resuming the export requested earlier"
                );
                (state, None)
            }
            Some(state)
                if state.phase == Phase::Done
                    && state.run_id.as_deref() == Some(self.ctx.run.id.to_string().as_str()) =>
            {
                tracing::info!(
                    job = %self.job.name, export = %state.export_gid,
                    "This run's export is already complete"
                );
                (state, None)
            }
            _ => {
                let (state, slot) = self.request().await?;
                (state, Some(slot))
            }
        };
        if state.phase == Phase::Polling {
            if slot.is_none() {
                slot = Some(self.slot().await?);
            }
            self.poll(&mut state).await?;
            drop(slot);
        }
        if state.phase == Phase::Downloading {
            self.download(&mut state).await?;
        }
        let manifest = self.read_manifest(&state)?;
        if state.phase == Phase::Delivering {
            if let Some(sink) = &self.settings.deliver {
                let file = self.settings.output_dir.join(&manifest.file);
                deliver(sink, self.sinks, &file, &manifest).await?;
                tracing::info!(job = %self.job.name, export = %state.export_gid, "Delivered the export file");
            }
            state.phase = Phase::Done;
            self.save(&state).await?;
        }
        let pruned = retention::prune(
            &self.settings.output_dir,
            &self.job.name,
            self.settings.retention(),
            self.ctx.clock.now(),
        )
        .map_err(|error| JobOutcome::Retry {
            delay: None,
            error: format!(
                "export {} is complete but pruning old exports failed: {error}",
                state.export_gid
            ),
        })?;
        for file in &pruned {
            tracing::info!(job = %self.job.name, file = %file.display(), "Pruned an old export");
        }
        self.remove_stale_partials(&state.export_gid);
        let mut progress = serde_json::to_value(&manifest).unwrap_or_default();
        progress["pruned"] = json!(pruned.len());
        progress["phase"] = json!(Phase::Done);
        progress["percent"] = json!(100.0);
        let _ = self.ctx.checkpoints.progress(progress.clone()).await;
        Ok(progress)
    }

    async fn load(&self) -> Step<Option<ExportState>> {
        let value = self
            .ctx
            .checkpoints
            .get(CHECKPOINT_KEY)
            .await
            .map_err(|e| super::outcome_for_checkpoint_error(e, "the export's progress"))?;
        match value {
            None => Ok(None),
            Some(value) => serde_json::from_value(value.clone()).map(Some).map_err(|error| {
                JobOutcome::Failed {
                    error: format!(
                        "the checkpoint {CHECKPOINT_KEY:?} of job {:?} is unreadable ({error}): {value}; if no export is in progress, delete the checkpoint so the next run requests a new one",
                        self.job.name
                    ),
                }
            }),
        }
    }

    async fn save(&self, state: &ExportState) -> Step<()> {
        let value = serde_json::to_value(state).unwrap_or_default();
        self.ctx
            .checkpoints
            .put(CHECKPOINT_KEY, value)
            .await
            .map_err(|e| super::outcome_for_checkpoint_error(e, "the export's progress"))?;
        self.report(state).await
    }

    async fn report(&self, state: &ExportState) -> Step<()> {
        match self.ctx.checkpoints.progress(state.progress()).await {
            Err(CheckpointError::LeaseLost) => Err(JobOutcome::Interrupted),
            // Progress is informative; a failed write is not worth failing the export.
            _ => Ok(()),
        }
    }

    async fn sleep(&self, delay: Duration) -> Step<()> {
        tokio::select! {
            biased;
            () = self.ctx.cancel.cancelled() => Err(JobOutcome::Interrupted),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }

    async fn slot(&self) -> Step<ExportSlot> {
        let budget = self.client.budget();
        if budget.export_slots_free() == 0 {
            tracing::info!(
                job = %self.job.name,
                "All export slots of the credential's user are taken; waiting for one"
            );
            let _ = self
                .ctx
                .checkpoints
                .progress(json!({ "phase": "waiting_for_export_slot" }))
                .await;
        }
        budget
            .export_slot(&self.ctx.cancel)
            .await
            .map_err(|_| JobOutcome::Interrupted)
    }

    /// Requests a new export under an export slot and records its gid at once.
    async fn request(&self) -> Step<(ExportState, ExportSlot)> {
        let mut wait = self.settings.poll_interval;
        loop {
            let slot = self.slot().await?;
            match self.target.create(self.client).await {
                Ok(gid) => {
                    let state = ExportState {
                        export_gid: gid.clone(),
                        kind: self.target.kind().into(),
                        parent: self.target.parent().into(),
                        phase: Phase::Polling,
                        created_at: self.ctx.clock.now(),
                        finished_at: None,
                        partial_offset: 0,
                        total_bytes: None,
                        file: None,
                        sha256: None,
                        error: None,
                        run_id: Some(self.ctx.run.id.to_string()),
                    };
                    if let Err(outcome) = self.save(&state).await {
                        tracing::error!(
                            job = %self.job.name, export = %gid,
                            "Asana accepted the export but its gid could not be recorded; the next run requests another one"
                        );
                        return Err(outcome);
                    }
                    tracing::info!(job = %self.job.name, kind = self.target.kind(), export = %gid, parent = %self.target.parent(), "Requested an export");
                    return Ok((state, slot));
                }
                Err(AsanaError::Forbidden { message })
                    if matches!(self.target, Target::Resource { .. })
                        && message.contains("one in progress") =>
                {
                    drop(slot);
                    tracing::info!(
                        job = %self.job.name, wait_secs = wait.as_secs(),
                        "Another resource export is in progress in this workspace; waiting before asking again"
                    );
                    let _ = self
                        .ctx
                        .checkpoints
                        .progress(json!({ "phase": "waiting_for_workspace", "detail": message }))
                        .await;
                    self.sleep(wait).await?;
                    wait = (wait * 2).min(self.settings.poll_max_interval);
                }
                Err(error) => return Err(super::outcome_for_error(self.job, &error)),
            }
        }
    }

    /// Polls until the export finished (phase becomes `downloading`) or failed.
    async fn poll(&self, state: &mut ExportState) -> Step<()> {
        let mut wait = self.settings.poll_interval;
        loop {
            let status = match self.target.status(self.client, &state.export_gid).await {
                Ok(status) => status,
                Err(AsanaError::NotFound { message }) => {
                    return Err(self
                        .failed(state, format!("it no longer exists ({message})"))
                        .await);
                }
                Err(error) => return Err(super::outcome_for_error(self.job, &error)),
            };
            match status {
                Status::Running(word) => {
                    let mut progress = state.progress();
                    progress["asana_state"] = json!(word);
                    if let Err(CheckpointError::LeaseLost) =
                        self.ctx.checkpoints.progress(progress).await
                    {
                        return Err(JobOutcome::Interrupted);
                    }
                    tracing::debug!(job = %self.job.name, export = %state.export_gid, state = %word, "Export not finished yet");
                    self.sleep(wait).await?;
                    wait = (wait * 2).min(self.settings.poll_max_interval);
                }
                Status::Failed(word) => {
                    return Err(self
                        .failed(
                            state,
                            format!("Asana reports it as {word:?} (Asana gives no further reason)"),
                        )
                        .await);
                }
                Status::Finished(_) => {
                    state.phase = Phase::Downloading;
                    state.finished_at = Some(self.ctx.clock.now());
                    state.file = Some(self.file_name(state));
                    self.save(state).await?;
                    tracing::info!(job = %self.job.name, export = %state.export_gid, "Export finished; downloading it");
                    return Ok(());
                }
            }
        }
    }

    /// Deletes a complete but unusable partial file (corrupt, or not the size downloaded) and
    /// resets the download to byte zero: the next attempt fetches the whole file again.
    async fn discard_partial(
        &self,
        state: &mut ExportState,
        partial: &Path,
        reason: String,
    ) -> JobOutcome {
        let _ = std::fs::remove_file(partial);
        state.partial_offset = 0;
        if let Err(outcome) = self.save(state).await {
            return outcome;
        }
        JobOutcome::Retry {
            delay: None,
            error: format!("export {}: {reason}", state.export_gid),
        }
    }

    async fn failed(&self, state: &mut ExportState, reason: String) -> JobOutcome {
        let error = format!(
            "{} {} of {} failed: {reason}; the next run requests a new export",
            self.target.kind(),
            state.export_gid,
            state.parent
        );
        state.phase = Phase::Failed;
        state.error = Some(error.clone());
        if let Err(outcome) = self.save(state).await {
            return outcome;
        }
        tracing::warn!(job = %self.job.name, export = %state.export_gid, %error, "Export failed");
        JobOutcome::Failed { error }
    }

    fn file_name(&self, state: &ExportState) -> String {
        format!(
            "{}-{}-{}-{}{}",
            state.kind,
            sanitize(&state.parent),
            state.created_at.format("%Y%m%dT%H%M%SZ"),
            sanitize(&state.export_gid),
            self.target.extension()
        )
    }

    fn partial_path(&self, state: &ExportState) -> PathBuf {
        self.settings.output_dir.join(PARTIAL_DIR).join(format!(
            "{}-{}.part",
            sanitize(&self.job.name),
            sanitize(&state.export_gid)
        ))
    }

    fn io_outcome(&self, action: &str, path: &Path, error: std::io::Error) -> JobOutcome {
        JobOutcome::Retry {
            delay: None,
            error: format!(
                "cannot {action} {}: {error}; check the output directory's space and permissions",
                path.display()
            ),
        }
    }

    /// Downloads, verifies and installs the file, then writes its manifest.
    async fn download(&self, state: &mut ExportState) -> Step<()> {
        let partial = self.partial_path(state);
        if let Some(dir) = partial.parent() {
            create_dir(dir).map_err(|e| self.io_outcome("create", dir, e))?;
        }
        let file_name = state.file.clone().unwrap_or_else(|| self.file_name(state));
        let destination = self.settings.output_dir.join(&file_name);
        let mut failures = 0u32;
        let mut refreshes = 0u32;
        let fetched = loop {
            let url = match self.target.status(self.client, &state.export_gid).await {
                Ok(Status::Finished(Some(url))) => url,
                Ok(Status::Finished(None)) => {
                    return Err(JobOutcome::Retry {
                        delay: None,
                        error: format!(
                            "export {} is finished but Asana gave no download URL; retrying later",
                            state.export_gid
                        ),
                    });
                }
                Ok(other) => {
                    return Err(self
                        .failed(
                            state,
                            format!("it was finished but Asana now reports {other:?}"),
                        )
                        .await);
                }
                Err(AsanaError::NotFound { message }) => {
                    return Err(self
                        .failed(state, format!("it no longer exists ({message})"))
                        .await);
                }
                Err(error) => return Err(super::outcome_for_error(self.job, &error)),
            };
            let before = state.partial_offset;
            let sink = StateSink {
                exporter: self,
                state: Mutex::new(state.clone()),
            };
            let result = self
                .downloader
                .fetch(
                    &url,
                    &partial,
                    state.partial_offset,
                    &sink,
                    &self.ctx.cancel,
                )
                .await;
            *state = sink.state.into_inner().unwrap_or_else(|p| p.into_inner());
            if state.partial_offset > before {
                failures = 0;
                refreshes = 0;
            }
            match result {
                Ok(fetched) => break fetched,
                Err(DownloadError::UrlRejected { status, detail }) => {
                    refreshes += 1;
                    tracing::info!(
                        job = %self.job.name, export = %state.export_gid, status, %detail,
                        "The download URL was refused (expired?); fetching a fresh one"
                    );
                    metrics::counter!("asana_worker_export_url_refreshes_total", "job" => self.job.name.clone())
                        .increment(1);
                    if refreshes > MAX_URL_REFRESHES {
                        return Err(JobOutcome::Retry {
                            delay: None,
                            error: format!(
                                "the download URL of export {} was refused {refreshes} times in a row (HTTP {status}: {detail}); the next attempt resumes from byte {}",
                                state.export_gid, state.partial_offset
                            ),
                        });
                    }
                }
                Err(DownloadError::Protocol(message)) => {
                    failures += 1;
                    tracing::warn!(job = %self.job.name, export = %state.export_gid, %message, "Restarting the download from zero");
                    state.partial_offset = 0;
                    self.save(state).await?;
                    if failures > MAX_DOWNLOAD_FAILURES {
                        return Err(JobOutcome::Retry {
                            delay: None,
                            error: format!("downloading export {}: {message}", state.export_gid),
                        });
                    }
                }
                Err(DownloadError::Transient(message)) => {
                    failures += 1;
                    if failures > MAX_DOWNLOAD_FAILURES {
                        return Err(JobOutcome::Retry {
                            delay: None,
                            error: format!(
                                "downloading export {} failed {failures} times in a row ({message}); the next attempt resumes from byte {}",
                                state.export_gid, state.partial_offset
                            ),
                        });
                    }
                    tracing::info!(job = %self.job.name, export = %state.export_gid, %message, offset = state.partial_offset, "Download interrupted; resuming");
                    self.sleep(Duration::from_secs(1 << failures.min(5)))
                        .await?;
                }
                Err(DownloadError::Cancelled) => return Err(JobOutcome::Interrupted),
                Err(DownloadError::Progress(message)) if message.contains("lease") => {
                    return Err(JobOutcome::Interrupted);
                }
                Err(
                    error @ (DownloadError::UrlRefused { .. }
                    | DownloadError::TooManyRedirects { .. }
                    | DownloadError::TooLarge { .. }),
                ) => {
                    return Err(JobOutcome::Failed {
                        error: format!("export {}: {error}", state.export_gid),
                    });
                }
                Err(error) => {
                    return Err(JobOutcome::Retry {
                        delay: None,
                        error: format!("export {}: {error}", state.export_gid),
                    });
                }
            }
        };
        let checked = match download::check(&partial).await {
            Ok(checked) if checked.bytes == fetched.bytes => checked,
            Ok(checked) => {
                return Err(self
                    .discard_partial(
                        state,
                        &partial,
                        format!(
                            "the partial file holds {} bytes after a download of {}; it was discarded and will be downloaded again",
                            checked.bytes, fetched.bytes
                        ),
                    )
                    .await);
            }
            Err(error @ DownloadError::Corrupt { .. }) => {
                return Err(self
                    .discard_partial(state, &partial, error.to_string())
                    .await);
            }
            Err(error) => {
                return Err(JobOutcome::Retry {
                    delay: None,
                    error: format!("export {}: {error}", state.export_gid),
                });
            }
        };
        download::install(&partial, &destination).map_err(|error| JobOutcome::Retry {
            delay: None,
            error: error.to_string(),
        })?;
        let manifest = Manifest {
            job: self.job.name.clone(),
            kind: state.kind.clone(),
            export_gid: state.export_gid.clone(),
            parent: state.parent.clone(),
            file: file_name.clone(),
            created_at: state.created_at,
            finished_at: state.finished_at.unwrap_or(state.created_at),
            downloaded_at: self.ctx.clock.now(),
            size: checked.bytes,
            sha256: checked.sha256.clone(),
        };
        let manifest_path = self
            .settings
            .output_dir
            .join(format!("{file_name}{MANIFEST_SUFFIX}"));
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        download::write_atomic(&manifest_path, &bytes).map_err(|error| JobOutcome::Retry {
            delay: None,
            error: error.to_string(),
        })?;
        state.phase = Phase::Delivering;
        state.file = Some(file_name);
        state.sha256 = Some(checked.sha256.clone());
        state.partial_offset = checked.bytes;
        state.total_bytes = Some(checked.bytes);
        self.save(state).await?;
        tracing::info!(
            job = %self.job.name, export = %state.export_gid, bytes = checked.bytes,
            sha256 = %checked.sha256, resumed_from = fetched.resumed_from,
            file = %destination.display(), "Downloaded the export"
        );
        Ok(())
    }

    fn read_manifest(&self, state: &ExportState) -> Step<Manifest> {
        let file = state.file.clone().unwrap_or_else(|| self.file_name(state));
        let path = self
            .settings
            .output_dir
            .join(format!("{file}{MANIFEST_SUFFIX}"));
        std::fs::read(&path)
            .map_err(|e| self.io_outcome("read", &path, e))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|error| JobOutcome::Failed {
                    error: format!(
                        "the manifest {} is unreadable ({error}); delete the export file and its manifest and the checkpoint {CHECKPOINT_KEY:?} to download a new export",
                        path.display()
                    ),
                })
            })
    }

    /// Partial files of this job's earlier exports (failed or replaced) are of no further use.
    fn remove_stale_partials(&self, current: &str) {
        let dir = self.settings.output_dir.join(PARTIAL_DIR);
        let prefix = format!("{}-", sanitize(&self.job.name));
        let keep = format!("{prefix}{}.part", sanitize(current));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(&prefix) && name.ends_with(".part") && name != keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Records the partial file's synced offset in the checkpoint and the run's progress.
struct StateSink<'a, 'b> {
    exporter: &'a Exporter<'b>,
    state: Mutex<ExportState>,
}

#[async_trait]
impl ProgressSink for StateSink<'_, '_> {
    async fn synced(&self, offset: u64, total: Option<u64>) -> Result<(), String> {
        let (snapshot, previous) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let previous = state.partial_offset;
            state.partial_offset = offset;
            if total.is_some() {
                state.total_bytes = total;
            }
            (state.clone(), previous)
        };
        let job = self.exporter.job.name.clone();
        if offset > previous {
            metrics::counter!("asana_worker_export_downloaded_bytes_total", "job" => job.clone())
                .increment(offset - previous);
        }
        let progress = snapshot.progress();
        if let Some(percent) = progress["percent"].as_f64() {
            metrics::gauge!("asana_worker_export_progress_ratio", "job" => job.clone())
                .set(percent / 100.0);
        }
        tracing::info!(
            job = %job, export = %snapshot.export_gid, bytes = offset,
            total, percent = progress["percent"].as_f64(), "Export download progress"
        );
        let value = serde_json::to_value(&snapshot).unwrap_or_default();
        self.exporter
            .ctx
            .checkpoints
            .put(CHECKPOINT_KEY, value)
            .await
            .map_err(|e| match e {
                CheckpointError::LeaseLost => "the run's lease was lost".to_string(),
                other => other.to_string(),
            })?;
        let _ = self.exporter.ctx.checkpoints.progress(progress).await;
        Ok(())
    }
}

/// Delivers a downloaded export file with its manifest to the `deliver` document sink (named
/// `<job>/<file>` there). The sink checks the bytes it delivers against the manifest's sha256,
/// so a file that changed on disk since the download is never delivered; a file it already
/// holds (an earlier attempt) is not sent again.
async fn deliver(
    sink: &DocumentSinkSettings,
    context: &SinkContext,
    file: &Path,
    manifest: &Manifest,
) -> Result<(), JobOutcome> {
    let fail = |error: SinkError| {
        let transient = error.is_transient();
        let error = format!(
            "export {} was downloaded to {} but its delivery failed: {error}",
            manifest.export_gid,
            file.display()
        );
        if transient {
            JobOutcome::Retry { delay: None, error }
        } else {
            JobOutcome::Failed { error }
        }
    };
    let sink = crate::sinks::document::build(sink, context).map_err(fail)?;
    let metadata = serde_json::to_value(manifest).unwrap_or_default();
    let document = Document {
        stream: &manifest.job,
        name: &manifest.file,
        content: Content::File(file),
        media_type: "application/gzip",
        sha256: &manifest.sha256,
        metadata: Some(&metadata),
    };
    sink.deliver(&document).await.map_err(fail)?;
    Ok(())
}

/// A gid or name as a file-name part: anything but ASCII letters, digits, `-`, `_` and `.`
/// becomes `_`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::jobs::ValidationContext;
    use crate::jobs::{Kind, parse_job};

    fn parse(text: &str) -> Result<Job, Vec<String>> {
        let context = ValidationContext {
            credentials: ["sa".to_string()].into_iter().collect(),
            check_secrets: true,
            ..ValidationContext::default()
        };
        parse_job(Path::new("jobs/e.toml"), text, &context)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn export_kinds_parse_with_shared_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out").display().to_string();
        let job = parse(&format!(
            "name = \"o\"\nkind = \"org_export\"\nevery = \"24h\"\ncredential = \"sa\"\n[settings]\norganization = \"1\"\noutput_dir = \"{out}\"\nkeep_for = \"30d\"\n"
        ))
        .unwrap();
        let Kind::OrgExport(settings) = job.kind else {
            panic!("{:?}", job.kind)
        };
        assert_eq!(settings.organization, "1");
        assert_eq!(settings.export.poll_interval, Duration::from_secs(30));
        assert_eq!(settings.export.keep_last, 7);
        assert_eq!(
            settings.export.keep_for,
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(settings.export.deliver, None);
        let policy = settings
            .export
            .download_policy("https://app.asana.com/api/1.0");
        assert!(policy.http_hosts.is_empty());
        assert_eq!(policy.max_bytes, 102_400 << 20);

        let deliver = dir.path().join("copies").display().to_string();
        let job = parse(&format!(
            "name = \"r\"\nkind = \"resource_export\"\nevery = \"24h\"\ncredential = \"sa\"\n[settings]\nworkspace = \"1\"\nresource_types = [\"task\", \"team\"]\noutput_dir = \"{out}\"\n[settings.deliver]\ntype = \"file\"\ndir = \"{deliver}\"\n"
        ))
        .unwrap();
        let Kind::ResourceExport(settings) = job.kind else {
            panic!("{:?}", job.kind)
        };
        assert_eq!(settings.resource_types, ["task", "team"]);
        assert!(matches!(
            settings.export.deliver,
            Some(DocumentSinkSettings::File(_))
        ));
    }

    #[test]
    fn every_document_sink_is_accepted_for_delivery_and_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out").display().to_string();
        let job = |deliver: &str| {
            format!(
                "name = \"g\"\nkind = \"graph_export\"\nevery = \"24h\"\ncredential = \"sa\"\n[settings]\nparent = \"12\"\noutput_dir = \"{out}\"\n[settings.deliver]\n{deliver}"
            )
        };
        // Any set variable stands in for the key pair: only its presence is checked at load.
        let s3 = job(
            "type = \"s3\"\nbucket = \"b\"\naccess_key_id_env = \"PATH\"\nsecret_access_key_env = \"PATH\"\n",
        );
        assert!(parse(&s3).is_ok(), "{:?}", parse(&s3));
        let unset = job(
            "type = \"s3\"\nbucket = \"b\"\naccess_key_id_env = \"ASANA_WORKER_TEST_UNSET_KEY_ID\"\nsecret_access_key_env = \"PATH\"\n",
        );
        let text = parse(&unset).unwrap_err().join("\n");
        assert!(
            text.contains("jobs/e.toml:11:21: `deliver.access_key_id_env`: environment variable ASANA_WORKER_TEST_UNSET_KEY_ID is not set"),
            "{text}"
        );
        // A sink of another family (tables) cannot take a document.
        let table = job("type = \"sqlite\"\npath = \"x.sqlite\"\n");
        let text = parse(&table).unwrap_err().join("\n");
        assert!(
            text.contains("jobs/e.toml:9:8: unknown sink type \"sqlite\""),
            "{text}"
        );
    }

    #[test]
    fn export_settings_problems_are_reported_in_place() {
        let errors = parse(
            "name = \"g\"\nkind = \"graph_export\"\nevery = \"24h\"\ncredential = \"sa\"\n[settings]\npoll_interval = 5\nresource_types = [1]\n",
        )
        .unwrap_err();
        let text = errors.join("\n");
        assert!(text.contains("missing required setting `parent`"), "{text}");
        assert!(
            text.contains("missing required setting `output_dir`"),
            "{text}"
        );
        assert!(text.contains("jobs/e.toml:6:17"), "{text}");
        assert!(text.contains("unknown setting `resource_types`"), "{text}");
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(sanitize("../12/a b"), "_12_a_b");
        assert_eq!(sanitize("1200042000000001"), "1200042000000001");
    }
}
