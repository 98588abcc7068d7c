//! The rate budget on tokio's paused clock: quota windows, the search bucket, concurrency slots,
//! cooldowns, fairness, priorities, cancellation, export slots.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use asana_worker::budget::{
    Budget, BudgetConfig, BudgetError, BudgetRegistry, Demand, JobKey, Priority, RequestClass, Tier,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn config(limit: u32) -> BudgetConfig {
    BudgetConfig {
        requests_per_minute: Some(limit),
        window_margin_secs: 0.0,
        ..BudgetConfig::new("test", Tier::Paid)
    }
}

fn window() -> Duration {
    Duration::from_secs(60)
}

fn read(job: &str) -> Demand {
    Demand::new(RequestClass::Read, Priority::Scheduled, JobKey::new(job))
}

/// Spawns `count` requests of `demand`, each holding its permit for `hold`, and returns the
/// grant instants in grant order with the job names.
async fn run_requests(
    budget: &Budget,
    jobs: &[(&str, Priority, usize)],
    hold: Duration,
) -> Vec<(Instant, String)> {
    let grants = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for (job, priority, count) in jobs {
        for _ in 0..*count {
            let budget = budget.clone();
            let grants = grants.clone();
            let demand = Demand::new(RequestClass::Read, *priority, JobKey::new(*job));
            let name = job.to_string();
            handles.push(tokio::spawn(async move {
                let permit = budget
                    .acquire(demand, &CancellationToken::new())
                    .await
                    .expect("granted");
                grants
                    .lock()
                    .unwrap()
                    .push((permit.sequence(), permit.granted_at(), name));
                tokio::time::sleep(hold).await;
                drop(permit);
            }));
            // Enqueue in a deterministic order.
            tokio::task::yield_now().await;
        }
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let mut grants = grants.lock().unwrap().clone();
    grants.sort_by_key(|(sequence, _, _)| *sequence);
    grants.into_iter().map(|(_, at, job)| (at, job)).collect()
}

#[tokio::test(start_paused = true)]
async fn quota_is_never_exceeded_in_any_window_and_is_used_fully() {
    let budget = Budget::new(config(10)).unwrap();
    let start = Instant::now();
    let grants = run_requests(&budget, &[("a", Priority::Scheduled, 35)], Duration::ZERO).await;
    let times: Vec<Instant> = grants.iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), 35);
    for i in 0..times.len() - 10 {
        assert!(
            times[i + 10] - times[i] >= window(),
            "requests {i} and {} are less than a window apart",
            i + 10
        );
    }
    // Full use: each batch of 10 starts the moment the previous batch leaves the window.
    assert_eq!(times[9], start);
    assert_eq!(times[10], start + window());
    assert_eq!(times[30], start + 3 * window());
    assert_eq!(budget.stats().peak_window, 10);
}

#[tokio::test(start_paused = true)]
async fn window_margin_and_time_scale_shape_the_window() {
    let budget = Budget::new(BudgetConfig {
        window_margin_secs: 1.0,
        time_scale: 60.0,
        ..config(2)
    })
    .unwrap();
    let start = Instant::now();
    let grants = run_requests(&budget, &[("a", Priority::Scheduled, 3)], Duration::ZERO).await;
    // (60 s + 1 s margin) / 60 = 1016.67 ms (tokio's timer rounds up to the millisecond).
    let waited = grants[2].0 - start;
    let expected = Duration::from_secs_f64(61.0 / 60.0);
    assert!(
        waited >= expected && waited <= expected + Duration::from_millis(1),
        "waited {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn search_has_its_own_bucket_and_does_not_block_reads() {
    let budget = Budget::new(BudgetConfig {
        search_per_minute: 3,
        ..config(100)
    })
    .unwrap();
    let start = Instant::now();
    let cancel = CancellationToken::new();
    let search = || Demand::new(RequestClass::Search, Priority::Scheduled, JobKey::new("s"));
    for _ in 0..3 {
        drop(budget.acquire(search(), &cancel).await.unwrap());
    }
    let waiting = {
        let budget = budget.clone();
        tokio::spawn(async move {
            let permit = budget
                .acquire(
                    Demand::new(RequestClass::Search, Priority::Scheduled, JobKey::new("s")),
                    &CancellationToken::new(),
                )
                .await
                .unwrap();
            permit.granted_at()
        })
    };
    tokio::task::yield_now().await;
    // A read from another job goes straight through while the search waits.
    let read_permit = budget.acquire(read("r"), &cancel).await.unwrap();
    assert_eq!(read_permit.granted_at(), start);
    drop(read_permit);
    assert_eq!(waiting.await.unwrap(), start + window());
}

#[tokio::test(start_paused = true)]
async fn read_and_write_slots_are_separate_and_held_for_the_request() {
    let budget = Budget::new(BudgetConfig {
        concurrent_reads: 2,
        concurrent_writes: 1,
        ..config(100)
    })
    .unwrap();
    let cancel = CancellationToken::new();
    let r1 = budget.acquire(read("a"), &cancel).await.unwrap();
    let _r2 = budget.acquire(read("a"), &cancel).await.unwrap();
    let write = Demand::new(RequestClass::Write, Priority::Scheduled, JobKey::new("a"));
    let w1 = budget.acquire(write.clone(), &cancel).await.unwrap();
    let third_read =
        tokio::time::timeout(Duration::from_secs(5), budget.acquire(read("b"), &cancel)).await;
    assert!(third_read.is_err(), "a third read must wait for a slot");
    let second_write = tokio::time::timeout(
        Duration::from_secs(5),
        budget.acquire(write.clone(), &cancel),
    )
    .await;
    assert!(second_write.is_err(), "a second write must wait for a slot");
    let waiter = {
        let budget = budget.clone();
        tokio::spawn(async move {
            budget
                .acquire(read("b"), &CancellationToken::new())
                .await
                .map(|p| p.granted_at())
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let released_at = Instant::now();
    drop(r1);
    assert_eq!(waiter.await.unwrap().unwrap(), released_at);
    drop(w1);
    let stats = budget.stats();
    assert_eq!(stats.peak_reads, 2);
    assert_eq!(stats.peak_writes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_every_job_on_the_token_for_exactly_retry_after() {
    let budget = Budget::new(config(100)).unwrap();
    let start = Instant::now();
    budget.cool_down(Duration::from_secs(30), false);
    assert_eq!(budget.cooldown_remaining(), Some(Duration::from_secs(30)));
    let grants = run_requests(
        &budget,
        &[
            ("hourly", Priority::Scheduled, 3),
            ("backfill", Priority::Backfill, 3),
            ("manual", Priority::Manual, 1),
        ],
        Duration::ZERO,
    )
    .await;
    assert_eq!(grants.len(), 7);
    for (at, job) in &grants {
        assert_eq!(
            *at,
            start + Duration::from_secs(30),
            "job {job} was not paused exactly"
        );
    }
    assert_eq!(budget.cooldown_remaining(), None);
}

#[tokio::test(start_paused = true)]
async fn a_request_counts_until_a_window_after_it_finished() {
    let budget = Budget::new(config(1)).unwrap();
    let start = Instant::now();
    let cancel = CancellationToken::new();
    let slow = budget.acquire(read("a"), &cancel).await.unwrap();
    // The response takes 20 s: the server may have counted the request at any instant in
    // between, so the next one waits until a window after the response.
    tokio::time::sleep(Duration::from_secs(20)).await;
    drop(slow);
    let next = budget.acquire(read("a"), &cancel).await.unwrap();
    assert_eq!(
        next.granted_at(),
        start + Duration::from_secs(20) + window()
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_divided_by_the_time_scale() {
    let budget = Budget::new(BudgetConfig {
        time_scale: 60.0,
        ..config(100)
    })
    .unwrap();
    let start = Instant::now();
    budget.cool_down(Duration::from_secs(30), false);
    let permit = budget
        .acquire(read("a"), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(permit.granted_at() - start, Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_small_job_is_not_starved_by_a_large_one() {
    let budget = Budget::new(config(10)).unwrap();
    let grants = run_requests(
        &budget,
        &[
            ("backfill-90d", Priority::Scheduled, 60),
            ("hourly", Priority::Scheduled, 5),
        ],
        Duration::ZERO,
    )
    .await;
    // The large job queued first and got the first window to itself (its 10 were granted before
    // the small job asked); from then on they alternate, so the small job is done within the
    // second window instead of after the sixth.
    let last_small = grants.iter().rposition(|(_, job)| job == "hourly").unwrap();
    assert!(
        last_small < 20,
        "the small job's last request was grant #{last_small}"
    );
    let start = grants[0].0;
    assert!(grants[last_small].0 - start <= window());
}

#[tokio::test(start_paused = true)]
async fn fairness_alternates_between_waiting_jobs() {
    let budget = Budget::new(config(2)).unwrap();
    let cancel = CancellationToken::new();
    // Fill the window so that everything below queues.
    drop(budget.acquire(read("x"), &cancel).await.unwrap());
    drop(budget.acquire(read("x"), &cancel).await.unwrap());
    let grants = run_requests(
        &budget,
        &[
            ("big", Priority::Scheduled, 6),
            ("small", Priority::Scheduled, 2),
        ],
        Duration::ZERO,
    )
    .await;
    let order: Vec<&str> = grants.iter().map(|(_, j)| j.as_str()).collect();
    assert_eq!(&order[..4], &["big", "small", "big", "small"]);
}

#[tokio::test(start_paused = true)]
async fn manual_runs_go_before_scheduled_work_before_backfill() {
    let budget = Budget::new(config(1)).unwrap();
    let cancel = CancellationToken::new();
    drop(budget.acquire(read("x"), &cancel).await.unwrap());
    let grants = run_requests(
        &budget,
        &[
            ("backfill", Priority::Backfill, 2),
            ("scheduled", Priority::Scheduled, 2),
            ("manual", Priority::Manual, 2),
        ],
        Duration::ZERO,
    )
    .await;
    let order: Vec<&str> = grants.iter().map(|(_, j)| j.as_str()).collect();
    assert_eq!(
        order,
        [
            "manual",
            "manual",
            "scheduled",
            "scheduled",
            "backfill",
            "backfill"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_leave_the_queue_and_spend_nothing() {
    let budget = Budget::new(config(1)).unwrap();
    let start = Instant::now();
    let cancel = CancellationToken::new();
    drop(budget.acquire(read("x"), &cancel).await.unwrap());
    let job_cancel = CancellationToken::new();
    let cancelled = {
        let budget = budget.clone();
        let job_cancel = job_cancel.clone();
        tokio::spawn(async move { budget.acquire(read("stopping"), &job_cancel).await })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(budget.waiting(), 1);
    job_cancel.cancel();
    assert_eq!(
        cancelled.await.unwrap().unwrap_err(),
        BudgetError::Cancelled
    );
    assert_eq!(budget.waiting(), 0);
    // A dropped future leaves the queue too.
    let dropped = tokio::time::timeout(
        Duration::from_secs(5),
        budget.acquire(read("gone"), &cancel),
    )
    .await;
    assert!(dropped.is_err());
    assert_eq!(budget.waiting(), 0);
    // The next request gets the slot the cancelled ones would have used.
    let next = budget.acquire(read("next"), &cancel).await.unwrap();
    assert_eq!(next.granted_at(), start + window());
    assert_eq!(budget.stats().granted, 2);
}

#[tokio::test(start_paused = true)]
async fn a_batch_counts_as_its_actions_and_is_not_starved() {
    let budget = Budget::new(config(10)).unwrap();
    let cancel = CancellationToken::new();
    let start = Instant::now();
    for _ in 0..5 {
        drop(budget.acquire(read("singles"), &cancel).await.unwrap());
    }
    let batch = {
        let budget = budget.clone();
        tokio::spawn(async move {
            budget
                .acquire(
                    Demand::new(
                        RequestClass::Write,
                        Priority::Scheduled,
                        JobKey::new("batch"),
                    )
                    .with_cost(10),
                    &CancellationToken::new(),
                )
                .await
                .unwrap()
                .granted_at()
        })
    };
    tokio::task::yield_now().await;
    let single = {
        let budget = budget.clone();
        tokio::spawn(async move {
            budget
                .acquire(read("singles"), &CancellationToken::new())
                .await
                .unwrap()
                .granted_at()
        })
    };
    let batch_at = batch.await.unwrap();
    let single_at = single.await.unwrap();
    // Five singles fit now, but the batch waiting ahead needs the whole window: the single
    // behind it does not jump the queue.
    assert_eq!(batch_at, start + window());
    assert_eq!(single_at, start + 2 * window());
    assert_eq!(budget.stats().spent, 16);
}

#[tokio::test(start_paused = true)]
async fn a_quota_429_lowers_the_limit_once_per_pause_which_then_recovers() {
    let budget = Budget::new(config(100)).unwrap();
    let cancel = CancellationToken::new();
    for _ in 0..40 {
        drop(budget.acquire(read("a"), &cancel).await.unwrap());
    }
    budget.cool_down(Duration::from_secs(5), true);
    // 90 % of the 40 this budget had in the window.
    assert_eq!(budget.effective_limit(), 36);
    // More 429s of the same episode (requests that were in flight) do not lower it again.
    budget.cool_down(Duration::from_secs(5), true);
    assert_eq!(budget.effective_limit(), 36);
    assert_eq!(budget.stats().limit_decreases, 1);
    assert_eq!(budget.stats().cooldowns, 2);
    // A 429 that is not about the quota pauses without adapting.
    let other = Budget::new(config(100)).unwrap();
    other.cool_down(Duration::from_secs(5), false);
    assert_eq!(other.effective_limit(), 100);
    // One window after the pause it grows by a twentieth of the limit, per quiet window.
    tokio::time::sleep(Duration::from_secs(5) + window() + Duration::from_millis(1)).await;
    assert_eq!(budget.effective_limit(), 41);
    for _ in 0..12 {
        tokio::time::sleep(window()).await;
        budget.effective_limit();
    }
    assert_eq!(budget.effective_limit(), 100);
    // It never falls below a quarter of the limit.
    let idle = Budget::new(config(100)).unwrap();
    drop(idle.acquire(read("a"), &cancel).await.unwrap());
    idle.cool_down(Duration::from_secs(1), true);
    assert_eq!(idle.effective_limit(), 25);
}

#[tokio::test(start_paused = true)]
async fn export_slots_are_shared_by_the_tokens_of_one_user() {
    let registry = BudgetRegistry::new();
    let pat = registry
        .budget(BudgetConfig::new("pat", Tier::Paid), "user-1")
        .unwrap();
    let oauth = registry
        .budget(BudgetConfig::new("oauth", Tier::Paid), "user-1")
        .unwrap();
    let other_user = registry
        .budget(BudgetConfig::new("sa", Tier::Paid), "user-2")
        .unwrap();
    let cancel = CancellationToken::new();
    let mut held = Vec::new();
    for i in 0..5 {
        let budget = if i % 2 == 0 { &pat } else { &oauth };
        held.push(budget.export_slot(&cancel).await.unwrap());
    }
    assert_eq!(pat.export_slots_free(), 0);
    let sixth = tokio::time::timeout(Duration::from_secs(60), oauth.export_slot(&cancel)).await;
    assert!(sixth.is_err(), "a sixth export of the same user must wait");
    // Another user's token has its own five.
    let _theirs = other_user.export_slot(&cancel).await.unwrap();
    // Waiting is cancellable.
    let stop = CancellationToken::new();
    let waiting = {
        let pat = pat.clone();
        let stop = stop.clone();
        tokio::spawn(async move { pat.export_slot(&stop).await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    stop.cancel();
    assert_eq!(waiting.await.unwrap(), Err(BudgetError::Cancelled));
    held.pop();
    assert!(oauth.export_slot(&cancel).await.is_ok());
    // The registry hands out the same budget for the same credential.
    let again = registry
        .budget(BudgetConfig::new("pat", Tier::Free), "user-1")
        .unwrap();
    assert_eq!(again.config().tier, Tier::Paid);
}

#[test]
fn invalid_configurations_are_refused_with_a_reason() {
    let zero = Budget::new(BudgetConfig {
        requests_per_minute: Some(0),
        ..BudgetConfig::default()
    });
    assert!(matches!(zero, Err(BudgetError::Invalid(m)) if m.contains("requests_per_minute")));
    let scale = Budget::new(BudgetConfig {
        time_scale: 0.0,
        ..BudgetConfig::default()
    });
    assert!(matches!(scale, Err(BudgetError::Invalid(m)) if m.contains("time_scale")));
    assert_eq!(BudgetConfig::new("f", Tier::Free).limit(), 150);
    assert_eq!(BudgetConfig::new("p", Tier::Paid).limit(), 1500);
}

/// Grant instants, relative to `start`, of `count` reads that each hold their permit for
/// `hold`.
async fn grant_offsets(budget: &Budget, count: usize, hold: Duration) -> Vec<Duration> {
    let start = Instant::now();
    run_requests(budget, &[("a", Priority::Scheduled, count)], hold)
        .await
        .into_iter()
        .map(|(at, _)| at - start)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_windows_upper_quarter_is_sent_a_few_at_a_time_until_it_has_held_that_many() {
    // Limit 40: the upper quarter starts at 30 requests in the window.
    let budget = Budget::new(config(40)).unwrap();
    let offsets = grant_offsets(&budget, 40, Duration::from_secs(1)).await;
    let at_once = offsets.iter().filter(|o| o.is_zero()).count();
    assert_eq!(at_once, 30, "{offsets:?}");
    // The rest follow as responses come back, with at most a few in flight, well within the
    // window.
    for second in 1..=2 {
        let granted = offsets
            .iter()
            .filter(|o| **o == Duration::from_secs(second))
            .count();
        assert_eq!(
            granted,
            asana_worker::budget::CAUTIOUS_IN_FLIGHT,
            "{offsets:?}"
        );
    }
    // The window held 40 without a 429: the next window is sent at once.
    tokio::time::sleep(window() + Duration::from_secs(2)).await;
    let offsets = grant_offsets(&budget, 40, Duration::from_secs(1)).await;
    assert!(offsets.iter().all(|o| o.is_zero()), "{offsets:?}");
}

#[tokio::test(start_paused = true)]
async fn after_a_quota_429_the_level_above_what_fitted_is_probed_one_request_at_a_time() {
    let budget = Budget::new(config(100)).unwrap();
    let cancel = CancellationToken::new();
    for _ in 0..40 {
        drop(budget.acquire(read("a"), &cancel).await.unwrap());
    }
    // Another client fills Asana's window: this budget settles at 90 % of its 40 (36).
    budget.cool_down(Duration::from_secs(5), true);
    assert_eq!(budget.effective_limit(), 36);
    // A quiet window later it probes a twentieth higher (41), one request at a time above 36.
    tokio::time::sleep(Duration::from_secs(5) + window() + Duration::from_millis(1)).await;
    assert_eq!(budget.effective_limit(), 41);
    let mut offsets = grant_offsets(&budget, 41, Duration::from_secs(1)).await;
    offsets.sort();
    // Up to 36 as usual (30 at once, then a few at a time in the upper quarter), the five
    // above 36 one after another, each after the previous one's response.
    let probes = &offsets[36..];
    for pair in probes.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(1), "{offsets:?}");
    }
    assert!(offsets[35] < probes[0], "{offsets:?}");
    // A 429 while probing settles just below the level reached (97 % of 41 is 39).
    budget.cool_down(Duration::from_secs(1), true);
    assert_eq!(budget.effective_limit(), 39);
}

#[tokio::test(start_paused = true)]
async fn a_429_with_many_slots_held_lowers_concurrency_not_the_rate() {
    let budget = Budget::new(config(1000)).unwrap();
    let cancel = CancellationToken::new();
    // 30 of the 50 read slots held when Asana answers 429: another client holds the rest.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(budget.acquire(read("a"), &cancel).await.unwrap());
    }
    assert!(budget.concurrency_shaped(RequestClass::Read));
    assert!(!budget.concurrency_shaped(RequestClass::Write));
    budget.concurrency_limited(RequestClass::Read, Duration::from_secs(2));
    assert_eq!(budget.effective_limit(), 1000, "the rate is not lowered");
    assert_eq!(
        budget.concurrency_caps(),
        (15, 15),
        "half of the 30 in flight"
    );
    assert!(budget.cooldown_remaining().is_some(), "the token pauses");
    // More 429s of the same episode do not lower it again.
    budget.concurrency_limited(RequestClass::Read, Duration::from_secs(2));
    assert_eq!(budget.concurrency_caps(), (15, 15));
    drop(held);
    // Other refusals of that burst are the same episode, whatever is in flight now.
    assert!(budget.concurrency_shaped(RequestClass::Read));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // After it, with few requests in flight, a 429 is the quota's.
    let few = budget.acquire(read("a"), &cancel).await.unwrap();
    assert!(!budget.concurrency_shaped(RequestClass::Read));
    drop(few);
    // Quiet windows give the slots back, a tenth of the configured cap at a time.
    tokio::time::sleep(window()).await;
    assert_eq!(budget.concurrency_caps(), (20, 15));
    for _ in 0..6 {
        tokio::time::sleep(window()).await;
        budget.concurrency_caps();
    }
    assert_eq!(budget.concurrency_caps(), (50, 15));
}

#[tokio::test(start_paused = true)]
async fn the_history_counts_requests_per_window_for_an_hour() {
    let budget = Budget::new(config(100)).unwrap();
    let cancel = CancellationToken::new();
    for _ in 0..5 {
        drop(budget.acquire(read("a"), &cancel).await.unwrap());
    }
    tokio::time::sleep(window() * 2).await;
    for _ in 0..3 {
        drop(budget.acquire(read("a"), &cancel).await.unwrap());
    }
    let history = budget.history();
    assert_eq!(history.len(), asana_worker::budget::HISTORY_WINDOWS);
    let counts: Vec<u32> = history.iter().map(|(_, n)| *n).collect();
    assert_eq!(&counts[counts.len() - 3..], [5, 0, 3]);
    assert_eq!(counts.iter().sum::<u32>(), 8);
    // Oldest first; the current window started less than a window ago.
    assert!(history.windows(2).all(|w| w[0].0 > w[1].0));
    assert!(history.last().unwrap().0 < window());
}
