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

/// Random changes made in the simulator (as other Asana users would).
async fn change_the_world(setup: &SyncSetup, seed: u64, count: u64) {
    let admin = support::sim::SimAdmin::of(&setup.sim);
    admin
        .post("/mutate", serde_json::json!({"seed": seed, "count": count}))
        .await;
}

fn progress(output: &str) -> serde_json::Value {
    SyncSetup::last_progress(output).expect("progress figures")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_workspace_token_re_reads_everything_and_loses_nothing() {
    let mut setup = SyncSetup::new(small_world(), Target::Sqlite, "").await;
    setup.start().await;
    let first = progress(&setup.run_ok());
    change_the_world(&setup, 7, 30).await;
    let admin = support::sim::SimAdmin::of(&setup.sim);
    admin
        .post(
            "/events/expire",
            serde_json::json!({"resource": setup.workspace()}),
        )
        .await;
    let output = setup.run_ok();
    let again = progress(&output);
    assert_eq!(
        again["mode"], "full",
        "a 412 on the workspace stream re-reads: {output}"
    );
    assert_eq!(again["projects"], first["projects"]);
    setup.assert_mirror_equals_world("after the 412").await;
    // The new token works: the next changes arrive as events.
    change_the_world(&setup, 8, 10).await;
    let next = progress(&setup.run_ok());
    assert_eq!(next["mode"], "incremental");
    assert!(next["events"].as_u64().unwrap() > 0);
    setup
        .assert_mirror_equals_world("after the next changes")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_workspace_stream_a_412_on_one_project_re_reads_only_that_project() {
    let mut setup = SyncSetup::new(small_world(), Target::Sqlite, "").await;
    let admin = support::sim::SimAdmin::of(&setup.sim);
    admin
        .call(
            reqwest::Method::PUT,
            "/tokens/service-account/workspace_events",
            Some(serde_json::json!({"allowed": false})),
        )
        .await;
    setup.start().await;
    setup.run_ok();
    setup
        .assert_mirror_equals_world("after the full pass on project streams")
        .await;
    change_the_world(&setup, 11, 25).await;
    let project = setup
        .sim
        .state()
        .world()
        .projects
        .at(2)
        .unwrap()
        .gid
        .clone();
    admin
        .post("/events/expire", serde_json::json!({"resource": project}))
        .await;
    let output = setup.run_ok();
    let figures = progress(&output);
    assert_eq!(figures["mode"], "incremental", "{output}");
    assert_eq!(
        figures["projects_resynced"], 1,
        "only the expired project: {output}"
    );
    assert!(figures["events"].as_u64().unwrap() > 0, "{output}");
    setup
        .assert_mirror_equals_world("after the 412 on one project")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_by_asana_are_caught_by_the_sweep() {
    let mut setup = SyncSetup::new(small_world(), Target::Sqlite, "").await;
    setup.start().await;
    let full_pass = std::time::Instant::now();
    setup.run_ok();
    let admin = support::sim::SimAdmin::of(&setup.sim);
    admin
        .set_faults_json(serde_json::json!({"drop_events": 1.0}))
        .await;
    change_the_world(&setup, 21, 30).await;
    let output = setup.run_ok();
    assert_eq!(
        progress(&output)["events"],
        0,
        "every event was lost: {output}"
    );
    let (world, mirror) = (setup.world().await, setup.mirror().await);
    assert!(
        !asana_worker::jobs::sync::walk::differences(&world, &mirror).is_empty(),
        "with every event lost and no sweep due, the mirror cannot have the changes"
    );
    setup.stop();
    setup.set_settings("sweep_every = \"1s\"");
    setup.start().await;
    // The sweep is due one second (of the daemon's own clock, which a test cannot move) after
    // the full pass began; the restart almost always took longer already.
    if let Some(left) = std::time::Duration::from_secs(1).checked_sub(full_pass.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let output = setup.run_ok();
    assert_eq!(progress(&output)["mode"], "sweep", "{output}");
    setup.assert_mirror_equals_world("after the sweep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_workspace_records_what_it_cannot_read_instead_of_empty_tables() {
    let mut config = small_world();
    config.world.projects = 3;
    config.world.tasks_per_project = 4;
    let mut setup = SyncSetup::new(config, Target::Sqlite, "")
        .await
        .with_credential("pat-free", "free", support::sync::FREE_READER);
    setup.start().await;
    let output = setup.run_ok();
    let gaps = setup.gaps().await;
    for resource in ["portfolios", "goals", "time_tracking_entries"] {
        assert!(
            gaps.iter()
                .any(|(r, _, state)| r == resource && state == "payment_required"),
            "{resource} is recorded as a 402 gap: {gaps:?}"
        );
        assert!(
            output.contains(resource),
            "the run's figures name {resource}: {output}"
        );
    }
    setup.assert_mirror_equals_world("free tier").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_the_token_may_not_read_is_a_recorded_gap() {
    let mut config = support::sync::small_world();
    for token in config.tokens.iter_mut() {
        if token.name == "service-account" || token.name == support::sync::READER {
            token.forbidden_projects = vec![1];
        }
    }
    let mut setup = SyncSetup::new(config, Target::Sqlite, "").await;
    let forbidden = setup
        .sim
        .state()
        .world()
        .projects
        .at(1)
        .unwrap()
        .gid
        .clone();
    setup.start().await;
    let output = setup.run_ok();
    let gaps = setup.gaps().await;
    assert_eq!(
        gaps,
        vec![(
            "project".to_string(),
            forbidden.clone(),
            "forbidden".to_string()
        )],
        "{output}"
    );
    assert!(
        output.contains(&forbidden),
        "the run's figures name the project: {output}"
    );
    setup
        .assert_mirror_equals_world("one project forbidden")
        .await;
    // Once readable again, the next full read fills it and clears the gap.
    let admin = support::sim::SimAdmin::of(&setup.sim);
    for token in ["service-account", support::sync::READER] {
        admin
            .call(
                reqwest::Method::PUT,
                &format!("/tokens/{token}/forbidden_projects"),
                Some(serde_json::json!({"projects": []})),
            )
            .await;
    }
    admin
        .post(
            "/events/expire",
            serde_json::json!({"resource": setup.workspace()}),
        )
        .await;
    setup.run_ok();
    assert!(setup.gaps().await.is_empty());
    setup
        .assert_mirror_equals_world("project readable again")
        .await;
}
