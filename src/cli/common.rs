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

/// CPU time (user + system) of process `pid`, from `/proc/PID/stat`: what the benchmarks that
/// run the daemon as a child charge to it.
pub fn process_cpu(pid: u32) -> std::time::Duration {
    let ticks_per_sec = 100.0; // USER_HZ on Linux.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .get(stat.rfind(')')? + 2..)?
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>())
        })
        .unwrap_or(0);
    std::time::Duration::from_secs_f64(ticks as f64 / ticks_per_sec)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:` resident now, `VmHWM:` its peak), 0 when
/// unreadable.
pub fn process_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
