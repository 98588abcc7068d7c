//! Schedules are evaluated correctly across daylight-saving changes in both directions (property
//! tests in two zones), and the misfire and overlap policies plan exactly the runs they promise.

use std::collections::BTreeMap;
use std::path::Path;

use asana_worker::config::jobs::ValidationContext;
use asana_worker::jobs::{Job as JobSpec, parse_job};
use asana_worker::scheduler::{fire_key, plan};
use asana_worker::store::{RunState, ScheduleRow, Trigger};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use proptest::prelude::*;

fn job(schedule: &str, zone: &str, extra: &str) -> JobSpec {
    let source = format!(
        "name = \"j\"\nkind = \"credential_check\"\nschedule = \"{schedule}\"\ntimezone = \"{zone}\"\ncredential = \"sa\"\n{extra}"
    );
    let context = ValidationContext {
        credentials: ["sa".to_string()].into_iter().collect(),
        ..ValidationContext::default()
    };
    parse_job(Path::new("jobs/j.toml"), &source, &context).expect("valid job")
}

/// (month, day) of a date in 2026.
type MonthDay = (u32, u32);

/// DST transitions in 2026: (zone, spring-forward day, fall-back day).
const ZONES: &[(&str, MonthDay, MonthDay)] = &[
    ("Europe/Berlin", (3, 29), (10, 25)),
    ("America/New_York", (3, 8), (11, 1)),
];

fn fires(job: &JobSpec, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut cursor = from;
    while let Some(next) = job.next_fire_after(cursor) {
        if next > until {
            break;
        }
        out.push(next);
        cursor = next;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A daily job fires exactly once on every local day, including the days the clocks change,
    /// at its wall-clock time whenever that time exists.
    #[test]
    fn daily_jobs_fire_once_per_local_day_across_dst(zone_index in 0usize..2, spring in any::<bool>(), hour in 0u32..24, minute in 0u32..60) {
        let (zone, spring_day, fall_day) = ZONES[zone_index];
        let (month, day) = if spring { spring_day } else { fall_day };
        let job = job(&format!("{minute} {hour} * * *"), zone, "");
        let tz = job.timezone;
        let first_day = NaiveDate::from_ymd_opt(2026, month, day).unwrap() - Duration::days(3);
        let from = tz.from_local_datetime(&first_day.and_hms_opt(0, 0, 0).unwrap()).earliest().unwrap().with_timezone(&Utc);
        let last_day = first_day + Duration::days(7);
        let until = tz.from_local_datetime(&last_day.and_hms_opt(0, 0, 0).unwrap()).earliest().unwrap().with_timezone(&Utc);
        let fired = fires(&job, from - Duration::seconds(1), until - Duration::seconds(1));
        let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        for fire in &fired {
            let local = fire.with_timezone(&tz);
            *per_day.entry(local.date_naive()).or_default() += 1;
            let exists = tz.from_local_datetime(&local.date_naive().and_hms_opt(hour, minute, 0).unwrap()).earliest().is_some();
            if exists {
                prop_assert_eq!((local.hour(), local.minute()), (hour, minute), "fire {} local {}", fire, local);
            } else {
                // The wall-clock time fell in the spring-forward gap: it runs right after.
                prop_assert!(local.hour() == hour + 1 || local.minute() == 0, "gap fire {} local {}", fire, local);
            }
        }
        prop_assert_eq!(per_day.len(), 7, "{:?}", per_day);
        prop_assert!(per_day.values().all(|count| *count == 1), "{:?}", per_day);
        prop_assert!(fired.windows(2).all(|w| w[0] < w[1]));
    }

    /// An hourly job fires every real hour: both 01:xx hours of a fall-back night, and no hole
    /// longer than an hour on a spring-forward night.
    #[test]
    fn hourly_jobs_fire_every_real_hour_across_dst(zone_index in 0usize..2, spring in any::<bool>(), minute in 0u32..60, start_hour in 0i64..24) {
        let (zone, spring_day, fall_day) = ZONES[zone_index];
        let (month, day) = if spring { spring_day } else { fall_day };
        let job = job(&format!("{minute} * * * *"), zone, "");
        let from = Utc.with_ymd_and_hms(2026, month, day, 0, 0, 0).unwrap() - Duration::hours(start_hour);
        let fired = fires(&job, from, from + Duration::hours(48));
        prop_assert!(fired.len() >= 47);
        for pair in fired.windows(2) {
            prop_assert_eq!(pair[1] - pair[0], Duration::hours(1), "{} -> {}", pair[0], pair[1]);
        }
        for fire in &fired {
            prop_assert_eq!(fire.with_timezone(&job.timezone).minute(), minute);
        }
    }
}

#[test]
fn fall_back_runs_a_daily_job_in_the_repeated_hour_once() {
    let job = job("30 1 * * *", "America/New_York", "");
    let from = Utc.with_ymd_and_hms(2026, 10, 31, 12, 0, 0).unwrap();
    let fired = fires(&job, from, from + Duration::days(2));
    assert_eq!(fired.len(), 2);
    assert_eq!(
        fired[0],
        Utc.with_ymd_and_hms(2026, 11, 1, 5, 30, 0).unwrap(),
        "01:30 EDT, the first of the two"
    );
    assert_eq!(fired[1].with_timezone(&job.timezone).day(), 2);
}

fn row(job: &JobSpec, next: DateTime<Utc>) -> ScheduleRow {
    ScheduleRow {
        job_name: job.name.clone(),
        next_fire_at: next,
        last_fire_at: None,
        definition: job.schedule_definition(),
    }
}

fn summary(plan: &asana_worker::scheduler::Plan) -> Vec<(String, RunState, Trigger)> {
    plan.runs
        .iter()
        .map(|run| (run.unique_key.clone(), run.state, run.trigger))
        .collect()
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, hour, 0, 0).unwrap()
}

#[test]
fn a_new_schedule_starts_in_the_future_without_misfires() {
    let job = job("0 * * * *", "UTC", "misfire = \"all\"");
    let plan = plan(&job, None, at(10) + Duration::minutes(5), false);
    assert!(plan.runs.is_empty());
    assert_eq!(plan.next_fire_at, Some(at(11)));
}

#[test]
fn an_on_time_fire_is_queued_and_the_schedule_advances() {
    let job = job("0 * * * *", "UTC", "");
    let plan = plan(
        &job,
        Some(&row(&job, at(10))),
        at(10) + Duration::seconds(2),
        false,
    );
    assert_eq!(
        summary(&plan),
        vec![(fire_key(at(10)), RunState::Queued, Trigger::Schedule)]
    );
    assert_eq!(plan.next_fire_at, Some(at(11)));
    assert_eq!(plan.last_fire_at, Some(at(10)));
}

#[test]
fn misfire_skip_records_every_missed_fire_and_runs_none() {
    let job = job("0 * * * *", "UTC", "misfire = \"skip\"");
    // Down from 06:00 until 09:30: fires at 6, 7, 8 and 9 were missed.
    let plan = plan(
        &job,
        Some(&row(&job, at(6))),
        at(9) + Duration::minutes(30),
        false,
    );
    let runs = summary(&plan);
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|(_, state, _)| *state == RunState::Skipped));
    assert_eq!(plan.next_fire_at, Some(at(10)));
}

#[test]
fn misfire_once_runs_only_the_latest_missed_fire() {
    let job = job("0 * * * *", "UTC", "misfire = \"once\"");
    let plan = plan(
        &job,
        Some(&row(&job, at(6))),
        at(9) + Duration::minutes(30),
        false,
    );
    let runs = summary(&plan);
    let queued: Vec<_> = runs.iter().filter(|r| r.1 == RunState::Queued).collect();
    assert_eq!(
        queued,
        vec![&(fire_key(at(9)), RunState::Queued, Trigger::Misfire)]
    );
    assert_eq!(runs.iter().filter(|r| r.1 == RunState::Skipped).count(), 3);
}

#[test]
fn misfire_once_with_an_on_time_fire_skips_the_missed_ones() {
    let job = job("0 * * * *", "UTC", "misfire = \"once\"");
    let plan = plan(
        &job,
        Some(&row(&job, at(6))),
        at(9) + Duration::seconds(10),
        false,
    );
    let queued: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|r| r.1 == RunState::Queued)
        .collect();
    assert_eq!(
        queued,
        vec![(fire_key(at(9)), RunState::Queued, Trigger::Schedule)]
    );
}

#[test]
fn misfire_all_runs_each_missed_fire_up_to_the_cap() {
    let job = job(
        "0 * * * *",
        "UTC",
        "misfire = \"all\"\nmisfire_max = 2\noverlap = \"queue\"",
    );
    let plan = plan(
        &job,
        Some(&row(&job, at(5))),
        at(9) + Duration::minutes(30),
        false,
    );
    let runs = summary(&plan);
    let queued: Vec<_> = runs
        .iter()
        .filter(|r| r.1 == RunState::Queued)
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(
        queued,
        vec![fire_key(at(8)), fire_key(at(9))],
        "the newest two"
    );
    let skipped: Vec<_> = runs
        .iter()
        .filter(|r| r.1 == RunState::Skipped)
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(skipped.len(), 3);
}

#[test]
fn overlap_skip_records_the_fire_while_the_previous_run_is_active() {
    let job = job("0 * * * *", "UTC", "overlap = \"skip\"");
    let plan_busy = plan(&job, Some(&row(&job, at(10))), at(10), true);
    assert_eq!(
        summary(&plan_busy),
        vec![(fire_key(at(10)), RunState::Skipped, Trigger::Misfire)]
    );
    let queue_job = job_with_overlap_queue();
    let plan_queue = plan(&queue_job, Some(&row(&queue_job, at(10))), at(10), true);
    assert_eq!(summary(&plan_queue)[0].1, RunState::Queued);
}

fn job_with_overlap_queue() -> JobSpec {
    job("0 * * * *", "UTC", "overlap = \"queue\"")
}

#[test]
fn a_changed_schedule_restarts_from_now() {
    let old = job("0 * * * *", "UTC", "");
    let new = job("*/15 * * * *", "UTC", "");
    let stored = row(&old, at(6));
    let plan = plan(&new, Some(&stored), at(9) + Duration::minutes(1), false);
    assert!(
        plan.runs.is_empty(),
        "no misfires for a schedule that did not exist"
    );
    assert_eq!(plan.next_fire_at, Some(at(9) + Duration::minutes(15)));
}

#[test]
fn a_catch_up_longer_than_the_cap_continues_on_the_next_tick_and_records_every_fire() {
    use asana_worker::scheduler::MAX_FIRES_PER_TICK;
    let job = job("* * * * *", "UTC", "misfire = \"once\"");
    let down_from = at(0);
    // Down for MAX + 300 minutes: the first tick handles MAX fires, the second the rest.
    let now =
        down_from + Duration::minutes(MAX_FIRES_PER_TICK as i64 + 300) + Duration::seconds(90);
    let first = plan(&job, Some(&row(&job, down_from)), now, false);
    assert_eq!(first.runs.len(), MAX_FIRES_PER_TICK);
    assert!(
        first.runs.iter().all(|r| r.state == RunState::Skipped),
        "nothing runs until the catch-up reaches now"
    );
    let resume = first.next_fire_at.unwrap();
    assert_eq!(
        resume,
        down_from + Duration::minutes(MAX_FIRES_PER_TICK as i64)
    );
    let mut stored = row(&job, resume);
    stored.last_fire_at = first.last_fire_at;
    let second = plan(&job, Some(&stored), now, false);
    assert_eq!(
        second.runs.len(),
        302,
        "the remaining missed fires, up to now"
    );
    let queued: Vec<_> = second
        .runs
        .iter()
        .filter(|r| r.state == RunState::Queued)
        .collect();
    assert_eq!(queued.len(), 1, "misfire = once runs the latest fire only");
    assert!(second.next_fire_at.unwrap() > now);
}
