//! The `http` sink: batched POSTs to a log collector (NDJSON, JSON array or Splunk HEC).

use std::time::Duration;

use serde::Deserialize;

use crate::config::jobs::{REQUIRED, SettingInfo, SettingType};

/// Keys of a `type = "http"` sink table.
pub const SETTINGS: &[SettingInfo] = &[
    SettingInfo {
        name: "url",
        ty: SettingType::String,
        default: REQUIRED,
        doc: "collector URL the batches are POSTed to (https, or http on loopback)",
    },
    SettingInfo {
        name: "format",
        ty: SettingType::String,
        default: "\"ndjson\"",
        doc: "ndjson | json | splunk_hec",
    },
    SettingInfo {
        name: "batch_events",
        ty: SettingType::Integer,
        default: "500",
        doc: "most events per POST",
    },
    SettingInfo {
        name: "token_file",
        ty: SettingType::String,
        default: "none",
        doc: "file holding the collector's token (sent as Bearer, or Splunk for splunk_hec)",
    },
    SettingInfo {
        name: "token_env",
        ty: SettingType::String,
        default: "none",
        doc: "environment variable holding the collector's token",
    },
    SettingInfo {
        name: "timeout",
        ty: SettingType::Duration,
        default: "\"30s\"",
        doc: "longest one POST may take",
    },
    SettingInfo {
        name: "max_attempts",
        ty: SettingType::Integer,
        default: "5",
        doc: "attempts per batch before the run is retried later",
    },
];

/// Body format of the POSTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    /// One event per line.
    #[default]
    Ndjson,
    /// One JSON array per batch.
    Json,
    /// Splunk HTTP Event Collector envelopes (`{"event": …, "time": …}` per line).
    SplunkHec,
}

/// Settings of the HTTP sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkSettings {
    /// Collector URL.
    pub url: String,
    /// Body format.
    #[serde(default)]
    pub format: HttpFormat,
    /// Events per POST.
    #[serde(default = "default_batch_events")]
    pub batch_events: u32,
    /// File holding the collector token.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Variable holding the collector token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Timeout of one POST.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::config::jobs::de_duration"
    )]
    pub timeout: Duration,
    /// Attempts per batch.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_batch_events() -> u32 {
    500
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_attempts() -> u32 {
    5
}
