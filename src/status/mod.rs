//! The status page and its JSON API, served by the admin server (same listener, loopback by
//! default): what the daemon is doing at a glance. `GET /status` is server-rendered HTML that
//! refreshes its content every few seconds with a small script of its own (no CDN);
//! `/api/jobs`, `/api/runs`, `/api/runs/{id}`, `/api/tokens` and `/api/compliance` return the
//! same data as JSON
//! for scripts (docs/operations.md, "Status page").
//!
//! Nothing here shows a secret: tokens are named, never shown; every value reaches the HTML
//! through the templates' escaping. Bad input (an unknown run id, a malformed filter, an
//! oversized limit) is a 4xx with a message, as JSON for the API and as a page for the HTML.
//!
//! Layer 6 (beside `daemon`): it reads the job set, the store, the credentials' budgets and
//! leases, and hands the admin server a finished `Router`.

mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::credentials::ClientPool;
use crate::jobs::Kind;
use crate::scheduler::JobSet;
use crate::store::{Run, RunFilter, RunState, Store};
use crate::worker::CredentialLeases;

/// The most runs one request may list.
pub const MAX_RUNS: i64 = 500;

/// Runs of a job shown in its sparkline.
const RECENT_RUNS: i64 = 20;

/// What the status page reads.
#[derive(Debug, Clone)]
pub struct StatusSource {
    /// The daemon's store.
    pub store: Arc<dyn Store>,
    /// The job set in force.
    pub jobs: watch::Receiver<JobSet<Kind>>,
    /// The credentials' clients (their budgets) and states.
    pub clients: Arc<ClientPool>,
    /// Which credentials this process holds, and the replicas' job sets.
    pub leases: Arc<CredentialLeases>,
    /// Wall time.
    pub clock: SharedClock,
    /// Each credential's tier limit per minute, from its settings.
    pub limits: BTreeMap<String, u32>,
    /// The admin token's SHA-256 (`admin.token_file`); None: no actions.
    pub admin_token_sha256: Option<[u8; 32]>,
}

/// The SHA-256 of an admin token, as [`StatusSource::admin_token_sha256`] holds it: requests
/// are checked by comparing digests, so the comparison reveals nothing about the token.
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.trim().as_bytes()).into()
}

/// The routes of the status page and its API.
pub fn router(source: StatusSource) -> Router {
    Router::new()
        .route("/status", get(page))
        .route("/status/runs/{id}", get(run_page))
        .route("/status/script.js", get(script))
        .route("/api/jobs", get(api_jobs))
        .route("/api/runs", get(api_runs))
        .route("/api/runs/{id}", get(api_run))
        .route("/api/tokens", get(api_tokens))
        .route("/api/compliance", get(api_compliance))
        .route("/api/jobs/{name}/run", axum::routing::post(api_run_now))
        .route("/api/runs/{id}/retry", axum::routing::post(api_retry))
        .with_state(source)
}

/// A request the page or the API cannot answer, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// A filter or id that does not parse.
    #[error("{0}")]
    BadRequest(String),
    /// No such run.
    #[error("no run {0}; it may have been pruned (worker.history_retention_days)")]
    NotFound(String),
    /// No such job in this process's job set.
    #[error("no job {0:?} in this replica's job files")]
    NoJob(String),
    /// Actions need the admin token, and none is configured.
    #[error(
        "actions are disabled: set admin.token_file to a file holding a token, then send it as `Authorization: Bearer TOKEN`"
    )]
    ActionsDisabled,
    /// The request did not carry the admin token.
    #[error(
        "this action needs the admin token: send `Authorization: Bearer TOKEN` (admin.token_file)"
    )]
    Unauthorized,
    /// The action does not apply to the run's state.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("the database could not be read: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl StatusError {
    fn status(&self) -> StatusCode {
        match self {
            StatusError::BadRequest(_) => StatusCode::BAD_REQUEST,
            StatusError::NotFound(_) | StatusError::NoJob(_) => StatusCode::NOT_FOUND,
            StatusError::ActionsDisabled => StatusCode::FORBIDDEN,
            StatusError::Unauthorized => StatusCode::UNAUTHORIZED,
            StatusError::Conflict(_) => StatusCode::CONFLICT,
            StatusError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn json(&self) -> Response {
        (
            self.status(),
            axum::Json(json!({"error": self.to_string()})),
        )
            .into_response()
    }

    fn html(&self) -> Response {
        (
            self.status(),
            Html(view::error_page(self.status().as_u16(), &self.to_string())),
        )
            .into_response()
    }
}

/// The run filters of `/api/runs` and the page's history.
#[derive(Debug, Default, Deserialize)]
pub struct RunQuery {
    /// Only this job.
    pub job: Option<String>,
    /// Only this state (`queued`, `running`, `completed`, `failed`, `dead`, …).
    pub state: Option<String>,
    /// Created at or after this RFC 3339 time.
    pub from: Option<String>,
    /// Created before this RFC 3339 time.
    pub before: Option<String>,
    /// At most this many (1 to 500; 50 by default).
    pub limit: Option<String>,
    /// With `1`, only the page's content (what the refresh script fetches).
    pub partial: Option<String>,
}

impl RunQuery {
    fn filter(&self) -> Result<RunFilter, StatusError> {
        let time = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| {
                    DateTime::parse_from_rfc3339(v)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            StatusError::BadRequest(format!(
                                "{name}={v:?} is not an RFC 3339 time ({e}); e.g. {name}=2026-12-05T08:00:00Z"
                            ))
                        })
                })
                .transpose()
        };
        let limit = match self.limit.as_deref().filter(|v| !v.is_empty()) {
            None => 50,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (1..=MAX_RUNS).contains(&n) => n,
                _ => {
                    return Err(StatusError::BadRequest(format!(
                        "limit={text:?} must be a number from 1 to {MAX_RUNS}"
                    )));
                }
            },
        };
        let states = match self.state.as_deref().filter(|v| !v.is_empty()) {
            None => Vec::new(),
            Some(text) => vec![text.parse::<RunState>().map_err(|_| {
                StatusError::BadRequest(format!(
                    "state={text:?} is not a run state; one of queued, retrying, running, completed, failed, dead, needs_reauth, cancelled, skipped"
                ))
            })?],
        };
        if let Some(job) = &self.job
            && job.len() > 200
        {
            return Err(StatusError::BadRequest(
                "job names are at most 200 characters".into(),
            ));
        }
        Ok(RunFilter {
            job_name: self.job.clone().filter(|j| !j.is_empty()),
            states,
            created_from: time("from", &self.from)?,
            created_before: time("before", &self.before)?,
            limit,
        })
    }
}

fn parse_run_id(id: &str) -> Result<uuid::Uuid, StatusError> {
    uuid::Uuid::parse_str(id).map_err(|_| {
        StatusError::BadRequest(format!(
            "{:?} is not a run id (a UUID, as `asana-worker runs list` shows)",
            id.chars().take(80).collect::<String>()
        ))
    })
}

/// A run as the page and the API show it.
fn run_json(run: &Run, now: DateTime<Utc>) -> Value {
    let duration = run.started_at.map(|started| {
        (run.finished_at.unwrap_or(now) - started).num_milliseconds() as f64 / 1000.0
    });
    json!({
        "id": run.id,
        "job": run.job_name,
        "kind": run.kind,
        "trigger": run.trigger.as_str(),
        "state": run.state.as_str(),
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "run_after": run.run_after,
        "fire_time": run.fire_time,
        "duration_secs": duration,
        "rescues": run.rescues,
        "last_error": run.last_error,
        "progress": run.progress,
    })
}

impl StatusSource {
    /// Every job of the job set with its schedule, next fire, last outcome, recent runs and
    /// the current run's progress.
    pub async fn jobs(&self) -> Result<Value, StatusError> {
        let now = self.clock.now();
        let jobs = self.jobs.borrow().clone();
        let schedules = self.store.list_schedules().await?;
        let summaries = self.store.job_summaries().await?;
        let mut out = Vec::new();
        for job in jobs.iter() {
            let recent = self
                .store
                .list_runs(&RunFilter {
                    job_name: Some(job.name.clone()),
                    limit: RECENT_RUNS,
                    ..RunFilter::default()
                })
                .await?;
            let running = recent.iter().find(|r| r.state == RunState::Running);
            let summary = summaries.iter().find(|s| s.job_name == job.name);
            let next = crate::scheduler::next_fire(job, &schedules, now).filter(|_| job.enabled);
            out.push(json!({
                "name": job.name,
                "kind": job.kind.name(),
                "credential": job.credential,
                "schedule": view::schedule_in_words(&job.schedule),
                "timezone": job.timezone.name(),
                "enabled": job.enabled,
                "next_fire_at": next,
                "next_fire_local": next.map(|t| t.with_timezone(&job.timezone).format("%Y-%m-%d %H:%M %Z").to_string()),
                "last_state": summary.and_then(|s| s.last_state.map(|st| st.as_str())),
                "last_finished_at": summary.and_then(|s| s.last_finished_at),
                "last_success_at": summary.and_then(|s| s.last_success_at),
                "running": running.map(|r| run_json(r, now)),
                "recent": recent.iter().rev().map(|r| run_json(r, now)).collect::<Vec<_>>(),
            }));
        }
        Ok(Value::Array(out))
    }

    /// Runs matching `query`, newest first.
    pub async fn runs(&self, query: &RunQuery) -> Result<Value, StatusError> {
        let now = self.clock.now();
        let runs = self.store.list_runs(&query.filter()?).await?;
        Ok(Value::Array(
            runs.iter().map(|r| run_json(r, now)).collect(),
        ))
    }

    /// One run.
    pub async fn run(&self, id: &str) -> Result<Value, StatusError> {
        let run_id = parse_run_id(id)?;
        let run = self
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| StatusError::NotFound(run_id.to_string()))?;
        Ok(run_json(&run, self.clock.now()))
    }

    /// What compliance teams check, from the jobs' checkpoints: per audit-log job the newest
    /// event delivered, the lag, the headroom before Asana's 90-day retention, the batches
    /// delivered, lost windows and the sink; per export job its current or last export and
    /// the installed file with its sha256. Nothing here is read from Asana.
    pub async fn compliance(&self) -> Result<Value, StatusError> {
        use crate::jobs::audit_log::{CURSOR_KEY, Cursor, RETENTION};
        use crate::jobs::export::{CHECKPOINT_KEY, ExportState};
        let now = self.clock.now();
        let jobs = self.jobs.borrow().clone();
        let mut audit = Vec::new();
        let mut exports = Vec::new();
        for job in jobs.iter() {
            match job.kind.name() {
                "audit_log" => {
                    let stored = self.store.get_checkpoint(&job.name, CURSOR_KEY).await?;
                    let cursor = stored.and_then(|v| serde_json::from_value::<Cursor>(v).ok());
                    audit.push(match cursor {
                        None => json!({"job": job.name, "started": false}),
                        Some(cursor) => {
                            // The tail's position, the newest event the overlap window
                            // remembers, or the newest the last completed run reported (after
                            // a backfill the tail has not moved yet).
                            let reported = self
                                .store
                                .list_runs(&RunFilter {
                                    job_name: Some(job.name.clone()),
                                    states: vec![RunState::Completed],
                                    limit: 1,
                                    ..RunFilter::default()
                                })
                                .await?
                                .first()
                                .and_then(|run| run.progress["newest"].as_str().map(str::to_string))
                                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                                .map(|t| t.with_timezone(&Utc));
                            let newest = cursor
                                .tail
                                .newest
                                .into_iter()
                                .chain(cursor.recent.iter().map(|seen| seen.at))
                                .chain(reported)
                                .max();
                            json!({
                                "job": job.name,
                                "started": true,
                                "newest_event_at": newest,
                                "lag_secs": newest.map(|t| (now - t).num_seconds()),
                                "retention_headroom_secs": (cursor.oldest_needed() - (now - RETENTION)).num_seconds(),
                                "batches": cursor.sequence,
                                "backfill_slices_left": cursor.backfill.len(),
                                "last_delivery_at": cursor.last_delivery_at,
                                "lost_windows": cursor.lost.len(),
                                "sink": cursor.sink,
                                "verify": format!("asana-worker verify --job {}", job.name),
                            })
                        }
                    });
                }
                "org_export" | "graph_export" | "resource_export" => {
                    let stored = self.store.get_checkpoint(&job.name, CHECKPOINT_KEY).await?;
                    let state = stored.and_then(|v| serde_json::from_value::<ExportState>(v).ok());
                    exports.push(json!({
                        "job": job.name,
                        "kind": job.kind.name(),
                        "export_gid": state.as_ref().map(|s| s.export_gid.clone()),
                        "phase": state.as_ref().map(|s| s.phase),
                        "requested_at": state.as_ref().map(|s| s.created_at),
                        "file": state.as_ref().and_then(|s| s.file.clone()),
                        "sha256": state.as_ref().and_then(|s| s.sha256.clone()),
                        "bytes": state.as_ref().map(|s| s.partial_offset),
                        "total_bytes": state.as_ref().and_then(|s| s.total_bytes),
                        "error": state.as_ref().and_then(|s| s.error.clone()),
                    }));
                }
                _ => {}
            }
        }
        Ok(json!({"audit_log": audit, "exports": exports}))
    }

    /// Each credential the job set uses: its state, whether this process runs it, its limit
    /// and the requests per window of the last hour, 429 pauses, waiting callers and export
    /// slots.
    pub async fn tokens(&self) -> Result<Value, StatusError> {
        let jobs = self.jobs.borrow().clone();
        let mut names: Vec<String> = jobs.iter().map(|j| j.credential.clone()).collect();
        names.extend(self.limits.keys().cloned());
        names.sort();
        names.dedup();
        let held = self.leases.held();
        let sharing = self.leases.is_sharing();
        let rows: Vec<Value> = names
            .iter()
            .map(|name| {
                let budget = self.clients.budget_in_use(name);
                let history: Vec<Value> = budget
                    .as_ref()
                    .map(|b| {
                        b.history()
                            .into_iter()
                            .map(|(ago, n)| json!({"started_secs_ago": ago.as_secs(), "requests": n}))
                            .collect()
                    })
                    .unwrap_or_default();
                let stats = budget.as_ref().map(|b| b.stats());
                json!({
                    "name": name,
                    "state": self.clients.monitor().state(name).unwrap_or_else(|| "unknown".into()),
                    "runs_here": !sharing || held.contains(name),
                    "limit_per_minute": budget.as_ref().map(|b| b.config().limit()).or_else(|| self.limits.get(name).copied()),
                    "effective_limit": budget.as_ref().map(|b| b.effective_limit()),
                    "history": history,
                    "granted": stats.as_ref().map(|s| s.granted),
                    "pauses_for_429": stats.as_ref().map(|s| s.cooldowns),
                    "wait_secs_total": stats.as_ref().map(|s| s.total_wait.as_secs_f64()),
                    "waiting": budget.as_ref().map(|b| b.waiting()),
                    "export_slots_in_use": budget.as_ref().map(|b| b.config().export_slots as usize - b.export_slots_free()),
                    "export_slots": budget.as_ref().map(|b| b.config().export_slots),
                })
            })
            .collect();
        Ok(Value::Array(rows))
    }
}

impl StatusSource {
    /// Checks the request's bearer token against the admin token.
    fn authorize(&self, headers: &axum::http::HeaderMap) -> Result<(), StatusError> {
        let expected = self
            .admin_token_sha256
            .ok_or(StatusError::ActionsDisabled)?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(StatusError::Unauthorized)?;
        if token_digest(given) == expected {
            Ok(())
        } else {
            Err(StatusError::Unauthorized)
        }
    }

    /// Enqueues a manual run of `name`, as `asana-worker jobs run NAME` does.
    async fn run_now(&self, name: &str) -> Result<Value, StatusError> {
        let now = self.clock.now();
        let job = self
            .jobs
            .borrow()
            .iter()
            .find(|job| job.name == name)
            .cloned()
            .ok_or_else(|| StatusError::NoJob(name.chars().take(200).collect()))?;
        let run = crate::scheduler::manual_run(&job, now);
        match self.store.enqueue(run, now).await? {
            crate::store::Enqueued::Inserted(run) => {
                tracing::info!(job = %job.name, run_id = %run.id, "Run enqueued from the status page");
                Ok(run_json(&run, now))
            }
            crate::store::Enqueued::Duplicate => Err(StatusError::Conflict(
                "a run with the same key exists already".into(),
            )),
        }
    }
}

async fn api_run_now(
    State(source): State<StatusSource>,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let result = async {
        source.authorize(&headers)?;
        source.run_now(&name).await
    }
    .await;
    match result {
        Ok(run) => (StatusCode::ACCEPTED, axum::Json(run)).into_response(),
        Err(error) => error.json(),
    }
}

async fn api_retry(
    State(source): State<StatusSource>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        source.authorize(&headers)?;
        let run = source.run(&id).await?;
        let state = run["state"].as_str().unwrap_or_default();
        if !matches!(state, "dead" | "failed" | "needs_reauth" | "cancelled") {
            return Err(StatusError::Conflict(format!(
                "run {id} is {state}; only a dead, failed, needs_reauth or cancelled run is retried"
            )));
        }
        source
            .run_now(run["job"].as_str().unwrap_or_default())
            .await
    }
    .await;
    match result {
        Ok(run) => (StatusCode::ACCEPTED, axum::Json(run)).into_response(),
        Err(error) => error.json(),
    }
}

async fn api_compliance(State(source): State<StatusSource>) -> Response {
    match source.compliance().await {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.json(),
    }
}

async fn api_jobs(State(source): State<StatusSource>) -> Response {
    match source.jobs().await {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.json(),
    }
}

async fn api_runs(
    State(source): State<StatusSource>,
    query: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return StatusError::BadRequest("the query string does not parse".into()).json();
    };
    match source.runs(&query).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.json(),
    }
}

async fn api_run(State(source): State<StatusSource>, Path(id): Path<String>) -> Response {
    match source.run(&id).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.json(),
    }
}

async fn api_tokens(State(source): State<StatusSource>) -> Response {
    match source.tokens().await {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.json(),
    }
}

async fn page(
    State(source): State<StatusSource>,
    query: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return StatusError::BadRequest("the query string does not parse".into()).html();
    };
    let data = async {
        Ok::<_, StatusError>((
            source.jobs().await?,
            source.tokens().await?,
            source.runs(&query).await?,
            source.compliance().await?,
        ))
    }
    .await;
    match data {
        Ok((jobs, tokens, runs, compliance)) => {
            let partial = query.partial.as_deref() == Some("1");
            let html = view::status_page(
                &jobs,
                &tokens,
                &runs,
                &compliance,
                &query,
                &source.leases.job_set_report(),
                source.clock.now(),
                partial,
                source.admin_token_sha256.is_some(),
            );
            Html(html).into_response()
        }
        Err(error) => error.html(),
    }
}

async fn run_page(State(source): State<StatusSource>, Path(id): Path<String>) -> Response {
    match source.run(&id).await {
        Ok(run) => Html(view::run_page(&run, source.clock.now())).into_response(),
        Err(error) => error.html(),
    }
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        view::SCRIPT,
    )
        .into_response()
}
