//! Export jobs end to end: the real daemon binary (`asana-worker run`) against the simulator,
//! with a real SQLite store. Eight export jobs of one user stay within the 5-export cap without
//! a 429; a SIGKILL while polling and again while downloading resumes the same export (no second
//! export in the simulator) and the file's sha256 matches the simulator's; a failed export ends
//! the run with the reason; retention prunes; a resource export meeting the one-per-workspace
//! 403 waits and retries; downloads refuse non-https URLs and recognise expired ones; a
//! downloaded file is delivered to an s3 sink (moto; SKIPPED without it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use asana_worker::asana::{AsanaClient, ClientConfig};
use asana_worker::budget::{Budget, BudgetConfig, Tier};
use asana_worker::jobs::export::download::{
    DownloadError, DownloadPolicy, Downloader, ProgressSink,
};
use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::store::{self, RunState, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod support;
use support::moto;

use moto::Moto;

use support::daemon as daemon_support;

use daemon_support::{Daemon, DaemonOptions, kill, terminate};

/// A daemon directory for export jobs, and the simulator.
struct Setup {
    daemon: Daemon,
    sim: SimServer,
}

/// The daemon's directory, config, CLI and store, as [`Daemon`] has them.
impl std::ops::Deref for Setup {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

fn sim_config(running_secs: u64) -> SimConfig {
    let mut config = SimConfig::default();
    config.world.tasks_per_project = 12;
    config.world.audit_events = 50;
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    config.timing.export_pending_secs = 1;
    config.timing.export_running_secs = running_secs;
    config
}

impl Setup {
    async fn new(config: SimConfig) -> Setup {
        let sim = SimServer::start(config).await.unwrap();
        let daemon = Daemon::new(
            &sim,
            DaemonOptions {
                worker: "concurrency = 10",
                ..DaemonOptions::default()
            },
        );
        Setup { daemon, sim }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("exports")
    }

    fn workspace(&self) -> String {
        self.sim.state().world().workspace.gid.clone()
    }

    fn projects(&self) -> Vec<String> {
        self.sim
            .state()
            .world()
            .projects
            .iter()
            .map(|p| p.gid.clone())
            .collect()
    }

    /// A job file of `kind` with `own` settings (TOML lines) and fast polling.
    fn job(&self, name: &str, kind: &str, own: &str) {
        let text = format!(
            "name = \"{name}\"\nkind = \"{kind}\"\nevery = \"24h\"\ncredential = \"sa\"\nmax_attempts = 3\nretry_initial = \"1s\"\ntimeout = \"5m\"\n[settings]\noutput_dir = \"{out}\"\npoll_interval = \"1s\"\npoll_max_interval = \"2s\"\n{own}\n",
            out = self.out().display()
        );
        std::fs::write(
            self.dir.path().join("jobs").join(format!("{name}.toml")),
            text,
        )
        .unwrap();
    }

    /// Pads the simulator's export files to about `bytes` and writes job `name` exporting the
    /// organization, with `own` settings (TOML lines).
    async fn padded_org_job(&self, name: &str, bytes: u64, own: &str) {
        self.admin(
            reqwest::Method::POST,
            "/_sim/exports/size",
            Some(json!({ "bytes": bytes })),
        )
        .await;
        let workspace = self.workspace();
        self.job(
            name,
            "org_export",
            &format!("organization = \"{workspace}\"\n{own}"),
        );
    }

    fn enqueue(&self, job: &str) -> uuid::Uuid {
        let output = self.cli(&["jobs", "run", job]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        uuid::Uuid::parse_str(stdout.split_whitespace().nth(2).unwrap()).unwrap()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        support::sim::SimAdmin::of(&self.sim)
            .call(method, path.trim_start_matches("/_sim/"), body)
            .await
    }

    async fn sim_exports(&self) -> Vec<Value> {
        let list = self
            .admin(reqwest::Method::GET, "/_sim/exports", None)
            .await;
        list["exports"].as_array().cloned().unwrap_or_default()
    }

    async fn token_stats(&self) -> Value {
        let stats = self.admin(reqwest::Method::GET, "/_sim/stats", None).await;
        stats["tokens"]["service-account"].clone()
    }
}

async fn wait_for_run(
    store: &std::sync::Arc<dyn Store>,
    id: uuid::Uuid,
    states: &[RunState],
    within: Duration,
) -> store::Run {
    let deadline = Instant::now() + within;
    loop {
        let run = store.get_run(id).await.unwrap().unwrap();
        if states.contains(&run.state) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run stayed {} (wanted {states:?}): {run:?}",
            run.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_checkpoint(
    store: &std::sync::Arc<dyn Store>,
    job: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = store.get_checkpoint(job, "export").await.unwrap()
            && done(&value)
        {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint of {job} never matched: {:?}",
            store.get_checkpoint(job, "export").await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn manifests(dir: &Path) -> Vec<Value> {
    let mut found: Vec<Value> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    found.sort_by_key(|m| m["downloaded_at"].as_str().unwrap_or_default().to_string());
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_export_jobs_of_one_user_never_exceed_five_concurrent_exports() {
    let setup = Setup::new(sim_config(3)).await;
    let projects = setup.projects();
    assert!(
        projects.len() >= 8,
        "the world has {} projects",
        projects.len()
    );
    for (i, project) in projects.iter().take(8).enumerate() {
        setup.job(
            &format!("graph-{i}"),
            "graph_export",
            &format!("parent = \"{project}\""),
        );
    }
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    let ids: Vec<_> = (0..8)
        .map(|i| setup.enqueue(&format!("graph-{i}")))
        .collect();
    let store = setup.store().await;
    for id in ids {
        wait_for_run(&store, id, &[RunState::Completed], Duration::from_secs(120)).await;
    }
    let stats = setup.token_stats().await;
    let peak = stats["peak_concurrent_jobs"].as_u64().unwrap();
    assert!(peak <= 5, "the cap was exceeded: {stats}");
    assert!(peak >= 2, "exports ran concurrently: {stats}");
    assert!(
        stats["rejected"]["jobs"].is_null() || stats["rejected"]["jobs"] == json!(0),
        "no 429 for the job cap: {stats}"
    );
    let exports = setup.sim_exports().await;
    assert_eq!(exports.len(), 8, "one export per job");
    let written = manifests(&setup.out());
    assert_eq!(written.len(), 8);
    for manifest in &written {
        let sim = exports
            .iter()
            .find(|e| e["gid"] == manifest["export_gid"])
            .unwrap();
        assert_eq!(manifest["sha256"], sim["sha256"]);
        let file = setup.out().join(manifest["file"].as_str().unwrap());
        assert_eq!(json!(sha256_file(&file)), sim["sha256"]);
    }
    assert!(
        setup.log("daemon").contains("waiting for one"),
        "extra jobs waited for a slot"
    );
    terminate(&mut daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_polling_and_while_downloading_resumes_the_same_export() {
    let setup = Setup::new(sim_config(6)).await;
    setup
        .padded_org_job("org", 4_000_000, "download_rate_limit_kib = 512")
        .await;
    let store = setup.store().await;

    let mut first = setup.start("first");
    setup.wait_ready(&mut first).await;
    let id = setup.enqueue("org");
    let polling = wait_for_checkpoint(&store, "org", Duration::from_secs(30), |v| {
        v["phase"] == "polling"
    })
    .await;
    let gid = polling["export_gid"].as_str().unwrap().to_string();
    kill(&mut first);

    let mut second = setup.start("second");
    setup.wait_ready(&mut second).await;
    let downloading = wait_for_checkpoint(&store, "org", Duration::from_secs(60), |v| {
        v["phase"] == "downloading" && v["partial_offset"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(downloading["export_gid"], json!(gid), "the same export");
    let offset = downloading["partial_offset"].as_u64().unwrap();
    kill(&mut second);
    assert!(
        setup
            .log("second")
            .contains("Resuming the export requested earlier")
    );

    let mut third = setup.start("third");
    setup.wait_ready(&mut third).await;
    let done = wait_for_run(&store, id, &[RunState::Completed], Duration::from_secs(90)).await;
    assert!(done.rescues >= 2, "{done:?}");
    let exports = setup.sim_exports().await;
    assert_eq!(exports.len(), 1, "no second export: {exports:?}");
    assert_eq!(exports[0]["gid"], json!(gid));
    let written = manifests(&setup.out());
    assert_eq!(written.len(), 1);
    let manifest = &written[0];
    assert_eq!(manifest["export_gid"], json!(gid));
    assert_eq!(manifest["sha256"], exports[0]["sha256"]);
    assert_eq!(manifest["size"], exports[0]["bytes"]);
    let file = setup.out().join(manifest["file"].as_str().unwrap());
    assert_eq!(json!(sha256_file(&file)), exports[0]["sha256"]);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let log = strip_ansi(&setup.log("third"));
    assert!(
        log.contains("Resuming the export requested earlier"),
        "{log}"
    );
    let resumed = log
        .lines()
        .find(|l| l.contains("Downloaded the export"))
        .unwrap_or_default()
        .to_string();
    let resumed_from: u64 = resumed
        .split("resumed_from=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        resumed_from >= offset && resumed_from > 0,
        "the download resumed with Range from the synced offset {offset}: {resumed}"
    );
    let checkpoint = store
        .get_checkpoint("org", "export")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint["phase"], "done");
    assert!(
        !setup
            .out()
            .join(".partial")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "no partial file left"
    );
    terminate(&mut third);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_ends_the_run_with_the_reason_and_the_next_run_requests_a_new_one() {
    let setup = Setup::new(sim_config(2)).await;
    setup
        .admin(
            reqwest::Method::POST,
            "/_sim/exports/fail_next",
            Some(json!({ "count": 1 })),
        )
        .await;
    let project = setup.projects()[0].clone();
    setup.job("graph", "graph_export", &format!("parent = \"{project}\""));
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    let waited = setup.cli(&["jobs", "run", "graph", "--wait", "--timeout-secs", "60"]);
    let stdout = String::from_utf8_lossy(&waited.stdout);
    assert_eq!(waited.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("polling"),
        "progress shown while waiting: {stdout}"
    );
    assert!(
        stdout.contains("Asana reports it as \"failed\""),
        "the reason is shown: {stdout}"
    );
    let first = setup.sim_exports().await;
    assert_eq!(first.len(), 1);
    assert!(
        stdout.contains(first[0]["gid"].as_str().unwrap()),
        "{stdout}"
    );

    let again = setup.cli(&["jobs", "run", "graph", "--wait", "--timeout-secs", "60"]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains("downloading") || stdout.contains("done"),
        "{stdout}"
    );
    assert_eq!(
        setup.sim_exports().await.len(),
        2,
        "a new export after the failure"
    );
    terminate(&mut daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_exports_and_prunes_older_ones_with_their_manifests() {
    let setup = Setup::new(sim_config(1)).await;
    let workspace = setup.workspace();
    setup.job(
        "org",
        "org_export",
        &format!("organization = \"{workspace}\"\nkeep_last = 2"),
    );
    // A file of another job in the same directory is left alone.
    std::fs::create_dir_all(setup.out()).unwrap();
    std::fs::write(setup.out().join("notes.txt"), "mine").unwrap();
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    let mut gids = Vec::new();
    for _ in 0..3 {
        let waited = setup.cli(&["jobs", "run", "org", "--wait", "--timeout-secs", "60"]);
        assert!(
            waited.status.success(),
            "{}",
            String::from_utf8_lossy(&waited.stdout)
        );
        let checkpoint = setup
            .store()
            .await
            .get_checkpoint("org", "export")
            .await
            .unwrap()
            .unwrap();
        gids.push(checkpoint["export_gid"].as_str().unwrap().to_string());
    }
    let left = manifests(&setup.out());
    let kept: Vec<&str> = left
        .iter()
        .map(|m| m["export_gid"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [gids[1].as_str(), gids[2].as_str()]);
    let files: Vec<String> = std::fs::read_dir(setup.out())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json.gz"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| !f.contains(&gids[0])));
    assert!(setup.out().join("notes.txt").exists());
    assert!(setup.log("daemon").contains("Pruned an old export"));
    terminate(&mut daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_export_meeting_another_in_progress_waits_and_retries() {
    let setup = Setup::new(sim_config(4)).await;
    let workspace = setup.workspace();
    // Someone else's resource export holds the workspace's single slot for a while.
    let twin = setup.sim.token("service-account").unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/exports/resource", setup.sim.base_url()))
        .bearer_auth(twin)
        .json(&json!({ "data": { "workspace": workspace, "export_request_parameters": [{ "resource_type": "team" }] } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    setup.job(
        "resources",
        "resource_export",
        &format!("workspace = \"{workspace}\"\nresource_types = [\"task\", \"team\"]"),
    );
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    let id = setup.enqueue("resources");
    let store = setup.store().await;
    let run = wait_for_run(&store, id, &[RunState::Completed], Duration::from_secs(60)).await;
    assert_eq!(run.attempt, 1, "waited within the attempt: {run:?}");
    let log = setup.log("daemon");
    assert!(
        log.contains("Another resource export is in progress"),
        "{log}"
    );
    assert_eq!(setup.sim_exports().await.len(), 2);
    let written = manifests(&setup.out());
    assert_eq!(written.len(), 1);
    assert!(written[0]["file"].as_str().unwrap().ends_with(".jsonl.gz"));
    terminate(&mut daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_job_cap_held_by_another_client_is_waited_for_without_pausing_the_token() {
    let setup = Setup::new(sim_config(3)).await;
    let projects = setup.projects();
    // Another tool of the same Asana user holds all five export slots for a few seconds.
    let token = setup.sim.token("service-account").unwrap();
    let client = reqwest::Client::new();
    for project in projects.iter().take(5) {
        let response = client
            .post(format!("{}/exports/graph", setup.sim.base_url()))
            .bearer_auth(&token)
            .json(&json!({ "data": { "parent": project } }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    setup.job(
        "graph",
        "graph_export",
        &format!("parent = \"{}\"", projects[5]),
    );
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    let id = setup.enqueue("graph");
    let store = setup.store().await;
    let run = wait_for_run(&store, id, &[RunState::Completed], Duration::from_secs(90)).await;
    assert_eq!(run.attempt, 1, "waited within the attempt: {run:?}");
    let stats = setup.token_stats().await;
    assert!(
        stats["rejected"]["jobs"].as_u64().unwrap_or(0) >= 1,
        "the cap refused the job at first: {stats}"
    );
    let metrics = daemon_metrics(setup.admin_port).await;
    assert!(
        metric_value(
            &metrics,
            "asana_worker_rate_limited_total",
            "cause=\"job_cap\""
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "asana_worker_rate_limited_total",
            "cause=\"quota\""
        ),
        Some(0.0),
        "not counted as a quota 429 (the series exists at zero from the start)"
    );
    assert_eq!(
        metric_value(&metrics, "asana_worker_budget_cooldowns_total", ""),
        None,
        "the token was never paused"
    );
    terminate(&mut daemon);
}

/// Records the offsets a download reports.
#[derive(Default)]
struct Offsets(std::sync::Mutex<Vec<u64>>);

#[async_trait::async_trait]
impl ProgressSink for Offsets {
    async fn synced(&self, offset: u64, _total: Option<u64>) -> Result<(), String> {
        self.0.lock().unwrap().push(offset);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_refuse_plain_http_elsewhere_and_recognise_an_expired_url() {
    let mut config = sim_config(1);
    config.timing.download_url_ttl_secs = 2;
    let sim = SimServer::start(config).await.unwrap();
    let budget = Budget::new(BudgetConfig::new("sa", Tier::Paid)).unwrap();
    let client = AsanaClient::new(
        ClientConfig::with_base_url(sim.base_url()),
        sim.token("service-account").unwrap().into(),
        budget,
    )
    .unwrap();
    let workspace = sim.state().world().workspace.gid.clone();
    let export = client.create_organization_export(&workspace).await.unwrap();
    let url = loop {
        let current = client.organization_export(&export.gid).await.unwrap();
        if let Some(url) = current.download_url {
            break url;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("x.part");
    let cancel = tokio_util::sync::CancellationToken::new();
    let offsets = Offsets::default();

    // A worker talking to the real Asana (https) refuses a plain-http URL.
    let strict = Downloader::new(DownloadPolicy::for_base_url(
        "https://app.asana.com/api/1.0",
    ))
    .unwrap();
    let refused = strict
        .fetch(&url, &partial, 0, &offsets, &cancel)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, DownloadError::UrlRefused { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("https"), "{refused}");
    assert!(!partial.exists(), "nothing was fetched");

    // Against the simulator the same URL works until it expires.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sim_policy = Downloader::new(DownloadPolicy::for_base_url(&sim.base_url())).unwrap();
    let expired = sim_policy
        .fetch(&url, &partial, 0, &offsets, &cancel)
        .await
        .unwrap_err();
    match &expired {
        DownloadError::UrlRejected { status, detail } => {
            assert_eq!(*status, 403);
            assert!(detail.contains("expired"), "{detail}");
        }
        other => panic!("an expired URL needs a fresh one, got {other}"),
    }
    let fresh = client
        .organization_export(&export.gid)
        .await
        .unwrap()
        .download_url
        .unwrap();
    assert_ne!(fresh, url);
    let fetched = sim_policy
        .fetch(&fresh, &partial, 0, &offsets, &cancel)
        .await
        .unwrap();
    let file = sim.state().extensions.exports.lock().unwrap().exports[&export.gid]
        .outcome
        .clone()
        .unwrap()
        .unwrap();
    assert_eq!(fetched.bytes, file.bytes);
    let checked = asana_worker::jobs::export::download::check(&partial)
        .await
        .unwrap();
    assert_eq!(checked.sha256, file.sha256);
    assert_eq!(checked.bytes, file.bytes);
    // Resuming from the middle with Range gives the same file.
    let half = fetched.bytes / 2;
    let resumed = sim_policy
        .fetch(&fresh, &partial, half, &offsets, &cancel)
        .await
        .unwrap();
    assert_eq!(resumed.resumed_from, half);
    assert_eq!(resumed.bytes, file.bytes);
    let checked = asana_worker::jobs::export::download::check(&partial)
        .await
        .unwrap();
    assert_eq!(checked.sha256, file.sha256);
    assert!(checked.uncompressed_bytes > checked.bytes);
    // A cut file fails the check.
    let cut = dir.path().join("cut.gz");
    std::fs::write(&cut, &std::fs::read(&partial).unwrap()[..(half as usize)]).unwrap();
    assert!(matches!(
        asana_worker::jobs::export::download::check(&cut).await,
        Err(DownloadError::Corrupt { .. })
    ));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloaded_export_is_delivered_to_the_s3_sink_with_its_manifest() {
    let Some(moto) = Moto::start("export delivery").await else {
        return;
    };
    moto.bucket("exports").await;
    let setup = Setup::new(sim_config(1)).await;
    let workspace = setup.workspace();
    setup.job(
        "org",
        "org_export",
        &format!(
            "organization = \"{workspace}\"\n[settings.deliver]\ntype = \"s3\"\nbucket = \"exports\"\nprefix = \"asana\"\nendpoint = \"{}\"\nallow_http = true\naccess_key_id_env = \"EXPORT_TEST_KEY\"\nsecret_access_key_env = \"EXPORT_TEST_SECRET\"",
            moto.endpoint
        ),
    );
    let mut daemon = setup.start_with_env(
        "daemon",
        &[
            ("EXPORT_TEST_KEY", "testing"),
            ("EXPORT_TEST_SECRET", "testing"),
        ],
    );
    setup.wait_ready(&mut daemon).await;
    let id = setup.enqueue("org");
    let store = setup.store().await;
    wait_for_run(&store, id, &[RunState::Completed], Duration::from_secs(60)).await;
    let manifest = manifests(&setup.out()).remove(0);
    let file = manifest["file"].as_str().unwrap();
    let object = reqwest::get(format!("{}/exports/asana/org/{file}", moto.endpoint))
        .await
        .unwrap();
    assert!(object.status().is_success(), "{}", object.status());
    let bytes = object.bytes().await.unwrap();
    assert_eq!(
        json!(hex::encode(Sha256::digest(&bytes))),
        manifest["sha256"]
    );
    let listing = reqwest::get(format!("{}/exports?list-type=2", moto.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The sink's sha256 sidecars sit beside the file and the manifest.
    for key in [
        format!("asana/org/{file}"),
        format!("asana/org/{file}.sha256"),
        format!("asana/org/{file}.manifest.json"),
        format!("asana/org/{file}.manifest.json.sha256"),
    ] {
        assert!(
            listing.contains(&format!("<Key>{key}</Key>")),
            "{key}: {listing}"
        );
    }
    let uploaded_manifest = moto
        .object("exports", &format!("asana/org/{file}.manifest.json"))
        .await
        .expect("the manifest is delivered beside the file");
    let uploaded_manifest: serde_json::Value = serde_json::from_slice(&uploaded_manifest).unwrap();
    assert_eq!(uploaded_manifest, manifest);
    let checkpoint = store
        .get_checkpoint("org", "export")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint["phase"], "done");
    assert!(setup.log("daemon").contains("Delivered the export file"));
    terminate(&mut daemon);
}

/// Reads the daemon's Prometheus text from its admin listener.
async fn daemon_metrics(admin_port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first sample of `name` whose labels contain `label`.
fn metric_value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(['{', ' ']).next() == Some(name) && (label.is_empty() || l.contains(label))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_expiring_mid_download_is_refreshed_and_the_download_resumes_with_range() {
    let setup = Setup::new(sim_config(1)).await;
    setup
        .padded_org_job("org", 12_000_000, "download_rate_limit_kib = 1536")
        .await;
    let store = setup.store().await;
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    let id = setup.enqueue("org");
    let downloading = wait_for_checkpoint(&store, "org", Duration::from_secs(60), |v| {
        v["phase"] == "downloading" && v["partial_offset"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let offset = downloading["partial_offset"].as_u64().unwrap();
    // The URL in use expires, the connection drops, and the next URL handed out is expired too
    // by the time it is used: the job must read the export again and resume with Range.
    let expired = setup
        .admin(
            reqwest::Method::POST,
            "/_sim/downloads/expire",
            Some(json!({ "abort_in_flight": true, "next": 1 })),
        )
        .await;
    assert_eq!(expired["url_generation"], json!(1), "{expired}");

    let done = wait_for_run(&store, id, &[RunState::Completed], Duration::from_secs(90)).await;
    assert_eq!(done.state, RunState::Completed);
    let list = setup
        .admin(reqwest::Method::GET, "/_sim/exports", None)
        .await;
    let exports = list["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 1, "no second export: {list}");
    let downloads = &list["downloads"];
    assert!(
        downloads["aborted"].as_u64().unwrap() >= 1,
        "the download was cut: {downloads}"
    );
    assert!(
        downloads["expired"].as_u64().unwrap() >= 1,
        "an expired URL was refused: {downloads}"
    );
    assert!(
        downloads["ranged"].as_u64().unwrap() >= 1,
        "the download resumed with Range: {downloads}"
    );
    let written = manifests(&setup.out());
    assert_eq!(written.len(), 1);
    assert_eq!(written[0]["sha256"], exports[0]["sha256"]);
    let file = setup.out().join(written[0]["file"].as_str().unwrap());
    assert_eq!(json!(sha256_file(&file)), exports[0]["sha256"]);

    let log = strip_ansi(&setup.log("daemon"));
    assert!(
        log.contains("The download URL was refused (expired?); fetching a fresh one"),
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("Downloaded the export"))
        .unwrap_or_default();
    let resumed_from: u64 = line
        .split("resumed_from=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        resumed_from >= offset && resumed_from > 0,
        "resumed from the synced offset {offset}, not from zero: {line}"
    );
    let metrics = daemon_metrics(setup.admin_port).await;
    assert!(
        metric_value(
            &metrics,
            "asana_worker_export_url_refreshes_total",
            "job=\"org\""
        )
        .is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
    terminate(&mut daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_and_too_slow_downloads_fail_the_run_with_a_clear_message_and_install_nothing() {
    let setup = Setup::new(sim_config(1)).await;
    setup
        .padded_org_job("big", 2_000_000, "max_size_mb = 1")
        .await;
    let project = setup.projects()[0].clone();
    setup.job(
        "slow",
        "graph_export",
        &format!(
            "parent = \"{project}\"\ndownload_timeout = \"1s\"\ndownload_rate_limit_kib = 256"
        ),
    );
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;

    let big = setup.cli(&["jobs", "run", "big", "--wait", "--timeout-secs", "60"]);
    let stdout = String::from_utf8_lossy(&big.stdout);
    assert_eq!(big.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("more than the limit of 1048576 bytes")
            && stdout.contains("raise max_size_mb"),
        "the size limit is named: {stdout}"
    );

    let slow = setup.cli(&["jobs", "run", "slow", "--wait", "--timeout-secs", "90"]);
    let stdout = String::from_utf8_lossy(&slow.stdout);
    assert_eq!(slow.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("the download took longer than 1s") && stdout.contains("download_timeout"),
        "the timeout is named: {stdout}"
    );

    // Neither an export file nor a manifest was installed.
    let installed: Vec<String> = std::fs::read_dir(setup.out())
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(installed.is_empty(), "nothing installed: {installed:?}");
    assert!(manifests(&setup.out()).is_empty());
    terminate(&mut daemon);
}

/// A small gzip file and a server on loopback that redirects `/r/{n}` to `/r/{n-1}` and serves
/// the file at `/r/0`: an external download host with redirects.
async fn redirecting_server(file: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Path as UrlPath;
    use axum::response::{IntoResponse, Redirect};
    let file = std::sync::Arc::new(file);
    let app = axum::Router::new().route(
        "/r/{n}",
        axum::routing::get(move |UrlPath(n): UrlPath<u32>| {
            let file = file.clone();
            async move {
                if n == 0 {
                    (*file).clone().into_response()
                } else {
                    Redirect::temporary(&format!("/r/{}", n - 1)).into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (origin, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_follow_redirects_up_to_the_limit_and_refuse_more() {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"{\"data\":[]}").unwrap();
    let file = encoder.finish().unwrap();
    let expected = hex::encode(Sha256::digest(&file));
    let file_len = file.len() as u64;
    let (origin, server) = redirecting_server(file).await;
    let mut policy = DownloadPolicy::for_base_url(&format!("{origin}/api/1.0"));
    policy.max_redirects = 2;
    let downloader = Downloader::new(policy).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let offsets = Offsets::default();

    let partial = dir.path().join("ok.part");
    let fetched = downloader
        .fetch(&format!("{origin}/r/2"), &partial, 0, &offsets, &cancel)
        .await
        .unwrap();
    assert_eq!(fetched.bytes, file_len, "two redirects are followed");
    let checked = asana_worker::jobs::export::download::check(&partial)
        .await
        .unwrap();
    assert_eq!(checked.sha256, expected);

    let refused = downloader
        .fetch(
            &format!("{origin}/r/3?X-Amz-Signature=secret"),
            &dir.path().join("no.part"),
            0,
            &offsets,
            &cancel,
        )
        .await
        .unwrap_err();
    match &refused {
        DownloadError::TooManyRedirects { max, .. } => assert_eq!(*max, 2),
        other => panic!("expected the redirect limit, got {other}"),
    }
    let message = refused.to_string();
    assert!(
        message.contains("more than 2 times") && message.contains("max_redirects"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    assert!(!dir.path().join("no.part").exists(), "nothing was written");
    server.abort();
}
