//! `sync`: keeps SQL tables equal to what the job's credential can see of one workspace.
//!
//! A first **full pass** reads every resource (workspace-level lists, then each project with its
//! sections, memberships, status updates, tasks, subtasks and their stories, attachments and time
//! entries) and commits each step's rows *with the pass's position* in one transaction of the
//! table sink, so a run killed at any instant resumes at the step it was in, without re-reading
//! finished projects. Event sync tokens are taken before the pass reads anything, so changes made
//! during the pass are replayed afterwards.
//!
//! Later runs are **incremental**: they read the workspace's event stream (or, where the token may
//! not read it, each project's), re-read what the events name, and commit the rows with the
//! stream's next token. Asana delivers events at most once and expires tokens within 24 hours, so
//! every `sweep_every` a run also **sweeps**: each project's tasks changed since the previous
//! sweep (`modified_since`), plus its full task list compared with the mirror to find tasks removed
//! or deleted. A 412 on the workspace stream re-reads everything; on a project's stream, only that
//! project. What the token cannot read (402, 403) is recorded in `sync_status`, never left as an
//! empty table. See ARCHITECTURE.md, "The sync job".

pub mod settings;
pub mod tables;

mod reader;
mod state;
pub mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{JobKind, KindContext, outcome_for_error};
use crate::asana::{AsanaClient, AsanaError};
use crate::config::jobs::SettingsCheck;
use crate::sinks::SinkError;
use crate::sinks::table::{Cell, Change, Row, TableBatch, TableSink};
use crate::worker::JobOutcome;

pub use settings::{DeleteMode, Resource, SyncSettings};
use state::{Pass, PassKind, Streams, SyncState};

/// The `sync` kind.
#[derive(Debug)]
pub struct Sync;

impl JobKind for Sync {
    const NAME: &'static str = "sync";
    const SUMMARY: &'static str =
        "Mirrors a workspace's work graph into SQL tables (SQLite or PostgreSQL), incrementally.";
    type Settings = SyncSettings;

    fn validate(settings: &SyncSettings, check: &mut SettingsCheck<'_>) {
        settings.validate(check);
    }

    async fn run(settings: &SyncSettings, cx: &KindContext<'_>) -> JobOutcome {
        let sink = match crate::sinks::table::build(&settings.sink, cx.sinks).await {
            Ok(sink) => sink,
            Err(error) => return super::outcome_for_sink_error(error),
        };
        let job = Syncer::new(settings, cx, sink);
        match job.run().await {
            Ok(progress) => JobOutcome::Completed { progress },
            Err(SyncError::Api(error)) => outcome_for_error(cx.job, &error),
            Err(SyncError::Sink(error)) => super::outcome_for_sink_error(error),
            Err(SyncError::Interrupted) => JobOutcome::Interrupted,
            Err(SyncError::Checkpoint(message)) => JobOutcome::Failed { error: message },
        }
    }
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// Asana refused or failed (gaps are not errors: they are recorded and skipped).
    #[error(transparent)]
    Api(#[from] AsanaError),
    /// The target database failed.
    #[error(transparent)]
    Sink(SinkError),
    /// Cancelled, or the stream was taken over by another run.
    #[error("interrupted")]
    Interrupted,
    /// The checkpoint in the target database cannot be read.
    #[error("{0}")]
    Checkpoint(String),
}

impl From<SinkError> for SyncError {
    fn from(error: SinkError) -> Self {
        match error {
            SinkError::Conflict { .. } => SyncError::Interrupted,
            other => SyncError::Sink(other),
        }
    }
}

/// How far a sweep's `modified_since` reaches back before the previous sweep's start: an
/// allowance for the daemon's clock running ahead of Asana's (rows are upserts, so re-reading
/// costs only requests).
const SWEEP_OVERLAP: chrono::Duration = chrono::Duration::minutes(10);

/// Checkpoint key of the [`SyncState`].
const STATE_KEY: &str = "sync";

/// Commits batches one at a time with the stream's version and state: projects are read
/// concurrently, but their rows and the pass's position go to the database in order.
struct Writer {
    version: u64,
    state: SyncState,
    /// The project scope the projects step found, committed with that step's rows.
    pending_projects: Option<BTreeSet<String>>,
}

/// Figures a run reports (`runs show`).
#[derive(Debug, Default)]
struct Figures {
    requests: u64,
    rows: u64,
    events: u64,
    tasks_refreshed: u64,
    projects: u64,
    projects_resynced: u64,
    gaps: BTreeMap<String, String>,
}

/// One run of a sync job.
pub(crate) struct Syncer<'a> {
    settings: &'a SyncSettings,
    cx: &'a KindContext<'a>,
    client: AsanaClient,
    sink: Arc<dyn TableSink>,
    writer: Mutex<Writer>,
    figures: std::sync::Mutex<Figures>,
    workspace: String,
    /// Time tracking answered 402 in this run: asked once, then skipped.
    no_time_tracking: AtomicBool,
}

/// A gap: a resource the token may not read somewhere, with Asana's status and message.
#[derive(Debug, Clone)]
pub(crate) struct Gap {
    resource: &'static str,
    scope: String,
    status: u16,
    reason: String,
}

impl Gap {
    fn state(&self) -> &'static str {
        match self.status {
            402 => "payment_required",
            403 => "forbidden",
            _ => "not_found",
        }
    }
}

/// Whether an error is a gap (the token may not read this) rather than a failure.
fn gap_status(error: &AsanaError) -> Option<u16> {
    match error {
        AsanaError::PaymentRequired { .. } => Some(402),
        AsanaError::Forbidden { .. } => Some(403),
        AsanaError::NotFound { .. } => Some(404),
        _ => None,
    }
}

impl<'a> Syncer<'a> {
    fn new(settings: &'a SyncSettings, cx: &'a KindContext<'a>, sink: Arc<dyn TableSink>) -> Self {
        Syncer {
            settings,
            cx,
            client: cx.client.clone(),
            sink,
            writer: Mutex::new(Writer {
                version: 0,
                state: SyncState::default(),
                pending_projects: None,
            }),
            no_time_tracking: AtomicBool::new(false),
            figures: std::sync::Mutex::new(Figures::default()),
            workspace: settings.workspace.as_str().to_string(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.cx.run.clock.now()
    }

    fn stream(&self) -> &str {
        &self.cx.job.name
    }

    fn check_cancel(&self) -> Result<(), SyncError> {
        if self.cx.run.cancel.is_cancelled() {
            Err(SyncError::Interrupted)
        } else {
            Ok(())
        }
    }

    fn figure(&self, update: impl FnOnce(&mut Figures)) {
        let mut figures = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        update(&mut figures);
    }

    async fn run(&self) -> Result<Value, SyncError> {
        let started = self.now();
        self.sink.ensure_tables(&tables::defs()).await?;
        let stored = self.sink.state(self.stream()).await?;
        let state: SyncState = match stored.checkpoint.get(STATE_KEY) {
            None => SyncState::default(),
            Some(value) => serde_json::from_value(value.clone()).map_err(|error| {
                SyncError::Checkpoint(format!(
                    "the sync state of job {:?} in its target database is unreadable ({error}); delete its row in table {} to start over with a full pass",
                    self.stream(),
                    crate::sinks::table::CHECKPOINTS_TABLE
                ))
            })?,
        };
        {
            let mut writer = self.writer.lock().await;
            writer.version = stored.version;
            writer.state = state.clone();
        }
        if state.pass.is_none() && !state.complete {
            self.start_pass(PassKind::Full, None).await?;
        }
        if state.pass.is_none() && state.complete {
            self.read_events().await?;
            let due = state
                .last_sweep_at
                .is_none_or(|last| started - last >= chrono_duration(self.settings.sweep_every));
            if due && self.writer.lock().await.state.pass.is_none() {
                // Overlap the previous sweep, so a clock running ahead of Asana's loses nothing.
                let since = state.last_sweep_at.map(|t| t - SWEEP_OVERLAP);
                self.start_pass(PassKind::Sweep, since).await?;
            }
        }
        // The run's mode is the pass it runs (started above, resumed, or begun by a 412).
        let pass = self.writer.lock().await.state.pass.clone();
        let mode = match &pass {
            Some(pass) if pass.kind == PassKind::Full => "full",
            Some(_) => "sweep",
            None => "incremental",
        };
        if let Some(pass) = pass {
            self.run_pass(&pass).await?;
        }
        let caught_up = json!(started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        self.commit_with(Vec::new(), |_| {}, Some(caught_up))
            .await?;
        let figures = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        Ok(json!({
            "mode": mode,
            "requests": figures.requests,
            "rows_written": figures.rows,
            "events": figures.events,
            "tasks_refreshed": figures.tasks_refreshed,
            "projects": figures.projects,
            "projects_resynced": figures.projects_resynced,
            "gaps": figures.gaps,
        }))
    }

    /// Commits `changes` with the state `update` makes, in one transaction.
    async fn commit(
        &self,
        changes: Vec<Change>,
        update: impl FnOnce(&mut SyncState),
    ) -> Result<(), SyncError> {
        self.commit_with(changes, update, None).await
    }

    async fn commit_with(
        &self,
        changes: Vec<Change>,
        update: impl FnOnce(&mut SyncState),
        caught_up_at: Option<Value>,
    ) -> Result<(), SyncError> {
        let mut writer = self.writer.lock().await;
        let mut state = writer.state.clone();
        if let Some(projects) = writer.pending_projects.take() {
            state.projects = projects;
        }
        update(&mut state);
        let mut checkpoint = BTreeMap::from([(
            STATE_KEY.to_string(),
            serde_json::to_value(&state).expect("the sync state serializes"),
        )]);
        if let Some(at) = caught_up_at {
            checkpoint.insert(tables::CAUGHT_UP_AT.into(), at);
        }
        let rows = changes.len() as u64;
        let batch = TableBatch {
            stream: self.stream().to_string(),
            expected_version: writer.version,
            changes,
            checkpoint,
            now: self.now(),
        };
        writer.version = self.sink.apply(batch).await?;
        writer.state = state;
        drop(writer);
        self.figure(|f| f.rows += rows);
        Ok(())
    }

    async fn report_progress(&self) {
        let (requests, rows, projects) = {
            let f = self.figures.lock().unwrap_or_else(|p| p.into_inner());
            (f.requests, f.rows, f.projects)
        };
        let _ = self
            .cx
            .run
            .checkpoints
            .progress(
                json!({"requests": requests, "rows_written": rows, "projects_done": projects}),
            )
            .await;
    }

    /// Starts a pass: takes the event token(s) first, so changes made while the pass reads are
    /// replayed afterwards.
    async fn start_pass(
        &self,
        kind: PassKind,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), SyncError> {
        let started_at = self.now();
        let streams = if kind == PassKind::Full {
            Some(self.fresh_streams().await?)
        } else {
            None
        };
        let pass = Pass {
            kind,
            started_at,
            since,
            done: BTreeSet::new(),
        };
        self.commit(Vec::new(), move |state| {
            if let Some(streams) = streams {
                state.streams = streams;
            }
            state.pass = Some(pass);
        })
        .await
    }

    /// A fresh token of the workspace stream, or per-project mode when the token may not read it.
    async fn fresh_streams(&self) -> Result<Streams, SyncError> {
        self.count_request();
        match self.client.workspace_events(&self.workspace, None).await {
            Err(AsanaError::SyncExpired { sync, .. }) => Ok(Streams::Workspace { sync }),
            Ok(page) => Ok(Streams::Workspace { sync: page.sync }),
            Err(error) if gap_status(&error).is_some() => {
                tracing::info!(job = %self.stream(), %error, "The workspace event stream is refused; reading each project's stream");
                Ok(Streams::Projects {
                    tokens: BTreeMap::new(),
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    fn count_request(&self) {
        self.figure(|f| f.requests += 1);
    }

    /// Runs (or resumes) a pass: the workspace-level steps, then every project, skipping the
    /// steps it already committed.
    async fn run_pass(&self, pass: &Pass) -> Result<(), SyncError> {
        for step in reader::WORKSPACE_STEPS {
            if pass.done.contains(step.name) || !step.wanted(self.settings) {
                continue;
            }
            self.check_cancel()?;
            let changes = self.workspace_step(step).await?;
            let name = step.name.to_string();
            self.commit(changes, |state| {
                if let Some(pass) = state.pass.as_mut() {
                    pass.done.insert(name);
                }
            })
            .await?;
        }
        let projects = self.writer.lock().await.state.projects.clone();
        let todo: Vec<String> = projects
            .into_iter()
            .filter(|gid| !pass.done.contains(&format!("project:{gid}")))
            .collect();
        let mode = match pass.kind {
            PassKind::Full => reader::ProjectMode::Full,
            PassKind::Sweep => reader::ProjectMode::Sweep { since: pass.since },
        };
        futures::stream::iter(todo)
            .map(|gid| async move {
                self.check_cancel()?;
                self.sync_project(&gid, mode).await
            })
            .buffer_unordered(self.settings.concurrency.clamp(1, 8))
            .try_collect::<Vec<()>>()
            .await?;
        let started_at = pass.started_at;
        self.commit(Vec::new(), move |state| {
            state.pass = None;
            state.complete = true;
            // Either kind is the next sweep's watermark: a full pass read everything, so it
            // counts as a sweep too.
            state.last_sweep_at = Some(started_at);
        })
        .await
    }

    /// Syncs one project and commits it with its step done (and, in per-project mode, its
    /// stream's token).
    async fn sync_project(&self, gid: &str, mode: reader::ProjectMode) -> Result<(), SyncError> {
        let needs_token = matches!(
            &self.writer.lock().await.state.streams,
            Streams::Projects { tokens } if !tokens.contains_key(gid)
        );
        let mut token = None;
        if needs_token {
            self.count_request();
            match self.client.events(gid, None, &[]).await {
                Err(AsanaError::SyncExpired { sync, .. }) => token = Some(sync),
                Ok(page) => token = Some(page.sync),
                Err(error) if gap_status(&error).is_some() => {}
                Err(error) => return Err(error.into()),
            }
        }
        let changes = self.project_changes(gid, mode).await?;
        let step = format!("project:{gid}");
        let gid = gid.to_string();
        self.commit(changes, move |state| {
            if let Some(pass) = state.pass.as_mut() {
                pass.done.insert(step);
            }
            if let (Streams::Projects { tokens }, Some(token)) = (&mut state.streams, token) {
                tokens.insert(gid, token);
            }
        })
        .await?;
        self.figure(|f| f.projects += 1);
        self.report_progress().await;
        Ok(())
    }

    /// Reads the event stream(s) and applies what they name, page by page, each page committed
    /// with its next token.
    async fn read_events(&self) -> Result<(), SyncError> {
        let streams = self.writer.lock().await.state.streams.clone();
        match streams {
            Streams::None => Ok(()),
            Streams::Workspace { sync } => {
                let mut sync = sync;
                loop {
                    self.check_cancel()?;
                    self.count_request();
                    match self
                        .client
                        .workspace_events(&self.workspace, Some(&sync))
                        .await
                    {
                        Ok(page) => {
                            let more = page.has_more;
                            let next = page.sync.clone();
                            let changes = self.apply_events(&page.data).await?;
                            let token = next.clone();
                            self.commit(changes, move |state| {
                                state.streams = Streams::Workspace { sync: token };
                            })
                            .await?;
                            sync = next;
                            if !more {
                                return Ok(());
                            }
                        }
                        Err(AsanaError::SyncExpired { sync, .. }) => {
                            tracing::warn!(job = %self.stream(), "The workspace event stream's token expired (412); re-reading everything the stream covers");
                            // The fresh token is kept with the new pass, taken before it reads.
                            let pass = Pass {
                                kind: PassKind::Full,
                                started_at: self.now(),
                                since: None,
                                done: BTreeSet::new(),
                            };
                            return self
                                .commit(Vec::new(), move |state| {
                                    state.streams = Streams::Workspace { sync };
                                    state.pass = Some(pass);
                                })
                                .await;
                        }
                        Err(error) if gap_status(&error).is_some() => {
                            tracing::warn!(job = %self.stream(), %error, "The workspace event stream is now refused; switching to each project's stream");
                            return self
                                .commit(Vec::new(), |state| {
                                    state.streams = Streams::Projects {
                                        tokens: BTreeMap::new(),
                                    };
                                    state.last_sweep_at = None;
                                })
                                .await;
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
            }
            Streams::Projects { tokens } => {
                futures::stream::iter(tokens)
                    .map(|(project, sync)| async move {
                        self.read_project_events(&project, sync).await
                    })
                    .buffer_unordered(self.settings.concurrency.clamp(1, 8))
                    .try_collect::<Vec<()>>()
                    .await?;
                Ok(())
            }
        }
    }

    async fn read_project_events(&self, project: &str, mut sync: String) -> Result<(), SyncError> {
        loop {
            self.check_cancel()?;
            self.count_request();
            match self.client.events(project, Some(&sync), &[]).await {
                Ok(page) => {
                    let more = page.has_more;
                    let changes = self.apply_events(&page.data).await?;
                    let (gid, token) = (project.to_string(), page.sync.clone());
                    self.commit(changes, move |state| {
                        if let Streams::Projects { tokens } = &mut state.streams {
                            tokens.insert(gid, token);
                        }
                    })
                    .await?;
                    sync = page.sync;
                    if !more {
                        return Ok(());
                    }
                }
                Err(AsanaError::SyncExpired { sync, .. }) => {
                    tracing::warn!(job = %self.stream(), project, "A project's event token expired (412); re-reading that project");
                    let changes = self
                        .project_changes(project, reader::ProjectMode::Full)
                        .await?;
                    let gid = project.to_string();
                    self.figure(|f| f.projects_resynced += 1);
                    return self
                        .commit(changes, move |state| {
                            if let Streams::Projects { tokens } = &mut state.streams {
                                tokens.insert(gid, sync);
                            }
                        })
                        .await;
                }
                Err(error) if gap_status(&error).is_some() => {
                    let gap = Gap {
                        resource: "events",
                        scope: project.to_string(),
                        status: gap_status(&error).unwrap_or(403),
                        reason: error.to_string(),
                    };
                    let changes = vec![self.gap_change(&gap)];
                    let gid = project.to_string();
                    return self
                        .commit(changes, move |state| {
                            if let Streams::Projects { tokens } = &mut state.streams {
                                tokens.remove(&gid);
                            }
                        })
                        .await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The row recording a gap (and a log line and a figure).
    fn gap_change(&self, gap: &Gap) -> Change {
        tracing::warn!(
            job = %self.stream(),
            resource = gap.resource,
            scope = %gap.scope,
            status = gap.status,
            reason = %gap.reason,
            "A resource could not be read; recorded in sync_status"
        );
        metrics::counter!(
            "asana_worker_sync_gaps_total",
            "job" => self.stream().to_string(),
            "resource" => gap.resource,
            "reason" => gap.state(),
        )
        .increment(1);
        self.figure(|f| {
            f.gaps.insert(
                format!("{}:{}", gap.resource, gap.scope),
                format!("{} {}", gap.status, gap.reason),
            );
        });
        let object = json!({
            "resource": gap.resource,
            "scope_gid": gap.scope,
            "state": gap.state(),
            "http_status": gap.status,
            "reason": gap.reason,
        });
        Change::Upsert {
            table: tables::STATUS_TABLE.into(),
            row: tables::spec(tables::STATUS_TABLE).row(&object, self.now()),
        }
    }

    /// The change clearing a gap that is readable again.
    fn gap_cleared(resource: &str, scope: &str) -> Change {
        Change::Delete {
            table: tables::STATUS_TABLE.into(),
            filter: Row::from([
                ("resource".to_string(), Cell::Text(resource.into())),
                ("scope_gid".to_string(), Cell::Text(scope.into())),
            ]),
        }
    }
}

fn chrono_duration(duration: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}
