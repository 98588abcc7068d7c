//! Value types of job settings whose meaning is more than their JSON type: Asana gids and
//! durations written as text. Each carries its own JSON-schema `format`, which the settings
//! checker ([`super::jobs::settings`]) turns into a precise message at the value's place, so a
//! kind's settings struct says what a value must be by the type of its field.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// JSON-schema `format` of an Asana gid.
pub const GID_FORMAT: &str = "gid";
/// JSON-schema `format` of a duration written as text (`"30s"`, `"7d"`).
pub const DURATION_FORMAT: &str = "duration";

/// An Asana object id: a non-empty string of ASCII digits (Asana's gids are numeric strings).
///
/// A workspace written as `"not-a-gid"` would otherwise pass every check and fail only when the
/// job first calls Asana.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Gid(String);

impl Gid {
    /// Parses a gid.
    pub fn parse(text: &str) -> Result<Gid, String> {
        if is_gid(text) {
            Ok(Gid(text.to_string()))
        } else {
            Err(format!("{text:?} is not an Asana gid (digits only)"))
        }
    }

    /// The gid's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `text` looks like an Asana gid.
pub fn is_gid(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_digit())
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Gid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<Gid> for String {
    fn from(gid: Gid) -> String {
        gid.0
    }
}

impl AsRef<str> for Gid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Gid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Gid {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de> Deserialize<'de> for Gid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Gid, D::Error> {
        let text = String::deserialize(deserializer)?;
        Gid::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Gid {
    fn schema_name() -> Cow<'static, str> {
        "Gid".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": GID_FORMAT,
            "pattern": "^[0-9]+$",
        })
    }
}

/// Schema stand-in for a [`Duration`] field read with [`duration`]: a string with the
/// `duration` format. Use as `#[schemars(with = "DurationText")]`.
pub struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": DURATION_FORMAT,
        })
    }
}

/// Parses a duration such as `30s`, `5m`, `1h30m`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("invalid duration {text:?}: {error}"))
}

/// Writes a duration the way job files do: whole days, hours, minutes and seconds (`"7d"`,
/// `"1h30m"`, `"30s"`), which [`parse_duration`] reads back. Fractions of a second are shown in
/// milliseconds. (humantime's own formatter counts months of 30.44 days, which no job file
/// means.)
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    let millis = duration.subsec_millis();
    if seconds == 0 && millis == 0 {
        return "0s".into();
    }
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        let count = seconds / size;
        if count > 0 {
            text.push_str(&format!("{count}{unit}"));
            seconds -= count * size;
        }
    }
    if millis > 0 {
        text.push_str(&format!("{millis}ms"));
    }
    text
}

/// `#[serde(with = "crate::config::values::duration")]` for a [`Duration`] written as text.
pub mod duration {
    use super::*;

    /// Reads `"30s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// Writes `"30s"` (used for the defaults shown in schemas, hints and docs).
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }
}

/// Like [`duration`] for an optional setting.
pub mod optional_duration {
    use super::*;

    /// Reads `"30s"`, or nothing.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }

    /// Writes `"30s"`, or nothing.
    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_some(&format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_digits() {
        assert!(Gid::parse("1203").is_ok());
        for bad in ["", "12a", "not-a-gid", " 12", "1.5", "-1"] {
            assert!(Gid::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_round_trip_as_text() {
        #[derive(Deserialize, Serialize, PartialEq, Debug)]
        struct Holder {
            #[serde(with = "duration")]
            every: Duration,
            #[serde(default, with = "optional_duration")]
            tail: Option<Duration>,
        }
        for (text, secs) in [
            ("7d", 7 * 86_400),
            ("1h30m", 5_400),
            ("30s", 30),
            ("1d1s", 86_401),
        ] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(parsed, Duration::from_secs(secs));
            assert_eq!(format_duration(parsed), text);
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        let holder: Holder = toml::from_str("every = \"1h30m\"").unwrap();
        assert_eq!(holder.every, Duration::from_secs(5400));
        assert_eq!(holder.tail, None);
        let text = toml::to_string(&holder).unwrap();
        assert_eq!(toml::from_str::<Holder>(&text).unwrap(), holder);
    }
}
