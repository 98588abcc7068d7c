//! Documents: the sink family of exports and digests. A job hands a sink one named blob (an
//! export file, a rendered digest) with its sha256 and metadata; the sink delivers it whole
//! (`file`: a directory, `s3`: an object, `http`: one POST).
//!
//! Delivered once: a document is named by its stream (the job) and its name, and a name never
//! changes content. Delivering a name the sink already holds with the same sha256 is a no-op
//! that reports the earlier delivery; with another sha256 it is refused
//! ([`SinkError::Conflict`]) and nothing is overwritten. The job records the delivery in its
//! checkpoint after the sink returns, so a crash in between delivers again and finds it done
//! (file, s3), or POSTs the same bytes under the same idempotency key (http).

pub mod file;
pub mod http;
pub mod s3;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{SinkContext, SinkError};
use crate::config::jobs::SettingsCheck;

/// Suffix of the metadata delivered beside a document (`<name>.manifest.json`).
pub const METADATA_SUFFIX: &str = ".manifest.json";
/// Suffix of the checksum file delivered beside a document (`<name>.sha256`, `sha256sum`
/// format).
pub const CHECKSUM_SUFFIX: &str = ".sha256";

/// A document sink's settings, chosen by `type` in a `[settings.deliver]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(extend("x-noun" = "sink"))]
pub enum DocumentSinkSettings {
    /// A copy in a directory (a shared volume, an NFS mount), with its checksum and metadata.
    File(file::FileDocumentSettings),
    /// An object in S3-compatible storage, with its checksum and metadata beside it.
    S3(s3::S3DocumentSettings),
    /// One POST of the document's bytes (a webhook, an upload endpoint).
    Http(http::HttpDocumentSettings),
}

impl DocumentSinkSettings {
    /// The sink's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            DocumentSinkSettings::File(_) => "file",
            DocumentSinkSettings::S3(_) => "s3",
            DocumentSinkSettings::Http(_) => "http",
        }
    }

    /// Checks what the schema cannot, reporting at the sink's keys; call inside
    /// `check.scoped(key, …)`.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        match self {
            DocumentSinkSettings::File(settings) => settings.validate(check),
            DocumentSinkSettings::S3(settings) => settings.validate(check),
            DocumentSinkSettings::Http(settings) => settings.validate(check),
        }
    }
}

/// Where a document's bytes are.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// A local file (export files can be many GiB; they are streamed, never held in memory).
    File(&'a Path),
    /// Bytes in memory (a rendered digest).
    Bytes(&'a [u8]),
}

/// One document to deliver.
#[derive(Debug, Clone, Copy)]
pub struct Document<'a> {
    /// The job it belongs to: documents of different jobs never collide.
    pub stream: &'a str,
    /// Its name, unique within the stream (an export's file name, a digest's period).
    pub name: &'a str,
    /// Its bytes.
    pub content: Content<'a>,
    /// Its media type (`application/gzip`, `text/markdown`).
    pub media_type: &'a str,
    /// Hex sha256 of its bytes, as the producer computed it; the sink checks what it delivered
    /// against it.
    pub sha256: &'a str,
    /// Metadata delivered beside it (an export's manifest), if any.
    pub metadata: Option<&'a serde_json::Value>,
}

/// What a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Where the document is now (a path, an object key, a URL).
    pub location: String,
    /// Bytes delivered.
    pub size: u64,
    /// Whether the sink already held it (an earlier attempt delivered it): nothing was sent.
    pub already: bool,
}

/// A destination that receives whole documents, each once.
#[async_trait]
pub trait DocumentSink: Send + Sync + std::fmt::Debug {
    /// Delivers `document`, or finds it already delivered. Refuses a name the sink holds with
    /// other content.
    async fn deliver(&self, document: &Document<'_>) -> Result<Delivered, SinkError>;
}

/// Builds the document sink a job's settings describe.
pub fn build(
    settings: &DocumentSinkSettings,
    context: &SinkContext,
) -> Result<Arc<dyn DocumentSink>, SinkError> {
    let _ = context;
    match settings {
        DocumentSinkSettings::File(settings) => Ok(Arc::new(file::FileDocumentSink::new(settings))),
        DocumentSinkSettings::S3(settings) => Ok(Arc::new(s3::S3DocumentSink::new(settings)?)),
        DocumentSinkSettings::Http(settings) => {
            Ok(Arc::new(http::HttpDocumentSink::new(settings)?))
        }
    }
}

/// The hex sha256 of a document's bytes, streaming a file.
pub fn sha256_of(content: Content<'_>) -> std::io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut hasher = Sha256::new();
    let size = match content {
        Content::Bytes(bytes) => {
            hasher.update(bytes);
            bytes.len() as u64
        }
        Content::File(path) => {
            let mut file = std::fs::File::open(path)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            size
        }
    };
    Ok((hex::encode(hasher.finalize()), size))
}

/// The `sha256sum` line of a document.
pub fn checksum_line(document: &Document<'_>) -> String {
    format!("{}  {}\n", document.sha256, document.name)
}

/// Refuses a document name that is not one plain path or key segment.
pub(crate) fn check_name(sink: &'static str, document: &Document<'_>) -> Result<(), SinkError> {
    super::check_stream_segment(sink, document.stream)?;
    let name = document.name;
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(SinkError::Config {
            sink,
            message: format!("the document name {name:?} cannot be a file or key name"),
        });
    }
    Ok(())
}
