//! The HTTP core: base URL rules, timeouts, the `{"data": …}` envelope, the budget permit around
//! every attempt, retries with backon, `Asana-Change` logging.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use backon::{BackoffBuilder, ExponentialBuilder};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::RngExt;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::AsanaError;
use crate::budget::{Budget, Demand, JobKey, Priority, RequestClass};

/// Asana's production base URL.
pub const DEFAULT_BASE_URL: &str = "https://app.asana.com/api/1.0";

/// The `User-Agent` sent with every request, naming the project and its version so Asana (and
/// proxies) can tell the worker's traffic apart.
pub const USER_AGENT: &str = concat!(
    "asana-worker/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/asana-worker/asana-worker)"
);

/// How failed attempts are retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: usize,
    /// First backoff delay (before full jitter), in milliseconds.
    pub min_delay_ms: u64,
    /// Largest backoff delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Give up when this much time (server time: divided by the budget's time scale) has passed
    /// since the first attempt, waits for `Retry-After` included.
    pub max_elapsed_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            min_delay_ms: 500,
            max_delay_ms: 30_000,
            max_elapsed_secs: 300,
        }
    }
}

/// Client settings. Durations name their unit. There is no separate time scale: backoff delays
/// and the retry time bound follow the budget's `time_scale` (1.0 against Asana), so one setting
/// speeds both up against the simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// API base URL; https is required except on loopback (the simulator).
    pub base_url: String,
    /// TCP + TLS connect timeout, seconds.
    pub connect_timeout_secs: u64,
    /// Longest silence while reading a response, seconds.
    pub read_timeout_secs: u64,
    /// Whole-request timeout, seconds (export downloads do not go through this client).
    pub request_timeout_secs: u64,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Deprecations to opt into early (`Asana-Enable`).
    pub asana_enable: Vec<String>,
    /// Deprecations to keep the old behaviour of (`Asana-Disable`).
    pub asana_disable: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            connect_timeout_secs: 10,
            read_timeout_secs: 30,
            request_timeout_secs: 60,
            retry: RetryConfig::default(),
            asana_enable: Vec::new(),
            asana_disable: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// Defaults with another base URL (e.g. the simulator's).
    pub fn with_base_url(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ..Self::default()
        }
    }
}

/// Who is calling: the job (for fair shares of the budget), its priority, and its cancellation.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The job, for round-robin fairness.
    pub job: JobKey,
    /// Its priority.
    pub priority: Priority,
    /// Fires when the job must stop; waiting for budget, backoff and requests end promptly.
    pub cancel: CancellationToken,
}

impl CallContext {
    /// A context for `job` at `priority`, never cancelled.
    pub fn new(job: impl AsRef<str>, priority: Priority) -> Self {
        Self {
            job: JobKey::new(job),
            priority,
            cancel: CancellationToken::new(),
        }
    }

    /// The same context with a cancellation token.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }
}

/// Whether a write may be sent twice. GETs are always retried on transient failures; writes only
/// when the caller declares them idempotent (for example because it checks for its own earlier
/// write first). A 429 and a failed connection are retried for every method: Asana refused the
/// request, or never saw it, so sending it again cannot duplicate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to send again after a timeout, reset or 5xx.
    Idempotent,
    /// Not safe: only 429s are retried.
    NotIdempotent,
}

/// Query parameters, in order. Build with [`Query::param`] and [`Query::opt_fields`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a parameter.
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// Adds a parameter when `value` is `Some`.
    pub fn param_opt(self, key: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(value) => self.param(key, value),
            None => self,
        }
    }

    /// Asks for exactly these fields (`opt_fields=a,b.c`); empty means Asana's defaults.
    pub fn opt_fields<S: AsRef<str>>(self, fields: &[S]) -> Self {
        if fields.is_empty() {
            return self;
        }
        let joined = fields
            .iter()
            .map(|f| f.as_ref())
            .collect::<Vec<_>>()
            .join(",");
        self.param("opt_fields", joined)
    }

    /// Sets a parameter in place.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Removes a parameter.
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pairs.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// One API call, as the retry loop sees it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path below the base URL, starting with `/` (segments already encoded with [`segment`]).
    pub path: String,
    /// Query parameters.
    pub query: Query,
    /// JSON body (already wrapped as `{"data": …}`).
    pub body: Option<Value>,
    /// Budget class.
    pub class: RequestClass,
    /// Requests it counts as (a batch of n actions counts n).
    pub cost: u32,
    /// Whether a write may be repeated.
    pub idempotency: Idempotency,
    /// Whether it starts an asynchronous job (an export), which Asana caps at 5 concurrent jobs:
    /// a 429 for it is the job cap, not the token's quota (see [`ApiRequest::starting_a_job`]).
    pub starts_job: bool,
}

impl ApiRequest {
    /// A GET of `path`.
    pub fn get(path: impl Into<String>, query: Query) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            query,
            body: None,
            class: RequestClass::Read,
            cost: 1,
            idempotency: Idempotency::Idempotent,
            starts_job: false,
        }
    }

    /// A POST of `{"data": data}` to `path`.
    pub fn post(path: impl Into<String>, data: Value, idempotency: Idempotency) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            query: Query::new(),
            body: Some(serde_json::json!({ "data": data })),
            class: RequestClass::Write,
            cost: 1,
            idempotency,
            starts_job: false,
        }
    }

    /// The same request marked as starting an asynchronous job. A 429 for it means other jobs
    /// of the same Asana user hold the 5 slots (another replica or another tool): the request
    /// waits `Retry-After` and tries again, while the token's other requests go on and its rate
    /// is not lowered, as it would be for a quota 429.
    pub fn starting_a_job(mut self) -> Self {
        self.starts_job = true;
        self
    }

    /// The same request in another budget class.
    pub fn class(mut self, class: RequestClass) -> Self {
        self.class = class;
        self
    }

    /// The same request with query parameters.
    pub fn query(mut self, query: Query) -> Self {
        self.query = query;
        self
    }

    fn may_retry(&self, error: &AsanaError) -> bool {
        match error {
            AsanaError::RateLimited { .. } => true,
            // The connection was never made, so the request cannot have been processed.
            AsanaError::Transport(source) if source.is_connect() => true,
            other if other.is_transient() => {
                self.method == Method::GET
                    || self.method == Method::HEAD
                    || self.idempotency == Idempotency::Idempotent
            }
            _ => false,
        }
    }
}

/// What [`segment`] escapes: everything but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`). Stricter than a path segment needs, so that `/`, `?`, `#` and `%`
/// in a value can never end, split or re-escape the segment, whichever URL parser reads it.
const SEGMENT_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The route of a request path with its gids replaced by `{gid}` (`/projects/{gid}/tasks`):
/// what traces group requests by, with no identifier of a customer's data in it.
pub fn route_template(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                "{gid}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes one path segment (gids are digits, but a job file could hold anything).
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT_ESCAPED).to_string()
}

/// Where a client's bearer token comes from when it is not a fixed string: an OAuth credential
/// whose access token expires and is refreshed. The client asks for the token before every
/// attempt (so a refresh ahead of expiry happens before the request, not after a 401), and on a
/// `401` asks for a refresh of exactly the token that was rejected and retries the request once
/// (a revoked grant then shows as the refresh's `invalid_grant`). Implementations make refreshes single-flight: many jobs asking at once
/// cause one exchange at the token endpoint.
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// The token to send now, refreshed first when it is about to expire.
    async fn token(&self) -> Result<SecretString, AsanaError>;

    /// Called after Asana answered 401 "expired" to `rejected`: returns a fresh token (refreshing
    /// unless another caller already replaced `rejected`).
    async fn refresh_rejected(&self, rejected: &SecretString) -> Result<SecretString, AsanaError>;
}

/// The Asana REST client. Cheap to clone; clones share the connection pool, the token and the
/// budget. [`AsanaClient::for_job`] gives each job its own [`CallContext`].
#[derive(Clone)]
pub struct AsanaClient {
    inner: Arc<Inner>,
    ctx: CallContext,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    /// The bearer token; replaced in place when an OAuth credential is refreshed, so every clone
    /// (every job) uses the new one.
    token: std::sync::RwLock<SecretString>,
    /// When set, the token comes from here instead of `token` (OAuth credentials).
    provider: Option<Arc<dyn TokenProvider>>,
    budget: Budget,
    config: ClientConfig,
    /// `Asana-Change` names already logged, so each is logged once per process.
    changes_seen: Mutex<HashSet<String>>,
}

impl fmt::Debug for AsanaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsanaClient")
            .field("base_url", &self.inner.base)
            .field("token", &"[redacted]")
            .field("budget", &self.inner.budget)
            .field("job", &self.ctx.job)
            .field("priority", &self.ctx.priority)
            .finish()
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => *name == "localhost",
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Checks a base URL: absolute, https (http only for loopback), no query or fragment. Returns it
/// without a trailing slash.
pub fn validate_base_url(raw: &str) -> Result<String, AsanaError> {
    let invalid = |reason: &str| AsanaError::InvalidBaseUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    let host = url.host().ok_or_else(|| invalid("it has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => return Err(invalid("plain http is only allowed for loopback addresses")),
        other => return Err(invalid(&format!("unsupported scheme {other:?}"))),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not carry a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it must not carry credentials"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl AsanaClient {
    /// A client for `token` spending `budget` (the token's budget: every request goes through it).
    pub fn new(
        config: ClientConfig,
        token: SecretString,
        budget: Budget,
    ) -> Result<Self, AsanaError> {
        Self::build(config, token, None, budget)
    }

    /// A client whose token comes from `provider` (refreshed OAuth access tokens), spending
    /// `budget` like any other.
    pub fn with_provider(
        config: ClientConfig,
        provider: Arc<dyn TokenProvider>,
        budget: Budget,
    ) -> Result<Self, AsanaError> {
        Self::build(
            config,
            SecretString::from(String::new()),
            Some(provider),
            budget,
        )
    }

    fn build(
        config: ClientConfig,
        token: SecretString,
        provider: Option<Arc<dyn TokenProvider>>,
        budget: Budget,
    ) -> Result<Self, AsanaError> {
        let base = validate_base_url(&config.base_url)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        for (name, list) in [
            ("asana-enable", &config.asana_enable),
            ("asana-disable", &config.asana_disable),
        ] {
            if !list.is_empty() {
                let value = HeaderValue::from_str(&list.join(","))
                    .map_err(|e| AsanaError::Setup(format!("{name}: {e}")))?;
                headers.insert(name, value);
            }
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .read_timeout(Duration::from_secs(config.read_timeout_secs.max(1)))
            .timeout(Duration::from_secs(config.request_timeout_secs.max(1)))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| AsanaError::Setup(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                token: std::sync::RwLock::new(token),
                provider,
                budget,
                config,
                changes_seen: Mutex::new(HashSet::new()),
            }),
            ctx: CallContext::new("default", Priority::Scheduled),
        })
    }

    /// The same client acting for another job (fair share, priority, cancellation).
    pub fn for_job(&self, ctx: CallContext) -> Self {
        Self {
            inner: self.inner.clone(),
            ctx,
        }
    }

    /// Replaces the bearer token for this client and all its clones, e.g. after the credential
    /// provider refreshed an OAuth access token in answer to [`AsanaError::TokenExpired`]. The
    /// budget stays the same: it belongs to the credential, not to one access token.
    pub fn replace_token(&self, token: SecretString) {
        *self.inner.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// The calling job's context.
    pub fn context(&self) -> &CallContext {
        &self.ctx
    }

    /// The token's budget.
    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// The base URL in use.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    fn scaled(&self, server_time: Duration) -> Duration {
        self.inner.budget.config().to_real(server_time)
    }

    /// Sends `request` with retries and returns the whole JSON body (`{"data": …, …}`).
    ///
    /// Every attempt first takes a permit from the token's budget. GETs (and writes declared
    /// idempotent) are retried on 429, 5xx, timeouts and resets with exponential backoff and full
    /// jitter, bounded in attempts and total time; other writes are retried on 429 only. A 429
    /// pauses the whole token for its `Retry-After` (the budget makes every job wait), after
    /// which the attempt is repeated without further delay.
    pub async fn execute(&self, request: &ApiRequest) -> Result<Value, AsanaError> {
        let raw = self.execute_raw(request).await?;
        serde_json::from_str(raw.get()).map_err(|e| AsanaError::Decode {
            context: format!("{} {}", request.method, request.path),
            message: e.to_string(),
        })
    }

    /// Like [`AsanaClient::execute`], returning the body's bytes exactly as Asana sent them
    /// (checked to be JSON), for data that must be stored unchanged (audit-log events).
    pub async fn execute_raw(
        &self,
        request: &ApiRequest,
    ) -> Result<Box<serde_json::value::RawValue>, AsanaError> {
        let retry = &self.inner.config.retry;
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(retry.min_delay_ms))
            .with_max_delay(Duration::from_millis(
                retry.max_delay_ms.max(retry.min_delay_ms),
            ))
            .with_max_times(retry.max_attempts.saturating_sub(1))
            .build();
        let started = Instant::now();
        let max_elapsed = self.scaled(Duration::from_secs(retry.max_elapsed_secs));
        let demand = Demand::new(request.class, self.ctx.priority, self.ctx.job.clone())
            .with_cost(request.cost);
        let mut attempt = 0u32;
        // An expired access token is refreshed and the request retried once, outside the backoff
        // sequence: the refresh, not time, is what fixes it.
        let mut refreshed = false;
        loop {
            attempt += 1;
            let token = self.current_token().await?;
            let result = self.attempt(request, &demand, &token).await;
            let error = match result {
                Ok(body) => return Ok(body),
                Err(error) => error,
            };
            // Any 401 with a refreshable token: an expired token is fixed by the refresh, and a
            // revoked grant is told apart from a transient rejection by the refresh's
            // `invalid_grant`.
            if let (
                AsanaError::TokenExpired { .. } | AsanaError::Unauthorized { .. },
                Some(provider),
                false,
            ) = (&error, &self.inner.provider, refreshed)
            {
                refreshed = true;
                tracing::debug!(path = %request.path, "Access token expired; refreshing and retrying once");
                // Not raced against cancellation: a refresh abandoned between the token
                // endpoint's answer and the store's write could lose a rotated refresh token.
                // It is bounded by the HTTP timeout instead.
                provider.refresh_rejected(&token).await?;
                continue;
            }
            if !request.may_retry(&error) {
                return Err(error);
            }
            // The backoff sequence bounds the attempts for every kind of failure.
            let Some(delay) = backoff.next() else {
                return Err(error);
            };
            let wait = match &error {
                // The job cap holds only this request back.
                AsanaError::RateLimited { retry_after, .. } if request.starts_job => {
                    self.scaled(*retry_after)
                }
                // The budget holds every job back until Retry-After has passed.
                AsanaError::RateLimited { .. } => Duration::ZERO,
                _ => {
                    let jittered = rand::rng().random_range(0.0..=delay.as_secs_f64());
                    self.scaled(Duration::from_secs_f64(jittered))
                }
            };
            let waited_for_budget = self.inner.budget.cooldown_remaining().unwrap_or_default();
            if started.elapsed() + wait + waited_for_budget > max_elapsed {
                return Err(error);
            }
            let reason = match &error {
                AsanaError::RateLimited { .. } => "rate_limited",
                AsanaError::Server { .. } => "server",
                AsanaError::Timeout(_) => "timeout",
                _ => "transport",
            };
            metrics::counter!(
                "asana_worker_retries_total",
                "token" => self.inner.budget.config().name.clone(),
                "reason" => reason,
            )
            .increment(1);
            tracing::debug!(
                path = %request.path, attempt, %error, wait_ms = wait.as_millis() as u64,
                "Retrying Asana request"
            );
            if !wait.is_zero() {
                tokio::select! {
                    biased;
                    () = self.ctx.cancel.cancelled() => return Err(AsanaError::Cancelled),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// The token for the next attempt: the provider's (refreshed ahead of expiry), or the fixed
    /// one.
    async fn current_token(&self) -> Result<SecretString, AsanaError> {
        match &self.inner.provider {
            // Not raced against cancellation, for the same reason as the refresh after a 401.
            Some(provider) => {
                if self.ctx.cancel.is_cancelled() {
                    return Err(AsanaError::Cancelled);
                }
                provider.token().await
            }
            None => Ok(self
                .inner
                .token
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()),
        }
    }

    /// One attempt: permit, send, read the body, classify. Traced as one `asana.request` span
    /// (method, route template, status, time waited for the budget), a child of the run's span.
    async fn attempt(
        &self,
        request: &ApiRequest,
        demand: &Demand,
        token: &SecretString,
    ) -> Result<Box<serde_json::value::RawValue>, AsanaError> {
        let span = tracing::info_span!(
            "asana.request",
            otel.kind = "client",
            http.request.method = %request.method,
            http.route = %route_template(&request.path),
            http.response.status_code = tracing::field::Empty,
            budget.wait_ms = tracing::field::Empty,
        );
        self.attempt_in(request, demand, token)
            .instrument(span)
            .await
    }

    async fn attempt_in(
        &self,
        request: &ApiRequest,
        demand: &Demand,
        token: &SecretString,
    ) -> Result<Box<serde_json::value::RawValue>, AsanaError> {
        let budget = &self.inner.budget;
        let waiting = Instant::now();
        let permit = budget.acquire(demand.clone(), &self.ctx.cancel).await?;
        tracing::Span::current().record("budget.wait_ms", waiting.elapsed().as_millis() as u64);
        let token_name = budget.config().name.clone();
        let class = request.class.as_str();
        let sent = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = self.ctx.cancel.cancelled() => Err(AsanaError::Cancelled),
            outcome = self.send(request, token) => outcome,
        };
        metrics::histogram!("asana_worker_request_duration_seconds", "class" => class)
            .record(sent.elapsed().as_secs_f64());
        let status_label = match &outcome {
            Ok((status, _, _)) => status.as_u16().to_string(),
            Err(error) => error.label().to_string(),
        };
        metrics::counter!(
            "asana_worker_requests_total",
            "token" => token_name.clone(),
            "class" => class,
            "status" => status_label,
        )
        .increment(1);
        let (status, headers, body) = outcome?;
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        tracing::debug!(
            method = %request.method, path = %request.path, status = status.as_u16(),
            elapsed_ms = sent.elapsed().as_millis() as u64, "Asana request"
        );
        self.note_changes(&headers);
        if status.is_success() {
            drop(permit);
            if body.is_empty() {
                return Ok(
                    serde_json::value::RawValue::from_string("null".into()).expect("null is JSON")
                );
            }
            return serde_json::from_slice::<&serde_json::value::RawValue>(&body)
                .map(ToOwned::to_owned)
                .map_err(|e| AsanaError::Decode {
                    context: format!("{} {}", request.method, request.path),
                    message: e.to_string(),
                });
        }
        let error = AsanaError::from_response(status, &headers, &body);
        if let AsanaError::RateLimited { retry_after, .. } = &error {
            // Pause the token before this permit is returned, so no other job slips in. The
            // budget never overfills a window, so a 429 outside search means another client
            // spends this token: let the budget lower its limit.
            // Asana's job cap, search bucket, concurrency limiter and quota all answer 429 with
            // the same body; only the quota means another client spends this token's quota,
            // and only it lowers the rate.
            let cause = if request.starts_job {
                "job_cap"
            } else if request.class == RequestClass::Search {
                "search"
            } else if budget.concurrency_shaped(request.class) {
                "concurrency"
            } else {
                "quota"
            };
            metrics::counter!("asana_worker_rate_limited_total", "token" => token_name, "cause" => cause)
                .increment(1);
            match cause {
                "job_cap" => {}
                "concurrency" => budget.concurrency_limited(request.class, *retry_after),
                _ => budget.cool_down(*retry_after, cause == "quota"),
            }
        }
        drop(permit);
        Err(error)
    }

    async fn send(
        &self,
        request: &ApiRequest,
        token: &SecretString,
    ) -> Result<(reqwest::StatusCode, HeaderMap, bytes::Bytes), AsanaError> {
        let url = format!("{}{}", self.inner.base, request.path);
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), url)
            .bearer_auth(token.expose_secret());
        if !request.query.pairs().is_empty() {
            builder = builder.query(request.query.pairs());
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder.send().await.map_err(AsanaError::from_reqwest)?;
        let status = response.status();
        let headers = response.headers().clone();
        // A body cut short (reset, truncated) is a transport failure worth retrying, even though
        // reqwest reports it as a decode error; malformed JSON is checked separately below.
        let body = response.bytes().await.map_err(|error| {
            if error.is_timeout() {
                AsanaError::Timeout(error)
            } else {
                AsanaError::Transport(error)
            }
        })?;
        Ok((status, headers, body))
    }

    /// Logs each `Asana-Change` deprecation notice once per change name.
    fn note_changes(&self, headers: &HeaderMap) {
        for value in headers.get_all("asana-change") {
            let Ok(text) = value.to_str() else { continue };
            let mut name = None;
            let mut info = None;
            let mut affected = false;
            for part in text.split(';') {
                match part.trim().split_once('=') {
                    Some(("name", v)) => name = Some(v.trim().to_string()),
                    Some(("info", v)) => info = Some(v.trim().to_string()),
                    Some(("affected", v)) => affected = v.trim() == "true",
                    _ => {}
                }
            }
            let Some(name) = name else { continue };
            let first = self
                .inner
                .changes_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone());
            if first {
                tracing::warn!(
                    change = %name,
                    info = info.as_deref().unwrap_or(""),
                    affected,
                    "Asana announced an API change; pin the behaviour with asana_enable/asana_disable"
                );
            }
        }
    }

    /// `Asana-Change` names seen so far (each logged once).
    pub fn changes_seen(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .changes_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Sends `request` and decodes its `data` member.
    pub async fn data<T: DeserializeOwned>(&self, request: &ApiRequest) -> Result<T, AsanaError> {
        let body = self.execute(request).await?;
        decode_data(body, &request.path)
    }
}

/// Takes `data` out of an envelope and decodes it.
pub(crate) fn decode_data<T: DeserializeOwned>(body: Value, path: &str) -> Result<T, AsanaError> {
    let Value::Object(mut map) = body else {
        return Err(AsanaError::Decode {
            context: path.to_string(),
            message: "the body is not a JSON object".into(),
        });
    };
    let data = map.remove("data").ok_or_else(|| AsanaError::Decode {
        context: path.to_string(),
        message: "the body has no `data` member".into(),
    })?;
    serde_json::from_value(data).map_err(|e| AsanaError::Decode {
        context: path.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_with_delimiters_and_non_ascii_stays_one_segment() {
        let gid = "12/34?x=1#frag 50% caf\u{e9}";
        let encoded = segment(gid);
        assert_eq!(encoded, "12%2F34%3Fx%3D1%23frag%2050%25%20caf%C3%A9");

        let url = Url::parse(&format!(
            "https://app.asana.com/api/1.0/tasks/{encoded}/stories"
        ))
        .unwrap();
        let segments: Vec<&str> = url.path_segments().unwrap().collect();
        assert_eq!(
            segments,
            ["api", "1.0", "tasks", encoded.as_str(), "stories"]
        );
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);
        let decoded = percent_encoding::percent_decode_str(segments[3])
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, gid);
    }

    #[test]
    fn unreserved_characters_pass_through() {
        assert_eq!(segment("1200456789"), "1200456789");
        assert_eq!(segment("a-b.c_d~E"), "a-b.c_d~E");
    }
}
