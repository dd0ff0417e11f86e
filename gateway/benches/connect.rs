//! Connect and Disconnect latency through the gateway (p50, p99), with a real ipam-svc and an
//! in-process agent, all served over loopback gRPC in this process, on SQLite and (when
//! `WEFT_BENCH_DATABASE_URL` names a Postgres server) on Postgres.
//!
//! Run: `cargo bench -p gateway --bench connect`. Knob: `WEFT_BENCH_CONNECTS` (default 2000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use clap::Parser as _;
use weft_proto::gateway::v1::{
    self as pb, network_service_client::NetworkServiceClient,
    sandbox_service_client::SandboxServiceClient,
};
use weft_runtime::{GrpcServer, grpc::ShutdownTiming};
use weft_testkit::{TestDb, fake_agent::FakeAgent};

async fn serve(server: GrpcServer) -> std::net::SocketAddr {
    let (listener, addr) = GrpcServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let timing = ShutdownTiming {
        delay: Duration::ZERO,
        grace: Duration::from_secs(1),
    };
    tokio::spawn(server.serve(listener, timing, std::future::pending()));
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(ipam_db: &TestDb, gw_db: &TestDb, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let ipam_args = ipam_svc::Args::try_parse_from([
        "ipam-svc",
        "--database-url",
        &ipam_db.url,
        "--log-filter",
        "warn",
    ])
    .unwrap();
    let ipam = ipam_svc::open(&ipam_svc::Config::try_from(ipam_args).unwrap())
        .await
        .unwrap();
    let ipam_addr = serve(GrpcServer::new().add_service(ipam_svc::grpc::server(ipam))).await;
    let agent_addr = serve(GrpcServer::new().add_service(
        weft_proto::agent::v1::agent_service_server::AgentServiceServer::new(FakeAgent::default()),
    ))
    .await;
    let args = gateway::Args::try_parse_from([
        "gateway",
        "--database-url",
        &gw_db.url,
        "--ipam",
        &format!("http://{ipam_addr}"),
        "--agent",
        &format!("http://{agent_addr}"),
    ])
    .unwrap();
    let gw = gateway::open(&args).await.unwrap();
    gw.ensure_predefined().await.unwrap();
    let addr = serve(gateway::services(gw)).await;
    let mut nets = NetworkServiceClient::new(weft_testkit::channel(addr));
    let mut sb = SandboxServiceClient::new(weft_testkit::channel(addr));
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
        let (ipam_db, gw_db) = match backend {
            "sqlite" => (TestDb::sqlite(), TestDb::sqlite()),
            _ => (TestDb::postgres().await, TestDb::postgres().await),
        };
        let (conn, disc) = run(&ipam_db, &gw_db, n).await;
        for (rpc, v) in [("Connect", &conn), ("Disconnect", &disc)] {
            println!(
                "{backend:<9} {rpc:<11} {:>7.2}ms {:>7.2}ms",
                percentile(v, 0.5).as_secs_f64() * 1e3,
                percentile(v, 0.99).as_secs_f64() * 1e3
            );
        }
    }
}
