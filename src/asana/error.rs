//! One error type for everything the client can meet: every status Asana documents, the OAuth
//! endpoints' `{"error": …}` shape, transport failures, malformed bodies, cancellation and the
//! budget. Each message says what to do next, and the variants carry what a caller needs to act
//! (the new `sync` of a 412, the `Retry-After` of a 429, the support `phrase` of a 500).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::budget::BudgetError;

/// Errors from the Asana client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AsanaError {
    /// The configured base URL cannot be used.
    #[error(
        "invalid Asana base URL {url:?}: {reason}; use https://app.asana.com/api/1.0 (plain http only for loopback)"
    )]
    InvalidBaseUrl {
        /// The URL as configured.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The HTTP client could not be built (TLS backend, bad header value).
    #[error("cannot build the HTTP client: {0}; check the client settings")]
    Setup(String),
    /// 400: a missing or malformed parameter.
    #[error(
        "Asana rejected the request (400 Bad Request: {message}); fix the parameters named in the message"
    )]
    BadRequest {
        /// Asana's message.
        message: String,
    },
    /// 400 naming `offset:`: a pagination offset has expired.
    #[error(
        "the pagination offset expired (400: {message}); restart the listing from a filter such as `modified_since` or `start_at`"
    )]
    OffsetExpired {
        /// Asana's message.
        message: String,
    },
    /// 401 for an OAuth access token past its expiry.
    #[error(
        "the access token has expired (401); refresh it with the OAuth refresh token, then retry"
    )]
    TokenExpired {
        /// Asana's message.
        message: String,
    },
    /// 401 for any other reason: unknown, revoked or malformed token, or an app disabled in the
    /// workspace.
    #[error(
        "Asana did not accept the token (401: {message}); it is invalid or revoked, or the app is disabled in this workspace: replace the credential"
    )]
    Unauthorized {
        /// Asana's message.
        message: String,
    },
    /// 402: the feature needs a premium workspace.
    #[error(
        "this needs a premium Asana workspace (402: {message}); upgrade the workspace or disable the job that needs it"
    )]
    PaymentRequired {
        /// Asana's message.
        message: String,
    },
    /// 403: no access to the object, a missing OAuth scope, or a second concurrent export.
    #[error(
        "access denied (403: {message}); grant the token's user access (or the OAuth scope) to this object, or wait for the running export to finish"
    )]
    Forbidden {
        /// Asana's message.
        message: String,
    },
    /// 404: no such object or route.
    #[error(
        "not found (404: {message}); check the gid in the job definition, the object may have been deleted"
    )]
    NotFound {
        /// Asana's message.
        message: String,
    },
    /// 412 from the events API: the sync token is missing or expired. `sync` is the new token.
    #[error(
        "the events sync token is missing or expired (412); re-read the full data set, then continue with the new sync token"
    )]
    SyncExpired {
        /// The fresh sync token Asana returned.
        sync: String,
        /// Asana's message.
        message: String,
    },
    /// 429 that outlasted the retries.
    #[error(
        "rate limited by Asana (429) and out of retries; retry after {retry_after:?}, or give this token fewer jobs"
    )]
    RateLimited {
        /// `Retry-After` of the last 429 (server time).
        retry_after: Duration,
        /// Asana's message.
        message: String,
    },
    /// 451: blocked for legal reasons (embargoed IP).
    #[error(
        "Asana refused the request for legal reasons (451: {message}); the worker's IP address is probably embargoed, alert an operator"
    )]
    LegalBlock {
        /// Asana's message.
        message: String,
    },
    /// 5xx that outlasted the retries.
    #[error(
        "Asana failed ({status}: {message}{}); retry later, and quote the phrase to Asana support if it persists",
        phrase.as_ref().map(|p| format!(", phrase {p:?}")).unwrap_or_default()
    )]
    Server {
        /// The status (500, 502, 503, 504, …).
        status: u16,
        /// Asana's message.
        message: String,
        /// The support phrase of a 500.
        phrase: Option<String>,
    },
    /// A status Asana does not document.
    #[error("unexpected HTTP status {status} from Asana ({message}); report it with the request")]
    UnexpectedStatus {
        /// The status.
        status: u16,
        /// The message, or the start of the body.
        message: String,
    },
    /// An OAuth endpoint answered `{"error": …}` (e.g. `invalid_grant`: the grant was revoked).
    #[error(
        "the OAuth endpoint refused the request ({status}: {error}{}); for invalid_grant the user must authorize the app again",
        description.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        error: String,
        /// `error_description`, when sent.
        description: Option<String>,
    },
    /// The request or the response timed out.
    #[error(
        "request to Asana timed out ({0}); Asana or the network is slow, the next run will retry"
    )]
    Timeout(#[source] reqwest::Error),
    /// The connection failed or was cut (reset, truncated body).
    #[error(
        "connection to Asana failed ({0}); check network access to Asana, the next run will retry"
    )]
    Transport(#[source] reqwest::Error),
    /// The response was not the JSON Asana documents.
    #[error(
        "malformed response from Asana ({context}: {message}); report it, the data was not used"
    )]
    Decode {
        /// What was being read.
        context: String,
        /// The parser's description.
        message: String,
    },
    /// The credential's token provider could not supply a token: a refresh failed (transient:
    /// the token endpoint was unreachable, or the new tokens could not be stored), or the
    /// credential is known to be revoked (not transient).
    #[error("{message}")]
    Credential {
        /// What happened and what to do next (never a token).
        message: String,
        /// Whether trying again later may succeed.
        transient: bool,
    },
    /// The caller's cancellation token fired.
    #[error("cancelled; the request was abandoned because the job is stopping")]
    Cancelled,
    /// Waiting for the rate budget failed.
    #[error(transparent)]
    Budget(#[from] BudgetError),
}

impl AsanaError {
    /// The HTTP status, for errors that came from a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            AsanaError::BadRequest { .. } | AsanaError::OffsetExpired { .. } => Some(400),
            AsanaError::TokenExpired { .. } | AsanaError::Unauthorized { .. } => Some(401),
            AsanaError::PaymentRequired { .. } => Some(402),
            AsanaError::Forbidden { .. } => Some(403),
            AsanaError::NotFound { .. } => Some(404),
            AsanaError::SyncExpired { .. } => Some(412),
            AsanaError::RateLimited { .. } => Some(429),
            AsanaError::LegalBlock { .. } => Some(451),
            AsanaError::Server { status, .. }
            | AsanaError::UnexpectedStatus { status, .. }
            | AsanaError::OAuth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the failure is transient (worth retrying a safe request): 429, 5xx, timeouts and
    /// cut connections.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AsanaError::RateLimited { .. }
                | AsanaError::Server { .. }
                | AsanaError::Timeout(_)
                | AsanaError::Transport(_)
                | AsanaError::Credential {
                    transient: true,
                    ..
                }
        )
    }

    /// Whether the error means a person must authorize the credential again: Asana rejected
    /// the token (401), the OAuth grant is gone (`invalid_grant`, `invalid_client`), or the
    /// credential is already known to be revoked.
    pub fn needs_reauth(&self) -> bool {
        match self {
            AsanaError::Unauthorized { .. } | AsanaError::TokenExpired { .. } => true,
            AsanaError::OAuth { error, .. } => {
                matches!(
                    error.as_str(),
                    "invalid_grant" | "invalid_client" | "unauthorized_client"
                )
            }
            AsanaError::Credential { transient, .. } => !transient,
            _ => false,
        }
    }

    /// What Asana refused, for an error where [`AsanaError::needs_reauth`] holds, without the
    /// advice of its message: a caller that says what to do in its own words (which command
    /// replaces the credential, which job to run again) would otherwise repeat it.
    pub fn rejection(&self) -> String {
        match self {
            AsanaError::Unauthorized { message } => format!(
                "Asana did not accept the token (401: {message}); it is invalid or revoked, or the app is disabled in this workspace"
            ),
            AsanaError::TokenExpired { .. } => "the access token has expired (401)".to_string(),
            AsanaError::OAuth {
                status,
                error,
                description,
            } => format!(
                "the OAuth endpoint refused the request ({status}: {error}{})",
                description
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            other => other.to_string(),
        }
    }

    /// Metric label of the error's class.
    pub fn label(&self) -> &'static str {
        match self {
            AsanaError::Timeout(_) => "timeout",
            AsanaError::Transport(_) => "transport",
            AsanaError::Decode { .. } => "decode",
            AsanaError::Credential { .. } => "credential",
            AsanaError::Cancelled | AsanaError::Budget(_) => "cancelled",
            _ => "error",
        }
    }

    /// Maps a reqwest failure to a timeout or transport error.
    pub fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            AsanaError::Timeout(error)
        } else if error.is_decode() {
            AsanaError::Decode {
                context: "response body".into(),
                message: error.to_string(),
            }
        } else {
            AsanaError::Transport(error)
        }
    }

    /// Builds the error for a non-2xx response from its status, headers and body. Understands
    /// Asana's `{"errors":[{message, help, phrase}]}` and the OAuth `{"error", "error_description"}`.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let code = status.as_u16();
        if let Some(Value::Object(map)) = &parsed
            && !map.contains_key("errors")
            && let Some(error) = map.get("error").and_then(Value::as_str)
        {
            return AsanaError::OAuth {
                status: code,
                error: error.to_string(),
                description: map
                    .get("error_description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            };
        }
        let first = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .and_then(|errors| errors.first());
        let message = first
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("no message")
                        .to_string()
                } else {
                    text.chars().take(200).collect()
                }
            });
        let phrase = first
            .and_then(|e| e.get("phrase"))
            .and_then(Value::as_str)
            .map(str::to_string);
        match code {
            400 if message.starts_with("offset:") && message.contains("expired") => {
                AsanaError::OffsetExpired { message }
            }
            400 => AsanaError::BadRequest { message },
            401 if message.contains("expired") => AsanaError::TokenExpired { message },
            401 => AsanaError::Unauthorized { message },
            402 => AsanaError::PaymentRequired { message },
            403 => AsanaError::Forbidden { message },
            404 => AsanaError::NotFound { message },
            412 => {
                let sync = parsed
                    .as_ref()
                    .and_then(|v| v.get("sync"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match sync {
                    Some(sync) => AsanaError::SyncExpired { sync, message },
                    None => AsanaError::Decode {
                        context: "412 Precondition Failed".into(),
                        message: "the body carries no `sync` token".into(),
                    },
                }
            }
            // The spec maps 424 to TooManyRequests on two operations (a spec bug); treat it as 429.
            429 | 424 => AsanaError::RateLimited {
                retry_after: retry_after(headers).unwrap_or(Duration::from_secs(60)),
                message,
            },
            451 => AsanaError::LegalBlock { message },
            500..=599 => AsanaError::Server {
                status: code,
                message,
                phrase,
            },
            _ => AsanaError::UnexpectedStatus {
                status: code,
                message,
            },
        }
    }
}

/// `Retry-After` as seconds (Asana sends an integer); HTTP dates are not used by Asana.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = raw.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}
