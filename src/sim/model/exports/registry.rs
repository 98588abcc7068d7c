//! The registry of exports and jobs: admitting new ones under Asana's limits (one resource export
//! in progress per workspace, a cap of exports in progress per user), finishing them, and the
//! state of their download URLs, with the knobs tests turn (failures, padding, expired URLs).
//!
//! Part of the model layer: imports [`super`] (exports and their contents) and `config` (timing).

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::{Export, ExportContent, ExportFile, ExportKind};
use crate::sim::config::Timing;

/// Exports and jobs created so far, and the knobs tests set.
#[derive(Debug, Default)]
pub struct ExportRegistry {
    /// By gid (organization export gid or job gid).
    pub exports: BTreeMap<String, Export>,
    /// Generation of download URLs: URLs minted in an earlier generation have expired
    /// (`/_sim/downloads/expire` starts a new one).
    pub url_generation: u64,
    /// How many of the next minted download URLs are born expired.
    pub expired_urls_next: u32,
    /// Cancelled by `/_sim/downloads/expire` with `abort_in_flight`: cuts the bodies of the
    /// downloads being served at that moment.
    in_flight: CancellationToken,
    /// What the download route has served, for tests.
    pub download_stats: DownloadStats,
    /// How many of the next exports should fail.
    pub fail_next: u32,
    /// Padding target for later exports, in compressed bytes.
    pub padding_bytes: u64,
    /// Where files are written; created on first use, removed with the registry.
    dir: Option<TempDir>,
}

/// Counts of the download route's answers.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DownloadStats {
    /// Downloads started (200 or 206).
    pub served: u64,
    /// Of those, requests with a `Range` header.
    pub ranged: u64,
    /// Requests refused because the URL had expired.
    pub expired: u64,
    /// Bodies cut by `/_sim/downloads/expire` with `abort_in_flight`.
    pub aborted: u64,
}

/// An export someone asks for.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Gid of the organization export, or of the job.
    pub gid: String,
    /// Gid of what a job produces (the same as `gid` for organization exports).
    pub result_gid: String,
    /// Which endpoint it came to.
    pub kind: ExportKind,
    /// Who asks.
    pub user_gid: String,
    /// The workspace to export from.
    pub workspace: String,
    /// What to export.
    pub content: ExportContent,
}

/// An export the registry took on.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The export as registered.
    pub export: Export,
    /// How many exports its user now has in progress, this one included.
    pub in_progress: usize,
}

/// Why the registry refused an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A resource export of the same workspace is still in progress.
    WorkspaceBusy,
    /// The user already has the most exports in progress allowed; the earliest ends in
    /// `retry_after_secs` (simulated, rounded up).
    AtCap {
        /// Seconds until one of the user's exports ends.
        retry_after_secs: u64,
    },
}

impl ExportRegistry {
    /// Exports of `user_gid` still in progress.
    pub fn in_progress_for(&self, user_gid: &str) -> Vec<&Export> {
        self.exports
            .values()
            .filter(|e| e.user_gid == user_gid && e.in_progress())
            .collect()
    }

    /// Registers the export `request` asks for at `now`, unless its workspace has a resource
    /// export in progress (for resource exports) or its user already has `cap` in progress. It
    /// starts after `timing.export_pending_secs` and is due `timing.export_running_secs` later;
    /// it takes the failure and padding knobs tests set.
    pub fn admit(
        &mut self,
        request: ExportRequest,
        timing: &Timing,
        cap: usize,
        now: DateTime<Utc>,
    ) -> Result<Admitted, Refusal> {
        let started_at = now + chrono::Duration::seconds(timing.export_pending_secs as i64);
        let due_at = started_at + chrono::Duration::seconds(timing.export_running_secs as i64);
        if request.kind == ExportKind::Resource
            && self.exports.values().any(|e| {
                e.kind == ExportKind::Resource
                    && e.workspace == request.workspace
                    && e.in_progress()
            })
        {
            return Err(Refusal::WorkspaceBusy);
        }
        let running = self.in_progress_for(&request.user_gid);
        let in_progress = running.len();
        if in_progress >= cap {
            let wait = running
                .iter()
                .map(|e| (e.due_at - now).num_milliseconds())
                .min()
                .unwrap_or(0);
            let retry_after_secs = ((wait.max(0) as f64) / 1000.0).ceil() as u64;
            return Err(Refusal::AtCap { retry_after_secs });
        }
        let fail = self.fail_next > 0;
        if fail {
            self.fail_next -= 1;
        }
        let export = Export {
            gid: request.gid,
            result_gid: request.result_gid,
            kind: request.kind,
            user_gid: request.user_gid,
            workspace: request.workspace,
            content: request.content,
            created_at: now,
            started_at,
            due_at,
            fail,
            padding_bytes: self.padding_bytes,
            outcome: None,
            completed_at: None,
            building: false,
        };
        self.exports.insert(export.gid.clone(), export.clone());
        Ok(Admitted {
            export,
            in_progress: in_progress + 1,
        })
    }

    /// The exports due at `now` whose files nobody is writing yet, marked as being written.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Export> {
        self.exports
            .values_mut()
            .filter(|e| e.in_progress() && !e.building && now >= e.due_at)
            .map(|e| {
                e.building = true;
                e.clone()
            })
            .collect()
    }

    /// Records how export `gid` ended, at `now`.
    pub fn finish(&mut self, gid: &str, outcome: Result<ExportFile, String>, now: DateTime<Utc>) {
        if let Some(export) = self.exports.get_mut(gid) {
            export.outcome = Some(outcome);
            export.completed_at = Some(now);
        }
    }

    /// The directory export files are written to, created on first use.
    pub fn dir(&mut self) -> std::io::Result<PathBuf> {
        if self.dir.is_none() {
            self.dir = Some(
                tempfile::Builder::new()
                    .prefix("asana-sim-exports-")
                    .tempdir()?,
            );
        }
        Ok(self
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default())
    }

    /// The generation a download URL minted now belongs to: the current one, or the one before
    /// (already expired) while tests asked for URLs born expired.
    pub fn mint_generation(&mut self) -> u64 {
        if self.expired_urls_next > 0 {
            self.expired_urls_next -= 1;
            self.url_generation.wrapping_sub(1)
        } else {
            self.url_generation
        }
    }

    /// Expires every download URL minted so far, makes the `next` ones born expired, and when
    /// `abort_in_flight` cuts the downloads being served now.
    pub fn expire_downloads(&mut self, next: u32, abort_in_flight: bool) {
        self.url_generation += 1;
        self.expired_urls_next = next;
        if abort_in_flight {
            self.in_flight.cancel();
            self.in_flight = CancellationToken::new();
        }
    }

    /// Cancelled when the downloads being served must be cut (see [`Self::expire_downloads`]).
    pub fn in_flight(&self) -> CancellationToken {
        self.in_flight.clone()
    }
}
