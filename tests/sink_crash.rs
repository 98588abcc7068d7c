//! The `s3` and `http` sinks across crashes: the daemon process is SIGKILLed at random instants
//! while the `audit_log` job pulls from a simulator injecting 5xx, 429s and resets. Afterwards
//! the bucket holds every simulator event exactly once (and `verify --job` passes), and the
//! collector has every event, each under one idempotency key only: what a collector that
//! honours the key stores is exactly once. A key posted again after a crash must carry the same
//! body, or deduplicating by it would drop events. The http sink's one dangerous instant is
//! also hit on purpose: the collector kills the daemon right after storing a POST, and the next
//! daemon runs with another page split, new events and a later clock.

mod support;
use support::audit as audit_support;
use support::moto;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};

use asana_worker::sinks::s3::{S3Credentials, S3Location, S3Sink, S3SinkSettings};
use audit_support::{AuditSetup, Collector, faulty_sim, kill, quiet_sim, terminate};
use futures::StreamExt;
use moto::Moto;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use rand::{RngExt, SeedableRng};
use secrecy::SecretString;
use serde_json::Value;

const EVENTS: usize = 4_000;
const KILLS: usize = 10;

fn write_job(setup: &AuditSetup, sink: &str) {
    write_job_with_pages(setup, sink, 5);
}

fn write_job_with_pages(setup: &AuditSetup, sink: &str, page_size: u32) {
    let workspace = setup.sim.state().world().workspace.gid.clone();
    let job = format!(
        "name = \"audit\"\nkind = \"audit_log\"\nevery = \"1s\"\ncredential = \"sa\"\n\
         max_attempts = 1000\nretry_initial = \"1s\"\nretry_max = \"2s\"\ntimeout = \"10m\"\n\n\
         [settings]\nworkspace = \"{workspace}\"\nstart = \"8d\"\nbackfill_slices = 4\n\
         page_size = {page_size}\noverlap = \"1m\"\n\n[settings.sink]\n{sink}\n"
    );
    std::fs::write(setup.dir.path().join("jobs/audit.toml"), job).unwrap();
}

fn daemon(setup: &AuditSetup, n: usize) -> Child {
    setup.daemon.start_with_env(
        &format!("daemon-{n}"),
        &[
            ("TEST_S3_KEY_ID", "testing"),
            ("TEST_S3_SECRET", "testing-secret"),
        ],
    )
}

/// Runs the daemon `KILLS` times, then once to the end of the pull, and stops it. `delivered`
/// counts the events the sink holds. Kill `n` comes at a random instant, but at the latest once
/// `n + 1` elevenths of the events are delivered: the kills spread over the pull however fast
/// the machine runs it, instead of landing after it on a fast one. Returns, for each kill,
/// whether the pull had already finished.
async fn crash_loop(setup: &AuditSetup, mut delivered: impl AsyncFnMut() -> usize) -> Vec<bool> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_5155);
    let mut finished_before = Vec::new();
    for n in 0..KILLS {
        let mut child = daemon(setup, n);
        setup.wait_ready(&mut child).await;
        let latest = Instant::now() + Duration::from_millis(rng.random_range(200..1500));
        let enough = EVENTS * (n + 1) / (KILLS + 1);
        while Instant::now() < latest && delivered().await < enough {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kill(&mut child);
        finished_before.push(delivered().await >= EVENTS);
    }
    let mut child = daemon(setup, KILLS);
    setup.wait_ready(&mut child).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered().await < EVENTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // One more scheduled run after the pull, so an extra delivery would show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    terminate(&mut child);
    finished_before
}

/// The bucket's manifest entries, in key order.
async fn manifest_entries(sink: &S3Sink) -> Vec<Value> {
    let store = sink.store();
    let mut keys: Vec<ObjectPath> = store
        .list(Some(&ObjectPath::from("asana/audit/manifest")))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|m| m.unwrap().location)
        .filter(|p| p.as_ref().ends_with(".json"))
        .collect();
    keys.sort();
    let mut entries = Vec::new();
    for key in keys {
        let bytes = store.get(&key).await.unwrap().bytes().await.unwrap();
        entries.push(serde_json::from_slice(&bytes).unwrap());
    }
    entries
}

/// Records the bucket's manifest entries count.
async fn bucket_count(sink: &S3Sink) -> usize {
    manifest_entries(sink)
        .await
        .iter()
        .map(|entry| entry["count"].as_u64().unwrap_or(0) as usize)
        .sum()
}

/// Every event the bucket's manifest entries name, with repeats.
async fn bucket_events(sink: &S3Sink) -> Vec<String> {
    let store = sink.store();
    let mut gids = Vec::new();
    for entry in manifest_entries(sink).await {
        let object = ObjectPath::from(format!("asana/audit/{}", entry["file"].as_str().unwrap()));
        let bytes = store.get(&object).await.unwrap().bytes().await.unwrap();
        for line in String::from_utf8(bytes.to_vec()).unwrap().lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            gids.push(event["gid"].as_str().unwrap().to_string());
        }
    }
    gids
}

fn assert_once(gids: &[String], expected: &BTreeSet<String>, what: &str) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for gid in gids {
        *counts.entry(gid).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    let held: BTreeSet<String> = counts.keys().map(|g| g.to_string()).collect();
    let missing = expected.difference(&held).count();
    let unknown = held.difference(expected).count();
    assert!(
        twice.is_empty() && missing == 0 && unknown == 0,
        "{what}: {} twice (e.g. {twice:?}), {missing} missing, {unknown} unknown",
        counts.values().filter(|n| **n > 1).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_leave_the_bucket_with_every_event_exactly_once() {
    let Some(moto) = Moto::start("sigkills_s3").await else {
        return;
    };
    moto.bucket("crash-archive").await;
    let setup = AuditSetup::new(faulty_sim(EVENTS), "every = \"1s\"", "").await;
    write_job(
        &setup,
        &format!(
            "type = \"s3\"\nbucket = \"crash-archive\"\nprefix = \"asana\"\nendpoint = \"{}\"\n\
             allow_http = true\naccess_key_id_env = \"TEST_S3_KEY_ID\"\n\
             secret_access_key_env = \"TEST_S3_SECRET\"",
            moto.endpoint
        ),
    );
    let expected: BTreeSet<String> = setup.sim_events().into_keys().collect();
    let sink = S3Sink::with_credentials(
        &S3SinkSettings {
            location: S3Location {
                bucket: "crash-archive".into(),
                prefix: "asana".into(),
                region: "us-east-1".into(),
                endpoint: Some(moto.endpoint.clone()),
                allow_http: true,
                access_key_id_env: String::new(),
                secret_access_key_env: String::new(),
            },
            gzip: false,
            conditional_put: true,
        },
        S3Credentials {
            access_key_id: SecretString::from("testing".to_string()),
            secret_access_key: SecretString::from("testing-secret".to_string()),
        },
    )
    .unwrap();
    // Progress from the manifest entries' counts (cheap to poll); a repeat stored mid-pull
    // stays in the bucket and fails the final check.
    let finished = crash_loop(&setup, async || bucket_count(&sink).await).await;
    eprintln!("pull finished before each kill: {finished:?}");
    assert!(
        finished.iter().filter(|f| !**f).count() >= KILLS / 2,
        "most kills fell during the pull: {finished:?}"
    );
    assert_once(&bucket_events(&sink).await, &expected, "bucket");
    let report = sink.verify("audit").await.unwrap();
    assert_eq!(report.records, EVENTS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_leave_the_collector_with_every_event_under_one_key() {
    let (collector, addr) = Collector::start(7).await;
    let setup = AuditSetup::new(faulty_sim(EVENTS), "every = \"1s\"", "").await;
    write_job(
        &setup,
        &format!(
            "type = \"http\"\nurl = \"http://{addr}/ingest\"\nbatch_events = 50\nmin_backoff = \"1s\"\nmax_backoff = \"1s\""
        ),
    );
    let expected: BTreeSet<String> = setup.sim_events().into_keys().collect();
    let finished = crash_loop(&setup, async || collector.events().len()).await;
    eprintln!("pull finished before each kill: {finished:?}");
    assert!(
        finished.iter().filter(|f| !**f).count() >= KILLS / 2,
        "most kills fell during the pull: {finished:?}"
    );
    let conflicts = collector.conflicts.lock().unwrap().clone();
    assert!(
        conflicts.is_empty(),
        "keys posted again with another body: {conflicts:?}"
    );
    assert_once(&collector.events(), &expected, "collector, by key");
    let out = setup.cli(&["verify", "--job", "audit"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The http sink's window, without luck: the collector stores the body of the fourth POST and
/// SIGKILLs the daemon before answering, so the POST is acknowledged as far as the collector
/// is concerned and not in the daemon's delivery manifest. The next daemon pulls with another
/// page size (its batch of the same sequence would hold other events), after new events and
/// a jump of the simulator's clock that expires the stored offsets. It resends the stored
/// bodies under their keys before anything else: every key carries one body, and every event
/// reaches the collector once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_an_acknowledged_post_resends_the_same_body_under_its_key() {
    const KILLED_POST: u64 = 4;
    let (collector, addr) = Collector::start(u64::MAX).await;
    let setup = AuditSetup::new(quiet_sim(300, 1.0), "every = \"1s\"", "").await;
    let sink = format!("type = \"http\"\nurl = \"http://{addr}/ingest\"\nbatch_events = 50");
    write_job_with_pages(&setup, &sink, 5);
    let mut child = daemon(&setup, 0);
    collector.kill_after_storing(KILLED_POST, child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the collector never killed the daemon"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_key = collector.stored.lock().unwrap()[KILLED_POST as usize - 1].clone();
    let killed_body = collector.by_key.lock().unwrap()[&killed_key].clone();
    assert!(
        !std::fs::read_to_string(setup.path("sinks/http/audit/manifest.jsonl"))
            .unwrap_or_default()
            .contains(&format!(
                "\"file\":\"{}\"",
                killed_key.rsplitn(3, '-').last().unwrap()
            )),
        "the killed POST's batch is not in the manifest"
    );

    // Another split, new events, a later clock.
    write_job_with_pages(&setup, &sink, 7);
    setup.append(serde_json::json!({ "count": 3 })).await;
    setup.advance_sim_clock(20 * 60).await;
    let expected: BTreeSet<String> = setup.sim_events().into_keys().collect();
    let mut child = daemon(&setup, 1);
    setup.wait_ready(&mut child).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while collector.events().len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two more runs, so a late repeat would show. Manual ones: the killed daemon still holds
    // the scheduler's leader lease for a while.
    setup.run_job();
    setup.run_job();
    terminate(&mut child);

    let conflicts = collector.conflicts.lock().unwrap().clone();
    assert!(
        conflicts.is_empty(),
        "keys posted again with another body: {conflicts:?}"
    );
    let stored = collector.stored.lock().unwrap().clone();
    assert_eq!(
        stored[KILLED_POST as usize], killed_key,
        "the restarted daemon first resends the killed POST: {stored:?}"
    );
    assert_eq!(collector.by_key.lock().unwrap()[&killed_key], killed_body);
    assert_once(&collector.events(), &expected, "collector, by key");
    let out = setup.cli(&["verify", "--job", "audit"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
