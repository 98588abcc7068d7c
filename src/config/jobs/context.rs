//! What job files are checked against besides their own text: the credentials that exist and
//! whether their tokens can be read now, and the file system (output directories, secret files,
//! environment variables), so that nothing a job file names is first found missing when the job
//! runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::settings::Settings;

/// What job files are checked against.
#[derive(Debug, Clone, Default)]
pub struct ValidationContext {
    /// Credential names that exist (declared in `config.toml` or stored in the database).
    pub credentials: BTreeSet<String>,
    /// Declared credentials whose token cannot be read now, with the reason (a missing
    /// variable, an absent or empty file). A job naming one is rejected at load.
    pub unavailable: BTreeMap<String, String>,
    /// Whether secrets named by job files (token files, variables) must be readable: true where
    /// the jobs will run (the daemon, `validate` in the daemon's environment), false for
    /// commands that only need the jobs' names (`jobs run` from an admin shell).
    pub check_secrets: bool,
}

impl ValidationContext {
    /// A context knowing the names of the credentials declared in `config.toml`; add the names
    /// of stored credentials with [`ValidationContext::with_stored`], and the secret checks with
    /// [`ValidationContext::checking_secrets`] where the jobs will run.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            credentials: settings.credentials.keys().cloned().collect(),
            ..Self::default()
        }
    }

    /// Also checks that every secret can be read here and now: each declared credential's
    /// token, and the files and variables job files name.
    pub fn checking_secrets(mut self, settings: &Settings) -> Self {
        self.check_secrets = true;
        for (name, credential) in &settings.credentials {
            if let Err(reason) = credential.token_location(name).check() {
                self.unavailable.insert(name.clone(), reason);
            }
        }
        self
    }

    /// Adds credentials stored in the database (their secrets are checked when decrypted).
    pub fn with_stored(mut self, stored: &[String]) -> Self {
        self.credentials.extend(stored.iter().cloned());
        self
    }

    /// Checks that a kind's output directory can be written, so a job whose output would be
    /// lost is rejected at `validate` time rather than hours later at its first run.
    ///
    /// The directory must exist and be writable, or not exist yet with its nearest existing
    /// ancestor a writable directory (it is created at the first run). Writability is tested
    /// by creating and removing a temporary file; nothing is left behind and nothing is
    /// created.
    pub fn check_writable_dir(&self, path: &Path) -> Result<(), String> {
        check_writable_dir(path)
    }

    /// Checks that a secret file (a collector token, a database URL) can be read and is not
    /// empty; its content is not kept.
    pub fn check_secret_file(&self, path: &Path) -> Result<(), String> {
        if !self.check_secrets {
            return Ok(());
        }
        crate::config::settings::check_secret_file(path)
    }

    /// Checks that an environment variable holding a secret is set and not empty.
    pub fn check_secret_env(&self, variable: &str) -> Result<(), String> {
        if !self.check_secrets {
            return Ok(());
        }
        crate::config::settings::check_secret_env(variable)
    }
}

/// See [`ValidationContext::check_writable_dir`]; usable without a context.
pub fn check_writable_dir(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("the output directory is empty".into());
    }
    let mut existing = path;
    loop {
        match std::fs::metadata(existing) {
            Ok(metadata) if metadata.is_dir() => break,
            Ok(_) => {
                return Err(format!(
                    "{} is not a directory",
                    if existing == path {
                        format!("output path {:?}", path.display().to_string())
                    } else {
                        format!(
                            "{:?} (on the way to {:?})",
                            existing.display().to_string(),
                            path.display().to_string()
                        )
                    }
                ));
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                existing = match existing.parent() {
                    Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
                    Some(parent) => parent,
                    None => {
                        return Err(format!(
                            "no part of output directory {:?} exists",
                            path.display().to_string()
                        ));
                    }
                };
            }
            Err(error) => {
                return Err(format!(
                    "cannot inspect {:?}: {error}",
                    existing.display().to_string()
                ));
            }
        }
    }
    // The probe file is removed when dropped.
    tempfile::Builder::new()
        .prefix(".asana-worker-write-check")
        .tempfile_in(existing)
        .map(drop)
        .map_err(|error| {
            if existing == path {
                format!(
                    "output directory {:?} is not writable: {error}",
                    path.display().to_string()
                )
            } else {
                format!(
                    "output directory {:?} cannot be created: {:?} is not writable: {error}",
                    path.display().to_string(),
                    existing.display().to_string()
                )
            }
        })
}
