//! Exports and export jobs as the simulator keeps them: what each export contains and its
//! progress on simulated time (here), the [`registry`] of all of them with the knobs tests turn,
//! the resource-export [`parameters`] a request may carry, and the [`file`] a finished export is
//! written to.
//!
//! Part of the model layer. This file imports `wire` (for [`FieldTree`]) only; the submodules
//! import it and the world, never each other's callers (`state`, `routes`, `admin`, `background`).

pub mod file;
pub mod parameters;
pub mod registry;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::sim::wire::FieldTree;

/// Resource export files may be downloaded for this long after completion (Asana: 30 days).
const RESOURCE_FILE_TTL_DAYS: i64 = 30;

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

impl Phase {
    /// The `status` of a job in this phase (graph and resource exports).
    pub fn job_status(self) -> &'static str {
        match self {
            Phase::Pending => "not_started",
            Phase::Running => "in_progress",
            Phase::Finished => "succeeded",
            Phase::Failed => "failed",
        }
    }

    /// The `state` of an organization export in this phase.
    pub fn organization_export_state(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Running => "started",
            Phase::Finished => "finished",
            Phase::Failed => "error",
        }
    }
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

    /// Whether its file may no longer be downloaded at `now`: resource export files go 30 days
    /// after completion, the others stay.
    pub fn file_gone(&self, now: DateTime<Utc>) -> bool {
        self.kind == ExportKind::Resource
            && self
                .completed_at
                .is_some_and(|t| now > t + chrono::Duration::days(RESOURCE_FILE_TTL_DAYS))
    }

    /// The name of its file, as Asana names export files.
    pub fn file_name(&self) -> String {
        match self.kind {
            ExportKind::Organization => {
                format!("domain_export_{}_{}.json.gz", self.workspace, self.gid)
            }
            ExportKind::Graph => format!("graph_export_{}.json.gz", self.result_gid),
            ExportKind::Resource => format!("object_export_{}.jsonl.gz", self.result_gid),
        }
    }
}
