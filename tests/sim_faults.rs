//! Every fault knob of the simulator does what it says, set at start or at runtime through
//! `/_sim/faults`, and tokens can be revoked through `/_sim/revoke`.

mod support;
use support::sim::SimAdmin;

use std::time::{Duration, Instant};

use asana_worker::sim::config::FaultSpec;
use asana_worker::sim::{SimConfig, SimServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start(faults: FaultSpec) -> SimServer {
    SimServer::start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await
    .expect("sim")
}

async fn me(server: &SimServer, client: &reqwest::Client) -> reqwest::Result<reqwest::Response> {
    client
        .get(format!("{}/users/me", server.base_url()))
        .bearer_auth(server.token("pat-paid").unwrap())
        .send()
        .await
}

async fn set_faults(server: &SimServer, faults: Value) {
    SimAdmin::of(server).set_faults_json(faults).await;
}

#[tokio::test]
async fn server_errors_use_asana_error_bodies_and_500_carries_a_phrase() {
    let server = start(FaultSpec::default()).await;
    let client = reqwest::Client::new();
    for (knob, status) in [
        ("error_500", 500u16),
        ("error_502", 502),
        ("error_503", 503),
        ("error_504", 504),
    ] {
        set_faults(&server, json!({ knob: 1.0 })).await;
        let response = me(&server, &client).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{knob}");
        let body: Value = response.json().await.unwrap();
        let error = &body["errors"][0];
        assert!(error["message"].is_string(), "{body}");
        assert!(error["help"].is_string());
        assert_eq!(
            error.get("phrase").is_some(),
            status == 500,
            "phrase only on 500: {body}"
        );
    }
    set_faults(&server, json!({})).await;
    assert_eq!(me(&server, &client).await.unwrap().status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn injected_429_carries_retry_after_and_is_counted() {
    let server = start(FaultSpec {
        error_429: 1.0,
        retry_after_secs: 7,
        ..FaultSpec::default()
    })
    .await;
    let client = reqwest::Client::new();
    let response = me(&server, &client).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    let stats = SimAdmin::of(&server).token_stats("pat-paid").await;
    assert_eq!(stats["rejected"]["injected"], 1);
    server.shutdown().await;
}

#[tokio::test]
async fn error_rates_are_probabilities() {
    let server = start(FaultSpec {
        error_503: 0.5,
        ..FaultSpec::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut failures = 0;
    for _ in 0..400 {
        if me(&server, &client).await.unwrap().status() == StatusCode::SERVICE_UNAVAILABLE {
            failures += 1;
        }
    }
    assert!(
        (140..=260).contains(&failures),
        "about half should fail, got {failures}/400"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn latency_and_jitter_delay_responses() {
    let server = start(FaultSpec {
        latency_ms: 250,
        jitter_ms: 100,
        ..FaultSpec::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(me(&server, &client).await.unwrap().status(), StatusCode::OK);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "took {took:?}");
        slowest = slowest.max(took);
    }
    assert!(slowest < Duration::from_secs(2));
    server.shutdown().await;
}

#[tokio::test]
async fn resets_truncations_and_hangs_fail_at_the_transport_level() {
    let server = start(FaultSpec::default()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();

    set_faults(&server, json!({"reset": 1.0})).await;
    let reset = match me(&server, &client).await {
        Ok(response) => response.bytes().await.err(),
        Err(error) => Some(error),
    };
    assert!(
        reset.is_some(),
        "a reset connection must surface as an error"
    );

    set_faults(&server, json!({"truncate": 1.0})).await;
    let response = me(&server, &client)
        .await
        .expect("headers arrive before the cut");
    assert_eq!(response.status(), StatusCode::OK);
    let declared = response
        .content_length()
        .expect("full content-length is declared");
    assert!(declared > 0);
    assert!(
        response.bytes().await.is_err(),
        "the body must be cut short"
    );

    set_faults(&server, json!({"hang": 1.0, "hang_ms": 5000})).await;
    let started = Instant::now();
    let hung = me(&server, &client).await;
    assert!(hung.unwrap_err().is_timeout());
    assert!(started.elapsed() < Duration::from_secs(2));

    set_faults(&server, json!({})).await;
    assert_eq!(me(&server, &client).await.unwrap().status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn faults_are_validated_and_revocation_turns_a_token_away() {
    let server = start(FaultSpec::default()).await;
    let client = reqwest::Client::new();
    let admin = SimAdmin::of(&server);
    let (status, _) = admin
        .try_call(
            reqwest::Method::PUT,
            "faults",
            Some(json!({"error_500": 2.0})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    admin.revoke("pat-paid").await;
    let response = me(&server, &client).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["message"], "Not Authorized");
    // Other tokens are unaffected.
    let other = client
        .get(format!("{}/users/me", server.base_url()))
        .bearer_auth(server.token("service-account").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn missing_and_unknown_tokens_get_401_and_unknown_routes_404() {
    let server = start(FaultSpec::default()).await;
    let client = reqwest::Client::new();
    let anonymous = client
        .get(format!("{}/users/me", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let unknown = client
        .get(format!("{}/users/me", server.base_url()))
        .bearer_auth("0/not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let missing = client
        .get(format!("{}/no/such/route", server.base_url()))
        .bearer_auth(server.token("pat-paid").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert!(body["errors"][0]["message"].is_string());
    server.shutdown().await;
}
