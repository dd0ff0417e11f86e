//! What one gateway change costs dns-svc's record ingestion, at several world sizes: the time
//! from an event arriving to the snapshot that holds it being published (what the gateway's
//! `WaitForRevision` waits for on every CreateSandbox).
//!
//! For each size N: 10 networks, N sandboxes of this host round robin over them, each with one
//! endpoint (an alias, a hostname, a container id); then CHANGES creates (SandboxCreated +
//! EndpointConnected, published once) and as many deletes (EndpointDisconnected +
//! SandboxRemoved), through [`Live`] as the ingester does (only what a change touches is
//! indexed again); then, for comparison, a few changes each followed by a whole rebuild
//! ([`Snapshot::build`], what every change cost before the index was incremental). Prints
//! p50 / p99 / mean per change. Release build:
//!
//! `cargo run --release -p dns-svc --example bench_apply [N ...]` (default 100 1000 5000)

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::{sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use dns_svc::{
    fixture,
    records::{Live, Snapshot},
};
use weft_proto::gateway::v1::{self as gw, EventKind as K, event::Object as O};

const NETWORKS: usize = 10;
const CHANGES: usize = 300;
/// Changes measured with a whole rebuild (about 0.2 s each at 5,000 sandboxes).
const WHOLE_CHANGES: usize = 20;

fn ip(i: usize) -> String {
    format!(
        "10.{}.{}.{}/16",
        100 + i % NETWORKS,
        i / 250 % 250,
        i % 250 + 1
    )
}

fn sandbox_events(i: usize) -> [gw::Event; 2] {
    let id = format!("s{i:011}");
    let sb = gw::Sandbox {
        host: "bench".into(),
        netns_path: format!("/run/netns/bench-{i}"),
        // Container ids differ in their first 12 characters (the short id is a name), as
        // random ones do.
        ..fixture::sandbox(
            &id,
            &format!("n{i}"),
            &format!("h{i}"),
            &format!("{:012x}{i:052x}", i * 0x9e37_79b9),
        )
    };
    let ep = fixture::endpoint(
        &format!("e{i:011}"),
        &format!("net{}", i % NETWORKS),
        &id,
        &ip(i),
        "",
        &[&format!("a{i}")],
    );
    [
        fixture::event(K::SandboxCreated, O::Sandbox(sb)),
        fixture::event(K::EndpointConnected, O::Endpoint(ep)),
    ]
}

/// The ingester's work for one change: apply its events, publish the snapshot that holds them.
struct Ingest {
    live: Live,
    revision: u64,
    published: ArcSwap<Snapshot>,
    /// Rebuild whole instead (what every change did before).
    whole: bool,
}

impl Ingest {
    fn change(&mut self, events: &[gw::Event]) {
        for ev in events {
            self.revision += 1;
            self.live.apply(ev);
            self.live.set_revision(self.revision);
        }
        let snap = if self.whole {
            Snapshot::build(self.live.state(), true)
        } else {
            self.live.publish(true)
        };
        self.published.store(Arc::new(snap));
    }
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!(
        "p50 {:>9.1} µs  p99 {:>9.1} µs  mean {:>9.1} µs",
        p(0.5),
        p(0.99),
        mean
    )
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N: a number of sandboxes"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000, 5000]
    } else {
        sizes
    };
    for n in sizes {
        let mut ing = Ingest {
            live: Live::default(),
            revision: 0,
            published: ArcSwap::from_pointee(Snapshot::default()),
            whole: false,
        };
        let mut world: Vec<gw::Event> = (0..NETWORKS)
            .map(|k| {
                fixture::event(
                    K::NetworkCreated,
                    O::Network(fixture::network(
                        &format!("net{k}"),
                        &format!("bench{k}"),
                        &format!("10.{}.0.0/16", 100 + k),
                        false,
                    )),
                )
            })
            .collect();
        world.extend((0..n).flat_map(sandbox_events));
        ing.change(&world);
        let (creates, deletes) = measure(&mut ing, n, CHANGES);
        println!("N={n:>6}  create: {}", stats(creates));
        println!("N={n:>6}  delete: {}", stats(deletes));
        ing.whole = true;
        let (creates, deletes) = measure(&mut ing, n, WHOLE_CHANGES);
        println!("N={n:>6}  create, whole rebuild: {}", stats(creates));
        println!("N={n:>6}  delete, whole rebuild: {}", stats(deletes));
    }
}

/// `changes` creates and deletes of sandboxes `n`, `n + 1`, …: the time of each, in µs.
fn measure(ing: &mut Ingest, n: usize, changes: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut creates, mut deletes) = (Vec::new(), Vec::new());
    for c in 0..changes {
        let i = n + c;
        let evs = sandbox_events(i);
        let t = Instant::now();
        ing.change(&evs);
        creates.push(t.elapsed().as_secs_f64() * 1e6);
        let [sb, ep] = evs;
        let gone = [
            gw::Event {
                kind: K::EndpointDisconnected as i32,
                ..ep
            },
            gw::Event {
                kind: K::SandboxRemoved as i32,
                ..sb
            },
        ];
        let t = Instant::now();
        ing.change(&gone);
        deletes.push(t.elapsed().as_secs_f64() * 1e6);
    }
    (creates, deletes)
}
