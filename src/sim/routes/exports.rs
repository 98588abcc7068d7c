//! Organization, graph and resource exports, `/jobs/{gid}`, and the download of export files.
//!
//! - `POST /organization_exports` and `GET /organization_exports/{gid}`: `state` goes
//!   `pending → started → finished | error` on simulated time (`timing.export_pending_secs`, then
//!   `timing.export_running_secs`, then as long as writing the file takes).
//! - `POST /exports/graph` and `POST /exports/resource` create *jobs*, read with `GET /jobs/{gid}`:
//!   `status` goes `not_started → in_progress → succeeded | failed`.
//! - A finished export's file is gzipped JSON (organization, graph) or gzipped JSON Lines
//!   (resource), built from a snapshot of the world by the background task when the export ends,
//!   written into a temporary directory and served with HTTP Range support from
//!   `{origin}/_sim/downloads/{signed-token}`. Each GET mints a fresh URL that expires after
//!   `timing.download_url_ttl_secs`; an expired one gets S3's 403 XML body, so clients learn to
//!   re-GET the export rather than persist URLs.
//! - Limits: at most `limits.concurrent_jobs` exports in progress per *user* (429 with
//!   `Retry-After` until the earliest one ends), and one resource export in progress per
//!   workspace (403).
//!
//! Admin routes for tests (no token): `POST /_sim/exports/fail_next {"count":N}` makes the next N
//! exports end in `error`/`failed`; `POST /_sim/exports/size {"bytes":N}` pads later files to
//! about N compressed bytes (streamed into the encoder, never held in memory);
//! `GET /_sim/exports[/{gid}]` shows state, size and sha256 of the files (the list also counts
//! downloads served, ranged, refused as expired and cut); `POST /_sim/downloads/expire
//! {"abort_in_flight":bool,"next":N}` expires every download URL handed out so far, optionally
//! cuts the downloads in flight and makes the next N URLs born expired, so a test can make a URL
//! expire in the middle of a job's download.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path as FsPath;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Json, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeFile;

use super::Params;
use crate::sim::config::TokenKind;
use crate::sim::input;
use crate::sim::limits::RejectCause;
use crate::sim::model::exports::{
    Export, ExportContent, ExportFile, ExportKind, ExportRegistry, Phase, ResourceParameter,
};
use crate::sim::model::world::render::render;
use crate::sim::model::world::{Task, World};
use crate::sim::state::{Caller, SharedState, SimState};
use crate::sim::wire::{
    self, ApiError, ApiResult, Detail, FieldTree, OFFSET_EXPIRED_MESSAGE, timestamp,
};

/// Scope under which download tokens are signed (distinct from any pagination scope).
const DOWNLOAD_SCOPE: &str = "export-download";

/// Separates the export gid from the URL generation in a download token's key.
const GENERATION_SEPARATOR: char = '~';

/// Resource export files may be downloaded for this long after completion (Asana: 30 days).
const RESOURCE_FILE_TTL_DAYS: i64 = 30;

/// Filter keys a resource export accepts, from the spec's `ResourceExportFilters`.
const RESOURCE_FILTERS: &[&str] = &[
    "assigned_by.any",
    "assignee.any",
    "commented_on_by.any",
    "created_at.after",
    "created_at.before",
    "created_by.any",
    "followers.any",
    "liked_by.any",
    "modified_at.after",
    "modified_at.before",
];

fn registry(state: &SimState) -> std::sync::MutexGuard<'_, ExportRegistry> {
    state.exports()
}

/// Routes of this group under `/api/1.0`.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/organization_exports", post(create_organization_export))
        .route(
            "/organization_exports/{organization_export_gid}",
            get(get_organization_export),
        )
        .route("/exports/graph", post(create_graph_export))
        .route("/exports/resource", post(create_resource_export))
        .route("/jobs/{job_gid}", get(get_job))
}

/// Download routes (presigned-URL style, no token) and the export admin routes.
pub fn public_routes() -> Router<SharedState> {
    Router::new()
        .route("/_sim/downloads/{token}", get(download))
        .route("/_sim/downloads/expire", post(admin_expire_downloads))
        .route("/_sim/exports", get(admin_list))
        .route("/_sim/exports/fail_next", post(admin_fail_next))
        .route("/_sim/exports/size", post(admin_size))
        .route("/_sim/exports/{gid}", get(admin_get))
}

// ---------------------------------------------------------------------------------------------
// Creation

fn is_enterprise_service_account(caller: &Caller) -> bool {
    caller.record.kind == TokenKind::ServiceAccount && caller.record.enterprise
}

fn required_string(data: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match data.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Null) | None => Err(ApiError::bad_request(format!("{key}: Missing input"))),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key}: Not a valid gid; expected a string"
        ))),
    }
}

/// Registers a new export after the job cap check; 429 when the user already has
/// `limits.concurrent_jobs` exports in progress.
fn admit_export(
    state: &SimState,
    caller: &Caller,
    kind: ExportKind,
    workspace: &str,
    content: ExportContent,
) -> Result<Export, ApiError> {
    let now = state.clock.now();
    let (gid, result_gid) = {
        let mut world = state.world_mut();
        let gid = world.gids.next_gid();
        let result_gid = if kind == ExportKind::Organization {
            gid.clone()
        } else {
            world.gids.next_gid()
        };
        (gid, result_gid)
    };
    let timing = &state.config.timing;
    let started_at = now + chrono::Duration::seconds(timing.export_pending_secs as i64);
    let due_at = started_at + chrono::Duration::seconds(timing.export_running_secs as i64);
    let mut registry = registry(state);
    if kind == ExportKind::Resource
        && registry
            .exports
            .values()
            .any(|e| e.kind == ExportKind::Resource && e.workspace == workspace && e.in_progress())
    {
        return Err(ApiError::forbidden(
            "A workspace is limited to one in progress export request at a given time. \
             Wait for the current resource export to complete before requesting another.",
        ));
    }
    let running = registry.in_progress_for(&caller.record.user_gid);
    let in_progress = running.len();
    let cap = state.limits.spec().concurrent_jobs as usize;
    if in_progress >= cap {
        let wait = running
            .iter()
            .map(|e| (e.due_at - now).num_milliseconds())
            .min()
            .unwrap_or(0);
        let wait_secs = ((wait.max(0) as f64) / 1000.0).ceil() as u64;
        state
            .limits
            .record_rejection(&caller.token, RejectCause::Jobs);
        return Err(ApiError::too_many_requests(wait_secs.max(1)));
    }
    let fail = registry.fail_next > 0;
    if fail {
        registry.fail_next -= 1;
    }
    let export = Export {
        gid: gid.clone(),
        result_gid,
        kind,
        user_gid: caller.record.user_gid.clone(),
        workspace: workspace.to_string(),
        content,
        created_at: now,
        started_at,
        due_at,
        fail,
        padding_bytes: registry.padding_bytes,
        outcome: None,
        completed_at: None,
        building: false,
    };
    registry.exports.insert(gid, export.clone());
    state
        .limits
        .record_jobs(&caller.token, (in_progress + 1) as u32);
    Ok(export)
}

async fn create_organization_export(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query)?;
    let data = input::body_data(&body)?;
    let organization = required_string(&data, "organization")?;
    if organization != state.world().workspace.gid {
        return Err(ApiError::not_found("organization"));
    }
    if !is_enterprise_service_account(&caller) {
        return Err(ApiError::forbidden(
            "Organization exports are only available to Service Accounts of an Enterprise organization.",
        ));
    }
    let export = admit_export(
        &state,
        &caller,
        ExportKind::Organization,
        &organization,
        ExportContent::Organization,
    )?;
    let location = format!("{}/organization_exports/{}", state.base_url, export.gid);
    wire::created(
        render_organization_export(&state, &export, &params),
        &location,
    )
}

async fn get_organization_export(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let export = registry(&state)
        .exports
        .get(&gid)
        .filter(|e| e.kind == ExportKind::Organization)
        .cloned()
        .ok_or_else(|| ApiError::not_found("organization_export"))?;
    if !is_enterprise_service_account(&caller) {
        return Err(ApiError::forbidden(
            "Organization exports are only available to Service Accounts of an Enterprise organization.",
        ));
    }
    wire::ok(render_organization_export(&state, &export, &params))
}

async fn create_graph_export(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query)?;
    let data = input::body_data(&body)?;
    let parent = required_string(&data, "parent")?;
    let workspace = {
        let world = state.world();
        match world.kind_of(&parent) {
            Some("project") | Some("team") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "parent: A graph export starts from a goal, project, portfolio or team, not a {other}."
                )));
            }
            None => return Err(ApiError::not_found("parent")),
        }
        world.workspace.gid.clone()
    };
    if !caller.record.enterprise {
        return Err(ApiError::forbidden(
            "Graph exports are only available to accounts of an Enterprise/Enterprise+ organization.",
        ));
    }
    let export = admit_export(
        &state,
        &caller,
        ExportKind::Graph,
        &workspace,
        ExportContent::Graph { parent },
    )?;
    let location = format!("{}/jobs/{}", state.base_url, export.gid);
    wire::created(render_job(&state, &export, &params), &location)
}

fn parse_parameters(value: Option<&Value>) -> Result<Vec<ResourceParameter>, ApiError> {
    let items = match value {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | Some(Value::Null) | None => {
            return Err(ApiError::bad_request(
                "export_request_parameters: Missing input",
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "export_request_parameters: Expected an array of objects",
            ));
        }
    };
    let mut parameters = Vec::new();
    for item in items {
        let Value::Object(item) = item else {
            return Err(ApiError::bad_request(
                "export_request_parameters: Expected an array of objects",
            ));
        };
        let resource_type = match item.get("resource_type") {
            Some(Value::String(t)) if matches!(t.as_str(), "task" | "team" | "message") => {
                t.clone()
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "export_request_parameters.resource_type: {other} is not supported; \
                     use task, team or message"
                )));
            }
            None => {
                return Err(ApiError::bad_request(
                    "export_request_parameters.resource_type: Missing input",
                ));
            }
        };
        let filters = match item.get("filters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(filters)) => filters.clone(),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "export_request_parameters.filters: Expected an object",
                ));
            }
        };
        if let Some(unknown) = filters
            .keys()
            .find(|k| !RESOURCE_FILTERS.contains(&k.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "export_request_parameters.filters: Unknown filter {unknown:?}"
            )));
        }
        if resource_type == "team" && !filters.is_empty() {
            return Err(ApiError::bad_request(
                "export_request_parameters.filters: Filtering is not supported for teams",
            ));
        }
        for (key, value) in &filters {
            let valid = if key.ends_with(".any") {
                value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string))
            } else {
                value
                    .as_str()
                    .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok())
            };
            if !valid {
                return Err(ApiError::bad_request(format!(
                    "export_request_parameters.filters.{key}: Invalid value {value}"
                )));
            }
        }
        let fields = match item.get("fields") {
            None | Some(Value::Null) => None,
            Some(Value::Array(fields)) if fields.iter().all(Value::is_string) => {
                let joined: Vec<&str> = fields.iter().filter_map(Value::as_str).collect();
                Some(FieldTree::parse(&joined.join(","))?)
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "export_request_parameters.fields: Expected an array of strings",
                ));
            }
        };
        parameters.push(ResourceParameter {
            resource_type,
            filters,
            fields,
        });
    }
    Ok(parameters)
}

async fn create_resource_export(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query)?;
    let data = input::body_data(&body)?;
    let workspace = required_string(&data, "workspace")?;
    if workspace != state.world().workspace.gid {
        return Err(ApiError::not_found("workspace"));
    }
    let parameters = parse_parameters(data.get("export_request_parameters"))?;
    if !is_enterprise_service_account(&caller) {
        return Err(ApiError::forbidden(
            "Resource exports are only available to Service Accounts from an Enterprise+ \
             organization or an organization with the Compliance Management Add-on.",
        ));
    }
    let export = admit_export(
        &state,
        &caller,
        ExportKind::Resource,
        &workspace,
        ExportContent::Resource { parameters },
    )?;
    let location = format!("{}/jobs/{}", state.base_url, export.gid);
    wire::created(render_job(&state, &export, &params), &location)
}

async fn get_job(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let export = registry(&state)
        .exports
        .get(&gid)
        .filter(|e| e.kind != ExportKind::Organization)
        .cloned()
        .ok_or_else(|| ApiError::not_found("job"))?;
    if export.user_gid != caller.record.user_gid {
        return Err(ApiError::forbidden(
            "job: Only the user who started this job can read its status.",
        ));
    }
    wire::ok(render_job(&state, &export, &params))
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// A download URL for `export`'s file valid for `timing.download_url_ttl_secs` from now.
fn download_url(state: &SimState, export: &Export) -> Option<String> {
    export.file()?;
    let now = state.now_unix();
    let ttl = state.config.timing.download_url_ttl_secs as i64;
    let generation = {
        let mut registry = registry(state);
        if registry.expired_urls_next > 0 {
            registry.expired_urls_next -= 1;
            // Minted in the previous generation: already expired.
            registry.url_generation.wrapping_sub(1)
        } else {
            registry.url_generation
        }
    };
    let key = format!("{}{GENERATION_SEPARATOR}{generation}", export.gid);
    let token = state.offsets.encode(&key, DOWNLOAD_SCOPE, now, now + ttl);
    Some(format!("{}/_sim/downloads/{token}", state.origin))
}

fn project_fields(state: &SimState, shallow: &Value, params: &Params) -> Value {
    let world = state.world();
    wire::project(shallow, &[], params.fields(), Detail::Full, &*world)
}

fn render_organization_export(state: &SimState, export: &Export, params: &Params) -> Value {
    let now = state.clock.now();
    let phase = match export.phase(now) {
        Phase::Pending => "pending",
        Phase::Running => "started",
        Phase::Finished => "finished",
        Phase::Failed => "error",
    };
    let shallow = json!({
        "gid": export.gid,
        "resource_type": "organization_export",
        "created_at": timestamp(export.created_at),
        "download_url": download_url(state, export),
        "state": phase,
        "organization": wire::reference(&export.workspace),
    });
    project_fields(state, &shallow, params)
}

fn job_status(export: &Export, now: DateTime<Utc>) -> &'static str {
    match export.phase(now) {
        Phase::Pending => "not_started",
        Phase::Running => "in_progress",
        Phase::Finished => "succeeded",
        Phase::Failed => "failed",
    }
}

fn render_job(state: &SimState, export: &Export, params: &Params) -> Value {
    let now = state.clock.now();
    let (subtype, result_key, result_type) = match export.kind {
        ExportKind::Resource => ("export_request", "new_resource_export", "export_request"),
        _ => ("graph_export_request", "new_graph_export", "graph_export"),
    };
    let mut shallow = json!({
        "gid": export.gid,
        "resource_type": "job",
        "resource_subtype": subtype,
        "status": job_status(export, now),
    });
    shallow[result_key] = json!({
        "gid": export.result_gid,
        "resource_type": result_type,
        "created_at": timestamp(export.created_at),
        "download_url": download_url(state, export),
        "completed_at": export.completed_at.map(timestamp),
    });
    project_fields(state, &shallow, params)
}

// ---------------------------------------------------------------------------------------------
// Downloads

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>SIMULATED</RequestId><HostId>asana-sim</HostId></Error>"
    );
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

async fn download(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let expired = || {
        registry(&state).download_stats.expired += 1;
        s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
    };
    let key = match state
        .offsets
        .decode(&token, DOWNLOAD_SCOPE, state.now_unix())
    {
        Ok(position) => position.key,
        Err(error) if error.message == OFFSET_EXPIRED_MESSAGE => return expired(),
        Err(_) => {
            return s3_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            );
        }
    };
    let Some((gid, generation)) = key
        .rsplit_once(GENERATION_SEPARATOR)
        .and_then(|(gid, generation)| Some((gid.to_string(), generation.parse::<u64>().ok()?)))
    else {
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    };
    if generation != registry(&state).url_generation {
        return expired();
    }
    let now = state.clock.now();
    let (path, abort) = {
        let registry = registry(&state);
        let Some(export) = registry.exports.get(&gid) else {
            return s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            );
        };
        let expired = export.kind == ExportKind::Resource
            && export
                .completed_at
                .is_some_and(|t| now > t + chrono::Duration::days(RESOURCE_FILE_TTL_DAYS));
        if expired {
            return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied");
        }
        match export.file() {
            Some(file) => (file.path.clone(), registry.in_flight()),
            None => {
                return s3_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                );
            }
        }
    };
    let ranged = request.headers().contains_key(header::RANGE);
    match ServeFile::new(&path).try_call(request).await {
        Ok(response) => {
            {
                let mut registry = registry(&state);
                registry.download_stats.served += 1;
                if ranged {
                    registry.download_stats.ranged += 1;
                }
            }
            response.map(|body| abortable(Body::new(body), abort, state.clone()))
        }
        Err(_) => s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    }
}

/// `body`, cut with an error (the client sees the connection fail mid-body) once `abort` is
/// cancelled by `/_sim/downloads/expire`.
fn abortable(body: Body, abort: CancellationToken, state: SharedState) -> Body {
    use futures::StreamExt;
    let cut = abort.clone();
    let data = body.into_data_stream().take_until(abort.cancelled_owned());
    let tail = futures::stream::once(async move {
        if cut.is_cancelled() {
            registry(&state).download_stats.aborted += 1;
            Some(Err(axum::Error::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "download cut by /_sim/downloads/expire",
            ))))
        } else {
            None
        }
    })
    .filter_map(std::future::ready);
    Body::from_stream(data.chain(tail))
}

// ---------------------------------------------------------------------------------------------
// Admin

fn admin_view(export: &Export, now: DateTime<Utc>) -> Value {
    let file = export.file();
    json!({
        "gid": export.gid,
        "result_gid": export.result_gid,
        "kind": export.kind.name(),
        "status": job_status(export, now),
        "user_gid": export.user_gid,
        "created_at": timestamp(export.created_at),
        "completed_at": export.completed_at.map(timestamp),
        "fail": export.fail,
        "error": match &export.outcome { Some(Err(e)) => json!(e), _ => Value::Null },
        "padding_bytes": export.padding_bytes,
        "sha256": file.map(|f| f.sha256.clone()),
        "bytes": file.map(|f| f.bytes),
        "path": file.map(|f| f.path.display().to_string()),
    })
}

async fn admin_list(State(state): State<SharedState>) -> Response {
    let now = state.clock.now();
    let registry = registry(&state);
    let list: Vec<Value> = registry
        .exports
        .values()
        .map(|e| admin_view(e, now))
        .collect();
    axum::Json(json!({
        "exports": list,
        "fail_next": registry.fail_next,
        "padding_bytes": registry.padding_bytes,
        "url_generation": registry.url_generation,
        "downloads": registry.download_stats,
    }))
    .into_response()
}

async fn admin_get(State(state): State<SharedState>, Path(gid): Path<String>) -> Response {
    let now = state.clock.now();
    match registry(&state).exports.get(&gid) {
        Some(export) => axum::Json(admin_view(export, now)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": format!("no export or job {gid}") })),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNextRequest {
    /// How many of the next exports end in `error` / `failed`.
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn admin_fail_next(
    State(state): State<SharedState>,
    Json(request): Json<FailNextRequest>,
) -> Response {
    let mut registry = registry(&state);
    registry.fail_next = request.count;
    axum::Json(json!({ "fail_next": registry.fail_next })).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpireRequest {
    /// Also cut the downloads being served right now (as a dropped connection would).
    #[serde(default)]
    abort_in_flight: bool,
    /// The next N download URLs handed out are already expired when minted (as if the client
    /// had waited too long before using them).
    #[serde(default)]
    next: u32,
}

/// Expires every download URL handed out so far: they answer S3's 403 `Request has expired`,
/// so a client must read the export again for a fresh URL.
async fn admin_expire_downloads(State(state): State<SharedState>, body: Bytes) -> Response {
    let request: ExpireRequest = if body.is_empty() {
        ExpireRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "error": format!("bad request body: {error}") })),
                )
                    .into_response();
            }
        }
    };
    let mut registry = registry(&state);
    registry.url_generation += 1;
    registry.expired_urls_next = request.next;
    if request.abort_in_flight {
        registry.cut_in_flight();
    }
    axum::Json(json!({
        "url_generation": registry.url_generation,
        "expired_urls_next": registry.expired_urls_next,
        "aborted_in_flight": request.abort_in_flight,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeRequest {
    /// Pad later export files to about this many compressed bytes (0 = no padding).
    bytes: u64,
}

async fn admin_size(
    State(state): State<SharedState>,
    Json(request): Json<SizeRequest>,
) -> Response {
    let mut registry = registry(&state);
    registry.padding_bytes = request.bytes;
    axum::Json(json!({ "padding_bytes": registry.padding_bytes })).into_response()
}

// ---------------------------------------------------------------------------------------------
// Background: finishing exports and writing their files

/// Starts the task that finishes exports when they are due; each file is written by its own
/// tracked task, so a huge padded export does not hold back the others.
pub fn spawn_runner(state: &SharedState, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let state = state.clone();
    let shutdown = shutdown.clone();
    let builders = tasks.clone();
    tasks.spawn(async move {
        let tick = state
            .clock
            .to_real(Duration::from_millis(250))
            .clamp(Duration::from_millis(5), Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
            let now = state.clock.now();
            let due: Vec<Export> = {
                let mut registry = registry(&state);
                registry
                    .exports
                    .values_mut()
                    .filter(|e| e.in_progress() && !e.building && now >= e.due_at)
                    .map(|e| {
                        e.building = true;
                        e.clone()
                    })
                    .collect()
            };
            for export in due {
                let state = state.clone();
                builders.spawn(async move {
                    let outcome = if export.fail {
                        Err("The export failed (simulated by /_sim/exports/fail_next).".to_string())
                    } else {
                        build_file(&state, &export).await
                    };
                    let mut registry = registry(&state);
                    if let Some(entry) = registry.exports.get_mut(&export.gid) {
                        entry.outcome = Some(outcome);
                        entry.completed_at = Some(state.clock.now());
                    }
                });
            }
        }
    });
}

async fn build_file(state: &SharedState, export: &Export) -> Result<ExportFile, String> {
    let dir = registry(state)
        .dir()
        .map_err(|e| format!("cannot create the export directory: {e}"))?;
    let name = match export.kind {
        ExportKind::Organization => {
            format!("domain_export_{}_{}.json.gz", export.workspace, export.gid)
        }
        ExportKind::Graph => format!("graph_export_{}.json.gz", export.result_gid),
        ExportKind::Resource => format!("object_export_{}.jsonl.gz", export.result_gid),
    };
    let path = dir.join(name);
    let world = state.world().clone();
    let export = export.clone();
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || write_export(&world, &export, &target))
        .await
        .map_err(|e| format!("export writer panicked: {e}"))?
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(written)
}

/// A writer that hashes and counts what it writes to the file.
struct HashingFile {
    file: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes the file of `export` from `world` at `path`. Deterministic: the same world and padding
/// give the same bytes (gzip header without time or name, objects in world order, sorted keys).
pub fn write_export(world: &World, export: &Export, path: &FsPath) -> std::io::Result<ExportFile> {
    let sink = HashingFile {
        file: BufWriter::new(File::create(path)?),
        hasher: Sha256::new(),
        bytes: 0,
    };
    // Fast compression: a padded export of a GiB is built in seconds rather than a minute, and
    // the padding (random base64) compresses about as well either way.
    let mut out = GzEncoder::new(sink, Compression::fast());
    match &export.content {
        ExportContent::Organization => write_organization(world, &mut out, export.padding_bytes)?,
        ExportContent::Graph { parent } => {
            write_graph(world, parent, &mut out, export.padding_bytes)?
        }
        ExportContent::Resource { parameters } => {
            write_resources(world, parameters, &mut out, export.padding_bytes)?
        }
    }
    let mut sink = out.finish()?;
    sink.flush()?;
    sink.file.get_ref().sync_all()?;
    Ok(ExportFile {
        path: path.to_path_buf(),
        sha256: hex::encode(sink.hasher.finalize()),
        bytes: sink.bytes,
    })
}

fn full(world: &World, gid: &str) -> Value {
    render(world, gid, None, Detail::Full).unwrap_or_else(|| json!({ "gid": gid }))
}

fn write_value(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)
}

/// Writes `,"key":[items…]`.
fn write_array<'a>(
    out: &mut impl Write,
    key: &str,
    world: &World,
    gids: impl Iterator<Item = &'a str>,
) -> std::io::Result<()> {
    write!(out, ",\"{key}\":[")?;
    for (i, gid) in gids.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_value(out, &full(world, gid))?;
    }
    out.write_all(b"]")
}

/// Writes `,"padding":[…]` until about `target` compressed bytes have reached the file. The
/// chunks are base64 of seeded random bytes, so they do not compress away and the same target
/// always gives the same bytes.
fn write_padding(out: &mut GzEncoder<HashingFile>, target: u64) -> std::io::Result<()> {
    out.write_all(b",\"padding\":[")?;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_9add);
    let mut raw = [0u8; 3072];
    let mut first = true;
    while out.get_ref().bytes < target {
        rng.fill(&mut raw[..]);
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        out.write_all(b"\"")?;
        out.write_all(STANDARD.encode(raw).as_bytes())?;
        out.write_all(b"\"")?;
    }
    out.write_all(b"]")
}

fn write_organization(
    world: &World,
    out: &mut GzEncoder<HashingFile>,
    padding: u64,
) -> std::io::Result<()> {
    out.write_all(b"{\"export_format\":\"asana-sim-organization-export-v1\",\"workspace\":")?;
    write_value(out, &full(world, &world.workspace.gid))?;
    write_array(
        out,
        "users",
        world,
        world.users.iter().map(|u| u.gid.as_str()),
    )?;
    write_array(
        out,
        "teams",
        world,
        world.teams.iter().map(|t| t.gid.as_str()),
    )?;
    write_array(
        out,
        "projects",
        world,
        world.projects.iter().map(|p| p.gid.as_str()),
    )?;
    write_array(
        out,
        "sections",
        world,
        world.sections.iter().map(|s| s.gid.as_str()),
    )?;
    write_array(
        out,
        "tasks",
        world,
        world
            .tasks
            .iter()
            .filter(|t| !t.deleted)
            .map(|t| t.gid.as_str()),
    )?;
    write_array(
        out,
        "stories",
        world,
        world.stories.iter().map(|s| s.gid.as_str()),
    )?;
    write_array(
        out,
        "tags",
        world,
        world.tags.iter().map(|t| t.gid.as_str()),
    )?;
    write_array(
        out,
        "custom_fields",
        world,
        world.custom_fields.iter().map(|f| f.gid.as_str()),
    )?;
    write_array(
        out,
        "status_updates",
        world,
        world.status_updates.iter().map(|s| s.gid.as_str()),
    )?;
    if padding > 0 {
        write_padding(out, padding)?;
    }
    out.write_all(b"}\n")
}

/// Tasks of `projects` and all their subtasks, in world order.
fn tasks_below<'a>(world: &'a World, projects: &[&str]) -> Vec<&'a str> {
    let mut included: std::collections::HashSet<&str> = world
        .tasks
        .iter()
        .filter(|t| {
            !t.deleted
                && t.memberships
                    .iter()
                    .any(|(p, _)| projects.contains(&p.as_str()))
        })
        .map(|t| t.gid.as_str())
        .collect();
    loop {
        let before = included.len();
        for task in world.tasks.iter() {
            if !task.deleted
                && let Some(parent) = &task.parent
                && included.contains(parent.as_str())
            {
                included.insert(task.gid.as_str());
            }
        }
        if included.len() == before {
            break;
        }
    }
    world
        .tasks
        .iter()
        .filter(|t| included.contains(t.gid.as_str()))
        .map(|t| t.gid.as_str())
        .collect()
}

fn write_graph(
    world: &World,
    parent: &str,
    out: &mut GzEncoder<HashingFile>,
    padding: u64,
) -> std::io::Result<()> {
    let projects: Vec<&str> = world
        .projects
        .iter()
        .filter(|p| p.gid == parent || p.team == parent)
        .map(|p| p.gid.as_str())
        .collect();
    let tasks = tasks_below(world, &projects);
    out.write_all(b"{\"export_format\":\"asana-sim-graph-export-v1\",\"parent\":")?;
    write_value(out, &full(world, parent))?;
    write_array(out, "projects", world, projects.iter().copied())?;
    write_array(
        out,
        "sections",
        world,
        world
            .sections
            .iter()
            .filter(|s| projects.contains(&s.project.as_str()))
            .map(|s| s.gid.as_str()),
    )?;
    write_array(out, "tasks", world, tasks.iter().copied())?;
    write_array(
        out,
        "stories",
        world,
        world
            .stories
            .iter()
            .filter(|s| tasks.contains(&s.target.as_str()))
            .map(|s| s.gid.as_str()),
    )?;
    if padding > 0 {
        write_padding(out, padding)?;
    }
    out.write_all(b"}\n")
}

fn any_filter(filters: &Map<String, Value>, key: &str, candidates: &[&str]) -> bool {
    match filters.get(key).and_then(Value::as_array) {
        None => true,
        Some(wanted) => wanted
            .iter()
            .filter_map(Value::as_str)
            .any(|w| candidates.contains(&w)),
    }
}

fn time_filter(filters: &Map<String, Value>, field: &str, value: DateTime<Utc>) -> bool {
    let bound = |suffix: &str| {
        filters
            .get(&format!("{field}.{suffix}"))
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    bound("after").is_none_or(|t| value > t) && bound("before").is_none_or(|t| value < t)
}

fn task_matches(world: &World, task: &Task, filters: &Map<String, Value>) -> bool {
    let commenters: Vec<&str> = world
        .stories
        .iter()
        .filter(|s| s.target == task.gid && s.resource_subtype == "comment_added")
        .map(|s| s.created_by.as_str())
        .collect();
    let followers: Vec<&str> = task.followers.iter().map(String::as_str).collect();
    // The world does not record who assigned or liked a task: those filters match nothing.
    any_filter(filters, "assignee.any", task.assignee.as_deref().as_slice())
        && any_filter(filters, "created_by.any", &[task.created_by.as_str()])
        && any_filter(filters, "followers.any", &followers)
        && any_filter(filters, "commented_on_by.any", &commenters)
        && any_filter(filters, "assigned_by.any", &[])
        && any_filter(filters, "liked_by.any", &[])
        && time_filter(filters, "created_at", task.created_at)
        && time_filter(filters, "modified_at", task.modified_at)
}

fn write_line(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    write_value(out, value)?;
    out.write_all(b"\n")
}

fn write_resources(
    world: &World,
    parameters: &[ResourceParameter],
    out: &mut GzEncoder<HashingFile>,
    padding: u64,
) -> std::io::Result<()> {
    let line_of = |gid: &str, fields: Option<&FieldTree>| {
        render(world, gid, fields, Detail::Full).unwrap_or_else(|| json!({ "gid": gid }))
    };
    for parameter in parameters {
        let fields = parameter.fields.as_ref();
        match parameter.resource_type.as_str() {
            "task" => {
                for task in world.tasks.iter().filter(|t| !t.deleted) {
                    if !task_matches(world, task, &parameter.filters) {
                        continue;
                    }
                    let mut line = line_of(&task.gid, fields);
                    if fields.is_none() {
                        let stories: Vec<Value> = world
                            .stories
                            .iter()
                            .filter(|s| s.target == task.gid)
                            .map(|s| line_of(&s.gid, None))
                            .collect();
                        line["stories"] = Value::Array(stories);
                        line["attachments"] = json!([]);
                    }
                    write_line(out, &line)?;
                }
            }
            "team" => {
                for team in world.teams.iter() {
                    let mut line = line_of(&team.gid, fields);
                    if fields.is_none() {
                        let members: Vec<Value> = team
                            .members
                            .iter()
                            .map(|gid| {
                                render(world, gid, None, Detail::Compact)
                                    .unwrap_or_else(|| json!({ "gid": gid }))
                            })
                            .collect();
                        line["members"] = Value::Array(members);
                    }
                    write_line(out, &line)?;
                }
            }
            _ => {
                for update in world.status_updates.iter() {
                    if !time_filter(&parameter.filters, "created_at", update.created_at)
                        || !time_filter(&parameter.filters, "modified_at", update.created_at)
                        || !any_filter(
                            &parameter.filters,
                            "created_by.any",
                            &[update.author.as_str()],
                        )
                    {
                        continue;
                    }
                    let mut line = line_of(&update.gid, fields);
                    line["resource_type"] = json!("message");
                    line["resource_subtype"] = json!("status_update");
                    if fields.is_none() {
                        line["parents"] = json!([{
                            "gid": update.parent,
                            "resource_type": world.kind_of(&update.parent),
                        }]);
                    }
                    write_line(out, &line)?;
                }
            }
        }
    }
    if padding > 0 {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_9add);
        let mut raw = [0u8; 3072];
        while out.get_ref().bytes < padding {
            rng.fill(&mut raw[..]);
            write_line(
                out,
                &json!({ "resource_type": "padding", "data": STANDARD.encode(raw) }),
            )?;
        }
    }
    Ok(())
}
