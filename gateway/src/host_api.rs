//! The hosts side of the API: `HostService` (list hosts; for admins, join tokens and host
//! removal) and `JoinService` (a new host's certificates, for the holder of a join token).

use tonic::{Request, Response, Status};
use weft_proto::gateway::v1::{
    self as pb, host_service_server::HostService, join_service_server::JoinService,
};
use weft_runtime::{
    FieldViolation,
    access::{self, Principal, principal},
};

use crate::{
    domain::list::Page,
    from_pb,
    grpc::{GatewayGrpc, invalid},
    to_pb::host_to_pb,
};

#[tonic::async_trait]
impl HostService for GatewayGrpc {
    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let req = req.into_inner();
        let page = Page::parse("hosts", req.page_size, &req.page_token).map_err(invalid)?;
        let filter = from_pb::host_filter(req).map_err(|state| {
            invalid(vec![FieldViolation::new(
                "state",
                state.to_string(),
                "unknown host state (UP, DOWN or unspecified)",
            )])
        })?;
        let (hosts, next_page_token, revision) = self.gw.list_hosts(&filter, &page).await?;
        Ok(Response::new(pb::ListHostsResponse {
            hosts: hosts.iter().map(host_to_pb).collect(),
            revision,
            next_page_token,
        }))
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let by = principal(&req).map_or_else(|| "-".to_owned(), Principal::label);
        let audit = self.audit(&req, "HostService/CreateJoinToken", |r| {
            (r.host_name.clone(), String::new())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let (row, token) = self
                    .gw
                    .create_join_token(req.ttl_seconds, &req.host_name, &by)
                    .await?;
                Ok(Response::new(pb::CreateJoinTokenResponse {
                    token,
                    expires: crate::to_pb::timestamp(row.expires_at_ms),
                    host_name: row.host_name,
                }))
            })
            .await
    }

    async fn remove_host(
        &self,
        req: Request<pb::RemoveHostRequest>,
    ) -> Result<Response<pb::RemoveHostResponse>, Status> {
        let audit = self.audit(&req, "HostService/RemoveHost", |r| {
            (r.name.clone(), String::new())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let (host, sandboxes) = self.gw.remove_host(&req.name, req.force).await?;
                Ok(Response::new(pb::RemoveHostResponse {
                    host: Some(host_to_pb(&host)),
                    sandboxes,
                }))
            })
            .await
    }
}

#[tonic::async_trait]
impl JoinService for GatewayGrpc {
    async fn join_host(
        &self,
        req: Request<pb::JoinHostRequest>,
    ) -> Result<Response<pb::JoinHostResponse>, Status> {
        // The access layer took the join token; the handler spends it, by its hash.
        let headers = req.metadata().clone().into_headers();
        let hash = match access::bearer(&headers) {
            Ok(Some(token)) if access::looks_like_join_token(token) => access::token_hash(token),
            _ => return Err(Status::unauthenticated("this call needs a join token")),
        };
        let audit = self.audit(&req, "JoinService/JoinHost", |r| {
            (r.host_name.clone(), String::new())
        });
        audit
            .run(async move {
                let answer = self.gw.join_host(&hash, req.get_ref()).await?;
                Ok(Response::new(answer))
            })
            .await
    }
}
