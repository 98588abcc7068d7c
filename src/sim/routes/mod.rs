//! Simulated endpoints, one module per group. Every handler returns [`ApiResult`] and reads the
//! caller from the request extensions (set by the limits middleware).

pub mod audit_log;
pub mod batch;
pub mod custom_fields;
pub mod events;
pub mod exports;
pub mod oauth;
pub mod projects;
pub mod search;
pub mod status_updates;
pub mod stories;
pub mod support;
pub mod tags;
pub mod tasks;
pub mod teams;
pub mod users;

use axum::Router;

use super::model::world::World;
use super::model::world::render::render;
use super::state::{SharedState, SimState};
use super::wire::{self, ApiError, ApiResult, Detail, FieldTree};

/// Routes under `/api/1.0`, all behind authentication and limits.
pub fn api_routes() -> Router<SharedState> {
    Router::new()
        .merge(users::routes())
        .merge(events::routes())
        .merge(exports::routes())
        .merge(teams::routes())
        .merge(projects::routes())
        .merge(tasks::routes())
        .merge(stories::routes())
        .merge(status_updates::routes())
        .merge(search::routes())
        .merge(custom_fields::routes())
        .merge(tags::routes())
        .merge(batch::routes())
        .merge(audit_log::routes())
}

/// Routes outside `/api/1.0` without token authentication (OAuth endpoints, export downloads).
pub fn public_routes() -> Router<SharedState> {
    Router::new()
        .merge(exports::public_routes())
        .merge(oauth::routes())
}

/// Query parameters of a request, in order, with the common ones parsed.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// All parameters as sent.
    pub query: Vec<(String, String)>,
    /// `limit`, validated 1..=100.
    pub limit: Option<usize>,
    /// `offset`, still opaque.
    pub offset: Option<String>,
    /// Parsed `opt_fields`.
    pub fields: Option<FieldTree>,
}

impl Params {
    /// Parses the common parameters; 400 on a bad `limit` or `opt_fields`.
    pub fn parse(query: Vec<(String, String)>) -> Result<Params, ApiError> {
        let find = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let limit = wire::parse_limit(find("limit").as_deref())?;
        let offset = find("offset");
        let fields = match find("opt_fields") {
            Some(raw) => Some(FieldTree::parse(&raw)?),
            None => None,
        };
        Ok(Params {
            limit,
            offset,
            fields,
            query,
        })
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A required parameter, 400 when missing.
    pub fn require(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .ok_or_else(|| ApiError::bad_request(format!("{key}: Missing input")))
    }

    /// What an offset is bound to: the path and the filters (not paging or output options).
    pub fn scope(&self, path: &str) -> String {
        let mut filters: Vec<&(String, String)> = self
            .query
            .iter()
            .filter(|(k, _)| {
                !matches!(k.as_str(), "offset" | "limit" | "opt_fields" | "opt_pretty")
            })
            .collect();
        filters.sort();
        format!("{path}?{filters:?}")
    }

    /// The requested fields, for rendering.
    pub fn fields(&self) -> Option<&FieldTree> {
        self.fields.as_ref()
    }
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

/// The pagination every list endpoint shares, over any items and a renderer for one item.
pub fn paginate_with<T>(
    state: &SimState,
    path: &str,
    params: &Params,
    items: &[T],
    render: impl Fn(&T) -> serde_json::Value,
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

/// Renders one object in full (or per `opt_fields`), 404 when it does not exist.
pub fn single(world: &World, gid: &str, params: &Params, what: &str) -> ApiResult {
    match render(world, gid, params.fields(), Detail::Full) {
        Some(value) => wire::ok(value),
        None => Err(ApiError::not_found(what)),
    }
}
