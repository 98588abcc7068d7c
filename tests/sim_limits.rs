//! The simulator enforces Asana's documented limits per token: requests per minute by tier with
//! rejected requests still counted, the search bucket, read and write concurrency, and
//! `Retry-After` on every 429. These tests speak real HTTP to a simulator on loopback.

mod support;
use support::sim::SimAdmin;

use std::time::Duration;

use asana_worker::sim::config::{FaultSpec, LimitSpec};
use asana_worker::sim::{SimConfig, SimServer};
use reqwest::StatusCode;
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .build()
        .expect("client")
}

async fn get(
    client: &reqwest::Client,
    server: &SimServer,
    token: &str,
    path: &str,
) -> reqwest::Response {
    client
        .get(format!("{}{}", server.base_url(), path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn stats(_client: &reqwest::Client, server: &SimServer, name: &str) -> Value {
    SimAdmin::of(server).token_stats(name).await
}

#[tokio::test]
async fn free_quota_rejects_past_the_limit_and_counts_rejected_requests() {
    // 20x speed: one simulated minute lasts three real seconds.
    let config = SimConfig {
        time_scale: 20.0,
        limits: LimitSpec {
            free_per_minute: 10,
            ..LimitSpec::default()
        },
        ..SimConfig::default()
    };
    let server = SimServer::start(config).await.expect("sim");
    let token = server.token("pat-free").expect("free token");
    let http = client();
    let started = tokio::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(
            get(&http, &server, &token, "/users/me").await.status(),
            StatusCode::OK
        );
    }
    let refused = get(&http, &server, &token, "/users/me").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (50..=60).contains(&retry_after),
        "Retry-After {retry_after} should be the rest of the minute"
    );
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("rate limit")
    );

    // Half a simulated minute later, five more requests are refused and still count.
    tokio::time::sleep_until(started + Duration::from_millis(1500)).await;
    for _ in 0..5 {
        assert_eq!(
            get(&http, &server, &token, "/users/me").await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    // Past the first minute the ten admitted requests (and the first refusal) have left the
    // window, but the five refused half a minute in have not: only five more fit.
    tokio::time::sleep_until(started + Duration::from_millis(3500)).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&http, &server, &token, "/users/me").await.status());
    }
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(
        admitted, 5,
        "refused requests must count against the quota: {statuses:?}"
    );

    let stats = stats(&http, &server, "pat-free").await;
    assert_eq!(stats["rejected"]["quota"], 7);
    assert_eq!(stats["peak_window_requests"], 10);
    server.shutdown().await;
}

#[tokio::test]
async fn paid_and_free_tokens_have_independent_quotas() {
    let config = SimConfig {
        limits: LimitSpec {
            free_per_minute: 3,
            paid_per_minute: 6,
            ..LimitSpec::default()
        },
        ..SimConfig::default()
    };
    let server = SimServer::start(config).await.expect("sim");
    let http = client();
    let free = server.token("pat-free").unwrap();
    let paid = server.token("pat-paid").unwrap();
    let mut free_ok = 0;
    let mut paid_ok = 0;
    for _ in 0..8 {
        if get(&http, &server, &free, "/users/me").await.status() == StatusCode::OK {
            free_ok += 1;
        }
        if get(&http, &server, &paid, "/users/me").await.status() == StatusCode::OK {
            paid_ok += 1;
        }
    }
    assert_eq!((free_ok, paid_ok), (3, 6));
    server.shutdown().await;
}

#[tokio::test]
async fn search_has_a_separate_bucket_of_sixty_per_minute() {
    let server = SimServer::start(SimConfig::default()).await.expect("sim");
    let http = client();
    let token = server.token("pat-paid").unwrap();
    let workspace = server.state().world().workspace.gid.clone();
    let search = format!("/workspaces/{workspace}/tasks/search?text=audit");
    for i in 0..60 {
        let status = get(&http, &server, &token, &search).await.status();
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "search {i} refused");
    }
    let refused = get(&http, &server, &token, &search).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    // Other requests of the same token are still admitted.
    assert_eq!(
        get(&http, &server, &token, "/users/me").await.status(),
        StatusCode::OK
    );
    let stats = stats(&http, &server, "pat-paid").await;
    assert_eq!(stats["rejected"]["search"], 1);
    assert_eq!(stats["peak_window_searches"], 60);
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_reads_and_writes_are_capped_at_fifty_and_fifteen() {
    let config = SimConfig {
        faults: FaultSpec {
            latency_ms: 400,
            ..FaultSpec::default()
        },
        ..SimConfig::default()
    };
    let server = SimServer::start(config).await.expect("sim");
    let http = client();
    let token = server.token("pat-paid").unwrap();
    let reads = (0..60).map(|_| {
        let http = http.clone();
        let url = format!("{}/users/me", server.base_url());
        let token = token.clone();
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let writes = (0..20).map(|_| {
        let http = http.clone();
        let url = format!("{}/status_updates", server.base_url());
        let token = token.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"data": {}}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let (reads, writes) = tokio::join!(
        futures::future::join_all(reads),
        futures::future::join_all(writes)
    );
    let read_refused = reads
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let write_refused = writes
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(read_refused, 10, "{reads:?}");
    assert_eq!(write_refused, 5, "{writes:?}");
    let stats = stats(&http, &server, "pat-paid").await;
    assert_eq!(stats["peak_concurrent_reads"], 50);
    assert_eq!(stats["peak_concurrent_writes"], 15);
    assert_eq!(stats["rejected"]["concurrent_reads"], 10);
    assert_eq!(stats["rejected"]["concurrent_writes"], 5);
    server.shutdown().await;
}

#[tokio::test]
async fn another_client_spending_the_quota_is_felt_by_the_token() {
    let config = SimConfig {
        limits: LimitSpec {
            paid_per_minute: 10,
            ..LimitSpec::default()
        },
        ..SimConfig::default()
    };
    let server = SimServer::start(config).await.expect("sim");
    let http = client();
    let (status, _) = SimAdmin::of(&server)
        .try_call(
            reqwest::Method::POST,
            "consume",
            Some(serde_json::json!({"name": "pat-paid", "count": 8})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let token = server.token("pat-paid").unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&http, &server, &token, "/users/me").await.status());
    }
    assert_eq!(
        statuses,
        vec![
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_batch_counts_as_as_many_concurrent_requests_as_it_has_actions() {
    let config = SimConfig {
        limits: LimitSpec {
            concurrent_reads: 5,
            ..LimitSpec::default()
        },
        ..SimConfig::default()
    };
    let server = SimServer::start(config).await.expect("sim");
    let http = client();
    let token = server.token("pat-paid").unwrap();
    let batch = |n: usize| {
        let actions: Vec<Value> = (0..n)
            .map(|_| serde_json::json!({"relative_path": "/users/me", "method": "get"}))
            .collect();
        http.post(format!("{}/batch", server.base_url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({"data": {"actions": actions}}))
            .send()
    };
    assert_eq!(batch(5).await.unwrap().status(), StatusCode::OK);
    let refused = batch(6).await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "six reads do not fit in five slots"
    );
    let stats = stats(&http, &server, "pat-paid").await;
    assert_eq!(stats["peak_concurrent_reads"], 5);
    assert_eq!(stats["rejected"]["concurrent_reads"], 1);
    server.shutdown().await;
}
