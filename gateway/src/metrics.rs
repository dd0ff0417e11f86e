//! The gateway's own metrics, read at scrape time (see `weft_runtime::metrics`): endpoints per
//! host and network, from the store; the newest revision; and how far each Watch stream lags
//! behind it.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use sqlx::Row as _;
use weft_runtime::metrics::{CollectorGuard, Family, Kind};

use crate::{engine::Gateway, store};

/// The Watch streams open in this process, by a number of their own.
static WATCHERS: Mutex<BTreeMap<u64, Watcher>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

struct Watcher {
    peer: String,
    client: String,
    reached: Arc<AtomicU64>,
}

/// One Watch stream's place in the event log, shown while the stream is open.
#[derive(Debug)]
pub(crate) struct WatchLag {
    id: u64,
    reached: Arc<AtomicU64>,
}

impl WatchLag {
    /// A stream for `peer` (its address), by `client` (the caller's `role:name`, or empty).
    pub(crate) fn new(peer: Option<IpAddr>, client: &str, from: u64) -> Self {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let reached = Arc::new(AtomicU64::new(from));
        WATCHERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Watcher {
                    peer: peer.map(|p| p.to_string()).unwrap_or_default(),
                    client: client.to_owned(),
                    reached: reached.clone(),
                },
            );
        Self { id, reached }
    }

    /// The stream has read the log up to `revision` (and queued what it wanted from it).
    pub(crate) fn reached(&self, revision: u64) {
        self.reached.store(revision, Ordering::Relaxed);
    }
}

impl Drop for WatchLag {
    fn drop(&mut self) {
        WATCHERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Adds the gateway's families to every scrape, when this process serves metrics, while
/// the guard is kept (it holds a clone of `gw`).
pub fn register(gw: &Gateway) -> Option<CollectorGuard> {
    if !weft_runtime::metrics::enabled() {
        return None;
    }
    let gw = gw.clone();
    Some(weft_runtime::metrics::add_collector(Arc::new(move || {
        let gw = gw.clone();
        Box::pin(async move { collect(&gw).await })
    })))
}

async fn collect(gw: &Gateway) -> String {
    match read(gw).await {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the store");
            String::new()
        }
    }
}

async fn read(gw: &Gateway) -> Result<String, store::GatewayStoreError> {
    let mut conn = gw.db.read().acquire().await?;
    let head = store::current_revision(&mut conn).await?;
    let rows = sqlx::query(
        "SELECT s.host AS host, n.name AS network, COUNT(*) AS n FROM gateway_endpoints e \
         JOIN gateway_sandboxes s ON s.id = e.sandbox_id \
         JOIN gateway_networks n ON n.id = e.network_id \
         GROUP BY s.host, n.name ORDER BY s.host, n.name",
    )
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let mut endpoints = Family::new(
        "weft_gateway_endpoints",
        Kind::Gauge,
        "Endpoints in the store, by the host of their sandbox and by network.",
    );
    for r in &rows {
        let host: String = r.try_get("host")?;
        let network: String = r.try_get("network")?;
        let n: i64 = r.try_get("n")?;
        endpoints.sample(&[("host", &host), ("network", &network)], n);
    }
    let mut revision = Family::new(
        "weft_gateway_revision",
        Kind::Gauge,
        "The newest revision of the event log.",
    );
    revision.sample(&[], head);
    let mut lag = Family::new(
        "weft_gateway_watch_lag_revisions",
        Kind::Gauge,
        "Per open Watch stream: revisions of the log it has not read yet.",
    );
    for (id, w) in WATCHERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        let behind = head.saturating_sub(w.reached.load(Ordering::Relaxed));
        lag.sample(
            &[
                ("watcher", &id.to_string()),
                ("peer", &w.peer),
                ("client", &w.client),
            ],
            behind,
        );
    }
    Ok([endpoints.finish(), revision.finish(), lag.finish()].concat())
}
