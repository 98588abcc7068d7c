//! Exports and export jobs as the simulator keeps them: what each export contains, its progress
//! on simulated time, its written file, and the registry of all of them with the knobs tests turn
//! (failures, padding, expired download URLs).
//!
//! Part of the model layer: imports [`crate::sim::wire`] (for [`FieldTree`]) only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::sim::wire::FieldTree;

/// Which endpoint created an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// `POST /organization_exports`.
    Organization,
    /// `POST /exports/graph` (a job).
    Graph,
    /// `POST /exports/resource` (a job).
    Resource,
}

impl ExportKind {
    /// The name the admin API shows for it.
    pub fn name(self) -> &'static str {
        match self {
            ExportKind::Organization => "organization_export",
            ExportKind::Graph => "graph_export",
            ExportKind::Resource => "resource_export",
        }
    }
}

/// What an export contains, fixed when it is requested.
#[derive(Debug, Clone)]
pub enum ExportContent {
    /// The whole organization.
    Organization,
    /// A project or team and everything below it.
    Graph {
        /// Parent gid.
        parent: String,
    },
    /// Objects selected by `export_request_parameters`.
    Resource {
        /// The validated parameter sets.
        parameters: Vec<ResourceParameter>,
    },
}

/// One validated entry of `export_request_parameters`.
#[derive(Debug, Clone)]
pub struct ResourceParameter {
    /// `task`, `team` or `message`.
    pub resource_type: String,
    /// Filters by key (values as sent).
    pub filters: Map<String, Value>,
    /// Requested fields (`None` = the default set).
    pub fields: Option<FieldTree>,
}

/// The written file of a finished export.
#[derive(Debug, Clone)]
pub struct ExportFile {
    /// Where it is on disk (inside the registry's temporary directory).
    pub path: PathBuf,
    /// Hex sha256 of the file's bytes (what a download must hash to).
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// An export or export job.
#[derive(Debug, Clone)]
pub struct Export {
    /// Gid of the organization export, or of the job.
    pub gid: String,
    /// Gid of the `graph_export` / `export_request` object a job produces (same as `gid` for
    /// organization exports).
    pub result_gid: String,
    /// Which endpoint created it.
    pub kind: ExportKind,
    /// The user who requested it (the job cap and job visibility are per user).
    pub user_gid: String,
    /// The workspace it exports from.
    pub workspace: String,
    /// What to export.
    pub content: ExportContent,
    /// Requested at.
    pub created_at: DateTime<Utc>,
    /// When it starts running (`created_at + export_pending_secs`).
    pub started_at: DateTime<Utc>,
    /// When the file gets written (`started_at + export_running_secs`); it is in progress until
    /// the file exists.
    pub due_at: DateTime<Utc>,
    /// Whether it will end in `error` / `failed` (from `/_sim/exports/fail_next`).
    pub fail: bool,
    /// Target compressed size (0 = no padding).
    pub padding_bytes: u64,
    /// `None` while in progress; the file, or why it failed, once done.
    pub outcome: Option<Result<ExportFile, String>>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// Whether its file is being written (so the runner starts one writer only).
    pub building: bool,
}

/// Progress of an export at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not yet started.
    Pending,
    /// Running (the file is not written yet).
    Running,
    /// Done; the file can be downloaded.
    Finished,
    /// Failed.
    Failed,
}

impl Export {
    /// Its phase at `now`.
    pub fn phase(&self, now: DateTime<Utc>) -> Phase {
        match &self.outcome {
            Some(Ok(_)) => Phase::Finished,
            Some(Err(_)) => Phase::Failed,
            None if now < self.started_at => Phase::Pending,
            None => Phase::Running,
        }
    }

    /// Whether it counts against the job cap.
    pub fn in_progress(&self) -> bool {
        self.outcome.is_none()
    }

    /// The written file, once it finished.
    pub fn file(&self) -> Option<&ExportFile> {
        match &self.outcome {
            Some(Ok(file)) => Some(file),
            _ => None,
        }
    }
}

/// Exports and jobs created so far, and the knobs tests set.
#[derive(Debug, Default)]
pub struct ExportRegistry {
    /// By gid (organization export gid or job gid).
    pub exports: BTreeMap<String, Export>,
    /// Generation of download URLs: URLs minted in an earlier generation have expired
    /// (`/_sim/downloads/expire` starts a new one).
    pub url_generation: u64,
    /// How many of the next minted download URLs are born expired.
    pub expired_urls_next: u32,
    /// Cancelled by `/_sim/downloads/expire` with `abort_in_flight`: cuts the bodies of the
    /// downloads being served at that moment.
    in_flight: CancellationToken,
    /// What the download route has served, for tests.
    pub download_stats: DownloadStats,
    /// How many of the next exports should fail.
    pub fail_next: u32,
    /// Padding target for later exports, in compressed bytes.
    pub padding_bytes: u64,
    /// Where files are written; created on first use, removed with the registry.
    dir: Option<TempDir>,
}

/// Counts of the download route's answers.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DownloadStats {
    /// Downloads started (200 or 206).
    pub served: u64,
    /// Of those, requests with a `Range` header.
    pub ranged: u64,
    /// Requests refused because the URL had expired.
    pub expired: u64,
    /// Bodies cut by `/_sim/downloads/expire` with `abort_in_flight`.
    pub aborted: u64,
}

impl ExportRegistry {
    /// Exports of `user_gid` still in progress.
    pub fn in_progress_for(&self, user_gid: &str) -> Vec<&Export> {
        self.exports
            .values()
            .filter(|e| e.user_gid == user_gid && e.in_progress())
            .collect()
    }

    /// The directory export files are written to, created on first use.
    pub fn dir(&mut self) -> std::io::Result<PathBuf> {
        if self.dir.is_none() {
            self.dir = Some(
                tempfile::Builder::new()
                    .prefix("asana-sim-exports-")
                    .tempdir()?,
            );
        }
        Ok(self
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default())
    }

    /// Cancelled when the downloads being served must be cut (see [`Self::cut_in_flight`]).
    pub fn in_flight(&self) -> CancellationToken {
        self.in_flight.clone()
    }

    /// Cuts the bodies of the downloads being served now; later downloads are not affected.
    pub fn cut_in_flight(&mut self) {
        self.in_flight.cancel();
        self.in_flight = CancellationToken::new();
    }
}
