//! Allocations per second over gRPC against the real ipam-svc binary (a separate process), with
//! 1 and 16 concurrent clients, for a /24, a /8 and a /64 pool, on SQLite and (when
//! `WEFT_BENCH_DATABASE_URL` names a Postgres server; `bench/ipam.sh` starts one) on Postgres.
//!
//! A /24 holds only 253 addresses, so it is measured in rounds: fill it (timed), then release
//! the pool and create it again (not timed). The /8 and /64 are filled continuously, so their
//! figures include whatever cost grows with the number of allocations.
//!
//! Two reference lines put the figures in context: the gRPC floor (an RPC that touches no
//! store, same client set-up) and the engine alone (the same allocations from 16 tasks in one
//! process, no gRPC). The benchmark's client runs on the same 2 cores as the server.
//!
//! Run: `cargo bench -p ipam-svc --bench alloc` (or `bash bench/ipam.sh` for both backends).
//! Knobs: `WEFT_BENCH_ALLOCS` (default 20000 per case), `WEFT_BENCH_BACKEND` (sqlite|postgres).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use weft_proto::ipam::v1::{self as pb, ipam_service_client::IpamServiceClient};
use weft_testkit::{ServiceProcess, TestDb};

type Client = IpamServiceClient<tonic::transport::Channel>;

async fn new_pool(c: &mut Client, subnet: &str) {
    let _ = c
        .release_pool(pb::ReleasePoolRequest {
            pool_id: "bench".into(),
            force: true,
        })
        .await;
    c.request_pool(pb::RequestPoolRequest {
        pool_id: "bench".into(),
        subnet: subnet.into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// `count` allocations spread over `clients`, each on its own connection; returns the time.
async fn fill(addr: std::net::SocketAddr, clients: usize, count: usize, tag: &str) -> Duration {
    let conns: Vec<Client> = (0..clients)
        .map(|_| IpamServiceClient::new(weft_testkit::channel(addr)))
        .collect();
    // Connect before timing.
    for c in &conns {
        let mut c = c.clone();
        c.list_address_spaces(pb::ListAddressSpacesRequest {})
            .await
            .unwrap();
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut c) in conns.into_iter().enumerate() {
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (k..count).step_by(clients) {
                c.request_address(pb::RequestAddressRequest {
                    pool_id: "bench".into(),
                    owner: format!("{tag}-{i}"),
                    address: String::new(),
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

async fn case(url: &str, subnet: &str, clients: usize, total: usize) -> f64 {
    let args = vec![
        "--database-url".to_owned(),
        url.to_owned(),
        "--log-filter".into(),
        "warn".into(),
    ];
    let svc = ServiceProcess::start(env!("CARGO_BIN_EXE_ipam-svc"), &args).await;
    let mut admin = IpamServiceClient::new(weft_testkit::channel(svc.addr));
    new_pool(&mut admin, subnet).await;
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    let round = if subnet.ends_with("/24") { 253 } else { total };
    let mut r = 0;
    while done < total {
        let n = round.min(total - done);
        elapsed += fill(svc.addr, clients, n, &format!("r{r}")).await;
        done += n;
        r += 1;
        if done < total && round < total {
            new_pool(&mut admin, subnet).await;
        }
    }
    done as f64 / elapsed.as_secs_f64()
}

/// Calls per second of an RPC that touches no store: the floor gRPC itself sets.
async fn rpc_floor(clients: usize, total: usize, shared: bool) -> f64 {
    let db = TestDb::sqlite();
    let args = vec![
        "--database-url".to_owned(),
        db.url.clone(),
        "--log-filter".into(),
        "warn".into(),
    ];
    let svc = ServiceProcess::start(env!("CARGO_BIN_EXE_ipam-svc"), &args).await;
    let one = IpamServiceClient::new(weft_testkit::channel(svc.addr));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = if shared {
            one.clone()
        } else {
            IpamServiceClient::new(weft_testkit::channel(svc.addr))
        };
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / clients {
                c.list_address_spaces(pb::ListAddressSpacesRequest {})
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Allocations per second from `tasks` tasks calling the engine directly (no gRPC), SQLite.
async fn engine_only(subnet: &str, tasks: usize, total: usize) -> f64 {
    use clap::Parser as _;
    let db = TestDb::sqlite();
    let args = ipam_svc::Args::try_parse_from(["ipam-svc", "--database-url", &db.url]).unwrap();
    let ipam = ipam_svc::open(&ipam_svc::Config::try_from(args).unwrap())
        .await
        .unwrap();
    let new_pool = || async {
        let _ = ipam.release_pool("bench".into(), true).await;
        let raw = ipam_svc::domain::pool::RawPoolRequest {
            id: "bench".into(),
            subnet: subnet.into(),
            ..Default::default()
        };
        ipam.request_pool(ipam_svc::domain::PoolRequest::validate(raw, &["local"]).unwrap())
            .await
            .unwrap();
    };
    new_pool().await;
    let round = if subnet.ends_with("/24") { 253 } else { total };
    let (mut done, mut elapsed, mut r) = (0, Duration::ZERO, 0);
    while done < total {
        let n = round.min(total - done);
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|k| {
                let ipam = ipam.clone();
                tokio::spawn(async move {
                    for i in (k..n).step_by(tasks) {
                        ipam.request_address("bench".into(), format!("r{r}-{i}"), None)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        elapsed += start.elapsed();
        done += n;
        r += 1;
        if done < total && round < total {
            new_pool().await;
        }
    }
    done as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("WEFT_BENCH_ALLOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let pg = std::env::var("WEFT_BENCH_DATABASE_URL").ok();
    let only = std::env::var("WEFT_BENCH_BACKEND").ok();
    let mut backends = vec!["sqlite"];
    if pg.is_some() {
        // TestDb::postgres reads the admin URL from this variable.
        backends.push("postgres");
    }
    println!("ipam-svc allocations per second over gRPC ({total} allocations per case)");
    for (clients, shared) in [(1, false), (16, false), (16, true)] {
        let how = if shared {
            "one shared connection"
        } else {
            "a connection each"
        };
        println!(
            "gRPC floor (ListAddressSpaces, no store), {clients:>2} clients, {how}: {:>8.0} calls/s",
            rpc_floor(clients, total, shared).await
        );
    }
    println!(
        "{:<9} {:<20} {:>8} {:>12} {:>10}",
        "backend", "pool", "clients", "allocs/s", "vs /24"
    );
    if only.as_deref().is_none_or(|o| o == "sqlite") {
        for subnet in ["10.0.0.0/24", "10.0.0.0/8", "fd00:b::/64"] {
            println!(
                "{:<9} {subnet:<20} {:>8} {:>12.0}   (engine only, no gRPC)",
                "sqlite",
                16,
                engine_only(subnet, 16, total).await
            );
        }
    }
    for backend in backends
        .into_iter()
        .filter(|b| only.as_deref().is_none_or(|o| o == *b))
    {
        for clients in [1, 16] {
            let mut base = 0.0;
            for subnet in ["10.0.0.0/24", "10.0.0.0/8", "fd00:b::/64"] {
                let db = match backend {
                    "sqlite" => TestDb::sqlite(),
                    _ => TestDb::postgres().await,
                };
                let rate = case(&db.url, subnet, clients, total).await;
                if subnet.ends_with("/24") {
                    base = rate;
                }
                println!(
                    "{backend:<9} {subnet:<20} {clients:>8} {rate:>12.0} {:>9.0}%",
                    100.0 * rate / base
                );
            }
        }
    }
}
