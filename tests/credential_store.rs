//! The credential methods of every [`Store`], run against SQLite (a fresh file) and PostgreSQL
//! (a fresh database on `ASANA_WORKER_TEST_PG_URL`; skipped with a notice when unset), plus
//! sealing and opening through the key ring with tampered rows and wrong keys.

mod support;

use std::sync::Arc;

use asana_worker::credentials::crypto::{CryptoError, KeyRing, MasterKey, Sealed};
use asana_worker::store::{self, CredentialRow, CredentialStatus, Reencrypted, Store};
use chrono::{TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};
use support::pg::TestDatabase;
use uuid::Uuid;

fn row(ring: &KeyRing, name: &str, token: &str) -> CredentialRow {
    let id = Uuid::new_v4();
    let sealed = ring
        .seal(id, name, &SecretString::from(token.to_string()))
        .unwrap();
    CredentialRow {
        id,
        name: name.into(),
        kind: "pat".into(),
        tier: "paid".into(),
        tenant: Some("team-a".into()),
        key_version: sealed.key_version as i32,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        owner_gid: None,
        owner_name: None,
        owner_email: None,
        state: "active".into(),
        created_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        last_used_at: None,
        last_validated_at: None,
        last_error: None,
    }
}

fn sealed(row: &CredentialRow) -> Sealed {
    Sealed {
        key_version: row.key_version as u32,
        nonce: row.nonce.clone(),
        ciphertext: row.ciphertext.clone(),
    }
}

async fn behaves(store: Arc<dyn Store>) {
    let ring = KeyRing::single(MasterKey::generate(1));
    let first = row(&ring, "alpha", "canary-alpha-1");
    assert!(store.put_credential(&first, false).await.unwrap());
    assert_eq!(
        store.get_credential("alpha").await.unwrap().as_ref(),
        Some(&first)
    );
    // A second row of the same name is refused without --replace, and changes nothing.
    let second = row(&ring, "alpha", "canary-alpha-2");
    assert!(!store.put_credential(&second, false).await.unwrap());
    assert_eq!(
        store.get_credential("alpha").await.unwrap().unwrap().id,
        first.id
    );
    assert!(store.put_credential(&second, true).await.unwrap());
    let stored = store.get_credential("alpha").await.unwrap().unwrap();
    assert_eq!(stored.id, second.id);
    assert_eq!(
        ring.open(stored.id, "alpha", &sealed(&stored))
            .unwrap()
            .expose_secret(),
        "canary-alpha-2"
    );

    // The CHECK constraints hold.
    let mut bad = row(&ring, "bad", "x");
    bad.kind = "password".into();
    assert!(store.put_credential(&bad, false).await.is_err());
    let mut bad = row(&ring, "bad", "x");
    bad.state = "happy".into();
    assert!(store.put_credential(&bad, false).await.is_err());

    let beta = row(&ring, "beta", "canary-beta");
    assert!(store.put_credential(&beta, false).await.unwrap());
    let names: Vec<String> = store
        .list_credentials()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["alpha", "beta"]);

    let checked = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    assert!(
        store
            .set_credential_status(
                "beta",
                &CredentialStatus {
                    state: "revoked".into(),
                    owner_gid: Some("123".into()),
                    owner_name: Some("Ada".into()),
                    owner_email: Some("ada@example.com".into()),
                    validated_at: Some(checked),
                    last_error: Some("401 from Asana".into()),
                },
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_credential_status("nobody", &CredentialStatus::default())
            .await
            .unwrap()
    );
    store.touch_credential("beta", checked).await.unwrap();
    let beta_now = store.get_credential("beta").await.unwrap().unwrap();
    assert_eq!(beta_now.state, "revoked");
    assert_eq!(beta_now.owner_email.as_deref(), Some("ada@example.com"));
    assert_eq!(beta_now.last_validated_at, Some(checked));
    assert_eq!(beta_now.last_used_at, Some(checked));

    // An OAuth refresh writes its new secret by id, back to active with the error cleared; a
    // row replaced meanwhile (new id) is left alone.
    let resealed = ring
        .seal(
            beta.id,
            "beta",
            &SecretString::from("canary-beta-2".to_string()),
        )
        .unwrap();
    assert!(
        store
            .update_credential_secret(
                beta.id,
                resealed.key_version as i32,
                resealed.nonce.clone(),
                resealed.ciphertext.clone(),
                "active",
            )
            .await
            .unwrap()
    );
    let refreshed = store.get_credential("beta").await.unwrap().unwrap();
    assert_eq!(
        (refreshed.state.as_str(), refreshed.last_error.as_deref()),
        ("active", None)
    );
    assert_eq!(refreshed.ciphertext, resealed.ciphertext);
    assert_eq!(refreshed.owner_email.as_deref(), Some("ada@example.com"));
    let opened = ring
        .open(
            beta.id,
            "beta",
            &Sealed {
                key_version: refreshed.key_version as u32,
                nonce: refreshed.nonce.clone(),
                ciphertext: refreshed.ciphertext.clone(),
            },
        )
        .unwrap();
    assert_eq!(opened.expose_secret(), "canary-beta-2");
    assert!(
        !store
            .update_credential_secret(Uuid::new_v4(), 1, vec![0; 24], vec![0; 32], "active")
            .await
            .unwrap()
    );
    // Put the earlier state back for the checks below.
    let status = CredentialStatus {
        state: "revoked".into(),
        last_error: beta_now.last_error.clone(),
        ..CredentialStatus::default()
    };
    assert!(store.set_credential_status("beta", &status).await.unwrap());

    // Re-encryption applies only to rows still under the version they were read with.
    let rotated = KeyRing::single(MasterKey::generate(2));
    let new_beta = rotated
        .seal(
            beta.id,
            "beta",
            &SecretString::from("canary-beta".to_string()),
        )
        .unwrap();
    let batch = vec![
        Reencrypted {
            id: beta.id,
            from_version: 1,
            key_version: 2,
            nonce: new_beta.nonce.clone(),
            ciphertext: new_beta.ciphertext.clone(),
        },
        Reencrypted {
            id: second.id,
            from_version: 7,
            key_version: 2,
            nonce: new_beta.nonce.clone(),
            ciphertext: new_beta.ciphertext.clone(),
        },
    ];
    assert_eq!(store.reencrypt_credentials(batch).await.unwrap(), 1);
    let beta_now = store.get_credential("beta").await.unwrap().unwrap();
    assert_eq!(beta_now.key_version, 2);
    assert_eq!(
        rotated
            .open(beta.id, "beta", &sealed(&beta_now))
            .unwrap()
            .expose_secret(),
        "canary-beta"
    );
    assert!(matches!(
        ring.open(beta.id, "beta", &sealed(&beta_now)),
        Err(CryptoError::UnknownVersion { version: 2, .. })
    ));
    assert_eq!(
        store
            .get_credential("alpha")
            .await
            .unwrap()
            .unwrap()
            .key_version,
        1
    );

    assert!(store.delete_credential("alpha").await.unwrap());
    assert!(!store.delete_credential("alpha").await.unwrap());
    assert!(store.get_credential("alpha").await.unwrap().is_none());
}

#[tokio::test]
async fn credentials_round_trip_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    behaves(store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn credentials_round_trip_on_postgres() {
    let Some(db) = TestDatabase::create("PostgreSQL credential store").await else {
        return;
    };
    behaves(store::open(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn a_tampered_row_or_a_wrong_key_gives_a_clear_error_and_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let store = store::open(&url).await.unwrap();
    let ring = KeyRing::single(MasterKey::generate(1));
    let canary = "canary-tamper-5150";
    let original = row(&ring, "gamma", canary);
    store.put_credential(&original, false).await.unwrap();

    // Tamper with the stored bytes directly.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE credentials SET ciphertext = ? WHERE name = 'gamma'")
        .bind({
            let mut bytes = original.ciphertext.clone();
            bytes[3] ^= 0x40;
            bytes
        })
        .execute(&pool)
        .await
        .unwrap();
    let tampered = store.get_credential("gamma").await.unwrap().unwrap();
    let error = ring
        .open(tampered.id, "gamma", &sealed(&tampered))
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, CryptoError::Decrypt { .. }));
    assert!(
        message.contains("gamma") && message.contains("tampered"),
        "{message}"
    );
    assert!(!message.contains(canary));

    // The right bytes under the wrong key.
    let wrong = KeyRing::single(MasterKey::generate(1));
    let message = wrong
        .open(original.id, "gamma", &sealed(&original))
        .unwrap_err()
        .to_string();
    assert!(message.contains("different key"), "{message}");
    assert!(!message.contains(canary));

    // The row moved onto another id (ciphertext swapped between rows).
    let other = row(&ring, "delta", "canary-delta");
    let message = ring
        .open(other.id, "delta", &sealed(&original))
        .unwrap_err()
        .to_string();
    assert!(message.contains("delta"), "{message}");
}
