//! One identity floods the API at ten times its rate limit while another makes Connect calls:
//! the second's Connect p50 beside its p50 with nobody flooding (the limit turns the flood
//! away cheaply, with RESOURCE_EXHAUSTED and a time to retry, so the other caller hardly
//! notices). A real gateway and ipam-svc with the test kit's in-process agent, over loopback
//! gRPC in this process, on SQLite.
//!
//! Run: `cargo bench -p gateway --bench flood`. Knobs: `WEFT_BENCH_CONNECTS` (default 100,
//! per phase), `WEFT_BENCH_RATE` (the limit, calls/s; default 200).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use weft_proto::gateway::v1::{self as pb, token_service_client::TokenServiceClient};
use weft_runtime::access::Bearer;
use weft_testkit::{Backend, channel, stack::StackOptions};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn token(stack: &weft_testkit::stack::Stack, name: &str) -> Bearer {
    let r = TokenServiceClient::new(stack.deps().admin_channel(stack.gateway))
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            role: "operator".into(),
            host: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    Bearer::new(&r.token).unwrap()
}

/// `n` Connect calls of `who`, each to a sandbox of its own (made beforehand by the admin),
/// one every 10 ms (a client within its limit): their latencies, sorted.
async fn connects(
    stack: &weft_testkit::stack::Stack,
    who: &Bearer,
    phase: &str,
    n: u64,
) -> Vec<Duration> {
    let mut admin = stack.sandboxes();
    for i in 0..n {
        admin
            .create_sandbox(pb::CreateSandboxRequest {
                name: format!("{phase}-{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut sb =
        pb::sandbox_service_client::SandboxServiceClient::new(who.on(channel(stack.gateway)));
    let mut took = Vec::new();
    for i in 0..n {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t = Instant::now();
        sb.connect(pb::ConnectRequest {
            sandbox: format!("{phase}-{i}"),
            network: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    took
}

#[tokio::main]
async fn main() {
    let n = knob("WEFT_BENCH_CONNECTS", 100);
    let rate = knob("WEFT_BENCH_RATE", 200);
    let rate_s = rate.to_string();
    let stack = StackOptions::new(Backend::Sqlite)
        .ipam_flags(&["--log-filter", "warn"])
        .gateway_flags(&[
            "--rate-limit",
            &rate_s,
            "--rate-burst",
            &rate_s,
            "--log-filter",
            "warn",
        ])
        .start()
        .await;
    stack
        .networks()
        .create_network(pb::CreateNetworkRequest {
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
    let worker = token(&stack, "worker").await;
    let flooder = token(&stack, "flooder").await;
    // Warm up (connections, statements), then the phase without a flood.
    connects(&stack, &worker, "warm", 20).await;
    let calm = connects(&stack, &worker, "calm", n).await;

    // The flood: ten times the limit, paced, from 8 tasks (ListNetworks, a read of the whole
    // list; refused calls are answered at once).
    let stop = Arc::new(AtomicBool::new(false));
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks = 8;
    let per_task = Duration::from_secs_f64(f64::from(tasks) / (10.0 * rate as f64));
    let mut flood = Vec::new();
    for _ in 0..tasks {
        let mut c = pb::network_service_client::NetworkServiceClient::new(
            flooder.on(channel(stack.gateway)),
        );
        let (stop, accepted, refused) = (stop.clone(), accepted.clone(), refused.clone());
        flood.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_task);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                match c.list_networks(pb::ListNetworksRequest::default()).await {
                    Ok(_) => accepted.fetch_add(1, Ordering::Relaxed),
                    Err(st) if st.code() == tonic::Code::ResourceExhausted => {
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(st) => panic!("flood call failed: {st}"),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (a0, r0) = (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    let flooded = connects(&stack, &worker, "flooded", n).await;
    let secs = started.elapsed().as_secs_f64();
    let (a1, r1) = (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.await.unwrap();
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "gateway: one operator floods at 10x its limit ({rate} calls/s), another makes {n} Connect calls"
    );
    println!("load average: {}", load.trim());
    println!(
        "flood during the measured phase: {:.0} calls/s asked, {:.0} accepted/s, {:.0} refused/s (RESOURCE_EXHAUSTED)",
        ((a1 - a0) + (r1 - r0)) as f64 / secs,
        (a1 - a0) as f64 / secs,
        (r1 - r0) as f64 / secs
    );
    println!("{:<12} {:>9} {:>9}", "Connect", "p50", "p99");
    for (label, d) in [("no flood", &calm), ("flooded", &flooded)] {
        println!(
            "{label:<12} {:>7.2}ms {:>7.2}ms",
            percentile(d, 0.5).as_secs_f64() * 1e3,
            percentile(d, 0.99).as_secs_f64() * 1e3
        );
    }
    println!(
        "p50 flooded / no flood: {:.2} (target at most 1.5)",
        percentile(&flooded, 0.5).as_secs_f64() / percentile(&calm, 0.5).as_secs_f64()
    );
}
