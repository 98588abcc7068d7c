//! The simulator's admin API (`/_sim/…`) as the tests use it: one client instead of a private
//! copy per test file. Tests that wait for simulated time move the clock with
//! [`SimAdmin::advance`] rather than sleeping.

use asana_worker::sim::SimServer;
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

    /// Sends a request to `/_sim/<path>` and returns its JSON answer (null for an empty body);
    /// panics unless it succeeds.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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
        assert!(status.is_success(), "{method} {url}: {status} {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
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
