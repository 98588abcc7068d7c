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

/// A simulator config for a benchmark: a generated world of `projects` x `tasks_per_project`
/// that changes only when the benchmark changes it (no background activity, no audit events),
/// `latency_ms` of simulated latency per request, running `time_scale` times fast.
pub fn generated_world(
    projects: usize,
    tasks_per_project: usize,
    latency_ms: u64,
    time_scale: f64,
) -> crate::sim::SimConfig {
    let mut config = crate::sim::SimConfig {
        time_scale,
        ..crate::sim::SimConfig::default()
    };
    config.world.projects = projects;
    config.world.tasks_per_project = tasks_per_project;
    config.world.audit_events = 0;
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    config.faults.latency_ms = latency_ms;
    config
}

/// Writes a benchmark daemon's `config.toml` in `dir`: a SQLite state database, `dir/jobs`,
/// an admin port, the simulator's base URL and time scale, and the credential `sa` (the
/// simulator's paid service account, its token in a 0600 file). Returns the config's path and
/// the admin port.
pub fn write_bench_config(
    dir: &std::path::Path,
    sim: &crate::sim::SimServer,
    time_scale: f64,
) -> anyhow::Result<(std::path::PathBuf, u16)> {
    use anyhow::Context;
    let token_file = dir.join("sa.token");
    write_private(
        &token_file,
        &sim.token("service-account").context("a token")?,
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config_path = dir.join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n[jobs]\ndir = \"{jobs}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n[asana]\nbase_url = \"{base}\"\ntime_scale = {time_scale}\n[credentials.sa]\nkind = \"service_account\"\ntier = \"paid\"\ntoken_file = \"{token}\"\n",
            db = dir.join("state.sqlite").display(),
            jobs = dir.join("jobs").display(),
            base = sim.base_url(),
            token = token_file.display(),
        ),
    )?;
    Ok((config_path, port))
}

/// A daemon process a benchmark runs (`asana-worker run --config CONFIG`, log level `warn`, its
/// stderr in `log`), stopped with SIGTERM when dropped, however the benchmark ends.
pub struct BenchDaemon(std::process::Child);

impl BenchDaemon {
    /// Starts the daemon and waits (at most 60 s) until `http://127.0.0.1:{admin_port}/readyz`
    /// answers 200; on failure the error holds the log.
    pub async fn start(
        config: &std::path::Path,
        log: &std::path::Path,
        admin_port: u16,
    ) -> anyhow::Result<BenchDaemon> {
        use anyhow::Context;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(config)
            .env("ASANA_WORKER__LOG__LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting the daemon")?;
        let daemon = BenchDaemon(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !reqwest::get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the daemon did not become ready: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(daemon)
    }

    /// The daemon's process id (for its CPU time and memory).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}
