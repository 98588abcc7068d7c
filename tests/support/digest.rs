//! The digest tests' real receivers: an SMTP server on loopback (aiosmtpd from the project's
//! venv, `tests/python/smtp_server.py`, optionally requiring STARTTLS with a self-signed
//! certificate) and a webhook receiver (axum) that records each POST and can answer an error
//! or hang, plus a world seeded with tasks of known due dates.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// aiosmtpd on a free loopback port, killed when dropped.
pub struct SmtpServer {
    child: Child,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    /// Starts the server (with STARTTLS required when `starttls`), refusing recipients that
    /// contain `reject`; None after printing SKIPPED when no venv with aiosmtpd can be made.
    pub async fn start(test: &str, starttls: bool, reject: Option<&str>) -> Option<SmtpServer> {
        let python = match super::moto::python_with("aiosmtpd") {
            Ok(python) => python,
            Err(why) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{test}: no Python with aiosmtpd under CI: {why}"
                );
                eprintln!(
                    "SKIPPED {test}: no Python with aiosmtpd ({why}); create it with `scripts/python-venv`"
                );
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let port = super::daemon::free_port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/smtp_server.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path().join("messages.jsonl"));
        if starttls {
            command.arg("--starttls").arg(dir.path());
        }
        if let Some(reject) = reject {
            command.args(["--reject", reject]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP server");
        let server = SmtpServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the SMTP server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(server)
    }

    /// The CA file a client trusts (STARTTLS servers only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Messages received so far: `mail_from`, `rcpt_tos`, `data` (the raw message), `tls`.
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("messages.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// How the webhook receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// 200.
    Ok,
    /// This status.
    Status(u16),
    /// Never (the request is recorded, the answer withheld).
    Hang,
}

/// One POST received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, parsed.
    pub body: Value,
}

type Shared = Arc<Mutex<(Answer, Vec<Received>)>>;

/// A webhook receiver on a free loopback port.
pub struct Webhook {
    state: Shared,
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Webhook {
    /// Starts the receiver answering 200.
    pub async fn start() -> Webhook {
        let state: Shared = Arc::new(Mutex::new((Answer::Ok, Vec::new())));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let shared = shared.clone();
                async move {
                    let answer = {
                        let mut guard = shared.lock().unwrap();
                        guard.1.push(Received {
                            headers,
                            body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
                        });
                        guard.0
                    };
                    match answer {
                        Answer::Ok => StatusCode::OK,
                        Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            StatusCode::OK
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Webhook { state, url, task }
    }

    /// Changes the answer.
    pub fn answer(&self, answer: Answer) {
        self.state.lock().unwrap().0 = answer;
    }

    /// The POSTs received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().1.clone()
    }
}

/// Waits (at most `secs`) until `ready` holds.
pub async fn wait_until(secs: u64, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of the simulator's token `name` (paid budget), for calling the digest's delivery
/// code directly.
pub fn client_of(
    sim: &asana_worker::sim::SimServer,
    name: &str,
) -> asana_worker::asana::AsanaClient {
    use asana_worker::asana::{AsanaClient, ClientConfig};
    use asana_worker::budget::{Budget, BudgetConfig, Tier};
    AsanaClient::new(
        ClientConfig::with_base_url(sim.base_url()),
        sim.token(name).expect("a token").into(),
        Budget::new(BudgetConfig::new(name, Tier::Paid)).unwrap(),
    )
    .unwrap()
}
