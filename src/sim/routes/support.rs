//! Small helpers shared by the work-graph endpoints (teams, projects, tasks, stories, …): parsing
//! of Asana's filter parameters, user references, request-body options, and pagination over
//! objects that have no gid of their own to resolve.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::Params;
use crate::sim::input::{self, parse_bool, parse_time};
use crate::sim::model::world::World;
use crate::sim::model::world::render::render;
use crate::sim::state::{Caller, SimState};
use crate::sim::wire::{self, ApiError, ApiResult, Detail, FieldTree};

/// 404 unless `gid` is the simulated organization.
pub fn require_workspace(world: &World, gid: &str) -> Result<(), ApiError> {
    if gid == world.workspace.gid {
        Ok(())
    } else {
        Err(ApiError::not_found("workspace"))
    }
}

/// An optional boolean query parameter.
pub fn bool_param(params: &Params, key: &str) -> Result<Option<bool>, ApiError> {
    params.get(key).map(|raw| parse_bool(key, raw)).transpose()
}

/// An optional date-time query parameter.
pub fn time_param(params: &Params, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    params.get(key).map(|raw| parse_time(key, raw)).transpose()
}

/// Resolves a user reference as Asana accepts it: `me`, an email address or a gid.
pub fn resolve_user(world: &World, caller: &Caller, raw: &str) -> Option<String> {
    world.find_user(raw, &caller.record.user_gid)
}

/// Reads a JSON request body: its `data` object and, when no `opt_fields` query was given,
/// the `options.fields` list of the body as the field selection.
pub fn read_body(body: &[u8], params: &mut Params) -> Result<Map<String, Value>, ApiError> {
    let data = input::body_data(body)?;
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

/// `201 Created` with the object rendered in full (or per `opt_fields`) and `Location` naming
/// its API path.
pub fn created_object(world: &World, gid: &str, params: &Params, location: &str) -> ApiResult {
    let value = render(world, gid, params.fields(), Detail::Full)
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
