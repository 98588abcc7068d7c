//! The `audit_log` job against the simulator through the real binary: an expired offset resumes
//! from the fallback without loss or duplicates, late events inside the overlap window are
//! delivered once, an idle job polls without a request storm, filters (server-side and
//! client-side) hold, and `verify` names tampering exactly.

mod support;
use support::audit as audit_support;

use std::collections::BTreeSet;
use std::time::Duration;

use audit_support::{AuditSetup, by_gid, quiet_sim, terminate};
use serde_json::{Value, json};

fn assert_exactly(setup: &AuditSetup, expected: &BTreeSet<String>) {
    let counts = by_gid(&setup.records());
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let held: BTreeSet<String> = counts.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&held).collect();
    let extra: Vec<_> = held.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
}

async fn stats(setup: &AuditSetup) -> Value {
    setup.admin().token_stats("service-account").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_offset_resumes_from_the_newest_event_without_loss_or_duplicates() {
    // The simulator's offsets last 15 simulated minutes: the test moves its clock past that.
    let setup = AuditSetup::new(
        quiet_sim(300, 1.0),
        "every = \"1h\"",
        "start = \"2d\"\nbackfill_slices = 3",
    )
    .await;
    let mut daemon = setup.start(0);
    setup.wait_ready(&mut daemon).await;
    setup.run_job();
    let mut expected: BTreeSet<String> = setup.sim_events().keys().cloned().collect();
    assert_exactly(&setup, &expected);
    // Events that share one instant, read by the tail (the first run's finished backfill
    // slices are not walked again).
    expected.extend(setup.append(json!({ "count": 4 })).await);
    setup.advance_sim_clock(16 * 60).await;
    setup.run_job();
    assert_exactly(&setup, &expected);
    // The tail's stored offset has expired by the next run: the fallback's `start_at` equals
    // the newest instant, whose gids are dropped.
    expected.extend(setup.append(json!({ "count": 2 })).await);
    setup.advance_sim_clock(16 * 60).await;
    let before = stats(&setup).await["statuses"]["400"].as_u64().unwrap_or(0);
    setup.run_job();
    let after = stats(&setup).await["statuses"]["400"].as_u64().unwrap_or(0);
    assert!(after > before, "the stored offset was refused as expired");
    assert_exactly(&setup, &expected);
    // And again.
    expected.extend(setup.append(json!({ "count": 3 })).await);
    setup.advance_sim_clock(16 * 60).await;
    let before = stats(&setup).await["statuses"]["400"].as_u64().unwrap_or(0);
    setup.run_job();
    let after = stats(&setup).await["statuses"]["400"].as_u64().unwrap_or(0);
    assert!(after > before, "the stored offset was refused as expired");
    assert_exactly(&setup, &expected);
    terminate(&mut daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_inside_the_overlap_are_delivered_once_and_idle_polls_are_cheap() {
    let setup = AuditSetup::new(
        quiet_sim(200, 1.0),
        "every = \"1h\"",
        "start = \"2d\"\nbackfill_slices = 2\noverlap = \"10m\"",
    )
    .await;
    let mut daemon = setup.start(0);
    setup.wait_ready(&mut daemon).await;
    setup.run_job();
    let mut expected: BTreeSet<String> = setup.sim_events().keys().cloned().collect();
    // The simulated clock moves well ahead of where the tail started.
    setup.advance_sim_clock(120).await;
    expected.extend(setup.append(json!({ "count": 3 })).await);
    setup.run_job();
    assert_exactly(&setup, &expected);
    // Two events appear late: created a minute before the newest one delivered.
    let now = setup.sim_now().await;
    let newest = setup
        .records()
        .iter()
        .filter_map(|r| chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str()?).ok())
        .max()
        .unwrap();
    assert!(newest <= now);
    let late_at = newest - chrono::Duration::seconds(60);
    let late = setup
        .append(json!({ "count": 2, "created_at": late_at.to_rfc3339() }))
        .await;
    expected.extend(late.iter().cloned());
    setup.run_job();
    assert_exactly(&setup, &expected);
    setup.run_job();
    assert_exactly(&setup, &expected);

    // Caught up: each run asks for the tail once and re-reads the overlap once.
    setup.admin().reset_stats().await;
    for _ in 0..5 {
        setup.run_job();
    }
    let requests = setup.requests().await;
    assert!(
        requests <= 10,
        "5 idle runs made {requests} requests (at most 2 each expected)"
    );
    assert_exactly(&setup, &expected);
    terminate(&mut daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_exactly_the_matching_events() {
    let types = ["user_login_succeeded", "task_deleted"];
    let setup = AuditSetup::new(
        quiet_sim(600, 60.0),
        "every = \"1h\"",
        &format!(
            "start = \"2d\"\nevent_type = [\"{}\", \"{}\"]\nactor_type = \"user\"",
            types[0], types[1]
        ),
    )
    .await;
    let mut daemon = setup.start(0);
    setup.wait_ready(&mut daemon).await;
    setup.run_job();
    let expected: BTreeSet<String> = setup
        .sim_events()
        .iter()
        .filter(|(_, e)| {
            types.contains(&e["event_type"].as_str().unwrap_or_default())
                && e["actor"]["actor_type"] == "user"
        })
        .map(|(gid, _)| gid.clone())
        .collect();
    assert!(!expected.is_empty(), "the world has matching events");
    assert_exactly(&setup, &expected);
    terminate(&mut daemon);
}

/// Writes two segments and an open batch with the library's file sink, then tampers.
#[tokio::test]
async fn verify_names_an_edited_file_a_removed_file_and_an_edited_manifest_line() {
    use asana_worker::sinks::file::{FileSink, FileSinkSettings};
    use asana_worker::sinks::{Batch, RecordMark, RecordSink};
    let temp = tempfile::tempdir().unwrap();
    let sink = FileSink::new(FileSinkSettings {
        dir: temp.path().to_path_buf(),
        gzip: true,
        rotate_bytes: 1,
        rotate_every: Duration::from_secs(3600),
    })
    .unwrap();
    for sequence in 1..=3u64 {
        let record =
            format!("{{\"gid\":\"{sequence}\",\"created_at\":\"2026-01-01T00:00:0{sequence}Z\"}}");
        let mark = RecordMark {
            gid: sequence.to_string(),
            created_at: format!("2026-01-01T00:00:0{sequence}Z"),
        };
        sink.commit(Batch {
            stream: "audit".into(),
            sequence,
            records: vec![serde_json::value::RawValue::from_string(record).unwrap()],
            first: mark.clone(),
            last: mark,
            cursor: json!({ "sequence": sequence }),
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    }
    drop(sink);
    let verify = || {
        let output = std::process::Command::new(audit_support::BIN)
            .args(["verify", "--dir"])
            .arg(temp.path())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    };
    let (code, text) = verify();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("3 sealed segment(s), 3 record(s), chain intact"),
        "{text}"
    );

    let dir = temp.path().join("audit");
    let manifest_path = dir.join("manifest.jsonl");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let entries: Vec<Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let file = |i: usize| entries[i]["file"].as_str().unwrap().to_string();

    // An edited segment.
    let first = dir.join(file(0));
    let original = std::fs::read(&first).unwrap();
    let mut edited = original.clone();
    let last = edited.len() - 1;
    edited[last] ^= 1;
    std::fs::write(&first, &edited).unwrap();
    let (code, text) = verify();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("segment 1 ({}): sha256 is ", file(0))),
        "{text}"
    );
    assert!(text.contains("the file was edited"), "{text}");
    std::fs::write(&first, &original).unwrap();

    // A removed segment.
    let second = dir.join(file(1));
    let kept = std::fs::read(&second).unwrap();
    std::fs::remove_file(&second).unwrap();
    let (code, text) = verify();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "segment 2 ({}) is missing; it was removed after being sealed",
            file(1)
        )),
        "{text}"
    );
    std::fs::write(&second, &kept).unwrap();

    // An edited manifest line (a count changed to hide a removed record).
    let tampered = manifest.replacen("\"count\":1", "\"count\":2", 2);
    let tampered = {
        let mut lines: Vec<&str> = tampered.lines().collect();
        let original_lines: Vec<&str> = manifest.lines().collect();
        lines[0] = original_lines[0];
        lines.join("\n") + "\n"
    };
    std::fs::write(&manifest_path, &tampered).unwrap();
    let (code, text) = verify();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("manifest line 2 (segment 2, {}): the entry's hash does not match its content; the manifest line was edited", file(1))),
        "{text}"
    );
    // A removed manifest line.
    let without: String = manifest
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&manifest_path, &without).unwrap();
    let (code, text) = verify();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("prev_hash does not match the previous entry"),
        "{text}"
    );
    assert!(
        text.contains(&format!("segment file {} is not in the manifest", file(1))),
        "{text}"
    );
    std::fs::write(&manifest_path, &manifest).unwrap();
    assert_eq!(verify().0, Some(0));
}

/// Runs the job once through the CLI; its exit code and what it printed.
fn run_once(setup: &AuditSetup) -> (bool, String) {
    let output = setup.cli(&["jobs", "run", "audit", "--wait", "--timeout-secs", "120"]);
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_rolled_back_or_swapped_under_the_job_is_refused() {
    let setup = AuditSetup::new(
        quiet_sim(120, 1.0),
        "every = \"1h\"",
        "start = \"2d\"\npage_size = 20",
    )
    .await;
    let mut daemon = setup.start(0);
    setup.wait_ready(&mut daemon).await;
    setup.run_job();
    let out = setup.path("out");
    let backup = setup.path("backup");
    copy_dir(&out, &backup);
    let mut expected: BTreeSet<String> = setup.sim_events().keys().cloned().collect();
    expected.extend(setup.append(json!({ "count": 30 })).await);
    setup.advance_sim_clock(60).await;
    setup.run_job();
    assert_exactly(&setup, &expected);

    // Rolled back: the sink is restored from the older copy, behind the checkpoint.
    std::fs::rename(&out, setup.path("newer")).unwrap();
    copy_dir(&backup, &out);
    let (ok, text) = run_once(&setup);
    assert!(!ok, "a sink behind the checkpoint is refused: {text}");
    assert!(
        text.contains("holds job \"audit\"'s stream only through batch")
            && text.contains("the checkpoint has delivered through batch"),
        "{text}"
    );

    // Swapped: the job now names another directory.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::rename(setup.path("newer"), &out).unwrap();
    let job_file = setup.jobs_dir().join("audit.toml");
    let job = std::fs::read_to_string(&job_file).unwrap();
    std::fs::create_dir(setup.path("elsewhere")).unwrap();
    std::fs::write(
        &job_file,
        job.replace(
            &out.display().to_string(),
            &setup.path("elsewhere").display().to_string(),
        ),
    )
    .unwrap();
    terminate(&mut daemon);
    let mut daemon = setup.start(1);
    setup.wait_ready(&mut daemon).await;
    let (ok, text) = run_once(&setup);
    assert!(!ok, "another sink is refused: {text}");
    assert!(
        text.contains(&format!(
            "wrote its stream to sink \"file:{}\"",
            out.display()
        )) && text.contains(&format!(
            "its sink is now \"file:{}",
            setup.path("elsewhere").display()
        )),
        "{text}"
    );
    // Pointed back at its sink, the job goes on where it stopped.
    std::fs::write(&job_file, job).unwrap();
    terminate(&mut daemon);
    let mut daemon = setup.start(2);
    setup.wait_ready(&mut daemon).await;
    expected.extend(setup.append(json!({ "count": 5 })).await);
    setup.advance_sim_clock(60).await;
    setup.run_job();
    assert_exactly(&setup, &expected);
    terminate(&mut daemon);
}
