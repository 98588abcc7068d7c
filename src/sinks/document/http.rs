//! The `http` document sink: one POST of the document's bytes (streamed from disk for a file)
//! with its media type, to a webhook or an upload endpoint, retried like the http record sink.
//!
//! A receiver cannot be read back, so a document is delivered at least once, and exactly once
//! to one that honours `Idempotency-Key`: the key names the stream, the document and its
//! sha256, so a retry after a crash sends the same bytes under the same key, and no key ever
//! stands for two bodies.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Content, Delivered, Document, DocumentSink};
use crate::config::jobs::SettingsCheck;
use crate::sinks::SinkError;
use crate::sinks::http_post::{HttpEndpoint, PostBody, Poster};

/// Settings of the `http` document sink.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct HttpDocumentSettings {
    /// Where the document is POSTed, the token (sent as `Authorization: Bearer <token>`) and
    /// the retries.
    #[serde(flatten)]
    pub endpoint: HttpEndpoint,
}

impl HttpDocumentSettings {
    /// The endpoint's checks.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        self.endpoint.validate(check);
    }
}

/// Header naming the document (`<stream>/<name>`).
pub const DOCUMENT_HEADER: &str = "X-Asana-Worker-Document";
/// Header carrying the document's sha256.
pub const SHA256_HEADER: &str = "X-Asana-Worker-Sha256";

/// The `http` document sink.
#[derive(Debug)]
pub struct HttpDocumentSink {
    poster: Poster,
}

impl HttpDocumentSink {
    /// Reads the token and prepares the client; nothing is sent yet.
    pub fn new(settings: &HttpDocumentSettings) -> Result<Self, SinkError> {
        let url = settings.endpoint.parsed_url("http")?;
        Ok(Self {
            poster: Poster::new(&settings.endpoint, url, "Bearer", "the receiver", "http")?,
        })
    }
}

/// The idempotency key of a document: its stream, name and the first 16 hex digits of its
/// sha256.
pub fn idempotency_key(document: &Document<'_>) -> String {
    let short = document.sha256.get(..16).unwrap_or(document.sha256);
    format!("{}-{}-{short}", document.stream, document.name)
}

#[async_trait]
impl DocumentSink for HttpDocumentSink {
    async fn deliver(&self, document: &Document<'_>) -> Result<Delivered, SinkError> {
        super::check_name("http", document)?;
        let (body, size) = match document.content {
            Content::Bytes(bytes) => {
                let (sha256, size) = super::sha256_of(Content::Bytes(bytes)).unwrap_or_default();
                if sha256 != document.sha256 {
                    return Err(SinkError::Corrupt {
                        sink: "http",
                        message: format!(
                            "document {} hashes to {sha256}, not {} as recorded; nothing was sent",
                            document.name, document.sha256
                        ),
                    });
                }
                (PostBody::Bytes(bytes::Bytes::copy_from_slice(bytes)), size)
            }
            Content::File(path) => {
                // Bytes that do not hash to the recorded sha256 are never sent.
                let owned = path.to_path_buf();
                let (sha256, size) =
                    tokio::task::spawn_blocking(move || super::sha256_of(Content::File(&owned)))
                        .await
                        .map_err(|error| SinkError::Transient {
                            sink: "http",
                            message: format!("hashing {} stopped: {error}", path.display()),
                        })?
                        .map_err(|source| SinkError::Io {
                            action: "read",
                            path: path.display().to_string(),
                            source,
                        })?;
                if sha256 != document.sha256 {
                    return Err(SinkError::Corrupt {
                        sink: "http",
                        message: format!(
                            "{} hashes to {sha256}, not {} as recorded: it changed on disk; nothing was sent",
                            path.display(),
                            document.sha256
                        ),
                    });
                }
                (PostBody::File(path.to_path_buf()), size)
            }
        };
        let headers = [
            (
                DOCUMENT_HEADER,
                format!("{}/{}", document.stream, document.name),
            ),
            (SHA256_HEADER, document.sha256.to_string()),
        ];
        self.poster
            .post(
                document.stream,
                body,
                document.media_type,
                &idempotency_key(document),
                &headers,
            )
            .await?;
        Ok(Delivered {
            location: self.poster.url().to_string(),
            size,
            already: false,
        })
    }
}
