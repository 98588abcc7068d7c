//! Record streams: the sink family of the audit log. A job hands a sink ordered [`Batch`]es of
//! records; the sink appends them to the job's stream (`file`: JSON Lines segments, `http`:
//! POSTs to a collector, `s3`: one object per batch), each with a manifest entry chained to the
//! previous one.
//!
//! Exactly once (file, s3): [`RecordSink::commit`] returns only once the sink holds the batch
//! durably, and it stores the job's cursor *with* the batch. The job's own checkpoint advances
//! after the commit, so a crash between the two is repaired at the next run by
//! [`RecordSink::recover`], which returns the cursor stored with the last batch the sink holds;
//! the job resumes from whichever of the two is further. A commit of a sequence the sink already
//! holds stores nothing new. The http sink cannot read back what a collector holds: it is
//! at-least-once, with a stable idempotency key per chunk (see ARCHITECTURE.md, "Sinks").

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{SinkContext, SinkError, file, http, s3};
use crate::config::jobs::SettingsCheck;

/// A record sink's settings, chosen by `type` in a `[settings.sink]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(extend("x-noun" = "sink"))]
pub enum RecordSinkSettings {
    /// JSON Lines files in a directory, with a manifest chain.
    File(file::FileSinkSettings),
    /// Batched POSTs to a collector (NDJSON, JSON array or Splunk HEC).
    Http(http::HttpSinkSettings),
    /// Objects in S3-compatible storage.
    S3(s3::S3SinkSettings),
}

impl RecordSinkSettings {
    /// The sink's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            RecordSinkSettings::File(_) => "file",
            RecordSinkSettings::Http(_) => "http",
            RecordSinkSettings::S3(_) => "s3",
        }
    }

    /// Names where the stream goes (`file:DIR`, `http:URL`, `s3://BUCKET/PREFIX`), with no
    /// secret in it. The job's checkpoint records it, so a job pointed at another sink is
    /// refused instead of starting a second, partial copy of its stream.
    pub fn identity(&self) -> String {
        match self {
            RecordSinkSettings::File(settings) => format!("file:{}", settings.dir.display()),
            RecordSinkSettings::Http(settings) => format!(
                "http:{}",
                settings
                    .endpoint
                    .url
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default()
            ),
            RecordSinkSettings::S3(settings) => {
                let location = &settings.location;
                let prefix = location.prefix.trim_matches('/');
                match &location.endpoint {
                    Some(endpoint) => format!("s3://{}/{prefix} at {endpoint}", location.bucket),
                    None => format!("s3://{}/{prefix}", location.bucket),
                }
            }
        }
    }

    /// Whether the sink reads back what it holds (file, s3), so that a sink holding fewer
    /// batches than the checkpoint counts is known to be behind. The http sink knows only what
    /// this daemon's state directory recorded of its POSTs, which another replica does not see.
    pub fn reads_back(&self) -> bool {
        !matches!(self, RecordSinkSettings::Http(_))
    }

    /// Checks what the schema cannot (directories, secrets, URLs), reporting at the sink's
    /// keys; call inside `check.scoped("sink", …)`.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        match self {
            RecordSinkSettings::File(settings) => settings.validate(check),
            RecordSinkSettings::Http(settings) => settings.validate(check),
            RecordSinkSettings::S3(settings) => settings.validate(check),
        }
    }
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
    /// The job's cursor after this batch, stored with it and returned by
    /// [`RecordSink::recover`].
    pub cursor: serde_json::Value,
    /// The job clock's time of the commit, for time-based rotation and file names.
    pub now: DateTime<Utc>,
}

/// What [`RecordSink::recover`] found: the last batch the sink durably holds for a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// The batch's sequence.
    pub sequence: u64,
    /// The cursor committed with it.
    pub cursor: serde_json::Value,
}

/// A durable, append-only destination for a job's records.
#[async_trait]
pub trait RecordSink: Send + Sync + std::fmt::Debug {
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

/// Builds the record sink a job's settings describe.
pub async fn build(
    settings: &RecordSinkSettings,
    context: &SinkContext,
) -> Result<Arc<dyn RecordSink>, SinkError> {
    match settings {
        RecordSinkSettings::File(file) => Ok(Arc::new(file::FileSink::new(file.clone())?)),
        RecordSinkSettings::Http(settings) => Ok(Arc::new(http::HttpSink::new(settings, context)?)),
        RecordSinkSettings::S3(settings) => Ok(Arc::new(s3::S3Sink::new(settings)?)),
    }
}
