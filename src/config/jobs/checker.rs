//! The primitives of job-file checking: a collector of located problems and the readers of
//! plain values (strings, integers, booleans, durations) that report a wrong value at its own
//! place with an example of a right one.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::MAX_DURATION;
use crate::config::diagnostics::Diagnostic;
use crate::config::values::parse_duration;

pub(super) const DURATION_HINT: &str = "write a duration such as \"30s\", \"5m\", \"1h30m\"";

pub(super) type Span = std::ops::Range<usize>;
pub(super) type Entry<'t, 'i> = (
    &'t Spanned<toml::de::DeString<'i>>,
    &'t Spanned<toml::de::DeValue<'i>>,
);

/// Collects the problems of one file.
pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
    pub(super) source: &'a str,
    pub(super) problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    pub(super) fn at(&mut self, span: Span, message: impl Into<String>, hint: impl Into<String>) {
        self.problems
            .push(Diagnostic::at(self.path, self.source, Some(span), message).hint(hint));
    }

    pub(super) fn whole(&mut self, message: impl Into<String>, hint: impl Into<String>) {
        self.problems
            .push(Diagnostic::file(self.path, message).hint(hint));
    }

    pub(super) fn wrong_type(
        &mut self,
        key: &str,
        value: &Spanned<toml::de::DeValue<'_>>,
        expected: &str,
        example: &str,
    ) {
        self.at(
            value.span(),
            format!(
                "`{key}` must be {expected}, found {}",
                article(value.get_ref().type_str())
            ),
            format!("e.g. {example}"),
        );
    }

    pub(super) fn string<'t>(
        &mut self,
        entry: Option<Entry<'t, '_>>,
        example: &str,
    ) -> Option<Spanned<&'t str>> {
        let (key, value) = entry?;
        match value.get_ref() {
            toml::de::DeValue::String(text) => Some(Spanned::new(value.span(), text.as_ref())),
            _ => {
                self.wrong_type(key.get_ref(), value, "a string", example);
                None
            }
        }
    }

    pub(super) fn integer(
        &mut self,
        entry: Option<Entry<'_, '_>>,
        example: &str,
    ) -> Option<Spanned<u32>> {
        let (key, value) = entry?;
        match value.get_ref() {
            toml::de::DeValue::Integer(integer) => {
                match i128::from_str_radix(integer.as_str(), integer.radix())
                    .ok()
                    .and_then(|n| u32::try_from(n).ok())
                {
                    Some(n) => Some(Spanned::new(value.span(), n)),
                    None => {
                        self.at(
                            value.span(),
                            format!("`{key}` is out of range", key = key.get_ref()),
                            format!("use a whole number from 1 to {}, e.g. {example}", u32::MAX),
                        );
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(key.get_ref(), value, "an integer", example);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, entry: Option<Entry<'_, '_>>, example: &str) -> Option<bool> {
        let (key, value) = entry?;
        match value.get_ref() {
            toml::de::DeValue::Boolean(flag) => Some(*flag),
            _ => {
                self.wrong_type(key.get_ref(), value, "true or false", example);
                None
            }
        }
    }

    /// A duration field: a string such as "30s", longer than zero.
    pub(super) fn duration(
        &mut self,
        entry: Option<Entry<'_, '_>>,
        example: &str,
    ) -> Option<Spanned<Duration>> {
        let key = entry.map(|(key, _)| key.get_ref().to_string())?;
        if let Some((_, value)) = entry
            && matches!(
                value.get_ref(),
                toml::de::DeValue::Integer(_) | toml::de::DeValue::Float(_)
            )
        {
            self.at(
                value.span(),
                format!("`{key}` must be a duration string, found a number"),
                format!("durations are strings with a unit, e.g. {example}"),
            );
            return None;
        }
        let text = self.string(entry, example)?;
        match parse_duration(text.get_ref()) {
            Ok(duration) if duration.is_zero() => {
                self.at(
                    text.span(),
                    format!("`{key}` must be longer than zero"),
                    format!("e.g. {example}"),
                );
                None
            }
            Ok(duration) if duration > MAX_DURATION => {
                self.at(
                    text.span(),
                    format!("`{key}` is longer than 366 days"),
                    "use at most \"366d\"; for yearly jobs use schedule = \"@yearly\"",
                );
                None
            }
            Ok(duration) if duration.subsec_nanos() != 0 => {
                // Runs store their retry delays and intervals in whole seconds.
                self.at(
                    text.span(),
                    format!("`{key}` must be a whole number of seconds"),
                    format!("e.g. {example}"),
                );
                None
            }
            Ok(duration) => Some(Spanned::new(text.span(), duration)),
            Err(message) => {
                self.at(text.span(), message, DURATION_HINT);
                None
            }
        }
    }
}

pub(super) fn article(type_name: &str) -> String {
    match type_name {
        "integer" | "array" => format!("an {type_name}"),
        other => format!("a {other}"),
    }
}

/// A key of `table`, with its own span.
pub(super) fn lookup<'t, 'i>(table: &'t toml::de::DeTable<'i>, key: &str) -> Option<Entry<'t, 'i>> {
    table.iter().find(|(k, _)| k.get_ref() == key)
}

/// The closest of `candidates` to `word`, if close enough to be a plausible typo or a
/// shortening (every `_`-separated word of `word` appears in the candidate).
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = word.to_lowercase();
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let close = candidates
        .iter()
        .map(|candidate| {
            (
                strsim::levenshtein(&lower, &candidate.to_lowercase()),
                *candidate,
            )
        })
        .filter(|(distance, candidate)| *distance <= (candidate.chars().count() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate);
    close.or_else(|| {
        let words: Vec<&str> = lower.split('_').filter(|w| !w.is_empty()).collect();
        (words.len() > 1)
            .then(|| {
                candidates.iter().copied().find(|candidate| {
                    let theirs: Vec<&str> = candidate.split('_').collect();
                    words.iter().all(|w| theirs.contains(w))
                })
            })
            .flatten()
    })
}

/// Problems of one file in the order of their place in it; problems of the whole file first.
pub(super) fn sorted(mut problems: Vec<Diagnostic>) -> Vec<Diagnostic> {
    problems.sort_by_key(|d| (d.line, d.column));
    problems
}

/// "use one of …", with a suggestion when `value` is close to one of them.
pub(super) fn enum_hint(value: &str, allowed: &[&str]) -> String {
    let list = allowed
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    match did_you_mean(value, allowed.iter().copied()) {
        Some(close) => format!("did you mean {close:?}? use one of {list}"),
        None => format!("use one of {list}"),
    }
}
