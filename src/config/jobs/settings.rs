//! A kind's `[settings]` table, checked against the JSON schema derived from the kind's settings
//! struct (`#[derive(JsonSchema)]`), then read into that struct, then handed to the kind's own
//! checks.
//!
//! The struct is the only description of a setting: its name, type, default (the serde
//! default, serialized into the schema), documentation (the doc comment), bounds
//! (`#[schemars(range(..))]`, `length(..)`) and meaning (typed values such as
//! [`Gid`](crate::config::values::Gid) and durations). Walking the schema here, rather than
//! letting serde stop at the first error, reports every unknown key, wrong type and bad value of a
//! file at once, each at its own `line:col`, with the accepted keys and their defaults as the
//! hint. Tables chosen by a `type` key (sinks) are internally tagged enums: their variants'
//! schemas are checked once `type` is known.
//!
//! What a schema cannot say (one value against another, a directory's permissions, a secret's
//! presence) the kind checks in its `validate`, reporting through [`SettingsCheck`] by key path;
//! the path is located in the file here.

use std::path::Path;

use schemars::Schema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::checker::{Checker, Entry, Span, article, did_you_mean, enum_hint, lookup};
use super::context::ValidationContext;
use crate::config::values::{DURATION_FORMAT, GID_FORMAT, is_gid};

/// Schema keyword naming what a tagged table is ("sink"), for messages such as
/// "unknown sink type". Set with `#[schemars(extend("x-noun" = "sink"))]` on the enum.
pub const NOUN_KEYWORD: &str = "x-noun";

/// A problem a kind's `validate` found, located by key path below `[settings]`.
#[derive(Debug, Clone, PartialEq)]
struct SettingProblem {
    /// Keys from `[settings]` down; empty for the table itself.
    path: Vec<String>,
    /// A byte range of the file, when known (deserialization errors).
    span: Option<Span>,
    message: String,
    hint: String,
}

/// What a kind's `validate` reports to and reads from: the daemon's context (credentials,
/// directories) and a sink for problems located by key path.
#[derive(Debug)]
pub struct SettingsCheck<'a> {
    context: &'a ValidationContext,
    job_file: Option<&'a Path>,
    scope: Vec<String>,
    problems: Vec<SettingProblem>,
}

impl<'a> SettingsCheck<'a> {
    /// A check in `context` with no problems yet.
    pub fn new(context: &'a ValidationContext) -> Self {
        Self {
            context,
            job_file: None,
            scope: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// The same check, knowing the job file it reads: relative paths in settings (a template
    /// file) are resolved against the file's directory.
    pub fn for_file(mut self, job_file: &'a Path) -> Self {
        self.job_file = Some(job_file);
        self
    }

    /// `path` as the job will open it (see [`super::beside_job_file`]).
    pub fn resolve(&self, path: &Path) -> std::path::PathBuf {
        match self.job_file {
            Some(job_file) => super::beside_job_file(job_file, path),
            None => path.to_path_buf(),
        }
    }

    /// What the job is checked against.
    pub fn context(&self) -> &ValidationContext {
        self.context
    }

    /// Reports a problem of the setting `key` of the current table (`""`: the table itself).
    pub fn problem(&mut self, key: &str, message: impl Into<String>, hint: impl Into<String>) {
        let mut path = self.scope.clone();
        if !key.is_empty() {
            path.push(key.to_string());
        }
        self.problems.push(SettingProblem {
            path,
            span: None,
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Runs `check` on the nested table `key` (`[settings.sink]`): its problems are located in
    /// that table.
    pub fn scoped(&mut self, key: &str, check: impl FnOnce(&mut Self)) {
        self.scope.push(key.to_string());
        check(self);
        self.scope.pop();
    }

    /// The dotted name of `key` in the current table, for messages (`sink.dir`).
    pub fn name_of(&self, key: &str) -> String {
        let mut parts = self.scope.clone();
        parts.push(key.to_string());
        parts.join(".")
    }

    /// Reports `key` unless `dir` is a directory the daemon can write (or create).
    pub fn writable_dir(&mut self, key: &str, dir: &Path) {
        let found = self.context.check_writable_dir(dir);
        self.report(
            key,
            found,
            "point it at a directory the daemon's user can write, or create it with the right owner".into(),
        );
    }

    /// Reports `key` unless the secret file `file` can be read and is not empty.
    pub fn secret_file(&mut self, key: &str, file: &Path) {
        let found = self.context.check_secret_file(file);
        self.report(
            key,
            found,
            "create the file (mode 0600, owned by the daemon's user) or point the setting at it"
                .into(),
        );
    }

    /// Reports `key` unless the environment variable `variable` is set and not empty.
    pub fn secret_env(&mut self, key: &str, variable: &str) {
        let found = self.context.check_secret_env(variable);
        self.report(
            key,
            found,
            format!(
                "set {variable} in the daemon's environment (systemd: Environment= or EnvironmentFile=; Kubernetes: env from a Secret), or name another variable"
            ),
        );
    }

    /// Reports what a check of the value at `key` found wrong, named by its dotted key.
    fn report(&mut self, key: &str, found: Result<(), String>, hint: String) {
        if let Err(message) = found {
            let name = self.name_of(key);
            self.problem(key, format!("`{name}`: {message}"), hint);
        }
    }

    /// Problems reported so far.
    pub fn count(&self) -> usize {
        self.problems.len()
    }

    fn at_span(&mut self, span: Option<Span>, message: String, hint: String) {
        self.problems.push(SettingProblem {
            path: self.scope.clone(),
            span,
            message,
            hint,
        });
    }
}

/// A kind's `[settings]` as written in the file, to be read into the kind's struct.
#[derive(Debug)]
pub struct SettingsValue<'i> {
    value: Spanned<DeValue<'i>>,
    hint: String,
}

impl SettingsValue<'_> {
    /// Reads the settings into `T`; a failure (which the schema check should have caught) is
    /// reported at its place.
    pub fn deserialize<T: DeserializeOwned>(&self, check: &mut SettingsCheck<'_>) -> Option<T> {
        let deserializer = toml::de::ValueDeserializer::from(self.value.clone());
        match T::deserialize(deserializer) {
            Ok(settings) => Some(settings),
            Err(error) => {
                check.at_span(
                    error.span(),
                    error.message().trim().to_string(),
                    self.hint.clone(),
                );
                None
            }
        }
    }
}

/// Checks `settings` (the `[settings]` value, None when absent) of a kind named `label` against
/// `schema`; reports every problem to `check` and returns the value to read when there is none.
pub(super) fn check_against_schema<'i>(
    check: &mut Checker<'_>,
    label: &str,
    settings: Option<&Spanned<DeValue<'i>>>,
    schema: &Schema,
) -> Option<SettingsValue<'i>> {
    let root = schema.as_object().cloned().unwrap_or_default();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let empty = Spanned::new(0..0, DeValue::Table(DeTable::new()));
    let value = settings.cloned().unwrap_or(empty);
    let before = check.problems.len();
    let mut walk = Walk { check, defs: &defs };
    let hint = settings_hint(label, &root, &defs);
    if let DeValue::Table(table) = value.get_ref() {
        walk.table(label, "[settings]", table, &root);
    }
    (check.problems.len() == before).then_some(SettingsValue { value, hint })
}

/// Turns the problems a kind's `validate` reported into located diagnostics.
pub(super) fn locate_problems(
    check: &mut Checker<'_>,
    settings: Option<&Spanned<DeValue<'_>>>,
    reported: SettingsCheck<'_>,
) {
    for problem in reported.problems {
        let span = problem
            .span
            .or_else(|| settings.map(|settings| span_of(settings, &problem.path)));
        match span {
            Some(span) => check.at(span, problem.message, problem.hint),
            None => check.whole(problem.message, problem.hint),
        }
    }
}

/// The span of the value at `path` below `value`, or of the deepest table on the way. A
/// number in the path is an index into an array (`deliver.0.tls`: the `tls` of the first
/// `[[settings.deliver]]`).
fn span_of(value: &Spanned<DeValue<'_>>, path: &[String]) -> Span {
    let mut current = value;
    for key in path {
        match current.get_ref() {
            DeValue::Table(table) => match lookup(table, key) {
                Some((_, next)) => current = next,
                None => break,
            },
            DeValue::Array(items) => match key.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(next) => current = next,
                None => break,
            },
            _ => break,
        }
    }
    current.span()
}

/// The shape of a value a schema accepts, as far as the messages need it.
#[derive(Debug)]
enum Shape<'s> {
    String {
        format: Option<&'s str>,
        min_length: Option<u64>,
    },
    Choice(Vec<&'s str>),
    Integer {
        min: i128,
        max: i128,
    },
    Boolean,
    Array {
        items: Map<String, Value>,
        min_items: Option<u64>,
    },
    Table(Map<String, Value>),
    Tagged {
        noun: &'s str,
        tag: String,
        variants: Vec<(String, Map<String, Value>)>,
    },
    Any,
}

struct Walk<'c, 'a, 'd> {
    check: &'c mut Checker<'a>,
    defs: &'d Map<String, Value>,
}

impl Walk<'_, '_, '_> {
    /// Checks a table's keys against an object schema.
    fn table(
        &mut self,
        label: &str,
        header: &str,
        table: &DeTable<'_>,
        schema: &Map<String, Value>,
    ) {
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut entries: Vec<Entry<'_, '_>> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for entry in entries {
            let (key, value) = entry;
            let key_name: &str = key.get_ref();
            match properties.get(key_name).and_then(Value::as_object) {
                Some(property) => {
                    let property = without_null(property, self.defs);
                    let path = format!("{}.{key_name}", header.trim_matches(['[', ']']));
                    self.value(key_name, &path, value, &property);
                }
                // Every table of a job file is closed: an unknown key is a typo or a setting of
                // another kind, never something to ignore.
                None => {
                    let accepted = settings_hint(label, schema, self.defs);
                    let hint = match did_you_mean(key_name, properties.keys().map(String::as_str)) {
                        Some(close) => format!("did you mean `{close}`? {accepted}"),
                        None => accepted,
                    };
                    self.check.at(
                        key.span(),
                        format!("unknown setting `{key_name}` for kind {label:?}"),
                        hint,
                    );
                }
            }
        }
        for name in required(schema) {
            if lookup(table, name).is_none() {
                let doc = properties
                    .get(name)
                    .and_then(Value::as_object)
                    .map(|property| description(&resolve(property, self.defs)))
                    .unwrap_or_default();
                self.check.whole(
                    format!("missing required setting `{name}` for kind {label:?}"),
                    format!("add `{name}` under {header}: {doc}"),
                );
            }
        }
    }

    /// Checks one value against its (resolved) schema.
    fn value(
        &mut self,
        key: &str,
        path: &str,
        value: &Spanned<DeValue<'_>>,
        schema: &Map<String, Value>,
    ) {
        let value_shape = shape(schema, self.defs);
        let example = example(key, path, &value_shape);
        let entry_value = value.get_ref();
        match value_shape {
            Shape::Any => {}
            Shape::Boolean => {
                if !matches!(entry_value, DeValue::Boolean(_)) {
                    self.check.wrong_type(key, value, "true or false", &example);
                }
            }
            Shape::Integer { min, max } => match entry_value {
                DeValue::Integer(integer) => {
                    let parsed = i128::from_str_radix(integer.as_str(), integer.radix()).ok();
                    match parsed {
                        Some(n) if n >= min && n <= max => {}
                        _ => {
                            let doc = description(schema);
                            let range = if max >= i128::from(u32::MAX) {
                                format!("at least {min}")
                            } else {
                                format!("from {min} to {max}")
                            };
                            self.check.at(
                                value.span(),
                                format!("`{key}` is out of range: use a whole number {range}"),
                                if doc.is_empty() {
                                    format!("e.g. {example}")
                                } else {
                                    format!("{key}: {doc}; e.g. {example}")
                                },
                            );
                        }
                    }
                }
                _ => self.check.wrong_type(key, value, "an integer", &example),
            },
            Shape::String { format, min_length } => {
                self.string(key, value, format, min_length, schema, &example)
            }
            Shape::Choice(choices) => match entry_value {
                DeValue::String(text) => {
                    if !choices.contains(&text.as_ref()) {
                        self.check.at(
                            value.span(),
                            format!("`{key}` cannot be {:?}", text.as_ref()),
                            enum_hint(text, &choices),
                        );
                    }
                }
                _ => self.check.wrong_type(key, value, "a string", &example),
            },
            Shape::Array { items, min_items } => match entry_value {
                DeValue::Array(values) => {
                    let item_shape = shape(&items, self.defs);
                    for item in values {
                        match (&item_shape, item.get_ref()) {
                            (Shape::String { .. } | Shape::Choice(_), DeValue::String(_)) => {
                                self.value(key, path, item, &items);
                            }
                            (Shape::String { .. } | Shape::Choice(_), other) => {
                                self.check.at(
                                    item.span(),
                                    format!(
                                        "`{key}` must hold only strings, found {}",
                                        article(other.type_str())
                                    ),
                                    format!("e.g. {example}"),
                                );
                            }
                            _ => self.value(key, path, item, &items),
                        }
                    }
                    if let Some(min) = min_items
                        && (values.len() as u64) < min
                    {
                        let doc = description(schema);
                        self.check.at(
                            value.span(),
                            format!(
                                "`{key}` must list at least {min} value{}",
                                if min == 1 { "" } else { "s" }
                            ),
                            format!("{key}: {doc}; e.g. {example}"),
                        );
                    }
                }
                _ => self
                    .check
                    .wrong_type(key, value, "an array of strings", &example),
            },
            Shape::Table(object) => match entry_value {
                DeValue::Table(table) => {
                    let label = format!("{key} table");
                    self.table(&label, &format!("[{path}]"), table, &object)
                }
                _ => self.check.wrong_type(key, value, "a table", &example),
            },
            Shape::Tagged {
                noun,
                tag,
                variants,
            } => {
                let DeValue::Table(table) = entry_value else {
                    self.check.wrong_type(key, value, "a table", &example);
                    return;
                };
                let names: Vec<&str> = variants.iter().map(|(name, _)| name.as_str()).collect();
                let tag_entry = lookup(table, &tag);
                let Some(chosen) = self.check.string(tag_entry, &example) else {
                    if tag_entry.is_none() {
                        self.check.at(
                            value.span(),
                            format!("the {noun} `{key}` has no `{tag}`"),
                            format!("add {tag} = one of {names:?} under [{path}]"),
                        );
                    }
                    return;
                };
                let Some((_, variant)) = variants.iter().find(|(name, _)| name == chosen.get_ref())
                else {
                    let hint = match did_you_mean(chosen.get_ref(), names.iter().copied()) {
                        Some(close) => format!("did you mean {close:?}? {noun} types: {names:?}"),
                        None => format!("{noun} types: {names:?}"),
                    };
                    self.check.at(
                        chosen.span(),
                        format!("unknown {noun} type {:?}", chosen.get_ref()),
                        hint,
                    );
                    return;
                };
                let mut rest = table.clone();
                rest.remove(tag.as_str());
                let mut variant = variant.clone();
                if let Some(Value::Object(properties)) = variant.get_mut("properties") {
                    properties.remove(&tag);
                }
                if let Some(Value::Array(required)) = variant.get_mut("required") {
                    required.retain(|name| name.as_str() != Some(tag.as_str()));
                }
                let label = format!("{} {noun}", chosen.get_ref());
                self.table(&label, &format!("[{path}]"), &rest, &variant);
            }
        }
    }

    fn string(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        format: Option<&str>,
        min_length: Option<u64>,
        schema: &Map<String, Value>,
        example: &str,
    ) {
        if format == Some(DURATION_FORMAT) {
            // Same rules as the job's own durations: positive, whole seconds, at most 366 days.
            self.check
                .duration(Some((&key_spanned(key, value), value)), example);
            return;
        }
        let DeValue::String(text) = value.get_ref() else {
            self.check.wrong_type(key, value, "a string", example);
            return;
        };
        if format == Some(GID_FORMAT) && !is_gid(text) {
            self.check.at(
                value.span(),
                format!("`{key}` must be an Asana gid (digits only), found {:?}", text.as_ref()),
                format!(
                    "a gid is the long number in the object's URL in Asana (…/0/1204567890123456/…), e.g. {example}"
                ),
            );
            return;
        }
        if let Some(min) = min_length
            && (text.chars().count() as u64) < min
        {
            let doc = description(schema);
            self.check.at(
                value.span(),
                format!("`{key}` must not be empty"),
                format!("{key}: {doc}; e.g. {example}"),
            );
        }
    }
}

/// A spanned key for [`Checker::duration`], which names the key in its messages.
fn key_spanned<'i>(key: &str, value: &Spanned<DeValue<'i>>) -> Spanned<toml::de::DeString<'i>> {
    Spanned::new(value.span(), std::borrow::Cow::Owned(key.to_string()))
}

/// Follows `$ref` into `$defs` and merges `allOf` parts, keeping what the referring schema says
/// itself: its description wins, its `properties` and `required` are added to the target's
/// (schemars writes a flattened struct inside a tagged enum variant as a `$ref` beside the tag's
/// property).
fn resolve(schema: &Map<String, Value>, defs: &Map<String, Value>) -> Map<String, Value> {
    let mut parts: Vec<Map<String, Value>> = Vec::new();
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/$defs/");
        if let Some(target) = defs.get(name).and_then(Value::as_object) {
            parts.push(resolve(target, defs));
        }
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for part in all.iter().filter_map(Value::as_object) {
            parts.push(resolve(part, defs));
        }
    }
    if parts.is_empty() {
        return schema.clone();
    }
    let mut own = schema.clone();
    own.remove("$ref");
    own.remove("allOf");
    parts.push(own);
    let mut merged = Map::new();
    for part in parts {
        for (key, value) in part {
            match (key.as_str(), merged.get_mut(&key), value) {
                ("properties", Some(Value::Object(into)), Value::Object(from)) => {
                    into.extend(from);
                }
                ("required", Some(Value::Array(into)), Value::Array(from)) => {
                    for name in from {
                        if !into.contains(&name) {
                            into.push(name);
                        }
                    }
                }
                (_, _, value) => {
                    merged.insert(key, value);
                }
            }
        }
    }
    merged
}

/// The non-null alternative of an optional value (`anyOf: [X, {type: null}]`, or a type list
/// with "null").
fn without_null(schema: &Map<String, Value>, defs: &Map<String, Value>) -> Map<String, Value> {
    let schema = resolve(schema, defs);
    for keyword in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = schema.get(keyword) {
            let non_null: Vec<&Value> = options
                .iter()
                .filter(|option| option.get("type") != Some(&Value::String("null".into())))
                .collect();
            if non_null.len() == 1 && options.len() == 2 {
                let mut inner = resolve(non_null[0].as_object().unwrap_or(&Map::new()), defs);
                for key in ["description", "default"] {
                    if let Some(value) = schema.get(key) {
                        inner.insert(key.to_string(), value.clone());
                    }
                }
                return inner;
            }
        }
    }
    schema
}

/// The type name of a schema, ignoring "null".
fn type_name(schema: &Map<String, Value>) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(name)) => Some(name),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .find(|name| *name != "null"),
        _ => None,
    }
}

fn shape<'s>(schema: &'s Map<String, Value>, defs: &Map<String, Value>) -> Shape<'s> {
    // `schema` is already resolved by the caller where it came from a property; options and
    // references below are resolved here.
    if let Some(Value::Array(values)) = schema.get("enum") {
        return Shape::Choice(values.iter().filter_map(Value::as_str).collect());
    }
    if let Some(Value::Array(options)) = schema.get("oneOf") {
        // A string enum whose variants have docs: one `const` per variant.
        let consts: Vec<&str> = options
            .iter()
            .filter_map(|option| option.get("const").and_then(Value::as_str))
            .collect();
        if !consts.is_empty() && consts.len() == options.len() {
            return Shape::Choice(consts);
        }
        // An internally tagged enum: every variant an object with a `const` property.
        if let Some(tag) = tag_of(options) {
            let variants = options
                .iter()
                .filter_map(|option| {
                    let object = resolve(option.as_object()?, defs);
                    let name = object
                        .get("properties")?
                        .get(&tag)?
                        .get("const")?
                        .as_str()?
                        .to_string();
                    Some((name, object))
                })
                .collect();
            let noun = schema
                .get(NOUN_KEYWORD)
                .and_then(Value::as_str)
                .unwrap_or("table");
            return Shape::Tagged {
                noun,
                tag,
                variants,
            };
        }
        return Shape::Any;
    }
    match type_name(schema) {
        Some("string") => Shape::String {
            format: schema.get("format").and_then(Value::as_str),
            min_length: schema.get("minLength").and_then(Value::as_u64),
        },
        Some("integer") => {
            let default_max = match schema.get("format").and_then(Value::as_str) {
                Some("uint8") => i128::from(u8::MAX),
                Some("uint16") => i128::from(u16::MAX),
                Some("uint32") => i128::from(u32::MAX),
                Some("int32") => i128::from(i32::MAX),
                _ => i128::from(i64::MAX),
            };
            Shape::Integer {
                min: schema
                    .get("minimum")
                    .and_then(Value::as_i64)
                    .map_or(i128::from(i64::MIN), i128::from),
                max: schema
                    .get("maximum")
                    .and_then(Value::as_i64)
                    .map_or(default_max, i128::from)
                    .min(default_max),
            }
        }
        Some("boolean") => Shape::Boolean,
        Some("array") => Shape::Array {
            items: schema
                .get("items")
                .and_then(Value::as_object)
                .map(|items| without_null(items, defs))
                .unwrap_or_default(),
            min_items: schema.get("minItems").and_then(Value::as_u64),
        },
        Some("object") => Shape::Table(schema.clone()),
        _ => Shape::Any,
    }
}

/// The property every option fixes with a `const` (`type` for sinks), if there is one.
fn tag_of(options: &[Value]) -> Option<String> {
    let first = options.first()?.get("properties")?.as_object()?;
    first
        .iter()
        .filter(|(_, property)| property.get("const").is_some())
        .map(|(name, _)| name.clone())
        .find(|name| {
            options.iter().all(|option| {
                option
                    .get("properties")
                    .and_then(|properties| properties.get(name))
                    .and_then(|property| property.get("const"))
                    .is_some()
            })
        })
}

fn required(schema: &Map<String, Value>) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A schema's doc text, on one line.
fn description(schema: &Map<String, Value>) -> String {
    schema
        .get("description")
        .and_then(Value::as_str)
        .map(|text| text.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|text| text.trim_end_matches('.').to_string())
        .unwrap_or_default()
}

/// What a value of `shape` looks like in a job file, for hints.
fn example(key: &str, path: &str, shape: &Shape<'_>) -> String {
    match shape {
        Shape::Boolean => format!("{key} = true"),
        Shape::Integer { min, .. } => format!("{key} = {}", (*min).max(10)),
        Shape::String {
            format: Some(format),
            ..
        } if *format == DURATION_FORMAT => format!("{key} = \"30s\""),
        Shape::String {
            format: Some(format),
            ..
        } if *format == GID_FORMAT => format!("{key} = \"1204567890123456\""),
        Shape::String { .. } | Shape::Any => format!("{key} = \"…\""),
        Shape::Choice(choices) => format!("{key} = {:?}", choices.first().unwrap_or(&"…")),
        Shape::Array { items, .. } => match items.get("enum").or_else(|| items.get("oneOf")) {
            Some(Value::Array(options)) => {
                let names: Vec<String> = options
                    .iter()
                    .filter_map(|o| o.as_str().or_else(|| o.get("const")?.as_str()))
                    .take(2)
                    .map(|name| format!("{name:?}"))
                    .collect();
                format!("{key} = [{}]", names.join(", "))
            }
            _ => format!("{key} = [\"…\", \"…\"]"),
        },
        Shape::Table(_) => format!("[{path}]"),
        Shape::Tagged { tag, variants, .. } => format!(
            "[{path}] with {tag} = \"{}\"",
            variants
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join("\" | \"")
        ),
    }
}

/// How a setting is described in hints and docs: its type in words.
pub fn describe_type(schema: &Map<String, Value>, defs: &Map<String, Value>) -> String {
    let schema = without_null(&resolve(schema, defs), defs);
    match shape(&schema, defs) {
        Shape::Boolean => "bool".into(),
        Shape::Integer { .. } => "integer".into(),
        Shape::String {
            format: Some(format),
            ..
        } if format == DURATION_FORMAT => "duration".into(),
        Shape::String {
            format: Some(format),
            ..
        } if format == GID_FORMAT => "gid".into(),
        Shape::Any if schema.contains_key("anyOf") => "string or table".into(),
        Shape::String { .. } | Shape::Any => "string".into(),
        Shape::Choice(choices) => format!(
            "one of {}",
            choices
                .iter()
                .map(|choice| format!("\"{choice}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Shape::Array { items, .. } => match shape(&items, defs) {
            Shape::String {
                format: Some(format),
                ..
            } if format == GID_FORMAT => "list of gids".into(),
            Shape::Choice(choices) => format!(
                "list of {}",
                choices
                    .iter()
                    .map(|choice| format!("\"{choice}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Shape::Tagged { noun, .. } => format!("list of {noun} tables"),
            Shape::Table(_) => "list of tables".into(),
            _ => "list of strings".into(),
        },
        Shape::Table(_) => "table".into(),
        Shape::Tagged { noun, .. } => format!("{noun} table"),
    }
}

/// A default value as written in a job file (`"30s"`, `100`, `none`).
pub fn describe_default(schema: &Map<String, Value>) -> String {
    match schema.get("default") {
        None | Some(Value::Null) => "none".into(),
        Some(Value::Array(items)) if items.is_empty() => "[]".into(),
        Some(value) => value.to_string(),
    }
}

/// One setting of a kind, as listed in hints and in the configuration reference.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingDoc {
    /// The key.
    pub name: String,
    /// Its type in words.
    pub ty: String,
    /// Its default as written in a job file, or None when required.
    pub default: Option<String>,
    /// Its doc comment.
    pub doc: String,
}

/// The settings an object schema declares: required ones first, then the rest by name.
pub fn setting_docs(schema: &Map<String, Value>, defs: &Map<String, Value>) -> Vec<SettingDoc> {
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required = required(schema);
    let mut docs: Vec<SettingDoc> = properties
        .iter()
        .filter_map(|(name, property)| {
            let property = resolve(property.as_object()?, defs);
            let merged = without_null(&property, defs);
            let is_required = required.contains(&name.as_str());
            Some(SettingDoc {
                name: name.clone(),
                ty: describe_type(&property, defs),
                default: (!is_required).then(|| describe_default(&property)),
                doc: {
                    let own = description(&property);
                    if own.is_empty() {
                        description(&merged)
                    } else {
                        own
                    }
                },
            })
        })
        .collect();
    docs.sort_by_key(|doc| (doc.default.is_some(), doc.name.clone()));
    docs
}

/// The hint listing what a table accepts: "file sink accepts: dir (string, required), …".
fn settings_hint(label: &str, schema: &Map<String, Value>, defs: &Map<String, Value>) -> String {
    let docs = setting_docs(schema, defs);
    if docs.is_empty() {
        return format!("{label} takes no settings; remove [settings]");
    }
    let list = docs
        .iter()
        .map(|doc| match &doc.default {
            Some(default) => format!("{} ({}, default {default})", doc.name, doc.ty),
            None => format!("{} ({}, required)", doc.name, doc.ty),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("{label} accepts: {list}")
}

/// The object schema and definitions of a schema document (what [`setting_docs`] takes).
pub fn schema_parts(schema: &Schema) -> (Map<String, Value>, Map<String, Value>) {
    let root = schema.as_object().cloned().unwrap_or_default();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    (root, defs)
}

/// The tables chosen by a tag below an object schema (`[settings.sink]` with `type = "file"`):
/// for each property that is one, its key and each variant's name and schema (without the tag),
/// for the configuration reference.
pub fn tagged_tables(
    schema: &Map<String, Value>,
    defs: &Map<String, Value>,
) -> Vec<(String, String, Map<String, Value>)> {
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut tables = Vec::new();
    for (key, property) in &properties {
        let Some(property) = property.as_object() else {
            continue;
        };
        let resolved = without_null(property, defs);
        if let Shape::Tagged { tag, variants, .. } = shape(&resolved, defs) {
            for (name, mut variant) in variants {
                if let Some(Value::Object(properties)) = variant.get_mut("properties") {
                    properties.remove(&tag);
                }
                tables.push((key.clone(), name, variant));
            }
        }
    }
    tables
}
