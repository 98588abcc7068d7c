//! What API handlers extract from a request, in one place: [`ApiRequest`] for calls without a body
//! (who calls, the gid the path names, the parsed query) and [`ApiWrite`] for calls with one.
//! Extraction keeps the order every handler had: the caller, the path, the query, the body, and
//! only then the common parameters, so a request's first fault decides its answer as before.
//!
//! Imports the state and [`super::params`] only.

use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::params::Params;
use crate::sim::state::{Caller, SharedState};
use crate::sim::wire::ApiError;

/// One API call as a handler without a body sees it. A bad `limit` or `opt_fields` is refused
/// here, before the handler runs, as every endpoint refuses them first.
#[derive(Debug)]
pub struct ApiRequest {
    /// The simulator.
    pub state: SharedState,
    /// Who calls (set by the API middleware).
    pub caller: Caller,
    /// The gid the path names, as sent (empty on routes without one).
    pub gid: String,
    /// The query parameters.
    pub params: Params,
}

impl ApiRequest {
    /// The caller's user gid, what `me` stands for.
    pub fn me(&self) -> &str {
        &self.caller.record.user_gid
    }
}

impl FromRequestParts<SharedState> for ApiRequest {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let (caller, gid, query) = caller_path_query(parts, state).await?;
        let params = Params::parse(query).map_err(IntoResponse::into_response)?;
        Ok(ApiRequest {
            state: state.clone(),
            caller,
            gid,
            params,
        })
    }
}

/// One API call with a body (`POST`, `PUT`), as a write handler sees it.
#[derive(Debug)]
pub struct ApiWrite {
    /// The call without its body.
    pub request: ApiRequest,
    /// The body, unread.
    pub body: Bytes,
}

impl ApiWrite {
    /// The body's `data` object; its `options.fields` select the answer's fields when the query
    /// has no `opt_fields`.
    pub fn data(&mut self) -> Result<Map<String, Value>, ApiError> {
        self.request.params.read_body(&self.body)
    }
}

impl FromRequest<SharedState> for ApiWrite {
    type Rejection = Response;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let (caller, gid, query) = caller_path_query(&mut parts, state).await?;
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let params = Params::parse(query).map_err(IntoResponse::into_response)?;
        Ok(ApiWrite {
            request: ApiRequest {
                state: state.clone(),
                caller,
                gid,
                params,
            },
            body,
        })
    }
}

async fn caller_path_query(
    parts: &mut Parts,
    state: &SharedState,
) -> Result<(Caller, String, Vec<(String, String)>), Response> {
    let Extension(caller) = Extension::<Caller>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let gid = Option::<Path<String>>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let Query(query) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((caller, gid.map(|Path(gid)| gid).unwrap_or_default(), query))
}
