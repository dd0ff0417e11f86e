//! Allocations per second over gRPC against the real ipam-svc binary (a separate process), with
//! 1 and 16 concurrent clients, for a /24, a /8 and a /64 pool, on SQLite and (when
//! `WEFT_BENCH_DATABASE_URL` names a Postgres server; `bench/ipam.sh` starts one) on Postgres.
//!
//! Each line prints, beside allocations/s, the rate of a no-op RPC (`grpc.health.v1.Health/
//! Check`) on the same server, over the same connections, measured in alternating slices with
//! the allocations, and the ratio of the two: how close the allocation path is to what gRPC
//! itself costs on this machine. The load average is printed at the start and the end.
//!
//! A /24 holds only 253 addresses, so it is measured in rounds: fill it (timed), then release
//! the pool and create it again (not timed). The /8 and /64 are filled continuously, so their
//! figures include whatever cost grows with the number of allocations.
//!
//! The engine alone (the same allocations from 16 tasks in one process, no gRPC) is a
//! reference line. The benchmark's client runs on the same cores as the server.
//!
//! Run: `cargo bench -p ipam-svc --bench alloc` (or `bash bench/ipam.sh` for both backends).
//! Knobs: `WEFT_BENCH_ALLOCS` (default 20000 per case), `WEFT_BENCH_BACKEND` (sqlite|postgres),
//! `WEFT_BENCH_CLIENTS` (default `1,16`), `WEFT_BENCH_THREADS` (set: the server's CPU per call
//! and how many times its threads were scheduled per call, by thread name, allocation / no-op),
//! `WEFT_BENCH_ONLY` (`alloc` or `noop`: that half of each case only, for a profiler),
//! `WEFT_BENCH_SERVER` (the path of another ipam-svc binary to run instead of this build's).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
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

/// Opens `clients` connections (each its own HTTP/2 connection) and makes one call on each, so
/// that no timed call pays for a connection set-up.
async fn connect(addr: std::net::SocketAddr, clients: usize) -> Vec<tonic::transport::Channel> {
    let chans: Vec<_> = (0..clients).map(|_| weft_testkit::channel(addr)).collect();
    for ch in &chans {
        HealthClient::new(ch.clone())
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
    }
    chans
}

/// `count` allocations spread over the connections, one task each; returns the time.
async fn fill(chans: &[tonic::transport::Channel], count: usize, tag: &str) -> Duration {
    let clients = chans.len();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, ch) in chans.iter().enumerate() {
        let mut c = IpamServiceClient::new(ch.clone());
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

/// `count` no-op calls (`grpc.health.v1.Health/Check`: no store, no engine, a two-byte
/// answer) spread over the same connections as the allocations; returns the time.
async fn noop(chans: &[tonic::transport::Channel], count: usize) -> Duration {
    let clients = chans.len();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, ch) in chans.iter().enumerate() {
        let mut c = HealthClient::new(ch.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (k..count).step_by(clients) {
                c.check(HealthCheckRequest::default()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// One case on a fresh server: allocations/s and, on the same server and the same connections,
/// the no-op RPC rate. The two are measured in alternation (a no-op slice, then an allocation
/// slice, and so on), so that whatever else the shared machine does falls on both alike.
async fn case(url: &str, subnet: &str, clients: usize, total: usize) -> Figures {
    let args = vec![
        "--insecure-plaintext".to_owned(),
        "--database-url".to_owned(),
        url.to_owned(),
        "--log-filter".into(),
        "warn".into(),
    ];
    let svc = ServiceProcess::start(&server_binary(), &args).await;
    let mut admin = IpamServiceClient::new(weft_testkit::channel(svc.addr));
    new_pool(&mut admin, subnet).await;
    let chans = connect(svc.addr, clients).await;
    let (mut alloc_time, mut noop_time) = (Duration::ZERO, Duration::ZERO);
    let (mut alloc_threads, mut noop_threads) = (BTreeMap::new(), BTreeMap::new());
    let pid = svc.pid().as_raw();
    let mut done = 0;
    // A /24 holds 253 addresses: its slices are one fill each, with a new pool in between. The
    // others alternate every 500 calls (a few tenths of a second), so that the load of other
    // work on a shared machine, which changes over seconds, falls on both rates alike.
    let slice = if subnet.ends_with("/24") { 253 } else { 500 };
    // For a profiler: one of the two only (the other's rate is then meaningless).
    let only_phase = std::env::var("WEFT_BENCH_ONLY").ok();
    let only_phase = only_phase.as_deref();
    let mut r = 0;
    while done < total {
        let n = slice.min(total - done);
        let c0 = cpu_by_thread(pid);
        if only_phase != Some("alloc") {
            noop_time += noop(&chans, n).await;
        }
        let c1 = cpu_by_thread(pid);
        if only_phase != Some("noop") {
            alloc_time += fill(&chans, n, &format!("r{r}")).await;
        }
        let c2 = cpu_by_thread(pid);
        add_diff(&mut noop_threads, &c0, &c1);
        add_diff(&mut alloc_threads, &c1, &c2);
        done += n;
        r += 1;
        if done < total && subnet.ends_with("/24") {
            new_pool(&mut admin, subnet).await;
        }
    }
    let cpu = |m: &BTreeMap<String, u64>| -> u64 {
        m.iter()
            .filter(|(name, _)| !name.ends_with(RUNS))
            .map(|(_, ns)| ns)
            .sum()
    };
    let (alloc_cpu, noop_cpu) = (cpu(&alloc_threads), cpu(&noop_threads));
    if std::env::var_os("WEFT_BENCH_THREADS").is_some() {
        for (name, n) in &alloc_threads {
            let noop_n = noop_threads.get(name).copied().unwrap_or(0);
            let per_call = |n: u64| n as f64 / done as f64;
            if name.ends_with(RUNS) {
                println!(
                    "    thread {name:<24} {:>6.2} / {:>6.2} per call",
                    per_call(*n),
                    per_call(noop_n)
                );
            } else {
                println!(
                    "    thread {name:<24} {:>6.1} µs / {:>6.1} µs per call",
                    per_call(*n) / 1000.0,
                    per_call(noop_n) / 1000.0
                );
            }
        }
    }
    Figures {
        allocs: done as f64 / alloc_time.as_secs_f64(),
        noops: done as f64 / noop_time.as_secs_f64(),
        alloc_cpu_us: alloc_cpu as f64 / 1000.0 / done as f64,
        noop_cpu_us: noop_cpu as f64 / 1000.0 / done as f64,
    }
}

/// The ipam-svc binary the cases run: this build's, or `WEFT_BENCH_SERVER` (another build's
/// binary, so that `bench/ipam-alternate.sh` can run two versions under the same client).
fn server_binary() -> String {
    match std::env::var("WEFT_BENCH_SERVER") {
        Ok(path) if !path.is_empty() => {
            let meta = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("WEFT_BENCH_SERVER={path}: {e}"));
            assert!(meta.is_file(), "WEFT_BENCH_SERVER={path}: not a file");
            path
        }
        _ => env!("CARGO_BIN_EXE_ipam-svc").to_owned(),
    }
}

/// What one case measured: calls per second, and the server's CPU time per call.
struct Figures {
    allocs: f64,
    noops: f64,
    alloc_cpu_us: f64,
    noop_cpu_us: f64,
}

/// CPU time (ns) used so far by the threads of process `pid`, by thread name, from
/// `/proc/<pid>/task/*/schedstat`.
fn cpu_by_thread(pid: i32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in dir.filter_map(Result::ok) {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let fields: Vec<u64> = stat
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        // schedstat: time on a CPU (ns), time waiting for one, and how many times it ran.
        if let [ns, _, runs] = fields[..] {
            *out.entry(name.trim().to_owned()).or_default() += ns;
            *out.entry(format!("{}{RUNS}", name.trim())).or_default() += runs;
        }
    }
    out
}

/// The suffix of the entries of [`cpu_by_thread`] that count how many times a thread ran.
const RUNS: &str = " (runs)";

/// What each thread name used between two readings of [`cpu_by_thread`], added to `acc`.
fn add_diff(
    acc: &mut BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) {
    for (name, ns) in after {
        *acc.entry(name.clone()).or_default() +=
            ns.saturating_sub(before.get(name).copied().unwrap_or(0));
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Allocations per second from `tasks` tasks calling the engine directly (no gRPC), SQLite.
async fn engine_only(subnet: &str, tasks: usize, total: usize) -> f64 {
    use clap::Parser as _;
    let db = TestDb::sqlite();
    let args = ipam_svc::Args::try_parse_from([
        "ipam-svc",
        "--insecure-plaintext",
        "--database-url",
        &db.url,
    ])
    .unwrap();
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
    let client_counts: Vec<usize> = std::env::var("WEFT_BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16]);
    let mut backends = vec!["sqlite"];
    if pg.is_some() {
        // TestDb::postgres reads the admin URL from this variable.
        backends.push("postgres");
    }
    println!("ipam-svc allocations per second over gRPC ({total} allocations per case)");
    println!(
        "load average at start: {} ({} cores; the client runs on the same cores as the server)",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("server: {}", server_binary());
    if only.as_deref().is_none_or(|o| o == "sqlite") {
        for subnet in ["10.0.0.0/24", "10.0.0.0/8", "fd00:b::/64"] {
            println!(
                "engine only (no gRPC), sqlite, {subnet:<12} 16 tasks: {:>8.0} allocs/s",
                engine_only(subnet, 16, total).await
            );
        }
    }
    println!(
        "{:<9} {:<14} {:>7} {:>10} {:>10} {:>6}   server CPU per call: alloc / no-op",
        "backend", "pool", "clients", "allocs/s", "no-op/s", "ratio"
    );
    for backend in backends
        .into_iter()
        .filter(|b| only.as_deref().is_none_or(|o| o == *b))
    {
        for &clients in &client_counts {
            for subnet in ["10.0.0.0/24", "10.0.0.0/8", "fd00:b::/64"] {
                let db = match backend {
                    "sqlite" => TestDb::sqlite(),
                    _ => TestDb::postgres().await,
                };
                let f = case(&db.url, subnet, clients, total).await;
                println!(
                    "{backend:<9} {subnet:<14} {clients:>7} {:>10.0} {:>10.0} {:>6.2}   {:>5.1} µs / {:>5.1} µs",
                    f.allocs,
                    f.noops,
                    f.allocs / f.noops,
                    f.alloc_cpu_us,
                    f.noop_cpu_us
                );
            }
        }
    }
    println!("load average at end: {}", loadavg());
}
