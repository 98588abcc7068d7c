//! The `http` sink against a small real collector started here (axum on 127.0.0.1:0): the
//! collector is an external system, so the test plays it and records every request it gets.
//! Bodies in each format, Splunk HEC envelopes and auth, retries that keep the idempotency key,
//! batching by `batch_events`, the local delivery manifest that `recover` reads after a restart,
//! and a token that never reaches logs or error messages.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asana_worker::sinks::http::{HttpFormat, HttpSink, HttpSinkSettings};
use asana_worker::sinks::http_post::HttpEndpoint;
use asana_worker::sinks::{Batch, RecordMark, RecordSink, Recovered, SinkContext, SinkError};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{TimeZone, Utc};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::Digest;

const TOKEN: &str = "hec-canary-9d41c7";

/// One request the collector received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    key: Option<String>,
    auth: Option<String>,
    content_type: Option<String>,
    body: String,
}

/// A scripted answer: status, Retry-After, body.
type Scripted = (u16, Option<&'static str>, String);

/// A collector that answers with scripted statuses first, then 200.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<Received>>>,
    /// (status, Retry-After, body) answered before the first 200s, in order.
    script: Arc<Mutex<VecDeque<Scripted>>>,
    /// Delays before answering, one per request, in order (after the request is recorded).
    delays: Arc<Mutex<VecDeque<Duration>>>,
}

impl Collector {
    async fn start() -> (Self, String, tokio::task::JoinHandle<()>) {
        let collector = Collector::default();
        let state = collector.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let response = state.handle(uri, headers, body);
                let delay = state.delays.lock().unwrap().pop_front();
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (collector, format!("http://{addr}"), server)
    }

    fn handle(&self, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        self.received.lock().unwrap().push(Received {
            path: uri.path().to_string(),
            key: header("idempotency-key"),
            auth: header("authorization"),
            content_type: header("content-type"),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some((status, retry_after, text)) => {
                let mut response = (StatusCode::from_u16(status).unwrap(), text).into_response();
                if let Some(after) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", after.parse().unwrap());
                }
                response
            }
            None => (StatusCode::OK, r#"{"text":"Success","code":0}"#).into_response(),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn push(&self, status: u16, retry_after: Option<&'static str>, body: &str) {
        self.script
            .lock()
            .unwrap()
            .push_back((status, retry_after, body.to_string()));
    }
}

fn settings(
    url: &str,
    format: HttpFormat,
    token_file: Option<std::path::PathBuf>,
) -> HttpSinkSettings {
    HttpSinkSettings {
        endpoint: HttpEndpoint {
            url: url.to_string(),
            token_file,
            token_env: None,
            timeout: Duration::from_secs(5),
            max_attempts: 4,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        format,
        batch_events: 2,
    }
}

fn token_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("collector.token");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "{TOKEN}").unwrap();
    path
}

fn event(gid: u64) -> Value {
    json!({
        "gid": gid.to_string(),
        "created_at": format!("2026-03-01T10:00:0{}.250Z", gid % 10),
        "event_type": "user_login_succeeded",
        "actor": {"gid": "42", "actor_type": "user"},
    })
}

fn batch(stream: &str, sequence: u64, gids: std::ops::RangeInclusive<u64>) -> Batch {
    let events: Vec<Value> = gids.clone().map(event).collect();
    let mark = |v: &Value| RecordMark {
        gid: v["gid"].as_str().unwrap().to_string(),
        created_at: v["created_at"].as_str().unwrap().to_string(),
    };
    Batch {
        stream: stream.to_string(),
        sequence,
        records: events
            .iter()
            .map(|v| RawValue::from_string(v.to_string()).unwrap())
            .collect(),
        first: mark(events.first().unwrap()),
        last: mark(events.last().unwrap()),
        cursor: json!({"offset": format!("after-{}", gids.end())}),
        now: Utc.with_ymd_and_hms(2026, 3, 1, 10, 5, 0).unwrap(),
    }
}

/// The idempotency key the sink gives chunk `chunk` of batch `sequence` with this body.
fn key(stream: &str, sequence: u64, chunk: usize, body: &str) -> String {
    let digest = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    format!("{stream}-{sequence}-{chunk}-{}", &digest[..16])
}

fn context(dir: &std::path::Path) -> SinkContext {
    SinkContext {
        state_dir: dir.join("state"),
    }
}

#[tokio::test]
async fn ndjson_posts_in_chunks_of_batch_events_and_recovers_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, base, _server) = Collector::start().await;
    let settings = settings(
        &format!("{base}/ingest"),
        HttpFormat::Ndjson,
        Some(token_file(dir.path())),
    );
    let sink = HttpSink::new(&settings, &context(dir.path())).unwrap();
    assert_eq!(sink.recover("audit").await.unwrap(), None);

    sink.commit(batch("audit", 1, 1..=5)).await.unwrap();
    let got = collector.received();
    assert_eq!(got.len(), 3, "5 events in chunks of 2: {got:#?}");
    // One key per chunk: the batch, the chunk and the body's digest.
    for (chunk, r) in got.iter().enumerate() {
        assert_eq!(r.key, Some(key("audit", 1, chunk, &r.body)));
    }
    assert!(got[0].key.as_ref().unwrap().starts_with("audit-1-0-"));
    for r in &got {
        assert_eq!(r.path, "/ingest");
        assert_eq!(r.auth.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
        assert_eq!(r.content_type.as_deref(), Some("application/x-ndjson"));
        assert!(r.body.ends_with('\n'));
    }
    let lines: Vec<Value> = got
        .iter()
        .flat_map(|r| {
            r.body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect();
    assert_eq!(lines, (1..=5).map(event).collect::<Vec<_>>());

    // The same sequence again (a job retrying after a crash) is not posted twice.
    sink.commit(batch("audit", 1, 1..=5)).await.unwrap();
    assert_eq!(collector.received().len(), 3);
    sink.commit(batch("audit", 2, 6..=6)).await.unwrap();
    assert_eq!(collector.received().len(), 4);

    // While this sink (a run) holds the stream, another run cannot write its manifest.
    let rival = HttpSink::new(&settings, &context(dir.path())).unwrap();
    let err = rival.recover("audit").await.unwrap_err();
    assert!(
        err.is_transient() && err.to_string().contains("another run"),
        "{err}"
    );
    drop(rival);
    drop(sink);

    // A new process finds the last acknowledged batch in the local manifest.
    let reopened = HttpSink::new(&settings, &context(dir.path())).unwrap();
    assert_eq!(
        reopened.recover("audit").await.unwrap(),
        Some(Recovered {
            sequence: 2,
            cursor: json!({"offset": "after-6"})
        })
    );
    assert_eq!(reopened.recover("other").await.unwrap(), None);
    let report = reopened.verify("audit").unwrap();
    assert_eq!((report.entries, report.records), (2, 6));
    // The manifest is chained: editing one entry is detected.
    let manifest = reopened.manifest_path("audit");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("\"count\":5", "\"count\":4", 1)).unwrap();
    let err = reopened.verify("audit").unwrap_err();
    assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn json_format_posts_one_array_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, base, _server) = Collector::start().await;
    let mut settings = settings(&format!("{base}/bulk"), HttpFormat::Json, None);
    settings.batch_events = 3;
    let sink = HttpSink::new(&settings, &context(dir.path())).unwrap();
    sink.commit(batch("audit", 7, 1..=4)).await.unwrap();
    let got = collector.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].auth, None,
        "no token configured, no Authorization header"
    );
    assert_eq!(got[0].content_type.as_deref(), Some("application/json"));
    let first: Vec<Value> = serde_json::from_str(&got[0].body).unwrap();
    let second: Vec<Value> = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(first, (1..=3).map(event).collect::<Vec<_>>());
    assert_eq!(second, vec![event(4)]);
    assert_eq!(got[1].key, Some(key("audit", 7, 1, &got[1].body)));

    // A redirect is reported, not followed; a job name that is not a directory name is refused.
    collector.push(307, None, "moved");
    let err = sink.commit(batch("audit", 8, 5..=5)).await.unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("redirects"),
        "{err}"
    );
    let err = sink.recover("..").await.unwrap_err();
    assert!(matches!(err, SinkError::Config { .. }), "{err}");
}

#[tokio::test]
async fn splunk_hec_sends_envelopes_to_the_event_endpoint_with_the_splunk_token() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, base, _server) = Collector::start().await;
    let settings = settings(&base, HttpFormat::SplunkHec, Some(token_file(dir.path())));
    let sink = HttpSink::new(&settings, &context(dir.path())).unwrap();
    sink.commit(batch("audit", 1, 1..=2)).await.unwrap();
    let got = collector.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/collector/event");
    assert_eq!(
        got[0].auth.as_deref(),
        Some(format!("Splunk {TOKEN}").as_str())
    );
    let envelopes: Vec<Value> = got[0]
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(envelopes.len(), 2);
    assert_eq!(envelopes[0]["event"], event(1));
    // 2026-03-01T10:00:01.250Z in epoch seconds.
    let expected = Utc
        .with_ymd_and_hms(2026, 3, 1, 10, 0, 1)
        .unwrap()
        .timestamp() as f64
        + 0.25;
    assert_eq!(envelopes[0]["time"].as_f64().unwrap(), expected);
    assert_eq!(envelopes[1]["event"], event(2));
    assert_eq!(envelopes[1]["source"], "audit");

    // Splunk HEC cannot work without its token.
    let mut no_token = settings.clone();
    no_token.endpoint.token_file = None;
    let err = HttpSink::new(&no_token, &context(dir.path())).unwrap_err();
    assert!(err.to_string().contains("token_file or token_env"), "{err}");
}

/// Captures log output of the current thread (the test runtime is single-threaded).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn retries_on_503_and_429_resend_the_same_key_and_never_log_the_token() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let (collector, base, _server) = Collector::start().await;
    let settings = settings(
        &format!("{base}/ingest"),
        HttpFormat::Ndjson,
        Some(token_file(dir.path())),
    );
    let sink = HttpSink::new(&settings, &context(dir.path())).unwrap();
    collector.push(503, None, "busy");
    collector.push(429, Some("1"), "slow down");
    let started = std::time::Instant::now();
    sink.commit(batch("audit", 3, 1..=2)).await.unwrap();
    let got = collector.received();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got.iter()
            .all(|r| r.key == Some(key("audit", 3, 0, &got[0].body)))
    );
    assert!(got.iter().all(|r| r.body == got[0].body));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the 429's Retry-After of 1s was honoured"
    );
    assert_eq!(sink.recover("audit").await.unwrap().unwrap().sequence, 3);

    // A collector that keeps failing: the commit fails as transient and nothing is recorded.
    // The next run's recovery resends the stored batch, same body under the same key, and
    // records it; committing the batch again then posts nothing.
    for _ in 0..4 {
        collector.push(502, None, "bad gateway");
    }
    let err = sink.commit(batch("audit", 4, 3..=3)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("after 4 attempt(s)"), "{err}");
    assert!(sink.pending_path("audit").exists());
    assert_eq!(sink.recover("audit").await.unwrap().unwrap().sequence, 4);
    assert!(!sink.pending_path("audit").exists());
    sink.commit(batch("audit", 4, 3..=3)).await.unwrap();
    let got = collector.received();
    assert_eq!(got.len(), 3 + 4 + 1);
    assert!(
        got[3..]
            .iter()
            .all(|r| r.key == Some(key("audit", 4, 0, &got[3].body)) && r.body == got[3].body)
    );

    // A collector that echoes the Authorization header in its refusal: the error says what
    // to fix, without the token.
    collector.push(401, None, &format!("invalid token 'Bearer {TOKEN}'"));
    let err = sink.commit(batch("audit", 5, 4..=4)).await.unwrap_err();
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains("401") && text.contains("token_file"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!format!("{err:?}").contains(TOKEN));
    assert!(!format!("{sink:?}").contains(TOKEN));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("Retrying POST"), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
}

#[tokio::test]
async fn plain_http_is_refused_except_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let remote = settings(
        "http://collector.example.com/ingest",
        HttpFormat::Ndjson,
        None,
    );
    let err = HttpSink::new(&remote, &context(dir.path())).unwrap_err();
    assert!(matches!(err, SinkError::Config { .. }), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    let secure = settings(
        "https://collector.example.com/ingest",
        HttpFormat::Ndjson,
        None,
    );
    assert!(HttpSink::new(&secure, &context(dir.path())).is_ok());
    let mut missing_env = secure;
    missing_env.endpoint.token_env = Some("ASANA_WORKER_TEST_SURELY_UNSET_TOKEN".into());
    let err = HttpSink::new(&missing_env, &context(dir.path())).unwrap_err();
    assert!(
        err.to_string()
            .contains("ASANA_WORKER_TEST_SURELY_UNSET_TOKEN"),
        "{err}"
    );
}

/// `asana-worker verify --job NAME` checks an http sink's delivery manifest in the state
/// directory (the SQLite database's directory).
#[tokio::test]
async fn verify_command_checks_the_delivery_manifest_of_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let (_collector, base, _server) = Collector::start().await;
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n[jobs]\ndir = \"{jobs}\"\n\
             [credentials.main]\nkind = \"pat\"\ntoken_env = \"ASANA_WORKER_TEST_UNUSED_TOKEN\"\n",
            db = dir.path().join("state.sqlite").display(),
            jobs = dir.path().join("jobs").display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("jobs/audit-http.toml"),
        format!(
            "name = \"audit-http\"\nkind = \"audit_log\"\nevery = \"5m\"\ncredential = \"main\"\n\
             [settings]\nworkspace = \"1\"\n[settings.sink]\ntype = \"http\"\nurl = \"{base}/ingest\"\n"
        ),
    )
    .unwrap();
    let settings = settings(&format!("{base}/ingest"), HttpFormat::Ndjson, None);
    let sink = HttpSink::new(
        &settings,
        &SinkContext {
            state_dir: dir.path().to_path_buf(),
        },
    )
    .unwrap();
    sink.commit(batch("audit-http", 1, 1..=3)).await.unwrap();
    sink.commit(batch("audit-http", 2, 4..=4)).await.unwrap();

    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_asana-worker"))
            .env_remove("ASANA_WORKER_CONFIG")
            .args(["verify", "--job", "audit-http", "--config"])
            .arg(dir.path().join("config.toml"))
            .output()
            .unwrap()
    };
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK ") && stdout.contains("2 batch(es), 4 record(s)"),
        "{stdout}"
    );

    // Remove the first entry: the chain no longer starts at genesis.
    let manifest = sink.manifest_path("audit-http");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&manifest, rest).unwrap();
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED") && stdout.contains("prev_hash does not match"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_slow_collector_times_out_and_the_post_is_retried_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, base, _server) = Collector::start().await;
    let mut settings = settings(&format!("{base}/ingest"), HttpFormat::Ndjson, None);
    settings.endpoint.timeout = Duration::from_millis(300);
    let sink = HttpSink::new(&settings, &context(dir.path())).unwrap();
    collector
        .delays
        .lock()
        .unwrap()
        .push_back(Duration::from_secs(2));
    sink.commit(batch("audit", 1, 1..=1)).await.unwrap();
    let got = collector.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].key, got[1].key);
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(sink.recover("audit").await.unwrap().unwrap().sequence, 1);
}

/// The window the sink exists for, without luck: the collector keeps a POST's body but its
/// answer never arrives (here: a timeout, the only attempt), so the batch is not recorded. The
/// next process rebuilds the batch with another split (`batch_events`) and a later clock; its
/// recovery resends the stored bodies byte for byte under the same keys, and the rebuilt batch
/// is never posted. Every key carries one body, and every event arrives once.
#[tokio::test]
async fn an_unanswered_post_is_resent_byte_for_byte_after_a_restart_with_another_split() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, base, _server) = Collector::start().await;
    let mut first = settings(&format!("{base}/ingest"), HttpFormat::SplunkHec, None);
    first.endpoint.token_file = Some(token_file(dir.path()));
    first.batch_events = 2;
    first.endpoint.max_attempts = 1;
    first.endpoint.timeout = Duration::from_millis(300);
    let sink = HttpSink::new(&first, &context(dir.path())).unwrap();
    sink.commit(batch("audit", 1, 1..=2)).await.unwrap();
    // Batch 2: the first chunk is answered, the second is kept and never answered in time.
    {
        let mut delays = collector.delays.lock().unwrap();
        delays.push_back(Duration::ZERO);
        delays.push_back(Duration::from_secs(2));
    }
    let mut stored = batch("audit", 2, 3..=6);
    stored.records[3] = RawValue::from_string(
        r#"{"gid":"6","note":"no created_at: HEC time is the batch's now"}"#.into(),
    )
    .unwrap();
    let err = sink.commit(stored.clone()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    drop(sink);
    let before = collector.received();
    assert_eq!(before.len(), 3, "{before:#?}");

    // A restart: other chunks, a later clock, the same sequence rebuilt from the checkpoint.
    let mut second = first.clone();
    second.batch_events = 3;
    second.endpoint.timeout = Duration::from_secs(5);
    let restarted = HttpSink::new(&second, &context(dir.path())).unwrap();
    let recovered = restarted.recover("audit").await.unwrap().unwrap();
    assert_eq!(recovered.sequence, 2);
    assert_eq!(recovered.cursor, stored.cursor);
    let mut rebuilt = stored.clone();
    rebuilt.now += chrono::Duration::hours(1);
    restarted.commit(rebuilt).await.unwrap();
    restarted.commit(batch("audit", 3, 7..=9)).await.unwrap();

    let got = collector.received();
    let mut by_key: std::collections::BTreeMap<String, String> = Default::default();
    for r in &got {
        let key = r.key.clone().unwrap();
        let previous = by_key.insert(key.clone(), r.body.clone());
        assert!(
            previous.is_none_or(|p| p == r.body),
            "{key} was posted with two bodies"
        );
    }
    // Batch 2's two chunks went out again exactly as first posted.
    assert_eq!(got[3].key, before[1].key);
    assert_eq!(got[3].body, before[1].body);
    assert_eq!(got[4].key, before[2].key);
    assert_eq!(got[4].body, before[2].body);
    let mut gids: Vec<String> = by_key
        .values()
        .flat_map(|body| {
            body.lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["event"]["gid"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    gids.sort_by_key(|g| g.parse::<u64>().unwrap());
    assert_eq!(gids, (1..=9).map(|g| g.to_string()).collect::<Vec<_>>());
    assert_eq!(restarted.verify("audit").unwrap().records, 9);
}
