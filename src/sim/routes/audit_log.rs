//! Audit Log API: `GET /workspaces/{workspace_gid}/audit_log_events` (the events themselves are
//! the world's; a background generator keeps adding them while the simulator runs).
//!
//! The endpoint is a *stream*, unlike every other list endpoint: once the filters have matched
//! something, `next_page` is always present, also when the caller is caught up (`data: []`), and
//! polling again with the last offset returns the events captured since. The offset therefore
//! encodes the position `(created_at, gid)` of the last event returned rather than an index, so
//! events generated later are found by the same offset, while a late event inserted before that
//! position is skipped (as on Asana; the worker's overlap window exists for exactly that case).
//!
//! Page size: the spec's text says "the default limit is 1000 events" but the shared `limit`
//! parameter declares `maximum: 100`. The simulator follows the declared parameter: `limit` must be
//! 1..=100 and defaults to 100.

use axum::Router;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::params::Params;
use super::read::WORKSPACE;
use super::request::ApiRequest;
use crate::sim::config::TokenKind;
use crate::sim::model::world::AuditEvent;
use crate::sim::state::SharedState;
use crate::sim::wire::{self, ApiError, ApiResult};

/// Page size when `limit` is absent (the declared maximum; see the module docs).
pub const DEFAULT_LIMIT: usize = 100;

/// Actor types accepted by the `actor_type` filter, from the spec's enum.
pub const ACTOR_TYPES: &[&str] = &[
    "user",
    "asana",
    "asana_support",
    "anonymous",
    "external_administrator",
];

/// Asana's documented rule, used as the 403 message for every other kind of token.
pub const SERVICE_ACCOUNT_ONLY: &str = "Only Service Accounts in Enterprise Domains can access \
audit log API endpoints. Authentication with a Service Account's personal access token is required.";

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new().route(
        "/workspaces/{workspace_gid}/audit_log_events",
        get(audit_log_events),
    )
}

/// Position of an event in the log: its sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    created_at: DateTime<Utc>,
    gid_len: usize,
    gid: String,
}

impl Position {
    fn of(event: &AuditEvent) -> Position {
        Position {
            created_at: event.created_at,
            gid_len: event.gid.len(),
            gid: event.gid.clone(),
        }
    }

    fn encode(&self) -> String {
        // Nanoseconds: the simulated clock is finer than microseconds.
        let nanos = self.created_at.timestamp_nanos_opt().unwrap_or_default();
        format!("{nanos}:{}", self.gid)
    }

    fn decode(key: &str) -> Option<Position> {
        let (nanos, gid) = key.split_once(':')?;
        let created_at = DateTime::from_timestamp_nanos(nanos.parse().ok()?);
        Some(Position {
            created_at,
            gid_len: gid.len(),
            gid: gid.to_string(),
        })
    }

    fn is_after(&self, event: &AuditEvent) -> bool {
        (event.created_at, event.gid.len(), event.gid.as_str())
            > (self.created_at, self.gid_len, self.gid.as_str())
    }
}

/// The filters of one request.
#[derive(Debug, Default)]
struct Filters {
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    event_type: Option<String>,
    actor_type: Option<String>,
    actor_gid: Option<String>,
    resource_gid: Option<String>,
}

fn parse_time(params: &Params, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "{key}: Invalid date-time value {raw:?}; expected ISO 8601, e.g. 2021-10-08T00:00:00Z"
                ))
            }),
    }
}

impl Filters {
    fn parse(params: &Params) -> Result<Filters, ApiError> {
        let actor_type = params.get("actor_type").map(str::to_string);
        if let Some(kind) = &actor_type
            && !ACTOR_TYPES.contains(&kind.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "actor_type: Not a valid enum value: {kind:?}. Expected one of {}",
                ACTOR_TYPES.join(", ")
            )));
        }
        Ok(Filters {
            start_at: parse_time(params, "start_at")?,
            end_at: parse_time(params, "end_at")?,
            event_type: params.get("event_type").map(str::to_string),
            actor_type,
            actor_gid: params.get("actor_gid").map(str::to_string),
            resource_gid: params.get("resource_gid").map(str::to_string),
        })
    }

    fn matches(&self, event: &AuditEvent) -> bool {
        let body = &event.body;
        let text = |value: &Value| value.as_str().map(str::to_string);
        self.start_at.is_none_or(|t| event.created_at >= t)
            && self.end_at.is_none_or(|t| event.created_at < t)
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| text(&body["event_type"]).as_ref() == Some(t))
            && self
                .actor_type
                .as_ref()
                .is_none_or(|t| text(&body["actor"]["actor_type"]).as_ref() == Some(t))
            && self
                .actor_gid
                .as_ref()
                .is_none_or(|g| text(&body["actor"]["gid"]).as_ref() == Some(g))
            && self
                .resource_gid
                .as_ref()
                .is_none_or(|g| text(&body["resource"]["gid"]).as_ref() == Some(g))
    }
}

async fn audit_log_events(request: ApiRequest) -> ApiResult {
    let ApiRequest {
        state,
        caller,
        gid: workspace_gid,
        params,
    } = request;
    WORKSPACE.find(&state.world(), &workspace_gid, &caller.record.user_gid)?;
    if caller.record.kind != TokenKind::ServiceAccount || !caller.record.enterprise {
        return Err(ApiError::forbidden(SERVICE_ACCOUNT_ONLY));
    }
    let filters = Filters::parse(&params)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let path = format!("/workspaces/{workspace_gid}/audit_log_events");
    let scope = params.scope(&path);
    let now_unix = state.now_unix();
    let after = match &params.offset {
        Some(offset) => {
            let key = state.offsets.decode(offset, &scope, now_unix)?.key;
            Some(
                Position::decode(&key)
                    .ok_or_else(|| ApiError::bad_request("offset: Invalid offset."))?,
            )
        }
        None => None,
    };
    let world = state.world();
    let cutoff = state.audit_cutoff(state.clock.now());
    let events = &world.audit_events;
    let first = match &after {
        Some(position) => events.partition_point(|e| !position.is_after(e)),
        None => 0,
    };
    let data: Vec<&AuditEvent> = events[first..]
        .iter()
        .filter(|e| e.created_at >= cutoff && filters.matches(e))
        .take(limit)
        .collect();
    let last = data.last().map(|e| Position::of(e)).or(after);
    let next_page = last.map(|position| {
        let ttl = state.config.timing.offset_ttl_secs as i64;
        let offset = state
            .offsets
            .encode(&position.encode(), &scope, now_unix, now_unix + ttl);
        wire::next_page(&state.base_url, &path, &params.query, &offset)
    });
    let data = data.into_iter().map(|e| e.body.clone()).collect();
    wire::page(data, next_page, true)
}
