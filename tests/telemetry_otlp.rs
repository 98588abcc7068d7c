//! Traces arrive: a daemon process with `telemetry.otlp_endpoint` set exports its spans over
//! OTLP/HTTP to a receiver on loopback, which decodes the protobuf. Each run is a `run` span
//! (job, kind, run_id, attempt) with its Asana requests (`asana.request`: method, route template,
//! status, budget wait) and sink commits (`sink.commit`) as children in the same trace, and the
//! run's JSON log lines carry the trace's W3C id.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::audit::{AuditSetup, quiet_sim, terminate};

type Received = Arc<Mutex<Vec<Span>>>;

async fn receive(State(spans): State<Received>, body: Bytes) -> &'static [u8] {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut held = spans.lock().unwrap();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            held.extend(scope.spans);
        }
    }
    &[]
}

/// An OTLP/HTTP trace receiver on loopback: its base URL and what it received.
async fn receiver() -> (String, Received) {
    let spans: Received = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            AnyValue::StringValue(text) => text.clone(),
            AnyValue::IntValue(n) => n.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            AnyValue::DoubleValue(x) => x.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_spans_reach_an_otlp_receiver_with_their_parent_links() {
    let (url, spans) = receiver().await;
    let setup = AuditSetup::new(
        quiet_sim(40, 1.0),
        "every = \"1h\"",
        "start = \"1d\"\npage_size = 10",
    )
    .await;
    let mut daemon = setup.daemon.start_with_env(
        "otlp",
        &[
            ("ASANA_WORKER__TELEMETRY__OTLP_ENDPOINT", url.as_str()),
            ("ASANA_WORKER__LOG__FORMAT", "json"),
        ],
    );
    setup.wait_ready(&mut daemon).await;
    setup.run_job();
    // The batch processor exports within seconds; the daemon flushes what is left at shutdown.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !spans
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.name == "sink.commit")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(&mut daemon);
    let log = setup.daemon.log("otlp");
    assert!(!log.contains("panicked"), "{log}");

    let spans = spans.lock().unwrap().clone();
    let run = spans
        .iter()
        .find(|s| s.name == "run" && attribute(s, "job").as_deref() == Some("audit"))
        .unwrap_or_else(|| {
            panic!(
                "a run span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(attribute(run, "kind").as_deref(), Some("audit_log"));
    assert!(attribute(run, "run_id").is_some());
    assert_eq!(attribute(run, "attempt").as_deref(), Some("1"));
    let children = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| {
                s.name == name && s.trace_id == run.trace_id && s.parent_span_id == run.span_id
            })
            .collect()
    };
    let requests = children("asana.request");
    assert!(
        requests.len() >= 4,
        "the run's requests, as its children: {}",
        requests.len()
    );
    let audit = requests
        .iter()
        .find(|s| {
            attribute(s, "http.route").as_deref() == Some("/workspaces/{gid}/audit_log_events")
        })
        .expect("a request to the audit log, by route template");
    assert_eq!(
        attribute(audit, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(audit, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(attribute(audit, "budget.wait_ms").is_some());
    // The run's log lines carry its W3C trace id, so logs and traces join.
    let trace_id = hex::encode(&run.trace_id);
    let run_lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|line| {
            line.to_string()
                .contains(&attribute(run, "run_id").unwrap())
        })
        .collect();
    assert!(!run_lines.is_empty(), "the run logged: {log}");
    for line in &run_lines {
        assert!(
            line.to_string()
                .contains(&format!("\"trace_id\":\"{trace_id}\"")),
            "{line}"
        );
    }
    let commits = children("sink.commit");
    assert!(
        !commits.is_empty(),
        "the sink's commits, as children of the run"
    );
    assert_eq!(attribute(commits[0], "sink").as_deref(), Some("file"));
}
