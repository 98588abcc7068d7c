//! A sync killed at any instant loses and duplicates nothing: the daemon process is SIGKILLed
//! at 10 random instants, during the first full pass and during incremental runs with the
//! world changing between them; each restart resumes from the checkpoint committed with the
//! rows, and the final tables equal the world (tests/support/sync.rs).

mod support;

use std::time::Duration;

use rand::{RngExt, SeedableRng};
use support::sync::{SyncSetup, Target, small_world};

const KILLS_IN_FULL_PASS: usize = 5;
const KILLS_IN_INCREMENTAL_RUNS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_during_full_and_incremental_runs_leave_the_tables_equal_to_the_world() {
    let mut config = small_world();
    config.world.projects = 12;
    config.world.tasks_per_project = 12;
    // Slow enough that a full pass takes seconds, so every kill lands inside a run.
    config.faults.latency_ms = 15;
    let mut setup = SyncSetup::new(config, Target::Sqlite, "concurrency = 4").await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5_7c);
    let projects = setup.sim.state().world().projects.len();

    let mut interrupted_mid_pass = 0;
    for _ in 0..KILLS_IN_FULL_PASS {
        // Each kill waits for one more project to be committed (or the pass to end), so the
        // kills land inside the pass, between projects, however slow the machine is.
        kill_during_a_run(&mut setup, &mut rng, |before, now| {
            projects_done(now) > projects_done(before) || (now["complete"] == true && now != before)
        })
        .await;
        let state = setup.sync_state().await;
        let done = projects_done(&state);
        println!("after a kill: {done} of {projects} projects done");
        if state["pass"].is_object() && done > 0 && done < projects {
            interrupted_mid_pass += 1;
        }
    }
    assert!(
        interrupted_mid_pass > 0,
        "no kill landed between two projects of the full pass; the test would prove nothing"
    );

    let admin = support::sim::SimAdmin::of(&setup.sim);
    for round in 0..KILLS_IN_INCREMENTAL_RUNS {
        admin
            .post(
                "/mutate",
                serde_json::json!({"seed": 500 + round as u64, "count": 40}),
            )
            .await;
        kill_during_a_run(&mut setup, &mut rng, |before, now| now != before).await;
    }

    // One more run, to its end, finishes whatever the last kill cut short.
    setup.start().await;
    setup.run_ok();
    setup.assert_mirror_equals_world("after 10 SIGKILLs").await;
    let state = setup.sync_state().await;
    assert_eq!(state["complete"], true);
    assert!(state["pass"].is_null(), "no pass left half done: {state}");
}

/// Projects the checkpoint's pass has committed.
fn projects_done(state: &serde_json::Value) -> usize {
    state["pass"]["done"]
        .as_array()
        .map(|done| {
            done.iter()
                .filter(|step| step.as_str().unwrap_or("").starts_with("project:"))
                .count()
        })
        .unwrap_or(0)
}

/// Starts the daemon, enqueues a run, waits until the checkpoint shows the progress
/// `progressed` asks for (comparing it before and now), then SIGKILLs the daemon a random
/// instant later.
async fn kill_during_a_run(
    setup: &mut SyncSetup,
    rng: &mut rand_chacha::ChaCha8Rng,
    progressed: impl Fn(&serde_json::Value, &serde_json::Value) -> bool,
) {
    let before = setup.sync_state().await;
    setup.start().await;
    let enqueued = setup.daemon.cli(&["jobs", "run", "sync"]);
    assert!(enqueued.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !progressed(&before, &setup.sync_state().await) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run made no progress in 60 s:\n{}",
            setup.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
    setup.kill();
}
