//! An `audit_log` job against the simulator, driven through the real binary: a daemon process
//! (`asana-worker run`) with a SQLite store and a file sink, the simulator in this process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use asana_worker::jobs::audit_log::Cursor;
use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::store::{RunFilter, RunState, Store};
use serde_json::Value;

pub use super::daemon;

// Each test crate uses a different part of these.
#[allow(unused_imports)]
pub use daemon::{BIN, Daemon, DaemonOptions, free_port, kill, terminate};

/// A daemon directory with a job `audit` writing to a file sink, and the simulator.
pub struct AuditSetup {
    pub daemon: Daemon,
    pub sim: SimServer,
}

/// The daemon's directory, config, CLI and store, as [`Daemon`] has them.
impl std::ops::Deref for AuditSetup {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl AuditSetup {
    /// Starts the simulator with `config` and writes a config whose Asana time scale matches it
    /// and a job `audit` with the given schedule line and extra `[settings]` lines.
    pub async fn new(config: SimConfig, schedule: &str, settings: &str) -> AuditSetup {
        let time_scale = config.time_scale;
        let sim = SimServer::start(config).await.unwrap();
        let daemon = Daemon::new(
            &sim,
            DaemonOptions {
                poll_interval_ms: 50,
                tick_ms: 100,
                asana: format!("time_scale = {time_scale:?}\nrequest_timeout_secs = 30"),
                credential: "tier = \"paid\"",
                log_level: "info",
                ..DaemonOptions::default()
            },
        );
        std::fs::create_dir(daemon.path("out")).unwrap();
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
            out = daemon.path("out").display(),
        );
        std::fs::write(daemon.jobs_dir().join("audit.toml"), job).unwrap();
        AuditSetup { daemon, sim }
    }

    /// The sink's stream directory.
    pub fn stream_dir(&self) -> PathBuf {
        self.dir.path().join("out").join("audit")
    }

    /// Starts `asana-worker run`; its log goes to `daemon-N.log`.
    pub fn start(&self, n: usize) -> Child {
        self.daemon.start(&format!("daemon-{n}"))
    }

    pub fn log(&self, n: usize) -> String {
        self.daemon.log(&format!("daemon-{n}"))
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

    /// The simulator's admin API.
    pub fn admin(&self) -> super::sim::SimAdmin {
        super::sim::SimAdmin::of(&self.sim)
    }

    /// Requests the token made so far.
    pub async fn requests(&self) -> u64 {
        self.admin().token_stats("service-account").await["requests"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Appends events through the simulator's admin API; returns their gids.
    pub async fn append(&self, body: Value) -> Vec<String> {
        self.admin().append_audit_events(body).await
    }

    /// The simulator's clock.
    pub async fn sim_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.admin().now().await
    }

    /// Moves the simulator's clock forward (offsets age with it).
    pub async fn advance_sim_clock(&self, secs: u64) {
        self.admin().advance(secs as i64).await;
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

/// A simulator with `events` audit events over a day of backfill and no live activity (no new
/// events, no task changes), so a pull has a fixed set to deliver.
pub fn quiet_sim(events: usize, time_scale: f64) -> SimConfig {
    let mut config = SimConfig {
        time_scale,
        ..SimConfig::default()
    };
    config.world.audit_events = events;
    config.world.audit_backfill_days = 1;
    config.timing.audit_events_per_minute = 0.0;
    config.timing.activity_per_minute = 0.0;
    config
}

/// [`quiet_sim`] over a week of backfill, 4 times faster than real time, with the faults a
/// crash test runs under: 2 % each of 500, 503, 429 (Retry-After 1 s) and connection resets,
/// 2 to 5 ms of latency.
pub fn faulty_sim(events: usize) -> SimConfig {
    let mut config = quiet_sim(events, 4.0);
    config.world.audit_backfill_days = 7;
    config.faults = asana_worker::sim::config::FaultSpec {
        error_500: 0.02,
        error_503: 0.02,
        error_429: 0.02,
        retry_after_secs: 1,
        reset: 0.02,
        latency_ms: 2,
        jitter_ms: 3,
        ..Default::default()
    };
    config
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

/// The job's cursor as its checkpoint holds it (None before the first one).
pub async fn stored_cursor(store: &dyn Store) -> Option<Cursor> {
    store
        .get_checkpoint("audit", asana_worker::jobs::audit_log::CURSOR_KEY)
        .await
        .unwrap()
        .map(|value| serde_json::from_value(value).unwrap())
}

/// How many runs of the job have completed.
pub async fn completed_runs(store: &dyn Store) -> usize {
    store
        .list_runs(&RunFilter {
            job_name: Some("audit".into()),
            states: vec![RunState::Completed],
            limit: 100_000,
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .len()
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

/// One POST a [`Collector`] stored: its headers (lower-case names) and raw body.
pub type Received = (BTreeMap<String, String>, Vec<u8>);

/// An HTTP collector for the `http` sinks on loopback that honours `Idempotency-Key` as a real
/// one would: it answers 503 to every `fail_every`-th POST and keeps the first body accepted
/// under each key (a key posted again with another body is recorded: that must never happen).
#[derive(Clone, Default)]
pub struct Collector {
    pub by_key: std::sync::Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    pub conflicts: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub posts: std::sync::Arc<std::sync::Mutex<u64>>,
    /// Every key in the order its POSTs were stored, repeats included.
    pub stored: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every stored POST's headers (lower-case names) and raw body, in order.
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    /// `(n, pid)`: once the body of POST number `n` is stored, SIGKILL process `pid` before
    /// answering.
    kill: std::sync::Arc<std::sync::Mutex<Option<(u64, u32)>>>,
}

impl Collector {
    /// Serves the collector on a loopback port until the test ends; returns it and its address.
    pub async fn start(fail_every: u64) -> (Collector, std::net::SocketAddr) {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        let collector = Collector::default();
        let state = collector.clone();
        let app =
            axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let n = {
                        let mut posts = state.posts.lock().unwrap();
                        *posts += 1;
                        *posts
                    };
                    if n % fail_every == 0 {
                        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
                    }
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let header_map: BTreeMap<String, String> = headers
                        .iter()
                        .filter_map(|(name, value)| {
                            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
                        })
                        .collect();
                    state
                        .received
                        .lock()
                        .unwrap()
                        .push((header_map, body.to_vec()));
                    let body = String::from_utf8_lossy(&body).into_owned();
                    {
                        let mut by_key = state.by_key.lock().unwrap();
                        match by_key.get(&key) {
                            Some(first) if *first != body => {
                                state.conflicts.lock().unwrap().push(key.clone());
                            }
                            Some(_) => {}
                            None => {
                                by_key.insert(key.clone(), body);
                            }
                        }
                    }
                    state.stored.lock().unwrap().push(key);
                    let kill = *state.kill.lock().unwrap();
                    if let Some((at, pid)) = kill
                        && at == n
                    {
                        // SAFETY: signalling the test's own daemon process.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                    (StatusCode::OK, "ok").into_response()
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (collector, addr)
    }

    /// Arms the collector to SIGKILL process `pid` right after it has stored the body of POST
    /// number `n` (counted from 1), before it answers: the sender dies with its POST
    /// acknowledged by the collector and not yet recorded by itself.
    pub fn kill_after_storing(&self, n: u64, pid: u32) {
        *self.kill.lock().unwrap() = Some((n, pid));
    }

    /// The gids of every accepted body's events, with repeats.
    pub fn events(&self) -> Vec<String> {
        self.by_key
            .lock()
            .unwrap()
            .values()
            .flat_map(|body| {
                body.lines()
                    .map(|line| {
                        serde_json::from_str::<Value>(line).unwrap()["gid"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
