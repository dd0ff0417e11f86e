//! Connect and Disconnect latency through the gateway (p50, p99), with a real ipam-svc and an
//! in-process agent, all served over loopback gRPC in this process, on SQLite and (when
//! `WEFT_BENCH_DATABASE_URL` names a Postgres server) on Postgres.
//!
//! Run: `cargo bench -p gateway --bench connect`. Knob: `WEFT_BENCH_CONNECTS` (default 2000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use weft_proto::gateway::v1 as pb;
use weft_testkit::{Backend, stack::StackOptions};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(backend: Backend, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let stack = StackOptions::new(backend)
        .ipam_flags(&["--log-filter", "warn"])
        .start()
        .await;
    let mut nets = stack.networks();
    let mut sb = stack.sandboxes();
    nets.create_network(pb::CreateNetworkRequest {
        name: "bench".into(),
        ipam: Some(pb::Ipam {
            configs: vec![pb::IpamConfig {
                subnet: "10.0.0.0/16".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    sb.create_sandbox(pb::CreateSandboxRequest {
        name: "c".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (mut conn, mut disc) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        sb.connect(pb::ConnectRequest {
            sandbox: "c".into(),
            network: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        conn.push(t.elapsed());
        let t = Instant::now();
        sb.disconnect(pb::DisconnectRequest {
            sandbox: "c".into(),
            network: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        disc.push(t.elapsed());
    }
    conn.sort();
    disc.sort();
    (conn, disc)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("WEFT_BENCH_CONNECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!(
        "gateway Connect / Disconnect latency, one client, {n} of each (in-process agent, real ipam-svc)"
    );
    println!("{:<9} {:<11} {:>9} {:>9}", "backend", "rpc", "p50", "p99");
    let mut backends = vec!["sqlite"];
    if std::env::var("WEFT_BENCH_DATABASE_URL").is_ok() {
        backends.push("postgres");
    }
    for backend in backends {
        let on = match backend {
            "sqlite" => Backend::Sqlite,
            _ => Backend::Postgres,
        };
        let (conn, disc) = run(on, n).await;
        for (rpc, v) in [("Connect", &conn), ("Disconnect", &disc)] {
            println!(
                "{backend:<9} {rpc:<11} {:>7.2}ms {:>7.2}ms",
                percentile(v, 0.5).as_secs_f64() * 1e3,
                percentile(v, 0.99).as_secs_f64() * 1e3
            );
        }
    }
}
