//! OAuth against the simulator without a browser: the authorize step is an HTTP GET whose
//! redirect carries the code, then the code is exchanged like `creds authorize` does.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use asana_worker::clock::Clock;
use asana_worker::credentials::crypto::KeyRing;
use asana_worker::credentials::oauth::{OAuthEndpoints, OAuthSecret, Pkce, random_state};
use asana_worker::sim::SimServer;
use asana_worker::store::{CredentialRow, Store};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// The simulator's default OAuth client.
pub const CLIENT_ID: &str = "sim-oauth-client";
/// Its default secret.
pub const CLIENT_SECRET: &str = "sim-oauth-secret";

/// Follows the authorize URL (the simulator consents at once) and returns the code.
pub async fn code_from(authorize_url: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = http.get(authorize_url).send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        302,
        "{:?}",
        response.text().await
    );
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let url = reqwest::Url::parse(&location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code in the redirect")
}

/// Authorizes `client_id` at the simulator and returns the secret to store, its expiry
/// computed on `clock`.
pub async fn authorize(
    sim: &SimServer,
    client_id: &str,
    client_secret: &str,
    clock: &dyn Clock,
) -> OAuthSecret {
    let endpoints = OAuthEndpoints::new(&sim.origin(), Duration::from_secs(10)).unwrap();
    let pkce = Pkce::generate();
    let redirect = "http://127.0.0.1:9/callback";
    let url = endpoints.authorize_url(client_id, redirect, &random_state(), &pkce.challenge);
    let code = code_from(&url).await;
    let secret = SecretString::from(client_secret.to_string());
    let tokens = endpoints
        .exchange_code(client_id, &secret, &code, redirect, &pkce.verifier)
        .await
        .unwrap();
    OAuthSecret {
        client_id: client_id.to_string(),
        client_secret: secret,
        refresh_token: tokens.refresh_token.unwrap(),
        access_token: tokens.access_token,
        expires_at: clock.now() + chrono::Duration::seconds(tokens.expires_in as i64),
    }
}

/// Stores `secret` as OAuth credential `name` (replacing one of that name).
pub async fn store_oauth(
    store: &Arc<dyn Store>,
    ring: &KeyRing,
    name: &str,
    secret: &OAuthSecret,
    clock: &dyn Clock,
) -> CredentialRow {
    let id = Uuid::new_v4();
    let sealed = ring.seal(id, name, &secret.to_plaintext()).unwrap();
    let row = CredentialRow {
        id,
        name: name.into(),
        kind: "oauth".into(),
        tier: "paid".into(),
        tenant: None,
        key_version: sealed.key_version as i32,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        owner_gid: None,
        owner_name: None,
        owner_email: None,
        state: "active".into(),
        created_at: clock.now(),
        last_used_at: None,
        last_validated_at: None,
        last_error: None,
    };
    assert!(store.put_credential(&row, true).await.unwrap());
    row
}

/// Refresh exchanges per grant, from the simulator's admin API.
pub async fn refreshes(sim: &SimServer, refresh_token: &SecretString) -> u64 {
    let grants: serde_json::Value = reqwest::get(format!("{}/_sim/oauth/grants", sim.origin()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    grants["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["refresh_token"] == refresh_token.expose_secret())
        .map(|g| g["refreshes"].as_u64().unwrap())
        .expect("the grant is known to the simulator")
}

/// Revokes a grant (and its access tokens) through the simulator's admin API.
pub async fn revoke(sim: &SimServer, refresh_token: &SecretString) {
    let response = reqwest::Client::new()
        .post(format!("{}/_sim/revoke", sim.origin()))
        .json(&serde_json::json!({ "token": refresh_token.expose_secret() }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}
