//! The public gRPC services over [`Gateway`].

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weft_proto::gateway::v1::{
    self as pb, event_service_server::EventService, network_service_server::NetworkService,
    sandbox_service_server::SandboxService,
};

use crate::{
    engine::Gateway,
    store::sandboxes::Owner,
    to_pb::{network_endpoints, network_to_pb, sandbox_to_pb},
};

#[derive(Debug, Clone)]
pub struct GatewayGrpc {
    gw: Gateway,
}

impl GatewayGrpc {
    pub fn new(gw: Gateway) -> Self {
        Self { gw }
    }
}

#[tonic::async_trait]
impl NetworkService for GatewayGrpc {
    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        Ok(Response::new(
            self.gw.create_network(req.into_inner()).await?,
        ))
    }

    async fn get_network(
        &self,
        req: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let rec = self.gw.find("network", &req.into_inner().network).await?;
        let endpoints = self.gw.endpoints(Owner::Network, &rec.id).await?;
        Ok(Response::new(pb::Network {
            endpoints: network_endpoints(&endpoints),
            ..network_to_pb(&rec)
        }))
    }

    async fn list_networks(
        &self,
        req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let (nets, revision) = self.gw.list_networks(&req.into_inner()).await?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: nets.iter().map(network_to_pb).collect(),
            revision,
        }))
    }

    async fn update_network(
        &self,
        req: Request<pb::UpdateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        Ok(Response::new(
            self.gw.update_network(req.into_inner()).await?,
        ))
    }

    async fn delete_network(
        &self,
        req: Request<pb::DeleteNetworkRequest>,
    ) -> Result<Response<pb::DeleteNetworkResponse>, Status> {
        Ok(Response::new(
            self.gw.delete_network(req.into_inner()).await?,
        ))
    }

    async fn prune_networks(
        &self,
        req: Request<pb::PruneNetworksRequest>,
    ) -> Result<Response<pb::PruneNetworksResponse>, Status> {
        Ok(Response::new(self.gw.prune(req.into_inner()).await?))
    }
}

#[tonic::async_trait]
impl EventService for GatewayGrpc {
    type WatchStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rx = self.gw.watch(req.into_inner()).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl GatewayGrpc {
    async fn sandbox_view(
        &self,
        s: &crate::domain::sandbox::SandboxRecord,
    ) -> Result<pb::Sandbox, Status> {
        let endpoints = self.gw.sandbox_endpoints(s).await?;
        Ok(sandbox_to_pb(s, &endpoints))
    }
}

#[tonic::async_trait]
impl SandboxService for GatewayGrpc {
    async fn create_sandbox(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        Ok(Response::new(
            self.gw.create_sandbox(req.into_inner()).await?,
        ))
    }

    async fn get_sandbox(
        &self,
        req: Request<pb::GetSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let s = self
            .gw
            .find_sandbox("sandbox", &req.into_inner().sandbox)
            .await?;
        Ok(Response::new(self.sandbox_view(&s).await?))
    }

    async fn list_sandboxes(
        &self,
        req: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let f = req.into_inner();
        for (i, l) in f.label.iter().enumerate() {
            if l.is_empty() || l.starts_with('=') {
                return Err(crate::error::GatewayError::invalid(
                    format!("label[{i}]"),
                    l,
                    "expected key or key=value",
                )
                .into());
            }
        }
        let revision = self.gw.revision().await?;
        let mut out = Vec::new();
        for s in self.gw.list_sandboxes().await? {
            let view = self.sandbox_view(&s).await?;
            let any = |values: &[String], pred: &dyn Fn(&str) -> bool| {
                values.is_empty() || values.iter().any(|v| pred(v))
            };
            let keep = any(&f.name, &|v| s.name.contains(v))
                && any(&f.host, &|v| s.host == v)
                && any(&f.container_id, &|v| s.container_id.starts_with(v))
                && f.label.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => s.labels.get(k).is_some_and(|lv| lv == v),
                    None => s.labels.contains_key(l),
                })
                && any(&f.network, &|v| {
                    view.endpoints
                        .iter()
                        .any(|e| e.network_name == v || e.network_id.starts_with(v))
                });
            if keep {
                out.push(view);
            }
        }
        Ok(Response::new(pb::ListSandboxesResponse {
            sandboxes: out,
            revision,
        }))
    }

    async fn delete_sandbox(
        &self,
        req: Request<pb::DeleteSandboxRequest>,
    ) -> Result<Response<pb::DeleteSandboxResponse>, Status> {
        Ok(Response::new(
            self.gw.delete_sandbox(req.into_inner()).await?,
        ))
    }

    async fn connect(
        &self,
        req: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        Ok(Response::new(self.gw.connect(req.into_inner()).await?))
    }

    async fn disconnect(
        &self,
        req: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        Ok(Response::new(self.gw.disconnect(req.into_inner()).await?))
    }
}

#[tonic::async_trait]
impl weft_proto::gateway::v1::host_service_server::HostService for GatewayGrpc {
    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        Ok(Response::new(self.gw.list_hosts(&req.into_inner()).await?))
    }
}

#[tonic::async_trait]
impl weft_proto::gateway::v1::agent_registry_service_server::AgentRegistryService for GatewayGrpc {
    async fn register_host(
        &self,
        req: Request<pb::RegisterHostRequest>,
    ) -> Result<Response<pb::RegisterHostResponse>, Status> {
        Ok(Response::new(
            self.gw.register_host(req.into_inner()).await?,
        ))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Ok(Response::new(self.gw.heartbeat(req.into_inner()).await?))
    }

    async fn get_desired_state(
        &self,
        req: Request<pb::GetDesiredStateRequest>,
    ) -> Result<Response<pb::GetDesiredStateResponse>, Status> {
        let state = self.gw.desired_state(&req.into_inner().host).await?;
        Ok(Response::new(pb::GetDesiredStateResponse {
            state: Some(state),
        }))
    }
}
