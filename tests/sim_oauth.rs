//! The simulator's OAuth endpoints: authorization code with PKCE, refresh, expiry of access
//! tokens, revocation and introspection, in Asana's shapes.

mod support;
use support::sim::SimAdmin;

use asana_worker::sim::config::SimConfig;
use asana_worker::sim::wire::TOKEN_EXPIRED_MESSAGE;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

const CLIENT: &str = "sim-oauth-client";
const SECRET: &str = "sim-oauth-secret";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "the-code-verifier-of-this-test-0123456789-abcdefghijklmnop";

fn config() -> SimConfig {
    let mut config = SimConfig::default();
    config.timing.audit_events_per_minute = 0.0;
    config.timing.activity_per_minute = 0.0;
    config
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The shared simulator client (which follows no redirects) with the OAuth flows of these
/// tests.
struct Sim(support::sim::Sim);

impl std::ops::Deref for Sim {
    type Target = support::sim::Sim;
    fn deref(&self) -> &support::sim::Sim {
        &self.0
    }
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        Sim(support::sim::Sim::start(config).await)
    }

    /// Runs the authorize step; returns the `Location` it redirects to.
    async fn authorize(&self, extra: &[(&str, &str)]) -> (u16, String) {
        let mut query = vec![
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("state", "st@te 1"),
        ];
        query.extend_from_slice(extra);
        let response = self
            .client
            .get(format!("{}/-/oauth_authorize", self.server.origin()))
            .query(&query)
            .send()
            .await
            .unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (response.status().as_u16(), location)
    }

    async fn code(&self, verifier: &str, scope: Option<&str>) -> String {
        let challenge = challenge(verifier);
        let mut extra = vec![
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if let Some(scope) = scope {
            extra.push(("scope", scope));
        }
        let (status, location) = self.authorize(&extra).await;
        assert_eq!(status, 302);
        assert!(location.starts_with(&format!("{REDIRECT}?")), "{location}");
        let query = &location[REDIRECT.len() + 1..];
        let params: Vec<(String, String)> = url_pairs(query);
        assert!(
            params.contains(&("state".into(), "st@te 1".into())),
            "{params:?}"
        );
        params
            .into_iter()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v)
            .expect("code in redirect")
    }

    async fn form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.server.origin()))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn exchange(&self, code: &str, verifier: &str, redirect: &str) -> (u16, Value) {
        self.form(
            "/-/oauth_token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("redirect_uri", redirect),
                ("code", code),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    async fn tokens(&self) -> (String, String) {
        let code = self.code(VERIFIER, None).await;
        let (status, body) = self.exchange(&code, VERIFIER, REDIRECT).await;
        assert_eq!(status, 200, "{body}");
        (
            body["access_token"].as_str().unwrap().to_string(),
            body["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.form(
            "/-/oauth_token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn me(&self, access_token: &str) -> (u16, Value) {
        let (status, body, _) = self
            .call_as(access_token, reqwest::Method::GET, "/users/me", None)
            .await;
        (status.as_u16(), body)
    }

    async fn grants(&self) -> Vec<Value> {
        self.admin_api().get("oauth/grants").await["grants"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn user_gid(&self) -> String {
        let client = &self.server.state().config.effective_oauth_clients()[0];
        self.server
            .state()
            .world()
            .users
            .at(client.user)
            .unwrap()
            .gid
            .clone()
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn code_exchange_with_pkce_then_refresh() {
    let sim = Sim::start(config()).await;

    // Wrong client secret: 401 invalid_client (the code is not spent).
    let code = sim.code(VERIFIER, None).await;
    let (status, body) = sim
        .form(
            "/-/oauth_token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT),
                ("client_secret", "wrong"),
                ("redirect_uri", REDIRECT),
                ("code", &code),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    // Wrong verifier, then wrong redirect URI: invalid_grant.
    let (status, body) = sim.exchange(&code, "not-the-verifier", REDIRECT).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(body["error_description"].is_string());
    let code = sim.code(VERIFIER, None).await;
    let (status, body) = sim
        .exchange(&code, VERIFIER, "http://127.0.0.1:9/other")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let code = sim.code(VERIFIER, None).await;
    let (status, body) = sim.exchange(&code, VERIFIER, REDIRECT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["data"]["gid"], sim.user_gid());
    assert!(body["data"]["email"].is_string() && body["data"]["name"].is_string());
    let access = body["access_token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    // The code is single use.
    let (status, body) = sim.exchange(&code, VERIFIER, REDIRECT).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let (status, me) = sim.me(&access).await;
    assert_eq!(status, 200);
    assert_eq!(me["data"]["gid"], sim.user_gid());

    let (status, body) = sim.refresh(&refresh).await;
    assert_eq!(status, 200, "{body}");
    let renewed = body["access_token"].as_str().unwrap();
    assert_ne!(renewed, access);
    assert!(
        body.get("refresh_token").is_none(),
        "refresh tokens do not rotate"
    );
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(sim.me(renewed).await.0, 200);
    sim.refresh(&refresh).await;
    let grants = sim.grants().await;
    let grant = grants
        .iter()
        .find(|g| g["refresh_token"] == refresh.as_str())
        .unwrap();
    assert_eq!(grant["refreshes"], 2);

    let (status, body) = sim
        .form(
            "/-/oauth_token",
            &[
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let response = sim
        .client
        .post(format!("{}/-/oauth_token", sim.server.origin()))
        .json(&serde_json::json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        400,
        "the endpoint takes forms only"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    sim.0.shutdown().await;
}

#[tokio::test]
async fn authorize_rejects_unknown_clients_and_other_response_types() {
    let sim = Sim::start(config()).await;
    let response = sim
        .client
        .get(format!("{}/-/oauth_authorize", sim.server.origin()))
        .query(&[
            ("client_id", "nobody"),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let (status, location) = sim.authorize(&[]).await;
    assert_eq!(status, 302);
    assert!(location.contains("code="), "PKCE is optional: {location}");
    let response = sim
        .client
        .get(format!("{}/-/oauth_authorize", sim.server.origin()))
        .query(&[
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("response_type", "token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.contains("error=unsupported_response_type"),
        "{location}"
    );
    sim.0.shutdown().await;
}

#[tokio::test]
async fn an_expired_access_token_gets_asanas_expired_message_and_refresh_recovers() {
    let mut config = config();
    config.timing.access_token_ttl_secs = 10;
    let sim = Sim::start(config).await;
    let (access, refresh) = sim.tokens().await;
    assert_eq!(sim.me(&access).await.0, 200);
    SimAdmin::of(&sim.server).advance(14).await;
    let (status, body) = sim.me(&access).await;
    assert_eq!(status, 401);
    assert_eq!(body["errors"][0]["message"], TOKEN_EXPIRED_MESSAGE);
    let (_, info) = sim.form("/-/token_info", &[("token", &access)]).await;
    assert_eq!(info["active"], false);
    let (status, body) = sim.refresh(&refresh).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 10);
    assert_eq!(sim.me(body["access_token"].as_str().unwrap()).await.0, 200);
    sim.0.shutdown().await;
}

#[tokio::test]
async fn revoking_the_refresh_token_ends_the_grant() {
    let sim = Sim::start(config()).await;
    let (access, refresh) = sim.tokens().await;
    let revoke = |token: String| {
        let sim = &sim;
        async move {
            sim.form(
                "/-/oauth_revoke",
                &[
                    ("client_id", CLIENT),
                    ("client_secret", SECRET),
                    ("token", &token),
                ],
            )
            .await
            .0
        }
    };
    assert_eq!(
        revoke(access.clone()).await,
        400,
        "access tokens are rejected"
    );
    assert_eq!(revoke("1/unknown".into()).await, 200, "not found is 200");
    assert_eq!(revoke(refresh.clone()).await, 200);
    let (status, body) = sim.refresh(&refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = sim.me(&access).await;
    assert_eq!(status, 401);
    assert_ne!(body["errors"][0]["message"], TOKEN_EXPIRED_MESSAGE);

    // Revocation through the admin API (as if the user deauthorized the app).
    let (_, other_refresh) = sim.tokens().await;
    let response = sim
        .client
        .post(format!("{}/_sim/revoke", sim.server.origin()))
        .json(&serde_json::json!({ "token": other_refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (status, body) = sim.refresh(&other_refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    sim.0.shutdown().await;
}

#[tokio::test]
async fn token_info_describes_access_and_refresh_tokens() {
    let sim = Sim::start(config()).await;
    let code = sim.code(VERIFIER, Some("tasks:read projects:read")).await;
    let (_, body) = sim.exchange(&code, VERIFIER, REDIRECT).await;
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    let now = sim.server.state().clock.now().timestamp();

    let (status, info) = sim.form("/-/token_info", &[("token", access)]).await;
    assert_eq!(status, 200);
    assert_eq!(info["token_type"], "bearer");
    assert_eq!(info["active"], true);
    assert_eq!(info["scope"], "tasks:read projects:read");
    assert_eq!(info["client_id"], CLIENT);
    let expires_in = info["expires_in"].as_i64().unwrap();
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");
    let exp = info["exp"].as_i64().unwrap();
    assert!((exp - (now + 3600)).abs() <= 5, "exp {exp} now {now}");

    let (_, info) = sim.form("/-/token_info", &[("token", refresh)]).await;
    assert_eq!(info["token_type"], "refresh");
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], CLIENT);

    let (_, info) = sim.form("/-/token_info", &[("token", "nonsense")]).await;
    assert_eq!(info["active"], false);
    let (_, info) = sim
        .form("/-/token_info", &[("token", "sim-pat-paid-0001")])
        .await;
    assert_eq!(info["active"], true);
    assert!(info["exp"].is_null());
    sim.0.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_users_tokens_answer_401_and_other_users_keep_working() {
    let sim = Sim::start(config()).await;
    let me = |token: String| {
        let http = sim.client.clone();
        let base = sim.server.base_url();
        async move {
            http.get(format!("{base}/users/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let pat = sim.server.token("pat-paid").unwrap();
    let sa = sim.server.token("service-account").unwrap();
    let body: Value = me(pat.clone()).await.json().await.unwrap();
    let gid = body["data"]["gid"].as_str().unwrap().to_string();
    let sa_body: Value = me(sa.clone()).await.json().await.unwrap();
    assert_ne!(
        sa_body["data"]["gid"], gid,
        "the tokens belong to different users"
    );

    let response = sim
        .client
        .post(format!(
            "{}/_sim/users/{gid}/deactivate",
            sim.server.origin()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(me(pat).await.status().as_u16(), 401);
    assert_eq!(me(sa).await.status().as_u16(), 200);
    let unknown = sim
        .client
        .post(format!("{}/_sim/users/999/deactivate", sim.server.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}
