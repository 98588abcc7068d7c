//! The `s3` sink: objects in S3-compatible storage through `object_store`, a manifest chain
//! beside them.
//!
//! Layout under `<prefix>/<stream>/`: every committed batch is one object
//! `data/<sequence:020>-<sha256 prefix>.jsonl` (`.jsonl.gz` with `gzip`), written with one atomic
//! PUT (multipart above [`MULTIPART_THRESHOLD`]), and one manifest entry
//! `manifest/<sequence:020>.json` (the shared chain format of [`super::manifest`]) recording the
//! object's sha256, count, first/last event and the job cursor, chained to the previous entry's
//! hash and created only if absent. The entry is written after its object, so an entry always
//! names a complete object; [`RecordSink::recover`] reads the newest entry. Keys are a function of
//! `(stream, sequence, content)`, so a retried commit rewrites the same key with the same bytes
//! and is stored once, and a stale run cannot overwrite a committed batch.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::manifest::{self, EntryBody, ManifestEntry};
use super::{Batch, RecordSink, Recovered, SinkError};
use crate::config::jobs::SettingsCheck;

/// Where an S3-compatible bucket is and how to sign in; shared by the s3 record sink and the
/// s3 document sink.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct S3Location {
    /// The bucket; it must exist
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Key prefix of every object (leading and trailing `/` ignored)
    #[serde(default)]
    pub prefix: String,
    /// The bucket's region
    #[serde(default = "default_region")]
    pub region: String,
    /// URL of an S3-compatible service (MinIO, Ceph) instead of AWS
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Allow a plain-http `endpoint` (test servers on loopback); an `http://` endpoint is
    /// refused without it
    #[serde(default)]
    pub allow_http: bool,
    /// Environment variable holding the access key id
    #[serde(default = "default_key_id_env")]
    pub access_key_id_env: String,
    /// Environment variable holding the secret access key. Both must be set where the job
    /// runs; `validate` names a missing one
    #[serde(default = "default_secret_env")]
    pub secret_access_key_env: String,
}

impl S3Location {
    /// The endpoint and the credentials' variables are checked at load.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        if let Some(endpoint) = &self.endpoint {
            match url::Url::parse(endpoint) {
                Ok(url) if url.scheme() == "http" && !self.allow_http => check.problem(
                    "endpoint",
                    format!("`endpoint` {endpoint:?} is plain http"),
                    "use https, or set allow_http = true for a test server on loopback",
                ),
                Ok(url) if url.scheme() != "http" && url.scheme() != "https" => check.problem(
                    "endpoint",
                    format!("`endpoint` {endpoint:?} is not an http(s) URL"),
                    "e.g. endpoint = \"https://minio.example.com:9000\"",
                ),
                Ok(_) => {}
                Err(error) => check.problem(
                    "endpoint",
                    format!("`endpoint` {endpoint:?} is not a URL: {error}"),
                    "e.g. endpoint = \"https://minio.example.com:9000\"",
                ),
            }
        }
        check.secret_env("access_key_id_env", &self.access_key_id_env);
        check.secret_env("secret_access_key_env", &self.secret_access_key_env);
    }
}

/// Settings of the S3 sink.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct S3SinkSettings {
    /// The bucket and how to sign in.
    #[serde(flatten)]
    pub location: S3Location,
    /// Compress each object with gzip (`.jsonl.gz`)
    #[serde(default)]
    pub gzip: bool,
    /// Create each manifest entry only if it is absent (`If-None-Match: *`, supported by AWS S3,
    /// MinIO, Cloudflare R2 and moto), so a stale run racing a newer one cannot write a second
    /// entry for the same batch. Turn off only for a store that refuses the header
    #[serde(default = "default_true")]
    pub conditional_put: bool,
}

impl S3SinkSettings {
    /// The location's checks.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        self.location.validate(check);
    }

    /// Settings for writing whole objects at `location` (documents: no gzip of their own,
    /// conditional creates).
    pub fn for_documents(location: &S3Location) -> S3SinkSettings {
        S3SinkSettings {
            location: location.clone(),
            gzip: false,
            conditional_put: true,
        }
    }
}

fn default_true() -> bool {
    true
}

pub(crate) fn default_region() -> String {
    "us-east-1".into()
}

pub(crate) fn default_key_id_env() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

pub(crate) fn default_secret_env() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;

/// Size of one part of a multipart upload (S3 needs at least 5 MiB for every part but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once: memory use of [`S3Sink::upload_file`] stays below
/// `(PART_CONCURRENCY + 1) * PART_SIZE` whatever the file's size.
const PART_CONCURRENCY: usize = 2;

/// The S3 sink.
pub struct S3Sink {
    /// The bucket, with the endpoint and credentials of the settings.
    store: Arc<AmazonS3>,
    /// Checked settings.
    settings: S3SinkSettings,
    /// `prefix` without leading or trailing slashes.
    prefix: String,
    /// Newest manifest entry per stream, as read or written by this process; the lock also
    /// keeps commits in order so entries chain.
    last: tokio::sync::Mutex<HashMap<String, Option<ManifestEntry>>>,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink")
            .field("bucket", &self.settings.location.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.settings.location.endpoint)
            .field("gzip", &self.settings.gzip)
            .finish()
    }
}

/// An access key pair for the bucket.
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: SecretString,
    /// The secret access key.
    pub secret_access_key: SecretString,
}

/// What [`S3Sink::upload_file`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    /// Key of the object (`<prefix>/<key>`).
    pub key: String,
    /// Bytes uploaded.
    pub size: u64,
    /// Hex sha256 of the bytes, also stored beside the object as `<key>.sha256`.
    pub sha256: String,
}

/// What [`S3Sink::verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Manifest entries whose chain link and object checked out.
    pub entries: u64,
    /// Records those objects hold.
    pub records: u64,
}

fn config_error(message: impl Into<String>) -> SinkError {
    SinkError::Config {
        sink: "s3",
        message: message.into(),
    }
}

fn corrupt(message: impl Into<String>) -> SinkError {
    SinkError::Corrupt {
        sink: "s3",
        message: message.into(),
    }
}

/// Sorts an object_store failure into what the job should do about it.
fn store_error(action: &str, key: &Path, error: object_store::Error) -> SinkError {
    let message = format!("{action} s3 object {key}: {error}");
    match error {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => SinkError::Rejected {
            sink: "s3",
            message: format!("{message}; check the credentials and the bucket policy"),
        },
        object_store::Error::InvalidPath { .. } | object_store::Error::NotSupported { .. } => {
            config_error(message)
        }
        _ => SinkError::Transient {
            sink: "s3",
            message,
        },
    }
}

fn read_env(var: &str, what: &str) -> Result<SecretString, SinkError> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(SecretString::from(value.trim().to_string())),
        _ => Err(config_error(format!(
            "the environment variable {var} (the {what}) is not set; export it, or name another \
             variable in the sink's settings"
        ))),
    }
}

impl S3Sink {
    /// Checks the settings and reads the credentials from the environment variables they name;
    /// nothing is sent yet.
    pub fn new(settings: &S3SinkSettings) -> Result<Self, SinkError> {
        let credentials = S3Credentials {
            access_key_id: read_env(&settings.location.access_key_id_env, "access key id")?,
            secret_access_key: read_env(
                &settings.location.secret_access_key_env,
                "secret access key",
            )?,
        };
        Self::with_credentials(settings, credentials)
    }

    /// Like [`S3Sink::new`] with credentials the caller already holds (read from elsewhere
    /// than the environment, e.g. by a test that starts its own server).
    pub fn with_credentials(
        settings: &S3SinkSettings,
        credentials: S3Credentials,
    ) -> Result<Self, SinkError> {
        if settings.location.bucket.trim().is_empty() {
            return Err(config_error("bucket must not be empty"));
        }
        let key_id = credentials.access_key_id;
        let secret = credentials.secret_access_key;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.location.bucket)
            .with_region(&settings.location.region)
            .with_access_key_id(key_id.expose_secret())
            .with_secret_access_key(secret.expose_secret())
            .with_allow_http(settings.location.allow_http);
        if let Some(endpoint) = &settings.location.endpoint {
            let url = url::Url::parse(endpoint)
                .map_err(|e| config_error(format!("endpoint {endpoint:?}: {e}")))?;
            if url.scheme() == "http" && !settings.location.allow_http {
                return Err(config_error(format!(
                    "endpoint {endpoint} is plain http; use https, or set allow_http = true for a \
                     test server on loopback"
                )));
            }
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder
            .build()
            .map_err(|e| config_error(format!("cannot set up the bucket client: {e}")))?;
        let prefix = settings.location.prefix.trim_matches('/').to_string();
        Ok(Self {
            store: Arc::new(store),
            settings: settings.clone(),
            prefix,
            last: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The underlying object store, for callers that read objects back (tests, audits).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    pub(crate) fn path(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    /// Name of a batch's object relative to `<prefix>/<stream>/`, as its manifest entry
    /// records it: the sequence and the first 16 hex digits of the content's sha256, so a
    /// retried commit of the same batch rewrites the same key with the same bytes, while a
    /// different content for the same sequence (a stale run racing a newer one) can never
    /// overwrite the object an entry already names.
    fn data_file(&self, sequence: u64, sha256: &str) -> String {
        let ext = if self.settings.gzip {
            "jsonl.gz"
        } else {
            "jsonl"
        };
        let short = sha256.get(..16).unwrap_or(sha256);
        format!("data/{sequence:020}-{short}.{ext}")
    }

    /// Key of the object holding batch `sequence` of `stream`, read from its manifest entry
    /// (None when the bucket holds no entry for it).
    pub async fn data_key(&self, stream: &str, sequence: u64) -> Result<Option<Path>, SinkError> {
        let key = self.manifest_key(stream, sequence);
        match self.store.head(&key).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("read", &key, e)),
        }
        let entry = self.read_entry(&key).await?;
        Ok(Some(self.path(&format!("{stream}/{}", entry.body.file))))
    }

    /// Key of the manifest entry of batch `sequence` of `stream`.
    pub fn manifest_key(&self, stream: &str, sequence: u64) -> Path {
        self.path(&format!("{stream}/manifest/{sequence:020}.json"))
    }

    fn manifest_dir(&self, stream: &str) -> Path {
        self.path(&format!("{stream}/manifest"))
    }

    /// Keys of every manifest entry of `stream`, oldest first.
    async fn manifest_keys(&self, stream: &str) -> Result<Vec<Path>, SinkError> {
        let dir = self.manifest_dir(stream);
        let mut keys: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| store_error("list", &dir, e))?;
        keys.retain(|key| key.as_ref().ends_with(".json"));
        keys.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        Ok(keys)
    }

    async fn read_entry(&self, key: &Path) -> Result<ManifestEntry, SinkError> {
        let bytes = self
            .store
            .get(key)
            .await
            .map_err(|e| store_error("read", key, e))?
            .bytes()
            .await
            .map_err(|e| store_error("read", key, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            corrupt(format!(
                "manifest entry {key} is not valid JSON ({e}); restore it from a backup or \
                 remove the stream's objects after it"
            ))
        })
    }

    /// The newest manifest entry of `stream` (cached after the first look).
    async fn newest(
        &self,
        cache: &mut HashMap<String, Option<ManifestEntry>>,
        stream: &str,
    ) -> Result<Option<ManifestEntry>, SinkError> {
        if let Some(entry) = cache.get(stream) {
            return Ok(entry.clone());
        }
        // The hint names a recent entry; only keys after it are listed (S3 `start-after`), so
        // a long stream is not listed whole at every run. Without a hint, list everything.
        let dir = self.manifest_dir(stream);
        let hint = self.latest_hint(stream).await?;
        let mut keys: Vec<Path> = match &hint {
            Some(after) => self.store.list_with_offset(Some(&dir), after),
            None => self.store.list(Some(&dir)),
        }
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| store_error("list", &dir, e))?;
        keys.retain(|key| key.as_ref().ends_with(".json"));
        keys.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        let newest = keys.pop().or(hint);
        let entry = match newest {
            Some(key) => Some(self.read_entry(&key).await?),
            None => None,
        };
        cache.insert(stream.to_string(), entry.clone());
        Ok(entry)
    }

    /// Key of the object naming the newest manifest entry of `stream` (a hint, written after
    /// each entry; an entry newer than the hint is found by listing after it).
    fn latest_key(&self, stream: &str) -> Path {
        self.path(&format!("{stream}/manifest/latest"))
    }

    /// The manifest entry key the hint names, if there is a hint and its entry exists.
    async fn latest_hint(&self, stream: &str) -> Result<Option<Path>, SinkError> {
        let key = self.latest_key(stream);
        let bytes = match self.store.get(&key).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| store_error("read", &key, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("read", &key, e)),
        };
        let named = String::from_utf8_lossy(&bytes).trim().to_string();
        let Ok(sequence) = named.parse::<u64>() else {
            tracing::warn!(key = %key, "Ignoring a malformed latest-entry hint; listing the manifest");
            return Ok(None);
        };
        let entry = self.manifest_key(stream, sequence);
        match self.store.head(&entry).await {
            Ok(_) => Ok(Some(entry)),
            Err(object_store::Error::NotFound { .. }) => {
                tracing::warn!(key = %key, "The latest-entry hint names a missing entry; listing the manifest");
                Ok(None)
            }
            Err(e) => Err(store_error("read", &entry, e)),
        }
    }

    /// Writes `bytes` to `key`: one PUT, or a multipart upload above the threshold; either way
    /// the object appears whole or not at all.
    async fn put_bytes(&self, key: &Path, bytes: Vec<u8>) -> Result<(), SinkError> {
        if bytes.len() <= MULTIPART_THRESHOLD {
            self.store
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(|e| store_error("write", key, e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| store_error("start uploading", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.put(bytes::Bytes::from(bytes));
        match writer.finish().await {
            Ok(_) => Ok(()),
            Err(e) => Err(store_error("upload", key, e)),
        }
    }

    /// Uploads a local file to `<prefix>/<key>` in parts, reading it in [`PART_SIZE`] pieces so
    /// memory stays bounded, and stores its sha256 beside it as `<prefix>/<key>.sha256` (the
    /// `sha256sum` format). The object appears only when every part is in (a failed upload is
    /// aborted). Used by the export jobs to deliver downloaded files.
    pub async fn upload_file(&self, local: &FsPath, key: &str) -> Result<UploadedFile, SinkError> {
        let key = key.trim_matches('/');
        if key.is_empty() {
            return Err(config_error("upload_file needs a non-empty key"));
        }
        let path = self.path(key);
        let io = |action, source| SinkError::Io {
            action,
            path: local.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| io("open", e))?;
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| store_error("start uploading", &path, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1024 * 1024];
        let result: Result<(), SinkError> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(|e| io("read", e))?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                writer
                    .wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(|e| store_error("upload", &path, e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(error) = result {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key = %path, error = %abort, "Could not abort a failed upload");
            }
            return Err(error);
        }
        writer
            .finish()
            .await
            .map_err(|e| store_error("finish uploading", &path, e))?;
        let sha256 = hex::encode(hasher.finalize());
        let name = key.rsplit('/').next().unwrap_or(key);
        let sidecar = self.path(&format!("{key}.sha256"));
        self.store
            .put(&sidecar, PutPayload::from(format!("{sha256}  {name}\n")))
            .await
            .map_err(|e| store_error("write", &sidecar, e))?;
        metrics::counter!("asana_worker_sink_s3_uploaded_bytes_total").increment(size);
        tracing::info!(key = %path, size, %sha256, "Uploaded file to the s3 sink");
        Ok(UploadedFile {
            key: path.to_string(),
            size,
            sha256,
        })
    }

    /// Checks every manifest entry of `stream` with the shared chain verification (each
    /// entry's hash, its link to the previous entry, indexes, sequence order) and every object
    /// against its entry (present, same sha256, same number of records). Returns every problem
    /// found as one [`SinkError::Corrupt`]; "line N" in a problem means the N-th entry object in
    /// key order.
    pub async fn verify(&self, stream: &str) -> Result<VerifyReport, SinkError> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, key) in self.manifest_keys(stream).await?.into_iter().enumerate() {
            let entry = self.read_entry(&key).await?;
            if key != self.manifest_key(stream, entry.body.last_sequence) {
                problems.push(format!(
                    "{key} holds the entry of batch {}; the entry was moved",
                    entry.body.last_sequence
                ));
            }
            entries.push((i + 1, entry));
        }
        problems.extend(
            manifest::verify_chain(&entries)
                .iter()
                .map(ToString::to_string),
        );
        for (_, entry) in &entries {
            let object = self.path(&format!("{stream}/{}", entry.body.file));
            let stored = match self.store.get(&object).await {
                Ok(got) => Some(
                    got.bytes()
                        .await
                        .map_err(|e| store_error("read", &object, e))?,
                ),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(store_error("read", &object, e)),
            };
            problems.extend(
                manifest::verify_segment(entry, stored.as_deref())
                    .iter()
                    .map(ToString::to_string),
            );
        }
        if !problems.is_empty() {
            return Err(corrupt(format!(
                "{}: {}",
                self.manifest_dir(stream),
                problems.join("; ")
            )));
        }
        Ok(VerifyReport {
            entries: entries.len() as u64,
            records: entries.iter().map(|(_, e)| e.body.count).sum(),
        })
    }
}

fn check_stream(stream: &str) -> Result<(), SinkError> {
    super::check_stream_segment("s3", stream)
}

/// The bytes of a batch's object: one record per line, gzipped if asked (deterministic: the
/// gzip header carries no time, so a retried commit writes the same bytes).
fn encode(records: &[Box<serde_json::value::RawValue>], gzip: bool) -> Vec<u8> {
    let mut text = Vec::with_capacity(records.iter().map(|r| r.get().len() + 1).sum());
    for record in records {
        text.extend_from_slice(record.get().as_bytes());
        text.push(b'\n');
    }
    if !gzip {
        return text;
    }
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(&text);
    encoder.finish().unwrap_or_default()
}

#[async_trait]
impl RecordSink for S3Sink {
    async fn commit(&self, batch: Batch) -> Result<(), SinkError> {
        check_stream(&batch.stream)?;
        let mut cache = self.last.lock().await;
        let newest = self.newest(&mut cache, &batch.stream).await?;
        if let Some(newest) = &newest
            && batch.sequence <= newest.body.last_sequence
        {
            tracing::debug!(
                stream = %batch.stream, sequence = batch.sequence,
                "Batch already in the bucket; not writing it again"
            );
            return Ok(());
        }
        let bytes = encode(&batch.records, self.settings.gzip);
        let sha256 = manifest::sha256_hex(&bytes);
        let file = self.data_file(batch.sequence, &sha256);
        let object = self.path(&format!("{}/{file}", batch.stream));
        let body = EntryBody {
            version: manifest::FORMAT_VERSION,
            stream: batch.stream.clone(),
            index: 0,
            file,
            count: batch.records.len() as u64,
            bytes: bytes.len() as u64,
            sha256,
            first: batch.first.clone(),
            last: batch.last.clone(),
            first_sequence: batch.sequence,
            last_sequence: batch.sequence,
            cursor: batch.cursor.clone(),
            sealed_at: batch
                .now
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            prev_hash: String::new(),
        };
        let entry = ManifestEntry::chain(body, newest.as_ref());
        self.put_bytes(&object, bytes).await?;
        let key = self.manifest_key(&batch.stream, batch.sequence);
        let json = serde_json::to_vec_pretty(&entry).map_err(|e| corrupt(e.to_string()))?;
        // Created only if absent: of two runs racing on one stream (a stale run whose lease
        // was taken over), exactly one entry per sequence wins.
        let create = PutOptions {
            mode: if self.settings.conditional_put {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(json), create)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                cache.remove(&batch.stream);
                let existing = self.read_entry(&key).await?;
                if existing.body.sha256 == entry.body.sha256
                    && existing.body.prev_hash == entry.body.prev_hash
                {
                    // Our own earlier attempt (its answer was lost): the batch is stored.
                    cache.insert(batch.stream.clone(), Some(existing));
                    return Ok(());
                }
                if existing.body.file != entry.body.file
                    && let Err(error) = self.store.delete(&object).await
                {
                    tracing::warn!(key = %object, %error, "Could not remove an object that lost a race");
                }
                return Err(SinkError::Transient {
                    sink: "s3",
                    message: format!(
                        "another run of job {:?} stored batch {} first (a run whose lease was \
                         taken over?); this run stops, and the next one resumes after that batch",
                        batch.stream, batch.sequence
                    ),
                });
            }
            Err(e) => return Err(store_error("write", &key, e)),
        }
        let latest = self.latest_key(&batch.stream);
        self.store
            .put(&latest, PutPayload::from(batch.sequence.to_string()))
            .await
            .map_err(|e| store_error("write", &latest, e))?;
        metrics::counter!("asana_worker_sink_s3_records_total", "job" => batch.stream.clone())
            .increment(batch.records.len() as u64);
        cache.insert(batch.stream.clone(), Some(entry));
        Ok(())
    }

    async fn recover(&self, stream: &str) -> Result<Option<Recovered>, SinkError> {
        check_stream(stream)?;
        let mut cache = self.last.lock().await;
        cache.remove(stream);
        Ok(self
            .newest(&mut cache, stream)
            .await?
            .map(|entry| Recovered {
                sequence: entry.body.last_sequence,
                cursor: entry.body.cursor,
            }))
    }

    /// Nothing to seal: every batch is its own object, uploaded when it is committed.
    async fn rotate_if_due(&self, _stream: &str, _now: DateTime<Utc>) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_objects_are_deterministic() {
        let records = vec![serde_json::value::RawValue::from_string("{\"a\":1}".into()).unwrap()];
        assert_eq!(encode(&records, true), encode(&records, true));
        assert_eq!(encode(&records, false), b"{\"a\":1}\n");
    }
}
