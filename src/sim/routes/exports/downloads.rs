//! The downloads of export files, presigned-URL style: `{origin}/_sim/downloads/{signed-token}`
//! needs no bearer token, supports HTTP Range, and answers S3's XML errors. A URL expires after
//! `timing.download_url_ttl_secs` (then 403 `Request has expired`, so clients learn to read the
//! export again rather than persist URLs) or when a test expires all URLs handed out so far.
//!
//! Imports the state, the export model and `wire` only.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeFile;

use crate::sim::model::exports::Export;
use crate::sim::state::{SharedState, SimState};
use crate::sim::wire::OFFSET_EXPIRED_MESSAGE;

/// Scope under which download tokens are signed (distinct from any pagination scope).
const DOWNLOAD_SCOPE: &str = "export-download";

/// Separates the export gid from the URL generation in a download token's key.
const GENERATION_SEPARATOR: char = '~';

/// The download route, outside `/api/1.0`.
pub fn routes() -> Router<SharedState> {
    Router::new().route("/_sim/downloads/{token}", get(download))
}

/// A download URL for `export`'s file valid for `timing.download_url_ttl_secs` from now.
pub fn download_url(state: &SimState, export: &Export) -> Option<String> {
    export.file()?;
    let now = state.now_unix();
    let ttl = state.config.timing.download_url_ttl_secs as i64;
    let generation = state.exports().mint_generation();
    let key = format!("{}{GENERATION_SEPARATOR}{generation}", export.gid);
    let token = state.offsets.encode(&key, DOWNLOAD_SCOPE, now, now + ttl);
    Some(format!("{}/_sim/downloads/{token}", state.origin))
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>SIMULATED</RequestId><HostId>asana-sim</HostId></Error>"
    );
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

async fn download(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let expired = || {
        state.exports().download_stats.expired += 1;
        s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
    };
    let key = match state
        .offsets
        .decode(&token, DOWNLOAD_SCOPE, state.now_unix())
    {
        Ok(position) => position.key,
        Err(error) if error.message == OFFSET_EXPIRED_MESSAGE => return expired(),
        Err(_) => {
            return s3_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            );
        }
    };
    let Some((gid, generation)) = key
        .rsplit_once(GENERATION_SEPARATOR)
        .and_then(|(gid, generation)| Some((gid.to_string(), generation.parse::<u64>().ok()?)))
    else {
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    };
    if generation != state.exports().url_generation {
        return expired();
    }
    let now = state.clock.now();
    let (path, abort) = {
        let registry = state.exports();
        let Some(export) = registry.exports.get(&gid) else {
            return s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            );
        };
        if export.file_gone(now) {
            return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied");
        }
        match export.file() {
            Some(file) => (file.path.clone(), registry.in_flight()),
            None => {
                return s3_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                );
            }
        }
    };
    let ranged = request.headers().contains_key(header::RANGE);
    match ServeFile::new(&path).try_call(request).await {
        Ok(response) => {
            {
                let mut registry = state.exports();
                registry.download_stats.served += 1;
                if ranged {
                    registry.download_stats.ranged += 1;
                }
            }
            response.map(|body| abortable(Body::new(body), abort, state.clone()))
        }
        Err(_) => s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    }
}

/// `body`, cut with an error (the client sees the connection fail mid-body) once `abort` is
/// cancelled by `/_sim/downloads/expire`.
fn abortable(body: Body, abort: CancellationToken, state: SharedState) -> Body {
    use futures::StreamExt;
    let cut = abort.clone();
    let data = body.into_data_stream().take_until(abort.cancelled_owned());
    let tail = futures::stream::once(async move {
        if cut.is_cancelled() {
            state.exports().download_stats.aborted += 1;
            Some(Err(axum::Error::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "download cut by /_sim/downloads/expire",
            ))))
        } else {
            None
        }
    })
    .filter_map(std::future::ready);
    Body::from_stream(data.chain(tail))
}
