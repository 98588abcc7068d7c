//! The `audit_log` job through the real binary into the `s3` sink (moto's S3 server) and the
//! `http` sink (a collector played by this test, failing now and then): every simulator event
//! arrives — in the bucket exactly once, at the collector once per idempotency key — a second
//! run adds nothing, and `verify --job` finds the chain intact. And on the file, s3 and http
//! sinks alike: events that appear late, timestamped before the tail's start, while the
//! backfill runs and just after it, are delivered once.

mod support;
use support::audit as audit_support;
use support::moto;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use asana_worker::sinks::s3::{S3Credentials, S3Location, S3Sink, S3SinkSettings};
use audit_support::{
    AuditSetup, BIN, Collector, completed_runs, kill, quiet_sim, stored_cursor, terminate,
};
use futures::StreamExt;
use moto::Moto;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use rand::{RngExt, SeedableRng};
use secrecy::SecretString;
use serde_json::Value;

/// Replaces the setup's job file with one writing to `sink` (a `[settings.sink]` body).
fn write_job(setup: &AuditSetup, sink: &str) {
    write_job_with(
        setup,
        "every = \"1h\"",
        "start = \"2d\"\nbackfill_slices = 3",
        sink,
    );
}

/// Replaces the setup's job file with one on `schedule`, with the `[settings]` lines `settings`,
/// writing to `sink`.
fn write_job_with(setup: &AuditSetup, schedule: &str, settings: &str, sink: &str) {
    let workspace = setup.sim.state().world().workspace.gid.clone();
    let job = format!(
        "name = \"audit\"\nkind = \"audit_log\"\n{schedule}\ncredential = \"sa\"\n\
         max_attempts = 1000\nretry_initial = \"1s\"\nretry_max = \"2s\"\ntimeout = \"10m\"\n\n\
         [settings]\nworkspace = \"{workspace}\"\n{settings}\n\n\
         [settings.sink]\n{sink}\n"
    );
    std::fs::write(setup.dir.path().join("jobs/audit.toml"), job).unwrap();
}

/// `asana-worker run` with the S3 test credentials in its environment.
/// The S3 sink's access key, from the environment as the job file names it.
const S3_ENV: [(&str, &str); 2] = [
    ("TEST_S3_KEY_ID", "testing"),
    ("TEST_S3_SECRET", "testing-secret"),
];

fn daemon(setup: &AuditSetup) -> Child {
    setup.daemon.start_with_env("daemon", &S3_ENV)
}

fn daemon_log(setup: &AuditSetup) -> String {
    setup.daemon.log("daemon")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_pull_lands_in_the_bucket_exactly_once_and_verifies() {
    let Some(moto) = Moto::start("audit_log_to_s3").await else {
        return;
    };
    moto.bucket("audit-archive").await;
    let setup = AuditSetup::new(quiet_sim(300, 600.0), "every = \"1h\"", "").await;
    write_job(
        &setup,
        &format!(
            "type = \"s3\"\nbucket = \"audit-archive\"\nprefix = \"asana\"\nendpoint = \"{}\"\n\
             allow_http = true\ngzip = true\naccess_key_id_env = \"TEST_S3_KEY_ID\"\n\
             secret_access_key_env = \"TEST_S3_SECRET\"",
            moto.endpoint
        ),
    );
    let mut child = daemon(&setup);
    setup.wait_ready(&mut child).await;
    setup.run_job();
    setup.run_job();
    terminate(&mut child);

    let sink = s3_sink(&moto, "audit-archive", true);
    let report = sink
        .verify("audit")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon_log(&setup)));
    // Every object named by an entry, decompressed: each simulator event exactly once.
    let store = sink.store();
    let entries: Vec<_> = store
        .list(Some(&ObjectPath::from("asana/audit/manifest")))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|m| m.unwrap().location)
        .filter(|p| p.as_ref().ends_with(".json"))
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for key in entries {
        let entry: Value =
            serde_json::from_slice(&store.get(&key).await.unwrap().bytes().await.unwrap()).unwrap();
        let object = ObjectPath::from(format!("asana/audit/{}", entry["file"].as_str().unwrap()));
        let bytes = store.get(&object).await.unwrap().bytes().await.unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
            .unwrap();
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            *counts
                .entry(event["gid"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let expected: BTreeSet<String> = setup.sim_events().into_keys().collect();
    let held: BTreeSet<String> = counts.into_keys().collect();
    assert_eq!(held, expected);
    assert_eq!(report.records, 300);

    let out = Command::new(BIN)
        .args(["verify", "--job", "audit", "--config"])
        .arg(setup.config())
        .env("TEST_S3_KEY_ID", "testing")
        .env("TEST_S3_SECRET", "testing-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("300 record(s), chain intact"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_pull_reaches_a_flaky_collector_once_per_idempotency_key() {
    let (collector, addr) = Collector::start(3).await;
    let setup = AuditSetup::new(quiet_sim(300, 600.0), "every = \"1h\"", "").await;
    write_job(
        &setup,
        &format!(
            "type = \"http\"\nurl = \"http://{addr}/ingest\"\nbatch_events = 40\n\
             min_backoff = \"1s\"\nmax_backoff = \"1s\""
        ),
    );
    let validate = setup.cli(&["validate"]);
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    let mut child = daemon(&setup);
    setup.wait_ready(&mut child).await;
    setup.run_job();
    setup.run_job();
    terminate(&mut child);

    let accepted = collector.by_key.lock().unwrap().clone();
    let conflicts = collector.conflicts.lock().unwrap().clone();
    assert!(
        conflicts.is_empty(),
        "keys posted again with another body: {conflicts:?}"
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for body in accepted.values() {
        let events: Vec<&str> = body.lines().collect();
        assert!(events.len() <= 40, "batch_events bounds a POST");
        for line in events {
            let event: Value = serde_json::from_str(line).unwrap();
            *counts
                .entry(event["gid"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered under two keys: {twice:?}");
    let expected: BTreeSet<String> = setup.sim_events().into_keys().collect();
    let held: BTreeSet<String> = counts.into_keys().collect();
    assert_eq!(held, expected, "{}", daemon_log(&setup));
    assert!(*collector.posts.lock().unwrap() > accepted.len() as u64);

    let out = setup.cli(&["verify", "--job", "audit"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("300 record(s), chain intact"), "{stdout}");
}

/// Where the late-event scenario's job writes, and how the test reads it back.
enum LateSink {
    File,
    S3(Moto),
    Http(Collector, std::net::SocketAddr),
}

impl LateSink {
    /// The job's `[settings.sink]` body.
    fn table(&self, setup: &AuditSetup) -> String {
        match self {
            LateSink::File => format!("type = \"file\"\ndir = \"{}\"", setup.path("out").display()),
            LateSink::S3(moto) => format!(
                "type = \"s3\"\nbucket = \"late\"\nprefix = \"asana\"\nendpoint = \"{}\"\n\
                 allow_http = true\naccess_key_id_env = \"TEST_S3_KEY_ID\"\n\
                 secret_access_key_env = \"TEST_S3_SECRET\"",
                moto.endpoint
            ),
            LateSink::Http(_, addr) => {
                format!("type = \"http\"\nurl = \"http://{addr}/ingest\"\nbatch_events = 100")
            }
        }
    }

    /// The gid of every event the sink holds (at the collector: once per key), with repeats.
    async fn gids(&self, setup: &AuditSetup) -> Vec<String> {
        match self {
            LateSink::File => setup
                .records()
                .iter()
                .map(|r| r["gid"].as_str().unwrap().to_string())
                .collect(),
            LateSink::S3(moto) => {
                let sink = s3_sink(moto, "late", false);
                let store = sink.store();
                let mut gids = Vec::new();
                let keys: Vec<ObjectPath> = store
                    .list(Some(&ObjectPath::from("asana/audit/manifest")))
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .map(|m| m.unwrap().location)
                    .filter(|p| p.as_ref().ends_with(".json"))
                    .collect();
                for key in keys {
                    let entry: Value = serde_json::from_slice(
                        &store.get(&key).await.unwrap().bytes().await.unwrap(),
                    )
                    .unwrap();
                    let object = ObjectPath::from(format!(
                        "asana/audit/{}",
                        entry["file"].as_str().unwrap()
                    ));
                    let bytes = store.get(&object).await.unwrap().bytes().await.unwrap();
                    for line in String::from_utf8(bytes.to_vec()).unwrap().lines() {
                        let event: Value = serde_json::from_str(line).unwrap();
                        gids.push(event["gid"].as_str().unwrap().to_string());
                    }
                }
                gids
            }
            LateSink::Http(collector, _) => collector.events(),
        }
    }
}

/// The bucket's sink as this test reads it (moto's fixed test credentials).
fn s3_sink(moto: &Moto, bucket: &str, gzip: bool) -> S3Sink {
    S3Sink::with_credentials(
        &S3SinkSettings {
            location: S3Location {
                bucket: bucket.into(),
                prefix: "asana".into(),
                region: "us-east-1".into(),
                endpoint: Some(moto.endpoint.clone()),
                allow_http: true,
                access_key_id_env: String::new(),
                secret_access_key_env: String::new(),
            },
            gzip,
            conditional_put: true,
        },
        S3Credentials {
            access_key_id: SecretString::from("testing".to_string()),
            secret_access_key: SecretString::from("testing-secret".to_string()),
        },
    )
    .unwrap()
}

/// Events of the backfill; its requests are slowed down so it lasts seconds.
const LATE_BACKFILL: usize = 2_000;

/// A job every 2 s with a 7-day start, a 10-minute overlap and 8 slices, as in the report of
/// the bug: events timestamped two minutes back (before the tail's start) appear four times,
/// twice while the backfill runs and twice after it, each time with one current event that
/// moves the tail on. The re-read of the overlap window reaches behind the tail's start and
/// knows every gid the slices delivered there: each event arrives once. With `kills`, the
/// daemon is SIGKILLed and restarted a moment after each group appears: the gids delivered in
/// the window are known from the cursor the sink or the checkpoint holds.
async fn late_events_behind_the_backfill_boundary_arrive_once(sink: LateSink, kills: bool) {
    let mut config = quiet_sim(LATE_BACKFILL, 1.0);
    config.world.audit_backfill_days = 6;
    config.faults.latency_ms = 300;
    let setup = AuditSetup::new(config, "every = \"2s\"", "").await;
    write_job_with(&setup, "every = \"2s\"", LATE_SETTINGS, &sink.table(&setup));
    // Daemon N logs to daemon-N.log.
    let started = std::cell::Cell::new(0);
    let log = || setup.daemon.log(&format!("daemon-{}", started.get()));
    let mut child = setup.daemon.start_with_env("daemon-0", &S3_ENV);
    setup.wait_ready(&mut child).await;
    let store = setup.store().await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x1a7e);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut late: Vec<String> = Vec::new();
    let mut appended_during_backfill = 0;
    // Waits until the checkpoint's cursor says `ready`.
    let until = async |ready: &dyn Fn(&asana_worker::jobs::audit_log::Cursor) -> bool| loop {
        if let Some(cursor) = stored_cursor(store.as_ref()).await
            && ready(&cursor)
        {
            return cursor;
        }
        assert!(Instant::now() < deadline, "{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for group in 0..4 {
        let cursor = match group {
            0 => until(&|c| c.sequence >= 1).await,
            1 => until(&|c| c.sequence >= 20).await,
            2 => until(&|c| c.backfill.is_empty()).await,
            _ => {
                let runs = completed_runs(store.as_ref()).await;
                while completed_runs(store.as_ref()).await < runs + 2 {
                    assert!(Instant::now() < deadline, "{}", log());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                until(&|_| true).await
            }
        };
        let at = setup.sim_now().await - chrono::Duration::minutes(2);
        assert!(
            at < cursor.tail.start,
            "late events are timestamped before the tail's start"
        );
        late.extend(
            setup
                .append(serde_json::json!({ "count": 5, "created_at": at.to_rfc3339() }))
                .await,
        );
        setup.append(serde_json::json!({ "count": 1 })).await;
        if !cursor.backfill.is_empty() {
            appended_during_backfill += 1;
        }
        if kills {
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
            kill(&mut child);
            started.set(started.get() + 1);
            child = setup
                .daemon
                .start_with_env(&format!("daemon-{}", started.get()), &S3_ENV);
            setup.wait_ready(&mut child).await;
        }
    }
    assert_eq!(
        appended_during_backfill, 2,
        "two groups came while the backfill ran"
    );
    let expected: BTreeSet<String> = setup.sim_events().into_keys().collect();
    assert_eq!(expected.len(), LATE_BACKFILL + 4 * 6);
    loop {
        let held: BTreeSet<String> = sink.gids(&setup).await.into_iter().collect();
        if held.is_superset(&expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "late events never delivered: {:?}\n{}",
            late.iter()
                .filter(|g| !held.contains(*g))
                .collect::<Vec<_>>(),
            log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Two more runs, so a repeat would show.
    let runs = completed_runs(store.as_ref()).await;
    while completed_runs(store.as_ref()).await < runs + 2 {
        assert!(Instant::now() < deadline, "{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(&mut child);
    let counts = by_gid_list(&sink.gids(&setup).await);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let held: BTreeSet<String> = counts.into_keys().collect();
    assert_eq!(held, expected);
    if let LateSink::Http(collector, _) = &sink {
        let conflicts = collector.conflicts.lock().unwrap().clone();
        assert!(
            conflicts.is_empty(),
            "keys posted with two bodies: {conflicts:?}"
        );
    }
}

const LATE_SETTINGS: &str =
    "start = \"7d\"\noverlap = \"10m\"\nbackfill_slices = 8\npage_size = 25";

fn by_gid_list(gids: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for gid in gids {
        *counts.entry(gid.clone()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_behind_the_backfill_boundary_reach_the_file_sink_once() {
    late_events_behind_the_backfill_boundary_arrive_once(LateSink::File, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_behind_the_backfill_boundary_survive_sigkills_once() {
    late_events_behind_the_backfill_boundary_arrive_once(LateSink::File, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_behind_the_backfill_boundary_reach_the_bucket_once() {
    let Some(moto) = Moto::start("late_events_s3").await else {
        return;
    };
    moto.bucket("late").await;
    late_events_behind_the_backfill_boundary_arrive_once(LateSink::S3(moto), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_behind_the_backfill_boundary_reach_the_collector_once() {
    let (collector, addr) = Collector::start(u64::MAX).await;
    late_events_behind_the_backfill_boundary_arrive_once(LateSink::Http(collector, addr), false)
        .await;
}
