//! The `s3` sink against a real S3-compatible server: moto's (`moto[server]`, pinned in
//! `scripts/python-venv`), started here on a free loopback port with the project venv's Python.
//! Commits, recovery from a reopened sink, idempotent recommits, gzip, the manifest chain and its
//! verification (a tampered object is caught), and `upload_file` of a multi-megabyte file.
//!
//! Without a Python that has moto (see `tests/support/moto.rs`), the tests print SKIPPED with
//! the command that creates it, and return.

mod support;
use support::moto;

use std::io::Read;
use std::process::Command;

use asana_worker::sinks::s3::{S3Credentials, S3Location, S3Sink, S3SinkSettings};
use asana_worker::sinks::{Batch, RecordMark, RecordSink, Recovered, SinkError};
use chrono::{TimeZone, Utc};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use secrecy::SecretString;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use moto::Moto;

/// The sink of a bucket on the test server.
trait MotoSink {
    fn settings(&self, bucket: &str, gzip: bool) -> S3SinkSettings;
    fn sink(&self, settings: &S3SinkSettings) -> S3Sink;
}

impl MotoSink for Moto {
    fn settings(&self, bucket: &str, gzip: bool) -> S3SinkSettings {
        S3SinkSettings {
            location: S3Location {
                bucket: bucket.to_string(),
                prefix: "/audit-logs/".into(),
                region: "us-east-1".into(),
                endpoint: Some(self.endpoint.clone()),
                allow_http: true,
                access_key_id_env: "UNUSED".into(),
                secret_access_key_env: "UNUSED".into(),
            },
            gzip,
            conditional_put: true,
        }
    }

    fn sink(&self, settings: &S3SinkSettings) -> S3Sink {
        S3Sink::with_credentials(
            settings,
            S3Credentials {
                access_key_id: SecretString::from("testing".to_string()),
                secret_access_key: SecretString::from("testing-secret".to_string()),
            },
        )
        .unwrap()
    }
}

fn event(gid: u64) -> Value {
    json!({
        "gid": gid.to_string(),
        "created_at": format!("2026-03-01T10:{:02}:00.000Z", gid % 60),
        "event_type": "task_deleted",
    })
}

fn batch(stream: &str, sequence: u64, gids: std::ops::RangeInclusive<u64>) -> Batch {
    let events: Vec<Value> = gids.clone().map(event).collect();
    let mark = |v: &Value| RecordMark {
        gid: v["gid"].as_str().unwrap().to_string(),
        created_at: v["created_at"].as_str().unwrap().to_string(),
    };
    Batch {
        stream: stream.to_string(),
        sequence,
        records: events
            .iter()
            .map(|v| RawValue::from_string(v.to_string()).unwrap())
            .collect(),
        first: mark(events.first().unwrap()),
        last: mark(events.last().unwrap()),
        cursor: json!({"offset": format!("after-{}", gids.end())}),
        now: Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap(),
    }
}

async fn object(sink: &S3Sink, key: &ObjectPath) -> Vec<u8> {
    sink.store()
        .get(key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn commits_recover_after_reopening_and_recommits_are_idempotent() {
    let Some(moto) = Moto::start("commits_recover_after_reopening").await else {
        return;
    };
    moto.bucket("logs").await;
    let settings = moto.settings("logs", false);
    let sink = moto.sink(&settings);
    assert_eq!(sink.recover("audit").await.unwrap(), None);

    sink.commit(batch("audit", 1, 1..=3)).await.unwrap();
    sink.commit(batch("audit", 2, 4..=5)).await.unwrap();
    let key = sink.data_key("audit", 1).await.unwrap().unwrap();
    assert!(
        key.as_ref()
            .starts_with("audit-logs/audit/data/00000000000000000001-")
            && key.as_ref().ends_with(".jsonl"),
        "{key}"
    );
    assert_eq!(sink.data_key("audit", 3).await.unwrap(), None);
    assert_eq!(
        lines(&object(&sink, &key).await),
        (1..=3).map(event).collect::<Vec<_>>()
    );
    let entry: Value =
        serde_json::from_slice(&object(&sink, &sink.manifest_key("audit", 2)).await).unwrap();
    assert_eq!(entry["count"], 2);
    assert_eq!(entry["cursor"], json!({"offset": "after-5"}));
    assert_eq!(entry["first"]["gid"], "4");
    drop(sink);

    // A new process reads the newest manifest entry.
    let reopened = moto.sink(&settings);
    assert_eq!(
        reopened.recover("audit").await.unwrap(),
        Some(Recovered {
            sequence: 2,
            cursor: json!({"offset": "after-5"})
        })
    );
    // Committing batch 2 again (a job retrying after a crash) changes nothing.
    let before = object(&reopened, &reopened.manifest_key("audit", 2)).await;
    reopened.commit(batch("audit", 2, 4..=5)).await.unwrap();
    assert_eq!(
        object(&reopened, &reopened.manifest_key("audit", 2)).await,
        before
    );
    let listed = reopened
        .store()
        .list(Some(&ObjectPath::from("audit-logs/audit")))
        .collect::<Vec<_>>()
        .await;
    assert_eq!(
        listed.len(),
        5,
        "2 objects + 2 manifest entries + the latest-entry hint"
    );
    // The hint only saves listing: stale or gone, recovery still finds the newest entry.
    let hint = ObjectPath::from("audit-logs/audit/manifest/latest");
    reopened.store().put(&hint, "1".into()).await.unwrap();
    assert_eq!(
        reopened.recover("audit").await.unwrap().unwrap().sequence,
        2
    );
    reopened.store().delete(&hint).await.unwrap();
    assert_eq!(
        reopened.recover("audit").await.unwrap().unwrap().sequence,
        2
    );
    reopened.commit(batch("audit", 3, 6..=6)).await.unwrap();
    // A crash after an object was written but before its entry: the object is there (here
    // with partial content), recovery ignores it, and the recommit replaces it.
    let orphan =
        ObjectPath::from("audit-logs/audit/data/00000000000000000004-0123456789abcdef.jsonl");
    reopened
        .store()
        .put(&orphan, "{\"gid\":\"7\"}\n".into())
        .await
        .unwrap();
    assert_eq!(
        reopened.recover("audit").await.unwrap().unwrap().sequence,
        3
    );
    reopened.commit(batch("audit", 4, 7..=8)).await.unwrap();
    assert_eq!(
        lines(
            &object(
                &reopened,
                &reopened.data_key("audit", 4).await.unwrap().unwrap()
            )
            .await
        ),
        vec![event(7), event(8)]
    );
    let report = reopened.verify("audit").await.unwrap();
    assert_eq!((report.entries, report.records), (4, 8));
    // Streams are independent.
    assert_eq!(reopened.recover("other").await.unwrap(), None);
}

#[tokio::test]
async fn gzip_objects_and_a_tampered_object_is_caught_by_verification() {
    let Some(moto) = Moto::start("gzip_objects_and_tampering").await else {
        return;
    };
    moto.bucket("gzipped").await;
    let settings = moto.settings("gzipped", true);
    let sink = moto.sink(&settings);
    sink.commit(batch("audit", 1, 1..=4)).await.unwrap();
    sink.commit(batch("audit", 2, 5..=9)).await.unwrap();
    let key = sink.data_key("audit", 1).await.unwrap().unwrap();
    assert!(key.as_ref().ends_with(".jsonl.gz"));
    let stored = object(&sink, &key).await;
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&stored[..])
        .read_to_end(&mut text)
        .unwrap();
    assert_eq!(lines(&text), (1..=4).map(event).collect::<Vec<_>>());
    let report = sink.verify("audit").await.unwrap();
    assert_eq!((report.entries, report.records), (2, 9));

    // Someone rewrites an object: the manifest's sha256 no longer matches.
    let mut edited = Vec::new();
    {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(&mut edited, flate2::Compression::fast());
        encoder.write_all(b"{\"gid\":\"1\"}\n").unwrap();
        encoder.finish().unwrap();
    }
    sink.store().put(&key, edited.into()).await.unwrap();
    let err = sink.verify("audit").await.unwrap_err();
    assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("the file was edited"), "{err}");

    // Someone deletes an entry: the chain shows the gap.
    sink.store().put(&key, stored.into()).await.unwrap();
    sink.verify("audit").await.unwrap();
    sink.store()
        .delete(&sink.manifest_key("audit", 1))
        .await
        .unwrap();
    let err = sink.verify("audit").await.unwrap_err();
    assert!(
        err.to_string().contains("prev_hash does not match"),
        "{err}"
    );
}

#[tokio::test]
async fn upload_file_streams_a_multi_megabyte_file_with_its_sha256() {
    let Some(moto) = Moto::start("upload_file").await else {
        return;
    };
    moto.bucket("exports").await;
    let sink = moto.sink(&moto.settings("exports", false));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("export.json.gz");
    // 21 MiB of varied bytes: three parts of 8 MiB (the last one shorter).
    let mut content = Vec::with_capacity(21 << 20);
    let mut x: u32 = 12345;
    while content.len() < 21 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        content.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&local, &content).unwrap();
    let uploaded = sink
        .upload_file(&local, "org-export/2026-03-01/export.json.gz")
        .await
        .unwrap();
    let expected = hex::encode(Sha256::digest(&content));
    assert_eq!(uploaded.sha256, expected);
    assert_eq!(uploaded.size, content.len() as u64);
    assert_eq!(
        uploaded.key,
        "audit-logs/org-export/2026-03-01/export.json.gz"
    );
    let stored = object(&sink, &ObjectPath::from(uploaded.key.as_str())).await;
    assert_eq!(stored.len(), content.len());
    assert!(stored == content);
    let sidecar = object(&sink, &ObjectPath::from(format!("{}.sha256", uploaded.key))).await;
    assert_eq!(
        String::from_utf8(sidecar).unwrap(),
        format!("{expected}  export.json.gz\n")
    );

    // A missing local file is an I/O error naming it, and nothing is created.
    let err = sink
        .upload_file(&dir.path().join("absent"), "org-export/absent")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn missing_credentials_name_the_variables_to_set() {
    let settings = S3SinkSettings {
        location: S3Location {
            bucket: "b".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            allow_http: false,
            access_key_id_env: "ASANA_WORKER_TEST_SURELY_UNSET_KEY_ID".into(),
            secret_access_key_env: "ASANA_WORKER_TEST_SURELY_UNSET_SECRET".into(),
        },
        gzip: false,
        conditional_put: true,
    };
    let err = S3Sink::new(&settings).unwrap_err();
    assert!(matches!(err, SinkError::Config { .. }));
    assert!(
        err.to_string()
            .contains("ASANA_WORKER_TEST_SURELY_UNSET_KEY_ID"),
        "{err}"
    );
    // Plain http needs allow_http.
    let err = S3Sink::with_credentials(
        &S3SinkSettings {
            location: S3Location {
                endpoint: Some("http://127.0.0.1:9000".into()),
                ..settings.location.clone()
            },
            ..settings
        },
        S3Credentials {
            access_key_id: SecretString::from("k".to_string()),
            secret_access_key: SecretString::from("s".to_string()),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("allow_http"), "{err}");
}

/// `asana-worker verify --job NAME` checks an s3 sink's manifest and objects in the bucket,
/// with the credentials from the variables the job file names.
#[tokio::test]
async fn verify_command_checks_the_bucket_of_a_job() {
    let Some(moto) = Moto::start("verify_command").await else {
        return;
    };
    moto.bucket("verified").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n[jobs]\ndir = \"{jobs}\"\n\
             [credentials.main]\nkind = \"pat\"\ntoken_env = \"ASANA_WORKER_TEST_UNUSED_TOKEN\"\n",
            db = dir.path().join("state.sqlite").display(),
            jobs = dir.path().join("jobs").display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("jobs/audit-s3.toml"),
        format!(
            "name = \"audit-s3\"\nkind = \"audit_log\"\nevery = \"5m\"\ncredential = \"main\"\n\
             [settings]\nworkspace = \"1\"\n[settings.sink]\ntype = \"s3\"\nbucket = \"verified\"\n\
             prefix = \"audit-logs\"\nendpoint = \"{}\"\nallow_http = true\n\
             access_key_id_env = \"TEST_S3_KEY_ID\"\nsecret_access_key_env = \"TEST_S3_SECRET\"\n",
            moto.endpoint
        ),
    )
    .unwrap();
    let sink = moto.sink(&moto.settings("verified", false));
    sink.commit(batch("audit-s3", 1, 1..=2)).await.unwrap();
    sink.commit(batch("audit-s3", 2, 3..=5)).await.unwrap();
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_asana-worker"))
            .env_remove("ASANA_WORKER_CONFIG")
            .env("TEST_S3_KEY_ID", "testing")
            .env("TEST_S3_SECRET", "testing-secret")
            .args(["verify", "--job", "audit-s3", "--config"])
            .arg(dir.path().join("config.toml"))
            .output()
            .unwrap()
    };
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 batch(es), 5 record(s)"), "{stdout}");

    let key = sink.data_key("audit-s3", 2).await.unwrap().unwrap();
    sink.store().put(&key, "{}\n".into()).await.unwrap();
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED") && stdout.contains("data/00000000000000000002-"),
        "{stdout}"
    );
}

/// Two runs of one job racing on the bucket (a stale run whose lease was taken over): one
/// manifest entry per sequence wins, the loser's object is removed and its commit fails as
/// transient, and the chain stays intact.
#[tokio::test]
async fn a_stale_run_cannot_overwrite_a_committed_batch() {
    let Some(moto) = Moto::start("stale_run").await else {
        return;
    };
    moto.bucket("raced").await;
    let settings = moto.settings("raced", false);
    let current = moto.sink(&settings);
    let stale = moto.sink(&settings);
    assert_eq!(stale.recover("audit").await.unwrap(), None);
    current.commit(batch("audit", 1, 1..=3)).await.unwrap();

    // The stale run still believes the stream is empty, and has other events for batch 1.
    let err = stale.commit(batch("audit", 1, 10..=11)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("another run"), "{err}");
    let data = current
        .store()
        .list(Some(&ObjectPath::from("audit-logs/audit/data")))
        .collect::<Vec<_>>()
        .await;
    assert_eq!(data.len(), 1, "the loser's object was removed");
    let report = current.verify("audit").await.unwrap();
    assert_eq!((report.entries, report.records), (1, 3));
    // Its next run recovers and continues the chain.
    assert_eq!(stale.recover("audit").await.unwrap().unwrap().sequence, 1);
    stale.commit(batch("audit", 2, 4..=4)).await.unwrap();
    assert_eq!(current.verify("audit").await.unwrap().entries, 2);

    // The same content for the same sequence (an attempt whose answer was lost) is fine.
    let twin = moto.sink(&settings);
    let fresh = moto.sink(&settings);
    assert_eq!(fresh.recover("other").await.unwrap(), None);
    twin.commit(batch("other", 1, 1..=2)).await.unwrap();
    fresh.commit(batch("other", 1, 1..=2)).await.unwrap();
    assert_eq!(fresh.verify("other").await.unwrap().entries, 1);
}

/// The two crash windows of a commit: after a batch's object, before its manifest entry; and
/// after the entry, before the job's checkpoint. A job resuming from an older position rebuilds
/// the batch with other events (another page split), and the rebuilt batch can change neither
/// the object already written (its key names its content) nor the entry (created only if
/// absent, and a sequence the bucket holds is not written again).
#[tokio::test]
async fn a_batch_rebuilt_after_a_crash_cannot_change_a_stored_object_or_entry() {
    let Some(moto) = Moto::start("rebuilt_batch").await else {
        return;
    };
    moto.bucket("rebuilt").await;
    let settings = moto.settings("rebuilt", false);
    let sink = moto.sink(&settings);
    sink.commit(batch("audit", 1, 1..=3)).await.unwrap();
    sink.commit(batch("audit", 2, 4..=6)).await.unwrap();
    // A crash between batch 2's object and its entry: the object is written, nothing names it.
    let first_object = sink.data_key("audit", 2).await.unwrap().unwrap();
    let first_bytes = object(&sink, &first_object).await;
    let store = sink.store();
    store.delete(&sink.manifest_key("audit", 2)).await.unwrap();
    let hint = ObjectPath::from("audit-logs/audit/manifest/latest");
    store.put(&hint, "1".into()).await.unwrap();
    drop(sink);

    let restarted = moto.sink(&settings);
    assert_eq!(
        restarted.recover("audit").await.unwrap().unwrap().sequence,
        1
    );
    restarted.commit(batch("audit", 2, 4..=5)).await.unwrap();
    assert_eq!(object(&restarted, &first_object).await, first_bytes);
    let second_object = restarted.data_key("audit", 2).await.unwrap().unwrap();
    assert_ne!(second_object, first_object);
    assert_eq!(
        lines(&object(&restarted, &second_object).await),
        vec![event(4), event(5)]
    );

    // A crash between the entry and the checkpoint: a run that did not see the entry rebuilds
    // batch 2 once more, with yet other events. Nothing changes.
    let entry = object(&restarted, &restarted.manifest_key("audit", 2)).await;
    let stale = moto.sink(&settings);
    stale.commit(batch("audit", 2, 4..=7)).await.unwrap();
    assert_eq!(object(&stale, &stale.manifest_key("audit", 2)).await, entry);
    assert_eq!(object(&stale, &second_object).await, {
        let mut expected = Vec::new();
        for gid in 4..=5 {
            expected.extend_from_slice(event(gid).to_string().as_bytes());
            expected.push(b'\n');
        }
        expected
    });
    let report = stale.verify("audit").await.unwrap();
    assert_eq!((report.entries, report.records), (2, 5));
}

/// A batch above the multipart threshold is uploaded in parts and still verifies.
#[tokio::test]
async fn a_large_batch_is_uploaded_in_parts() {
    let Some(moto) = Moto::start("large_batch").await else {
        return;
    };
    moto.bucket("large").await;
    let sink = moto.sink(&moto.settings("large", false));
    let mut large = batch("audit", 1, 1..=3);
    let padding = "x".repeat(asana_worker::sinks::s3::MULTIPART_THRESHOLD / 2);
    large.records = (1..=3)
        .map(|gid| {
            let mut value = event(gid);
            value["padding"] = Value::String(padding.clone());
            RawValue::from_string(value.to_string()).unwrap()
        })
        .collect();
    sink.commit(large).await.unwrap();
    let key = sink.data_key("audit", 1).await.unwrap().unwrap();
    let meta = sink.store().head(&key).await.unwrap();
    assert!(meta.size > asana_worker::sinks::s3::MULTIPART_THRESHOLD as u64);
    let report = sink.verify("audit").await.unwrap();
    assert_eq!((report.entries, report.records), (1, 3));
}
