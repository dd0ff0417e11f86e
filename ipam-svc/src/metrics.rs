//! ipam-svc's pool usage, read at scrape time (see `weft_runtime::metrics`): per pool, the
//! addresses dynamic allocation can hand out, those allocated and those still free (the
//! numbers `GetPool` shows as `usage`).

use std::sync::Arc;

use weft_runtime::metrics::{CollectorGuard, Family, Kind};

use crate::engine::{Ipam, PoolInfo};

/// Pools read per page, and the most pages one scrape reads (the rest are left out, and a
/// warning says so).
const PAGE: u32 = 500;
const MAX_PAGES: usize = 20;

/// The pool label the gateway sets to the id of the network a pool belongs to.
const NETWORK_LABEL: &str = "weft.network";

/// Adds the pool families to every scrape, when this process serves metrics, while
/// the guard is kept (it holds a clone of `ipam`).
pub fn register(ipam: &Ipam) -> Option<CollectorGuard> {
    if !weft_runtime::metrics::enabled() {
        return None;
    }
    let ipam = ipam.clone();
    Some(weft_runtime::metrics::add_collector(Arc::new(move || {
        let ipam = ipam.clone();
        Box::pin(async move { collect(&ipam).await })
    })))
}

async fn collect(ipam: &Ipam) -> String {
    let mut pools: Vec<PoolInfo> = Vec::new();
    let mut after: Option<String> = None;
    for page in 0.. {
        if page == MAX_PAGES {
            tracing::warn!(
                shown = pools.len(),
                "metrics: more pools than one scrape reads; the rest are left out"
            );
            break;
        }
        match ipam.list_pools(None, after.as_deref(), PAGE).await {
            Ok((mut got, next)) => {
                pools.append(&mut got);
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot list pools");
                return String::new();
            }
        }
    }
    render(&pools)
}

fn render(pools: &[PoolInfo]) -> String {
    let mut size = Family::new(
        "weft_ipam_pool_size_addresses",
        Kind::Gauge,
        "Addresses dynamic allocation can hand out in the pool (IPv6 saturates at 2^64-1).",
    );
    let mut allocated = Family::new(
        "weft_ipam_pool_allocated_addresses",
        Kind::Gauge,
        "Addresses allocated in the pool.",
    );
    let mut free = Family::new(
        "weft_ipam_pool_free_addresses",
        Kind::Gauge,
        "Addresses of the allocation range still free.",
    );
    for p in pools {
        let subnet = p.def.subnet.to_string();
        let network = p.def.labels.get(NETWORK_LABEL).map_or("", String::as_str);
        let labels = [
            ("pool", p.def.id.as_str()),
            ("address_space", p.def.space.as_str()),
            ("subnet", subnet.as_str()),
            ("network_id", network),
        ];
        let cap = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
        size.sample(&labels, cap(p.size));
        allocated.sample(&labels, p.allocated);
        free.sample(&labels, cap(p.free));
    }
    [size.finish(), allocated.finish(), free.finish()].concat()
}
