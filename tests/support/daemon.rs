//! A daemon process (`asana-worker run`) for the integration tests: a temporary directory with
//! its config, job directory, service-account token and SQLite database, and the helpers to
//! start it, wait until it is ready, read its log, run CLI commands against its config and stop
//! it. The tests' own setups (export jobs, audit log, daemon process) add what is theirs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asana_worker::sim::SimServer;
use asana_worker::store::{self, Store};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_asana-worker");

/// What differs between the tests' daemons; the rest of the config is the same for all (short
/// leases and heartbeats, so a killed daemon's run is rescued within seconds, and a short
/// scheduler leader lease, so the next daemon takes over its schedule within seconds too).
pub struct DaemonOptions {
    /// `[worker] poll_interval_ms`.
    pub poll_interval_ms: u64,
    /// `[scheduler] tick_ms`.
    pub tick_ms: u64,
    /// `[worker] lease_secs` (the heartbeat is a third of it).
    pub lease_secs: u64,
    /// Further `[worker]` lines.
    pub worker: &'static str,
    /// Further `[asana]` lines (after `base_url`).
    pub asana: String,
    /// Further `[credentials.sa]` lines (after `kind` and `token_file`).
    pub credential: &'static str,
    /// `ASANA_WORKER__LOG__LEVEL` of started daemons.
    pub log_level: &'static str,
    /// `[database] url`; None: `state.sqlite` in the daemon's directory.
    pub database_url: Option<String>,
    /// Further `[admin]` lines (after `listen`).
    pub admin: String,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            poll_interval_ms: 100,
            tick_ms: 200,
            lease_secs: 2,
            worker: "",
            asana: String::new(),
            credential: "",
            log_level: "info,asana_worker=debug",
            database_url: None,
            admin: String::new(),
        }
    }
}

/// The daemon's directory: `config.toml`, `jobs/`, `sa.token` (the simulator's service
/// account), `state.sqlite`, and a log file per started process.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub admin_port: u16,
    log_level: &'static str,
    /// The daemon's database.
    pub database_url: String,
}

impl Daemon {
    /// Writes the config of a daemon talking to `sim` with credential `sa`.
    pub fn new(sim: &SimServer, options: DaemonOptions) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        let token_path = dir.path().join("sa.token");
        std::fs::write(&token_path, sim.token("service-account").unwrap()).unwrap();
        let admin_port = free_port();
        let config = format!(
            r#"
[database]
url = "{db}"
[jobs]
dir = "{jobs}"
[admin]
listen = "127.0.0.1:{admin_port}"
{admin}
[worker]
lease_secs = {lease}
heartbeat_secs = {heartbeat}
poll_interval_ms = {poll}
shutdown_grace_secs = 5
{worker}
[scheduler]
tick_ms = {tick}
leader_lease_secs = 3
[asana]
base_url = "{base}"
{asana}
[credentials.sa]
kind = "service_account"
token_file = "{token}"
{credential}
"#,
            db = options.database_url.clone().unwrap_or_else(|| format!(
                "sqlite://{}",
                dir.path().join("state.sqlite").display()
            )),
            jobs = dir.path().join("jobs").display(),
            poll = options.poll_interval_ms,
            lease = options.lease_secs,
            heartbeat = (options.lease_secs / 3).max(1),
            worker = options.worker,
            tick = options.tick_ms,
            base = sim.base_url(),
            asana = options.asana,
            token = token_path.display(),
            credential = options.credential,
            admin = options.admin,
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let database_url = options
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("state.sqlite").display()));
        Daemon {
            dir,
            admin_port,
            log_level: options.log_level,
            database_url,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The job directory.
    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.path().join("jobs")
    }

    /// Writes the job file `NAME.toml` with `text`.
    pub fn write_job(&self, name: &str, text: &str) {
        std::fs::write(self.jobs_dir().join(format!("{name}.toml")), text).unwrap();
    }

    /// Writes an hourly credential check `NAME` on credential `sa` with extra lines.
    pub fn write_check_job(&self, name: &str, extra: &str) {
        self.write_job(
            name,
            &format!(
                "name = \"{name}\"\nkind = \"credential_check\"\nevery = \"1h\"\ncredential = \"sa\"\n{extra}"
            ),
        );
    }

    /// Starts `asana-worker run`; its log goes to `NAME.log`.
    pub fn start(&self, name: &str) -> Child {
        self.start_with_env(name, &[])
    }

    /// Starts `asana-worker run` with extra environment variables.
    pub fn start_with_env(&self, name: &str, env: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(self.config())
            .env("ASANA_WORKER__LOG__LEVEL", self.log_level)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// What the process started as `name` has logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until the daemon answers `/readyz`; panics if it exits or takes over 30 s.
    pub async fn wait_ready(&self, child: &mut Child) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the daemon exited early with {status}");
            }
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the daemon did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a CLI command with this daemon's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_command(&self.config(), args).output().unwrap()
    }

    /// The daemon's store, opened from this process.
    pub async fn store(&self) -> Arc<dyn Store> {
        store::open(&self.database_url).await.unwrap()
    }

    /// A path inside the daemon's directory.
    pub fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `asana-worker ARGS --config CONFIG`, with none of the variables that would point it
/// elsewhere (a master key, systemd credentials, another config) inherited from the test's
/// environment.
pub fn cli_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("ASANA_WORKER_MASTER_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("ASANA_WORKER_CONFIG")
        .args(args)
        .arg("--config")
        .arg(config);
    command
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIGKILL, and wait for the process.
pub fn kill(child: &mut Child) {
    send_signal(child, libc::SIGKILL);
    let _ = child.wait();
}

/// SIGTERM, and wait for the process to drain and exit.
pub fn terminate(child: &mut Child) {
    send_signal(child, libc::SIGTERM);
    let _ = child.wait();
}

/// Sends `signal` to `child` without waiting; whether it was delivered (it is not once the
/// process has been waited for).
pub fn send_signal(child: &Child, signal: libc::c_int) -> bool {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) == 0 }
}
