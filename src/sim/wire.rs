//! Asana's wire conventions, shared by every simulated endpoint: the `{"data": …}` envelope, the
//! `{"errors": [...]}` error body, `limit`/`offset` pagination with expiring opaque offsets,
//! `opt_fields` projection, timestamps and query-string encoding.
//!
//! Keeping these in one place is what makes the simulator faithful: an endpoint cannot forget the
//! envelope or invent its own error shape, because it only ever returns [`ApiResult`].
//!
//! The bottom layer of the simulator: imports nothing of it.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Asana's `help` text, attached to every error body like the real service does.
pub const ERROR_HELP: &str = "For more information on API status codes and how to handle them, \
read the docs on errors: https://developers.asana.com/docs/errors";

/// Message Asana sends when a pagination offset has expired (observed wording).
pub const OFFSET_EXPIRED_MESSAGE: &str = "offset: Your pagination token has expired.";

/// Message for an expired OAuth bearer token, in Asana's words.
pub const TOKEN_EXPIRED_MESSAGE: &str = "The bearer token has expired. If you have a refresh token, \
please use it to request a new bearer token, otherwise allow the user to re-authenticate.";

/// Largest result an unpaginated list request may return before Asana refuses it.
pub const UNPAGINATED_MAX: usize = 1000;

/// Format of Asana timestamps: `2012-02-22T02:06:58.147Z`.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// An error response in Asana's shape. Endpoints build these instead of raw responses so the body
/// is always `{"errors":[{"message","help"}]}` (plus `phrase` on 500s).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status to send.
    pub status: StatusCode,
    /// The human-readable `message` field.
    pub message: String,
    /// Extra top-level fields (the events API's `sync` on 412).
    pub extra: Map<String, Value>,
    /// Extra headers (`Retry-After` on 429).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with the given status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    /// 400 for a missing or malformed parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 for a missing or unknown token.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Not Authorized")
    }

    /// 401 for an OAuth access token past its expiry.
    pub fn token_expired() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, TOKEN_EXPIRED_MESSAGE)
    }

    /// 402 for features reserved to premium workspaces.
    pub fn payment_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYMENT_REQUIRED, message)
    }

    /// 403 for objects or features the token may not access.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 for unknown objects.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("{what}: Unknown object: not found"),
        )
    }

    /// 404 for an unknown route.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "No matching route for request")
    }

    /// 429 with `Retry-After` in (simulated) seconds.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "You've made too many requests and hit a rate limit. Please retry after the given amount of time.",
        );
        error.headers.push((
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs.max(1)),
        ));
        error
    }

    /// A 5xx as Asana sends it; 500s carry a support `phrase`.
    pub fn server_error(status: StatusCode) -> Self {
        let message = match status.as_u16() {
            500 => "Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Server Error",
        };
        let mut error = Self::new(status, message);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            error
                .extra
                .insert("__phrase".into(), json!("6 sad squid snuggle softly"));
        }
        error
    }

    /// Adds a top-level field to the body (e.g. `sync` on the events 412).
    pub fn with_field(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("message".into(), json!(self.message));
        error.insert("help".into(), json!(ERROR_HELP));
        let mut body = Map::new();
        for (key, value) in self.extra {
            if key == "__phrase" {
                error.insert("phrase".into(), value);
            } else {
                body.insert(key, value);
            }
        }
        body.insert("errors".into(), Value::Array(vec![Value::Object(error)]));
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// What every endpoint returns.
pub type ApiResult = Result<Response, ApiError>;

/// `200 {"data": value}`.
pub fn ok(data: Value) -> ApiResult {
    Ok(axum::Json(json!({ "data": data })).into_response())
}

/// `201 {"data": value}` with `Location` naming where the object can be read back.
pub fn created(data: Value, location: &str) -> ApiResult {
    let mut response = (StatusCode::CREATED, axum::Json(json!({ "data": data }))).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `200 {"data": [...], "next_page": ...}` for list endpoints.
pub fn page(data: Vec<Value>, next_page: Option<Value>, paginated: bool) -> ApiResult {
    let mut body = Map::new();
    body.insert("data".into(), Value::Array(data));
    if paginated {
        body.insert("next_page".into(), next_page.unwrap_or(Value::Null));
    }
    Ok(axum::Json(Value::Object(body)).into_response())
}

/// Parses a `limit` parameter: 1..=100 as Asana enforces.
pub fn parse_limit(raw: Option<&str>) -> Result<Option<usize>, ApiError> {
    match raw {
        None => Ok(None),
        Some(text) => match text.parse::<usize>() {
            Ok(value) if (1..=100).contains(&value) => Ok(Some(value)),
            _ => Err(ApiError::bad_request(
                "limit: The value must be between 1 and 100.",
            )),
        },
    }
}

/// Signs and checks opaque pagination offsets. Offsets carry the position, a fingerprint of the
/// query they belong to and an expiry, like Asana's JWT offsets; clients must treat them as opaque.
#[derive(Debug, Clone)]
pub struct OffsetCodec {
    secret: [u8; 16],
}

/// What an offset decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetPosition {
    /// Endpoint-defined position key (an index or a sort key).
    pub key: String,
}

impl OffsetCodec {
    /// A codec whose signatures depend on `seed`, so offsets of one simulator do not validate
    /// on another.
    pub fn new(seed: u64) -> Self {
        let digest = Sha256::digest(format!("asana-sim-offsets-{seed}").as_bytes());
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&digest[..16]);
        Self { secret }
    }

    fn signature(&self, payload: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        hasher.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(&hasher.finalize()[..16])
    }

    /// Encodes a position valid until `exp` (unix seconds, simulated time).
    pub fn encode(&self, key: &str, scope: &str, iat: i64, exp: i64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            json!({ "border_rank": key, "scope": scope_hash(scope), "iat": iat, "exp": exp })
                .to_string(),
        );
        let unsigned = format!("{header}.{payload}");
        let signature = self.signature(&unsigned);
        format!("{unsigned}.{signature}")
    }

    /// Decodes an offset for `scope` at simulated unix time `now`: 400 with Asana's messages when
    /// it is forged, belongs to another query, or has expired.
    pub fn decode(&self, offset: &str, scope: &str, now: i64) -> Result<OffsetPosition, ApiError> {
        let invalid = || ApiError::bad_request("offset: Invalid offset.");
        let (unsigned, signature) = offset.rsplit_once('.').ok_or_else(invalid)?;
        if self.signature(unsigned) != signature {
            return Err(invalid());
        }
        let (_, payload) = unsigned.split_once('.').ok_or_else(invalid)?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let claims: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if claims["scope"].as_str() != Some(scope_hash(scope).as_str()) {
            return Err(invalid());
        }
        let exp = claims["exp"].as_i64().ok_or_else(invalid)?;
        if now >= exp {
            return Err(ApiError::bad_request(OFFSET_EXPIRED_MESSAGE));
        }
        let key = claims["border_rank"].as_str().ok_or_else(invalid)?;
        Ok(OffsetPosition {
            key: key.to_string(),
        })
    }
}

fn scope_hash(scope: &str) -> String {
    hex::encode(&Sha256::digest(scope.as_bytes())[..8])
}

/// Builds `next_page` objects: `{offset, path, uri}` where `path` repeats the request's query with
/// the new offset, as Asana does.
pub fn next_page(base_url: &str, path: &str, query: &[(String, String)], offset: &str) -> Value {
    let pairs = query
        .iter()
        .filter(|(key, _)| key != "offset")
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .chain([("offset", offset)]);
    let full_path = format!("{path}?{}", query_string(pairs));
    json!({
        "offset": offset,
        "path": full_path,
        "uri": format!("{base_url}{full_path}"),
    })
}

/// What stays unencoded in a query key or value: RFC 3986's unreserved characters. Everything else
/// is percent-encoded, so a value can never end its pair or the query early.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `key=value&…`, each key and value percent-encoded.
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(key, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(key, QUERY_COMPONENT),
                utf8_percent_encode(value, QUERY_COMPONENT)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `uri` with `pairs` added to its query: after `?`, or after `&` when it has a query already.
pub fn with_query<'a>(uri: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let query = query_string(pairs);
    if query.is_empty() {
        return uri.to_string();
    }
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{query}")
}

/// Which fields of an object, and of the objects it refers to, a response should contain.
/// Parsed from `opt_fields=a,b.c,d.(e|f)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldTree {
    /// Requested fields, each with the fields requested below it (empty = that field's default).
    pub children: BTreeMap<String, FieldTree>,
}

impl FieldTree {
    /// Parses Asana's `opt_fields` syntax: comma-separated dotted paths, where a segment may be a
    /// parenthesised `|`-separated group (`followers.(name|email)`).
    pub fn parse(raw: &str) -> Result<FieldTree, ApiError> {
        let mut tree = FieldTree::default();
        for path in split_top_level(raw, ',') {
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let segments = split_top_level(path, '.');
            let mut alternatives: Vec<Vec<String>> = vec![Vec::new()];
            for segment in segments {
                let options: Vec<String> =
                    if segment.starts_with('(') && segment.ends_with(')') && segment.len() >= 2 {
                        split_top_level(&segment[1..segment.len() - 1], '|')
                            .into_iter()
                            .map(|s| s.trim().to_string())
                            .collect()
                    } else {
                        vec![segment.trim().to_string()]
                    };
                if options
                    .iter()
                    .any(|o| o.is_empty() || o.contains(['(', ')']))
                {
                    return Err(ApiError::bad_request(format!(
                        "opt_fields: Invalid field specification: {path}"
                    )));
                }
                alternatives = alternatives
                    .into_iter()
                    .flat_map(|prefix| {
                        options.iter().map(move |option| {
                            let mut next = prefix.clone();
                            next.push(option.clone());
                            next
                        })
                    })
                    .collect();
            }
            for alternative in alternatives {
                let mut node = &mut tree;
                for segment in alternative {
                    if segment == "this" {
                        continue;
                    }
                    node = node.children.entry(segment).or_default();
                }
            }
        }
        Ok(tree)
    }

    /// True when nothing was requested below this node.
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }
}

fn split_top_level(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for ch in text.chars() {
        match ch {
            '(' => {
                depth += 1;
                current.push(ch)
            }
            ')' => {
                depth -= 1;
                current.push(ch)
            }
            c if c == separator && depth == 0 => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// Key of the marker that stands for a reference to another object inside a "shallow" rendering.
pub const REF_KEY: &str = "__ref__";

/// A marker for a reference to the object `gid`; [`project`] expands it.
pub fn reference(gid: &str) -> Value {
    json!({ REF_KEY: gid })
}

/// A list of references.
pub fn references<'a>(gids: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(gids.into_iter().map(|gid| reference(gid)).collect())
}

/// Looks up objects by gid for projection: their full shallow rendering (references as markers)
/// and the fields of their compact form.
pub trait Resolver {
    /// The full shallow rendering of `gid`, with the names of its compact fields.
    fn resolve(&self, gid: &str) -> Option<(Value, &'static [&'static str])>;
}

/// How much of an object to render when no `opt_fields` were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The compact form (list endpoints).
    Compact,
    /// Every field (single-object endpoints).
    Full,
}

/// Renders a shallow object for a response. With `fields`, only `gid` and the requested fields
/// (references expanded as far as requested); without, the compact or full form with references
/// rendered compact.
pub fn project(
    shallow: &Value,
    compact_fields: &[&str],
    fields: Option<&FieldTree>,
    detail: Detail,
    resolver: &dyn Resolver,
) -> Value {
    project_depth(shallow, compact_fields, fields, detail, resolver, 0)
}

const MAX_DEPTH: usize = 6;

fn project_depth(
    shallow: &Value,
    compact_fields: &[&str],
    fields: Option<&FieldTree>,
    detail: Detail,
    resolver: &dyn Resolver,
    depth: usize,
) -> Value {
    let Value::Object(object) = shallow else {
        return shallow.clone();
    };
    let mut out = Map::new();
    match fields {
        Some(tree) if !tree.is_leaf() => {
            if let Some(gid) = object.get("gid") {
                out.insert("gid".into(), gid.clone());
            }
            for (name, subtree) in &tree.children {
                if let Some(value) = object.get(name) {
                    out.insert(
                        name.clone(),
                        expand(value, Some(subtree), resolver, depth + 1),
                    );
                }
            }
        }
        _ => {
            for (name, value) in object {
                if detail == Detail::Compact && !compact_fields.contains(&name.as_str()) {
                    continue;
                }
                out.insert(name.clone(), expand(value, None, resolver, depth + 1));
            }
        }
    }
    Value::Object(out)
}

fn expand(
    value: &Value,
    fields: Option<&FieldTree>,
    resolver: &dyn Resolver,
    depth: usize,
) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    match value {
        Value::Object(object) => {
            if let Some(Value::String(gid)) = object.get(REF_KEY) {
                return match resolver.resolve(gid) {
                    Some((shallow, compact)) => {
                        project_depth(&shallow, compact, fields, Detail::Compact, resolver, depth)
                    }
                    None => json!({ "gid": gid }),
                };
            }
            let mut out = Map::new();
            match fields {
                Some(tree) if !tree.is_leaf() => {
                    for (name, subtree) in &tree.children {
                        if let Some(inner) = object.get(name) {
                            out.insert(
                                name.clone(),
                                expand(inner, Some(subtree), resolver, depth + 1),
                            );
                        }
                    }
                }
                _ => {
                    for (name, inner) in object {
                        out.insert(name.clone(), expand(inner, None, resolver, depth + 1));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| expand(item, fields, resolver, depth + 1))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Users;
    impl Resolver for Users {
        fn resolve(&self, gid: &str) -> Option<(Value, &'static [&'static str])> {
            (gid == "7").then(|| {
                (
                    json!({"gid": "7", "resource_type": "user", "name": "Ann", "email": "ann@example.com"}),
                    &["gid", "resource_type", "name"][..],
                )
            })
        }
    }

    #[test]
    fn opt_fields_parses_dotted_and_parenthesised_forms() {
        let tree = FieldTree::parse("name,assignee.(name|email),memberships.project.name").unwrap();
        let assignee = &tree.children["assignee"];
        assert!(assignee.children.contains_key("name"));
        assert!(assignee.children.contains_key("email"));
        assert!(
            tree.children["memberships"].children["project"]
                .children
                .contains_key("name")
        );
        assert!(tree.children["name"].is_leaf());
        assert!(FieldTree::parse("a.(b").is_err());
    }

    #[test]
    fn projection_expands_references_only_as_far_as_requested() {
        let task = json!({"gid": "1", "resource_type": "task", "name": "T", "notes": "n",
                          "assignee": reference("7")});
        let compact = project(
            &task,
            &["gid", "resource_type", "name"],
            None,
            Detail::Compact,
            &Users,
        );
        assert_eq!(
            compact,
            json!({"gid": "1", "resource_type": "task", "name": "T"})
        );
        let tree = FieldTree::parse("assignee.email").unwrap();
        let picked = project(&task, &[], Some(&tree), Detail::Compact, &Users);
        assert_eq!(
            picked,
            json!({"gid": "1", "assignee": {"gid": "7", "email": "ann@example.com"}})
        );
        let full = project(&task, &[], None, Detail::Full, &Users);
        assert_eq!(
            full["assignee"],
            json!({"gid": "7", "resource_type": "user", "name": "Ann"})
        );
    }

    #[test]
    fn query_components_keep_only_unreserved_characters() {
        assert_eq!(
            query_string([
                ("opt_fields", "name,assignee.(name|email)"),
                ("a b", "ü~-_.&=+/?"),
            ]),
            "opt_fields=name%2Cassignee.%28name%7Cemail%29&a%20b=%C3%BC~-_.%26%3D%2B%2F%3F"
        );
        assert_eq!(
            with_query("https://app.test/cb?x=1", [("code", "a/b")]),
            "https://app.test/cb?x=1&code=a%2Fb"
        );
        assert_eq!(with_query("/tasks", []), "/tasks");
    }

    #[test]
    fn offsets_expire_and_reject_forgery_and_other_queries() {
        let codec = OffsetCodec::new(1);
        let token = codec.encode("40", "/tasks?project=1", 100, 200);
        assert_eq!(
            codec.decode(&token, "/tasks?project=1", 150).unwrap().key,
            "40"
        );
        let expired = codec.decode(&token, "/tasks?project=1", 200).unwrap_err();
        assert_eq!(expired.message, OFFSET_EXPIRED_MESSAGE);
        assert!(codec.decode(&token, "/tasks?project=2", 150).is_err());
        let mut forged = token.clone();
        forged.push('x');
        assert!(codec.decode(&forged, "/tasks?project=1", 150).is_err());
        assert!(
            OffsetCodec::new(2)
                .decode(&token, "/tasks?project=1", 150)
                .is_err()
        );
    }
}
