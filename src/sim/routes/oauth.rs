//! OAuth 2.0 endpoints at the origin (not under `/api/1.0`), as Asana serves them:
//! `GET /-/oauth_authorize`, `POST /-/oauth_token` (authorization code with PKCE, refresh token),
//! `POST /-/oauth_revoke` and `POST /-/token_info`, plus `GET /_sim/oauth/grants` so tests can
//! count refresh exchanges per grant (proof of single-flight refresh in the worker).
//!
//! The simulator consents on behalf of each client's configured user: `oauth_authorize`
//! redirects straight back with a code. Issued access tokens go into `state.tokens` (kind
//! `oauth`, with `expires_at` and the grant they came from), so the API middleware authenticates
//! them, answers 401 "The bearer token has expired…" after `timing.access_token_ttl_secs`, and
//! 401 once their grant is revoked. Errors use the OAuth shape `{"error", "error_description"}`,
//! not Asana's `errors[]`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::sim::config::{OAuthClientSpec, TokenKind};
use crate::sim::state::{AuthCode, Grant, SharedState, SimState, TokenRecord};
use crate::sim::wire::with_query;

/// How long an authorization code may be exchanged (simulated seconds), as in common OAuth
/// servers; Asana does not document it.
pub const AUTH_CODE_TTL_SECS: i64 = 600;

/// Scope granted when the authorize request names none (Asana: full permissions).
pub const DEFAULT_SCOPE: &str = "default";

/// Routes of this group, at the origin.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/-/oauth_authorize", get(authorize))
        .route("/-/oauth_token", post(token))
        .route("/-/oauth_revoke", post(revoke))
        .route("/-/token_info", post(token_info))
        .route("/_sim/oauth/grants", get(grants))
}

/// An OAuth error response.
fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let mut response = (
        status,
        axum::Json(json!({ "error": error, "error_description": description.into() })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The form body, or the OAuth `invalid_request` answer when it is not a form.
fn parse_form(
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<HashMap<String, String>, Box<Response>> {
    form.map(|Form(form)| form).map_err(|rejection| {
        Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "The body must be form-encoded (application/x-www-form-urlencoded): {rejection}"
            ),
        ))
    })
}

/// 400 `invalid_request` for a required parameter that was not sent.
fn missing(key: &str) -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!("{key} is required"),
    )
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::rng().random();
    format!("{prefix}/{}", hex::encode(bytes))
}

fn find_client(state: &SimState, client_id: &str) -> Option<OAuthClientSpec> {
    state
        .config
        .effective_oauth_clients()
        .into_iter()
        .find(|c| c.client_id == client_id)
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri is not a valid URI",
        ),
    }
}

async fn authorize(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let get = |key: &str| query.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id") else {
        return missing("client_id");
    };
    if find_client(&state, client_id).is_none() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            format!("Unknown client_id {client_id:?}"),
        );
    }
    let Some(redirect_uri) = get("redirect_uri") else {
        return missing("redirect_uri");
    };
    if !(redirect_uri.starts_with("http://")
        || redirect_uri.starts_with("https://")
        || redirect_uri.starts_with("urn:ietf:wg:oauth:2.0:oob"))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri must be an absolute http(s) URI",
        );
    }
    let client_state = get("state").unwrap_or("");
    let fail = |error: &str, description: &str| {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if !client_state.is_empty() {
            pairs.push(("state", client_state));
        }
        redirect(&with_query(redirect_uri, pairs))
    };
    if get("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "The simulator supports response_type=code only",
        );
    }
    let code_challenge = get("code_challenge").map(str::to_string);
    if code_challenge.is_some() && get("code_challenge_method") != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    let code = random_token("code");
    let scope = get("scope").unwrap_or(DEFAULT_SCOPE).to_string();
    state
        .auth_codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            code.clone(),
            AuthCode {
                client_id: client_id.to_string(),
                redirect_uri: redirect_uri.to_string(),
                code_challenge,
                scope,
                expires_at: state.clock.now() + chrono::Duration::seconds(AUTH_CODE_TTL_SECS),
            },
        );
    let mut pairs = vec![("code", code.as_str())];
    if !client_state.is_empty() {
        pairs.push(("state", client_state));
    }
    redirect(&with_query(redirect_uri, pairs))
}

/// Client credentials from the form or from HTTP Basic authentication.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        && let Ok(decoded) = STANDARD.decode(basic.trim())
        && let Ok(text) = String::from_utf8(decoded)
        && let Some((id, secret)) = text.split_once(':')
    {
        return (Some(id.to_string()), Some(secret.to_string()));
    }
    (
        form.get("client_id").cloned(),
        form.get("client_secret").cloned(),
    )
}

/// Checks the client's id and secret; `None` means the 401 `invalid_client` answer is due.
fn authenticate_client(
    state: &SimState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<OAuthClientSpec> {
    let (id, secret) = client_credentials(headers, form);
    id.as_deref()
        .and_then(|id| find_client(state, id))
        .filter(|client| secret.as_deref() == Some(client.client_secret.as_str()))
}

/// A form a client posts with its credentials (HTTP Basic, or `client_id` and `client_secret`
/// fields), and that client: refused with 400 `invalid_request` when the body is not a form, 401
/// `invalid_client` when the credentials do not match.
struct ClientForm {
    client: OAuthClientSpec,
    form: HashMap<String, String>,
}

impl FromRequest<SharedState> for ClientForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let form = Form::<HashMap<String, String>>::from_request(request, state).await;
        let form = parse_form(form).map_err(|response| *response)?;
        let client = authenticate_client(state, &headers, &form).ok_or_else(invalid_client)?;
        Ok(ClientForm { client, form })
    }
}

fn invalid_client() -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed: unknown client_id or wrong client_secret",
    )
}

/// Issues an access token from `grant` (identified by `refresh_token`) and returns the token
/// response body.
fn issue_access_token(state: &SimState, refresh_token: &str, grant: &Grant) -> Value {
    let access_token = random_token("2");
    let ttl = state.config.timing.access_token_ttl_secs;
    state
        .tokens
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            access_token.clone(),
            TokenRecord {
                name: format!("oauth:{}", grant.client_id),
                kind: TokenKind::Oauth,
                tier: grant.tier,
                user_gid: grant.user_gid.clone(),
                enterprise: grant.enterprise,
                expires_at: Some(state.clock.now() + chrono::Duration::seconds(ttl as i64)),
                revoked: false,
                grant: Some(refresh_token.to_string()),
                forbidden_projects: Vec::new(),
                workspace_events_refused: false,
            },
        );
    let user = {
        let world = state.world();
        world.users.get(&grant.user_gid).map(|u| {
            json!({
                "id": u.gid.parse::<u64>().ok(),
                "gid": u.gid,
                "name": u.name,
                "email": u.email,
            })
        })
    };
    json!({
        "access_token": access_token,
        "expires_in": ttl,
        "token_type": "bearer",
        "data": user.unwrap_or(Value::Null),
    })
}

fn no_store(body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn token(
    State(state): State<SharedState>,
    ClientForm { client, form }: ClientForm,
) -> Response {
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => exchange_code(&state, &client, &form),
        Some("refresh_token") => refresh(&state, &client, &form),
        Some(other) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!(
                "grant_type {other:?} is not supported; use authorization_code or refresh_token"
            ),
        ),
        None => missing("grant_type"),
    }
}

fn exchange_code(
    state: &SimState,
    client: &OAuthClientSpec,
    form: &HashMap<String, String>,
) -> Response {
    let Some(code) = form.get("code") else {
        return missing("code");
    };
    // A code is single use: it is gone whether or not this exchange succeeds.
    let issued = state
        .auth_codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(code);
    let Some(issued) = issued else {
        return invalid_grant("The authorization code is invalid or was already used");
    };
    if issued.client_id != client.client_id {
        return invalid_grant("The authorization code was issued to another client");
    }
    if state.clock.now() >= issued.expires_at {
        return invalid_grant("The authorization code has expired");
    }
    if form.get("redirect_uri").map(String::as_str) != Some(issued.redirect_uri.as_str()) {
        return invalid_grant("redirect_uri does not match the one of the authorization request");
    }
    if let Some(challenge) = &issued.code_challenge {
        let Some(verifier) = form.get("code_verifier") else {
            return invalid_grant("code_verifier is required for this authorization code");
        };
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if &computed != challenge {
            return invalid_grant("code_verifier does not match the code_challenge");
        }
    }
    let user_gid = state
        .world()
        .users
        .at(client.user)
        .map(|u| u.gid.clone())
        .unwrap_or_default();
    let grant = Grant {
        client_id: client.client_id.clone(),
        user_gid,
        tier: client.tier,
        enterprise: client.enterprise,
        scope: issued.scope,
        revoked: false,
        refreshes: 0,
    };
    let refresh_token = random_token("1");
    state
        .grants
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(refresh_token.clone(), grant.clone());
    let mut body = issue_access_token(state, &refresh_token, &grant);
    body["refresh_token"] = json!(refresh_token);
    no_store(body)
}

fn refresh(state: &SimState, client: &OAuthClientSpec, form: &HashMap<String, String>) -> Response {
    let Some(refresh_token) = form.get("refresh_token") else {
        return missing("refresh_token");
    };
    let grant = {
        let mut grants = state.grants.write().unwrap_or_else(|p| p.into_inner());
        match grants.get_mut(refresh_token) {
            Some(grant) if !grant.revoked && grant.client_id == client.client_id => {
                grant.refreshes += 1;
                grant.clone()
            }
            _ => return invalid_grant("The refresh token is invalid or has been revoked"),
        }
    };
    no_store(issue_access_token(state, refresh_token, &grant))
}

async fn revoke(
    State(state): State<SharedState>,
    ClientForm { client, form }: ClientForm,
) -> Response {
    let Some(token) = form.get("token").filter(|t| !t.is_empty()) else {
        return missing("token");
    };
    if state.token(token).is_some() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Access tokens (bearer tokens) cannot be revoked; revoke the refresh token instead",
        );
    }
    let revoked = {
        let mut grants = state.grants.write().unwrap_or_else(|p| p.into_inner());
        match grants.get_mut(token) {
            Some(grant) if grant.client_id == client.client_id => {
                grant.revoked = true;
                true
            }
            _ => false,
        }
    };
    if revoked {
        let mut tokens = state.tokens.write().unwrap_or_else(|p| p.into_inner());
        for record in tokens.values_mut() {
            if record.grant.as_deref() == Some(token.as_str()) {
                record.revoked = true;
            }
        }
    }
    // Asana answers 200 whether the token was deauthorized or not found.
    StatusCode::OK.into_response()
}

async fn token_info(
    State(state): State<SharedState>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let form = match parse_form(form) {
        Ok(form) => form,
        Err(response) => return *response,
    };
    let Some(token) = form.get("token").filter(|t| !t.is_empty()) else {
        return missing("token");
    };
    let now = state.clock.now();
    if let Some(record) = state.token(token) {
        let scope = record
            .grant
            .as_deref()
            .and_then(|g| {
                state
                    .grants
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(g)
                    .map(|grant| grant.scope.clone())
            })
            .unwrap_or_else(|| DEFAULT_SCOPE.to_string());
        let exp = record.expires_at.map(|t| t.timestamp());
        let expires_in = record.expires_at.map(|t| (t - now).num_seconds().max(0));
        let active = !record.revoked && record.expires_at.is_none_or(|t| now < t);
        let mut body = json!({
            "token_type": "bearer",
            "expires_in": expires_in,
            "exp": exp,
            "scope": scope,
            "active": active,
        });
        if record.kind == TokenKind::Oauth
            && let Some(client_id) = record.name.strip_prefix("oauth:")
        {
            body["client_id"] = json!(client_id);
        }
        return no_store(body);
    }
    let grant = state
        .grants
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
        .cloned();
    match grant {
        Some(grant) => no_store(json!({
            "token_type": "refresh",
            "expires_in": null,
            "exp": null,
            "scope": grant.scope,
            "active": !grant.revoked,
            "client_id": grant.client_id,
        })),
        None => no_store(json!({ "active": false })),
    }
}

/// Grants with their refresh counts (admin; the refresh tokens are simulator tokens, not secrets).
async fn grants(State(state): State<SharedState>) -> Response {
    let grants = state.grants.read().unwrap_or_else(|p| p.into_inner());
    let mut list: Vec<Value> = grants
        .iter()
        .map(|(token, grant)| {
            json!({
                "refresh_token": token,
                "client_id": grant.client_id,
                "user_gid": grant.user_gid,
                "scope": grant.scope,
                "revoked": grant.revoked,
                "refreshes": grant.refreshes,
            })
        })
        .collect();
    list.sort_by(|a, b| {
        a["refresh_token"]
            .as_str()
            .cmp(&b["refresh_token"].as_str())
    });
    axum::Json(json!({ "grants": list })).into_response()
}
