//! Query counters: in total, for the operator listener, per network and per sandbox.
//!
//! Plain atomics, so counting never blocks a query; the per-key maps take a write lock only the
//! first time a network or sandbox is counted.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::SystemTime,
};

use foldhash::HashMap;
use weft_proto::dns::v1 as pb;

#[derive(Debug, Default)]
pub struct Counters {
    pub queries: AtomicU64,
    pub answered_locally: AtomicU64,
    pub nxdomain: AtomicU64,
    pub forwarded: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub refused: AtomicU64,
    pub servfail: AtomicU64,
    pub tcp_queries: AtomicU64,
    pub truncated: AtomicU64,
}

impl Counters {
    pub fn to_pb(&self) -> pb::Counters {
        pb::Counters {
            queries: self.queries.load(Relaxed),
            answered_locally: self.answered_locally.load(Relaxed),
            nxdomain: self.nxdomain.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            upstream_failures: self.upstream_failures.load(Relaxed),
            refused: self.refused.load(Relaxed),
            servfail: self.servfail.load(Relaxed),
            tcp_queries: self.tcp_queries.load(Relaxed),
            truncated: self.truncated.load(Relaxed),
        }
    }
}

/// What one query amounted to, for counting.
#[derive(Debug, Clone, Default)]
pub struct QueryRecord<'a> {
    pub sandbox_id: Option<&'a str>,
    /// The network whose records answered, or whose upstreams were used.
    pub network_id: Option<&'a str>,
    pub tcp: bool,
    pub local: bool,
    pub forwarded: bool,
    pub upstream_failures: u64,
    pub nxdomain: bool,
    pub refused: bool,
    pub servfail: bool,
}

#[derive(Debug)]
pub struct Stats {
    pub since: SystemTime,
    pub total: Counters,
    pub operator: Counters,
    networks: RwLock<HashMap<String, Arc<Counters>>>,
    sandboxes: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            since: SystemTime::now(),
            total: Counters::default(),
            operator: Counters::default(),
            networks: RwLock::default(),
            sandboxes: RwLock::default(),
        }
    }
}

/// Bumps the counters of `key` in `map`, under the read lock once they exist.
fn bump_in(map: &RwLock<HashMap<String, Arc<Counters>>>, key: &str, r: &QueryRecord<'_>) {
    if let Some(c) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return bump(c, r);
    }
    let c = map
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.to_owned())
        .or_default()
        .clone();
    bump(&c, r);
}

fn bump(c: &Counters, r: &QueryRecord<'_>) {
    let add = |a: &AtomicU64, yes: bool| {
        if yes {
            a.fetch_add(1, Relaxed);
        }
    };
    add(&c.queries, true);
    add(&c.tcp_queries, r.tcp);
    add(&c.answered_locally, r.local);
    add(&c.forwarded, r.forwarded);
    add(&c.nxdomain, r.nxdomain);
    add(&c.refused, r.refused);
    add(&c.servfail, r.servfail);
    if r.upstream_failures > 0 {
        c.upstream_failures.fetch_add(r.upstream_failures, Relaxed);
    }
}

impl Stats {
    pub fn record(&self, r: &QueryRecord<'_>) {
        bump(&self.total, r);
        match r.sandbox_id {
            Some(id) => bump_in(&self.sandboxes, id, r),
            None => bump(&self.operator, r),
        }
        if let Some(net) = r.network_id {
            bump_in(&self.networks, net, r);
        }
    }

    pub fn networks(&self) -> Vec<(String, pb::Counters)> {
        snapshot(&self.networks)
    }

    pub fn sandboxes(&self) -> Vec<(String, pb::Counters)> {
        snapshot(&self.sandboxes)
    }
}

fn snapshot(map: &RwLock<HashMap<String, Arc<Counters>>>) -> Vec<(String, pb::Counters)> {
    let mut v: Vec<_> = map
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, c)| (k.clone(), c.to_pb()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_counts_in_total_per_sandbox_and_per_network() {
        let s = Stats::default();
        s.record(&QueryRecord {
            sandbox_id: Some("sb"),
            network_id: Some("net"),
            local: true,
            tcp: true,
            ..Default::default()
        });
        s.record(&QueryRecord {
            nxdomain: true,
            ..Default::default()
        });
        assert_eq!(s.total.to_pb().queries, 2);
        assert_eq!(s.total.to_pb().tcp_queries, 1);
        assert_eq!(s.operator.to_pb().nxdomain, 1);
        assert_eq!(s.sandboxes()[0].1.answered_locally, 1);
        assert_eq!(s.networks()[0].0, "net");
    }
}
