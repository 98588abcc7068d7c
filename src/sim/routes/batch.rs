//! Batch API: `POST /batch` with up to 10 actions, each dispatched to the same handlers as a
//! direct request (the API router called as a service, with the caller already authenticated and
//! without passing the limits layer again). Results come back in request order as
//! `{status_code, headers, body}`. A batch of N counts as N requests against the quota; if they do
//! not fit, the whole batch answers 429.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use super::request::ApiWrite;
use crate::sim::input;
use crate::sim::state::{Caller, SharedState};
use crate::sim::wire::{self, ApiError, ApiResult, with_query};

/// Most actions in one batch, as Asana documents.
pub const MAX_ACTIONS: usize = 10;

/// Routes of this group.
///
/// `api` builds the router the actions are dispatched to: the whole API, which includes this
/// group, so it is handed in rather than imported.
pub fn routes(api: fn() -> Router<SharedState>) -> Router<SharedState> {
    Router::new().route("/batch", post(move |write: ApiWrite| batch(api, write)))
}

async fn batch(api: fn() -> Router<SharedState>, write: ApiWrite) -> ApiResult {
    let data = input::body_data(&write.body)?;
    let (state, caller) = (&write.request.state, &write.request.caller);
    let actions = match data.get("actions") {
        Some(Value::Array(actions)) => actions.clone(),
        Some(_) => return Err(ApiError::bad_request("actions: Not an array")),
        None => return Err(ApiError::bad_request("actions: Missing input")),
    };
    if actions.is_empty() {
        return Err(ApiError::bad_request(
            "actions: At least one action is required in a batch request.",
        ));
    }
    if actions.len() > MAX_ACTIONS {
        return Err(ApiError::bad_request(format!(
            "actions: The maximum number of actions allowed in a single batch request is {MAX_ACTIONS}."
        )));
    }
    let extra = u32::try_from(actions.len() - 1).unwrap_or(0);
    if let Err(retry_after) = state.limits.charge_extra(
        &caller.token,
        caller.record.tier,
        extra,
        state.clock.sim_secs(),
    ) {
        return Err(ApiError::too_many_requests(retry_after));
    }
    // The actions also count as concurrent requests of their own class; the batch request
    // already holds one write slot, which stands for one write action when there is one.
    let reads = actions.iter().filter(|a| is_read_action(a)).count() as u32;
    let writes = (actions.len() as u32 - reads).saturating_sub(1);
    let _slots = state
        .limits
        .hold_concurrent(&caller.token, reads, writes)
        .map_err(|(_, retry_after)| ApiError::too_many_requests(retry_after))?;
    let router = api()
        .fallback(|| async { ApiError::no_route() })
        .with_state(state.clone());
    let runs = actions
        .iter()
        .map(|action| run_action(router.clone(), caller.clone(), action));
    let results = futures::future::join_all(runs).await;
    wire::ok(Value::Array(results))
}

/// Runs one action and describes its response, or its refusal.
async fn run_action(router: Router, caller: Caller, action: &Value) -> Value {
    let request = match build_request(&caller, action) {
        Ok(request) => request,
        Err(error) => return describe(error.into_response()).await,
    };
    match router.oneshot(request).await {
        Ok(response) => describe(response).await,
        Err(never) => match never {},
    }
}

/// Turns an action into a request for the API router.
fn build_request(caller: &Caller, action: &Value) -> Result<Request<Body>, ApiError> {
    let path = action
        .get("relative_path")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("relative_path: Missing input"))?;
    if !path.starts_with('/') {
        return Err(ApiError::bad_request(
            "relative_path: Must be a path relative to the API, starting with /",
        ));
    }
    let method_name = action
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("method: Missing input"))?;
    let method = match method_name.to_ascii_lowercase().as_str() {
        "get" => Method::GET,
        "post" => Method::POST,
        "put" => Method::PUT,
        "delete" => Method::DELETE,
        "patch" => Method::PATCH,
        "head" => Method::HEAD,
        _ => {
            return Err(ApiError::bad_request(format!(
                "method: Not a valid method: {method_name}"
            )));
        }
    };
    let bare = path.split('?').next().unwrap_or(path).trim_end_matches('/');
    if bare == "/batch" {
        return Err(ApiError::bad_request("Batch requests cannot be nested."));
    }
    if bare.starts_with("/organization_exports") {
        return Err(ApiError::bad_request(
            "Creating, getting, or deleting organization exports is not supported in batch requests.",
        ));
    }
    if bare.ends_with("/attachments") && method == Method::POST {
        return Err(ApiError::bad_request(
            "Attachment uploads are not supported in batch requests.",
        ));
    }
    let data = match action.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(ApiError::bad_request("data: Not an object")),
    };
    let options = action.get("options").and_then(Value::as_object);
    let mut query: Vec<(String, String)> = Vec::new();
    if let Some(options) = options {
        for (key, value) in options {
            match (key.as_str(), value) {
                ("fields", Value::Array(fields)) => query.push((
                    "opt_fields".into(),
                    fields
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                )),
                ("limit" | "offset", value) => query.push((key.clone(), scalar(value))),
                _ => {}
            }
        }
    }
    let reads = method == Method::GET || method == Method::HEAD || method == Method::DELETE;
    if reads {
        for (key, value) in &data {
            query.push((key.clone(), scalar(value)));
        }
    }
    let uri = with_query(
        path,
        query
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    );
    let body = if reads {
        Body::empty()
    } else {
        Body::from(json!({ "data": data }).to_string())
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", caller.token))
        .body(body)
        .map_err(|_| ApiError::bad_request("relative_path: Not a valid path"))?;
    request.extensions_mut().insert(caller.clone());
    Ok(request)
}

/// A query value from JSON: strings as they are, arrays comma-joined, others as JSON text.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `{status_code, headers, body}` of one action's response.
async fn describe(response: Response) -> Value {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let mut headers = Map::new();
    if let Some(location) = parts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        headers.insert("location".into(), json!(location));
    }
    json!({
        "status_code": parts.status.as_u16(),
        "headers": headers,
        "body": body,
    })
}

/// Whether a batch action is a read (GET or HEAD) for the concurrency limits.
fn is_read_action(action: &Value) -> bool {
    action
        .get("method")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("get") || m.eq_ignore_ascii_case("head"))
}
