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
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use rand::RngExt;
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::manifest::{self, EntryBody, ManifestEntry};
use super::{Batch, RecordSink, Recovered, SinkContext, SinkError};
use crate::clock::Clock;
use crate::config::jobs::SettingsCheck;
use crate::credentials::TokenSource;

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
#[serde(deny_unknown_fields)]
pub struct HttpSinkSettings {
    /// Where the batches are POSTed. `https://`, or `http://` on a loopback address only; no
    /// query, fragment or credentials in it. For `splunk_hec`, a URL without a path gets
    /// `/services/collector/event`
    pub url: String,
    /// `ndjson`: one event per line (`Content-Type: application/x-ndjson`). `json`: one JSON
    /// array per POST (`application/json`). `splunk_hec`: one `{"event": …, "time": …,
    /// "source": "<job>"}` envelope per line, `time` being the event's `created_at` in epoch
    /// seconds (milliseconds as the fraction)
    #[serde(default)]
    pub format: HttpFormat,
    /// Most events in one POST; a job's batch is split into chunks of this size
    #[serde(default = "default_batch_events")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_events: u32,
    /// File holding the collector's token (trailing whitespace ignored; a relative path is looked
    /// up in `$CREDENTIALS_DIRECTORY` first). Sent as `Authorization: Bearer <token>`, or
    /// `Authorization: Splunk <token>` for `splunk_hec`, which requires a token
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Environment variable holding the token, instead of `token_file`
    #[serde(default)]
    pub token_env: Option<String>,
    /// Longest one POST may take, connection included
    #[serde(default = "default_timeout", with = "crate::config::values::duration")]
    #[schemars(with = "crate::config::values::DurationText")]
    pub timeout: Duration,
    /// Attempts per POST, the first included, before the run fails (and is retried by the job's
    /// own retry policy)
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    /// First delay before a retry; delays grow exponentially with full jitter
    #[serde(
        default = "default_min_backoff",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "crate::config::values::DurationText")]
    pub min_backoff: Duration,
    /// Longest delay between retries
    #[serde(
        default = "default_max_backoff",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "crate::config::values::DurationText")]
    pub max_backoff: Duration,
}

impl HttpSinkSettings {
    /// The URL, the token and the backoff bounds are checked at load.
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        if let Err(error) = crate::asana::validate_base_url(&self.url) {
            check.problem(
                "url",
                format!("`url` {:?} cannot be used: {error}", self.url),
                "use an https URL, e.g. url = \"https://collector.example.com/ingest\" (plain http only on loopback)",
            );
        }
        match (&self.token_file, &self.token_env) {
            (Some(_), Some(_)) => check.problem(
                "token_env",
                "set `token_file` or `token_env`, not both",
                "keep the one that holds the collector's token",
            ),
            (Some(file), None) => check.secret_file("token_file", file),
            (None, Some(variable)) => check.secret_env("token_env", variable),
            (None, None) if self.format == HttpFormat::SplunkHec => check.problem(
                "",
                "a splunk_hec sink needs the HEC token",
                "set token_file (a file holding the token) or token_env (a variable holding it)",
            ),
            (None, None) => {}
        }
        if self.min_backoff > self.max_backoff {
            check.problem(
                "min_backoff",
                format!(
                    "`min_backoff` ({}) is longer than `max_backoff` ({})",
                    crate::config::values::format_duration(self.min_backoff),
                    crate::config::values::format_duration(self.max_backoff)
                ),
                "retry delays grow from min_backoff up to max_backoff; make min_backoff the shorter",
            );
        }
    }
}

fn default_batch_events() -> u32 {
    500
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_attempts() -> u32 {
    5
}

fn default_min_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

/// The path Splunk's HTTP Event Collector takes JSON events on; used when a `splunk_hec` URL
/// names only the host.
pub const SPLUNK_HEC_PATH: &str = "/services/collector/event";

/// Header carrying the per-POST idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

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

/// A Retry-After longer than this ends the attempts: the run fails as transient and the job's
/// own retry picks the batch up later, instead of a worker sleeping for hours.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The HTTP sink: stores each batch encoded in chunks of `batch_events`, posts the chunks, then
/// records the delivery in a local manifest so [`RecordSink::recover`] knows the last acknowledged
/// batch.
///
/// At-least-once to any collector, exactly once to one that honours `Idempotency-Key`: a crash
/// after a POST was acknowledged but before the manifest entry was written resends the stored
/// bodies at the next run, byte for byte under the same keys
/// (`<stream>-<sequence>-<chunk>-<sha256 of the body, 16 hex digits>`).
pub struct HttpSink {
    /// Where the POSTs go (Splunk's event path added for a bare `splunk_hec` host).
    url: url::Url,
    /// Checked settings.
    settings: HttpSinkSettings,
    /// The collector token, if one is configured; never logged.
    token: Option<SecretString>,
    /// Connection pool with the POST timeout.
    client: reqwest::Client,
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
            .field("url", &self.url.as_str())
            .field("format", &self.settings.format)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
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
        let base = crate::asana::validate_base_url(&settings.url)
            .map_err(|e| config_error(format!("url: {e}")))?;
        let mut url = url::Url::parse(&base).map_err(|e| config_error(format!("url: {e}")))?;
        if settings.format == HttpFormat::SplunkHec && (url.path() == "/" || url.path().is_empty())
        {
            url.set_path(SPLUNK_HEC_PATH);
        }
        if settings.batch_events == 0 {
            return Err(config_error("batch_events must be at least 1"));
        }
        if settings.max_attempts == 0 {
            return Err(config_error("max_attempts must be at least 1"));
        }
        let source = match (&settings.token_file, &settings.token_env) {
            (Some(_), Some(_)) => {
                return Err(config_error("set token_file or token_env, not both"));
            }
            (Some(path), None) => Some(TokenSource::File(path.clone())),
            (None, Some(var)) => Some(TokenSource::Env(var.clone())),
            (None, None) => None,
        };
        let token = match source {
            Some(source) => Some(
                crate::credentials::read_token("http sink", &source)
                    .map_err(|e| config_error(format!("token: {e}")))?,
            ),
            None if settings.format == HttpFormat::SplunkHec => {
                return Err(config_error(
                    "splunk_hec needs the HEC token: set token_file or token_env",
                ));
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A redirect is reported, not followed: a POST turned into a GET, or a token sent on
            // to another host, must not pass for a delivery.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("asana-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            url,
            settings: settings.clone(),
            token,
            client,
            state_dir: context.state_dir.join("sinks").join("http"),
            last: tokio::sync::Mutex::new(HashMap::new()),
            locks: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The URL the POSTs go to.
    pub fn url(&self) -> &url::Url {
        &self.url
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
            self.post(&stream, post.body.into(), &post.content_type, &post.key)
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

    /// POSTs one body, retrying 429, 5xx, timeouts and connection failures with exponential
    /// backoff (full jitter) and at least the collector's `Retry-After`.
    async fn post(
        &self,
        stream: &str,
        body: bytes::Bytes,
        content_type: &str,
        key: &str,
    ) -> Result<(), SinkError> {
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff.max(self.settings.min_backoff))
            .with_max_times(self.settings.max_attempts.saturating_sub(1) as usize)
            .build();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let failure = match self.attempt(body.clone(), content_type, key).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Retry {
                    message,
                    retry_after,
                }) => (message, retry_after),
            };
            let (message, retry_after) = failure;
            let exhausted = || SinkError::Transient {
                sink: "http",
                message: format!(
                    "POST to {} failed after {attempt} attempt(s): {message}",
                    self.url
                ),
            };
            let Some(delay) = backoff.next() else {
                return Err(exhausted());
            };
            let jittered =
                Duration::from_secs_f64(rand::rng().random_range(0.0..=delay.as_secs_f64()));
            let wait = match retry_after {
                Some(after) if after > LONGEST_RETRY_AFTER => return Err(exhausted()),
                Some(after) => after.max(jittered),
                None => jittered,
            };
            metrics::counter!("asana_worker_sink_http_retries_total", "job" => stream.to_string())
                .increment(1);
            tracing::warn!(
                url = %self.url, idempotency_key = key, attempt, error = %message,
                wait_ms = wait.as_millis() as u64, "Retrying POST to the collector"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        body: bytes::Bytes,
        content_type: &str,
        key: &str,
    ) -> Result<(), Attempt> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(IDEMPOTENCY_HEADER, key)
            .body(body);
        if let Some(token) = &self.token {
            let scheme = match self.settings.format {
                HttpFormat::SplunkHec => "Splunk",
                _ => "Bearer",
            };
            let mut value = reqwest::header::HeaderValue::from_str(&format!(
                "{scheme} {}",
                token.expose_secret()
            ))
            .map_err(|_| {
                Attempt::Fatal(config_error(
                    "the token holds characters an HTTP header cannot carry",
                ))
            })?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                // reqwest's message names the URL and the cause, never request headers.
                let kind = if error.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                return Err(Attempt::Retry {
                    message: format!("the request {kind}: {}", error_chain(&error)),
                    retry_after: None,
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            // Drain the body so the connection can be reused.
            let _ = response.bytes().await;
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response.text().await.unwrap_or_default();
        let message = format!("HTTP {status}: {}", self.redact(&snippet(&text)));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            return Err(Attempt::Retry {
                message,
                retry_after,
            });
        }
        let hint = match status.as_u16() {
            300..=399 => "; the collector redirects: put the final URL in the sink's url",
            401 | 403 => "; check the collector token (token_file / token_env)",
            404 => "; check the sink's url",
            413 => "; lower batch_events",
            _ => "",
        };
        Err(Attempt::Fatal(SinkError::Rejected {
            sink: "http",
            message: format!("the collector at {} answered {message}{hint}", self.url),
        }))
    }

    /// Removes the token from text that came from the collector (an echoing proxy).
    fn redact(&self, text: &str) -> String {
        match &self.token {
            Some(token) if !token.expose_secret().is_empty() => {
                text.replace(token.expose_secret(), "[redacted]")
            }
            _ => text.to_string(),
        }
    }
}

/// What one failed attempt means.
enum Attempt {
    /// Worth another attempt (after at least `retry_after`).
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Fatal(SinkError),
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

/// `Retry-After` as seconds or an HTTP date (measured against the system clock, as the
/// collector's own clock wrote it).
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let now = crate::clock::SystemClock.now();
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The first 200 characters of a response body, on one line.
fn snippet(text: &str) -> String {
    let line: String = text.chars().take(200).collect();
    let line = line.replace(['\n', '\r'], " ");
    if line.trim().is_empty() {
        "(empty body)".into()
    } else {
        line.trim().to_string()
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
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
