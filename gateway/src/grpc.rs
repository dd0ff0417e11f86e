//! The public gRPC services over [`Gateway`].

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weft_proto::gateway::v1::{
    self as pb, event_service_server::EventService, network_service_server::NetworkService,
};

use crate::{networks::Gateway, to_pb::network_to_pb};

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
        Ok(Response::new(network_to_pb(&rec)))
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
