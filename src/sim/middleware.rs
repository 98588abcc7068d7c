//! What happens to every API request before and after its handler: authentication, the rate and
//! concurrency limits, and injected faults (errors, latency, resets, truncated bodies, hangs).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::stream;
use rand::RngExt;

use super::limits::{RejectCause, RequestClass};
use super::state::{Caller, SharedState};
use super::wire::ApiError;

/// Resolves the bearer token into a [`Caller`] request extension, or answers 401.
pub fn authenticate(state: &SharedState, request: &Request) -> Result<Caller, ApiError> {
    let header_value = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let token = header_value
        .strip_prefix("Bearer ")
        .or_else(|| header_value.strip_prefix("bearer "))
        .ok_or_else(ApiError::unauthorized)?
        .trim();
    let record = state.token(token).ok_or_else(ApiError::unauthorized)?;
    if record.revoked {
        return Err(ApiError::unauthorized());
    }
    // A deactivated user's tokens stop working (`POST /_sim/users/{gid}/deactivate`).
    if state
        .world()
        .users
        .get(&record.user_gid)
        .is_some_and(|user| !user.active)
    {
        return Err(ApiError::unauthorized());
    }
    if let Some(expires_at) = record.expires_at
        && state.clock.now() >= expires_at
    {
        return Err(ApiError::token_expired());
    }
    Ok(Caller {
        token: token.to_string(),
        record,
    })
}

fn class_of(method: &Method) -> RequestClass {
    if method == Method::GET || method == Method::HEAD {
        RequestClass::Read
    } else {
        RequestClass::Write
    }
}

/// Whether a path is the task search endpoint (its own 60/min bucket).
pub fn is_search(path: &str) -> bool {
    path.ends_with("/tasks/search")
}

/// The middleware around every `/api/1.0` route.
pub async fn api_layer(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match authenticate(&state, &request) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let class = class_of(request.method());
    let search = is_search(request.uri().path());
    let token = caller.token.clone();
    let admitted = state.limits.admit(
        &token,
        caller.record.tier,
        class,
        search,
        state.clock.sim_secs(),
    );
    let in_flight = match admitted {
        Ok(slot) => slot,
        Err((_, retry_after)) => {
            state.limits.record_status(&token, 429);
            return ApiError::too_many_requests(retry_after).into_response();
        }
    };
    request.extensions_mut().insert(caller);

    let faults = state.faults();
    let decision = {
        let mut rng = rand::rng();
        let latency = faults.latency_ms
            + if faults.jitter_ms > 0 {
                rng.random_range(0..=faults.jitter_ms)
            } else {
                0
            };
        let roll: f64 = rng.random();
        let mut threshold = 0.0;
        let mut pick = |rate: f64| {
            threshold += rate;
            roll < threshold
        };
        let injected = if pick(faults.error_429) {
            Injected::TooMany
        } else if pick(faults.error_500) {
            Injected::Status(StatusCode::INTERNAL_SERVER_ERROR)
        } else if pick(faults.error_502) {
            Injected::Status(StatusCode::BAD_GATEWAY)
        } else if pick(faults.error_503) {
            Injected::Status(StatusCode::SERVICE_UNAVAILABLE)
        } else if pick(faults.error_504) {
            Injected::Status(StatusCode::GATEWAY_TIMEOUT)
        } else if pick(faults.reset) {
            Injected::Reset
        } else if pick(faults.truncate) {
            Injected::Truncate
        } else if pick(faults.hang) {
            Injected::Hang
        } else {
            Injected::None
        };
        (latency, injected)
    };
    let (latency_ms, injected) = decision;
    if latency_ms > 0 {
        tokio::time::sleep(state.clock.to_real(Duration::from_millis(latency_ms))).await;
    }
    let response = match injected {
        Injected::TooMany => {
            state.limits.record_rejection(&token, RejectCause::Injected);
            ApiError::too_many_requests(faults.retry_after_secs.max(1)).into_response()
        }
        Injected::Status(status) => ApiError::server_error(status).into_response(),
        Injected::Hang => {
            tokio::time::sleep(
                state
                    .clock
                    .to_real(Duration::from_millis(faults.hang_ms.max(1))),
            )
            .await;
            ApiError::server_error(StatusCode::GATEWAY_TIMEOUT).into_response()
        }
        Injected::Reset => reset_response(),
        Injected::Truncate => truncate(next.run(request).await).await,
        Injected::None => next.run(request).await,
    };
    state
        .limits
        .record_status(&token, response.status().as_u16());
    drop(in_flight);
    response
}

#[derive(Debug, Clone, Copy)]
enum Injected {
    None,
    TooMany,
    Status(StatusCode),
    Reset,
    Truncate,
    Hang,
}

/// A response whose body fails before any byte: hyper drops the connection, which the client
/// sees as a reset or an incomplete message.
fn reset_response() -> Response {
    let body = Body::from_stream(stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Sends the headers and the first half of the body with the full `Content-Length`, then drops
/// the connection.
async fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, bytes.len().into());
    // Yield the first half, give hyper a moment to flush it, then fail the body.
    let chunks = stream::unfold(Some(half), |half| async move {
        match half {
            Some(half) => Some((Ok(half), None)),
            None => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated truncated body",
                    )),
                    None,
                ))
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(chunks))
}
