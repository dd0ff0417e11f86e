//! A replica's view of a lease of the store (`store::leases`): kept apart from `leader`, which
//! runs the work, so that the engine can carry one without importing the work.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use crate::{error::GatewayError, store};

/// This replica's view of a lease: its token while it holds it.
#[derive(Debug)]
pub struct Lease {
    pub name: &'static str,
    /// Who this replica is in the lease table (`--replica-id`).
    pub holder: String,
    /// The fencing token while this replica holds the lease; 0 when it does not.
    token: AtomicI64,
    ttl: Duration,
}

impl Lease {
    pub fn new(name: &'static str, holder: String, ttl: Duration) -> Self {
        Self {
            name,
            holder,
            token: AtomicI64::new(0),
            ttl,
        }
    }

    /// The fencing token, while this replica holds the lease.
    pub fn token(&self) -> Option<i64> {
        Some(self.token.load(Ordering::SeqCst)).filter(|t| *t != 0)
    }

    pub(crate) fn set(&self, token: i64) {
        self.token.store(token, Ordering::SeqCst);
    }

    /// How often the holder works and renews: a third of the time to live (so a renewal may
    /// fail twice before the lease expires), at most `cap`, at least 100 ms.
    pub(crate) fn tick(&self, cap: Duration) -> Duration {
        (self.ttl / 3).min(cap).max(Duration::from_millis(100))
    }

    pub(crate) fn expires_at(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2))
    }
}

/// Inside a write transaction: refuses it when `fence` is a lease this replica no longer holds
/// (or never took). No lease (the API's writes) passes.
pub(crate) async fn check(
    fence: Option<&Lease>,
    tx: &mut sqlx::AnyConnection,
) -> Result<(), GatewayError> {
    let Some(lease) = fence else {
        return Ok(());
    };
    let held = match lease.token() {
        Some(token) => store::leases::fence(tx, lease.name, token).await?,
        None => false,
    };
    if held {
        Ok(())
    } else {
        Err(GatewayError::Fenced(lease.name))
    }
}
