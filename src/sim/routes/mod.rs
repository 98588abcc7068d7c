//! Simulated endpoints: thin HTTP adapters over the model, one module per endpoint group. Every
//! handler returns [`ApiResult`](crate::sim::wire::ApiResult) and reads the caller from the
//! request extensions (set by the API middleware).
//!
//! Endpoint modules import the state, the model, the foundations and the shared plumbing here —
//! [`request`] (what handlers extract), [`params`] (query parameters), [`answer`] (objects,
//! created objects, pages) and [`read`] (the read-endpoint skeleton) — but never each other. Reads are registered through
//! [`read::ReadRoutes`]: adding one is a route, a [`read::Kind`] and a selector of a few lines.

pub mod answer;
pub mod params;
pub mod read;
pub mod request;

pub mod attachments;
pub mod audit_log;
pub mod batch;
pub mod custom_fields;
pub mod events;
pub mod exports;
pub mod goals;
pub mod memberships;
pub mod oauth;
pub mod portfolios;
pub mod projects;
pub mod search;
pub mod status_updates;
pub mod stories;
pub mod tags;
pub mod tasks;
pub mod teams;
pub mod time_tracking;
pub mod users;

use axum::Router;

use super::state::SharedState;

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
        .merge(memberships::routes())
        .merge(portfolios::routes())
        .merge(goals::routes())
        .merge(attachments::routes())
        .merge(time_tracking::routes())
        .merge(batch::routes(api_routes))
        .merge(audit_log::routes())
}

/// Routes outside `/api/1.0` without token authentication (OAuth endpoints, export downloads).
pub fn public_routes() -> Router<SharedState> {
    Router::new()
        .merge(exports::public_routes())
        .merge(oauth::routes())
}
