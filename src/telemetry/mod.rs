//! Logs, metrics, traces and the admin HTTP server.
//!
//! - Logs: tracing, as text or one JSON object per line, to stderr (journald and Kubernetes
//!   collect it there).
//! - Metrics: the `metrics` facade with a Prometheus recorder, served at `/metrics`.
//! - Traces: exported over OTLP/HTTP when `telemetry.otlp_endpoint` is set.
//! - `/healthz` (the process answers), `/readyz` (the store answers and the scheduler ticks).

pub mod admin;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::settings::LogFormat;

/// Errors setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter is not valid `EnvFilter` syntax.
    #[error(
        "invalid log level {filter:?}: {message}; use e.g. \"info\" or \"asana_worker=debug,info\""
    )]
    Filter {
        /// The filter.
        filter: String,
        /// Why.
        message: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot set up OTLP export to {endpoint}: {message}")]
    Otlp {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
}

/// Keeps exporters alive; flushes traces when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer_provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global log subscriber (and the OTLP layer when an endpoint is given).
/// Returns a guard that flushes traces on drop. Safe to call twice: the second call keeps the
/// first subscriber.
pub fn init_tracing(
    level: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(level).map_err(|error| TelemetryError::Filter {
        filter: level.to_string(),
        message: error.to_string(),
    })?;
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut guard = TelemetryGuard::default();
    let otel_layer = match otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build()
                .map_err(|error| TelemetryError::Otlp {
                    endpoint: endpoint.to_string(),
                    message: error.to_string(),
                })?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("asana-worker")
                        .build(),
                )
                .build();
            let tracer = provider.tracer("asana-worker");
            guard.tracer_provider = Some(provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    Ok(guard)
}

static METRICS_HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Installs the Prometheus recorder behind the `metrics` macros (once per process) and returns
/// the handle that renders `/metrics`.
pub fn install_metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    METRICS_HANDLE
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
                ])
                .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
