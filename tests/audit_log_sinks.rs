//! The `audit_log` job through the real binary into the `s3` sink (moto's S3 server) and the
//! `http` sink (a collector played by this test, failing now and then): every simulator event
//! arrives — in the bucket exactly once, at the collector once per idempotency key — a second
//! run adds nothing, and `verify --job` finds the chain intact.

#[path = "support/audit.rs"]
mod audit_support;
#[path = "support/moto.rs"]
mod moto;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};

use asana_worker::sinks::s3::{S3Credentials, S3Sink, S3SinkSettings};
use audit_support::{AuditSetup, BIN, Collector, quiet_sim, terminate};
use futures::StreamExt;
use moto::Moto;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use secrecy::SecretString;
use serde_json::Value;

/// Replaces the setup's job file with one writing to `sink` (a `[settings.sink]` body).
fn write_job(setup: &AuditSetup, sink: &str) {
    let workspace = setup.sim.state().world().workspace.gid.clone();
    let job = format!(
        "name = \"audit\"\nkind = \"audit_log\"\nevery = \"1h\"\ncredential = \"sa\"\n\
         max_attempts = 1000\nretry_initial = \"1s\"\nretry_max = \"2s\"\ntimeout = \"10m\"\n\n\
         [settings]\nworkspace = \"{workspace}\"\nstart = \"2d\"\nbackfill_slices = 3\n\n\
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

    let sink = S3Sink::with_credentials(
        &S3SinkSettings {
            bucket: "audit-archive".into(),
            prefix: "asana".into(),
            region: "us-east-1".into(),
            endpoint: Some(moto.endpoint.clone()),
            allow_http: true,
            access_key_id_env: String::new(),
            secret_access_key_env: String::new(),
            gzip: true,
            conditional_put: true,
        },
        S3Credentials {
            access_key_id: SecretString::from("testing".to_string()),
            secret_access_key: SecretString::from("testing-secret".to_string()),
        },
    )
    .unwrap();
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
