//! The `sync` job kind end to end: the real daemon against the simulator, tables in a real
//! SQLite file or PostgreSQL database, each test ending with the mirror compared to a
//! sequential walk of the API (tests/support/sync.rs).

mod support;

use support::sync::{SyncSetup, Target, small_world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_mirrors_every_resource_on_sqlite() {
    let mut setup = SyncSetup::new(small_world(), Target::Sqlite, "").await;
    setup.start().await;
    let output = setup.run_ok();
    println!("{output}");
    setup
        .assert_mirror_equals_world("after the full pass")
        .await;
}

/// Full sync, then rounds of random changes in the simulator (creates, renames, completions,
/// moves between projects and sections, subtasks, comments, deletes, archived projects, …),
/// each followed by an incremental run: after every run the mirror equals the world.
async fn rounds_of_changes_stay_equal(target: Target) {
    let mut setup = SyncSetup::new(small_world(), target, "").await;
    setup.start().await;
    setup.run_ok();
    setup
        .assert_mirror_equals_world("after the full pass")
        .await;
    let admin = support::sim::SimAdmin::of(&setup.sim);
    for round in 0..6u64 {
        let applied = admin
            .post(
                "/mutate",
                serde_json::json!({"seed": 100 + round, "count": 25}),
            )
            .await;
        let kinds: Vec<String> = applied["applied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kind"].as_str().unwrap_or_default().to_string())
            .collect();
        println!(
            "round {round}: {}",
            serde_json::to_string(&applied["applied"]).unwrap()
        );
        let output = setup.run_ok();
        let progress = SyncSetup::last_progress(&output).expect("progress figures");
        assert_eq!(progress["mode"], "incremental", "round {round}: {output}");
        assert!(
            progress["events"].as_u64().unwrap() > 0,
            "round {round}: no events read"
        );
        setup
            .assert_mirror_equals_world(&format!("round {round} ({})", kinds.join(", ")))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_keep_sqlite_equal_to_the_world() {
    rounds_of_changes_stay_equal(Target::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_keep_postgres_equal_to_the_world() {
    let Some(target) = Target::postgres("sync equality on PostgreSQL").await else {
        return;
    };
    rounds_of_changes_stay_equal(target).await;
}
