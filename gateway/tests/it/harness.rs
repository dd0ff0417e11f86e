//! A gateway and an ipam-svc, both served in this process on loopback, each on its own store.

use std::{net::SocketAddr, time::Duration};

use clap::Parser as _;
use tonic::transport::Channel;
use weft_proto::gateway::v1::{
    self as pb, event_service_client::EventServiceClient,
    network_service_client::NetworkServiceClient,
};
use weft_runtime::grpc::ShutdownTiming;
use weft_testkit::{Backend, TestDb};

pub struct Stack {
    pub gateway: SocketAddr,
    pub ipam: SocketAddr,
    pub agent: weft_testkit::fake_agent::FakeAgent,
    _dbs: (TestDb, TestDb),
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

const TIMING: ShutdownTiming = ShutdownTiming {
    delay: Duration::ZERO,
    grace: Duration::from_secs(5),
};

/// Serves `server` on a free loopback port until the returned sender is used or dropped.
pub async fn serve(
    server: weft_runtime::GrpcServer,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (listener, addr) = weft_runtime::GrpcServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .serve(listener, TIMING, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        let ipam_db = TestDb::new(backend).await;
        let gw_db = TestDb::new(backend).await;
        let ipam_args =
            ipam_svc::Args::try_parse_from(["ipam-svc", "--database-url", &ipam_db.url]).unwrap();
        let ipam = ipam_svc::open(&ipam_svc::Config::try_from(ipam_args).unwrap())
            .await
            .unwrap();
        let (ipam_addr, stop_ipam) =
            serve(weft_runtime::GrpcServer::new().add_service(ipam_svc::grpc::server(ipam))).await;
        let agent = weft_testkit::fake_agent::FakeAgent::default();
        let (agent_addr, stop_agent) = serve(weft_runtime::GrpcServer::new().add_service(
            weft_proto::agent::v1::agent_service_server::AgentServiceServer::new(agent.clone()),
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
            "--event-history",
            "50",
        ])
        .unwrap();
        let gw = gateway::open(&args).await.unwrap();
        gw.ensure_predefined().await.unwrap();
        let (gw_addr, stop_gw) = serve(gateway::services(gw)).await;
        Self {
            gateway: gw_addr,
            ipam: ipam_addr,
            agent,
            _dbs: (ipam_db, gw_db),
            stops: vec![stop_gw, stop_ipam, stop_agent],
        }
    }

    pub fn networks(&self) -> NetworkServiceClient<Channel> {
        NetworkServiceClient::new(weft_testkit::channel(self.gateway))
    }

    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(weft_testkit::channel(self.gateway))
    }

    pub fn ipam(&self) -> weft_proto::ipam::v1::ipam_service_client::IpamServiceClient<Channel> {
        weft_proto::ipam::v1::ipam_service_client::IpamServiceClient::new(weft_testkit::channel(
            self.ipam,
        ))
    }
}

pub fn create(name: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        name: name.into(),
        ..Default::default()
    }
}

pub fn with_subnet(name: &str, subnet: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        ipam: Some(pb::Ipam {
            configs: vec![pb::IpamConfig {
                subnet: subnet.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..create(name)
    }
}

/// Every network's name, sorted.
pub async fn names(c: &mut NetworkServiceClient<Channel>) -> Vec<String> {
    c.list_networks(pb::ListNetworksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .networks
        .into_iter()
        .map(|n| n.name)
        .collect()
}

pub fn sandboxes(
    s: &Stack,
) -> weft_proto::gateway::v1::sandbox_service_client::SandboxServiceClient<Channel> {
    weft_proto::gateway::v1::sandbox_service_client::SandboxServiceClient::new(
        weft_testkit::channel(s.gateway),
    )
}
