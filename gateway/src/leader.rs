//! One replica leads the background work: the saga sweep, host-down detection and the expiry of
//! request ids and spent join tokens run on the replica that holds the lease `background` in
//! the store (`store::leases`), and on no other.
//!
//! Every replica runs [`lead_forever`]. One without the lease tries to take it every tick (a
//! third of the lease's time to live, or less); once it has it, each tick does the work first
//! and then renews (the renewal, too, is refused once the token has moved on). The work's writes go through a [`Gateway`] clone carrying the lease
//! ([`Gateway::fenced`]): each write transaction checks the lease's fencing token first and is
//! refused with [`GatewayError::Fenced`] when another replica has taken the lease over since
//! (the holder was paused past its lease, or cut off from the store). The holder then stands
//! down at once. Doing the work before the renewal is what makes that check matter: a holder
//! that wakes from a long pause writes before it can learn it lost the lease, and the token
//! refuses that write.
//!
//! Not fenced: calls to ipam-svc and to agents that the sweep makes (releasing addresses of
//! abandoned operations, detaching their endpoints). They are idempotent and decided from rows
//! older than the operation timeout, so two replicas doing them at once agree.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

pub use crate::lease::Lease;
use crate::{engine::Gateway, error::GatewayError, store};

/// The lease of the background work.
pub const BACKGROUND: &str = "background";

impl Gateway {
    /// A clone of this gateway whose every write transaction first checks `lease`'s fencing
    /// token (see [`crate::lease::check`]).
    pub fn fenced(&self, lease: Arc<Lease>) -> Self {
        let mut g = self.clone();
        g.fence = Some(lease);
        g
    }

    /// Deletes request ids past their time to live and spent or expired join tokens, in one
    /// fenced transaction (a write every tick of the holder's, whatever else there is to do).
    async fn expire(&self) -> Result<(), GatewayError> {
        let mut tx = store::write_transaction(&self.db).await?;
        crate::lease::check(self.fence.as_deref(), &mut tx).await?;
        let now = self.clock.now_ms();
        store::requests::expire(&mut tx, self.retention(now)).await?;
        store::join_tokens::trim(&mut tx, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// When each part of the background work is next due.
struct Due {
    sweep: Instant,
    heartbeats: Instant,
}

/// Takes, holds and renews the lease of the background work, doing that work while it holds
/// it; forever. `sweep_interval`: how often the sweep runs (also at once on taking the lease).
pub async fn lead_forever(gw: Gateway, lease: Arc<Lease>, sweep_interval: Duration) {
    let worker = gw.fenced(lease.clone());
    let tick = lease.tick(sweep_interval.min(gw.heartbeat_interval));
    let mut due = Due {
        sweep: Instant::now(),
        heartbeats: Instant::now(),
    };
    loop {
        if lease.token().is_none() && take(&gw, &lease).await {
            due.sweep = Instant::now();
        }
        if lease.token().is_some() {
            match worker.background_pass(&mut due, sweep_interval).await {
                Err(e @ GatewayError::Fenced(_)) => {
                    tracing::warn!(error = %e, holder = %lease.holder, "this replica no longer leads the background work: standing down");
                    lease.set(0);
                }
                Err(e) => tracing::warn!(error = %e, "background work failed"),
                Ok(()) => {}
            }
            renew(&gw, &lease).await;
        }
        tokio::time::sleep(tick).await;
    }
}

/// Tries to take the lease: true when this replica now holds it.
async fn take(gw: &Gateway, lease: &Lease) -> bool {
    let now = gw.clock.now_ms();
    let taken = async {
        let mut conn = gw.db.write().acquire().await?;
        store::leases::acquire(
            &mut conn,
            lease.name,
            &lease.holder,
            now,
            lease.expires_at(now),
        )
        .await
    }
    .await;
    match taken {
        Ok(Some(token)) => {
            tracing::info!(holder = %lease.holder, token, "this replica now leads the background work (sweep, host-down detection, expiry)");
            lease.set(token);
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the background work's lease");
            false
        }
    }
}

/// Renews the lease while held; stands down when another replica has taken it over.
async fn renew(gw: &Gateway, lease: &Lease) {
    let Some(token) = lease.token() else { return };
    let now = gw.clock.now_ms();
    let renewed = async {
        let mut conn = gw.db.write().acquire().await?;
        store::leases::renew(
            &mut conn,
            lease.name,
            &lease.holder,
            token,
            lease.expires_at(now),
        )
        .await
    }
    .await;
    match renewed {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(holder = %lease.holder, token, "the lease's renewal was refused by the fencing token: another replica took the background work over; standing down");
            lease.set(0);
        }
        // The store is unreachable: keep the token; the fence refuses the writes if another
        // replica takes over meanwhile.
        Err(e) => tracing::warn!(error = %e, "cannot renew the background work's lease"),
    }
}

/// Lets the lease go at once when this replica holds it (a clean stop: another replica takes
/// over at its next tick instead of after the time to live).
pub async fn release(gw: &Gateway, lease: &Lease) {
    let Some(token) = lease.token() else { return };
    lease.set(0);
    let released = async {
        let mut conn = gw.db.write().acquire().await?;
        store::leases::release(&mut conn, lease.name, token).await
    }
    .await;
    match released {
        Ok(()) => tracing::info!(holder = %lease.holder, "released the background work's lease"),
        Err(e) => tracing::warn!(error = %e, "cannot release the background work's lease"),
    }
}

impl Gateway {
    /// One tick of the holder's work: the sweep and the heartbeat checks when due, then expiry
    /// (always: a fenced write). A fenced write ends the pass with [`GatewayError::Fenced`].
    async fn background_pass(
        &self,
        due: &mut Due,
        sweep_interval: Duration,
    ) -> Result<(), GatewayError> {
        tracing::debug!("background pass");
        let now = Instant::now();
        if now >= due.sweep {
            due.sweep = now + sweep_interval;
            fenced_or_logged(self.sweep().await.map(drop), "sweep failed")?;
        }
        if now >= due.heartbeats {
            due.heartbeats = now + self.heartbeat_interval;
            fenced_or_logged(
                self.mark_stale_hosts_down().await.map(drop),
                "checking heartbeats failed",
            )?;
            fenced_or_logged(
                self.mark_endpoints_of_long_down_hosts().await.map(drop),
                "marking the endpoints of long-down hosts failed",
            )?;
        }
        // Last, so that a holder paused anywhere in the pass (or in its sleep) writes at least
        // once after it wakes, before its renewal could tell it that it lost the lease.
        self.expire().await
    }
}

/// Passes a fenced refusal on; logs any other failure (the next pass tries again).
fn fenced_or_logged(r: Result<(), GatewayError>, what: &str) -> Result<(), GatewayError> {
    match r {
        Err(e @ GatewayError::Fenced(_)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "{what}");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}
