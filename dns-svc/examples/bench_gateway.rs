//! A fake gateway for benchmarks (bench/dns.sh): a `weft.gateway.v1.EventService` whose Watch
//! sends network `bench` with N sandboxes of another host, `n0` … `n<N-1>`, each with one
//! endpoint at 10.90.<i/250>.<i%250+1>, then SNAPSHOT_END, then nothing more.
//!
//! Usage: `bench_gateway <listen addr> <N> [hosts file]`; with a hosts file, also writes the
//! same names as `<ip> n<i>.bench.weft` lines (for dnsmasq's --addn-hosts).

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

fn ip(i: usize) -> String {
    format!("10.90.{}.{}", i / 250, i % 250 + 1)
}

impl Bench {
    fn new(n: usize) -> Self {
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
                    subnet: "10.90.0.0/16".into(),
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
        for i in 0..n {
            let sb = gw::Sandbox {
                id: format!("sbench{i:08}"),
                name: format!("n{i}"),
                host: "bench-elsewhere".into(),
                ..Default::default()
            };
            events.push(ev(
                EventKind::SandboxCreated,
                Some(Object::Sandbox(sb.clone())),
            ));
            events.push(ev(
                EventKind::EndpointConnected,
                Some(Object::Endpoint(gw::Endpoint {
                    id: format!("ebench{i:08}"),
                    network_id: net.id.clone(),
                    network_name: net.name.clone(),
                    sandbox_id: sb.id,
                    sandbox_name: sb.name,
                    ipv4_address: format!("{}/16", ip(i)),
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
    if let Some(path) = args.next() {
        let hosts: String = (0..n)
            .map(|i| format!("{} n{i}.bench.weft\n", ip(i)))
            .collect();
        std::fs::write(path, hosts)?;
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "fake gateway on {} with {n} endpoints",
        listener.local_addr()?
    );
    tonic::transport::Server::builder()
        .add_service(EventServiceServer::new(Bench::new(n)))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
