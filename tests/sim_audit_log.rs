//! The simulator's Audit Log API: access rules, filters and bounds, Asana's stream-style
//! `next_page`, offsets that find later events, offset expiry, retention and the generator.

mod support;
use support::sim::SimAdmin;

use std::time::Duration;

use asana_worker::sim::config::{SimConfig, WorldSize};
use asana_worker::sim::wire;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

const SA: &str = "sim-sa-0001";

fn config(backfill: usize) -> SimConfig {
    let mut timing = SimConfig::default().timing;
    timing.audit_events_per_minute = 0.0;
    timing.activity_per_minute = 0.0;
    SimConfig {
        world: WorldSize {
            audit_events: backfill,
            ..WorldSize::default()
        },
        timing,
        ..SimConfig::default()
    }
}

/// The shared simulator client with the audit-log calls of these tests.
struct Sim(support::sim::Sim);

impl std::ops::Deref for Sim {
    type Target = support::sim::Sim;
    fn deref(&self) -> &support::sim::Sim {
        &self.0
    }
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        Sim(support::sim::Sim::start(config).await)
    }

    fn workspace(&self) -> String {
        self.server.state().world().workspace.gid.clone()
    }

    async fn events(&self, token: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let url = format!(
            "{}/workspaces/{}/audit_log_events",
            self.server.base_url(),
            self.workspace()
        );
        let response = self
            .client
            .get(url)
            .bearer_auth(token)
            .query(query)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    async fn ok_events(&self, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.events(SA, query).await;
        assert_eq!(
            status,
            200,
            "{body} {:?}",
            self.server.state().limits.stats(SA)
        );
        body
    }

    async fn add_events(&self, body: Value) -> Vec<String> {
        self.admin_api().append_audit_events(body).await
    }

    fn now(&self) -> DateTime<Utc> {
        self.server.state().clock.now()
    }
}

fn gids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|e| e["gid"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn offset(body: &Value) -> String {
    body["next_page"]["offset"]
        .as_str()
        .unwrap_or_else(|| panic!("next_page.offset present in {body}"))
        .to_string()
}

fn stamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[tokio::test]
async fn only_service_accounts_of_enterprise_workspaces_may_read() {
    let sim = Sim::start(config(20)).await;
    for token in ["sim-pat-paid-0001", "sim-pat-free-0001"] {
        let (status, body) = sim.events(token, &[]).await;
        assert_eq!(status, 403, "{token}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("Service Account"), "{message}");
    }
    let url = format!("{}/workspaces/999/audit_log_events", sim.server.base_url());
    let response = sim.client.get(url).bearer_auth(SA).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let (status, body) = sim.events(SA, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(gids(&body).len(), 20);
    for bad in ["0", "101", "x"] {
        let (status, body) = sim.events(SA, &[("limit", bad)]).await;
        assert_eq!(status, 400, "limit={bad}: {body}");
    }
    let (status, _) = sim.events(SA, &[("actor_type", "robot")]).await;
    assert_eq!(status, 400);
    let (status, _) = sim.events(SA, &[("start_at", "yesterday")]).await;
    assert_eq!(status, 400);
    sim.0.shutdown().await;
}

#[tokio::test]
async fn pages_are_oldest_first_and_filters_select_exactly_the_matching_events() {
    let sim = Sim::start(config(250)).await;
    // No limit: one page of at most 100 (the declared maximum).
    let first = sim.ok_events(&[]).await;
    assert_eq!(gids(&first).len(), 100);
    let mut all: Vec<Value> = Vec::new();
    let mut query_offset: Option<String> = None;
    loop {
        let mut query = vec![("limit", "37".to_string())];
        if let Some(o) = &query_offset {
            query.push(("offset", o.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = sim.ok_events(&query).await;
        let page = body["data"].as_array().unwrap().clone();
        query_offset = Some(offset(&body));
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    assert_eq!(all.len(), 250);
    let times: Vec<String> = all
        .iter()
        .map(|e| e["created_at"].as_str().unwrap().to_string())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "ascending order");
    let unique: std::collections::HashSet<&str> =
        all.iter().map(|e| e["gid"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), 250, "no duplicates across pages");

    let sample = &all[17];
    type Predicate<'a> = Box<dyn Fn(&Value) -> bool + 'a>;
    let filters: Vec<(&str, String, Predicate)> = vec![
        (
            "event_type",
            sample["event_type"].as_str().unwrap().to_string(),
            Box::new(|e: &Value| e["event_type"] == sample["event_type"]),
        ),
        (
            "resource_gid",
            sample["resource"]["gid"].as_str().unwrap().to_string(),
            Box::new(|e: &Value| e["resource"]["gid"] == sample["resource"]["gid"]),
        ),
        (
            "actor_type",
            "asana".to_string(),
            Box::new(|e: &Value| e["actor"]["actor_type"] == "asana"),
        ),
    ];
    for (key, value, predicate) in filters {
        let expected: Vec<String> = all
            .iter()
            .filter(|e| predicate(e))
            .map(|e| e["gid"].as_str().unwrap().to_string())
            .collect();
        assert!(!expected.is_empty(), "{key} matches something");
        let body = sim
            .ok_events(&[(key, value.as_str()), ("limit", "100")])
            .await;
        assert_eq!(gids(&body), expected, "filter {key}={value}");
    }
    let user_event = all
        .iter()
        .find(|e| e["actor"]["actor_type"] == "user")
        .expect("some user actor");
    let actor = user_event["actor"]["gid"].as_str().unwrap();
    let body = sim
        .ok_events(&[("actor_gid", actor), ("limit", "100")])
        .await;
    let expected: Vec<String> = all
        .iter()
        .filter(|e| e["actor"]["gid"] == actor)
        .map(|e| e["gid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(gids(&body), expected);
    sim.0.shutdown().await;
}

#[tokio::test]
async fn start_at_is_inclusive_and_end_at_exclusive() {
    let sim = Sim::start(config(0)).await;
    let now = sim.now();
    let times: Vec<String> = (1..=3)
        .rev()
        .map(|h| stamp(now - chrono::Duration::hours(h)))
        .collect();
    let mut inserted = Vec::new();
    for time in &times {
        inserted.extend(
            sim.add_events(json!({"created_at": time, "event_type": "task_deleted"}))
                .await,
        );
    }
    let body = sim
        .ok_events(&[("start_at", &times[1]), ("end_at", &times[2])])
        .await;
    assert_eq!(gids(&body), vec![inserted[1].clone()]);
    let body = sim.ok_events(&[("start_at", &times[1])]).await;
    assert_eq!(gids(&body), inserted[1..].to_vec());
    let body = sim.ok_events(&[("end_at", &times[1])]).await;
    assert_eq!(gids(&body), inserted[..1].to_vec());
    sim.0.shutdown().await;
}

#[tokio::test]
async fn next_page_is_null_until_filters_match_then_always_present() {
    let sim = Sim::start(config(30)).await;
    let filter = [("event_type", "custom_simulated_event")];
    let body = sim.ok_events(&filter).await;
    assert_eq!(body["data"], json!([]));
    assert!(body["next_page"].is_null(), "never matched: {body}");

    let first = sim
        .add_events(json!({"event_type": "custom_simulated_event"}))
        .await;
    let body = sim.ok_events(&filter).await;
    assert_eq!(gids(&body), first);
    let position = offset(&body);
    assert!(
        body["next_page"]["uri"]
            .as_str()
            .unwrap()
            .contains("offset=")
    );

    // Caught up: empty data, next_page still present.
    let caught_up = sim
        .ok_events(&[filter[0], ("offset", position.as_str())])
        .await;
    assert_eq!(caught_up["data"], json!([]));
    let still = offset(&caught_up);

    // Events captured later are returned by the old offsets.
    let later = sim
        .add_events(json!({"event_type": "custom_simulated_event", "count": 2}))
        .await;
    for o in [&position, &still] {
        let body = sim.ok_events(&[filter[0], ("offset", o.as_str())]).await;
        assert_eq!(&gids(&body), &later);
    }
    let body = sim
        .ok_events(&[filter[0], ("offset", still.as_str())])
        .await;
    let newest = offset(&body);

    // A late event (created before the position) is not returned by the offset, like Asana;
    // a fresh query from the start sees it.
    let late_time = stamp(sim.now() - chrono::Duration::hours(1));
    let late = sim
        .add_events(json!({"event_type": "custom_simulated_event", "created_at": late_time}))
        .await;
    let body = sim
        .ok_events(&[filter[0], ("offset", newest.as_str())])
        .await;
    assert_eq!(body["data"], json!([]));
    assert!(body["next_page"].is_object());
    let body = sim.ok_events(&filter).await;
    assert_eq!(gids(&body)[0], late[0]);
    assert_eq!(gids(&body).len(), 4);

    // The offset is bound to its filters.
    let (status, body) = sim
        .events(
            SA,
            &[("event_type", "task_deleted"), ("offset", newest.as_str())],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    sim.0.shutdown().await;
}

#[tokio::test]
async fn offsets_expire_after_the_configured_simulated_time() {
    let mut config = config(10);
    config.timing.offset_ttl_secs = 10;
    let sim = Sim::start(config).await;
    let body = sim.ok_events(&[("limit", "5")]).await;
    let position = offset(&body);
    let body = sim
        .ok_events(&[("limit", "5"), ("offset", position.as_str())])
        .await;
    assert_eq!(gids(&body).len(), 5, "valid right away");
    SimAdmin::of(&sim.server).advance(14).await;
    let (status, body) = sim
        .events(SA, &[("limit", "5"), ("offset", position.as_str())])
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["message"], wire::OFFSET_EXPIRED_MESSAGE);
    let mut forged = position.clone();
    forged.push('A');
    let (status, _) = sim.events(SA, &[("offset", forged.as_str())]).await;
    assert_eq!(status, 400);
    sim.0.shutdown().await;
}

#[tokio::test]
async fn events_older_than_the_retention_period_are_never_returned() {
    let sim = Sim::start(config(0)).await;
    let now = sim.now();
    let old = sim
        .add_events(json!({"created_at": stamp(now - chrono::Duration::days(91)), "event_type": "user_logged_out"}))
        .await;
    let kept = sim
        .add_events(json!({"created_at": stamp(now - chrono::Duration::days(89)), "event_type": "user_logged_out"}))
        .await;
    let body = sim.ok_events(&[]).await;
    assert_eq!(gids(&body), kept);
    assert!(!gids(&body).contains(&old[0]));
    let body = sim
        .ok_events(&[("start_at", &stamp(now - chrono::Duration::days(100)))])
        .await;
    assert_eq!(gids(&body), kept);
    sim.0.shutdown().await;
}

#[tokio::test]
async fn the_generator_adds_events_that_a_poller_finds_with_its_offset() {
    let mut config = config(5);
    config.time_scale = 60.0;
    config.timing.audit_events_per_minute = 60.0; // one per simulated second: 60 per real second
    let sim = Sim::start(config).await;
    let mut position = offset(&sim.ok_events(&[]).await);
    let mut seen = std::collections::HashSet::new();
    let mut last_time = String::new();
    let mut found = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let body = sim.ok_events(&[("offset", position.as_str())]).await;
        for event in body["data"].as_array().unwrap() {
            assert!(
                seen.insert(event["gid"].as_str().unwrap().to_string()),
                "no repeats"
            );
            let time = event["created_at"].as_str().unwrap().to_string();
            assert!(time >= last_time, "ascending");
            last_time = time;
            found += 1;
        }
        position = offset(&body);
    }
    assert!(found >= 20, "generated events found: {found}");
    tokio::time::timeout(Duration::from_secs(5), sim.0.shutdown())
        .await
        .expect("generator stops on shutdown");
}
