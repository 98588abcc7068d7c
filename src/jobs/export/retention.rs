//! Retention of downloaded exports: each export file has a JSON manifest next to it; the
//! manifests of one job say which files are its own and when they were downloaded, so pruning
//! never touches another job's files (several jobs may share an output directory) nor files it
//! did not write.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Suffix of manifest files: `<export file>.manifest.json`.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// What is recorded next to each export file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job that downloaded it.
    pub job: String,
    /// `org_export` | `graph_export` | `resource_export`.
    pub kind: String,
    /// The organization export's gid, or the export job's gid.
    pub export_gid: String,
    /// The organization, graph parent or workspace exported.
    pub parent: String,
    /// The export file's name, in the same directory.
    pub file: String,
    /// When the export was requested.
    pub created_at: DateTime<Utc>,
    /// When Asana reported it finished (first seen by the poller).
    pub finished_at: DateTime<Utc>,
    /// When the download completed.
    pub downloaded_at: DateTime<Utc>,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 of the file.
    pub sha256: String,
}

/// How many exports of a job to keep: an export is kept when it is one of the newest
/// `keep_last`, or younger than `keep_for`; with neither rule set everything is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest N (0: no count rule).
    pub keep_last: u32,
    /// Keep those downloaded within this long.
    pub keep_for: Option<Duration>,
}

/// Errors of pruning.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The directory or a file could not be read or removed.
    #[error("{action} {path}: {source}; check the output directory's permissions")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The manifests of `job` in `dir`, newest download first. Manifests that cannot be read are
/// skipped with a warning (they may belong to something else).
pub fn manifests(dir: &Path, job: &str) -> Result<Vec<(PathBuf, Manifest)>, RetentionError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RetentionError::Io {
        action: "cannot list",
        path: dir.display().to_string(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(MANIFEST_SUFFIX) || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let manifest = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok());
        match manifest {
            Some(manifest) if manifest.job == job => found.push((path, manifest)),
            Some(_) => {}
            None => {
                tracing::warn!(path = %path.display(), "Skipping an unreadable export manifest")
            }
        }
    }
    found.sort_by(|a, b| {
        b.1.downloaded_at
            .cmp(&a.1.downloaded_at)
            .then_with(|| b.1.export_gid.cmp(&a.1.export_gid))
    });
    Ok(found)
}

/// Removes the exports of `job` in `dir` that `retention` does not keep, each file before its
/// manifest (a crash in between leaves a manifest whose file is gone, pruned again next time).
/// Returns the removed export files.
pub fn prune(
    dir: &Path,
    job: &str,
    retention: Retention,
    now: DateTime<Utc>,
) -> Result<Vec<PathBuf>, RetentionError> {
    if retention.keep_last == 0 && retention.keep_for.is_none() {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for (index, (manifest_path, manifest)) in manifests(dir, job)?.into_iter().enumerate() {
        let by_count = retention.keep_last > 0 && index < retention.keep_last as usize;
        let by_age = retention.keep_for.is_some_and(|keep| {
            chrono::Duration::from_std(keep)
                .map(|keep| manifest.downloaded_at > now - keep)
                .unwrap_or(true)
        });
        if by_count || by_age {
            continue;
        }
        // Only a plain file name in the same directory: a manifest cannot point elsewhere.
        let file_name = Path::new(&manifest.file);
        if file_name.components().count() == 1 && !manifest.file.starts_with('.') {
            let file = dir.join(file_name);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RetentionError::Io {
                        action: "cannot remove",
                        path: file.display().to_string(),
                        source,
                    });
                }
            }
            removed.push(file);
        }
        std::fs::remove_file(&manifest_path).map_err(|source| RetentionError::Io {
            action: "cannot remove",
            path: manifest_path.display().to_string(),
            source,
        })?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn write(dir: &Path, job: &str, gid: &str, day: u32) {
        let file = format!("{job}-{gid}.json.gz");
        std::fs::write(dir.join(&file), b"x").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap();
        let manifest = Manifest {
            job: job.into(),
            kind: "org_export".into(),
            export_gid: gid.into(),
            parent: "1".into(),
            file: file.clone(),
            created_at: at,
            finished_at: at,
            downloaded_at: at,
            size: 1,
            sha256: String::new(),
        };
        std::fs::write(
            dir.join(format!("{file}{MANIFEST_SUFFIX}")),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn keeps_the_newest_or_the_young_and_only_touches_its_own_job() {
        let dir = tempfile::tempdir().unwrap();
        for day in 1..=5 {
            write(dir.path(), "a", &format!("{day}"), day);
        }
        write(dir.path(), "b", "99", 1);
        let now = Utc.with_ymd_and_hms(2026, 1, 6, 0, 0, 0).unwrap();
        let keep_two = Retention {
            keep_last: 2,
            keep_for: None,
        };
        let removed = prune(dir.path(), "a", keep_two, now).unwrap();
        assert_eq!(removed.len(), 3);
        let left: Vec<String> = manifests(dir.path(), "a")
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.export_gid)
            .collect();
        assert_eq!(left, ["5", "4"]);
        assert!(dir.path().join("b-99.json.gz").exists(), "job b untouched");
        // Age: keep those younger than 1.5 days → only day 5 (day 4 is 2 days old).
        let young = Retention {
            keep_last: 0,
            keep_for: Some(Duration::from_secs(36 * 3600)),
        };
        prune(dir.path(), "a", young, now).unwrap();
        assert_eq!(manifests(dir.path(), "a").unwrap().len(), 1);
        assert!(!dir.path().join("a-4.json.gz").exists());
        // No rule: keep everything.
        let none = Retention {
            keep_last: 0,
            keep_for: None,
        };
        assert!(prune(dir.path(), "b", none, now).unwrap().is_empty());
    }
}
