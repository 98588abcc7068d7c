//! One set of behaviours every [`Store`] must have, run against SQLite (a fresh file in a
//! tempdir) and PostgreSQL (a fresh database on the server named by
//! `ASANA_WORKER_TEST_PG_URL`; skipped with a notice when unset).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use asana_worker::store::{
    self, ClaimFilter, Enqueued, NewRun, ReplicaRow, RunFilter, RunState, ScheduleRow, Store,
    StoreError, Transition, Trigger, priority,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use sqlx::{Executor, PgPool, SqlitePool};
use support::pg::TestDatabase;
use uuid::Uuid;

/// Direct access to the database behind a store, for what the trait must not allow.
enum Raw {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// A store under test plus what keeps its database alive.
struct Backend {
    store: Arc<dyn Store>,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDatabase>,
}

impl Backend {
    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("queue.db");
        let url = format!("sqlite://{}", path.display());
        let store = store::open(&url).await.unwrap();
        let raw = SqlitePool::connect(&url).await.unwrap();
        Backend {
            store,
            raw: Raw::Sqlite(raw),
            _dir: Some(dir),
            _db: None,
        }
    }

    async fn postgres() -> Option<Backend> {
        let db = TestDatabase::create("PostgreSQL conformance").await?;
        let store = store::open(&db.url).await.unwrap();
        let raw = PgPool::connect(&db.url).await.unwrap();
        Some(Backend {
            store,
            raw: Raw::Pg(raw),
            _dir: None,
            _db: Some(db),
        })
    }

    /// Runs raw SQL (no parameters) directly on the database.
    async fn raw_execute(&self, sql: &'static str) -> Result<u64, sqlx::Error> {
        match &self.raw {
            Raw::Sqlite(pool) => pool.execute(sql).await.map(|r| r.rows_affected()),
            Raw::Pg(pool) => pool.execute(sql).await.map(|r| r.rows_affected()),
        }
    }

    /// Writes a state the CHECK constraint forbids, switching the constraint off first.
    async fn force_bogus_state(&self) {
        match &self.raw {
            Raw::Sqlite(pool) => {
                let mut conn = pool.acquire().await.unwrap();
                conn.execute("PRAGMA ignore_check_constraints = ON")
                    .await
                    .unwrap();
                conn.execute("UPDATE runs SET state = 'exploded'")
                    .await
                    .unwrap();
                conn.execute("PRAGMA ignore_check_constraints = OFF")
                    .await
                    .unwrap();
            }
            Raw::Pg(pool) => {
                pool.execute("ALTER TABLE runs DROP CONSTRAINT runs_state_check")
                    .await
                    .unwrap();
                pool.execute("UPDATE runs SET state = 'exploded'")
                    .await
                    .unwrap();
            }
        }
    }
}

/// A fixed instant with microsecond precision (the precision both stores keep).
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 30, 0).unwrap() + chrono::Duration::microseconds(123_456)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn new_run(job: &str, key: &str, run_after: DateTime<Utc>) -> NewRun {
    NewRun {
        job_name: job.to_owned(),
        kind: "sync".to_owned(),
        trigger: Trigger::Schedule,
        fire_time: Some(run_after),
        unique_key: key.to_owned(),
        priority: priority::SCHEDULED,
        run_after,
        max_attempts: 3,
        retry_initial: Duration::from_secs(10),
        retry_max: Duration::from_secs(300),
        state: RunState::Queued,
        note: None,
    }
}

async fn insert(store: &dyn Store, run: NewRun) -> store::Run {
    match store.enqueue(run, t0()).await.unwrap() {
        Enqueued::Inserted(run) => *run,
        Enqueued::Duplicate => panic!("unexpected duplicate"),
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn claim(store: &dyn Store, owner: &str, now: DateTime<Utc>) -> Option<store::Run> {
    store
        .claim(owner, now, LEASE, ClaimFilter::default())
        .await
        .unwrap()
}

async fn count(store: &dyn Store, state: RunState) -> i64 {
    store
        .count_by_state()
        .await
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

// ---------------------------------------------------------------------------------------------
// The behaviours.

async fn enqueue_round_trips_every_field_and_rejects_duplicates(b: &Backend) {
    let store = b.store.as_ref();
    let fire = t0() + chrono::Duration::milliseconds(7);
    let mut run = new_run("export", "2026-03-01T09:30:00Z", fire);
    run.priority = priority::MISFIRE;
    run.trigger = Trigger::Misfire;
    run.kind = "export".to_owned();
    run.max_attempts = 5;
    run.retry_initial = Duration::from_secs(7);
    run.retry_max = Duration::from_secs(70);
    let inserted = insert(store, run.clone()).await;
    let stored = store.get_run(inserted.id).await.unwrap().unwrap();
    for got in [&inserted, &stored] {
        assert_eq!(got.job_name, "export");
        assert_eq!(got.kind, "export");
        assert_eq!(got.trigger, Trigger::Misfire);
        assert_eq!(got.fire_time, Some(fire));
        assert_eq!(got.unique_key, "2026-03-01T09:30:00Z");
        assert_eq!(got.priority, priority::MISFIRE);
        assert_eq!(got.state, RunState::Queued);
        assert_eq!(got.attempt, 0);
        assert_eq!(got.max_attempts, 5);
        assert_eq!(got.run_after, fire, "timestamps read back exactly");
        assert_eq!(got.retry_initial_secs, 7);
        assert_eq!(got.retry_max_secs, 70);
        assert_eq!(got.lease_owner, None);
        assert_eq!(got.lease_expires_at, None);
        assert_eq!(got.rescues, 0);
        assert_eq!(got.created_at, t0());
        assert_eq!(got.started_at, None);
        assert_eq!(got.finished_at, None);
        assert_eq!(got.last_error, None);
    }
    assert_eq!(stored.id, inserted.id);

    // Same (job, key): nothing added, whatever the other fields say.
    let mut again = run.clone();
    again.priority = priority::MANUAL;
    assert!(matches!(
        store.enqueue(again, t0()).await.unwrap(),
        Enqueued::Duplicate
    ));
    // Same key, other job; other key, same job: both new.
    insert(store, new_run("other", "2026-03-01T09:30:00Z", fire)).await;
    insert(store, new_run("export", "manual-1", fire)).await;
    assert_eq!(count(store, RunState::Queued).await, 3);

    // A skipped fire is recorded as finished, with its note.
    let mut skipped = new_run("export", "skipped-1", fire);
    skipped.state = RunState::Skipped;
    skipped.note = Some("overlap policy: skip".to_owned());
    let skipped = insert(store, skipped).await;
    assert_eq!(skipped.state, RunState::Skipped);
    assert_eq!(skipped.finished_at, Some(t0()));
    assert_eq!(skipped.last_error.as_deref(), Some("overlap policy: skip"));
    assert!(store.get_run(Uuid::new_v4()).await.unwrap().is_none());
}

async fn fire_advances_the_schedule_and_enqueues_once(b: &Backend) {
    let store = b.store.as_ref();
    let first = t0();
    let second = t0() + secs(60);
    let schedule = |next: DateTime<Utc>, last: Option<DateTime<Utc>>| ScheduleRow {
        job_name: "sync".to_owned(),
        next_fire_at: next,
        last_fire_at: last,
        definition: "cron:* * * * *".to_owned(),
    };
    // Create the row: runs none yet.
    assert!(
        store
            .fire(&schedule(first, None), None, vec![], t0())
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_schedule("sync").await.unwrap(),
        Some(schedule(first, None))
    );
    // A second creation loses and changes nothing.
    let run = new_run("sync", &first.to_rfc3339(), first);
    assert!(
        !store
            .fire(
                &schedule(second, Some(first)),
                None,
                vec![run.clone()],
                t0()
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_schedule("sync").await.unwrap(),
        Some(schedule(first, None))
    );
    assert!(
        store
            .list_runs(&RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    // A stale expectation loses too.
    assert!(
        !store
            .fire(
                &schedule(second, Some(first)),
                Some(second),
                vec![run.clone()],
                t0()
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .list_runs(&RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    // The right expectation advances the row and enqueues the run.
    assert!(
        store
            .fire(
                &schedule(second, Some(first)),
                Some(first),
                vec![run.clone()],
                t0()
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_schedule("sync").await.unwrap(),
        Some(schedule(second, Some(first)))
    );
    let runs = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].unique_key, first.to_rfc3339());
    // Re-firing the same fire time (e.g. after a restore) advances but adds no second run.
    let third = t0() + secs(120);
    assert!(
        store
            .fire(&schedule(third, Some(first)), Some(second), vec![run], t0())
            .await
            .unwrap()
    );
    assert_eq!(
        store.list_runs(&RunFilter::default()).await.unwrap().len(),
        1
    );
}

async fn concurrent_fires_and_enqueues_add_one_run(b: &Backend) {
    let schedule = ScheduleRow {
        job_name: "race".to_owned(),
        next_fire_at: t0() + secs(60),
        last_fire_at: Some(t0()),
        definition: "every 1m".to_owned(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = Arc::clone(&b.store);
        let schedule = schedule.clone();
        tasks.spawn(async move {
            let run = new_run("race", "fire-1", t0());
            store.fire(&schedule, None, vec![run], t0()).await.unwrap()
        });
    }
    let winners = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|won| *won)
        .count();
    assert_eq!(winners, 1, "exactly one scheduler wins the fire");

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = Arc::clone(&b.store);
        tasks.spawn(async move {
            let run = new_run("race", "manual-7", t0());
            matches!(
                store.enqueue(run, t0()).await.unwrap(),
                Enqueued::Inserted(_)
            )
        });
    }
    let inserted = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|new| *new)
        .count();
    assert_eq!(inserted, 1, "exactly one enqueue of a unique key succeeds");

    let runs = b.store.list_runs(&RunFilter::default()).await.unwrap();
    let keys: Vec<&str> = runs.iter().map(|r| r.unique_key.as_str()).collect();
    assert_eq!(runs.len(), 2, "{keys:?}");
    assert!(keys.contains(&"fire-1") && keys.contains(&"manual-7"));
}

async fn a_failed_fire_changes_nothing_and_spares_concurrent_writes(b: &Backend) {
    let schedule = |job: &str| ScheduleRow {
        job_name: job.to_owned(),
        next_fire_at: t0() + secs(60),
        last_fire_at: Some(t0()),
        definition: "every 1m".to_owned(),
    };
    // The second run breaks a CHECK (max_attempts >= 1) after the schedule row and the first
    // run were written: the whole fire must be undone.
    let runs = |job: &str| {
        let mut bad = new_run(job, "bad", t0());
        bad.max_attempts = 0;
        vec![new_run(job, "good", t0()), bad]
    };
    assert!(
        b.store
            .fire(&schedule("broken"), None, runs("broken"), t0())
            .await
            .is_err()
    );
    assert_eq!(b.store.get_schedule("broken").await.unwrap(), None);
    assert!(
        b.store
            .list_runs(&RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Failing fires interleaved with good writes: each fails or succeeds on its own.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = Arc::clone(&b.store);
        tasks.spawn(async move {
            let job = format!("job-{i}");
            if i % 2 == 0 {
                store
                    .fire(&schedule(&job), None, runs(&job), t0())
                    .await
                    .is_err()
            } else {
                store.enqueue(new_run(&job, "k", t0()), t0()).await.is_ok()
            }
        });
    }
    assert!(
        tasks
            .join_all()
            .await
            .into_iter()
            .all(|as_expected| as_expected)
    );
    let runs = b.store.list_runs(&RunFilter::default()).await.unwrap();
    let mut jobs: Vec<String> = runs.into_iter().map(|r| r.job_name).collect();
    jobs.sort();
    let mut expected: Vec<String> = (0..16)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("job-{i}"))
        .collect();
    expected.sort();
    assert_eq!(jobs, expected);
    assert!(b.store.list_schedules().await.unwrap().is_empty());
}

async fn check_constraints_reject_bogus_values(b: &Backend) {
    insert(b.store.as_ref(), new_run("job", "k", t0())).await;
    let error = b
        .raw_execute("UPDATE runs SET state = 'exploded'")
        .await
        .expect_err("the CHECK constraint must reject an unknown state");
    assert!(
        error.to_string().to_lowercase().contains("check"),
        "a CHECK violation, got {error}"
    );
    assert!(
        b.raw_execute("UPDATE runs SET \"trigger\" = 'cosmic ray'")
            .await
            .is_err()
    );
    // The valid values pass the same constraint.
    assert_eq!(
        b.raw_execute("UPDATE runs SET state = 'needs_reauth'")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        run_states(b.store.as_ref()).await,
        vec![RunState::NeedsReauth],
        "the store reads the raw write back"
    );
}

/// The states of every run, sorted.
async fn run_states(store: &dyn Store) -> Vec<RunState> {
    let mut states: Vec<RunState> = store
        .list_runs(&RunFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
    states.sort();
    states
}

async fn concurrent_claims_hand_out_each_run_once(b: &Backend) {
    const RUNS: usize = 40;
    for i in 0..RUNS {
        insert(b.store.as_ref(), new_run(&format!("job-{i}"), "k", t0())).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = Arc::clone(&b.store);
        tasks.spawn(async move {
            let owner = format!("worker-{worker}");
            let mut claimed = Vec::new();
            while let Some(run) = store
                .claim(&owner, t0(), LEASE, ClaimFilter::default())
                .await
                .unwrap()
            {
                assert_eq!(run.lease_owner.as_deref(), Some(owner.as_str()));
                claimed.push(run.id);
            }
            claimed
        });
    }
    let all: Vec<Uuid> = tasks.join_all().await.into_iter().flatten().collect();
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), RUNS, "every run claimed once, none twice");
    assert_eq!(distinct.len(), RUNS);
    assert_eq!(
        count(b.store.as_ref(), RunState::Running).await,
        RUNS as i64
    );
}

async fn concurrent_claims_run_one_run_per_job(b: &Backend) {
    // Four jobs with ten due runs each; eight workers claim at once, repeatedly.
    for job in 0..4 {
        for key in 0..10 {
            insert(
                b.store.as_ref(),
                new_run(&format!("job-{job}"), &key.to_string(), t0()),
            )
            .await;
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = Arc::clone(&b.store);
        tasks.spawn(async move {
            let owner = format!("worker-{worker}");
            let mut claimed = Vec::new();
            for _ in 0..5 {
                if let Some(run) = store
                    .claim(&owner, t0(), LEASE, ClaimFilter::default())
                    .await
                    .unwrap()
                {
                    claimed.push(run.job_name);
                }
            }
            claimed
        });
    }
    let mut jobs: Vec<String> = tasks.join_all().await.into_iter().flatten().collect();
    jobs.sort();
    assert_eq!(
        jobs,
        ["job-0", "job-1", "job-2", "job-3"],
        "one running run per job"
    );
    assert_eq!(count(b.store.as_ref(), RunState::Running).await, 4);
}

async fn claims_prefer_priority_then_run_after(b: &Backend) {
    let store = b.store.as_ref();
    let mut low_old = new_run("low-old", "k", t0() - secs(20));
    low_old.priority = priority::SCHEDULED;
    let mut low_new = new_run("low-new", "k", t0() - secs(10));
    low_new.priority = priority::SCHEDULED;
    let mut high = new_run("high", "k", t0() - secs(1));
    high.priority = priority::MANUAL;
    let mut future = new_run("future", "k", t0() + secs(60));
    future.priority = priority::MANUAL;
    let mut backfill = new_run("backfill", "k", t0() - secs(3600));
    backfill.priority = priority::MISFIRE;
    // Enqueue in an order unrelated to the expected claim order.
    for run in [low_new, future, backfill, low_old, high] {
        insert(store, run).await;
    }
    let mut order = Vec::new();
    while let Some(run) = claim(store, "w", t0()).await {
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.attempt, 1);
        assert_eq!(run.started_at, Some(t0()));
        assert_eq!(run.lease_expires_at, Some(t0() + secs(30)));
        order.push(run.job_name);
    }
    assert_eq!(order, ["high", "low-old", "low-new", "backfill"]);
    // Not before run_after: exactly at it, it is due.
    let run = claim(store, "w", t0() + secs(60)).await.unwrap();
    assert_eq!(run.job_name, "future");
}

async fn claims_never_run_one_job_twice_and_respect_kinds(b: &Backend) {
    let store = b.store.as_ref();
    let first = insert(store, new_run("solo", "a", t0() - secs(2))).await;
    let second = insert(store, new_run("solo", "b", t0() - secs(1))).await;
    let mut other = new_run("other", "a", t0());
    other.kind = "export".to_owned();
    let other = insert(store, other).await;

    let only_sync = ["sync".to_owned()];
    let got = store
        .claim(
            "w1",
            t0(),
            LEASE,
            ClaimFilter {
                kinds: Some(&only_sync),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, first.id);
    // `solo` is running: its second run waits even though it is due.
    assert!(
        store
            .claim(
                "w2",
                t0(),
                LEASE,
                ClaimFilter {
                    kinds: Some(&only_sync),
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .claim(
                "w2",
                t0(),
                LEASE,
                ClaimFilter {
                    kinds: Some(&[]),
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.has_active_run("solo").await.unwrap());
    let got_other = claim(store, "w2", t0()).await.unwrap();
    assert_eq!(got_other.id, other.id);
    assert!(claim(store, "w3", t0()).await.is_none());

    let progress = json!({"done": true});
    assert!(
        store
            .finish(first.id, "w1", Transition::Complete { progress }, t0())
            .await
            .unwrap()
    );
    let got = claim(store, "w3", t0()).await.unwrap();
    assert_eq!(got.id, second.id);
    assert!(store.has_active_run("solo").await.unwrap());
    assert!(!store.has_active_run("nobody").await.unwrap());
}

async fn heartbeat_and_finish_are_fenced_after_a_rescue(b: &Backend) {
    let store = b.store.as_ref();
    let run = insert(store, new_run("fenced", "k", t0())).await;
    claim(store, "zombie", t0()).await.unwrap();
    assert!(
        !store
            .heartbeat(run.id, "stranger", t0(), LEASE)
            .await
            .unwrap()
    );
    assert!(
        store
            .heartbeat(run.id, "zombie", t0() + secs(10), LEASE)
            .await
            .unwrap()
    );
    let held = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(held.lease_expires_at, Some(t0() + secs(40)));
    // Not yet expired: nothing to rescue.
    assert_eq!(store.rescue_expired(t0() + secs(39)).await.unwrap(), 0);
    let rescue_at = t0() + secs(41);
    assert_eq!(store.rescue_expired(rescue_at).await.unwrap(), 1);
    let rescued = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(rescued.state, RunState::Retrying);
    assert_eq!(rescued.run_after, rescue_at);
    assert_eq!(rescued.rescues, 1);
    assert_eq!(rescued.attempt, 1);
    assert_eq!(
        rescued.last_error.as_deref(),
        Some("lease expired (worker lost)")
    );
    assert_eq!(rescued.lease_owner, None);
    assert_eq!(rescued.lease_expires_at, None);
    assert_eq!(rescued.finished_at, None);

    // The zombie can no longer touch the run.
    assert!(
        !store
            .heartbeat(run.id, "zombie", rescue_at, LEASE)
            .await
            .unwrap()
    );
    let done = Transition::Complete {
        progress: json!({"zombie": true}),
    };
    assert!(
        !store
            .finish(run.id, "zombie", done.clone(), rescue_at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_progress(run.id, "zombie", json!({"n": 1}))
            .await
            .unwrap()
    );

    // Another worker picks it up; the zombie still cannot finish it.
    let again = claim(store, "rescuer", rescue_at).await.unwrap();
    assert_eq!(again.id, run.id);
    assert_eq!(again.attempt, 2);
    assert!(
        !store
            .finish(run.id, "zombie", done.clone(), rescue_at)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_progress(run.id, "rescuer", json!({"n": 2}))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_run(run.id).await.unwrap().unwrap().progress,
        json!({"n": 2})
    );
    assert!(
        store
            .finish(run.id, "rescuer", done.clone(), rescue_at)
            .await
            .unwrap()
    );
    // Finished: fenced for everyone, its owner included.
    assert!(
        !store
            .finish(run.id, "rescuer", done, rescue_at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .heartbeat(run.id, "rescuer", rescue_at, LEASE)
            .await
            .unwrap()
    );
}

async fn every_transition_lands_where_it_should(b: &Backend) {
    let store = b.store.as_ref();
    let later = t0() + secs(300);
    let end = t0() + secs(5);
    let cases: Vec<(Transition, RunState)> = vec![
        (
            Transition::Complete {
                progress: json!({"items": 42}),
            },
            RunState::Completed,
        ),
        (
            Transition::Retry {
                run_after: later,
                error: "HTTP 503".into(),
            },
            RunState::Retrying,
        ),
        (
            Transition::Snooze {
                run_after: later,
                note: "token paused".into(),
            },
            RunState::Queued,
        ),
        (
            Transition::Fail {
                error: "HTTP 400".into(),
            },
            RunState::Failed,
        ),
        (
            Transition::Dead {
                error: "out of attempts".into(),
            },
            RunState::Dead,
        ),
        (
            Transition::NeedsReauth {
                error: "HTTP 401".into(),
            },
            RunState::NeedsReauth,
        ),
        (Transition::Release, RunState::Queued),
        (
            Transition::Cancel {
                note: "operator".into(),
            },
            RunState::Cancelled,
        ),
    ];
    for (index, (transition, expected)) in cases.into_iter().enumerate() {
        let job = format!("t{index}");
        let run = insert(store, new_run(&job, "k", t0())).await;
        let claimed = store
            .claim("w", t0(), LEASE, ClaimFilter::default())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{transition:?}: nothing to claim"));
        assert_eq!(claimed.id, run.id);
        assert!(
            store
                .set_progress(run.id, "w", json!({"partial": 1}))
                .await
                .unwrap()
        );
        assert!(
            store
                .finish(run.id, "w", transition.clone(), end)
                .await
                .unwrap()
        );
        let got = store.get_run(run.id).await.unwrap().unwrap();
        let what = format!("{transition:?}");
        assert_eq!(got.state, expected, "{what}");
        assert_eq!(got.lease_owner, None, "{what}");
        assert_eq!(got.lease_expires_at, None, "{what}");
        match &transition {
            Transition::Complete { progress } => {
                assert_eq!(got.progress, *progress);
                assert_eq!(got.attempt, 1);
                assert_eq!(got.finished_at, Some(end));
            }
            Transition::Retry { run_after, error } => {
                assert_eq!(got.run_after, *run_after);
                assert_eq!(got.last_error.as_ref(), Some(error));
                assert_eq!(got.attempt, 1, "a retry uses up the attempt");
                assert_eq!(got.finished_at, None);
                assert!(
                    claim(store, "w", later - secs(1)).await.is_none(),
                    "not before run_after"
                );
                assert_eq!(claim(store, "w", later).await.unwrap().attempt, 2);
            }
            Transition::Snooze { run_after, note } => {
                assert_eq!(got.run_after, *run_after);
                assert_eq!(got.last_error.as_ref(), Some(note));
                assert_eq!(got.attempt, 0, "a snooze gives the attempt back");
                assert_eq!(got.finished_at, None);
                assert!(
                    claim(store, "w", later - secs(1)).await.is_none(),
                    "not before run_after"
                );
                assert_eq!(claim(store, "w", later).await.unwrap().attempt, 1);
            }
            Transition::Release => {
                assert_eq!(got.attempt, 0, "a release gives the attempt back");
                assert_eq!(got.finished_at, None);
                assert_eq!(got.progress, json!({"partial": 1}));
                let again = claim(store, "w2", end).await.unwrap();
                assert_eq!((again.id, again.attempt), (run.id, 1));
            }
            Transition::Fail { error }
            | Transition::Dead { error }
            | Transition::NeedsReauth { error }
            | Transition::Cancel { note: error } => {
                assert_eq!(got.last_error.as_ref(), Some(error), "{what}");
                assert_eq!(got.finished_at, Some(end), "{what}");
                assert_eq!(got.attempt, 1, "{what}");
            }
        }
        // Whatever happened, the run is no longer held: nothing else of this job is claimable
        // at `end` except what the case itself re-claimed above.
        let _ = store
            .finish(
                run.id,
                "w",
                Transition::Cancel {
                    note: "cleanup".into(),
                },
                end,
            )
            .await;
        let _ = store
            .finish(
                run.id,
                "w2",
                Transition::Cancel {
                    note: "cleanup".into(),
                },
                end,
            )
            .await;
    }
}

async fn rescue_kills_runs_without_attempts_left(b: &Backend) {
    let store = b.store.as_ref();
    let mut last_try = new_run("fragile", "k", t0());
    last_try.max_attempts = 1;
    let last_try = insert(store, last_try).await;
    let spare = insert(store, new_run("sturdy", "k", t0())).await;
    claim(store, "w", t0()).await.unwrap();
    claim(store, "w", t0()).await.unwrap();
    let at = t0() + secs(60);
    assert_eq!(store.rescue_expired(at).await.unwrap(), 2);
    let dead = store.get_run(last_try.id).await.unwrap().unwrap();
    assert_eq!(dead.state, RunState::Dead);
    assert_eq!(dead.finished_at, Some(at));
    assert_eq!(dead.rescues, 1);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("lease expired (worker lost)")
    );
    assert_eq!(dead.lease_owner, None);
    let retrying = store.get_run(spare.id).await.unwrap().unwrap();
    assert_eq!(retrying.state, RunState::Retrying);
    assert_eq!(retrying.run_after, at);
    // Only `sturdy` can be claimed again, and a second rescue finds nothing.
    assert_eq!(claim(store, "w", at).await.unwrap().id, spare.id);
    assert!(claim(store, "w", at).await.is_none());
    assert_eq!(store.rescue_expired(at).await.unwrap(), 0);
}

/// A daemon holding the database alone rescues its predecessor's runs at once, leases or not.
async fn rescue_running_takes_every_running_run_back(b: &Backend) {
    let store = b.store.as_ref();
    let held = insert(store, new_run("held", "k", t0())).await;
    let waiting = insert(store, new_run("waiting", "k", t0() + secs(600))).await;
    claim(store, "dead-daemon", t0()).await.unwrap();
    // Its lease has not expired: the ordinary rescue leaves it alone.
    let now = t0() + secs(5);
    assert_eq!(store.rescue_expired(now).await.unwrap(), 0);
    assert_eq!(store.rescue_running(now).await.unwrap(), 1);
    let rescued = store.get_run(held.id).await.unwrap().unwrap();
    assert_eq!(rescued.state, RunState::Retrying);
    assert_eq!(rescued.run_after, now);
    assert_eq!(rescued.lease_owner, None);
    assert_eq!(rescued.rescues, 1);
    assert!(
        rescued
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("rescued at restart")
    );
    // Queued runs are untouched, and nothing is left to rescue.
    let queued = store.get_run(waiting.id).await.unwrap().unwrap();
    assert_eq!(queued.state, RunState::Queued);
    assert_eq!(store.rescue_running(now).await.unwrap(), 0);
    assert_eq!(claim(store, "new-daemon", now).await.unwrap().id, held.id);
}

async fn leader_lease_contention_and_expiry(b: &Backend) {
    let store = b.store.as_ref();
    let ttl = Duration::from_secs(15);
    assert!(
        store
            .acquire_lease("scheduler", "a", t0(), ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_lease("scheduler", "b", t0() + secs(5), ttl)
            .await
            .unwrap()
    );
    assert!(
        store
            .acquire_lease("scheduler", "a", t0() + secs(10), ttl)
            .await
            .unwrap(),
        "renew"
    );
    // The renewal moved the expiry to +25 s: b still loses at +20 s, wins at +25 s.
    assert!(
        !store
            .acquire_lease("scheduler", "b", t0() + secs(20), ttl)
            .await
            .unwrap()
    );
    assert!(
        store
            .acquire_lease("scheduler", "b", t0() + secs(25), ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_lease("scheduler", "a", t0() + secs(26), ttl)
            .await
            .unwrap()
    );
    // Releasing someone else's lease does nothing; releasing one's own frees it at once.
    store.release_lease("scheduler", "a").await.unwrap();
    assert!(
        !store
            .acquire_lease("scheduler", "a", t0() + secs(27), ttl)
            .await
            .unwrap()
    );
    store.release_lease("scheduler", "b").await.unwrap();
    assert!(
        store
            .acquire_lease("scheduler", "a", t0() + secs(28), ttl)
            .await
            .unwrap()
    );
    // Leases are independent by name.
    assert!(
        store
            .acquire_lease("other", "b", t0() + secs(28), ttl)
            .await
            .unwrap()
    );

    // Eight replicas race for a fresh lease: exactly one leads.
    let mut tasks = tokio::task::JoinSet::new();
    for replica in 0..8 {
        let store = Arc::clone(&b.store);
        tasks.spawn(async move {
            store
                .acquire_lease("contended", &format!("replica-{replica}"), t0(), ttl)
                .await
                .unwrap()
        });
    }
    let leaders = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|led| *led)
        .count();
    assert_eq!(leaders, 1);
}

async fn claims_leave_excluded_jobs_alone(b: &Backend) {
    let store = b.store.as_ref();
    let held_elsewhere = insert(store, new_run("held", "a", t0() - secs(5))).await;
    let ours = insert(store, new_run("ours", "a", t0())).await;
    let excluded = ["held".to_owned()];
    let filter = ClaimFilter {
        excluded_jobs: &excluded,
        ..ClaimFilter::default()
    };
    let got = store
        .claim("w", t0(), LEASE, filter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, ours.id, "the older run is of an excluded job");
    assert!(
        store
            .claim("w", t0(), LEASE, filter)
            .await
            .unwrap()
            .is_none()
    );
    let got = claim(store, "w2", t0()).await.unwrap();
    assert_eq!(got.id, held_elsewhere.id, "claimable without the exclusion");
}

async fn handed_over_leases_are_free_and_tell_their_last_use(b: &Backend) {
    let store = b.store.as_ref();
    let ttl = Duration::from_secs(30);
    assert_eq!(store.get_lease("credential:sa").await.unwrap(), None);
    assert!(
        store
            .acquire_lease("credential:sa", "a", t0(), ttl)
            .await
            .unwrap()
    );
    let held = store.get_lease("credential:sa").await.unwrap().unwrap();
    assert_eq!(
        (held.owner.as_str(), held.expires_at),
        ("a", t0() + secs(30))
    );
    // Someone else's hand-over changes nothing.
    store
        .hand_over_lease("credential:sa", "b", t0())
        .await
        .unwrap();
    assert_eq!(
        store.get_lease("credential:sa").await.unwrap().unwrap(),
        held
    );
    // The holder hands it over, last used 4 s before now: free at once, the use recorded.
    store
        .hand_over_lease("credential:sa", "a", t0() + secs(6))
        .await
        .unwrap();
    let released = store.get_lease("credential:sa").await.unwrap().unwrap();
    assert_eq!(released.owner, "a");
    assert_eq!(released.expires_at, t0() + secs(6));
    assert!(
        store
            .acquire_lease("credential:sa", "b", t0() + secs(10), ttl)
            .await
            .unwrap()
    );
    // A last use after the expiry never extends the lease.
    store
        .hand_over_lease("credential:sa", "b", t0() + secs(999))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_lease("credential:sa")
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        t0() + secs(40)
    );
}

async fn replicas_announce_themselves_and_expire(b: &Backend) {
    let store = b.store.as_ref();
    let replica = |owner: &str, job_set: &str, seen: i64| ReplicaRow {
        owner: owner.to_owned(),
        job_set: job_set.to_owned(),
        jobs: 3,
        version: "0.1.0".to_owned(),
        started_at: t0(),
        seen_at: t0() + secs(seen),
        expires_at: t0() + secs(seen + 15),
        job_set_since: t0(),
    };
    store
        .announce_replica(&replica("a", "v1", 0))
        .await
        .unwrap();
    store
        .announce_replica(&replica("b", "v1", 0))
        .await
        .unwrap();
    store
        .announce_replica(&replica("b", "v2", 10))
        .await
        .unwrap();
    let live = store.live_replicas(t0() + secs(5)).await.unwrap();
    assert_eq!(live, vec![replica("a", "v1", 0), replica("b", "v2", 10)]);
    // a's announcement has expired by t0 + 15.
    let live = store.live_replicas(t0() + secs(15)).await.unwrap();
    assert_eq!(live, vec![replica("b", "v2", 10)]);
    store.retire_replica("b", t0()).await.unwrap();
    assert_eq!(
        store.live_replicas(t0()).await.unwrap(),
        vec![replica("a", "v1", 0)]
    );
    // Expired announcements are swept by any retirement.
    store
        .retire_replica("nobody", t0() + secs(16))
        .await
        .unwrap();
    assert!(
        store
            .live_replicas(t0() - secs(100))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn checkpoints_are_fenced_by_the_run_lease(b: &Backend) {
    let store = b.store.as_ref();
    assert_eq!(store.get_checkpoint("sync", "cursor").await.unwrap(), None);
    let run = insert(store, new_run("sync", "k", t0())).await;
    // Not claimed yet: nobody holds it.
    assert!(
        !store
            .put_checkpoint(run.id, "w", "sync", "cursor", json!("c0"), t0())
            .await
            .unwrap()
    );
    claim(store, "w", t0()).await.unwrap();
    assert!(
        store
            .put_checkpoint(
                run.id,
                "w",
                "sync",
                "cursor",
                json!({"sync": "s1", "n": 1}),
                t0()
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .put_checkpoint(
                run.id,
                "w",
                "sync",
                "cursor",
                json!({"sync": "s2", "n": 2}),
                t0()
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_checkpoint(run.id, "intruder", "sync", "cursor", json!("x"), t0())
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_checkpoint("sync", "cursor").await.unwrap(),
        Some(json!({"sync": "s2", "n": 2}))
    );
    assert_eq!(store.get_checkpoint("sync", "other").await.unwrap(), None);
    // After a rescue the old holder cannot move the checkpoint.
    store.rescue_expired(t0() + secs(31)).await.unwrap();
    assert!(
        !store
            .put_checkpoint(
                run.id,
                "w",
                "sync",
                "cursor",
                json!("zombie"),
                t0() + secs(31)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_checkpoint("sync", "cursor").await.unwrap(),
        Some(json!({"sync": "s2", "n": 2}))
    );
}

async fn prune_deletes_only_old_terminal_runs(b: &Backend) {
    let store = b.store.as_ref();
    let done = insert(store, new_run("a", "done", t0())).await;
    let failed = insert(store, new_run("b", "failed", t0())).await;
    let recent = insert(store, new_run("c", "recent", t0())).await;
    let mut skipped = new_run("d", "skipped", t0());
    skipped.state = RunState::Skipped;
    let skipped = insert(store, skipped).await;
    let queued = insert(store, new_run("e", "queued", t0() + secs(1))).await;
    let running = insert(store, new_run("f", "running", t0() - secs(1))).await;

    let claimed: Vec<Uuid> = [
        claim(store, "w", t0()).await.unwrap().id,
        claim(store, "w", t0()).await.unwrap().id,
        claim(store, "w", t0()).await.unwrap().id,
        claim(store, "w", t0()).await.unwrap().id,
    ]
    .into();
    let expected = HashSet::from([done.id, failed.id, recent.id, running.id]);
    assert_eq!(claimed.iter().copied().collect::<HashSet<_>>(), expected);
    let complete = Transition::Complete {
        progress: json!({}),
    };
    assert!(
        store
            .finish(done.id, "w", complete.clone(), t0())
            .await
            .unwrap()
    );
    let fail = Transition::Fail {
        error: "bad".into(),
    };
    assert!(
        store
            .finish(failed.id, "w", fail, t0() + secs(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(recent.id, "w", complete, t0() + secs(100))
            .await
            .unwrap()
    );

    let cutoff = t0() + secs(50);
    assert_eq!(store.prune_runs(cutoff).await.unwrap(), 3);
    let left: HashSet<Uuid> = store
        .list_runs(&RunFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, HashSet::from([recent.id, queued.id, running.id]));
    assert!(store.get_run(skipped.id).await.unwrap().is_none());
    assert_eq!(store.prune_runs(cutoff).await.unwrap(), 0);
    // Even far in the future, active runs stay.
    assert_eq!(store.prune_runs(t0() + secs(86_400)).await.unwrap(), 1);
    assert_eq!(
        store.list_runs(&RunFilter::default()).await.unwrap().len(),
        2
    );
}

async fn job_summaries_report_each_jobs_newest_run(b: &Backend) {
    let store = b.store.as_ref();
    let older = insert(store, new_run("alpha", "1", t0() - secs(120))).await;
    claim(store, "w", t0()).await.unwrap();
    let complete = Transition::Complete {
        progress: json!({}),
    };
    assert!(
        store
            .finish(older.id, "w", complete, t0() + secs(1))
            .await
            .unwrap()
    );
    let newer = {
        let run = new_run("alpha", "2", t0());
        match store.enqueue(run, t0() + secs(2)).await.unwrap() {
            Enqueued::Inserted(run) => *run,
            Enqueued::Duplicate => panic!("duplicate"),
        }
    };
    claim(store, "w", t0() + secs(2)).await.unwrap();
    let fail = Transition::Fail { error: "no".into() };
    assert!(
        store
            .finish(newer.id, "w", fail, t0() + secs(3))
            .await
            .unwrap()
    );
    insert(store, new_run("beta", "1", t0() + secs(600))).await;

    let summaries = store.job_summaries().await.unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].job_name, "alpha");
    assert_eq!(summaries[0].last_state, Some(RunState::Failed));
    assert_eq!(summaries[0].last_finished_at, Some(t0() + secs(3)));
    assert_eq!(summaries[0].last_success_at, Some(t0() + secs(1)));
    assert_eq!(summaries[1].job_name, "beta");
    assert_eq!(summaries[1].last_state, Some(RunState::Queued));
    assert_eq!(summaries[1].last_finished_at, None);
    assert_eq!(summaries[1].last_success_at, None);
}

async fn count_by_state_lists_every_state(b: &Backend) {
    let store = b.store.as_ref();
    for i in 0..3 {
        insert(store, new_run(&format!("q{i}"), "k", t0() + secs(60))).await;
    }
    let mut skipped = new_run("s", "k", t0());
    skipped.state = RunState::Skipped;
    insert(store, skipped).await;
    insert(store, new_run("r", "k", t0())).await;
    claim(store, "w", t0()).await.unwrap();
    let counts = store.count_by_state().await.unwrap();
    let states: Vec<RunState> = counts.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        states,
        RunState::ALL.to_vec(),
        "every state, in ALL's order"
    );
    for (state, n) in counts {
        let expected = match state {
            RunState::Queued => 3,
            RunState::Running | RunState::Skipped => 1,
            _ => 0,
        };
        assert_eq!(n, expected, "{state}");
    }
}

async fn list_runs_filters_and_orders_newest_first(b: &Backend) {
    let store = b.store.as_ref();
    for i in 0..5 {
        let run = new_run(
            if i % 2 == 0 { "even" } else { "odd" },
            &i.to_string(),
            t0(),
        );
        store.enqueue(run, t0() + secs(i)).await.unwrap();
    }
    claim(store, "w", t0() + secs(10)).await.unwrap(); // even/0 (oldest of the best)
    let all = store.list_runs(&RunFilter::default()).await.unwrap();
    let keys: Vec<&str> = all.iter().map(|r| r.unique_key.as_str()).collect();
    assert_eq!(keys, ["4", "3", "2", "1", "0"]);
    let even = store
        .list_runs(&RunFilter {
            job_name: Some("even".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        even.iter()
            .map(|r| r.unique_key.as_str())
            .collect::<Vec<_>>(),
        ["4", "2", "0"]
    );
    let running = store
        .list_runs(&RunFilter {
            states: vec![RunState::Running],
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].unique_key, "0");
    let limited = store
        .list_runs(&RunFilter {
            job_name: Some("even".into()),
            states: vec![RunState::Queued, RunState::Retrying],
            limit: 1,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        limited
            .iter()
            .map(|r| r.unique_key.as_str())
            .collect::<Vec<_>>(),
        ["4"]
    );
    // Created in [t0 + 1 s, t0 + 3 s): runs 1 and 2.
    let window = store
        .list_runs(&RunFilter {
            created_from: Some(t0() + secs(1)),
            created_before: Some(t0() + secs(3)),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        window
            .iter()
            .map(|r| r.unique_key.as_str())
            .collect::<Vec<_>>(),
        ["2", "1"]
    );
}

async fn schedules_list_and_delete(b: &Backend) {
    let store = b.store.as_ref();
    for name in ["zeta", "alpha"] {
        let row = ScheduleRow {
            job_name: name.to_owned(),
            next_fire_at: t0(),
            last_fire_at: None,
            definition: format!("def-{name}"),
        };
        assert!(store.fire(&row, None, vec![], t0()).await.unwrap());
    }
    let names: Vec<String> = store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.job_name)
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
    store.delete_schedule("zeta").await.unwrap();
    store.delete_schedule("never-existed").await.unwrap();
    assert_eq!(store.get_schedule("zeta").await.unwrap(), None);
    assert_eq!(store.list_schedules().await.unwrap().len(), 1);
    store.ping().await.unwrap();
    // Migrating again is a no-op.
    store.migrate().await.unwrap();
    assert_eq!(store.list_schedules().await.unwrap().len(), 1);
}

async fn corrupt_rows_are_errors_not_panics(b: &Backend) {
    let store = b.store.as_ref();
    let run = insert(store, new_run("job", "k", t0())).await;
    b.force_bogus_state().await;
    let is_corrupt = |error: StoreError| {
        assert!(
            matches!(error, StoreError::Corrupt { table: "runs", .. }),
            "expected Corrupt, got {error:?}"
        );
        assert!(error.to_string().contains("exploded"), "{error}");
    };
    is_corrupt(store.get_run(run.id).await.unwrap_err());
    is_corrupt(store.list_runs(&RunFilter::default()).await.unwrap_err());
    is_corrupt(store.count_by_state().await.unwrap_err());
    is_corrupt(store.job_summaries().await.unwrap_err());
    // The bogus run is neither claimable nor in the way.
    assert!(claim(store, "w", t0()).await.is_none());
}

async fn paused_jobs_are_shared_and_paused_once(b: &Backend) {
    let store = b.store.as_ref();
    assert!(store.job_controls().await.unwrap().is_empty());
    assert!(store.pause_job("zeta", "status page", t0()).await.unwrap());
    assert!(
        store
            .pause_job("alpha", "bearer token", t0() + secs(1))
            .await
            .unwrap()
    );
    // A second pause changes nothing, not even who paused it.
    assert!(
        !store
            .pause_job("zeta", "someone else", t0() + secs(2))
            .await
            .unwrap()
    );
    let controls = store.job_controls().await.unwrap();
    assert_eq!(
        controls,
        vec![
            store::JobControl {
                job_name: "alpha".into(),
                paused_at: t0() + secs(1),
                paused_by: "bearer token".into(),
            },
            store::JobControl {
                job_name: "zeta".into(),
                paused_at: t0(),
                paused_by: "status page".into(),
            },
        ]
    );
    assert!(store.resume_job("zeta").await.unwrap());
    assert!(!store.resume_job("zeta").await.unwrap());
    assert!(!store.resume_job("never-paused").await.unwrap());
    let names: Vec<String> = store
        .job_controls()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.job_name)
        .collect();
    assert_eq!(names, ["alpha"]);
    // Nobody pauses anonymously.
    assert!(store.pause_job("beta", "", t0()).await.is_err());
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = super::Backend::sqlite().await;
                    super::$name(&backend).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres().await else { return };
                    super::$name(&backend).await;
                }
            )*
        }
    };
}

conformance!(
    enqueue_round_trips_every_field_and_rejects_duplicates,
    fire_advances_the_schedule_and_enqueues_once,
    concurrent_fires_and_enqueues_add_one_run,
    a_failed_fire_changes_nothing_and_spares_concurrent_writes,
    check_constraints_reject_bogus_values,
    concurrent_claims_hand_out_each_run_once,
    concurrent_claims_run_one_run_per_job,
    claims_prefer_priority_then_run_after,
    claims_never_run_one_job_twice_and_respect_kinds,
    heartbeat_and_finish_are_fenced_after_a_rescue,
    every_transition_lands_where_it_should,
    rescue_kills_runs_without_attempts_left,
    rescue_running_takes_every_running_run_back,
    leader_lease_contention_and_expiry,
    claims_leave_excluded_jobs_alone,
    handed_over_leases_are_free_and_tell_their_last_use,
    replicas_announce_themselves_and_expire,
    checkpoints_are_fenced_by_the_run_lease,
    prune_deletes_only_old_terminal_runs,
    job_summaries_report_each_jobs_newest_run,
    count_by_state_lists_every_state,
    list_runs_filters_and_orders_newest_first,
    schedules_list_and_delete,
    corrupt_rows_are_errors_not_panics,
    paused_jobs_are_shared_and_paused_once,
);

// ---------------------------------------------------------------------------------------------
// Opening: not about behaviour shared by the stores.

#[cfg(unix)]
#[tokio::test]
async fn sqlite_file_is_created_private_with_its_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("deeper").join("aw.db");
    let store = store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "database file mode {mode:o}");
    // The data survives reopening.
    insert(store.as_ref(), new_run("persist", "k", t0())).await;
    drop(store);
    let reopened = store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert_eq!(count(reopened.as_ref(), RunState::Queued).await, 1);
}

#[tokio::test]
async fn in_memory_sqlite_works_for_unit_tests() {
    let store = store::open("sqlite::memory:").await.unwrap();
    insert(store.as_ref(), new_run("mem", "k", t0())).await;
    assert_eq!(
        claim(store.as_ref(), "w", t0()).await.unwrap().job_name,
        "mem"
    );
}

#[tokio::test]
async fn other_urls_are_unsupported() {
    for url in ["mysql://localhost/db", "db.sqlite", ""] {
        let error = store::open(url).await.unwrap_err();
        assert!(
            matches!(error, StoreError::UnsupportedUrl(_)),
            "{url}: {error:?}"
        );
    }
}
