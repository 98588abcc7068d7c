//! Who may act on the status page: the holder of the admin token (`admin.token_file`), as a
//! bearer header (scripts) or through a login form that starts a session (browsers).
//!
//! - The token is read from its file once, at start; only its SHA-256 is kept, and a
//!   candidate is compared by digest in constant time, so neither the token nor how much of it
//!   matched leaks (through memory, logs or timing).
//! - A session is a random id in an `HttpOnly; SameSite=Strict` cookie, kept in memory (a
//!   restart logs everyone out) with a CSRF token that every form POST must carry: the cookie
//!   alone never authorizes an action. The login form itself carries a token matched against a
//!   cookie of its own (double submit), so no other site can log a browser in.
//! - A bearer request needs no CSRF token: a browser never adds that header by itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use rand::RngExt;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "aw_session";
/// The login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "aw_login";
/// How long a session lasts without logging in again.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The shortest admin token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Most sessions kept at once (the oldest is dropped beyond).
const MAX_SESSIONS: usize = 256;

/// Errors reading the admin token.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The file cannot be read.
    #[error(
        "admin.token_file {path:?} cannot be read: {source}; create it (mode 0600) with the admin token, or unset admin.token_file for a read-only status page"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds fewer than [`MIN_TOKEN_CHARS`] characters (besides white space).
    #[error(
        "admin.token_file {path:?} holds fewer than 16 characters; write a long random token into it (e.g. `openssl rand -hex 32`)"
    )]
    Short {
        /// The file.
        path: PathBuf,
    },
}

/// The admin token, as its digest.
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(****)")
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Compares two digests without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

impl AdminToken {
    /// Reads the token from `path` (surrounding white space dropped).
    pub fn from_file(path: &Path) -> Result<Self, AdminTokenError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            AdminTokenError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?);
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(AdminTokenError::Short {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            digest: digest(token),
        })
    }

    /// Whether `candidate` is the token.
    pub fn matches(&self, candidate: &str) -> bool {
        same(&self.digest, &digest(candidate.trim()))
    }
}

/// A fresh random token (hex of 32 bytes) for session ids and CSRF tokens.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// Whether two public-length tokens are equal, compared without an early exit.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    same(&digest(a), &digest(b))
}

struct Session {
    csrf: String,
    expires: Instant,
}

/// The logged-in browsers, by the digest of their session id.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session: its id (for the cookie) and its CSRF token (for the forms).
    pub fn start(&self) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(&id),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        (id, csrf)
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let sessions = self.lock();
        sessions
            .get(&digest(id))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.lock().remove(&digest(id));
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// The bearer token of an `Authorization` header, when there is one.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Who asks for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A script with the token in its `Authorization` header.
    Bearer,
    /// A logged-in browser whose form carried the session's CSRF token.
    Session,
}

impl Actor {
    /// How the action is recorded (a paused job's `paused_by`).
    pub fn label(&self) -> &'static str {
        match self {
            Actor::Bearer => "admin token (bearer)",
            Actor::Session => "status page (admin session)",
        }
    }
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No admin token is configured: the page is read-only.
    Disabled,
    /// Neither a valid bearer token nor a session.
    Unauthenticated,
    /// A bearer token that is not the admin token.
    WrongToken,
    /// A session, but the form did not carry its CSRF token.
    Csrf,
}

impl Refusal {
    /// The HTTP status: 403 when no token can help or the form was forged, 401 otherwise.
    pub fn status(self) -> axum::http::StatusCode {
        match self {
            Refusal::Disabled | Refusal::Csrf => axum::http::StatusCode::FORBIDDEN,
            Refusal::Unauthenticated | Refusal::WrongToken => axum::http::StatusCode::UNAUTHORIZED,
        }
    }

    /// What to tell the caller.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Disabled => {
                "actions are disabled: no admin token is configured; set admin.token_file to a file holding a token and restart the daemon"
            }
            Refusal::Unauthenticated => {
                "this action needs the admin token: log in on the status page, or send it as `Authorization: Bearer TOKEN`"
            }
            Refusal::WrongToken => "the bearer token is not the admin token",
            Refusal::Csrf => {
                "the form's CSRF token is missing or stale; reload the page and try again"
            }
        }
    }
}

/// The admin token and the sessions it opened.
#[derive(Debug)]
pub struct Auth {
    token: Option<AdminToken>,
    sessions: Sessions,
}

impl Auth {
    /// Actions enabled by `token`, or disabled without one.
    pub fn new(token: Option<AdminToken>) -> Self {
        Self {
            token,
            sessions: Sessions::default(),
        }
    }

    /// Whether actions can be enabled at all.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `candidate` is the admin token.
    pub fn token_matches(&self, candidate: &str) -> bool {
        self.token.as_ref().is_some_and(|t| t.matches(candidate))
    }

    /// The sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The CSRF token of the browser's session, if it is logged in.
    pub fn session_csrf(&self, headers: &HeaderMap) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        self.sessions.csrf(&cookie(headers, SESSION_COOKIE)?)
    }

    /// Decides whether a request may act; `form_csrf` is the form's `csrf` field.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        form_csrf: Option<&str>,
    ) -> Result<Actor, Refusal> {
        let Some(token) = &self.token else {
            return Err(Refusal::Disabled);
        };
        if let Some(candidate) = bearer(headers) {
            return if token.matches(&candidate) {
                Ok(Actor::Bearer)
            } else {
                Err(Refusal::WrongToken)
            };
        }
        let Some(expected) = self.session_csrf(headers) else {
            return Err(Refusal::Unauthenticated);
        };
        match form_csrf {
            Some(given) if tokens_equal(given, &expected) => Ok(Actor::Session),
            _ => Err(Refusal::Csrf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_token_comes_from_its_file_trimmed_and_never_shows() {
        let (_dir, path) = token_file("  s3cret-admin-token\n");
        let token = AdminToken::from_file(&path).unwrap();
        assert!(token.matches("s3cret-admin-token"));
        assert!(!token.matches("s3cret-admin-toke"));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("s3cret"));
        let (_dir, short) = token_file(" 0123456789abcde\n");
        let error = AdminToken::from_file(&short).unwrap_err().to_string();
        assert!(error.contains("fewer than 16 characters"), "{error}");
        let error = AdminToken::from_file(Path::new("/nonexistent/admin.token"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot be read"), "{error}");
    }

    #[test]
    fn actions_need_the_bearer_token_or_a_session_with_its_csrf_token() {
        let (_dir, path) = token_file("the-token-0123456789");
        let auth = Auth::new(Some(AdminToken::from_file(&path).unwrap()));
        let mut headers = HeaderMap::new();
        assert_eq!(
            auth.authorize(&headers, None),
            Err(Refusal::Unauthenticated)
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        assert_eq!(auth.authorize(&headers, None), Err(Refusal::WrongToken));
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer the-token-0123456789"),
        );
        assert_eq!(auth.authorize(&headers, None), Ok(Actor::Bearer));

        let (id, csrf) = auth.sessions().start();
        let mut browser = HeaderMap::new();
        browser.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={id}")).unwrap(),
        );
        assert_eq!(auth.authorize(&browser, None), Err(Refusal::Csrf));
        assert_eq!(auth.authorize(&browser, Some("forged")), Err(Refusal::Csrf));
        assert_eq!(auth.authorize(&browser, Some(&csrf)), Ok(Actor::Session));
        auth.sessions().end(&id);
        assert_eq!(
            auth.authorize(&browser, Some(&csrf)),
            Err(Refusal::Unauthenticated)
        );

        let read_only = Auth::new(None);
        assert_eq!(read_only.authorize(&headers, None), Err(Refusal::Disabled));
    }
}
