//! The simulator as the tests use it, over real HTTP on loopback: [`SimAdmin`] for its admin API
//! (`/_sim/…`: clock, stats, faults, audit events) and [`Sim`], a simulator with a client calling
//! it as any of its tokens (the events 412 handshake, scripted changes). Tests that wait for
//! simulated time move the clock with [`SimAdmin::advance`] rather than sleeping.

use asana_worker::sim::SimServer;
use asana_worker::sim::config::SimConfig;
use asana_worker::sim::routes::events::SYNC_INVALID_MESSAGE;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The admin API of one running simulator.
#[derive(Debug, Clone)]
pub struct SimAdmin {
    origin: String,
    client: reqwest::Client,
}

impl SimAdmin {
    /// The admin API of `sim`.
    pub fn of(sim: &SimServer) -> SimAdmin {
        SimAdmin {
            origin: sim.origin(),
            client: reqwest::Client::new(),
        }
    }

    /// Sends a request to `/_sim/<path>`: its status and JSON answer (null for an empty body),
    /// for tests of the admin API's own refusals.
    pub async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}/_sim/{}", self.origin, path.trim_start_matches('/'));
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, answer)
    }

    /// Sends a request to `/_sim/<path>` and returns its JSON answer (null for an empty body);
    /// panics unless it succeeds.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.try_call(method.clone(), path, body).await;
        assert!(
            status.is_success(),
            "{method} /_sim/{path}: {status} {answer}"
        );
        answer
    }

    /// `PUT /_sim/faults` with faults written as JSON.
    pub async fn set_faults_json(&self, faults: Value) {
        self.call(reqwest::Method::PUT, "faults", Some(faults))
            .await;
    }

    /// Revokes the simulator token named `name`.
    pub async fn revoke(&self, name: &str) {
        self.post("revoke", json!({ "name": name })).await;
    }

    /// `GET /_sim/<path>`.
    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST /_sim/<path>` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The simulator's time.
    pub async fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let clock = self.get("clock").await;
        chrono::DateTime::parse_from_rfc3339(clock["now"].as_str().expect("clock.now"))
            .expect("an RFC 3339 time")
            .with_timezone(&chrono::Utc)
    }

    /// Moves the simulator's clock `secs` forward (offsets, sync tokens and download URLs age
    /// with it).
    pub async fn advance(&self, secs: i64) {
        self.post("clock", json!({ "advance_secs": secs })).await;
    }

    /// Request statistics of the token named `token` (`"service-account"`).
    pub async fn token_stats(&self, token: &str) -> Value {
        self.get("stats").await["tokens"][token].clone()
    }

    /// Resets the request statistics.
    pub async fn reset_stats(&self) {
        self.post("stats/reset", json!({})).await;
    }

    /// Replaces the faults (latency, error rates, …).
    pub async fn set_faults(&self, faults: &asana_worker::sim::config::FaultSpec) {
        self.call(
            reqwest::Method::PUT,
            "faults",
            Some(serde_json::to_value(faults).unwrap()),
        )
        .await;
    }

    /// Adds audit-log events (`{"count": N, "created_at": …}`); returns their gids.
    pub async fn append_audit_events(&self, body: Value) -> Vec<String> {
        self.post("audit_events", body).await["gids"]
            .as_array()
            .expect("gids")
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect()
    }
}

/// The default config without background churn: the world changes only when a test changes it.
pub fn quiet_config() -> SimConfig {
    let mut config = SimConfig::default();
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    config.world.audit_events = 10;
    config
}

/// A running simulator and a client calling it as the paid PAT unless told otherwise. The
/// client does not follow redirects, so OAuth tests see the simulator's `Location`.
pub struct Sim {
    /// The simulator.
    pub server: SimServer,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The paid PAT's token string.
    pub token: String,
}

impl Sim {
    /// The simulator's admin API (clock, stats, faults).
    pub fn admin_api(&self) -> SimAdmin {
        SimAdmin::of(&self.server)
    }

    /// Starts a simulator with `config`.
    pub async fn start(config: SimConfig) -> Sim {
        let server = SimServer::start(config).await.expect("simulator starts");
        let token = server.token("pat-paid").expect("paid token");
        Sim {
            server,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            token,
        }
    }

    /// Stops the simulator.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// The token string of a configured token, by name.
    pub fn token_of(&self, name: &str) -> String {
        self.server
            .token(name)
            .unwrap_or_else(|| panic!("no token {name}"))
    }

    /// Calls the API (`path` below `/api/1.0`) with `token`: status, JSON body (null when
    /// none) and headers.
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, HeaderMap) {
        let url = format!("{}{}", self.server.base_url(), path);
        let mut request = self.client.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    /// Calls the API as the paid PAT.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, body, _) = self.call_as(&self.token, method, path, body).await;
        (status, body)
    }

    /// `GET` as the paid PAT.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// `GET` as the token named `name`.
    pub async fn get_as(&self, name: &str, path: &str) -> (StatusCode, Value) {
        let (status, body, _) = self
            .call_as(&self.token_of(name), Method::GET, path, None)
            .await;
        (status, body)
    }

    /// `GET` as the paid PAT that must answer 200; its body.
    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Calls the admin API (`path` below `/_sim`): status and JSON body.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}/_sim{path}", self.server.origin());
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin request sent");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// An admin `POST` that must succeed; its body.
    pub async fn admin_ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.admin(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "POST /_sim{path}: {answer}");
        answer
    }

    /// Changes a task through the admin API, as another user of the organization would.
    pub async fn admin_change(&self, task: &str, fields: Value) -> Value {
        self.admin_ok(&format!("/tasks/{task}"), fields).await
    }

    /// Applies explicit changes through `POST /_sim/mutate`; the outcomes.
    pub async fn mutate(&self, changes: Value) -> Vec<Value> {
        let answer = self
            .admin_ok("/mutate", json!({ "changes": changes }))
            .await;
        answer["applied"].as_array().cloned().unwrap_or_default()
    }

    /// Replaces the faults.
    pub async fn faults(&self, faults: Value) {
        let (status, body) = self.admin(Method::PUT, "/faults", Some(faults)).await;
        assert_eq!(status, StatusCode::OK, "PUT /_sim/faults: {body}");
    }

    /// The 412 handshake: a fresh sync token for `path` (which carries `resource=` or is a
    /// workspace stream).
    pub async fn handshake(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
        assert_eq!(body["errors"][0]["message"], json!(SYNC_INVALID_MESSAGE));
        body["sync"]
            .as_str()
            .expect("a fresh sync token")
            .to_string()
    }

    /// The workspace's gid.
    pub async fn workspace(&self) -> String {
        gid(&self.ok("/workspaces").await["data"][0])
    }

    /// The first project of the workspace.
    pub async fn first_project(&self) -> String {
        let ws = self.workspace().await;
        gid(&self.ok(&format!("/workspaces/{ws}/projects")).await["data"][0])
    }

    /// Simulated now, as `GET /_sim/clock` reports it (RFC 3339).
    pub async fn now(&self) -> String {
        let (_, clock) = self.admin(Method::GET, "/clock", None).await;
        clock["now"].as_str().expect("the clock's now").to_string()
    }

    /// The workspace, its first project and that project's tasks.
    pub async fn project_with_tasks(&self) -> (String, String, Vec<String>) {
        let ws = self.workspace().await;
        let project = self.first_project().await;
        let tasks = gids(&self.ok(&format!("/projects/{project}/tasks")).await);
        (ws, project, tasks)
    }
}

/// `path` with `sync=` added.
pub fn with_sync(path: &str, sync: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}sync={sync}")
}

/// The gid of an object.
pub fn gid(object: &Value) -> String {
    object["gid"]
        .as_str()
        .unwrap_or_else(|| panic!("no gid in {object}"))
        .to_string()
}

/// The gids of a list answer's `data`.
pub fn gids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("data is not a list: {body}"))
        .iter()
        .map(gid)
        .collect()
}

/// The first error message of an error answer.
pub fn message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
