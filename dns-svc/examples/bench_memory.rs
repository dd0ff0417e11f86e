//! What dns-svc's records cost in memory per endpoint held: the process's resident size
//! (`/proc/self/statm`) before and after N endpoints (each of its own sandbox of another host,
//! with 64-hex ids as the gateway makes them, one alias, a hostname, a container id, an IPv4
//! address) over 10 networks went through [`Live`] as the ingester takes them, with the
//! snapshot published. That is the state, the name and reverse indexes and the sandbox views:
//! everything dns-svc keeps for a record. One size per run (freed memory stays with the
//! allocator, so a second size in the same process would reuse it). Release build:
//!
//! `cargo run --release -p dns-svc --example bench_memory [N]` (default 100000)

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use dns_svc::{fixture, records::Live};
use weft_proto::gateway::v1::{self as gw, EventKind as K, event::Object as O};

const NETWORKS: usize = 10;

/// The resident size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A 64-hex id, as the gateway's.
fn id(kind: u8, i: usize) -> String {
    format!("{kind:02x}{:062x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn endpoint_events(i: usize) -> [gw::Event; 2] {
    let sb = gw::Sandbox {
        host: format!("host-{}", i % 50),
        netns_path: format!("/run/netns/weft-{}", id(1, i)),
        ..fixture::sandbox(
            &id(1, i),
            &format!("app-{i}"),
            &format!("app-{i}.local"),
            &id(2, i),
        )
    };
    let net = id(3, i % NETWORKS);
    let v4 = format!(
        "10.{}.{}.{}/16",
        100 + i % NETWORKS,
        i / 250 % 250,
        i % 250 + 1
    );
    let ep = fixture::endpoint(&id(4, i), &net, &sb.id, &v4, "", &[&format!("svc-{i}")]);
    [
        fixture::event(K::SandboxCreated, O::Sandbox(sb)),
        fixture::event(K::EndpointConnected, O::Endpoint(ep)),
    ]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse().expect("N: a number of endpoints"));
    let mut live = Live::default();
    for k in 0..NETWORKS {
        let net = fixture::network(
            &id(3, k),
            &format!("net{k}"),
            &format!("10.{}.0.0/16", 100 + k),
            false,
        );
        live.apply(&fixture::event(K::NetworkCreated, O::Network(net)));
    }
    let _ = live.publish(true);
    let before = rss();
    for i in 0..n {
        for ev in endpoint_events(i) {
            live.apply(&ev);
        }
    }
    let published = live.publish(true);
    let after = rss();
    let per = (after - before) as f64 / n as f64;
    println!(
        "N={n}  endpoints held: {}  resident growth {:.1} MiB  per endpoint (with its sandbox) {per:.0} bytes",
        live.state().endpoints.len(),
        (after - before) as f64 / (1024.0 * 1024.0),
    );
    drop(published);
}
