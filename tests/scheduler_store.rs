//! The scheduler against a real store: fires missed while the daemon was down are handled by the
//! misfire policy after a restart (a new scheduler on the same database file), and several
//! schedulers ticking at once enqueue each fire exactly once, on SQLite and PostgreSQL.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use asana_worker::clock::{Clock, ManualClock, SharedClock};
use asana_worker::config::jobs::ValidationContext;
use asana_worker::jobs::{Job as JobSpec, Kind, parse_job};
use asana_worker::scheduler::{JobSet, fire_key};

type Scheduler = asana_worker::scheduler::Scheduler<Kind>;
use asana_worker::store::{self, RunFilter, RunState, Store, Trigger};
use chrono::{TimeZone, Utc};
use support::pg::TestDatabase;
use tokio::sync::watch;

fn job(name: &str, schedule: &str, extra: &str) -> JobSpec {
    job_timed(name, &format!("schedule = \"{schedule}\""), extra)
}

/// A job whose timing line is `timing` (`schedule = …` or `every = …`).
fn job_timed(name: &str, timing: &str, extra: &str) -> JobSpec {
    let source = format!(
        "name = \"{name}\"\nkind = \"credential_check\"\n{timing}\ncredential = \"sa\"\n{extra}"
    );
    let context = ValidationContext {
        credentials: ["sa".to_string()].into_iter().collect(),
        ..ValidationContext::default()
    };
    parse_job(Path::new("jobs/t.toml"), &source, &context).expect("valid job")
}

fn scheduler(
    store: &Arc<dyn Store>,
    clock: &ManualClock,
    jobs: Vec<JobSpec>,
    owner: &str,
) -> Scheduler {
    // A receiver keeps the last value after its sender is gone, which is all a fixed job set needs.
    let (_tx, rx) = watch::channel::<JobSet<Kind>>(Arc::new(jobs));
    let clock: SharedClock = Arc::new(clock.clone());
    Scheduler::new(
        store.clone(),
        clock,
        rx,
        owner.into(),
        Duration::from_millis(10),
        Duration::from_secs(30),
    )
}

/// A clock a fixed offset away from a shared manual clock.
#[derive(Debug)]
struct SkewedClock {
    base: ManualClock,
    skew: chrono::Duration,
}

impl Clock for SkewedClock {
    fn now(&self) -> chrono::DateTime<Utc> {
        self.base.now() + self.skew
    }
}

async fn all_runs(store: &Arc<dyn Store>, job: &str) -> Vec<asana_worker::store::Run> {
    store
        .list_runs(&RunFilter {
            job_name: Some(job.into()),
            states: Vec::new(),
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .unwrap()
}

async fn misfire_policies_apply_after_a_restart(store: Arc<dyn Store>) {
    let start = Utc.with_ymd_and_hms(2026, 5, 1, 9, 30, 0).unwrap();
    let clock = ManualClock::new(start);
    let jobs = vec![
        job("skip", "0 * * * *", "misfire = \"skip\""),
        job("once", "0 * * * *", "misfire = \"once\""),
        job(
            "all",
            "0 * * * *",
            "misfire = \"all\"\nmisfire_max = 2\noverlap = \"queue\"",
        ),
    ];
    // First life: the schedules are created; the next fire is 10:00.
    let first = scheduler(&store, &clock, jobs.clone(), "first");
    first.tick().await.unwrap();
    for job in &jobs {
        let row = store.get_schedule(&job.name).await.unwrap().unwrap();
        assert_eq!(
            row.next_fire_at,
            Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap()
        );
        assert!(all_runs(&store, &job.name).await.is_empty());
    }
    drop(first);

    // Down until 14:20: fires at 10, 11, 12, 13 and 14 were missed. A new scheduler (another
    // process) takes over once the old leader lease has expired.
    clock.set(Utc.with_ymd_and_hms(2026, 5, 1, 14, 20, 0).unwrap());
    let second = scheduler(&store, &clock, jobs.clone(), "second");
    let report = second.tick().await.unwrap();
    assert!(report.leader);

    let by_state = |runs: &[asana_worker::store::Run], state: RunState| {
        let mut keys: Vec<String> = runs
            .iter()
            .filter(|r| r.state == state)
            .map(|r| r.unique_key.clone())
            .collect();
        keys.sort();
        keys
    };
    let hour = |h: u32| fire_key(Utc.with_ymd_and_hms(2026, 5, 1, h, 0, 0).unwrap());

    let skip = all_runs(&store, "skip").await;
    assert_eq!(by_state(&skip, RunState::Skipped).len(), 5);
    assert!(by_state(&skip, RunState::Queued).is_empty());

    let once = all_runs(&store, "once").await;
    assert_eq!(by_state(&once, RunState::Queued), vec![hour(14)]);
    assert_eq!(by_state(&once, RunState::Skipped).len(), 4);
    assert!(once.iter().all(|r| r.trigger == Trigger::Misfire));

    let all = all_runs(&store, "all").await;
    assert_eq!(by_state(&all, RunState::Queued), vec![hour(13), hour(14)]);
    assert_eq!(by_state(&all, RunState::Skipped).len(), 3);

    for job in &jobs {
        let row = store.get_schedule(&job.name).await.unwrap().unwrap();
        assert_eq!(
            row.next_fire_at,
            Utc.with_ymd_and_hms(2026, 5, 1, 15, 0, 0).unwrap()
        );
    }
    // Ticking again changes nothing.
    let again = second.tick().await.unwrap();
    assert_eq!(
        (again.enqueued, again.misfires_run, again.skipped),
        (0, 0, 0)
    );
}

async fn concurrent_schedulers_enqueue_each_fire_once(store: Arc<dyn Store>) {
    let start = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 30).unwrap();
    let clock = ManualClock::new(start);
    let jobs = vec![
        job("minutely-a", "* * * * *", "overlap = \"queue\""),
        job("minutely-b", "* * * * *", "overlap = \"queue\""),
    ];
    // Four schedulers whose clocks disagree by a few milliseconds (replicas on different
    // hosts) and whose leader leases last one millisecond: in every round each of them finds
    // the lease of the previous one expired, so all four lead at once and race on every fire.
    let schedulers: Vec<Arc<Scheduler>> = (0..4)
        .map(|i| {
            let (_tx, rx) = watch::channel::<JobSet<Kind>>(Arc::new(jobs.clone()));
            let skewed: SharedClock = Arc::new(SkewedClock {
                base: clock.clone(),
                skew: chrono::Duration::milliseconds(2 * i),
            });
            Arc::new(Scheduler::new(
                store.clone(),
                skewed,
                rx,
                format!("scheduler-{i}"),
                Duration::from_millis(10),
                Duration::from_millis(1),
            ))
        })
        .collect();
    let mut leaders = 0;
    let mut conflicts = 0;
    for _ in 0..30 {
        clock.advance(chrono::Duration::seconds(20));
        let ticks = schedulers.iter().map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.tick().await })
        });
        for result in futures::future::join_all(ticks).await {
            let report = result.unwrap().unwrap();
            leaders += usize::from(report.leader);
            conflicts += report.conflicts;
        }
    }
    assert!(
        leaders > 30,
        "schedulers should overlap as leaders ({leaders} leader ticks)"
    );
    println!("{leaders} leader ticks, {conflicts} lost compare-and-set races");
    let end = clock.now();
    for job in &jobs {
        let runs = all_runs(&store, &job.name).await;
        let mut keys: Vec<String> = runs.iter().map(|r| r.unique_key.clone()).collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), total, "a fire was enqueued twice");
        // One fire per minute after the first schedule was created (00:01 .. end).
        let expected =
            (end - Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap()).num_minutes() as usize;
        assert!(
            (expected - 1..=expected).contains(&total),
            "{} fires for {expected} minutes",
            total
        );
    }
}

/// The leader of two replicas dies without releasing its lease (SIGKILL): the other takes over
/// when the 30 s lease expires, and the fires of the gap are scheduled runs, not misfires.
async fn fires_during_a_failover_are_enqueued_not_missed(store: Arc<dyn Store>) {
    let start = Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap();
    let clock = ManualClock::new(start);
    let jobs = vec![job_timed(
        "often",
        "every = \"1s\"",
        "misfire = \"skip\"\noverlap = \"queue\"",
    )];
    let leader = scheduler(&store, &clock, jobs.clone(), "replica-a");
    let standby = scheduler(&store, &clock, jobs.clone(), "replica-b");
    assert!(leader.tick().await.unwrap().leader);
    assert!(!standby.tick().await.unwrap().leader);
    clock.advance(chrono::Duration::seconds(5));
    leader.tick().await.unwrap();
    let before = all_runs(&store, "often").await.len();
    assert_eq!(before, 5, "one run per second while the leader lives");
    // The leader is killed: it neither ticks nor releases its lease. The standby tries every
    // second and takes over once the lease has expired.
    drop(leader);
    let mut took_over = None;
    for second in 1..=40 {
        clock.advance(chrono::Duration::seconds(1));
        if standby.tick().await.unwrap().leader {
            took_over = Some(second);
            break;
        }
    }
    let took_over = took_over.expect("the standby takes over once the lease expires");
    assert!(
        took_over > 20,
        "not before the lease expired: {took_over} s"
    );
    let runs = all_runs(&store, "often").await;
    assert!(
        runs.iter().all(|r| r.state == RunState::Queued),
        "no fire of the handover was skipped: {:?}",
        runs.iter()
            .filter(|r| r.state != RunState::Queued)
            .map(|r| (&r.unique_key, &r.last_error))
            .collect::<Vec<_>>()
    );
    assert!(runs.iter().all(|r| r.trigger == Trigger::Schedule));
    assert_eq!(
        runs.len(),
        5 + took_over as usize,
        "one run for every second of the gap"
    );
}

#[tokio::test]
async fn sqlite_fires_during_a_failover_are_enqueued_not_missed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.sqlite").display());
    fires_during_a_failover_are_enqueued_not_missed(store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_fires_during_a_failover_are_enqueued_not_missed() {
    let Some(db) = TestDatabase::create("PostgreSQL scheduler failover test").await else {
        return;
    };
    fires_during_a_failover_are_enqueued_not_missed(store::open(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_misfire_policies_apply_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.sqlite").display());
    misfire_policies_apply_after_a_restart(store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_concurrent_schedulers_enqueue_each_fire_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.sqlite").display());
    concurrent_schedulers_enqueue_each_fire_once(store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_misfire_policies_apply_after_a_restart() {
    let Some(db) = TestDatabase::create("PostgreSQL scheduler misfire test").await else {
        return;
    };
    misfire_policies_apply_after_a_restart(store::open(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_concurrent_schedulers_enqueue_each_fire_once() {
    let Some(db) = TestDatabase::create("PostgreSQL concurrent scheduler test").await else {
        return;
    };
    concurrent_schedulers_enqueue_each_fire_once(store::open(&db.url).await.unwrap()).await;
}
