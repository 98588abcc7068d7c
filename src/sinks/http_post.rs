//! POSTs to an HTTP endpoint with retries, shared by the `http` record sink (batches to a log
//! collector) and the `http` document sink (a document to a webhook): the endpoint's settings
//! ([`HttpEndpoint`], flattened into both), the bearer token read from a file or a variable, and
//! [`Poster::post`], which retries 429, 408, 5xx, timeouts and connection failures with
//! exponential backoff (full jitter), waits at least `Retry-After`, follows no redirect and
//! never lets the token into a log line or an error.

use std::path::PathBuf;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use rand::RngExt;
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::SinkError;
use crate::clock::Clock;
use crate::config::jobs::SettingsCheck;
use crate::config::values::{DurationText, format_duration};
use crate::credentials::TokenSource;

/// Header carrying the per-POST idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A Retry-After longer than this ends the attempts: the run fails as transient and the job's
/// own retry picks the work up later, instead of a worker sleeping for hours.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(600);

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

/// Where POSTs go and how they are retried.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct HttpEndpoint {
    /// Where the POSTs go. `https://`, or `http://` on a loopback address only; no query,
    /// fragment or credentials in it
    pub url: String,
    /// File holding the receiver's token (trailing whitespace ignored; a relative path is looked
    /// up in `$CREDENTIALS_DIRECTORY` first), sent in the `Authorization` header
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the token, instead of `token_file`
    #[serde(default)]
    pub token_env: Option<String>,
    /// Longest one POST may take, connection included
    #[serde(default = "default_timeout", with = "crate::config::values::duration")]
    #[schemars(with = "DurationText")]
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
    #[schemars(with = "DurationText")]
    pub min_backoff: Duration,
    /// Longest delay between retries
    #[serde(
        default = "default_max_backoff",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub max_backoff: Duration,
}

impl HttpEndpoint {
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
                "keep the one that holds the token",
            ),
            (Some(file), None) => check.secret_file("token_file", file),
            (None, Some(variable)) => check.secret_env("token_env", variable),
            (None, None) => {}
        }
        if self.min_backoff > self.max_backoff {
            check.problem(
                "min_backoff",
                format!(
                    "`min_backoff` ({}) is longer than `max_backoff` ({})",
                    format_duration(self.min_backoff),
                    format_duration(self.max_backoff)
                ),
                "retry delays grow from min_backoff up to max_backoff; make min_backoff the shorter",
            );
        }
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token_file.is_some() || self.token_env.is_some()
    }

    /// The URL, checked (https, or http on loopback).
    pub fn parsed_url(&self, sink: &'static str) -> Result<url::Url, SinkError> {
        let base = crate::asana::validate_base_url(&self.url).map_err(|e| SinkError::Config {
            sink,
            message: format!("url: {e}"),
        })?;
        url::Url::parse(&base).map_err(|e| SinkError::Config {
            sink,
            message: format!("url: {e}"),
        })
    }
}

/// A POST's body: bytes in memory, or a file streamed from disk (re-read for every attempt).
#[derive(Debug, Clone)]
pub enum PostBody {
    /// Bytes.
    Bytes(bytes::Bytes),
    /// A file, streamed.
    File(PathBuf),
}

impl PostBody {
    async fn reqwest_body(&self) -> Result<reqwest::Body, SinkError> {
        match self {
            PostBody::Bytes(bytes) => Ok(reqwest::Body::from(bytes.clone())),
            PostBody::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|source| SinkError::Io {
                        action: "open",
                        path: path.display().to_string(),
                        source,
                    })?;
                Ok(reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::new(file),
                ))
            }
        }
    }
}

/// POSTs to one endpoint.
pub struct Poster {
    /// Where the POSTs go.
    url: url::Url,
    /// Retry and timeout settings.
    endpoint: HttpEndpoint,
    /// The token, if one is configured; never logged.
    token: Option<SecretString>,
    /// `Authorization` scheme of the token (`Bearer`, `Splunk`).
    scheme: &'static str,
    /// Who answers, for messages ("the collector", "the webhook").
    peer: &'static str,
    /// The sink type, for errors.
    sink: &'static str,
    /// Connection pool with the POST timeout.
    client: reqwest::Client,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster")
            .field("url", &self.url.as_str())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Poster {
    /// Reads the token and prepares the client for `url` (checked by the caller, who may add a
    /// path); nothing is sent yet.
    pub fn new(
        endpoint: &HttpEndpoint,
        url: url::Url,
        scheme: &'static str,
        peer: &'static str,
        sink: &'static str,
    ) -> Result<Self, SinkError> {
        let config_error = |message: String| SinkError::Config { sink, message };
        if endpoint.max_attempts == 0 {
            return Err(config_error("max_attempts must be at least 1".into()));
        }
        let source = match (&endpoint.token_file, &endpoint.token_env) {
            (Some(_), Some(_)) => {
                return Err(config_error("set token_file or token_env, not both".into()));
            }
            (Some(path), None) => Some(TokenSource::File(path.clone())),
            (None, Some(var)) => Some(TokenSource::Env(var.clone())),
            (None, None) => None,
        };
        let token = match source {
            Some(source) => Some(
                crate::credentials::read_token(&format!("{sink} sink"), &source)
                    .map_err(|e| config_error(format!("token: {e}")))?,
            ),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            // A redirect is reported, not followed: a POST turned into a GET, or a token sent on
            // to another host, must not pass for a delivery.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("asana-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            url,
            endpoint: endpoint.clone(),
            token,
            scheme,
            peer,
            sink,
            client,
        })
    }

    /// The URL the POSTs go to.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// Whether a token was read.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn config_error(&self, message: &str) -> SinkError {
        SinkError::Config {
            sink: self.sink,
            message: message.to_string(),
        }
    }

    /// POSTs one body, retrying 429, 5xx, timeouts and connection failures with exponential
    /// backoff (full jitter) and at least the collector's `Retry-After`.
    pub async fn post(
        &self,
        stream: &str,
        body: PostBody,
        content_type: &str,
        key: &str,
        headers: &[(&str, String)],
    ) -> Result<(), SinkError> {
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(self.endpoint.min_backoff)
            .with_max_delay(self.endpoint.max_backoff.max(self.endpoint.min_backoff))
            .with_max_times(self.endpoint.max_attempts.saturating_sub(1) as usize)
            .build();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let failure = match self
                .attempt(body.reqwest_body().await?, content_type, key, headers)
                .await
            {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Retry {
                    message,
                    retry_after,
                }) => (message, retry_after),
            };
            let (message, retry_after) = failure;
            let exhausted = || SinkError::Transient {
                sink: self.sink,
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
        body: reqwest::Body,
        content_type: &str,
        key: &str,
        headers: &[(&str, String)],
    ) -> Result<(), Attempt> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(IDEMPOTENCY_HEADER, key)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(token) = &self.token {
            let scheme = self.scheme;
            let mut value = reqwest::header::HeaderValue::from_str(&format!(
                "{scheme} {}",
                token.expose_secret()
            ))
            .map_err(|_| {
                Attempt::Fatal(
                    self.config_error("the token holds characters an HTTP header cannot carry"),
                )
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
            413 => "; the body is too large for it (for an http sink: lower batch_events)",
            _ => "",
        };
        Err(Attempt::Fatal(SinkError::Rejected {
            sink: self.sink,
            message: format!("{} at {} answered {message}{hint}", self.peer, self.url),
        }))
    }

    /// Removes the token from text that came from the receiver (an echoing proxy).
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

/// `Retry-After` as seconds or an HTTP date (measured against the system clock, as the
/// collector's own clock wrote it).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
