//! Logs, metrics, traces and the admin HTTP server.
//!
//! - Logs: tracing, as text or one JSON object per line, to stderr (journald and Kubernetes
//!   collect it there).
//! - Metrics: the `metrics` facade with a Prometheus recorder, served at `/metrics`.
//! - Traces: exported over OTLP/HTTP when `telemetry.otlp_endpoint` is set.
//! - `/healthz` (the process answers), `/readyz` (the store answers and the scheduler ticks).

pub mod admin;
pub mod catalog;
pub mod run_logs;

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
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(run_logs::RunLogLayer::new())
        .with(otel_layer)
        .try_init()
        .is_ok();
    if installed && format == LogFormat::Json {
        install_panic_log();
    }
    Ok(guard)
}

/// Routes panics through the log stream, so a JSON log stays one JSON object per line: the
/// panic's message, place and thread become one error event (with the current span's fields,
/// such as the run's id) instead of Rust's plain-text report on stderr.
fn install_panic_log() {
    std::panic::set_hook(Box::new(|info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(text) => (*text).to_string(),
            None => info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "(no message)".to_string()),
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(
            target: "panic",
            panic = %message,
            location = %location,
            thread = %thread,
            "A thread panicked"
        );
    }));
}

/// Records the W3C trace id (32 hex digits) of `span`'s OpenTelemetry trace in its `trace_id`
/// field, so log lines inside it can be joined with the exported trace. Nothing is recorded
/// when traces are not exported (the span then has no valid trace).
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

/// CPU time, resident memory, open file descriptors and start time of this process, as
/// `asana_worker_process_*` (the metrics-process crate reads them from /proc).
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(|| metrics_process::Collector::new("asana_worker_"))
}

/// Refreshes the process metrics; called when `/metrics` is scraped.
pub fn collect_process_metrics() {
    process_collector().collect();
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
            if metrics::set_global_recorder(recorder).is_ok() {
                catalog::describe_all();
                process_collector().describe();
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    /// A writer that keeps what is logged.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_one_json_log_object_with_the_spans_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(move || writer.clone()),
        );
        let previous = std::panic::take_hook();
        super::install_panic_log();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("run", run_id = "r-1", attempt = 2);
            let _entered = span.enter();
            let _ = std::panic::catch_unwind(|| panic!("the export file vanished"));
        });
        std::panic::set_hook(previous);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["level"], "ERROR");
        assert_eq!(event["panic"], "the export file vanished");
        assert!(
            event["location"]
                .as_str()
                .unwrap()
                .contains("src/telemetry/mod.rs")
        );
        assert_eq!(event["span"]["run_id"], "r-1");
        assert_eq!(event["span"]["attempt"], 2);
    }
}
