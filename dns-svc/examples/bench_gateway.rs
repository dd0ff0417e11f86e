//! A fake gateway for benchmarks (bench/dns.sh): a `weft.gateway.v1.EventService` whose Watch
//! sends network `bench` (10.90.0.0/15) with N sandboxes of another host, `n0` … `n<N-1>`, each
//! with one endpoint at 10.<90 + i/62500>.<i/250 % 250>.<i%250+1>, then SNAPSHOT_END, then
//! nothing more.
//!
//! Usage: `bench_gateway <listen addr> <N> [--hosts FILE] [--client-netns PATH]`, N at most
//! [`MAX_NAMES`].
//! - `--hosts FILE` also writes the same names as `<ip> n<i> n<i>.bench.weft` lines (for
//!   dnsmasq's --addn-hosts: the bare name a container asks, and the operator's name).
//! - `--client-netns PATH` adds sandbox `client` *of this host* (`bench`, what dns-svc is given
//!   as `--host`) whose namespace is at PATH, with an endpoint on `bench` (10.91.255.1): dns-svc
//!   then opens its 127.0.0.11:53 listener inside that namespace, as for any container, and a
//!   client there resolves the N names as a container on `bench` would.

#![allow(clippy::print_stdout)]

use std::{net::SocketAddr, pin::Pin};

use futures::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use weft_proto::gateway::v1::{
    self as gw, EventKind,
    event::Object,
    event_service_server::{EventService, EventServiceServer},
};

#[derive(Debug, Clone)]
struct Bench {
    events: Vec<gw::Event>,
}

/// The most names: what the addresses of the /15 hold with 250 per /24.
const MAX_NAMES: usize = 2 * 62_500;

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 90 + i / 62_500, i / 250 % 250, i % 250 + 1)
}

impl Bench {
    fn new(n: usize, client_netns: Option<&str>) -> Self {
        let ev = |kind: EventKind, object| gw::Event {
            revision: 1,
            kind: kind as i32,
            object,
            ..Default::default()
        };
        let net = gw::Network {
            id: "nbench000001".into(),
            name: "bench".into(),
            driver: "bridge".into(),
            ipam: Some(gw::Ipam {
                configs: vec![gw::IpamConfig {
                    subnet: "10.90.0.0/15".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut events = vec![ev(
            EventKind::NetworkCreated,
            Some(Object::Network(net.clone())),
        )];
        let client = client_netns.map(|path| {
            (
                gw::Sandbox {
                    id: "sbenchclient".into(),
                    name: "client".into(),
                    host: "bench".into(),
                    netns_path: path.into(),
                    ..Default::default()
                },
                "10.91.255.1/15".to_owned(),
            )
        });
        let others = (0..n).map(|i| {
            (
                gw::Sandbox {
                    id: format!("sbench{i:08}"),
                    name: format!("n{i}"),
                    host: "bench-elsewhere".into(),
                    ..Default::default()
                },
                format!("{}/15", ip(i)),
            )
        });
        for (sb, addr) in client.into_iter().chain(others) {
            events.push(ev(
                EventKind::SandboxCreated,
                Some(Object::Sandbox(sb.clone())),
            ));
            events.push(ev(
                EventKind::EndpointConnected,
                Some(Object::Endpoint(gw::Endpoint {
                    id: format!("e{}", sb.id),
                    network_id: net.id.clone(),
                    network_name: net.name.clone(),
                    sandbox_id: sb.id,
                    sandbox_name: sb.name,
                    ipv4_address: addr,
                    ..Default::default()
                })),
            ));
        }
        events.push(ev(EventKind::SnapshotEnd, None));
        Self { events }
    }
}

#[tonic::async_trait]
impl EventService for Bench {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<gw::Event, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<gw::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let first: Vec<Result<gw::Event, Status>> = if req.get_ref().from_revision == 0 {
            self.events.iter().cloned().map(Ok).collect()
        } else {
            Vec::new()
        };
        // The snapshot, then an open stream with no more events.
        let stream =
            futures::StreamExt::chain(futures::stream::iter(first), futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7700".into())
        .parse()?;
    let n: usize = args.next().unwrap_or_else(|| "1000".into()).parse()?;
    anyhow::ensure!(n <= MAX_NAMES, "{n} names: at most {MAX_NAMES}");
    let (mut hosts, mut client_netns) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--hosts", Some(v)) => hosts = Some(v),
            ("--client-netns", Some(v)) => client_netns = Some(v),
            (f, _) => anyhow::bail!("unknown flag or missing value: {f}"),
        }
    }
    if let Some(path) = hosts {
        let text: String = (0..n)
            .map(|i| format!("{} n{i} n{i}.bench.weft\n", ip(i)))
            .collect();
        // Whole or not at all: the bench starts dnsmasq as soon as the file is there.
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, path)?;
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "fake gateway on {} with {n} endpoints",
        listener.local_addr()?
    );
    tonic::transport::Server::builder()
        .add_service(EventServiceServer::new(Bench::new(
            n,
            client_netns.as_deref(),
        )))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
