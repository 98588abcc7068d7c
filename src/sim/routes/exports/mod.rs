//! Organization, graph and resource exports on the wire: `POST /organization_exports`,
//! `GET /organization_exports/{gid}`, `POST /exports/graph`, `POST /exports/resource` and
//! `GET /jobs/{gid}`, over the export registry of [`crate::sim::model::exports`].
//!
//! - Organization exports show `state` going `pending → started → finished | error` on simulated
//!   time (`timing.export_pending_secs`, then `timing.export_running_secs`, then as long as writing
//!   the file takes); graph and resource exports are *jobs* whose `status` goes
//!   `not_started → in_progress → succeeded | failed`.
//! - A finished export's file (written by the background export runner) is served by
//!   [`downloads`]: each GET mints a fresh URL that expires after `timing.download_url_ttl_secs`.
//! - Limits: at most `limits.concurrent_jobs` exports in progress per *user* (429 with
//!   `Retry-After` until the earliest one ends), and one resource export in progress per
//!   workspace (403).
//!
//! The admin routes that steer exports in tests are in `admin::exports`.

pub mod downloads;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::Params;
use crate::sim::config::TokenKind;
use crate::sim::input;
use crate::sim::limits::RejectCause;
use crate::sim::model::exports::parameters::parse_parameters;
use crate::sim::model::exports::registry::{Admitted, ExportRequest, Refusal};
use crate::sim::model::exports::{Export, ExportContent, ExportKind};
use crate::sim::state::{Caller, SharedState, SimState};
use crate::sim::wire::{self, ApiError, ApiResult, Detail, timestamp};
use downloads::download_url;

/// The 403 for organization exports asked for by anyone else.
const ORGANIZATION_EXPORTS_ONLY: &str =
    "Organization exports are only available to Service Accounts of an Enterprise organization.";

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

/// Routes outside `/api/1.0` without a token: the downloads of export files.
pub fn public_routes() -> Router<SharedState> {
    downloads::routes()
}

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

/// Registers a new export for the caller: 403 while a resource export of the workspace is in
/// progress, 429 (counted against the token) when the caller already has `limits.concurrent_jobs`
/// exports in progress.
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
    let request = ExportRequest {
        gid,
        result_gid,
        kind,
        user_gid: caller.record.user_gid.clone(),
        workspace: workspace.to_string(),
        content,
    };
    let cap = state.limits.spec().concurrent_jobs as usize;
    let admitted = state
        .exports()
        .admit(request, &state.config.timing, cap, now);
    match admitted {
        Ok(Admitted {
            export,
            in_progress,
        }) => {
            state.limits.record_jobs(&caller.token, in_progress as u32);
            Ok(export)
        }
        Err(Refusal::WorkspaceBusy) => Err(ApiError::forbidden(
            "A workspace is limited to one in progress export request at a given time. \
             Wait for the current resource export to complete before requesting another.",
        )),
        Err(Refusal::AtCap { retry_after_secs }) => {
            state
                .limits
                .record_rejection(&caller.token, RejectCause::Jobs);
            Err(ApiError::too_many_requests(retry_after_secs.max(1)))
        }
    }
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
        return Err(ApiError::forbidden(ORGANIZATION_EXPORTS_ONLY));
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
    let export = state
        .exports()
        .exports
        .get(&gid)
        .filter(|e| e.kind == ExportKind::Organization)
        .cloned()
        .ok_or_else(|| ApiError::not_found("organization_export"))?;
    if !is_enterprise_service_account(&caller) {
        return Err(ApiError::forbidden(ORGANIZATION_EXPORTS_ONLY));
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
    let export = state
        .exports()
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

fn project_fields(state: &SimState, shallow: &Value, params: &Params) -> Value {
    let world = state.world();
    wire::project(shallow, &[], params.fields(), Detail::Full, &*world)
}

fn render_organization_export(state: &SimState, export: &Export, params: &Params) -> Value {
    let now = state.clock.now();
    let shallow = json!({
        "gid": export.gid,
        "resource_type": "organization_export",
        "created_at": timestamp(export.created_at),
        "download_url": download_url(state, export),
        "state": export.phase(now).organization_export_state(),
        "organization": wire::reference(&export.workspace),
    });
    project_fields(state, &shallow, params)
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
        "status": export.phase(now).job_status(),
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
