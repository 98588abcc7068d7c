//! Exactly once across crashes: the daemon process (`asana-worker run`, SQLite store, file
//! sink) is SIGKILLed at 32 random instants while it pulls 40,000 audit events from a
//! simulator that injects 5xx, 429s and connection resets. Afterwards the sink holds exactly
//! the simulator's events — none missing, none twice, byte-equal as JSON — and `verify` passes.

mod support;
use support::audit as audit_support;

use std::time::{Duration, Instant};

use audit_support::{AuditSetup, by_gid, faulty_sim, kill, terminate};
use rand::{RngExt, SeedableRng};

const EVENTS: usize = 40_000;
const KILLS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_during_a_pull_neither_lose_nor_duplicate_events() {
    let config = faulty_sim(EVENTS);
    let setup = AuditSetup::new(
        config,
        "every = \"1s\"",
        "start = \"8d\"\nbackfill_slices = 4\npage_size = 15\noverlap = \"1m\"",
    )
    .await;
    let expected = setup.sim_events();
    assert_eq!(expected.len(), EVENTS);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    let started = Instant::now();
    let mut progress = Vec::new();
    for n in 0..KILLS {
        let mut child = setup.start(n);
        setup.wait_ready(&mut child).await;
        // The daemon that holds the SQLite lock resumes its predecessor's run at once, so a
        // kill every second or two would see the pull finish early; these instants keep every
        // kill inside it.
        let delay = rng.random_range(100..800);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        kill(&mut child);
        let held = setup.records().len();
        progress.push(held);
        // Nothing is ever held twice, also mid-pull.
        let counts = by_gid(&setup.records());
        if counts.values().any(|n| *n > 1) && std::env::var_os("AUDIT_KEEP").is_some() {
            let _ = std::process::Command::new("cp")
                .args(["-r"])
                .arg(setup.dir.path())
                .arg("/tmp/audit-fail")
                .status();
        }
        assert!(
            counts.values().all(|n| *n == 1),
            "duplicates after kill {n}: {:?}",
            counts
                .iter()
                .filter(|(_, n)| **n > 1)
                .take(5)
                .collect::<Vec<_>>()
        );
    }
    // The last daemon finishes the pull.
    let mut child = setup.start(KILLS);
    setup.wait_ready(&mut child).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while setup.records().len() < EVENTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more run after the pull, so an unlucky extra delivery would show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    terminate(&mut child);

    let records = setup.records();
    let counts = by_gid(&records);
    let missing: Vec<&String> = expected
        .keys()
        .filter(|g| !counts.contains_key(*g))
        .collect();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let unknown: Vec<&String> = counts
        .keys()
        .filter(|g| !expected.contains_key(*g))
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty() && unknown.is_empty(),
        "after {KILLS} kills (held after each: {progress:?}): {} missing (e.g. {:?}), {} twice (e.g. {:?}), {} unknown; log: {}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(3).collect::<Vec<_>>(),
        unknown.len(),
        setup
            .log(KILLS)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for record in &records {
        assert_eq!(
            &expected[record["gid"].as_str().unwrap()],
            record,
            "stored as Asana returned it"
        );
    }
    // The kills fell during the pull, and it advanced between them.
    let during = progress.iter().filter(|held| **held < EVENTS).count();
    assert!(
        during >= 30 || during == KILLS,
        "at least 30 kills fell during the pull: {progress:?}"
    );
    assert!(
        progress.windows(2).filter(|w| w[1] > w[0]).count() >= KILLS / 3,
        "the pull made progress between kills: {progress:?}"
    );
    let verify = setup.verify();
    assert!(
        verify.status.success(),
        "verify failed: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    println!(
        "{KILLS} kills, {EVENTS} events, exactly once, in {:.1} s; held after each kill: {progress:?}",
        started.elapsed().as_secs_f64()
    );
}
