//! A gateway and an ipam-svc, both served in this process on loopback, each on its own store.

use std::net::SocketAddr;

use clap::Parser as _;
use tonic::transport::Channel;
use weft_proto::gateway::v1::{
    self as pb, event_service_client::EventServiceClient,
    network_service_client::NetworkServiceClient,
};
use weft_testkit::{Backend, TestDb};

pub struct Stack {
    pub gateway: SocketAddr,
    pub ipam: SocketAddr,
    pub agent: weft_testkit::fake_agent::FakeAgent,
    gw: gateway::Gateway,
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

pub use weft_testkit::serve;

/// A fake agent served on loopback, and the sender that stops it.
pub async fn fake_agent() -> (
    weft_testkit::fake_agent::FakeAgent,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let agent = weft_testkit::fake_agent::FakeAgent::default();
    let (addr, stop) = serve(weft_runtime::GrpcServer::new().add_service(
        weft_proto::agent::v1::agent_service_server::AgentServiceServer::new(agent.clone()),
    ))
    .await;
    (agent, addr, stop)
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// A stack whose gateway gets `extra` flags too.
    pub async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        let ipam_db = TestDb::new(backend).await;
        let gw_db = TestDb::new(backend).await;
        let ipam_args =
            ipam_svc::Args::try_parse_from(["ipam-svc", "--database-url", &ipam_db.url]).unwrap();
        let ipam = ipam_svc::open(&ipam_svc::Config::try_from(ipam_args).unwrap())
            .await
            .unwrap();
        let (ipam_addr, stop_ipam) =
            serve(weft_runtime::GrpcServer::new().add_service(ipam_svc::grpc::server(ipam))).await;
        let (agent, agent_addr, stop_agent) = fake_agent().await;
        let ipam_url = format!("http://{ipam_addr}");
        let agent_url = format!("http://{agent_addr}");
        let mut argv = vec![
            "gateway",
            "--database-url",
            &gw_db.url,
            "--ipam",
            &ipam_url,
            "--agent",
            &agent_url,
            "--event-history",
            "50",
        ];
        argv.extend_from_slice(extra);
        let args = gateway::Args::try_parse_from(argv).unwrap();
        let gw = gateway::open(&args).await.unwrap();
        gw.ensure_predefined().await.unwrap();
        let (gw_addr, stop_gw) = serve(gateway::services(gw.clone())).await;
        Self {
            gateway: gw_addr,
            ipam: ipam_addr,
            agent,
            gw,
            _dbs: (ipam_db, gw_db),
            stops: vec![stop_gw, stop_ipam, stop_agent],
        }
    }

    /// The gateway itself, for what no RPC triggers (the heartbeat check).
    pub fn gateway_handle(&self) -> &gateway::Gateway {
        &self.gw
    }

    /// The newest event revision.
    pub async fn events_revision(&self) -> u64 {
        self.networks()
            .list_networks(pb::ListNetworksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .revision
    }

    pub fn networks(&self) -> NetworkServiceClient<Channel> {
        NetworkServiceClient::new(weft_testkit::channel(self.gateway))
    }

    pub fn hosts(
        &self,
    ) -> weft_proto::gateway::v1::host_service_client::HostServiceClient<Channel> {
        weft_proto::gateway::v1::host_service_client::HostServiceClient::new(weft_testkit::channel(
            self.gateway,
        ))
    }

    pub fn registry(
        &self,
    ) -> weft_proto::gateway::v1::agent_registry_service_client::AgentRegistryServiceClient<Channel>
    {
        weft_proto::gateway::v1::agent_registry_service_client::AgentRegistryServiceClient::new(
            weft_testkit::channel(self.gateway),
        )
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
