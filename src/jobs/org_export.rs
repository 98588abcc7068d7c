//! `org_export`: exports the whole organization (`POST /organization_exports`), polls its
//! `state`, and downloads the gzipped JSON file. The shared steps (checkpoint, slots, download,
//! manifest, retention, delivery) are in [`super::export`].

use schemars::JsonSchema;
use serde::Deserialize;

use super::export::{self, ExportSettings, Target};
use super::{JobKind, KindContext};
use crate::config::jobs::SettingsCheck;
use crate::config::values::Gid;
use crate::worker::JobOutcome;

/// The `org_export` kind.
#[derive(Debug)]
pub struct OrgExport;

/// Settings of `org_export` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct OrgExportSettings {
    /// The organization's gid (organization exports need an Enterprise service account)
    pub organization: Gid,
    /// Download, retention and delivery.
    #[serde(flatten)]
    pub export: ExportSettings,
}

impl JobKind for OrgExport {
    const NAME: &'static str = "org_export";
    const SUMMARY: &'static str =
        "exports the whole organization and downloads the file (Enterprise service accounts)";
    type Settings = OrgExportSettings;

    fn validate(settings: &Self::Settings, check: &mut SettingsCheck<'_>) {
        export::validate(&settings.export, check);
    }

    async fn run(settings: &Self::Settings, cx: &KindContext<'_>) -> JobOutcome {
        let target = Target::Organization {
            organization: settings.organization.to_string(),
        };
        export::run(cx, target, &settings.export).await
    }
}
