//! Reading request input the way Asana does: the `data` object of a JSON body and its fields,
//! booleans, dates and date-times, gid lists, each refused with Asana's 400 wording.
//!
//! Shared by the model (which reads task changes from bodies) and the routes (query parameters).
//! Imports only [`super::wire`], for [`ApiError`].

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

use super::wire::ApiError;

/// Reads the request body's `data` object, as Asana requires for POST/PUT.
pub fn body_data(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("Could not parse request data, invalid JSON"))?;
    match value.get("data") {
        Some(Value::Object(map)) => Ok(map.clone()),
        _ => Err(ApiError::bad_request(
            "data: Missing input. Request bodies must be of the form {\"data\": {...}}",
        )),
    }
}

/// A string field of a request body: `None` when absent, 400 when not a string.
pub fn body_string(data: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match data.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{key}: Not a string"))),
    }
}

/// A nullable string field: `None` when absent, `Some(None)` when `null`.
pub fn body_nullable_string(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<Option<String>>, ApiError> {
    match data.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(text)) => Ok(Some(Some(text.clone()))),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key}: Not a string or null"
        ))),
    }
}

/// A boolean field of a request body (Asana also takes `"true"` / `"false"`).
pub fn body_bool(data: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match data.get(key) {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(Value::String(text)) => parse_bool(key, text).map(Some),
        Some(_) => Err(ApiError::bad_request(format!("{key}: Not a boolean"))),
    }
}

/// A list of gids in a body field: an array of strings or one comma-separated string.
pub fn body_gid_list(data: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(split_list(text)),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(format!("{key}: Not a list of gids")))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("{key}: Not a list of gids"))),
    }
}

/// Parses a boolean (`true`/`false` in any case: Asana's Python client sends `True`), 400
/// otherwise.
pub fn parse_bool(key: &str, raw: &str) -> Result<bool, ApiError> {
    if raw.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if raw.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ApiError::bad_request(format!(
            "{key}: Not a boolean: {raw}"
        )))
    }
}

/// Parses a date-time (ISO 8601; a bare date means its midnight UTC), 400 otherwise.
pub fn parse_time(key: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    Err(ApiError::bad_request(format!(
        "{key}: Not a valid date-time, expected ISO 8601 such as 2012-02-22T02:06:58.158Z: {raw}"
    )))
}

/// Checks a `YYYY-MM-DD` date, 400 otherwise.
pub fn parse_date(key: &str, raw: &str) -> Result<String, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{key}: Not a valid date, expected YYYY-MM-DD: {raw}"
            ))
        })
}

/// Splits a comma-separated parameter, dropping empty items.
pub fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// 400 for a gid in a request that names nothing (Asana's wording).
pub fn unrecognized(key: &str, gid: &str) -> ApiError {
    ApiError::bad_request(format!("{key}: Not a recognized ID: {gid}"))
}
