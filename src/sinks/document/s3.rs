//! The `s3` document sink: each document becomes the object `<prefix>/<stream>/<name>`, with
//! `<name>.sha256` (written after the object: its presence means a complete delivery) and the
//! metadata `<name>.manifest.json` (with its own `.sha256`) beside it. Files are streamed in
//! parts, never held in memory.

use async_trait::async_trait;
use object_store::{ObjectStoreExt, PutPayload};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{CHECKSUM_SUFFIX, Content, Delivered, Document, DocumentSink, METADATA_SUFFIX};
use crate::config::jobs::SettingsCheck;
use crate::sinks::SinkError;
use crate::sinks::s3::{S3Credentials, S3Location, S3Sink, S3SinkSettings};

/// Settings of the `s3` document sink: where the bucket is and how to sign in.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3DocumentSettings {
    /// The bucket and how to sign in.
    #[serde(flatten)]
    pub location: S3Location,
}

impl S3DocumentSettings {
    /// Endpoint and credentials are checked at load.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        self.location.validate(check);
    }
}

/// The `s3` document sink.
#[derive(Debug)]
pub struct S3DocumentSink {
    bucket: S3Sink,
}

impl S3DocumentSink {
    /// Reads the credentials and prepares the client; nothing is sent yet.
    pub fn new(settings: &S3DocumentSettings) -> Result<Self, SinkError> {
        Ok(Self {
            bucket: S3Sink::new(&S3SinkSettings::for_documents(&settings.location))?,
        })
    }

    /// Like [`S3DocumentSink::new`] with credentials the caller already holds.
    pub fn with_credentials(
        settings: &S3DocumentSettings,
        credentials: S3Credentials,
    ) -> Result<Self, SinkError> {
        Ok(Self {
            bucket: S3Sink::with_credentials(
                &S3SinkSettings::for_documents(&settings.location),
                credentials,
            )?,
        })
    }

    async fn read_checksum(&self, key: &str) -> Result<Option<String>, SinkError> {
        let path = self.bucket.path(&format!("{key}{CHECKSUM_SUFFIX}"));
        match self.bucket.store().get(&path).await {
            Ok(result) => {
                let bytes = result.bytes().await.map_err(|e| transient(&path, e))?;
                Ok(String::from_utf8_lossy(&bytes)
                    .split_whitespace()
                    .next()
                    .map(str::to_string))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(transient(&path, error)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), SinkError> {
        let path = self.bucket.path(key);
        self.bucket
            .store()
            .put(&path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|e| transient(&path, e))
    }

    async fn write_metadata(&self, key: &str, document: &Document<'_>) -> Result<(), SinkError> {
        let Some(metadata) = document.metadata else {
            return Ok(());
        };
        let text = serde_json::to_vec_pretty(metadata).unwrap_or_default();
        let (sha256, _) = super::sha256_of(Content::Bytes(&text)).unwrap_or_default();
        let name = format!("{}{METADATA_SUFFIX}", document.name);
        let metadata_key = format!("{key}{METADATA_SUFFIX}");
        self.put(&metadata_key, text).await?;
        self.put(
            &format!("{metadata_key}{CHECKSUM_SUFFIX}"),
            format!("{sha256}  {name}\n").into_bytes(),
        )
        .await
    }
}

fn transient(path: &object_store::path::Path, error: object_store::Error) -> SinkError {
    SinkError::Transient {
        sink: "s3",
        message: format!("s3 object {path}: {error}"),
    }
}

#[async_trait]
impl DocumentSink for S3DocumentSink {
    async fn deliver(&self, document: &Document<'_>) -> Result<Delivered, SinkError> {
        super::check_name("s3", document)?;
        let key = format!("{}/{}", document.stream, document.name);
        let location = self.bucket.path(&key).to_string();
        if let Some(held) = self.read_checksum(&key).await? {
            if held != document.sha256 {
                return Err(SinkError::Conflict {
                    sink: "s3",
                    message: format!(
                        "object {location} already holds a document with sha256 {held}, not {}; a delivered document is never replaced",
                        document.sha256
                    ),
                });
            }
            self.write_metadata(&key, document).await?;
            let size = self
                .bucket
                .store()
                .head(&self.bucket.path(&key))
                .await
                .map(|meta| meta.size)
                .unwrap_or_default();
            return Ok(Delivered {
                location,
                size,
                already: true,
            });
        }
        let (sha256, size) = match document.content {
            Content::File(path) => {
                let uploaded = self.bucket.upload_file(path, &key).await?;
                (uploaded.sha256, uploaded.size)
            }
            Content::Bytes(bytes) => {
                let (sha256, size) = super::sha256_of(Content::Bytes(bytes)).unwrap_or_default();
                if sha256 != document.sha256 {
                    return Err(SinkError::Corrupt {
                        sink: "s3",
                        message: format!(
                            "document {} hashes to {sha256}, not {} as recorded; nothing was delivered",
                            document.name, document.sha256
                        ),
                    });
                }
                self.put(&key, bytes.to_vec()).await?;
                self.put(
                    &format!("{key}{CHECKSUM_SUFFIX}"),
                    format!("{sha256}  {}\n", document.name).into_bytes(),
                )
                .await?;
                (sha256, size)
            }
        };
        if sha256 != document.sha256 {
            return Err(SinkError::Corrupt {
                sink: "s3",
                message: format!(
                    "{} hashed to {sha256} as uploaded, not {} as recorded: the file changed on disk; delete the object and its .sha256, then deliver again",
                    location, document.sha256
                ),
            });
        }
        self.write_metadata(&key, document).await?;
        Ok(Delivered {
            location,
            size,
            already: false,
        })
    }
}
