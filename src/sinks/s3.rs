//! The `s3` sink: objects in S3-compatible storage through `object_store`, a manifest chain
//! beside them.

use std::time::Duration;

use serde::Deserialize;

use crate::config::jobs::{REQUIRED, SettingInfo, SettingType};

/// Keys of a `type = "s3"` sink table.
pub const SETTINGS: &[SettingInfo] = &[
    SettingInfo {
        name: "bucket",
        ty: SettingType::String,
        default: REQUIRED,
        doc: "bucket the objects are written to",
    },
    SettingInfo {
        name: "prefix",
        ty: SettingType::String,
        default: "\"\"",
        doc: "key prefix of every object",
    },
    SettingInfo {
        name: "region",
        ty: SettingType::String,
        default: "\"us-east-1\"",
        doc: "the bucket's region",
    },
    SettingInfo {
        name: "endpoint",
        ty: SettingType::String,
        default: "AWS",
        doc: "URL of an S3-compatible service (MinIO, Ceph, moto)",
    },
    SettingInfo {
        name: "allow_http",
        ty: SettingType::Bool,
        default: "false",
        doc: "allow a plain-http endpoint (loopback test servers)",
    },
    SettingInfo {
        name: "access_key_id_env",
        ty: SettingType::String,
        default: "\"AWS_ACCESS_KEY_ID\"",
        doc: "environment variable holding the access key id",
    },
    SettingInfo {
        name: "secret_access_key_env",
        ty: SettingType::String,
        default: "\"AWS_SECRET_ACCESS_KEY\"",
        doc: "environment variable holding the secret access key",
    },
    SettingInfo {
        name: "gzip",
        ty: SettingType::Bool,
        default: "false",
        doc: "compress objects with gzip",
    },
    SettingInfo {
        name: "rotate_every",
        ty: SettingType::Duration,
        default: "\"1h\"",
        doc: "longest a segment stays open before it is uploaded",
    },
];

/// Settings of the S3 sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkSettings {
    /// Bucket.
    pub bucket: String,
    /// Key prefix.
    #[serde(default)]
    pub prefix: String,
    /// Region.
    #[serde(default = "default_region")]
    pub region: String,
    /// S3-compatible endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Allow plain http.
    #[serde(default)]
    pub allow_http: bool,
    /// Variable with the access key id.
    #[serde(default = "default_key_id_env")]
    pub access_key_id_env: String,
    /// Variable with the secret key.
    #[serde(default = "default_secret_env")]
    pub secret_access_key_env: String,
    /// Gzip objects.
    #[serde(default)]
    pub gzip: bool,
    /// Longest a segment stays open.
    #[serde(
        default = "default_rotate_every",
        deserialize_with = "crate::config::jobs::de_duration"
    )]
    pub rotate_every: Duration,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_key_id_env() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_env() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

fn default_rotate_every() -> Duration {
    Duration::from_secs(3600)
}
