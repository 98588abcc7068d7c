//! One budget per token for the whole process, and export slots per Asana user. Jobs ask the
//! registry for their token's budget instead of building their own, which is what makes the
//! budget shared by every job using the token.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Budget, BudgetConfig, BudgetError};

/// The process-wide set of budgets, keyed by credential id, with export slots keyed by the Asana
/// user the credential acts as.
#[derive(Debug, Default, Clone)]
pub struct BudgetRegistry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    budgets: HashMap<String, Budget>,
    export_slots: HashMap<String, Arc<Semaphore>>,
}

impl BudgetRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The budget of the credential `config.name`, created on first use. `user_gid` is the Asana
    /// user the token acts as: all tokens of one user share its export slots. A later call with
    /// the same name returns the existing budget and ignores `config` (a changed tier takes effect
    /// after [`BudgetRegistry::remove`]).
    pub fn budget(&self, config: BudgetConfig, user_gid: &str) -> Result<Budget, BudgetError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = inner.budgets.get(&config.name) {
            return Ok(existing.clone());
        }
        let slots = inner
            .export_slots
            .entry(user_gid.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(config.export_slots as usize)))
            .clone();
        let name = config.name.clone();
        let budget = Budget::with_export_slots(config, slots, user_gid.to_string())?;
        inner.budgets.insert(name, budget.clone());
        Ok(budget)
    }

    /// Forgets a credential's budget (after it was deleted or its tier changed).
    pub fn remove(&self, name: &str) -> Option<Budget> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.budgets.remove(name)
    }
}

/// One of an Asana user's concurrent export jobs. Returned to the pool when dropped.
pub struct ExportSlot {
    _permit: OwnedSemaphorePermit,
    semaphore: Arc<Semaphore>,
    total: u32,
    user: String,
}

impl fmt::Debug for ExportSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportSlot")
            .field("user", &self.user)
            .finish()
    }
}

impl ExportSlot {
    pub(crate) fn new(
        permit: OwnedSemaphorePermit,
        semaphore: Arc<Semaphore>,
        total: u32,
        user: String,
    ) -> Self {
        let slot = Self {
            _permit: permit,
            semaphore,
            total,
            user,
        };
        slot.report(1);
        slot
    }

    fn report(&self, releasing: usize) {
        let free = self.semaphore.available_permits() + 1 - releasing;
        let in_use = (self.total as usize).saturating_sub(free);
        metrics::gauge!("asana_worker_budget_export_slots_in_use", "user" => self.user.clone())
            .set(in_use as f64);
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        // The permit is released after this body runs: count it as free already.
        self.report(0);
    }
}
