//! Asana's OpenAPI 3.0 spec (`spec/asana_oas.yaml`) as a response validator for tests.
//!
//! The spec is parsed once per test binary. Its schemas are rewritten into JSON Schema 2020-12
//! (what the `jsonschema` crate speaks): `nullable: true` becomes a `"null"` type (or an
//! `anyOf` with null where the schema is a composition), OpenAPI-only keywords are dropped, and
//! `components` is embedded at the root of every compiled schema so `#/components/schemas/...`
//! references resolve. [`Spec::check`] then maps a concrete request (method + path) to its
//! operation and validates a response body against the schema of the returned status.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

/// OpenAPI keywords with no meaning in JSON Schema (or with a different one), dropped while
/// converting. `x-*` extensions are dropped too.
const DROPPED_KEYWORDS: &[&str] = &[
    "example",
    "readOnly",
    "writeOnly",
    "discriminator",
    "xml",
    "externalDocs",
    "deprecated",
];

/// A correction of the spec.
#[derive(Debug, Clone, Copy)]
pub enum Fix {
    /// Remove this keyword from the property's schema and everything below it.
    DropKeyword(&'static str),
    /// The property may be `null` although the spec does not say `nullable`.
    Nullable,
}

/// Known errors in the spec, corrected after converting: (component schema, property, fix, why).
/// Each is a place where the spec contradicts its own prose or example; the simulator follows
/// the prose.
pub const ERRATA: &[(&str, &str, Fix, &str)] = &[
    (
        "WorkspaceResponse",
        "email_domains",
        Fix::DropKeyword("format"),
        "items are declared `format: uri`, but Asana returns bare domains (the spec's own \
         example is `asana.com`, which is not a URI)",
    ),
    (
        "StoryBase",
        "sticker_name",
        Fix::Nullable,
        "described as \"`null` if there is no sticker\" but not declared nullable",
    ),
    (
        "GraphExportCompact",
        "completed_at",
        Fix::Nullable,
        "a graph export that has not completed has no completion time; the spec omits nullable",
    ),
    (
        "ResourceExportCompact",
        "completed_at",
        Fix::Nullable,
        "a resource export that has not completed has no completion time; the spec omits nullable",
    ),
];

/// Where the converted `components` live in the validators' registry.
pub const COMPONENTS_URI: &str = "https://asana-oas.invalid/components";

/// Keywords whose value is a map from names to schemas (the names are not keywords).
const SCHEMA_MAPS: &[&str] = &["properties", "patternProperties", "$defs", "definitions"];

/// Keywords whose value is one schema.
const SCHEMA_VALUES: &[&str] = &["items", "additionalProperties", "not"];

/// Keywords whose value is a list of schemas.
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf"];

/// The parsed spec with its schemas converted.
pub struct Spec {
    /// `paths` as in the spec (operations, parameters, responses), with YAML keys stringified.
    paths: Map<String, Value>,
    /// Path templates split into segments, for matching concrete paths.
    templates: Vec<(String, Vec<String>)>,
    /// `components.responses` as in the spec.
    responses: Map<String, Value>,
    /// `components.schemas`, converted to JSON Schema.
    schemas: Value,
    /// The converted components as one registry resource ([`COMPONENTS_URI`]), indexed once so
    /// each compiled validator only walks the schemas it reaches.
    registry: jsonschema::Registry<'static>,
    /// Compiled validators by (template, method, status key).
    validators: Mutex<HashMap<(String, String, String), Arc<jsonschema::Validator>>>,
}

/// The operation a concrete request maps to.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The spec's path template, e.g. `/tasks/{task_gid}`.
    pub template: String,
    /// Lower-case method, e.g. `get`.
    pub method: String,
    /// `operationId`.
    pub id: String,
    /// Status keys the spec lists (`"200"`, `"404"`, `"default"`, …).
    pub statuses: Vec<String>,
}

impl Operation {
    /// `paths./tasks/{task_gid}.get (getTask)`, how reports name an operation.
    pub fn label(&self) -> String {
        format!("paths.{}.{} ({})", self.template, self.method, self.id)
    }
}

/// What checking one response against the spec found.
#[derive(Debug, Default)]
pub struct Report {
    /// Violations: the response does not conform.
    pub problems: Vec<String>,
    /// Fields present in the response that the schema does not declare (informational: the
    /// spec's schemas are open, so these are allowed, but they often reveal typos).
    pub undeclared: BTreeSet<String>,
}

/// The spec, parsed on first use.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        Spec::load().unwrap_or_else(|error| panic!("cannot load the spec: {error}"))
    })
}

/// Where the vendored spec lives.
pub fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec/asana_oas.yaml")
}

/// Converts YAML into JSON, turning non-string keys (status codes such as `200`) into strings.
pub fn yaml_to_json(value: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                n.as_f64().map(|f| json!(f)).unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => serde_yaml_ng::to_string(&other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                out.insert(key, yaml_to_json(value));
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// Rewrites an OpenAPI 3.0 schema into JSON Schema 2020-12.
///
/// - `nullable: true` with a plain `type` adds `"null"` to the type (and to `enum`);
///   on a composition (`$ref`, `allOf`, …) or without a type it becomes
///   `anyOf: [{type: null}, schema]`.
/// - An `allOf` member with `nullable: true` (Asana writes
///   `allOf: [{$ref: UserCompact}, {type: object, nullable: true}]`) makes the whole schema
///   nullable; the member itself keeps its other constraints.
/// - OpenAPI-only keywords and `x-*` extensions are dropped.
pub fn convert_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut nullable = map.get("nullable") == Some(&Value::Bool(true));
    let mut out = Map::new();
    for (key, value) in map {
        if key == "nullable" || DROPPED_KEYWORDS.contains(&key.as_str()) || key.starts_with("x-") {
            continue;
        }
        if SCHEMA_MAPS.contains(&key.as_str()) {
            let converted = match value {
                Value::Object(children) => Value::Object(
                    children
                        .iter()
                        .map(|(name, child)| (name.clone(), convert_schema(child)))
                        .collect(),
                ),
                other => other.clone(),
            };
            out.insert(key.clone(), converted);
        } else if SCHEMA_VALUES.contains(&key.as_str()) {
            out.insert(key.clone(), convert_schema(value));
        } else if SCHEMA_LISTS.contains(&key.as_str()) {
            let Value::Array(members) = value else {
                out.insert(key.clone(), value.clone());
                continue;
            };
            let mut converted = Vec::new();
            for member in members {
                if key == "allOf" && member.get("nullable") == Some(&Value::Bool(true)) {
                    // `allOf: [X, {type: object, nullable: true}]` means "X or null": a member
                    // cannot admit null on its own when its siblings reject it.
                    nullable = true;
                    if is_nullable_marker(member) {
                        continue;
                    }
                    let mut stripped = member.clone();
                    if let Value::Object(map) = &mut stripped {
                        map.remove("nullable");
                    }
                    converted.push(convert_schema(&stripped));
                    continue;
                }
                converted.push(convert_schema(member));
            }
            if !converted.is_empty() {
                out.insert(key.clone(), Value::Array(converted));
            }
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    if !nullable {
        return Value::Object(out);
    }
    let composite = ["$ref", "allOf", "anyOf", "oneOf", "not"]
        .iter()
        .any(|k| out.contains_key(*k));
    match out.get("type").cloned() {
        Some(Value::String(kind)) if !composite => {
            out.insert("type".into(), json!([kind, "null"]));
            if let Some(Value::Array(values)) = out.get_mut("enum")
                && !values.contains(&Value::Null)
            {
                values.push(Value::Null);
            }
            Value::Object(out)
        }
        Some(Value::Array(mut kinds)) if !composite => {
            if !kinds.contains(&json!("null")) {
                kinds.push(json!("null"));
            }
            out.insert("type".into(), Value::Array(kinds));
            if let Some(Value::Array(values)) = out.get_mut("enum")
                && !values.contains(&Value::Null)
            {
                values.push(Value::Null);
            }
            Value::Object(out)
        }
        _ => json!({ "anyOf": [{ "type": "null" }, Value::Object(out)] }),
    }
}

/// Applies the [`ERRATA`] of component `component` to its converted schema.
fn apply_errata(component: &str, schema: &mut Value) {
    for (name, property, fix, _) in ERRATA {
        if *name == component {
            fix_property(schema, property, *fix);
        }
    }
}

/// Applies `fix` to every declaration of `property` inside `schema` (not following `$ref`s).
fn fix_property(schema: &mut Value, property: &str, fix: Fix) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get_mut("properties")
                && let Some(target) = props.get_mut(property)
            {
                match fix {
                    Fix::DropKeyword(keyword) => strip_keyword(target, keyword),
                    Fix::Nullable => {
                        let inner = target.take();
                        *target = json!({ "anyOf": [{ "type": "null" }, inner] });
                    }
                }
            }
            for (key, child) in map.iter_mut() {
                if key != "properties" {
                    fix_property(child, property, fix);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| fix_property(i, property, fix)),
        _ => {}
    }
}

fn strip_keyword(schema: &mut Value, keyword: &str) {
    match schema {
        Value::Object(map) => {
            map.remove(keyword);
            for child in map.values_mut() {
                strip_keyword(child, keyword);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| strip_keyword(i, keyword)),
        _ => {}
    }
}

/// An `allOf` member that carries no constraint except `nullable: true`.
fn is_nullable_marker(member: &Value) -> bool {
    let Value::Object(map) = member else {
        return false;
    };
    map.get("nullable") == Some(&Value::Bool(true))
        && map.keys().all(|k| {
            k == "nullable"
                || k == "description"
                || DROPPED_KEYWORDS.contains(&k.as_str())
                || k.starts_with("x-")
        })
}

/// Whether a concrete path segment list matches a template's, and how many literal segments
/// matched (more literals = more specific).
fn match_template(template: &[String], concrete: &[&str]) -> Option<usize> {
    if template.len() != concrete.len() {
        return None;
    }
    let mut literals = 0;
    for (t, c) in template.iter().zip(concrete) {
        if t.starts_with('{') && t.ends_with('}') {
            if c.is_empty() {
                return None;
            }
        } else if t == c {
            literals += 1;
        } else {
            return None;
        }
    }
    Some(literals)
}

impl Spec {
    fn load() -> Result<Spec, String> {
        let path = spec_path();
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let root = yaml_to_json(yaml);
        let paths = root["paths"]
            .as_object()
            .cloned()
            .ok_or("the spec has no `paths`")?;
        let responses = root["components"]["responses"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let schemas = convert_schema_map(&root["components"]["schemas"]);
        let registry = jsonschema::Registry::new()
            .draft(jsonschema::Draft::Draft202012)
            .add(
                COMPONENTS_URI,
                json!({ "components": { "schemas": schemas.clone() } }),
            )
            .and_then(|builder| builder.prepare())
            .map_err(|e| format!("cannot index the converted components: {e}"))?;
        let templates = paths
            .keys()
            .map(|t| {
                (
                    t.clone(),
                    segments(t).into_iter().map(String::from).collect(),
                )
            })
            .collect();
        Ok(Spec {
            paths,
            templates,
            responses,
            schemas,
            registry,
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The converted `components.schemas`.
    pub fn schemas(&self) -> &Value {
        &self.schemas
    }

    /// Maps a concrete request to its operation: `GET /tasks/123` → `paths./tasks/{task_gid}.get`.
    /// The query string, if any, is ignored. Prefers the template with the most literal segments
    /// (`/users/me` matches `/users/{user_gid}`; `/workspaces/1/tasks/search` matches the search
    /// template rather than a generic one).
    pub fn operation(&self, method: &str, path: &str) -> Option<Operation> {
        let method = method.to_ascii_lowercase();
        let path = path.split('?').next().unwrap_or(path);
        let concrete = segments(path);
        let (template, _) = self
            .templates
            .iter()
            .filter(|(template, _)| {
                self.paths[template.as_str()]
                    .get(&method)
                    .is_some_and(Value::is_object)
            })
            .filter_map(|(template, segs)| {
                match_template(segs, &concrete).map(|score| (template, score))
            })
            .max_by_key(|(_, score)| *score)?;
        let op = &self.paths[template.as_str()][&method];
        Some(Operation {
            template: template.clone(),
            method,
            id: op["operationId"].as_str().unwrap_or("?").to_string(),
            statuses: op["responses"]
                .as_object()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default(),
        })
    }

    /// The converted response schema of `operation` for `status` (falling back to `default`),
    /// or `None` when the spec lists neither.
    pub fn response_schema(&self, operation: &Operation, status: u16) -> Option<(String, Value)> {
        let responses = &self.paths[operation.template.as_str()][&operation.method]["responses"];
        let key = status.to_string();
        let (key, response) = match responses.get(&key) {
            Some(r) => (key, r),
            None => ("default".to_string(), responses.get("default")?),
        };
        let response = match response.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or_default();
                self.responses.get(name)?
            }
            None => response,
        };
        let schema = response["content"]["application/json"]["schema"].clone();
        if schema.is_null() {
            return None;
        }
        Some((key, convert_schema(&schema)))
    }

    /// Compiles (once) the validator for a response of `operation` with `status`.
    pub fn validator(
        &self,
        operation: &Operation,
        status: u16,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let (key, schema) = self.response_schema(operation, status).ok_or_else(|| {
            format!(
                "{} lists no response for status {status} and no default",
                operation.label()
            )
        })?;
        let cache_key = (operation.template.clone(), operation.method.clone(), key);
        if let Some(found) = self.cache().get(&cache_key) {
            return Ok(found.clone());
        }
        let root = self.rooted(&schema);
        let validator = self.compile(&root)?;
        let validator = Arc::new(validator);
        self.cache().insert(cache_key, validator.clone());
        Ok(validator)
    }

    /// Compiles a validator for one named component schema (e.g. `ErrorResponse`).
    pub fn component_validator(&self, name: &str) -> Result<jsonschema::Validator, String> {
        let root = self.rooted(&json!({ "$ref": format!("#/components/schemas/{name}") }));
        self.compile(&root)
    }

    fn cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), Arc<jsonschema::Validator>>>
    {
        self.validators.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `schema` as a 2020-12 root whose `#/components/...` references point into the registry.
    fn rooted(&self, schema: &Value) -> Value {
        let mut root = match absolute_refs(schema) {
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("allOf".into(), json!([other]));
                map
            }
        };
        root.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        Value::Object(root)
    }

    /// Validates `body`, the response to `method path` with `status`, against the spec.
    /// Checks that the operation exists, that it lists the status, and that the body conforms
    /// to the schema of that status.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Report {
        let mut report = Report::default();
        let Some(operation) = self.operation(method, path) else {
            report.problems.push(format!(
                "{} {path}: no operation in the spec has this method and path",
                method.to_ascii_uppercase()
            ));
            return report;
        };
        let key = status.to_string();
        if !operation.statuses.contains(&key) && !operation.statuses.contains(&"default".into()) {
            report.problems.push(format!(
                "status {status} is not one {} lists ({})",
                operation.label(),
                operation.statuses.join(", ")
            ));
        }
        let Some((_, schema)) = self.response_schema(&operation, status) else {
            return report;
        };
        match self.validator(&operation, status) {
            Ok(validator) => {
                for error in validator.iter_errors(body).take(12) {
                    report.problems.push(format!(
                        "{} response {status}: at `{}`: {error}",
                        operation.label(),
                        error.instance_path()
                    ));
                }
            }
            Err(error) => report.problems.push(error),
        }
        undeclared_fields(&self.schemas, &schema, body, "", &mut report.undeclared, 0);
        report
    }
}

impl Spec {
    fn compile(&self, root: &Value) -> Result<jsonschema::Validator, String> {
        jsonschema::draft202012::options()
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(true)
            .build(root)
            .map_err(|error| format!("the converted schema does not compile: {error}"))
    }
}

/// Rewrites `#/components/...` references into [`COMPONENTS_URI`] references.
fn absolute_refs(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let value = match (key.as_str(), value) {
                        ("$ref", Value::String(r)) if r.starts_with("#/components/") => {
                            Value::String(format!("{COMPONENTS_URI}{r}"))
                        }
                        _ => absolute_refs(value),
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(absolute_refs).collect()),
        other => other.clone(),
    }
}

fn convert_schema_map(schemas: &Value) -> Value {
    match schemas {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(name, schema)| {
                    let mut converted = convert_schema(schema);
                    apply_errata(name, &mut converted);
                    (name.clone(), converted)
                })
                .collect(),
        ),
        _ => json!({}),
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').collect()
}

/// Follows `#/components/schemas/X` references.
fn resolve<'a>(schemas: &'a Value, schema: &'a Value) -> &'a Value {
    let mut current = schema;
    for _ in 0..32 {
        match current.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or_default();
                match schemas.get(name) {
                    Some(target) => current = target,
                    None => return current,
                }
            }
            None => return current,
        }
    }
    current
}

/// Every schema a value must (or may) satisfy at once: the schema itself, its `$ref` target and
/// the members of its compositions, flattened.
fn flatten<'a>(schemas: &'a Value, schema: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
    if depth > 24 {
        return;
    }
    let schema = resolve(schemas, schema);
    out.push(schema);
    for key in SCHEMA_LISTS {
        if let Some(Value::Array(members)) = schema.get(*key) {
            for member in members {
                flatten(schemas, member, out, depth + 1);
            }
        }
    }
}

/// Records fields of `instance` the schema does not declare, as paths with `[]` for array items.
fn undeclared_fields(
    schemas: &Value,
    schema: &Value,
    instance: &Value,
    path: &str,
    out: &mut BTreeSet<String>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    let mut parts = Vec::new();
    flatten(schemas, schema, &mut parts, 0);
    match instance {
        Value::Object(object) => {
            let open = parts.iter().any(|p| {
                p.get("additionalProperties")
                    .is_some_and(|a| a != &Value::Bool(false))
            });
            let declares_anything = parts.iter().any(|p| p.get("properties").is_some());
            for (name, value) in object {
                let children: Vec<&Value> = parts
                    .iter()
                    .filter_map(|p| p.get("properties").and_then(|props| props.get(name)))
                    .collect();
                let child_path = format!("{path}/{name}");
                match children.first() {
                    Some(child) => {
                        undeclared_fields(schemas, child, value, &child_path, out, depth + 1)
                    }
                    None if !open && declares_anything => {
                        out.insert(child_path);
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = parts.iter().find_map(|p| p.get("items")) {
                for item in items.iter().take(5) {
                    undeclared_fields(
                        schemas,
                        item_schema,
                        item,
                        &format!("{path}[]"),
                        out,
                        depth + 1,
                    );
                }
            }
        }
        _ => {}
    }
}

impl Spec {
    /// Top-level properties the response schema of `operation`/`status` declares (`data`,
    /// `next_page`, `errors`, `sync`, …): the envelope a response must carry.
    pub fn envelope(&self, operation: &Operation, status: u16) -> Vec<String> {
        let Some((_, schema)) = self.response_schema(operation, status) else {
            return Vec::new();
        };
        let mut parts = Vec::new();
        flatten(&self.schemas, &schema, &mut parts, 0);
        let mut names: Vec<String> = parts
            .iter()
            .filter_map(|p| p.get("properties").and_then(Value::as_object))
            .flat_map(|props| props.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Spec {
    /// Every operation of the spec.
    pub fn all_operations(&self) -> Vec<Operation> {
        let mut out = Vec::new();
        for (template, item) in &self.paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                if !op.is_object() || method == "parameters" {
                    continue;
                }
                out.push(Operation {
                    template: template.clone(),
                    method: method.clone(),
                    id: op["operationId"].as_str().unwrap_or("?").to_string(),
                    statuses: op["responses"]
                        .as_object()
                        .map(|r| r.keys().cloned().collect())
                        .unwrap_or_default(),
                });
            }
        }
        out
    }
}
