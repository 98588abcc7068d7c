//! The Asana client against the simulator (real HTTP on loopback, `time_scale` for speed), plus a
//! small stub server for the statuses the simulator cannot produce yet (402, 403, 412, 451, the
//! OAuth error shape, malformed bodies).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asana_worker::asana::{
    ApiRequest, AsanaClient, AsanaError, AuditLogFilter, BatchAction, CallContext, ClientConfig,
    Idempotency, NewStatusUpdate, Query, Resource, RetryConfig, USER_AGENT, validate_base_url,
};
use asana_worker::budget::{Budget, BudgetConfig, Priority, Tier};
use asana_worker::sim::SimServer;
use asana_worker::sim::config::{FaultSpec, SimConfig};
use asana_worker::sim::limits::TokenStats;
use axum::extract::{Path, Query as AxumQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SCALE: f64 = 60.0;

async fn sim_with(configure: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut config = SimConfig {
        time_scale: SCALE,
        ..SimConfig::default()
    };
    config.timing.audit_events_per_minute = 0.0;
    config.timing.activity_per_minute = 0.0;
    configure(&mut config);
    SimServer::start(config).await.expect("simulator starts")
}

fn budget_for(name: &str, tier: Tier) -> Budget {
    Budget::new(BudgetConfig {
        time_scale: SCALE,
        ..BudgetConfig::new(name, tier)
    })
    .unwrap()
}

fn fast_retries() -> RetryConfig {
    RetryConfig {
        max_attempts: 8,
        min_delay_ms: 200,
        max_delay_ms: 2_000,
        max_elapsed_secs: 600,
    }
}

fn client_for(sim: &SimServer, name: &str, tier: Tier) -> AsanaClient {
    let token = sim.token(name).expect("token exists");
    let config = ClientConfig {
        retry: fast_retries(),
        ..ClientConfig::with_base_url(sim.base_url())
    };
    AsanaClient::new(config, SecretString::from(token), budget_for(name, tier)).unwrap()
}

fn stats(sim: &SimServer, name: &str) -> TokenStats {
    let token = sim.token(name).unwrap();
    sim.state().limits.stats(&token)
}

fn set_faults(sim: &SimServer, faults: FaultSpec) {
    *sim.state().faults.write().unwrap() = faults;
}

#[tokio::test]
async fn me_and_lists_decode_envelopes_and_honour_opt_fields() {
    let sim = sim_with(|_| {}).await;
    let client = client_for(&sim, "pat-paid", Tier::Paid);
    let me = client.me(&["name", "email"]).await.unwrap();
    let world_user = sim
        .state()
        .world()
        .users
        .get(&me.gid)
        .cloned()
        .expect("a world user");
    assert_eq!(me.email.as_deref(), Some(world_user.email.as_str()));
    assert!(me.workspaces.is_none(), "opt_fields left workspaces out");
    let me_full = client.me(&[]).await.unwrap();
    assert!(
        me_full.workspaces.is_some(),
        "default fields include workspaces"
    );

    let workspaces = client
        .workspaces(&["name", "is_organization"])
        .collect()
        .await
        .unwrap();
    assert_eq!(workspaces.len(), 1);
    let workspace = &workspaces[0].gid;

    let all = client
        .workspace_users(workspace, &["name"])
        .collect()
        .await
        .unwrap();
    let pages: Vec<_> = client
        .workspace_users(workspace, &["name"])
        .page_size(5)
        .pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), all.len().div_ceil(5));
    assert!(
        pages[..pages.len() - 1]
            .iter()
            .all(|p| p.next_offset.is_some())
    );
    assert!(pages.last().unwrap().next_offset.is_none());
    let paged: Vec<String> = pages
        .iter()
        .flat_map(|p| p.data.iter().map(|u| u.gid.clone()))
        .collect();
    let unpaged: Vec<String> = all.iter().map(|u| u.gid.clone()).collect();
    assert_eq!(paged, unpaged);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_offset_resumes_through_the_fallback() {
    let sim = sim_with(|c| c.timing.offset_ttl_secs = 6).await;
    let client = client_for(&sim, "pat-paid", Tier::Paid);
    let workspace = client.workspaces(&[]).collect().await.unwrap()[0]
        .gid
        .clone();
    let expected: HashSet<String> = client
        .workspace_users(&workspace, &[])
        .collect()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.gid)
        .collect();

    // A slow consumer: each page waits longer than the offset lives (6 s simulated = 100 ms).
    let fallbacks = Arc::new(Mutex::new(0));
    let counter = fallbacks.clone();
    let mut pages = Box::pin(
        client
            .workspace_users(&workspace, &[])
            .page_size(4)
            .on_offset_expired(move |last| {
                *counter.lock().unwrap() += 1;
                assert!(last.is_some(), "the fallback sees the last user read");
                // Users have no time filter: restart from the beginning; the caller dedups.
                Some(Query::new())
            })
            .pages(),
    );
    let mut seen = HashSet::new();
    let mut restarted_pages = 0;
    let mut page_count = 0;
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        page_count += 1;
        restarted_pages += usize::from(page.restarted);
        seen.extend(page.data.into_iter().map(|u| u.gid));
        if *fallbacks.lock().unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(page_count < 50, "the walk must end");
    }
    assert_eq!(*fallbacks.lock().unwrap(), 1);
    assert_eq!(restarted_pages, 1);
    assert_eq!(seen, expected);

    // Without a fallback the caller gets the typed error.
    let mut pages = Box::pin(client.workspace_users(&workspace, &[]).page_size(4).pages());
    pages.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let error = pages.next().await.unwrap().unwrap_err();
    assert!(matches!(error, AsanaError::OffsetExpired { .. }), "{error}");
    assert!(error.to_string().contains("restart the listing"));
    assert!(pages.next().await.is_none());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_never_exceeded_and_jobs_wait_for_the_window() {
    let sim = sim_with(|_| {}).await;
    let client = client_for(&sim, "pat-free", Tier::Free);
    let started = Instant::now();
    let mut handles = Vec::new();
    for job in 0..4 {
        let client = client.for_job(CallContext::new(format!("job-{job}"), Priority::Scheduled));
        handles.push(tokio::spawn(async move {
            futures::stream::iter(0..100)
                .map(|_| {
                    let client = client.clone();
                    async move { client.me(&["name"]).await }
                })
                .buffer_unordered(10)
                .try_collect::<Vec<_>>()
                .await
        }));
    }
    for handle in handles {
        assert_eq!(handle.await.unwrap().unwrap().len(), 100);
    }
    let elapsed = started.elapsed();
    let stats = stats(&sim, "pat-free");
    assert_eq!(stats.rejected_total(), 0, "{stats:?}");
    assert_eq!(stats.accepted, 400);
    assert!(stats.peak_window_requests <= 150, "{stats:?}");
    // 400 requests at 150 per window need two full windows (2 s at 60x) before the last ones.
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_requests_use_their_own_bucket() {
    let sim = sim_with(|_| {}).await;
    let client = client_for(&sim, "pat-paid", Tier::Paid);
    let workspace = client.workspaces(&[]).collect().await.unwrap()[0]
        .gid
        .clone();
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..130)
        .map(|_| {
            let client = client.clone();
            let workspace = workspace.clone();
            async move {
                client
                    .search_tasks(&workspace, Query::new().param("text", "report"), &["name"])
                    .await
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    for result in &results {
        // The search endpoint may not be simulated yet (404); it must never be a 429.
        assert!(
            !matches!(result, Err(AsanaError::RateLimited { .. })),
            "{result:?}"
        );
    }
    let stats = stats(&sim, "pat-paid");
    assert_eq!(stats.rejected_total(), 0, "{stats:?}");
    assert!(stats.peak_window_searches <= 60, "{stats:?}");
    assert!(
        stats.peak_window_searches >= 55,
        "the bucket is used: {stats:?}"
    );
    // 130 searches at 60 per window: the last ten wait for the third window.
    assert!(started.elapsed() >= Duration::from_secs(2));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_peaks_stay_within_50_reads_and_15_writes() {
    let sim = sim_with(|c| {
        // 3 s simulated = 50 ms real per request, so requests pile up.
        c.faults.latency_ms = 3_000;
    })
    .await;
    let client = client_for(&sim, "service-account", Tier::Paid);
    let reads = futures::stream::iter(0..200)
        .map(|_| {
            let client = client.clone();
            async move { client.me(&["name"]).await.map(|_| ()) }
        })
        .buffer_unordered(200)
        .try_collect::<Vec<_>>();
    let writes = futures::stream::iter(0..60)
        .map(|i| {
            let client = client.clone();
            async move {
                let request = ApiRequest::post(
                    "/status_updates",
                    json!({"parent": "0", "status_type": "on_track", "text": format!("{i}")}),
                    Idempotency::NotIdempotent,
                );
                // Whatever the simulator answers (404 until the endpoint exists), never a 429.
                match client.execute(&request).await {
                    Err(AsanaError::RateLimited { .. }) => Err("rate limited"),
                    _ => Ok(()),
                }
            }
        })
        .buffer_unordered(60)
        .try_collect::<Vec<_>>();
    let (reads, writes) = tokio::join!(reads, writes);
    reads.unwrap();
    writes.unwrap();
    let stats = stats(&sim, "service-account");
    assert_eq!(stats.rejected_total(), 0, "{stats:?}");
    assert!(stats.peak_concurrent_reads <= 50, "{stats:?}");
    assert!(stats.peak_concurrent_writes <= 15, "{stats:?}");
    assert!(
        stats.peak_concurrent_reads >= 45,
        "reads use the slots: {stats:?}"
    );
    assert!(
        stats.peak_concurrent_writes >= 12,
        "writes use the slots: {stats:?}"
    );
    let budget = client.budget().stats();
    assert_eq!(budget.peak_reads, 50);
    assert_eq!(budget.peak_writes, 15);
    sim.shutdown().await;
}

/// Another client holds 40 of the token's 50 read slots (the simulator allows this token 10):
/// Asana's concurrency 429s do not lower the rate; the budget sends fewer reads at once until
/// they fit, and every request succeeds.
#[tokio::test]
async fn concurrency_429s_lower_the_reads_in_flight_not_the_rate() {
    let sim = sim_with(|c| {
        c.faults.latency_ms = 3_000;
        c.limits.concurrent_reads = 10;
    })
    .await;
    let client = client_for(&sim, "service-account", Tier::Paid);
    futures::stream::iter(0..300)
        .map(|_| {
            let client = client.clone();
            async move { client.me(&["name"]).await.map(|_| ()) }
        })
        .buffer_unordered(100)
        .try_collect::<Vec<_>>()
        .await
        .expect("every read succeeds in the end");
    let stats = stats(&sim, "service-account");
    let refused = stats.rejected_total();
    assert!(refused > 0, "the test needs concurrency 429s: {stats:?}");
    let budget = client.budget();
    assert_eq!(budget.effective_limit(), 1500, "the rate was not lowered");
    assert_eq!(budget.stats().limit_decreases, 0);
    let (reads, _) = budget.concurrency_caps();
    assert!(
        reads <= 10,
        "reads in flight now fit the 10 slots left: {reads}"
    );
    // It converged: a handful of episodes, not a 429 per request.
    assert!(
        refused <= 100,
        "{refused} refusals for 300 requests: {stats:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_429_pauses_every_job_on_the_token_for_retry_after() {
    let sim = sim_with(|c| {
        c.faults.error_429 = 1.0;
        c.faults.retry_after_secs = 30;
    })
    .await;
    let client = client_for(&sim, "pat-paid", Tier::Paid);
    let first = client.for_job(CallContext::new("first", Priority::Scheduled));
    let hit = tokio::spawn(async move { first.me(&["name"]).await.map(|_| Instant::now()) });
    // Wait until the 429 has paused the token, then stop injecting.
    let paused_at = loop {
        if client.budget().cooldown_remaining().is_some() {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    set_faults(&sim, FaultSpec::default());
    let remaining = client.budget().cooldown_remaining().unwrap();
    assert!(remaining > Duration::from_millis(450), "{remaining:?}");
    let mut others = Vec::new();
    for job in ["hourly", "backfill", "manual"] {
        let client = client.for_job(CallContext::new(job, Priority::Scheduled));
        others.push(tokio::spawn(async move {
            client.me(&["name"]).await.map(|_| Instant::now())
        }));
    }
    // Half-way through the pause nothing else has reached the simulator.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(stats(&sim, "pat-paid").requests, 1);
    let retry_after = Duration::from_millis(500);
    let mut finished = vec![hit.await.unwrap().unwrap()];
    for other in others {
        finished.push(other.await.unwrap().unwrap());
    }
    for done in finished {
        let waited = done - paused_at;
        assert!(waited >= remaining, "{waited:?} < {remaining:?}");
        assert!(
            waited < retry_after + Duration::from_millis(250),
            "{waited:?}"
        );
    }
    let stats = stats(&sim, "pat-paid");
    assert_eq!(stats.requests, 5, "one 429, then each job once: {stats:?}");
    assert_eq!(client.budget().stats().cooldowns, 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_job_finishes_early_beside_a_large_one() {
    let sim = sim_with(|_| {}).await;
    let client = client_for(&sim, "pat-free", Tier::Free);
    let run = |job: &str, count: usize| {
        let client = client.for_job(CallContext::new(job, Priority::Scheduled));
        tokio::spawn(async move {
            futures::stream::iter(0..count)
                .map(|_| {
                    let client = client.clone();
                    async move { client.me(&["name"]).await }
                })
                .buffer_unordered(20)
                .try_collect::<Vec<_>>()
                .await
                .map(|_| Instant::now())
        })
    };
    let started = Instant::now();
    let large = run("backfill-90d", 450);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let small = run("hourly", 30);
    let small_done = small.await.unwrap().unwrap() - started;
    let large_done = large.await.unwrap().unwrap() - started;
    // The large job needs three windows (3 s); the small one shares the second window.
    assert!(large_done >= Duration::from_secs(3), "{large_done:?}");
    assert!(small_done < Duration::from_millis(1_800), "{small_done:?}");
    assert_eq!(stats(&sim, "pat-free").rejected_total(), 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_of_gets_are_retried() {
    let sim = sim_with(|c| {
        c.faults.error_500 = 0.1;
        c.faults.error_503 = 0.05;
        c.faults.reset = 0.05;
        c.faults.truncate = 0.05;
    })
    .await;
    let client = client_for(&sim, "pat-paid", Tier::Paid);
    let results: Vec<_> = futures::stream::iter(0..60)
        .map(|_| {
            let client = client.clone();
            async move { client.me(&["name"]).await }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    for result in results {
        result.unwrap();
    }
    let stats = stats(&sim, "pat-paid");
    assert!(
        stats.statuses.get(&500).copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
    assert!(stats.requests > 60, "failures were retried: {stats:?}");

    // When every attempt fails, the last error comes back typed, with Asana's phrase.
    set_faults(
        &sim,
        FaultSpec {
            error_500: 1.0,
            ..FaultSpec::default()
        },
    );
    let error = client.me(&[]).await.unwrap_err();
    match &error {
        AsanaError::Server { status, phrase, .. } => {
            assert_eq!(*status, 500);
            assert!(phrase.is_some());
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(error.to_string().contains("phrase"));
    sim.shutdown().await;
}

#[tokio::test]
async fn simulator_errors_map_to_their_classes() {
    let sim = sim_with(|_| {}).await;
    let client = client_for(&sim, "pat-paid", Tier::Paid);
    let bad_limit = client
        .execute(&ApiRequest::get(
            "/users",
            Query::new().param("limit", "500"),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(bad_limit, AsanaError::BadRequest { .. }),
        "{bad_limit:?}"
    );
    let missing = client.task("1", &[]).await.unwrap_err();
    assert!(
        matches!(missing, AsanaError::NotFound { .. }),
        "{missing:?}"
    );
    let stranger = AsanaClient::new(
        ClientConfig::with_base_url(sim.base_url()),
        SecretString::from("0/not-a-token"),
        budget_for("stranger", Tier::Paid),
    )
    .unwrap();
    let unauthorized = stranger.me(&[]).await.unwrap_err();
    assert!(
        matches!(unauthorized, AsanaError::Unauthorized { .. }),
        "{unauthorized:?}"
    );
    assert_eq!(unauthorized.status(), Some(401));
    // A replaced token (an OAuth refresh) is used by every clone from then on.
    let job = stranger.for_job(CallContext::new("job", Priority::Scheduled));
    stranger.replace_token(SecretString::from(sim.token("pat-paid").unwrap()));
    assert!(job.me(&[]).await.is_ok());
    sim.shutdown().await;
}

// ---- A stub server for statuses the simulator does not produce ----

#[derive(Default)]
struct Stub {
    hits: Mutex<HashMap<String, u32>>,
    headers: Mutex<Vec<HeaderMap>>,
    /// Bodies of writes, by path.
    bodies: Mutex<Vec<(String, Value)>>,
}

/// Writes: records the body and answers like Asana (201 with the object, or the batch results).
async fn stub_write(
    State(stub): State<Arc<Stub>>,
    uri: axum::http::Uri,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let path = uri.path().trim_start_matches("/api/1.0").to_string();
    stub.bodies
        .lock()
        .unwrap()
        .push((path.clone(), body.clone()));
    let data = &body["data"];
    match path.as_str() {
        "/batch" => {
            let results: Vec<Value> = data["actions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| json!({"status_code": 200, "headers": {}, "body": {"data": {"gid": a["relative_path"]}}}))
                .collect();
            axum::Json(json!({ "data": results })).into_response()
        }
        "/organization_exports" => (
            StatusCode::CREATED,
            axum::Json(json!({"data": {"gid": "oe1", "state": "pending", "download_url": null,
                "organization": {"gid": data["organization"], "resource_type": "workspace"}}})),
        )
            .into_response(),
        _ => (
            StatusCode::CREATED,
            axum::Json(json!({"data": {"gid": "su1", "resource_type": "status_update", "title": data["title"]}})),
        )
            .into_response(),
    }
}

async fn stub_job(Path(gid): Path<String>) -> Response {
    axum::Json(
        json!({"data": {"gid": gid, "resource_type": "job", "status": "succeeded",
        "resource_subtype": "export_request",
        "new_resource_export": {"gid": "re1", "download_url": "https://example.com/x.jsonl.gz"}}}),
    )
    .into_response()
}

/// `GET /tasks?project=`: the second page's offset has always expired; a restart with
/// `modified_since` answers from that time on.
async fn stub_tasks(AxumQuery(query): AxumQuery<HashMap<String, String>>) -> Response {
    let task = |gid: &str, day: u32| json!({"gid": gid, "name": format!("Task {gid}"), "modified_at": format!("2026-01-0{day}T00:00:00.000Z")});
    if query.contains_key("offset") {
        return asana_error(400, "offset: Your pagination token has expired.");
    }
    match query.get("modified_since").map(String::as_str) {
        None => axum::Json(json!({"data": [task("t1", 1), task("t2", 2)],
            "next_page": {"offset": "stale", "path": "/tasks?offset=stale", "uri": "x"}}))
        .into_response(),
        Some("2026-01-02T00:00:00.000Z") => {
            axum::Json(json!({"data": [task("t2", 2), task("t3", 3)], "next_page": null}))
                .into_response()
        }
        Some(other) => asana_error(400, &format!("modified_since: unexpected {other}")),
    }
}

fn asana_error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        axum::Json(json!({"errors": [{"message": message, "help": "see docs"}]})),
    )
        .into_response()
}

async fn stub_case(
    State(stub): State<Arc<Stub>>,
    Path(case): Path<String>,
    headers: HeaderMap,
) -> Response {
    *stub.hits.lock().unwrap().entry(case.clone()).or_default() += 1;
    stub.headers.lock().unwrap().push(headers);
    match case.as_str() {
        "expired" => asana_error(
            401,
            "The bearer token has expired. If you have a refresh token, please use it to request a new bearer token, otherwise allow the user to re-authenticate.",
        ),
        "payment" => asana_error(402, "Search is only available to premium users."),
        "forbidden" => asana_error(403, "You do not have access to this object."),
        "legal" => asana_error(451, "Unavailable For Legal Reasons"),
        "offset" => asana_error(400, "offset: Your pagination token has expired."),
        "ratelimited" => {
            let mut response = asana_error(429, "You've made too many requests.");
            response.headers_mut().insert("retry-after", "2".parse().unwrap());
            response
        }
        "unavailable" => asana_error(503, "Service Unavailable"),
        "server" => asana_error(500, "Server Error"),
        "oauth" => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": "The refresh token is revoked."})),
        )
            .into_response(),
        "garbage" => (StatusCode::OK, "<html>not json</html>").into_response(),
        "no-envelope" => (StatusCode::OK, axum::Json(json!({"gid": "1"}))).into_response(),
        "teapot" => asana_error(418, "I'm a teapot"),
        "changes" => {
            let mut response = axum::Json(json!({"data": {"gid": "1"}})).into_response();
            let h = response.headers_mut();
            h.append("asana-change", "name=new_user_task_lists;info=https://asa.na/1;affected=true".parse().unwrap());
            h.append("asana-change", "name=new_goal_memberships;info=https://asa.na/2".parse().unwrap());
            response
        }
        _ => asana_error(404, "No matching route for request"),
    }
}

async fn stub_events(AxumQuery(query): AxumQuery<HashMap<String, String>>) -> Response {
    match query.get("sync").map(String::as_str) {
        Some("fresh") => axum::Json(json!({
            "data": [{"action": "changed", "resource": {"gid": "7"}}],
            "sync": "next-token",
            "has_more": false,
        }))
        .into_response(),
        _ => (
            StatusCode::PRECONDITION_FAILED,
            axum::Json(json!({
                "errors": [{"message": "Sync token invalid or too old."}],
                "sync": "fresh",
            })),
        )
            .into_response(),
    }
}

async fn stub_audit(AxumQuery(query): AxumQuery<HashMap<String, String>>) -> Response {
    let next = |offset: &str| json!({"offset": offset, "path": "/x", "uri": "http://x"});
    let body = match query.get("offset").map(String::as_str) {
        None => {
            json!({"data": [{"gid": "e1", "custom": {"kept": true}}, {"gid": "e2"}], "next_page": next("p2")})
        }
        Some("p2") => json!({"data": [{"gid": "e3"}], "next_page": next("p3")}),
        // Caught up: no events, but Asana still sends a next_page.
        _ => json!({"data": [], "next_page": next("p3")}),
    };
    axum::Json(body).into_response()
}

async fn start_stub() -> (String, Arc<Stub>) {
    let stub = Arc::new(Stub::default());
    let app = axum::Router::new()
        .route("/api/1.0/case/{case}", axum::routing::any(stub_case))
        .route("/api/1.0/events", axum::routing::get(stub_events))
        .route("/api/1.0/batch", axum::routing::post(stub_write))
        .route("/api/1.0/status_updates", axum::routing::post(stub_write))
        .route(
            "/api/1.0/organization_exports",
            axum::routing::post(stub_write),
        )
        .route("/api/1.0/jobs/{gid}", axum::routing::get(stub_job))
        .route("/api/1.0/tasks", axum::routing::get(stub_tasks))
        .route(
            "/api/1.0/workspaces/{gid}/audit_log_events",
            axum::routing::get(stub_audit),
        )
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/api/1.0"), stub)
}

fn stub_client(base: &str) -> AsanaClient {
    let budget = Budget::new(BudgetConfig {
        // Stub time runs 1000x: Retry-After 2 s and backoff delays become milliseconds.
        time_scale: 1000.0,
        ..BudgetConfig::new("stub", Tier::Paid)
    })
    .unwrap();
    let config = ClientConfig {
        retry: RetryConfig {
            max_attempts: 3,
            min_delay_ms: 100,
            max_delay_ms: 1_000,
            max_elapsed_secs: 600,
        },
        ..ClientConfig::with_base_url(base)
    };
    AsanaClient::new(config, SecretString::from("0/secret-stub-token"), budget).unwrap()
}

async fn get_case(client: &AsanaClient, case: &str) -> AsanaError {
    client
        .execute(&ApiRequest::get(format!("/case/{case}"), Query::new()))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn every_documented_status_has_its_typed_error() {
    let (base, stub) = start_stub().await;
    let client = stub_client(&base);
    type Check = fn(&AsanaError) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        ("expired", |e| matches!(e, AsanaError::TokenExpired { .. })),
        ("payment", |e| {
            matches!(e, AsanaError::PaymentRequired { .. })
        }),
        ("forbidden", |e| matches!(e, AsanaError::Forbidden { .. })),
        ("missing", |e| matches!(e, AsanaError::NotFound { .. })),
        ("legal", |e| matches!(e, AsanaError::LegalBlock { .. })),
        ("offset", |e| matches!(e, AsanaError::OffsetExpired { .. })),
        (
            "ratelimited",
            |e| matches!(e, AsanaError::RateLimited { retry_after, .. } if *retry_after == Duration::from_secs(2)),
        ),
        ("unavailable", |e| {
            matches!(e, AsanaError::Server { status: 503, .. })
        }),
        (
            "oauth",
            |e| matches!(e, AsanaError::OAuth { error, description: Some(_), status: 400 } if error == "invalid_grant"),
        ),
        ("garbage", |e| matches!(e, AsanaError::Decode { .. })),
        ("teapot", |e| {
            matches!(e, AsanaError::UnexpectedStatus { status: 418, .. })
        }),
    ];
    for (case, check) in cases {
        let error = get_case(&client, case).await;
        assert!(check(&error), "case {case}: got {error:?}");
        // Every message says what to do next.
        assert!(error.to_string().len() > 40, "case {case}: {error}");
    }
    let no_envelope = client
        .data::<Value>(&ApiRequest::get("/case/no-envelope", Query::new()))
        .await
        .unwrap_err();
    assert!(matches!(no_envelope, AsanaError::Decode { .. }));

    let hits = stub.hits.lock().unwrap().clone();
    // Permanent errors are not retried; 429 and 503 are, up to the attempt bound.
    for case in [
        "expired",
        "payment",
        "forbidden",
        "legal",
        "offset",
        "oauth",
        "teapot",
    ] {
        assert_eq!(hits[case], 1, "{case} was retried");
    }
    assert_eq!(hits["ratelimited"], 3);
    assert_eq!(hits["unavailable"], 3);

    // The 412 of the events API carries the new sync token, which then works.
    let error = client.events("42", None, &[]).await.unwrap_err();
    let AsanaError::SyncExpired { sync, .. } = &error else {
        panic!("expected SyncExpired, got {error:?}");
    };
    assert_eq!(error.status(), Some(412));
    let events = client.events("42", Some(sync), &[]).await.unwrap();
    assert_eq!(events.sync, "next-token");
    assert_eq!(events.data.len(), 1);
}

#[tokio::test]
async fn writes_are_retried_only_when_idempotent_but_always_after_a_429() {
    let (base, stub) = start_stub().await;
    let client = stub_client(&base);
    let post = |case: &str, idempotency| {
        ApiRequest::post(format!("/case/{case}"), json!({"text": "hi"}), idempotency)
    };
    let error = client
        .execute(&post("server", Idempotency::NotIdempotent))
        .await
        .unwrap_err();
    assert!(matches!(error, AsanaError::Server { status: 500, .. }));
    assert_eq!(stub.hits.lock().unwrap()["server"], 1);
    client
        .execute(&post("server", Idempotency::Idempotent))
        .await
        .unwrap_err();
    assert_eq!(stub.hits.lock().unwrap()["server"], 1 + 3);
    client
        .execute(&post("ratelimited", Idempotency::NotIdempotent))
        .await
        .unwrap_err();
    assert_eq!(stub.hits.lock().unwrap()["ratelimited"], 3);
}

#[tokio::test]
async fn the_audit_log_walk_stops_on_an_empty_page_and_keeps_events_raw() {
    let (base, _stub) = start_stub().await;
    let client = stub_client(&base);
    let pages: Vec<_> = client
        .audit_log_events("ws", &AuditLogFilter::default(), None)
        .pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 3);
    assert!(pages[2].data.is_empty());
    // The caught-up page still names the offset to resume from.
    assert_eq!(pages[2].next_offset.as_deref(), Some("p3"));
    assert_eq!(pages[0].data[0]["custom"]["kept"], json!(true));
    // Resuming from a stored offset starts there.
    let resumed: Vec<Value> = client
        .audit_log_events("ws", &AuditLogFilter::default(), Some("p2".into()))
        .collect()
        .await
        .unwrap();
    assert_eq!(resumed, vec![json!({"gid": "e3"})]);
}

#[tokio::test]
async fn headers_name_the_project_and_changes_are_noted_once() {
    let (base, stub) = start_stub().await;
    let client = stub_client(&base);
    for _ in 0..3 {
        client
            .execute(&ApiRequest::get("/case/changes", Query::new()))
            .await
            .unwrap();
    }
    assert_eq!(
        client.changes_seen(),
        vec![
            "new_goal_memberships".to_string(),
            "new_user_task_lists".to_string()
        ]
    );
    let headers = stub.headers.lock().unwrap()[0].clone();
    assert_eq!(headers["user-agent"], USER_AGENT);
    assert!(USER_AGENT.starts_with(concat!("asana-worker/", env!("CARGO_PKG_VERSION"))));
    assert_eq!(headers["authorization"], "Bearer 0/secret-stub-token");
    // The token never shows in Debug output.
    let debug = format!("{client:?}");
    assert!(!debug.contains("secret-stub-token"), "{debug}");
    assert!(debug.contains("redacted"));
}

#[tokio::test]
async fn typed_writes_send_data_envelopes_and_a_batch_spends_its_actions() {
    let (base, stub) = start_stub().await;
    let client = stub_client(&base);
    let actions: Vec<BatchAction> = (0..10)
        .map(|i| BatchAction::get(format!("/tasks/{i}"), &["name"]))
        .collect();
    let results = client.batch(&actions).await.unwrap();
    assert_eq!(results.len(), 10);
    assert_eq!(results[3].status_code, 200);
    assert_eq!(results[3].body["data"]["gid"], "/tasks/3");
    // The batch counted as ten requests against the quota.
    assert_eq!(client.budget().stats().spent, 10);
    assert!(matches!(
        client.batch(&[]).await,
        Err(AsanaError::BadRequest { .. })
    ));

    let update = NewStatusUpdate {
        parent: "p1".into(),
        status_type: "on_track".into(),
        text: "All good".into(),
        title: Some("Weekly".into()),
        html_text: None,
    };
    let created = client
        .create_status_update(&update, Idempotency::NotIdempotent)
        .await
        .unwrap();
    assert_eq!(created.gid, "su1");
    assert_eq!(created.other["title"], "Weekly");

    let export = client.create_organization_export("ws1").await.unwrap();
    assert_eq!(export.state.as_deref(), Some("pending"));
    assert_eq!(export.organization.unwrap().gid, "ws1");
    let job = client.job("j1").await.unwrap();
    assert_eq!(job.status.as_deref(), Some("succeeded"));
    assert_eq!(job.new_resource_export.unwrap().gid, "re1");

    let bodies = stub.bodies.lock().unwrap().clone();
    let body_of = |path: &str| bodies.iter().find(|(p, _)| p == path).unwrap().1.clone();
    assert_eq!(
        body_of("/batch")["data"]["actions"][0]["relative_path"],
        "/tasks/0"
    );
    assert_eq!(
        body_of("/batch")["data"]["actions"][0]["options"]["fields"],
        json!(["name"])
    );
    assert_eq!(
        body_of("/status_updates"),
        json!({"data": {"parent": "p1", "status_type": "on_track", "text": "All good", "title": "Weekly"}})
    );
    assert_eq!(
        body_of("/organization_exports"),
        json!({"data": {"organization": "ws1"}})
    );
}

#[tokio::test]
async fn task_walks_resume_from_modified_since_when_the_offset_expires() {
    let (base, _stub) = start_stub().await;
    let client = stub_client(&base);
    let tasks = client
        .project_tasks("p1", None, &["name", "modified_at"])
        .on_offset_expired(|last: Option<&Resource>| {
            let since = last?.other.get("modified_at")?.as_str()?.to_string();
            Some(
                Query::new()
                    .param("project", "p1")
                    .param("modified_since", since)
                    .opt_fields(&["name", "modified_at"]),
            )
        })
        .collect()
        .await
        .unwrap();
    let gids: Vec<&str> = tasks.iter().map(|t| t.gid.as_str()).collect();
    // t2 comes twice (the restart includes its modification time): callers dedupe by gid.
    assert_eq!(gids, ["t1", "t2", "t2", "t3"]);
}

#[tokio::test]
async fn waiting_for_budget_is_cancellable() {
    let (base, stub) = start_stub().await;
    let client = stub_client(&base);
    client.budget().cool_down(Duration::from_secs(3_600), false);
    let cancel = CancellationToken::new();
    let job =
        client.for_job(CallContext::new("stopping", Priority::Manual).with_cancel(cancel.clone()));
    let call = tokio::spawn(async move { job.me(&[]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancel.cancel();
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, AsanaError::Budget(_)), "{error:?}");
    assert!(stub.hits.lock().unwrap().is_empty());
}

#[test]
fn base_urls_need_https_except_on_loopback() {
    assert_eq!(
        validate_base_url("https://app.asana.com/api/1.0/").unwrap(),
        "https://app.asana.com/api/1.0"
    );
    assert!(validate_base_url("http://127.0.0.1:8080/api/1.0").is_ok());
    assert!(validate_base_url("http://localhost:8080/api/1.0").is_ok());
    assert!(validate_base_url("http://[::1]:8080/api/1.0").is_ok());
    for bad in [
        "http://app.asana.com/api/1.0",
        "ftp://app.asana.com",
        "app.asana.com/api/1.0",
        "https://app.asana.com/api/1.0?x=1",
        "https://user:pw@app.asana.com/api/1.0",
    ] {
        let error = validate_base_url(bad).unwrap_err();
        assert!(matches!(error, AsanaError::InvalidBaseUrl { .. }), "{bad}");
        assert!(error.to_string().contains("https://app.asana.com/api/1.0"));
    }
}
