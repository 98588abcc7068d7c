//! The `file` sink: JSON Lines segments in a directory, a manifest chain beside them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::jobs::{REQUIRED, SettingInfo, SettingType};

/// Keys of a `type = "file"` sink table.
pub const SETTINGS: &[SettingInfo] = &[
    SettingInfo {
        name: "dir",
        ty: SettingType::OutputDir,
        default: REQUIRED,
        doc: "directory the segment files and the manifest are written into",
    },
    SettingInfo {
        name: "gzip",
        ty: SettingType::Bool,
        default: "false",
        doc: "compress segments with gzip (.jsonl.gz)",
    },
    SettingInfo {
        name: "rotate_bytes",
        ty: SettingType::Integer,
        default: "67108864",
        doc: "seal a segment once it holds this many bytes",
    },
    SettingInfo {
        name: "rotate_every",
        ty: SettingType::Duration,
        default: "\"1h\"",
        doc: "seal a segment once it is this old",
    },
];

/// Settings of the file sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSettings {
    /// Directory of the segments and the manifest.
    pub dir: PathBuf,
    /// Gzip the segments.
    #[serde(default)]
    pub gzip: bool,
    /// Size at which a segment is sealed.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Age at which a segment is sealed.
    #[serde(
        default = "default_rotate_every",
        deserialize_with = "crate::config::jobs::de_duration"
    )]
    pub rotate_every: Duration,
}

fn default_rotate_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_rotate_every() -> Duration {
    Duration::from_secs(3600)
}
