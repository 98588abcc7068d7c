//! The client's typed methods against the simulator's real endpoints: the audit-log walk stops
//! when caught up, search uses its bucket, the events 412 hands over the new sync token, and
//! export jobs wait for one of the user's five export slots instead of drawing 429s.

mod support;
use support::sim::SimAdmin;

use std::time::Duration;

use asana_worker::asana::{
    AsanaClient, AsanaError, AuditLogFilter, ClientConfig, Query, RetryConfig,
};
use asana_worker::budget::{Budget, BudgetConfig, BudgetRegistry, Tier};
use asana_worker::sim::{SimConfig, SimServer};
use futures::StreamExt;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const SCALE: f64 = 60.0;

async fn sim(configure: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut config = SimConfig {
        time_scale: SCALE,
        ..SimConfig::default()
    };
    config.timing.audit_events_per_minute = 0.0;
    config.timing.activity_per_minute = 0.0;
    configure(&mut config);
    SimServer::start(config).await.expect("simulator starts")
}

fn client(sim: &SimServer, name: &str, budget: Budget) -> AsanaClient {
    let config = ClientConfig {
        retry: RetryConfig {
            min_delay_ms: 10,
            max_delay_ms: 100,
            ..RetryConfig::default()
        },
        ..ClientConfig::with_base_url(sim.base_url())
    };
    AsanaClient::new(config, SecretString::from(sim.token(name).unwrap()), budget).unwrap()
}

fn budget(name: &str) -> Budget {
    Budget::new(BudgetConfig {
        time_scale: SCALE,
        ..BudgetConfig::new(name, Tier::Paid)
    })
    .unwrap()
}

#[tokio::test]
async fn the_audit_log_walk_reads_every_event_once_and_stops_when_caught_up() {
    let sim = sim(|c| c.world.audit_events = 730).await;
    let client = client(&sim, "service-account", budget("service-account"));
    let workspace = sim.state().world().workspace.gid.clone();
    let events: Vec<serde_json::Value> = client
        .audit_log_events(&workspace, &AuditLogFilter::default(), None)
        .collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 730);
    let mut gids: Vec<&str> = events.iter().map(|e| e["gid"].as_str().unwrap()).collect();
    gids.sort();
    gids.dedup();
    assert_eq!(gids.len(), 730, "no event twice");

    // The last page's offset resumes exactly after the last event.
    let pages: Vec<_> = client
        .audit_log_events(&workspace, &AuditLogFilter::default(), None)
        .pages()
        .collect()
        .await;
    let last = pages.last().unwrap().as_ref().unwrap();
    assert!(last.data.is_empty(), "caught up means an empty page");
    let offset = last
        .next_offset
        .clone()
        .expect("Asana keeps sending next_page");
    SimAdmin::of(&sim)
        .append_audit_events(serde_json::json!({"count": 3}))
        .await;
    let newer: Vec<serde_json::Value> = client
        .audit_log_events(&workspace, &AuditLogFilter::default(), Some(offset))
        .collect()
        .await
        .unwrap();
    assert_eq!(newer.len(), 3, "only the events that arrived since");
    sim.shutdown().await;
}

#[tokio::test]
async fn search_answers_from_the_simulator_and_free_tokens_get_payment_required() {
    let sim = sim(|_| {}).await;
    let workspace = sim.state().world().workspace.gid.clone();
    let paid = client(&sim, "pat-paid", budget("pat-paid"));
    let found = paid
        .search_tasks(
            &workspace,
            Query::new()
                .param("completed", "false")
                .param("limit", "100"),
            &["name", "completed"],
        )
        .await
        .unwrap();
    assert!(!found.is_empty());
    let free = client(&sim, "pat-free", budget("pat-free"));
    let refused = free
        .search_tasks(&workspace, Query::new(), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AsanaError::PaymentRequired { .. }),
        "{refused:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_events_handshake_returns_the_new_sync_token_and_then_changes() {
    let sim = sim(|_| {}).await;
    let client = client(&sim, "pat-paid", budget("pat-paid"));
    let task = sim.state().world().tasks.iter().next().unwrap().gid.clone();
    let sync = match client.events(&task, None, &[]).await.unwrap_err() {
        AsanaError::SyncExpired { sync, .. } => sync,
        other => panic!("expected a 412 with a sync token, got {other:?}"),
    };
    SimAdmin::of(&sim)
        .post(
            &format!("tasks/{task}"),
            serde_json::json!({"name": "Renamed by the test"}),
        )
        .await;
    let page = client.events(&task, Some(&sync), &[]).await.unwrap();
    assert!(!page.data.is_empty(), "the rename produced an event");
    assert!(!page.sync.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn export_jobs_wait_for_a_slot_and_never_exceed_five_per_user() {
    let sim = sim(|c| {
        c.timing.export_pending_secs = 2;
        c.timing.export_running_secs = 10;
    })
    .await;
    let registry = BudgetRegistry::new();
    let user = sim.state().world().users.at(0).unwrap().gid.clone();
    let budget = registry
        .budget(
            BudgetConfig {
                time_scale: SCALE,
                ..BudgetConfig::new("service-account", Tier::Paid)
            },
            &user,
        )
        .unwrap();
    let client = client(&sim, "service-account", budget.clone());
    let workspace = sim.state().world().workspace.gid.clone();
    let jobs = (0..8).map(|_| {
        let client = client.clone();
        let budget = budget.clone();
        let workspace = workspace.clone();
        async move {
            let _slot = budget.export_slot(&CancellationToken::new()).await.unwrap();
            let export = client.create_organization_export(&workspace).await.unwrap();
            loop {
                let state = client.organization_export(&export.gid).await.unwrap();
                match state.state.as_deref() {
                    Some("finished") => return state.download_url.is_some(),
                    Some("error") => return false,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    });
    let finished = futures::future::join_all(jobs).await;
    assert!(finished.iter().all(|ok| *ok), "{finished:?}");
    let stats = sim
        .state()
        .limits
        .stats(&sim.token("service-account").unwrap());
    assert!(stats.peak_concurrent_jobs <= 5, "{stats:?}");
    assert_eq!(stats.peak_concurrent_jobs, 5, "the slots are used fully");
    assert_eq!(stats.rejected_total(), 0, "no 429s: {stats:?}");
    sim.shutdown().await;
}
