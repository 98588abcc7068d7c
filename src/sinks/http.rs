//! The `http` sink: batched POSTs to a log collector (NDJSON, JSON array or Splunk HEC).
//!
//! A collector cannot be read back, so what the sink promises rests on two things it controls:
//! a key always carries the same bytes, and the bytes of a batch are fixed before any of them
//! leaves. Each batch is encoded into its POSTs and stored durably (`pending.json` beside the
//! delivery manifest) before the first POST; after a crash between an acknowledged POST and the
//! manifest entry, the next run posts exactly those bodies under exactly those keys instead of
//! rebuilding the batch (a rebuilt batch can split differently: other pages after faults, an
//! expired offset or new events). A collector that honours `Idempotency-Key` therefore stores
//! every event once. The key also names the body's SHA-256, so even a batch rebuilt without its
//! stored copy (the state directory lost) can never reuse a key for another body: such a
//! collector then receives an event twice under two keys, never zero times.

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::http_post::{HttpEndpoint, PostBody, Poster};
use super::manifest::{self, EntryBody, ManifestEntry};
use super::{Batch, RecordSink, Recovered, SinkContext, SinkError};
use crate::config::jobs::SettingsCheck;

/// Body format of the POSTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    /// One event per line.
    #[default]
    Ndjson,
    /// One JSON array per batch.
    Json,
    /// Splunk HTTP Event Collector envelopes (`{"event": …, "time": …}` per line).
    SplunkHec,
}

/// Settings of the HTTP sink.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct HttpSinkSettings {
    /// Where the batches go, the token and the retries.
    #[serde(flatten)]
    pub endpoint: HttpEndpoint,
    /// `ndjson`: one event per line (`Content-Type: application/x-ndjson`). `json`: one JSON
    /// array per POST (`application/json`). `splunk_hec`: one `{"event": …, "time": …,
    /// "source": "<job>"}` envelope per line, `time` being the event's `created_at` in epoch
    /// seconds (milliseconds as the fraction); a URL without a path gets
    /// `/services/collector/event`, and the token, required, is sent as `Authorization: Splunk
    /// <token>` rather than `Bearer`
    #[serde(default)]
    pub format: HttpFormat,
    /// Most events in one POST; a job's batch is split into chunks of this size
    #[serde(default = "default_batch_events")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_events: u32,
}

impl HttpSinkSettings {
    /// The endpoint's checks, and the HEC token a `splunk_hec` sink needs.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        self.endpoint.validate(check);
        if self.format == HttpFormat::SplunkHec && !self.endpoint.has_token() {
            check.problem(
                "",
                "a splunk_hec sink needs the HEC token",
                "set token_file (a file holding the token) or token_env (a variable holding it)",
            );
        }
    }
}

fn default_batch_events() -> u32 {
    500
}

/// The path Splunk's HTTP Event Collector takes JSON events on; used when a `splunk_hec` URL
/// names only the host.
pub const SPLUNK_HEC_PATH: &str = "/services/collector/event";

/// Name of the file, beside a stream's delivery manifest, holding the batch being delivered.
pub const PENDING_FILE: &str = "pending.json";

/// The idempotency key of one POST: the batch and chunk it belongs to, and the first 16 hex
/// digits of its body's SHA-256, so a key can never stand for two different bodies.
fn idempotency_key(stream: &str, sequence: u64, chunk: usize, body: &str) -> String {
    let digest = manifest::sha256_hex(body.as_bytes());
    format!("{stream}-{sequence}-{chunk}-{}", &digest[..16])
}

/// A batch encoded for the collector, stored durably before its first POST and removed once
/// its manifest entry is written: what a run interrupted in between resends.
#[derive(Debug, serde::Serialize, Deserialize)]
struct PendingBatch {
    /// The manifest entry recording the batch, chained when every POST is acknowledged.
    entry: EntryBody,
    /// The POSTs, in chunk order.
    posts: Vec<PendingPost>,
}

/// One stored POST.
#[derive(Debug, serde::Serialize, Deserialize)]
struct PendingPost {
    /// Its `Idempotency-Key`.
    key: String,
    /// Its `Content-Type`.
    content_type: String,
    /// The body, exactly as posted.
    body: String,
    /// Events in the body, for the delivered-events counter.
    events: u64,
}

/// The HTTP sink: stores each batch encoded in chunks of `batch_events`, posts the chunks, then
/// records the delivery in a local manifest so [`RecordSink::recover`] knows the last acknowledged
/// batch.
///
/// At-least-once to any collector, exactly once to one that honours `Idempotency-Key`: a crash
/// after a POST was acknowledged but before the manifest entry was written resends the stored
/// bodies at the next run, byte for byte under the same keys
/// (`<stream>-<sequence>-<chunk>-<sha256 of the body, 16 hex digits>`).
pub struct HttpSink {
    /// The POSTs (Splunk's event path added to a bare `splunk_hec` host), token and retries.
    poster: Poster,
    /// Checked settings.
    settings: HttpSinkSettings,
    /// Directory of the per-stream delivery manifests.
    state_dir: PathBuf,
    /// Newest manifest entry per stream, as read or written by this process; the lock also
    /// keeps commits in order so entries chain.
    last: tokio::sync::Mutex<HashMap<String, Option<ManifestEntry>>>,
    /// Exclusive locks (`.lock` beside each manifest) on the streams this sink touched, held
    /// until it is dropped: a run whose lease was taken over and the run that took over must
    /// never append to one manifest at once, in one process or several.
    locks: std::sync::Mutex<HashMap<String, std::fs::File>>,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("poster", &self.poster)
            .field("format", &self.settings.format)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

fn config_error(message: impl Into<String>) -> SinkError {
    SinkError::Config {
        sink: "http",
        message: message.into(),
    }
}

impl HttpSink {
    /// Checks the settings, reads the token and prepares the client; nothing is sent yet.
    pub fn new(settings: &HttpSinkSettings, context: &SinkContext) -> Result<Self, SinkError> {
        let mut url = settings.endpoint.parsed_url("http")?;
        if settings.format == HttpFormat::SplunkHec && (url.path() == "/" || url.path().is_empty())
        {
            url.set_path(SPLUNK_HEC_PATH);
        }
        if settings.batch_events == 0 {
            return Err(config_error("batch_events must be at least 1"));
        }
        let scheme = match settings.format {
            HttpFormat::SplunkHec => "Splunk",
            _ => "Bearer",
        };
        let poster = Poster::new(&settings.endpoint, url, scheme, "the collector", "http")?;
        if settings.format == HttpFormat::SplunkHec && !poster.has_token() {
            return Err(config_error(
                "splunk_hec needs the HEC token: set token_file or token_env",
            ));
        }
        Ok(Self {
            poster,
            settings: settings.clone(),
            state_dir: context.state_dir.join("sinks").join("http"),
            last: tokio::sync::Mutex::new(HashMap::new()),
            locks: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The URL the POSTs go to.
    pub fn url(&self) -> &url::Url {
        self.poster.url()
    }

    /// The body of one POST and its content type. Bodies are JSON text, so always UTF-8.
    fn encode(
        &self,
        stream: &str,
        records: &[Box<RawValue>],
        now: DateTime<Utc>,
    ) -> (String, &'static str) {
        let mut body = String::with_capacity(records.iter().map(|r| r.get().len() + 1).sum());
        match self.settings.format {
            HttpFormat::Ndjson => {
                for record in records {
                    body.push_str(record.get());
                    body.push('\n');
                }
                (body, "application/x-ndjson")
            }
            HttpFormat::Json => {
                body.push('[');
                for (i, record) in records.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(record.get());
                }
                body.push(']');
                (body, "application/json")
            }
            HttpFormat::SplunkHec => {
                for record in records {
                    let envelope = HecEnvelope {
                        event: record,
                        time: event_time(record).unwrap_or(now).timestamp_millis() as f64 / 1000.0,
                        source: stream,
                    };
                    // Serializing borrowed JSON and a float cannot fail.
                    if let Ok(line) = serde_json::to_string(&envelope) {
                        body.push_str(&line);
                    }
                    body.push('\n');
                }
                (body, "application/json")
            }
        }
    }

    /// Encodes a batch into its POSTs and the manifest entry that records them once they are
    /// all acknowledged.
    fn encode_batch(&self, batch: Batch) -> PendingBatch {
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let chunk_len = self.settings.batch_events.max(1) as usize;
        let mut posts = Vec::new();
        for (chunk, records) in batch.records.chunks(chunk_len).enumerate() {
            let (body, content_type) = self.encode(&batch.stream, records, batch.now);
            hasher.update(body.as_bytes());
            bytes += body.len() as u64;
            posts.push(PendingPost {
                key: idempotency_key(&batch.stream, batch.sequence, chunk, &body),
                content_type: content_type.to_string(),
                body,
                events: records.len() as u64,
            });
        }
        let entry = EntryBody {
            version: manifest::FORMAT_VERSION,
            stream: batch.stream.clone(),
            index: 0,
            file: format!("{}-{}", batch.stream, batch.sequence),
            count: batch.records.len() as u64,
            bytes,
            sha256: hex::encode(hasher.finalize()),
            first: batch.first,
            last: batch.last,
            first_sequence: batch.sequence,
            last_sequence: batch.sequence,
            cursor: batch.cursor,
            sealed_at: batch
                .now
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            prev_hash: String::new(),
        };
        PendingBatch { entry, posts }
    }

    /// Posts a stored batch's bodies in order, then records it in the manifest and removes its
    /// file; returns the new newest entry.
    async fn deliver(
        &self,
        cache: &mut HashMap<String, Option<ManifestEntry>>,
        pending: PendingBatch,
        newest: Option<ManifestEntry>,
    ) -> Result<Option<ManifestEntry>, SinkError> {
        let PendingBatch { entry, posts } = pending;
        let stream = entry.stream.clone();
        for post in posts {
            self.poster
                .post(
                    &stream,
                    PostBody::Bytes(post.body.into()),
                    &post.content_type,
                    &post.key,
                    &[],
                )
                .await?;
            metrics::counter!("asana_worker_sink_http_events_total", "job" => stream.clone())
                .increment(post.events);
        }
        let entry = ManifestEntry::chain(entry, newest.as_ref());
        self.append(&entry)?;
        cache.insert(stream.clone(), Some(entry.clone()));
        self.remove_pending(&stream);
        Ok(Some(entry))
    }

    /// Finishes a batch whose POSTs a crash (or a failed run) interrupted: its stored bodies are
    /// posted again exactly as they were, under the same keys, and recorded; a batch a rebuild
    /// would split differently never reaches the collector. Returns the newest entry after it.
    async fn finish_pending(
        &self,
        cache: &mut HashMap<String, Option<ManifestEntry>>,
        stream: &str,
        newest: Option<ManifestEntry>,
    ) -> Result<Option<ManifestEntry>, SinkError> {
        let Some(pending) = self.read_pending(stream)? else {
            return Ok(newest);
        };
        let sequence = pending.entry.last_sequence;
        if newest
            .as_ref()
            .is_some_and(|n| sequence <= n.body.last_sequence)
        {
            // Recorded already: the crash came between the manifest entry and the removal.
            self.remove_pending(stream);
            return Ok(newest);
        }
        tracing::warn!(
            stream,
            sequence,
            "Resending a batch whose delivery was interrupted, byte for byte under the same keys"
        );
        let path = self.pending_path(stream);
        self.deliver(cache, pending, newest)
            .await
            .map_err(|error| match error {
                SinkError::Rejected { sink, message } => SinkError::Rejected {
                    sink,
                    message: format!(
                        "{message}; the batch is kept in {} to be resent byte for byte: fix the \
                         cause, or move that file away to have the batch rebuilt under new keys \
                         (the collector may then receive some of its events twice)",
                        path.display()
                    ),
                },
                other => other,
            })
    }
}

/// A Splunk HEC event envelope.
#[derive(serde::Serialize)]
struct HecEnvelope<'a> {
    event: &'a RawValue,
    /// Seconds since the epoch, milliseconds as the fraction.
    time: f64,
    /// The stream (job name), so searches can tell jobs apart.
    source: &'a str,
}

/// The record's `created_at`, when it has one.
fn event_time(record: &RawValue) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Stamp {
        created_at: Option<String>,
    }
    let stamp: Stamp = serde_json::from_str(record.get()).ok()?;
    DateTime::parse_from_rfc3339(&stamp.created_at?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[async_trait]
impl RecordSink for HttpSink {
    async fn commit(&self, batch: Batch) -> Result<(), SinkError> {
        let mut cache = self.last.lock().await;
        let newest = self.newest(&mut cache, &batch.stream)?;
        let newest = self
            .finish_pending(&mut cache, &batch.stream, newest)
            .await?;
        if let Some(newest) = &newest
            && batch.sequence <= newest.body.last_sequence
        {
            tracing::debug!(
                stream = %batch.stream, sequence = batch.sequence,
                "Batch already delivered; not posting it again"
            );
            return Ok(());
        }
        let pending = self.encode_batch(batch);
        // Durable before the first POST: from here on, these bytes are what the keys carry.
        self.write_pending(&pending)?;
        self.deliver(&mut cache, pending, newest).await?;
        Ok(())
    }

    /// Also finishes a batch whose delivery was interrupted (see [`HttpSink`]) before answering,
    /// so the cursor returned is always one the collector has acknowledged.
    async fn recover(&self, stream: &str) -> Result<Option<Recovered>, SinkError> {
        let mut cache = self.last.lock().await;
        cache.remove(stream);
        let newest = self.newest(&mut cache, stream)?;
        let newest = self.finish_pending(&mut cache, stream, newest).await?;
        Ok(newest.map(|entry| Recovered {
            sequence: entry.body.last_sequence,
            cursor: entry.body.cursor,
        }))
    }

    /// Nothing to seal: every batch is posted when it is committed.
    async fn rotate_if_due(&self, _stream: &str, _now: DateTime<Utc>) -> Result<(), SinkError> {
        Ok(())
    }
}

/// What [`HttpSink::verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Manifest entries (delivered batches) whose chain checked out.
    pub entries: u64,
    /// Records those batches held.
    pub records: u64,
}

/// The delivery manifest: the shared manifest chain, one entry per acknowledged batch, kept in
/// `<state_dir>/sinks/http/<stream>/manifest.jsonl`. An entry's `file` is the batch's
/// idempotency key prefix (`<stream>-<sequence>`), its `sha256` and `bytes` cover the bodies
/// posted, in chunk order.
impl HttpSink {
    /// Refuses a stream name that would leave the state directory.
    fn check_stream(stream: &str) -> Result<(), SinkError> {
        super::check_stream_segment("http", stream)
    }

    /// The local manifest of `stream`.
    pub fn manifest_path(&self, stream: &str) -> PathBuf {
        self.state_dir.join(stream).join(manifest::MANIFEST_FILE)
    }

    fn io_error(path: &std::path::Path, action: &'static str, source: std::io::Error) -> SinkError {
        SinkError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    /// The last complete line of the manifest of `stream` (None when it has none), read from
    /// the end of the file so a long manifest is not read whole at every run. A line torn by a
    /// crash during the last append (no trailing newline) is cut off: that batch was never
    /// recorded as delivered and will be posted again.
    fn last_line(&self, stream: &str) -> Result<Option<String>, SinkError> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.manifest_path(stream);
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io_error(&path, "open", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Self::io_error(&path, "read", e))?
            .len();
        // Read ever larger tails until one holds a line start (or the whole file).
        let mut window = 64 * 1024u64;
        let (start, tail) = loop {
            let start = len.saturating_sub(window);
            let mut tail = Vec::with_capacity((len - start) as usize);
            file.seek(SeekFrom::Start(start))
                .and_then(|_| (&mut file).take(len - start).read_to_end(&mut tail))
                .map_err(|e| Self::io_error(&path, "read", e))?;
            // The complete lines of the tail (a torn last line excluded), without the final
            // newline: one more newline in them marks where the last complete line starts.
            let complete = tail.iter().rposition(|b| *b == b'\n').unwrap_or(0);
            if start == 0 || tail[..complete].contains(&b'\n') {
                break (start, tail);
            }
            window *= 4;
        };
        let mut tail = tail;
        if !tail.is_empty() && !tail.ends_with(b"\n") {
            let keep = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            tracing::warn!(
                manifest = %path.display(),
                "Cutting off a manifest line torn by a crash; its batch will be posted again"
            );
            file.set_len(start + keep as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| Self::io_error(&path, "truncate", e))?;
            tail.truncate(keep);
        }
        let text = String::from_utf8_lossy(&tail);
        Ok(text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string))
    }

    /// The file holding the batch of `stream` being delivered.
    pub fn pending_path(&self, stream: &str) -> PathBuf {
        self.state_dir.join(stream).join(PENDING_FILE)
    }

    /// The batch of `stream` whose delivery was started and not recorded, if any.
    fn read_pending(&self, stream: &str) -> Result<Option<PendingBatch>, SinkError> {
        let path = self.pending_path(stream);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io_error(&path, "read", e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| SinkError::Corrupt {
                sink: "http",
                message: format!(
                    "{} is not a stored batch ({e}); restore it, or move it away to have the batch \
                 rebuilt under new keys (the collector may then receive some of its events twice)",
                    path.display()
                ),
            })
    }

    /// Stores a batch before its first POST: written to a temporary file, fsynced, renamed.
    fn write_pending(&self, pending: &PendingBatch) -> Result<(), SinkError> {
        let path = self.pending_path(&pending.entry.stream);
        // Serializing strings, numbers and a JSON value cannot fail.
        let bytes = serde_json::to_vec(pending).unwrap_or_default();
        super::file::write_atomic(&path, &bytes)
    }

    /// Removes the stored batch once its manifest entry is written. A failure only leaves a
    /// file the next run recognises as recorded and removes, so it is logged, not returned.
    fn remove_pending(&self, stream: &str) {
        let path = self.pending_path(stream);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "Could not remove a delivered batch's stored copy");
            }
        }
    }

    /// Takes the stream's lock file, once per sink; fails as transient while another run
    /// holds it.
    fn lock_stream(&self, stream: &str) -> Result<(), SinkError> {
        Self::check_stream(stream)?;
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.contains_key(stream) {
            return Ok(());
        }
        let dir = self.state_dir.join(stream);
        std::fs::create_dir_all(&dir).map_err(|e| Self::io_error(&dir, "create", e))?;
        let path = dir.join(".lock");
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        let file = options
            .open(&path)
            .map_err(|e| Self::io_error(&path, "open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SinkError::Transient {
                    sink: "http",
                    message: format!(
                        "the delivery manifest of job {stream:?} is being written by another run \
                         (its lock {} is held); this run will retry once that run has ended",
                        path.display()
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Self::io_error(&path, "lock", e)),
        }
        locks.insert(stream.to_string(), file);
        Ok(())
    }

    /// The newest manifest entry of `stream`, from the cache or the file.
    fn newest(
        &self,
        cache: &mut HashMap<String, Option<ManifestEntry>>,
        stream: &str,
    ) -> Result<Option<ManifestEntry>, SinkError> {
        self.lock_stream(stream)?;
        if let Some(entry) = cache.get(stream) {
            return Ok(entry.clone());
        }
        let entry = match self.last_line(stream)? {
            Some(line) => Some(serde_json::from_str::<ManifestEntry>(&line).map_err(|e| {
                SinkError::Corrupt {
                    sink: "http",
                    message: format!(
                        "the last line of {} is not a manifest entry ({e}); restore the file \
                         or move it away to start a new chain (batches may then be resent)",
                        self.manifest_path(stream).display()
                    ),
                }
            })?),
            None => None,
        };
        cache.insert(stream.to_string(), entry.clone());
        Ok(entry)
    }

    /// Appends the entry of a delivered batch and fsyncs it (and the directory on creation).
    fn append(&self, entry: &ManifestEntry) -> Result<(), SinkError> {
        use std::io::Write;
        let path = self.manifest_path(&entry.body.stream);
        let dir = path.parent().unwrap_or(&self.state_dir).to_path_buf();
        let created = !path.exists();
        std::fs::create_dir_all(&dir).map_err(|e| Self::io_error(&dir, "create", e))?;
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        let mut file = options
            .open(&path)
            .map_err(|e| Self::io_error(&path, "open", e))?;
        file.write_all(entry.to_line().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Self::io_error(&path, "write", e))?;
        if created {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Self::io_error(&dir, "sync", e))?;
        }
        Ok(())
    }

    /// Checks the delivery manifest of `stream` with the shared chain verification (hashes,
    /// links, indexes, sequence order). The collector cannot be read back, so the posted bytes
    /// themselves are not checked.
    pub fn verify(&self, stream: &str) -> Result<DeliveryReport, SinkError> {
        let path = self.manifest_path(stream);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Self::io_error(&path, "read", e)),
        };
        let (entries, mut problems) = manifest::parse_manifest(&text);
        problems.extend(manifest::verify_chain(&entries));
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(SinkError::Corrupt {
                sink: "http",
                message: format!("{}: {}", path.display(), list.join("; ")),
            });
        }
        Ok(DeliveryReport {
            entries: entries.len() as u64,
            records: entries.iter().map(|(_, e)| e.body.count).sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_manifest_line_is_read_from_the_end_and_a_torn_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let settings: HttpSinkSettings =
            toml::from_str("url = \"https://c.example.com/\"").unwrap();
        let sink = HttpSink::new(
            &settings,
            &SinkContext {
                state_dir: dir.path().to_path_buf(),
            },
        )
        .unwrap();
        assert_eq!(sink.last_line("s").unwrap(), None);
        let path = sink.manifest_path("s");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Many lines, then one longer than the first read window, then a torn one.
        let mut text: String = (0..3000).map(|i| format!("line {i:0>90}\n")).collect();
        let long = format!("long {}", "y".repeat(200_000));
        text.push_str(&long);
        text.push('\n');
        let complete = text.len() as u64;
        text.push_str("{\"torn");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(sink.last_line("s").unwrap().as_deref(), Some(long.as_str()));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), complete);
        // Short lines only: the last one.
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(sink.last_line("s").unwrap().as_deref(), Some("c"));
        std::fs::write(&path, "a\nb\nc").unwrap();
        assert_eq!(sink.last_line("s").unwrap().as_deref(), Some("b"));
        std::fs::write(&path, "only-torn").unwrap();
        assert_eq!(sink.last_line("s").unwrap(), None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn event_time_comes_from_created_at() {
        let raw =
            RawValue::from_string(r#"{"created_at":"2026-01-02T03:04:05.678Z"}"#.into()).unwrap();
        assert_eq!(
            event_time(&raw).unwrap().timestamp_millis(),
            1_767_323_045_678
        );
        let raw = RawValue::from_string(r#"{"gid":"1"}"#.into()).unwrap();
        assert_eq!(event_time(&raw), None);
    }
}
