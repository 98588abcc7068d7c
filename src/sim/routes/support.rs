//! Small helpers shared by the work-graph endpoints (teams, projects, tasks, stories, …): parsing
//! of Asana's filter parameters, user references, request-body options, and pagination over
//! objects that have no gid of their own to resolve.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

use super::Params;
use crate::sim::state::{Caller, SimState};
use crate::sim::wire::{self, ApiError, ApiResult, Detail, FieldTree};
use crate::sim::world::{self, World};

/// 404 unless `gid` is the simulated organization.
pub fn require_workspace(world: &World, gid: &str) -> Result<(), ApiError> {
    if gid == world.workspace.gid {
        Ok(())
    } else {
        Err(ApiError::not_found("workspace"))
    }
}

/// Parses a boolean query parameter (`true`/`false`), 400 otherwise.
pub fn parse_bool(key: &str, raw: &str) -> Result<bool, ApiError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "{key}: Not a boolean: {other}"
        ))),
    }
}

/// An optional boolean query parameter.
pub fn bool_param(params: &Params, key: &str) -> Result<Option<bool>, ApiError> {
    params.get(key).map(|raw| parse_bool(key, raw)).transpose()
}

/// Parses a date-time parameter (ISO 8601; a bare date means its midnight UTC), 400 otherwise.
pub fn parse_time(key: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    Err(ApiError::bad_request(format!(
        "{key}: Not a valid date-time, expected ISO 8601 such as 2012-02-22T02:06:58.158Z: {raw}"
    )))
}

/// An optional date-time query parameter.
pub fn time_param(params: &Params, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    params.get(key).map(|raw| parse_time(key, raw)).transpose()
}

/// Checks a `YYYY-MM-DD` date, 400 otherwise.
pub fn parse_date(key: &str, raw: &str) -> Result<String, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{key}: Not a valid date, expected YYYY-MM-DD: {raw}"
            ))
        })
}

/// Resolves a user reference as Asana accepts it: `me`, an email address or a gid.
pub fn resolve_user(world: &World, caller: &Caller, raw: &str) -> Option<String> {
    if raw == "me" {
        return Some(caller.record.user_gid.clone());
    }
    if let Some(user) = world.users.get(raw) {
        return Some(user.gid.clone());
    }
    world
        .users
        .iter()
        .find(|u| u.email.eq_ignore_ascii_case(raw))
        .map(|u| u.gid.clone())
}

/// 400 for a gid in a request that names nothing (Asana's wording).
pub fn unrecognized(key: &str, gid: &str) -> ApiError {
    ApiError::bad_request(format!("{key}: Not a recognized ID: {gid}"))
}

/// Reads a JSON request body: its `data` object and, when no `opt_fields` query was given,
/// the `options.fields` list of the body as the field selection.
pub fn read_body(body: &[u8], params: &mut Params) -> Result<Map<String, Value>, ApiError> {
    let data = wire::body_data(body)?;
    if params.fields.is_none()
        && let Ok(value) = serde_json::from_slice::<Value>(body)
        && let Some(Value::Array(fields)) = value.get("options").and_then(|o| o.get("fields"))
    {
        let joined = fields
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",");
        if !joined.is_empty() {
            params.fields = Some(FieldTree::parse(&joined)?);
        }
    }
    Ok(data)
}

/// A string field of a request body: `None` when absent, 400 when not a string.
pub fn body_string(data: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match data.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{key}: Not a string"))),
    }
}

/// A nullable string field: `None` when absent, `Some(None)` when `null`.
pub fn body_nullable_string(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<Option<String>>, ApiError> {
    match data.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(text)) => Ok(Some(Some(text.clone()))),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key}: Not a string or null"
        ))),
    }
}

/// A boolean field of a request body.
pub fn body_bool(data: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match data.get(key) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(Value::String(text)) => parse_bool(key, text).map(Some),
        Some(_) => Err(ApiError::bad_request(format!("{key}: Not a boolean"))),
    }
}

/// A list of gids in a body field: an array of strings or one comma-separated string.
pub fn body_gid_list(data: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(split_list(text)),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(format!("{key}: Not a list of gids")))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("{key}: Not a list of gids"))),
    }
}

/// Splits a comma-separated parameter, dropping empty items.
pub fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `201 Created` with the object rendered in full (or per `opt_fields`) and `Location` naming
/// its API path.
pub fn created_object(world: &World, gid: &str, params: &Params, location: &str) -> ApiResult {
    let value = world::render(world, gid, params.fields(), Detail::Full)
        .unwrap_or_else(|| serde_json::json!({ "gid": gid }));
    wire::created(value, location)
}

/// Like [`super::paginate`], for objects rendered by the caller (shallow JSON with their compact
/// fields) rather than looked up by gid.
pub fn paginate_values(
    state: &SimState,
    world: &World,
    path: &str,
    params: &Params,
    items: &[Value],
    compact: &[&str],
) -> ApiResult {
    super::paginate_with(state, path, params, items, |item: &Value| {
        wire::project(item, compact, params.fields(), Detail::Compact, world)
    })
}
