//! Organization, graph and resource exports, `/jobs/{gid}`, and the download of export files.

use axum::Router;

use crate::sim::state::SharedState;

/// Exports and jobs created so far.
#[derive(Debug, Default)]
pub struct ExportRegistry {}

/// Routes of this group under `/api/1.0`.
pub fn routes() -> Router<SharedState> {
    Router::new()
}

/// Download routes (presigned-URL style, no token).
pub fn public_routes() -> Router<SharedState> {
    Router::new()
}
