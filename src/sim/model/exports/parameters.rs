//! What a resource export may select: the `export_request_parameters` of
//! `POST /exports/resource`, checked the way Asana checks them.
//!
//! Part of the model layer: imports [`super`] (the parameter type) and `wire` (field trees,
//! Asana's 400).

use chrono::DateTime;
use serde_json::{Map, Value};

use super::ResourceParameter;
use crate::sim::wire::{ApiError, FieldTree};

/// Filter keys a resource export accepts, from the spec's `ResourceExportFilters`.
pub const RESOURCE_FILTERS: &[&str] = &[
    "assigned_by.any",
    "assignee.any",
    "commented_on_by.any",
    "created_at.after",
    "created_at.before",
    "created_by.any",
    "followers.any",
    "liked_by.any",
    "modified_at.after",
    "modified_at.before",
];

/// Reads `export_request_parameters`: a non-empty array of `{resource_type, filters, fields}`
/// with `resource_type` one of `task`, `team`, `message`, known filters with well-formed values
/// (none for teams) and `fields` as a list of field paths. 400 naming what is wrong otherwise.
pub fn parse_parameters(value: Option<&Value>) -> Result<Vec<ResourceParameter>, ApiError> {
    let items = match value {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | Some(Value::Null) | None => {
            return Err(ApiError::bad_request(
                "export_request_parameters: Missing input",
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "export_request_parameters: Expected an array of objects",
            ));
        }
    };
    let mut parameters = Vec::new();
    for item in items {
        let Value::Object(item) = item else {
            return Err(ApiError::bad_request(
                "export_request_parameters: Expected an array of objects",
            ));
        };
        let resource_type = match item.get("resource_type") {
            Some(Value::String(t)) if matches!(t.as_str(), "task" | "team" | "message") => {
                t.clone()
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "export_request_parameters.resource_type: {other} is not supported; \
                     use task, team or message"
                )));
            }
            None => {
                return Err(ApiError::bad_request(
                    "export_request_parameters.resource_type: Missing input",
                ));
            }
        };
        let filters = match item.get("filters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(filters)) => filters.clone(),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "export_request_parameters.filters: Expected an object",
                ));
            }
        };
        if let Some(unknown) = filters
            .keys()
            .find(|k| !RESOURCE_FILTERS.contains(&k.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "export_request_parameters.filters: Unknown filter {unknown:?}"
            )));
        }
        if resource_type == "team" && !filters.is_empty() {
            return Err(ApiError::bad_request(
                "export_request_parameters.filters: Filtering is not supported for teams",
            ));
        }
        for (key, value) in &filters {
            let valid = if key.ends_with(".any") {
                value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string))
            } else {
                value
                    .as_str()
                    .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok())
            };
            if !valid {
                return Err(ApiError::bad_request(format!(
                    "export_request_parameters.filters.{key}: Invalid value {value}"
                )));
            }
        }
        let fields = match item.get("fields") {
            None | Some(Value::Null) => None,
            Some(Value::Array(fields)) if fields.iter().all(Value::is_string) => {
                let joined: Vec<&str> = fields.iter().filter_map(Value::as_str).collect();
                Some(FieldTree::parse(&joined.join(","))?)
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "export_request_parameters.fields: Expected an array of strings",
                ));
            }
        };
        parameters.push(ResourceParameter {
            resource_type,
            filters,
            fields,
        });
    }
    Ok(parameters)
}
