//! Sinks: where jobs put what they fetch, in three families, each a trait with its own
//! exactly-once story (ARCHITECTURE.md, "Sinks"):
//!
//! - [`record`]: record streams, appended batch by batch with the job's cursor (the audit log):
//!   `file`, `http`, `s3`.
//! - [`table`]: keyed rows upserted and deleted in SQL tables, committed in one transaction with
//!   the job's checkpoint (sync): SQLite and PostgreSQL.
//! - [`document`]: whole named documents, each delivered once (exports, digests): `file`, `s3`,
//!   `http`.
//!
//! Settings are tables in a job file (`[settings.sink]`, `[settings.deliver]`) chosen by
//! `type`; each family's settings enum derives the JSON schema the job-file checker walks, and
//! each sink's settings check what a schema cannot (directories, secrets, URLs) at load.

pub mod document;
pub mod file;
pub mod http;
pub mod http_post;
pub mod manifest;
pub mod record;
pub mod s3;
pub mod table;

use std::path::PathBuf;

pub use record::{Batch, RecordMark, RecordSink, RecordSinkSettings, Recovered};

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
    /// A document name the sink already holds with other content: delivered documents are
    /// never replaced.
    #[error("the {sink} sink refused the document: {message}")]
    Conflict {
        /// Sink type.
        sink: &'static str,
        /// Which document, and what to do.
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
