//! What several subcommands share: the `--config` option and loading settings.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::settings::Settings;

/// The `--config` option.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Daemon settings file (TOML). Also `ASANA_WORKER_CONFIG`. Every setting can be overridden
    /// with `ASANA_WORKER__SECTION__KEY` environment variables.
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads the settings.
    pub fn load(&self) -> anyhow::Result<Settings> {
        let path = crate::daemon::config_path(self.config.clone());
        Settings::load(path.as_deref()).with_context(|| match &path {
            Some(path) => format!("loading settings from {}", path.display()),
            None => "loading settings from the environment".to_string(),
        })
    }
}

/// Exit-code-carrying error: invalid input (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Creates `path` with `contents`, readable and writable by the owner only (mode 0600), and
/// refuses to overwrite an existing file: token files and job files of the demo and benchmarks.
pub fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
