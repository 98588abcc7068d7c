//! An `audit_log` job against the simulator, driven through the real binary: a daemon process
//! (`asana-worker run`) with a SQLite store and a file sink, the simulator in this process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use asana_worker::sim::{SimConfig, SimServer};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_asana-worker");

/// A temporary directory with config, job file, token and sink directory, and the simulator.
pub struct AuditSetup {
    pub dir: tempfile::TempDir,
    pub sim: SimServer,
    pub admin_port: u16,
}

impl AuditSetup {
    /// Starts the simulator with `config` and writes a config whose Asana time scale matches it
    /// and a job `audit` with the given schedule line and extra `[settings]` lines.
    pub async fn new(config: SimConfig, schedule: &str, settings: &str) -> AuditSetup {
        let time_scale = config.time_scale;
        let sim = SimServer::start(config).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let token_path = dir.path().join("sa.token");
        std::fs::write(&token_path, sim.token("service-account").unwrap()).unwrap();
        let admin_port = free_port();
        let config = format!(
            r#"
[database]
url = "sqlite://{db}"
[jobs]
dir = "{jobs}"
[admin]
listen = "127.0.0.1:{admin_port}"
[worker]
lease_secs = 2
heartbeat_secs = 1
poll_interval_ms = 50
shutdown_grace_secs = 5
[scheduler]
tick_ms = 100
[asana]
base_url = "{base}"
time_scale = {time_scale:?}
request_timeout_secs = 30
[credentials.sa]
kind = "service_account"
tier = "paid"
token_file = "{token}"
"#,
            db = dir.path().join("state.sqlite").display(),
            jobs = dir.path().join("jobs").display(),
            base = sim.base_url(),
            token = token_path.display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let workspace = sim.state().world().workspace.gid.clone();
        let job = format!(
            r#"name = "audit"
kind = "audit_log"
{schedule}
credential = "sa"
max_attempts = 1000
retry_initial = "1s"
retry_max = "2s"
timeout = "10m"

[settings]
workspace = "{workspace}"
{settings}

[settings.sink]
type = "file"
dir = "{out}"
rotate_bytes = 300000
"#,
            out = dir.path().join("out").display(),
        );
        std::fs::write(dir.path().join("jobs/audit.toml"), job).unwrap();
        AuditSetup {
            dir,
            sim,
            admin_port,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The sink's stream directory.
    pub fn stream_dir(&self) -> PathBuf {
        self.dir.path().join("out").join("audit")
    }

    /// Starts `asana-worker run`; its log goes to `daemon-N.log`.
    pub fn start(&self, n: usize) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("daemon-{n}.log"))).unwrap();
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(self.config())
            .env("ASANA_WORKER__LOG__LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("daemon-{n}.log"))).unwrap_or_default()
    }

    /// Waits until the daemon answers `/readyz`.
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

    /// Runs a CLI command with this setup's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap()
    }

    /// `jobs run audit --wait`: one run, to its end.
    pub fn run_job(&self) -> String {
        let output = self.cli(&["jobs", "run", "audit", "--wait", "--timeout-secs", "120"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{text}");
        text
    }

    /// Every record the sink holds, sealed and open, in file order.
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.stream_dir())
    }

    /// The simulator's events by gid.
    pub fn sim_events(&self) -> BTreeMap<String, Value> {
        self.sim
            .state()
            .world()
            .audit_events
            .iter()
            .map(|e| (e.gid.clone(), e.body.clone()))
            .collect()
    }

    /// Requests the token made so far.
    pub async fn requests(&self) -> u64 {
        let stats: Value = reqwest::get(format!("{}/_sim/stats", self.sim.origin()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["tokens"]["service-account"]["requests"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Appends events through the simulator's admin API; returns their gids.
    pub async fn append(&self, body: Value) -> Vec<String> {
        let response: Value = reqwest::Client::new()
            .post(format!("{}/_sim/audit_events", self.sim.origin()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["gids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect()
    }

    /// `asana-worker verify --dir …`.
    pub fn verify(&self) -> std::process::Output {
        Command::new(BIN)
            .args(["verify", "--dir"])
            .arg(self.dir.path().join("out"))
            .output()
            .unwrap()
    }
}

/// Reads a stream directory's records: sealed segments in manifest order, then the open one.
///
/// As the sink's own recovery does after a crash, the open segment counts only up to its last
/// complete journal line, and not at all when the manifest already lists its batches (a seal
/// interrupted after writing the manifest, before removing the open files).
pub fn read_records(dir: &Path) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut sealed_through = None;
    if let Ok(manifest) = std::fs::read_to_string(dir.join("manifest.jsonl")) {
        for line in manifest.lines().filter(|l| !l.is_empty()) {
            let entry: Value = serde_json::from_str(line).unwrap();
            sealed_through = entry["last_sequence"].as_u64();
            let file = entry["file"].as_str().unwrap();
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let text = if file.ends_with(".gz") {
                let mut out = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(&bytes[..]),
                    &mut out,
                )
                .unwrap();
                out
            } else {
                String::from_utf8(bytes).unwrap()
            };
            lines.extend(text.lines().map(str::to_string));
        }
    }
    let journal = std::fs::read_to_string(dir.join(".open.journal")).unwrap_or_default();
    let last = journal
        .split_inclusive('\n')
        .take_while(|l| l.ends_with('\n'))
        .map_while(|l| serde_json::from_str::<Value>(l).ok())
        .last();
    if let Some(last) = last
        && sealed_through.is_none_or(|s| last["sequence"].as_u64().unwrap() > s)
    {
        let open = std::fs::read(dir.join(".open.jsonl")).unwrap_or_default();
        let end = (last["end"].as_u64().unwrap() as usize).min(open.len());
        let text = String::from_utf8(open[..end].to_vec()).unwrap();
        lines.extend(text.lines().map(str::to_string));
    }
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Counts records by gid.
pub fn by_gid(records: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts
            .entry(record["gid"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    counts
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIGKILL.
pub fn kill(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// SIGTERM and wait.
pub fn terminate(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}
