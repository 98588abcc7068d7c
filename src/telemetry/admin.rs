//! The admin HTTP server: `/healthz`, `/readyz` and `/metrics`, and the status page's routes
//! handed in by the daemon. It listens on loopback unless configured otherwise and exposes no
//! secrets; the only control actions are the status page's, behind the admin token.
//!
//! `/readyz` answers 503, naming each cause, while the database cannot be read (a ping) or
//! written (the scheduler's ticks, the workers' claims: [`Health`]), while a credential an
//! enabled job uses has no token ([`Readiness`]), while the scheduler is stuck, and while the
//! daemon starts or drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::health::Health;
use crate::store::Store;

/// Checks the admin server cannot make itself: what the daemon knows (the job set, the
/// credentials' token sources).
pub trait Readiness: Send + Sync + std::fmt::Debug {
    /// Every problem now, as (what, why): e.g. ("credential sa", "token file … cannot be read").
    fn problems(&self) -> Vec<(String, String)>;

    /// Facts `/readyz` shows besides its verdict (the job set and how the replicas agree on
    /// it, the credentials this process runs), as (field, value).
    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }
}

/// What the admin endpoints look at.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The store, pinged by `/readyz` and counted for queue-depth gauges.
    pub store: Arc<dyn Store>,
    /// Renders the metrics.
    pub metrics: PrometheusHandle,
    /// Unix millis of the scheduler's last tick.
    pub scheduler_last_tick: Arc<AtomicI64>,
    /// The scheduler is considered stuck when its last tick is older than this.
    pub scheduler_stall_after: Duration,
    /// False until the daemon has started every component, and again while it drains.
    pub accepting: Arc<AtomicBool>,
    /// Wall time.
    pub clock: SharedClock,
    /// Faults the components reported (the database cannot be written, …).
    pub health: Health,
    /// The daemon's own checks (credentials of enabled jobs).
    pub readiness: Arc<dyn Readiness>,
}

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr} for the admin server: {source}; set admin.listen to a free address"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the admin listener (separately from serving, so the daemon fails fast on a taken port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// Serves until `shutdown`, with `extra` routes beside the admin endpoints (the status page,
/// which lives above this layer).
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    extra: Router,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .with_state(state)
        .merge(extra);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    // A hung database must not hang the probe: the orchestrator's own timeout would then read
    // as a failure with no reason attached.
    let store_ok = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the database did not answer within 2 s".to_string()),
    };
    let last_tick = state.scheduler_last_tick.load(Ordering::Relaxed);
    let since_tick_ms = state.clock.now().timestamp_millis() - last_tick;
    let scheduler_ok =
        last_tick > 0 && since_tick_ms <= state.scheduler_stall_after.as_millis() as i64;
    let accepting = state.accepting.load(Ordering::Relaxed);
    // Writes fail while reads work (a read-only or full database): the components that write
    // report it.
    let faults = state.health.faults();
    let store = match (
        &store_ok,
        faults.iter().find(|(name, _)| name.starts_with("store")),
    ) {
        (Err(error), _) => Err(error.clone()),
        (Ok(()), Some((component, cause))) => Err(format!("{component}: {cause}")),
        (Ok(()), None) => Ok(()),
    };
    let problems = state.readiness.problems();
    let ready =
        store.is_ok() && scheduler_ok && accepting && problems.is_empty() && faults.is_empty();
    let mut body = json!({
        "ready": ready,
        "store": store.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.clone()),
        "scheduler": if scheduler_ok { "ok".to_string() } else if last_tick == 0 { "not started".to_string() } else { format!("last tick {since_tick_ms} ms ago") },
        "credentials": if problems.is_empty() {
            json!("ok")
        } else {
            json!(problems.iter().map(|(what, why)| format!("{what}: {why}")).collect::<Vec<_>>())
        },
        "faults": faults,
        "accepting": accepting,
    });
    for (field, value) in state.readiness.details() {
        body[field] = value;
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_endpoint(State(state): State<AdminState>) -> Response {
    crate::telemetry::collect_process_metrics();
    if let Ok(bytes) = state.store.database_size_bytes().await {
        metrics::gauge!("asana_worker_database_size_bytes").set(bytes as f64);
    }
    if let Ok(counts) = state.store.count_by_state().await {
        for run_state in crate::store::RunState::ALL {
            let count = counts
                .iter()
                .find(|(s, _)| *s == run_state)
                .map(|(_, c)| *c)
                .unwrap_or(0);
            metrics::gauge!("asana_worker_queue_depth", "state" => run_state.as_str())
                .set(count as f64);
        }
    }
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}
