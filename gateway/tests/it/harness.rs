//! A gateway and an ipam-svc, both served in this process on loopback, each on its own store
//! (the test kit's stack).

use std::net::SocketAddr;

use weft_proto::gateway::v1::{self as pb, network_service_client::NetworkServiceClient};
use weft_runtime::access::Authed as Channel;
use weft_testkit::{Backend, stack::StackOptions};

/// The test kit's stack with this suite's defaults (an event history of 50).
pub struct Stack(weft_testkit::stack::Stack);

impl std::ops::Deref for Stack {
    type Target = weft_testkit::stack::Stack;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A fake agent served on loopback, and the sender that stops it.
pub async fn fake_agent() -> (
    weft_testkit::fake_agent::FakeAgent,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    weft_testkit::fake_agent::FakeAgent::serve().await
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// A stack whose gateway gets `extra` flags too.
    pub async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        Self(
            StackOptions::new(backend)
                .gateway_flags(&["--event-history", "50"])
                .gateway_flags(extra)
                .start()
                .await,
        )
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
    names_where(c, pb::ListNetworksRequest::default()).await
}

/// The names of the networks `req` lists, in its order.
pub async fn names_where(
    c: &mut NetworkServiceClient<Channel>,
    req: pb::ListNetworksRequest,
) -> Vec<String> {
    c.list_networks(req)
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
    s.sandboxes()
}
