//! `org_export`: exports the whole organization (`POST /organization_exports`), polls its
//! `state`, and downloads the gzipped JSON file. The shared steps (checkpoint, slots, download,
//! manifest, retention, delivery) are in [`super::export`].

use serde::Deserialize;

use super::export::{self, ExportSettings, Target};
use crate::asana::AsanaClient;
use crate::config::jobs::{JobSpec, REQUIRED, SettingInfo, SettingType};
use crate::worker::{JobOutcome, RunContext};

/// The `[settings]` keys of `org_export`.
pub const SETTINGS: &[SettingInfo] = crate::export_settings![SettingInfo {
    name: "organization",
    ty: SettingType::String,
    default: REQUIRED,
    doc: "gid of the organization to export (organization exports need an Enterprise service account)",
}];

/// Settings of `org_export` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrgExportSettings {
    /// The organization's gid.
    pub organization: String,
    /// Download, retention and delivery.
    #[serde(flatten)]
    pub export: ExportSettings,
}

/// Runs one attempt.
pub async fn run(
    ctx: &RunContext,
    job: &JobSpec,
    settings: &OrgExportSettings,
    client: &AsanaClient,
) -> JobOutcome {
    let target = Target::Organization {
        organization: settings.organization.clone(),
    };
    export::run(ctx, job, target, &settings.export, client).await
}
