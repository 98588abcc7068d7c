//! Sinks: where jobs put what they fetch (audit events, export files), shared by every job kind.
//!
//! A job hands a sink [`Batch`]es of records. [`Sink::commit`] returns only once the sink holds
//! the batch durably, and it stores the job's cursor *with* the batch: the job's own checkpoint
//! advances after the commit, so a crash between the two is repaired at the next run by
//! [`Sink::recover`], which returns the cursor stored with the last batch the sink holds. That is
//! what makes file and object-storage sinks exactly-once (DESIGN invariant 1); the HTTP sink cannot
//! read back what a collector holds and is at-least-once with an idempotency key per batch.
//!
//! Settings are a `[settings.sink]` table in a job file, chosen by `type`; each sink declares its
//! keys in [`settings_info`] so job files are checked key by key before they run.

pub mod file;
pub mod http;
pub mod manifest;
pub mod s3;

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::config::jobs::SettingInfo;

/// Names accepted in a sink table's `type = "…"`.
pub const SINK_TYPES: &[&str] = &["file", "http", "s3"];

/// The keys a sink type accepts (besides `type`), or None for an unknown type.
pub fn settings_info(sink_type: &str) -> Option<&'static [SettingInfo]> {
    match sink_type {
        "file" => Some(file::SETTINGS),
        "http" => Some(http::SETTINGS),
        "s3" => Some(s3::SETTINGS),
        _ => None,
    }
}

/// A sink's settings, read from a `[settings.sink]` table after [`settings_info`] checked it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkSettings {
    /// JSON Lines files in a directory, with a manifest chain.
    File(file::FileSinkSettings),
    /// Batched POSTs to a collector (NDJSON, JSON array or Splunk HEC).
    Http(http::HttpSinkSettings),
    /// Objects in S3-compatible storage.
    S3(s3::S3SinkSettings),
}

/// Where a record sits in its source's order: the manifest records the first and last of each
/// segment so an auditor can see which window a file covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct RecordMark {
    /// The record's gid.
    pub gid: String,
    /// When the source says it happened (RFC 3339, as Asana returned it).
    pub created_at: String,
}

/// Records committed together, with the cursor that follows them.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The stream the records belong to (the job's name): each stream has its own files,
    /// objects and manifest, so several jobs can share one sink location.
    pub stream: String,
    /// The batch's number within its stream, counted by the job from its checkpoint: committing
    /// the same sequence twice (a retry after a crash) stores it once.
    pub sequence: u64,
    /// The records, each one JSON value exactly as the source returned it, without a newline.
    pub records: Vec<Box<serde_json::value::RawValue>>,
    /// First record of the batch in source order.
    pub first: RecordMark,
    /// Last record of the batch in source order.
    pub last: RecordMark,
    /// The job's cursor after this batch, stored with it and returned by [`Sink::recover`].
    pub cursor: serde_json::Value,
    /// The job clock's time of the commit, for time-based rotation and file names.
    pub now: DateTime<Utc>,
}

/// What [`Sink::recover`] found: the last batch the sink durably holds for a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// The batch's sequence.
    pub sequence: u64,
    /// The cursor committed with it.
    pub cursor: serde_json::Value,
}

/// What a sink needs from the process to build itself.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The daemon's state directory, for sinks that keep local state (the HTTP sink's manifest).
    pub state_dir: PathBuf,
}

impl SinkContext {
    /// The state directory of a daemon: the directory of its SQLite database, or the working
    /// directory with PostgreSQL.
    pub fn from_settings(settings: &crate::config::settings::Settings) -> SinkContext {
        let url = &settings.database.url;
        let state_dir = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|path| path.split('?').next().unwrap_or(path))
            .and_then(|path| std::path::Path::new(path).parent().map(PathBuf::from))
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        SinkContext { state_dir }
    }
}

/// Errors of sinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A local file or directory could not be written or read.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The destination refused or failed; worth retrying later.
    #[error("the {sink} sink failed: {message}; the batch will be retried")]
    Transient {
        /// Sink type.
        sink: &'static str,
        /// What happened.
        message: String,
    },
    /// The destination refused for a reason retrying will not fix (bad credentials, no bucket).
    #[error("the {sink} sink refused the data: {message}")]
    Rejected {
        /// Sink type.
        sink: &'static str,
        /// What happened, and what to fix.
        message: String,
    },
    /// What the sink holds contradicts itself (a manifest entry whose file is gone or changed).
    #[error("the {sink} sink's data is inconsistent: {message}")]
    Corrupt {
        /// Sink type.
        sink: &'static str,
        /// What is wrong, and what to do.
        message: String,
    },
    /// The sink's settings cannot work (a missing secret, a malformed URL).
    #[error("the {sink} sink is misconfigured: {message}")]
    Config {
        /// Sink type.
        sink: &'static str,
        /// What to fix.
        message: String,
    },
}

/// Refuses a stream name that is not one plain path or key segment: a job name may be "." or
/// "..", which would leave the sink's directory or prefix. Shared by the http and s3 sinks (the
/// file sink has a stricter rule of its own, since its stream directories sit beside hidden files).
pub(crate) fn check_stream_segment(sink: &'static str, stream: &str) -> Result<(), SinkError> {
    if stream.is_empty() || stream == "." || stream == ".." || stream.contains(['/', '\\']) {
        return Err(SinkError::Config {
            sink,
            message: format!(
                "the stream name {stream:?} cannot be a path or key segment; rename the job"
            ),
        });
    }
    Ok(())
}

impl SinkError {
    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient { .. } | SinkError::Io { .. })
    }
}

/// A durable destination for a job's records.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Stores `batch` durably (fsynced, uploaded, acknowledged) before returning, together
    /// with its cursor. Idempotent per `(stream, sequence)`.
    async fn commit(&self, batch: Batch) -> Result<(), SinkError>;

    /// The last batch the sink durably holds for `stream`, or None if it holds nothing; a job
    /// calls this at the start of every run and resumes from whichever of this and its own
    /// checkpoint has the higher sequence.
    async fn recover(&self, stream: &str) -> Result<Option<Recovered>, SinkError>;

    /// Seals the open segment of `stream` if its rotation time has passed; called at the end of
    /// every run so a quiet stream still produces its hourly (or configured) file.
    async fn rotate_if_due(&self, stream: &str, now: DateTime<Utc>) -> Result<(), SinkError>;
}

/// Builds the sink a job's settings describe.
pub async fn build(
    settings: &SinkSettings,
    context: &SinkContext,
) -> Result<std::sync::Arc<dyn Sink>, SinkError> {
    match settings {
        SinkSettings::File(file) => Ok(std::sync::Arc::new(file::FileSink::new(file.clone())?)),
        SinkSettings::Http(settings) => {
            Ok(std::sync::Arc::new(http::HttpSink::new(settings, context)?))
        }
        SinkSettings::S3(settings) => Ok(std::sync::Arc::new(s3::S3Sink::new(settings)?)),
    }
}
