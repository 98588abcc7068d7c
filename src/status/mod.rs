//! The status page: what the daemon is doing, at a glance, in a browser, served by the admin
//! server (same listener, loopback by default) beside `/healthz`, `/readyz` and `/metrics`.
//!
//! - `/status` (`/` redirects there): the jobs (schedule in words, next fire in the job's time
//!   zone, pause, last outcome and its age, a sparkline of recent runs, the current run's
//!   progress), the tokens (state, owner, which replica runs it, requests per quota window over
//!   the last hour against the limit, 429s, export slots, time spent waiting for the budget) and the compliance view (per audit-log job the newest
//!   event, lag, retention headroom and the manifest chain's last verification; per export
//!   job the current export and the last file with its sha256).
//! - `/status/runs` (filterable by job, state and time) and `/status/runs/{id}` (attempts,
//!   timings, progress, error with its hint, the run's log lines while the process keeps them).
//! - `/api/jobs`, `/api/runs`, `/api/runs/{id}`, `/api/tokens`, `/api/compliance`: the same data
//!   as JSON, for scripts.
//! - Actions, only with an admin token (`admin.token_file`; see [`auth`]): run a job now, retry
//!   a run that ended badly (a new manual run of its job), pause and resume a job; the same
//!   under `/api/` for scripts. Without a token the page is read-only and
//!   says how to enable them.
//!
//! Pages are rendered on the server (minijinja, every value HTML-escaped); one small script of
//! our own (`assets/status.js`, served from the binary at `/status/static/`) re-fetches the page
//! every few seconds and swaps its live part in, without a full reload. Bad input (an unknown run, a malformed
//! filter, an oversized query) gets a 4xx page saying what was wrong. Nothing shown ever holds
//! a token: credentials are shown by name, state and owner only.

pub mod auth;
mod view;
pub mod words;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::settings::CredentialSettings;
use crate::credentials::ClientPool;
use crate::jobs::Kind;
use crate::scheduler::JobSet;
use crate::store::{RunFilter, RunState, Store, StoreError};
use crate::worker::CredentialLeases;

pub use auth::{AdminToken, AdminTokenError};

/// Longest query string accepted; longer ones get 414.
pub const MAX_QUERY: usize = 1024;
/// Most runs one listing returns.
pub const MAX_RUNS: i64 = 500;
/// Runs a listing returns unless told.
pub const DEFAULT_RUNS: i64 = 100;
/// How long the front page's data is shared between requests (ten browsers polling cost one
/// gathering per interval, not ten).
pub const OVERVIEW_TTL: Duration = Duration::from_secs(1);
/// How often the background checks look for file sinks that changed.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often a file sink's manifest chain is verified again when it has not changed (a change
/// is verified within [`CHECK_EVERY`]).
pub const VERIFY_EVERY: Duration = Duration::from_secs(300);
/// Longest form body accepted.
const MAX_FORM: usize = 8 * 1024;

const BASE_HTML: &str = include_str!("templates/base.html");
const INDEX_HTML: &str = include_str!("templates/index.html");
const RUNS_HTML: &str = include_str!("templates/runs.html");
const RUN_HTML: &str = include_str!("templates/run.html");
const LOGIN_HTML: &str = include_str!("templates/login.html");
const ERROR_HTML: &str = include_str!("templates/error.html");
const SCRIPT: &str = include_str!("assets/status.js");
const STYLE: &str = include_str!("assets/status.css");

/// The last verification of a file sink's manifest chain.
#[derive(Debug, Clone)]
struct Verification {
    at: DateTime<Utc>,
    /// When, for the next check's timing.
    checked: Instant,
    /// The stream's files as they were.
    fingerprint: Vec<Option<(u64, Option<std::time::SystemTime>)>>,
    intact: bool,
    segments: u64,
    records: u64,
    problems: Vec<String>,
}

/// What the status page reads and acts on.
pub struct StatusConfig {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The job set in force (swapped on reload).
    pub jobs: watch::Receiver<JobSet<Kind>>,
    /// The clients, whose budgets and credential states are shown.
    pub clients: Arc<ClientPool>,
    /// Which credentials this process holds, and the replicas' job sets.
    pub leases: Arc<CredentialLeases>,
    /// The credentials declared in configuration (kind, tier, limit override).
    pub credentials: BTreeMap<String, CredentialSettings>,
    /// Wall time.
    pub clock: SharedClock,
    /// The admin token, when actions are enabled.
    pub admin_token: Option<AdminToken>,
}

struct Inner {
    store: Arc<dyn Store>,
    jobs: watch::Receiver<JobSet<Kind>>,
    clients: Arc<ClientPool>,
    leases: Arc<CredentialLeases>,
    credentials: BTreeMap<String, CredentialSettings>,
    clock: SharedClock,
    auth: auth::Auth,
    verifications: Mutex<BTreeMap<String, Verification>>,
    overview: tokio::sync::Mutex<Option<(Instant, Arc<Value>)>>,
    templates: minijinja::Environment<'static>,
}

/// The status page's state: cheap to clone.
#[derive(Clone)]
pub struct StatusState(Arc<Inner>);

impl std::fmt::Debug for StatusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusState")
            .field("actions", &self.0.auth.enabled())
            .finish_non_exhaustive()
    }
}

fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        ("base.html", BASE_HTML),
        ("index.html", INDEX_HTML),
        ("runs.html", RUNS_HTML),
        ("run.html", RUN_HTML),
        ("login.html", LOGIN_HTML),
        ("error.html", ERROR_HTML),
    ] {
        // The templates are part of the build; a broken one fails the unit tests.
        if let Err(error) = env.add_template(name, source) {
            tracing::error!(template = name, %error, "Status page template does not parse");
        }
    }
    env
}

impl StatusState {
    /// The page over `config`.
    pub fn new(config: StatusConfig) -> Self {
        Self(Arc::new(Inner {
            store: config.store,
            jobs: config.jobs,
            clients: config.clients,
            leases: config.leases,
            credentials: config.credentials,
            clock: config.clock,
            auth: auth::Auth::new(config.admin_token),
            verifications: Mutex::new(BTreeMap::new()),
            overview: tokio::sync::Mutex::new(None),
            templates: templates(),
        }))
    }

    /// Whether actions are enabled (an admin token is configured).
    pub fn actions_enabled(&self) -> bool {
        self.0.auth.enabled()
    }

    /// The page's routes, for the admin server.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(|| async { redirect("/status") }))
            .route("/status", get(index))
            .route("/status/runs", get(runs_page))
            .route("/status/runs/{id}", get(run_page))
            .route("/status/runs/{id}/retry", post(retry_action))
            .route("/status/jobs/{name}/run", post(run_action))
            .route("/status/jobs/{name}/pause", post(pause_action))
            .route("/status/jobs/{name}/resume", post(resume_action))
            // The same actions for scripts, under the API (a bearer token answers JSON either
            // way).
            .route("/api/runs/{id}/retry", post(retry_action))
            .route("/api/jobs/{name}/run", post(run_action))
            .route("/api/jobs/{name}/pause", post(pause_action))
            .route("/api/jobs/{name}/resume", post(resume_action))
            .route("/status/login", get(login_page).post(login))
            .route("/status/logout", post(logout))
            .route("/status/static/status.js", get(script))
            .route("/status/static/status.css", get(style))
            .route("/api/jobs", get(api_jobs))
            .route("/api/runs", get(api_runs))
            .route("/api/runs/{id}", get(api_run))
            .route("/api/tokens", get(api_tokens))
            .route("/api/compliance", get(api_compliance))
            .fallback(not_found)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
            .layer(axum::middleware::from_fn(guard))
            .with_state(self.clone())
    }

    /// Verifies a file sink's manifest chain when the stream changed (checked every
    /// [`CHECK_EVERY`]) or [`VERIFY_EVERY`] has passed, until `shutdown`.
    pub async fn run_checks(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let state = self.clone();
            // Reading segments is file work: off the async threads.
            let _ = tokio::task::spawn_blocking(move || state.verify_streams()).await;
        }
    }

    fn verify_streams(&self) {
        let jobs = self.0.jobs.borrow().clone();
        for job in jobs.iter() {
            let Kind::AuditLog(settings) = &job.kind else {
                continue;
            };
            let crate::sinks::RecordSinkSettings::File(file) = &settings.sink else {
                continue;
            };
            let dir = file.dir.join(&job.name);
            // What changes when a batch is committed or a segment sealed: the journal's and
            // the manifest's sizes and times.
            let fingerprint: Vec<Option<(u64, Option<std::time::SystemTime>)>> = [
                crate::sinks::manifest::MANIFEST_FILE,
                crate::sinks::file::OPEN_JOURNAL,
            ]
            .iter()
            .map(|name| {
                std::fs::metadata(dir.join(name))
                    .ok()
                    .map(|m| (m.len(), m.modified().ok()))
            })
            .collect();
            if fingerprint.iter().all(Option::is_none) {
                continue;
            }
            let due = {
                let verifications = self
                    .0
                    .verifications
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                verifications.get(&job.name).is_none_or(|last| {
                    last.fingerprint != fingerprint || last.checked.elapsed() >= VERIFY_EVERY
                })
            };
            if !due {
                continue;
            }
            let (intact, segments, records, problems) =
                match crate::sinks::file::verify_stream_dir(&dir) {
                    Ok(report) => (
                        report.problems.is_empty(),
                        report.segments,
                        report.records + report.open_records,
                        report.problems.iter().map(|p| p.to_string()).collect(),
                    ),
                    Err(error) => (false, 0, 0, vec![error.to_string()]),
                };
            if !intact {
                tracing::warn!(job = %job.name, problems = ?problems, "The audit log's manifest chain does not verify");
            }
            self.0
                .verifications
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    job.name.clone(),
                    Verification {
                        at: self.0.clock.now(),
                        checked: Instant::now(),
                        fingerprint,
                        intact,
                        segments,
                        records,
                        problems,
                    },
                );
        }
    }
}

impl Inner {
    fn verifications_snapshot(&self) -> BTreeMap<String, Verification> {
        self.verifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The front page's data, shared for [`OVERVIEW_TTL`].
    async fn overview(&self) -> Result<Arc<Value>, StoreError> {
        let mut cached = self.overview.lock().await;
        if let Some((at, value)) = cached.as_ref()
            && at.elapsed() < OVERVIEW_TTL
        {
            return Ok(value.clone());
        }
        let now = self.clock.now();
        let counts: serde_json::Map<String, Value> = self
            .store
            .count_by_state()
            .await?
            .into_iter()
            .map(|(state, n)| (state.as_str().to_string(), json!(n)))
            .collect();
        let value = Arc::new(json!({
            "generated_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "jobs": self.jobs(now).await?,
            "tokens": self.tokens().await?,
            "compliance": self.compliance(now).await?,
            "counts": counts,
            "job_set": self.leases.job_set_report(),
        }));
        *cached = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    /// Forgets the cached front page (after an action, so the next view shows it).
    async fn invalidate(&self) {
        *self.overview.lock().await = None;
    }

    fn credential_of(&self, job: &str) -> Option<String> {
        self.jobs
            .borrow()
            .iter()
            .find(|j| j.name == job)
            .map(|j| j.credential.clone())
    }
}

/// A response the page gives for bad input or a refusal: an HTML page, or JSON under `/api/`
/// and for bearer callers.
#[derive(Debug)]
struct PageError {
    status: StatusCode,
    title: String,
    detail: String,
}

impl PageError {
    fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            title: title.into(),
            detail: detail.into(),
        }
    }

    fn store(error: StoreError) -> Self {
        tracing::warn!(%error, "The status page could not read the database");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database cannot be read",
            format!("{error}; see /readyz and the daemon's log"),
        )
    }
}

/// Whether the caller wants JSON: the `/api/` endpoints, and actions sent with a bearer token.
fn wants_json(path: &str, headers: &HeaderMap) -> bool {
    path.starts_with("/api/") || auth::bearer(headers).is_some()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

impl StatusState {
    fn render(&self, template: &str, headers: &HeaderMap, context: Value) -> Response {
        let csrf = self.0.auth.session_csrf(headers);
        let mut context = context;
        context["auth"] = json!({
            "enabled": self.0.auth.enabled(),
            "logged_in": csrf.is_some(),
            "csrf": csrf,
        });
        let rendered = self
            .0
            .templates
            .get_template(template)
            .and_then(|t| t.render(&context));
        match rendered {
            Ok(body) => html(StatusCode::OK, body),
            Err(error) => {
                tracing::error!(template, %error, "Could not render the status page");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the status page could not be rendered: {error}\n"),
                )
                    .into_response()
            }
        }
    }

    fn error_response(&self, error: PageError, path: &str, headers: &HeaderMap) -> Response {
        let mut response = if wants_json(path, headers) {
            (
                error.status,
                axum::Json(json!({
                    "error": error.detail,
                    "title": error.title,
                    "status": error.status.as_u16(),
                })),
            )
                .into_response()
        } else {
            let mut response = self.render(
                "error.html",
                headers,
                json!({
                    "status": error.status.as_u16(),
                    "reason": error.status.canonical_reason().unwrap_or(""),
                    "title": error.title,
                    "detail": error.detail,
                }),
            );
            *response.status_mut() = error.status;
            response
        };
        if error.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"asana-worker admin\""),
            );
        }
        response
    }
}

/// Headers every page gets, and the query-size limit.
async fn guard(request: Request, next: Next) -> Response {
    let oversized = request.uri().query().is_some_and(|q| q.len() > MAX_QUERY)
        || request.uri().path().len() > MAX_QUERY;
    let mut response = if oversized {
        let detail = format!(
            "the query is {} bytes long; the status page accepts at most {MAX_QUERY}: use fewer or shorter filters",
            request.uri().query().map_or(0, str::len)
        );
        if request.uri().path().starts_with("/api/") {
            (
                StatusCode::URI_TOO_LONG,
                axum::Json(json!({"error": detail, "status": 414})),
            )
                .into_response()
        } else {
            html(
                StatusCode::URI_TOO_LONG,
                format!(
                    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>414 Query too long</title><link rel=\"stylesheet\" href=\"/status/static/status.css\"></head><body><main><h1>414 Query too long</h1><p class=\"error\">{detail}</p><p><a href=\"/status\">Back to the status page</a></p></main></body></html>"
                ),
            )
        }
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLE,
    )
        .into_response()
}

async fn not_found(State(state): State<StatusState>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    state.error_response(
        PageError::new(
            StatusCode::NOT_FOUND,
            "No such page",
            format!(
                "nothing is served at {path}; the status page is at /status, the runs at /status/runs, the JSON at /api/jobs, /api/runs, /api/tokens and /api/compliance"
            ),
        ),
        &path,
        request.headers(),
    )
}

async fn index(State(state): State<StatusState>, headers: HeaderMap) -> Response {
    match state.0.overview().await {
        Ok(overview) => state.render(
            "index.html",
            &headers,
            json!({"page": "index", "overview": *overview}),
        ),
        Err(error) => state.error_response(PageError::store(error), "/status", &headers),
    }
}

async fn api_jobs(State(state): State<StatusState>, headers: HeaderMap) -> Response {
    match state.0.overview().await {
        Ok(overview) => axum::Json(json!({
            "generated_at": overview["generated_at"],
            "jobs": overview["jobs"],
        }))
        .into_response(),
        Err(error) => state.error_response(PageError::store(error), "/api/jobs", &headers),
    }
}

async fn api_tokens(State(state): State<StatusState>, headers: HeaderMap) -> Response {
    match state.0.overview().await {
        Ok(overview) => axum::Json(json!({
            "generated_at": overview["generated_at"],
            "tokens": overview["tokens"],
        }))
        .into_response(),
        Err(error) => state.error_response(PageError::store(error), "/api/tokens", &headers),
    }
}

async fn api_compliance(State(state): State<StatusState>, headers: HeaderMap) -> Response {
    match state.0.overview().await {
        Ok(overview) => axum::Json(json!({
            "generated_at": overview["generated_at"],
            "audit_logs": overview["compliance"]["audit_logs"],
            "exports": overview["compliance"]["exports"],
        }))
        .into_response(),
        Err(error) => state.error_response(PageError::store(error), "/api/compliance", &headers),
    }
}

/// A run listing's filter, as given in the query.
#[derive(Debug, Default)]
struct Filter {
    job: Option<String>,
    states: Vec<RunState>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: i64,
    /// The filter as given, to fill the form again.
    given: BTreeMap<&'static str, String>,
}

/// A time in a filter: RFC 3339 (`2026-05-01T10:00:00Z`), a date (`2026-05-01`, UTC
/// midnight) or an age (`90m`, `2h`, `7d`: that long before now).
fn parse_time(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    let age = humantime::parse_duration(text).ok()?;
    now.checked_sub_signed(chrono::Duration::from_std(age).ok()?)
}

fn parse_filter(query: Option<&str>, now: DateTime<Utc>) -> Result<Filter, PageError> {
    let bad = |detail: String| PageError::new(StatusCode::BAD_REQUEST, "Malformed filter", detail);
    let mut filter = Filter {
        limit: DEFAULT_RUNS,
        ..Filter::default()
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_ref() {
            "job" => {
                if value.len() > 200 || value.chars().any(char::is_control) {
                    return Err(bad(
                        "job must be a job's name (at most 200 characters, no control characters)"
                            .into(),
                    ));
                }
                filter.job = Some(value.to_string());
                filter.given.insert("job", value.to_string());
            }
            "state" => {
                for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let state = name.parse::<RunState>().map_err(|_| {
                        bad(format!(
                            "state {name:?} is not a run state; use one of: {}",
                            RunState::ALL.map(|s| s.as_str()).join(", ")
                        ))
                    })?;
                    if !filter.states.contains(&state) {
                        filter.states.push(state);
                    }
                }
                filter.given.insert(
                    "state",
                    filter
                        .states
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            "since" | "until" => {
                let time = parse_time(value, now).ok_or_else(|| {
                    bad(format!(
                        "{key} {value:?} is not a time; use RFC 3339 (2026-05-01T10:00:00Z), a date (2026-05-01) or an age (90m, 2h, 7d)"
                    ))
                })?;
                if key == "since" {
                    filter.since = Some(time);
                    filter.given.insert("since", value.to_string());
                } else {
                    filter.until = Some(time);
                    filter.given.insert("until", value.to_string());
                }
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_RUNS).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "limit {value:?} must be a whole number from 1 to {MAX_RUNS}"
                        ))
                    })?;
                filter.given.insert("limit", value.to_string());
            }
            other => {
                return Err(bad(format!(
                    "unknown filter {other:?}; the runs are filtered by job, state, since, until and limit"
                )));
            }
        }
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        return Err(bad(format!(
            "since ({}) must be before until ({})",
            since.to_rfc3339(),
            until.to_rfc3339()
        )));
    }
    Ok(filter)
}

impl StatusState {
    async fn list_runs(&self, query: Option<&str>) -> Result<(Filter, Vec<Value>), PageError> {
        let now = self.0.clock.now();
        let filter = parse_filter(query, now)?;
        let runs = self
            .0
            .store
            .list_runs(&RunFilter {
                job_name: filter.job.clone(),
                states: filter.states.clone(),
                limit: filter.limit,
                created_from: filter.since,
                created_before: filter.until,
            })
            .await
            .map_err(PageError::store)?;
        let rows = runs
            .iter()
            .map(|run| view::run_json(run, now, self.0.credential_of(&run.job_name).as_deref()))
            .collect();
        Ok((filter, rows))
    }

    async fn find_run(&self, id: &str) -> Result<Value, PageError> {
        let parsed = uuid::Uuid::parse_str(id).map_err(|_| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                "Not a run id",
                format!(
                    "{:?} is not a run id (a UUID such as 0f8e…); the runs are listed at /status/runs",
                    id.chars().take(80).collect::<String>()
                ),
            )
        })?;
        let run = self
            .0
            .store
            .get_run(parsed)
            .await
            .map_err(PageError::store)?
            .ok_or_else(|| {
                PageError::new(
                    StatusCode::NOT_FOUND,
                    "No such run",
                    format!(
                        "there is no run {parsed}: it never existed or was pruned (worker.history_retention_days); the runs are listed at /status/runs"
                    ),
                )
            })?;
        let now = self.0.clock.now();
        let mut value = view::run_json(&run, now, self.0.credential_of(&run.job_name).as_deref());
        value["log"] = json!(crate::telemetry::run_logs::lines(run.id));
        value["log_kept"] = json!(crate::telemetry::run_logs::enabled());
        Ok(value)
    }
}

async fn runs_page(State(state): State<StatusState>, request: Request) -> Response {
    let headers = request.headers().clone();
    match state.list_runs(request.uri().query()).await {
        Ok((filter, runs)) => {
            let jobs: Vec<String> = state
                .0
                .jobs
                .borrow()
                .iter()
                .map(|j| j.name.clone())
                .collect();
            state.render(
                "runs.html",
                &headers,
                json!({
                    "page": "runs",
                    "runs": runs,
                    "filter": filter.given,
                    "limit": filter.limit,
                    "jobs": jobs,
                    "states": RunState::ALL.map(|s| s.as_str()),
                    "generated_at": state.0.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }),
            )
        }
        Err(error) => state.error_response(error, "/status/runs", &headers),
    }
}

async fn api_runs(State(state): State<StatusState>, request: Request) -> Response {
    let headers = request.headers().clone();
    match state.list_runs(request.uri().query()).await {
        Ok((filter, runs)) => axum::Json(json!({
            "filter": filter.given,
            "limit": filter.limit,
            "runs": runs,
        }))
        .into_response(),
        Err(error) => state.error_response(error, "/api/runs", &headers),
    }
}

async fn run_page(
    State(state): State<StatusState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match state.find_run(&id).await {
        Ok(run) => state.render("run.html", &headers, json!({"page": "run", "run": run})),
        Err(error) => state.error_response(error, "/status/runs/", &headers),
    }
}

async fn api_run(
    State(state): State<StatusState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match state.find_run(&id).await {
        Ok(run) => axum::Json(run).into_response(),
        Err(error) => state.error_response(error, "/api/runs/", &headers),
    }
}

/// The fields of a form body.
fn form(body: &Bytes) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// What an action did, for its answer: JSON to a bearer caller, a redirect to a browser.
struct Done {
    message: String,
    run: Option<Value>,
    then: String,
    /// The status a bearer caller gets: 202 when a run was enqueued, 200 otherwise.
    status: StatusCode,
}

impl StatusState {
    fn authorize(
        &self,
        headers: &HeaderMap,
        fields: &BTreeMap<String, String>,
        path: &str,
    ) -> Result<auth::Actor, Box<Response>> {
        self.0
            .auth
            .authorize(headers, fields.get("csrf").map(String::as_str))
            .map_err(|refusal| {
                tracing::warn!(path, refusal = ?refusal, "Refused a status page action");
                Box::new(self.error_response(
                    PageError::new(refusal.status(), "Action refused", refusal.message()),
                    path,
                    headers,
                ))
            })
    }

    fn job_known(&self, name: &str) -> Result<(), PageError> {
        let jobs = self.0.jobs.borrow().clone();
        if jobs.iter().any(|j| j.name == name) {
            return Ok(());
        }
        Err(PageError::new(
            StatusCode::NOT_FOUND,
            "No such job",
            format!(
                "no job named {:?}; known jobs: {}",
                name.chars().take(200).collect::<String>(),
                jobs.iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    async fn act(
        &self,
        headers: HeaderMap,
        body: Bytes,
        path: String,
        action: impl AsyncFnOnce(&StatusState, &auth::Actor) -> Result<Done, PageError>,
    ) -> Response {
        let fields = form(&body);
        let actor = match self.authorize(&headers, &fields, &path) {
            Ok(actor) => actor,
            Err(response) => return *response,
        };
        match action(self, &actor).await {
            Ok(done) => {
                self.0.invalidate().await;
                tracing::info!(path = %path, by = actor.label(), "{}", done.message);
                if actor == auth::Actor::Bearer {
                    (
                        done.status,
                        axum::Json(json!({"ok": true, "message": done.message, "run": done.run})),
                    )
                        .into_response()
                } else {
                    redirect(&done.then)
                }
            }
            Err(error) => self.error_response(error, &path, &headers),
        }
    }
}

impl StatusState {
    /// Enqueues a manual run of `name`, as `asana-worker jobs run NAME` does.
    async fn enqueue_now(&self, name: &str, message: String) -> Result<Done, PageError> {
        self.job_known(name)?;
        let jobs = self.0.jobs.borrow().clone();
        let now = self.0.clock.now();
        let run = crate::jobs::run_now(&*self.0.store, &jobs, name, now)
            .await
            .map_err(|error| match error {
                crate::jobs::RunNowError::Store(error) => PageError::store(error),
                other => PageError::new(StatusCode::CONFLICT, "Not enqueued", other.to_string()),
            })?;
        Ok(Done {
            message: format!("{message}: run {}", run.id),
            then: format!("/status/runs/{}", run.id),
            run: Some(view::run_json(&run, now, Some(&run.job_name))),
            status: StatusCode::ACCEPTED,
        })
    }
}

async fn run_action(
    State(state): State<StatusState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/status/jobs/{name}/run");
    state
        .act(headers, body, path, async move |state, _actor| {
            state
                .enqueue_now(&name, format!("Enqueued a run of {name}"))
                .await
        })
        .await
}

/// The states a run can be retried from: it ended without doing its work.
const RETRIABLE: [RunState; 4] = [
    RunState::Dead,
    RunState::Failed,
    RunState::NeedsReauth,
    RunState::Cancelled,
];

async fn retry_action(
    State(state): State<StatusState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/status/runs/{id}/retry");
    state
        .act(headers, body, path, async move |state, _actor| {
            let run = state.find_run(&id).await?;
            let run_state = run["state"].as_str().unwrap_or_default();
            if !RETRIABLE.iter().any(|s| s.as_str() == run_state) {
                return Err(PageError::new(
                    StatusCode::CONFLICT,
                    "Not retried",
                    format!(
                        "run {id} is {run_state}; only a dead, failed, needs_reauth or cancelled run is retried (run the job now instead)"
                    ),
                ));
            }
            let job = run["job_name"].as_str().unwrap_or_default();
            // A new manual run of the job: the run that ended badly stays as it ended, for
            // the record.
            state
                .enqueue_now(job, format!("Retried run {id} of {job}"))
                .await
        })
        .await
}

async fn pause_action(
    State(state): State<StatusState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/status/jobs/{name}/pause");
    state
        .act(headers, body, path, async move |state, actor| {
            state.job_known(&name)?;
            let changed = state
                .0
                .store
                .pause_job(&name, actor.label(), state.0.clock.now())
                .await
                .map_err(PageError::store)?;
            Ok(Done {
                message: if changed {
                    format!(
                        "Paused job {name}: its fires are recorded as skipped until it is resumed"
                    )
                } else {
                    format!("Job {name} was already paused")
                },
                run: None,
                then: "/status".into(),
                status: StatusCode::OK,
            })
        })
        .await
}

async fn resume_action(
    State(state): State<StatusState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/status/jobs/{name}/resume");
    state
        .act(headers, body, path, async move |state, _actor| {
            state.job_known(&name)?;
            let changed = state
                .0
                .store
                .resume_job(&name)
                .await
                .map_err(PageError::store)?;
            Ok(Done {
                message: if changed {
                    format!("Resumed job {name}: its next fire runs")
                } else {
                    format!("Job {name} was not paused")
                },
                run: None,
                then: "/status".into(),
                status: StatusCode::OK,
            })
        })
        .await
}

fn set_cookie(response: &mut Response, cookie: String) {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

async fn login_page(State(state): State<StatusState>, headers: HeaderMap) -> Response {
    let csrf = auth::random_token();
    let mut response = state.render(
        "login.html",
        &headers,
        json!({"page": "login", "login_csrf": csrf, "failed": false}),
    );
    set_cookie(
        &mut response,
        format!(
            "{}={csrf}; HttpOnly; SameSite=Strict; Path=/status/login; Max-Age=3600",
            auth::LOGIN_COOKIE
        ),
    );
    response
}

async fn login(State(state): State<StatusState>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    if !state.0.auth.enabled() {
        return state.error_response(
            PageError::new(
                StatusCode::FORBIDDEN,
                "Actions are disabled",
                auth::Refusal::Disabled.message(),
            ),
            "/status/login",
            &headers,
        );
    }
    let expected = auth::cookie(&headers, auth::LOGIN_COOKIE);
    let given = fields.get("csrf");
    let csrf_ok = matches!((expected, given), (Some(e), Some(g)) if auth::tokens_equal(&e, g));
    if !csrf_ok {
        return state.error_response(
            PageError::new(
                StatusCode::FORBIDDEN,
                "Login refused",
                "the login form's CSRF token is missing or stale; open /status/login again",
            ),
            "/status/login",
            &headers,
        );
    }
    let token = fields.get("token").map(String::as_str).unwrap_or("");
    if !state.0.auth.token_matches(token) {
        tracing::warn!("A status page login with a wrong admin token");
        let csrf = auth::random_token();
        let mut response = state.render(
            "login.html",
            &headers,
            json!({"page": "login", "login_csrf": csrf, "failed": true}),
        );
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        set_cookie(
            &mut response,
            format!(
                "{}={csrf}; HttpOnly; SameSite=Strict; Path=/status/login; Max-Age=3600",
                auth::LOGIN_COOKIE
            ),
        );
        return response;
    }
    let (id, _csrf) = state.0.auth.sessions().start();
    tracing::info!("An admin logged in on the status page");
    let mut response = redirect("/status");
    set_cookie(
        &mut response,
        format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/status; Max-Age={}",
            auth::SESSION_COOKIE,
            auth::SESSION_TTL.as_secs()
        ),
    );
    set_cookie(
        &mut response,
        format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/status/login; Max-Age=0",
            auth::LOGIN_COOKIE
        ),
    );
    response
}

async fn logout(State(state): State<StatusState>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    if let Err(response) = state.authorize(&headers, &fields, "/status/logout") {
        return *response;
    }
    if let Some(id) = auth::cookie(&headers, auth::SESSION_COOKIE) {
        state.0.auth.sessions().end(&id);
    }
    let mut response = redirect("/status");
    set_cookie(
        &mut response,
        format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/status; Max-Age=0",
            auth::SESSION_COOKIE
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes_what_it_shows() {
        let env = templates();
        for name in [
            "base.html",
            "index.html",
            "runs.html",
            "run.html",
            "login.html",
            "error.html",
        ] {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let page = env
            .get_template("error.html")
            .unwrap()
            .render(json!({
                "auth": {"enabled": false},
                "status": 404,
                "title": "<b>bold</b>",
                "detail": "x\" onmouseover=\"alert(1)",
            }))
            .unwrap();
        assert!(
            page.contains("&lt;b&gt;bold&lt;&#x2f;b&gt;")
                || page.contains("&lt;b&gt;bold&lt;/b&gt;"),
            "{page}"
        );
        assert!(!page.contains("\" onmouseover"), "{page}");
    }

    #[test]
    fn filters_are_parsed_or_refused_with_the_reason() {
        let now = DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let filter = parse_filter(
            Some("job=audit-log&state=dead,failed&since=2h&until=2026-05-01T11:30:00Z&limit=20"),
            now,
        )
        .unwrap();
        assert_eq!(filter.job.as_deref(), Some("audit-log"));
        assert_eq!(filter.states, [RunState::Dead, RunState::Failed]);
        assert_eq!(
            filter.since.unwrap().to_rfc3339(),
            "2026-05-01T10:00:00+00:00"
        );
        assert_eq!(filter.limit, 20);
        assert_eq!(parse_filter(None, now).unwrap().limit, DEFAULT_RUNS);
        for (query, says) in [
            ("state=done", "is not a run state"),
            ("limit=501", "from 1 to 500"),
            ("since=soon", "is not a time"),
            ("sort=asc", "unknown filter"),
        ] {
            let error = parse_filter(Some(query), now).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(error.detail.contains(says), "{query}: {}", error.detail);
        }
    }
}
