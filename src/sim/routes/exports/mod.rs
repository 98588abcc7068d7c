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
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::params::Params;
use super::request::{ApiRequest, ApiWrite};
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

/// Starts a new export for the caller and answers `201` with it (an organization export, or the
/// job of a graph or resource export): 403 while a resource export of the workspace is in
/// progress, 429 (counted against the token) when the caller already has `limits.concurrent_jobs`
/// exports in progress.
fn start_export(
    request: &ApiRequest,
    kind: ExportKind,
    workspace: &str,
    content: ExportContent,
) -> ApiResult {
    let (state, caller, params) = (&request.state, &request.caller, &request.params);
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
            if kind == ExportKind::Organization {
                let location = format!("{}/organization_exports/{}", state.base_url, export.gid);
                wire::created(
                    render_organization_export(state, &export, params),
                    &location,
                )
            } else {
                let location = format!("{}/jobs/{}", state.base_url, export.gid);
                wire::created(render_job(state, &export, params), &location)
            }
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

async fn create_organization_export(write: ApiWrite) -> ApiResult {
    let data = input::body_data(&write.body)?;
    let request = &write.request;
    let organization = required_string(&data, "organization")?;
    if organization != request.state.world().workspace.gid {
        return Err(ApiError::not_found("organization"));
    }
    if !is_enterprise_service_account(&request.caller) {
        return Err(ApiError::forbidden(ORGANIZATION_EXPORTS_ONLY));
    }
    start_export(
        request,
        ExportKind::Organization,
        &organization,
        ExportContent::Organization,
    )
}

async fn get_organization_export(request: ApiRequest) -> ApiResult {
    let export = find_export(&request, "organization_export", |e| {
        e.kind == ExportKind::Organization
    })?;
    if !is_enterprise_service_account(&request.caller) {
        return Err(ApiError::forbidden(ORGANIZATION_EXPORTS_ONLY));
    }
    wire::ok(render_organization_export(
        &request.state,
        &export,
        &request.params,
    ))
}

/// The export the path names if it is one `wanted` takes, else 404 naming `what`.
fn find_export(
    request: &ApiRequest,
    what: &str,
    wanted: impl Fn(&Export) -> bool,
) -> Result<Export, ApiError> {
    request
        .state
        .exports()
        .exports
        .get(&request.gid)
        .filter(|e| wanted(e))
        .cloned()
        .ok_or_else(|| ApiError::not_found(what))
}

async fn create_graph_export(write: ApiWrite) -> ApiResult {
    let data = input::body_data(&write.body)?;
    let request = &write.request;
    let parent = required_string(&data, "parent")?;
    let workspace = {
        let world = request.state.world();
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
    if !request.caller.record.enterprise {
        return Err(ApiError::forbidden(
            "Graph exports are only available to accounts of an Enterprise/Enterprise+ organization.",
        ));
    }
    start_export(
        request,
        ExportKind::Graph,
        &workspace,
        ExportContent::Graph { parent },
    )
}

async fn create_resource_export(write: ApiWrite) -> ApiResult {
    let data = input::body_data(&write.body)?;
    let request = &write.request;
    let workspace = required_string(&data, "workspace")?;
    if workspace != request.state.world().workspace.gid {
        return Err(ApiError::not_found("workspace"));
    }
    let parameters = parse_parameters(data.get("export_request_parameters"))?;
    if !is_enterprise_service_account(&request.caller) {
        return Err(ApiError::forbidden(
            "Resource exports are only available to Service Accounts from an Enterprise+ \
             organization or an organization with the Compliance Management Add-on.",
        ));
    }
    start_export(
        request,
        ExportKind::Resource,
        &workspace,
        ExportContent::Resource { parameters },
    )
}

async fn get_job(request: ApiRequest) -> ApiResult {
    let export = find_export(&request, "job", |e| e.kind != ExportKind::Organization)?;
    if export.user_gid != request.me() {
        return Err(ApiError::forbidden(
            "job: Only the user who started this job can read its status.",
        ));
    }
    wire::ok(render_job(&request.state, &export, &request.params))
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
