//! Credential states as the daemon sees them, their metrics, and hygiene warnings.
//!
//! Metrics:
//! - `asana_worker_credential_state{credential, state}` (gauge): 1 for the credential's current
//!   state (`active`, `refreshing`, `expired`, `revoked`, `error`), 0 for the others.
//! - `asana_worker_credential_rejections_total{credential}` (counter): runs ended as
//!   `needs_reauth` because Asana (or the OAuth server) rejected the credential.
//! - `asana_worker_credential_hygiene_warnings{credential, reason}` (gauge): 1 while a hygiene
//!   warning holds (`pat_age`, `unused`, `rejected`), recomputed periodically.
//! - `asana_worker_oauth_refreshes_total{credential, outcome}` (counter; `ok`, `error`,
//!   `revoked`), from the OAuth provider.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::clock::SharedClock;
use crate::config::settings::CredentialsStoreSettings;
use crate::store::{CREDENTIAL_STATES, CredentialRow, CredentialStatus, Store};

/// The Asana user a credential acts as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// User gid.
    pub gid: String,
    /// Name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
}

/// Records what the daemon learns about its credentials: rejected, used, validated. Writes go to
/// the store for stored credentials (configured ones have no row) and to metrics for all.
pub struct CredentialMonitor {
    store: Option<Arc<dyn Store>>,
    clock: SharedClock,
    touch_every: chrono::Duration,
    /// Names that have a row in the store.
    stored: Mutex<BTreeSet<String>>,
    last_touch: Mutex<HashMap<String, DateTime<Utc>>>,
    states: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for CredentialMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialMonitor")
            .field(
                "states",
                &self.states.lock().unwrap_or_else(|p| p.into_inner()),
            )
            .finish_non_exhaustive()
    }
}

impl CredentialMonitor {
    /// A monitor writing to `store` (None: metrics only), `last_used_at` at most once per
    /// `touch_every`.
    pub fn new(
        store: Option<Arc<dyn Store>>,
        clock: SharedClock,
        touch_every: std::time::Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            touch_every: chrono::Duration::from_std(touch_every)
                .unwrap_or(chrono::Duration::minutes(1)),
            stored: Mutex::new(BTreeSet::new()),
            last_touch: Mutex::new(HashMap::new()),
            states: Mutex::new(BTreeMap::new()),
        })
    }

    /// Declares which credentials have rows in the store.
    pub fn set_stored(&self, names: impl IntoIterator<Item = String>) {
        *self.stored.lock().unwrap_or_else(|p| p.into_inner()) = names.into_iter().collect();
    }

    fn is_stored(&self, name: &str) -> bool {
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// The state last recorded for `name`.
    pub fn state(&self, name: &str) -> Option<String> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Sets the state gauge of `name` (in memory and metrics only).
    pub fn set_state(&self, name: &str, state: &str) {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), state.to_string());
        for candidate in CREDENTIAL_STATES {
            metrics::gauge!(
                "asana_worker_credential_state",
                "credential" => name.to_string(),
                "state" => candidate,
            )
            .set(if candidate == state { 1.0 } else { 0.0 });
        }
    }

    /// Asana or the OAuth server rejected `name`: state `revoked`, counted, logged at error
    /// level with what to run next, and written to the store for a stored credential. Only this
    /// credential's jobs are affected.
    pub async fn rejected(&self, name: &str, message: &str) {
        let first = self.state(name).as_deref() != Some("revoked");
        self.set_state(name, "revoked");
        let stored = self.is_stored(name);
        let next = if stored {
            format!(
                "replace it with `asana-worker creds add {name} --replace` (PAT, service account) or `asana-worker creds authorize {name} --replace` (OAuth); the daemon picks it up without a restart"
            )
        } else {
            format!("replace the token in the file or variable of [credentials.{name}]")
        };
        if first {
            tracing::error!(credential = %name, error = %message, next = %next, "Credential rejected; its jobs end as needs_reauth until it is replaced");
        } else {
            tracing::warn!(credential = %name, error = %message, "Credential still rejected");
        }
        if stored && let Some(store) = &self.store {
            let status = CredentialStatus {
                state: "revoked".into(),
                last_error: Some(message.to_string()),
                ..CredentialStatus::default()
            };
            if let Err(error) = store.set_credential_status(name, &status).await {
                tracing::warn!(credential = %name, %error, "Could not record the credential as revoked");
            }
        }
    }

    /// Records a state other than `revoked` that a person should see (`expired`: the access
    /// token lapsed and could not be refreshed yet), in the gauge and, for a stored credential,
    /// on its row with `message`.
    pub async fn degraded(&self, name: &str, state: &str, message: &str) {
        self.set_state(name, state);
        tracing::warn!(credential = %name, state, error = %message, "Credential degraded");
        if self.is_stored(name)
            && let Some(store) = &self.store
        {
            let status = CredentialStatus {
                state: state.into(),
                last_error: Some(message.to_string()),
                ..CredentialStatus::default()
            };
            if let Err(error) = store.set_credential_status(name, &status).await {
                tracing::warn!(credential = %name, %error, "Could not record the credential's state");
            }
        }
    }

    /// A run of a job using `name` ended as `needs_reauth`.
    pub fn count_rejected_run(&self, name: &str) {
        metrics::counter!("asana_worker_credential_rejections_total", "credential" => name.to_string())
            .increment(1);
    }

    /// A job used `name` successfully: state `active`; `last_used_at` written at most once per
    /// `touch_every` (a hint for hygiene, not worth a write per request).
    pub async fn used(&self, name: &str) {
        if self.state(name).as_deref() != Some("active") {
            self.set_state(name, "active");
        }
        if !self.is_stored(name) {
            return;
        }
        let now = self.clock.now();
        {
            let mut last = self.last_touch.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(previous) = last.get(name)
                && now - *previous < self.touch_every
            {
                return;
            }
            last.insert(name.to_string(), now);
        }
        if let Some(store) = &self.store
            && let Err(error) = store.touch_credential(name, now).await
        {
            tracing::warn!(credential = %name, %error, "Could not record when the credential was used");
        }
    }

    /// `users/me` answered for `name`: state `active`, owner and `last_validated_at` recorded.
    pub async fn validated(&self, name: &str, owner: &Owner) {
        self.set_state(name, "active");
        if !self.is_stored(name) {
            return;
        }
        if let Some(store) = &self.store {
            let status = CredentialStatus {
                state: "active".into(),
                owner_gid: Some(owner.gid.clone()),
                owner_name: owner.name.clone(),
                owner_email: owner.email.clone(),
                validated_at: Some(self.clock.now()),
                last_error: None,
            };
            if let Err(error) = store.set_credential_status(name, &status).await {
                tracing::warn!(credential = %name, %error, "Could not record the credential's owner");
            }
        }
    }
}

/// One hygiene warning about a stored credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HygieneWarning {
    /// `pat_age`, `unused` or `rejected` (the metric's `reason` label).
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// Every hygiene reason, for resetting gauges.
pub const HYGIENE_REASONS: [&str; 3] = ["pat_age", "unused", "rejected"];

/// The hygiene warnings of `row` at `now`: a PAT older than `pat_max_age_days` (rotate it), a
/// credential unused for `unused_warning_days` (delete it), or one whose owner check fails (the
/// user was deactivated or the token revoked).
pub fn hygiene(
    row: &CredentialRow,
    now: DateTime<Utc>,
    settings: &CredentialsStoreSettings,
) -> Vec<HygieneWarning> {
    let mut out = Vec::new();
    let name = &row.name;
    let age_days = (now - row.created_at).num_days();
    if row.kind == "pat" && age_days >= i64::from(settings.pat_max_age_days) {
        out.push(HygieneWarning {
            reason: "pat_age",
            message: format!(
                "personal access token is {age_days} days old (limit {}); create a new one in Asana's developer console, `asana-worker creds add {name} --kind pat --replace`, then revoke the old one there",
                settings.pat_max_age_days
            ),
        });
    }
    let since = row.last_used_at.unwrap_or(row.created_at);
    let idle_days = (now - since).num_days();
    if idle_days >= i64::from(settings.unused_warning_days) {
        out.push(HygieneWarning {
            reason: "unused",
            message: format!(
                "{} for {idle_days} days; if no job needs it, `asana-worker creds revoke {name}`",
                if row.last_used_at.is_some() {
                    "not used"
                } else {
                    "never used"
                }
            ),
        });
    }
    if matches!(row.state.as_str(), "revoked" | "expired" | "error") {
        out.push(HygieneWarning {
            reason: "rejected",
            message: format!(
                "state {}: the owner {} is no longer active or the token was revoked ({}); re-authorize or replace it",
                row.state,
                row.owner_email
                    .as_deref()
                    .or(row.owner_name.as_deref())
                    .or(row.owner_gid.as_deref())
                    .unwrap_or("(unknown)"),
                row.last_error.as_deref().unwrap_or("no detail")
            ),
        });
    }
    out
}

/// Sets `asana_worker_credential_hygiene_warnings` for every row (1 per warning that holds, 0
/// for the others) and returns how many warnings hold.
pub fn export_hygiene(
    rows: &[CredentialRow],
    now: DateTime<Utc>,
    settings: &CredentialsStoreSettings,
) -> usize {
    let mut total = 0;
    for row in rows {
        let warnings = hygiene(row, now, settings);
        total += warnings.len();
        for reason in HYGIENE_REASONS {
            let holds = warnings.iter().any(|w| w.reason == reason);
            metrics::gauge!(
                "asana_worker_credential_hygiene_warnings",
                "credential" => row.name.clone(),
                "reason" => reason,
            )
            .set(if holds { 1.0 } else { 0.0 });
        }
        for warning in &warnings {
            tracing::debug!(credential = %row.name, reason = warning.reason, message = %warning.message, "Credential hygiene warning");
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(
        kind: &str,
        state: &str,
        created_days_ago: i64,
        used_days_ago: Option<i64>,
    ) -> CredentialRow {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        CredentialRow {
            id: uuid::Uuid::nil(),
            name: "c".into(),
            kind: kind.into(),
            tier: "paid".into(),
            tenant: None,
            key_version: 1,
            nonce: Vec::new(),
            ciphertext: Vec::new(),
            owner_gid: Some("42".into()),
            owner_name: None,
            owner_email: Some("a@example.com".into()),
            state: state.into(),
            created_at: now - chrono::Duration::days(created_days_ago),
            last_used_at: used_days_ago.map(|d| now - chrono::Duration::days(d)),
            last_validated_at: None,
            last_error: None,
        }
    }

    fn reasons(row: &CredentialRow) -> Vec<&'static str> {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        hygiene(row, now, &CredentialsStoreSettings::default())
            .into_iter()
            .map(|w| w.reason)
            .collect()
    }

    #[test]
    fn hygiene_flags_old_pats_idle_credentials_and_rejected_owners() {
        assert!(reasons(&row("pat", "active", 10, Some(1))).is_empty());
        assert_eq!(reasons(&row("pat", "active", 90, Some(1))), ["pat_age"]);
        // Only PATs age out; OAuth tokens are refreshed, service accounts are managed by admins.
        assert!(reasons(&row("oauth", "active", 400, Some(1))).is_empty());
        assert_eq!(reasons(&row("oauth", "active", 40, Some(30))), ["unused"]);
        assert_eq!(
            reasons(&row("service_account", "active", 31, None)),
            ["unused"]
        );
        assert_eq!(reasons(&row("oauth", "revoked", 1, Some(0))), ["rejected"]);
        assert_eq!(
            reasons(&row("pat", "error", 100, None)),
            ["pat_age", "unused", "rejected"]
        );
    }
}
