//! The query parameters of a request, with the ones every endpoint shares (`limit`, `offset`,
//! `opt_fields`) parsed and checked, typed readers for the others, and the `options.fields` of a
//! JSON body standing in for `opt_fields`.
//!
//! Imports the foundations only (`input`, `wire`).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::sim::input::{self, parse_bool, parse_time};
use crate::sim::wire::{self, ApiError, FieldTree};

/// Query parameters of a request, in order, with the common ones parsed.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// All parameters as sent.
    pub query: Vec<(String, String)>,
    /// `limit`, validated 1..=100.
    pub limit: Option<usize>,
    /// `offset`, still opaque.
    pub offset: Option<String>,
    /// Parsed `opt_fields`.
    pub fields: Option<FieldTree>,
}

impl Params {
    /// Parses the common parameters; 400 on a bad `limit` or `opt_fields`.
    pub fn parse(query: Vec<(String, String)>) -> Result<Params, ApiError> {
        let find = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let limit = wire::parse_limit(find("limit").as_deref())?;
        let offset = find("offset");
        let fields = match find("opt_fields") {
            Some(raw) => Some(FieldTree::parse(&raw)?),
            None => None,
        };
        Ok(Params {
            limit,
            offset,
            fields,
            query,
        })
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A required parameter, 400 when missing.
    pub fn require(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .ok_or_else(|| ApiError::bad_request(format!("{key}: Missing input")))
    }

    /// An optional boolean parameter (`true` / `false`), 400 when it is something else.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key).map(|raw| parse_bool(key, raw)).transpose()
    }

    /// An optional date-time parameter (ISO 8601 or a bare date), 400 when it is something else.
    pub fn time(&self, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(key).map(|raw| parse_time(key, raw)).transpose()
    }

    /// What an offset is bound to: the path and the filters (not paging or output options).
    pub fn scope(&self, path: &str) -> String {
        let mut filters: Vec<&(String, String)> = self
            .query
            .iter()
            .filter(|(k, _)| {
                !matches!(k.as_str(), "offset" | "limit" | "opt_fields" | "opt_pretty")
            })
            .collect();
        filters.sort();
        format!("{path}?{filters:?}")
    }

    /// The requested fields, for rendering.
    pub fn fields(&self) -> Option<&FieldTree> {
        self.fields.as_ref()
    }

    /// Reads a JSON request body: its `data` object and, when no `opt_fields` query was given,
    /// the `options.fields` list of the body as the field selection.
    pub fn read_body(&mut self, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
        let data = input::body_data(body)?;
        if self.fields.is_none()
            && let Ok(value) = serde_json::from_slice::<Value>(body)
            && let Some(Value::Array(fields)) = value.get("options").and_then(|o| o.get("fields"))
        {
            let joined = fields
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",");
            if !joined.is_empty() {
                self.fields = Some(FieldTree::parse(&joined)?);
            }
        }
        Ok(data)
    }
}
