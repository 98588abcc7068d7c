//! How endpoints answer from the world: one object in full, a created object with its
//! `Location`, or a list page by page with Asana's `next_page` and expiring offsets.
//!
//! Imports the state, the world's rendering and `wire`; never an endpoint module.

use serde_json::Value;

use super::params::Params;
use crate::sim::model::world::World;
use crate::sim::model::world::render::render;
use crate::sim::state::SimState;
use crate::sim::wire::{self, ApiError, ApiResult, Detail};

/// Renders one object in full (or per `opt_fields`), 404 naming `what` when it does not exist.
pub fn single(world: &World, gid: &str, params: &Params, what: &str) -> ApiResult {
    match render(world, gid, params.fields(), Detail::Full) {
        Some(value) => wire::ok(value),
        None => Err(ApiError::not_found(what)),
    }
}

/// `201 Created` with the object rendered in full (or per `opt_fields`) and `Location` naming
/// its API path.
pub fn created(world: &World, gid: &str, params: &Params, location: &str) -> ApiResult {
    let value = render(world, gid, params.fields(), Detail::Full)
        .unwrap_or_else(|| serde_json::json!({ "gid": gid }));
    wire::created(value, location)
}

/// Answers a list request over `gids` (already filtered and ordered): the whole list when no
/// `limit` was given (400 past 1,000 items, like Asana), else one page with `next_page`.
pub fn paginate(
    state: &SimState,
    world: &World,
    path: &str,
    params: &Params,
    gids: &[String],
) -> ApiResult {
    paginate_with(state, path, params, gids, |gid| {
        render(world, gid, params.fields(), Detail::Compact)
            .unwrap_or_else(|| serde_json::json!({ "gid": gid }))
    })
}

/// Like [`paginate`], for objects rendered by the caller (shallow JSON with their compact
/// fields) rather than looked up by gid.
pub fn paginate_values(
    state: &SimState,
    world: &World,
    path: &str,
    params: &Params,
    items: &[Value],
    compact: &[&str],
) -> ApiResult {
    paginate_with(state, path, params, items, |item: &Value| {
        wire::project(item, compact, params.fields(), Detail::Compact, world)
    })
}

/// The pagination every list endpoint shares, over any items and a renderer for one item.
pub fn paginate_with<T>(
    state: &SimState,
    path: &str,
    params: &Params,
    items: &[T],
    render: impl Fn(&T) -> Value,
) -> ApiResult {
    let Some(limit) = params.limit else {
        if items.len() > wire::UNPAGINATED_MAX {
            return Err(ApiError::bad_request(
                "The result is too large. You should use pagination (may require specifying a workspace)",
            ));
        }
        return wire::page(items.iter().map(render).collect(), None, false);
    };
    let scope = params.scope(path);
    let now = state.now_unix();
    let start = match &params.offset {
        Some(offset) => state
            .offsets
            .decode(offset, &scope, now)?
            .key
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("offset: Invalid offset."))?,
        None => 0,
    };
    let end = (start + limit).min(items.len());
    let data = items
        .get(start.min(items.len())..end)
        .unwrap_or_default()
        .iter()
        .map(render)
        .collect();
    let next = (end < items.len()).then(|| {
        let ttl = state.config.timing.offset_ttl_secs as i64;
        let offset = state
            .offsets
            .encode(&end.to_string(), &scope, now, now + ttl);
        wire::next_page(&state.base_url, path, &params.query, &offset)
    });
    wire::page(data, next, true)
}
