//! The public gRPC services over [`Gateway`]: the edge. Each request is converted once into
//! the domain's terms (`from_pb`) and validated there; a retried request id gets the first
//! answer; each answer is converted once (`to_pb`). Nothing below this module sees a
//! `weft.gateway.v1` request.

use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weft_proto::gateway::v1::{
    self as pb, agent_registry_service_server::AgentRegistryService,
    event_service_server::EventService, network_service_server::NetworkService,
    sandbox_service_server::SandboxService,
};
use weft_runtime::{
    FieldViolation,
    access::{Principal, Role, principal},
};

use crate::{
    access::{self, AuditLog},
    caller::{Caller, as_caller},
    domain::{
        endpoint::{ConnectSpec, EndpointRecord},
        host::HostSpec,
        list::Page,
        network::{NetworkRecord, NetworkSpec, NetworkUpdate},
        sandbox::{SandboxRecord, SandboxSpec},
    },
    engine::{Gateway, Remember, RequestKey},
    error::GatewayError,
    from_pb,
    sagas::sandbox::SandboxView,
    store::{audit::AuditRow, sandboxes::Owner},
    to_pb::{duration, endpoint_view, host_to_pb, network_endpoints, network_to_pb, sandbox_to_pb},
};

#[derive(Debug, Clone)]
pub struct GatewayGrpc {
    pub(crate) gw: Gateway,
}

/// One mutation being served: who asked, what for, and where its audit record goes.
pub(crate) struct Audit {
    log: AuditLog,
    who: Option<Principal>,
    rpc: &'static str,
    object: String,
    request_id: String,
}

impl Audit {
    /// Runs the mutation as its caller (so its events carry the caller) and records how it
    /// ended.
    pub(crate) async fn run<T>(
        self,
        f: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let caller = Caller {
            identity: self.who.as_ref().map(Principal::label).unwrap_or_default(),
            request_id: self.request_id.clone(),
        };
        let result = as_caller(caller, f).await;
        let (outcome, message) = access::outcome(&result);
        let (identity, role) = access::audit_caller(self.who.as_ref());
        self.log
            .record(AuditRow {
                identity,
                role,
                rpc: format!("weft.gateway.v1.{}", self.rpc),
                object: self.object,
                request_id: self.request_id,
                outcome,
                message,
                ..AuditRow::default()
            })
            .await;
        result
    }
}

/// An agent (or dns-svc) acts for its own host only.
fn own_host<M>(req: &Request<M>, host: &str) -> Result<(), Status> {
    match principal(req) {
        Some(p) if matches!(p.role, Role::Agent | Role::Dns) && p.name != host => {
            Err(Status::permission_denied(format!(
                "{} may act for host {:?} only, not {host:?}",
                p.label(),
                p.name
            )))
        }
        _ => Ok(()),
    }
}

impl GatewayGrpc {
    pub fn new(gw: Gateway) -> Self {
        Self { gw }
    }

    /// The audit of a mutation: its caller, and its object and request id read by `what`.
    pub(crate) fn audit<M>(
        &self,
        req: &Request<M>,
        rpc: &'static str,
        what: impl FnOnce(&M) -> (String, String),
    ) -> Audit {
        let (object, request_id) = what(req.get_ref());
        Audit {
            log: self.gw.audit.clone(),
            who: principal(req).cloned(),
            rpc,
            object: if object.is_empty() {
                "-".into()
            } else {
                object
            },
            request_id,
        }
    }

    /// The answer given the first time to this request id, if any.
    async fn replayed<T: Message + Default>(&self, key: &RequestKey) -> Result<Option<T>, Status> {
        Ok(self
            .gw
            .replay(key)
            .await?
            .and_then(|b| T::decode(b.as_slice()).ok()))
    }
}

/// The request id of `req` with what identifies the request: its encoding without the id.
fn request_key<M: Message + Clone>(
    method: &'static str,
    req: &M,
    id: &str,
    clear_id: fn(&mut M),
) -> RequestKey {
    let mut bare = req.clone();
    clear_id(&mut bare);
    RequestKey {
        id: id.to_owned(),
        method,
        fingerprint: bare.encode_to_vec(),
    }
}

pub(crate) fn invalid(violations: Vec<FieldViolation>) -> Status {
    GatewayError::Invalid(violations).into()
}

#[tonic::async_trait]
impl NetworkService for GatewayGrpc {
    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let audit = self.audit(&req, "NetworkService/CreateNetwork", |r| {
            (r.name.clone(), r.request_id.clone())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let key = request_key("CreateNetwork", &req, &req.request_id, |r| {
                    r.request_id.clear()
                });
                if let Some(done) = self.replayed(&key).await? {
                    return Ok(Response::new(done));
                }
                let validate_only = req.validate_only;
                let spec = NetworkSpec::validate(from_pb::network(req)).map_err(invalid)?;
                let answer = |n: &NetworkRecord| network_to_pb(n).encode_to_vec();
                let remember = Remember {
                    key: &key,
                    answer: &answer,
                };
                let rec = self
                    .gw
                    .create_network(spec, validate_only, Some(remember))
                    .await?;
                Ok(Response::new(network_to_pb(&rec)))
            })
            .await
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
        let req = req.into_inner();
        let page = Page::parse("networks", req.page_size, &req.page_token).map_err(invalid)?;
        let filter = from_pb::network_filter(req).validate().map_err(invalid)?;
        let (nets, next_page_token, revision) = self.gw.list_networks_page(&filter, &page).await?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: nets.iter().map(network_to_pb).collect(),
            revision,
            next_page_token,
        }))
    }

    async fn update_network(
        &self,
        req: Request<pb::UpdateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let audit = self.audit(&req, "NetworkService/UpdateNetwork", |r| {
            (r.network.clone(), String::new())
        });
        audit
            .run(async move {
                let update = NetworkUpdate::validate(from_pb::network_update(req.into_inner()))
                    .map_err(invalid)?;
                let rec = self.gw.update_network(update).await?;
                Ok(Response::new(network_to_pb(&rec)))
            })
            .await
    }

    async fn delete_network(
        &self,
        req: Request<pb::DeleteNetworkRequest>,
    ) -> Result<Response<pb::DeleteNetworkResponse>, Status> {
        let audit = self.audit(&req, "NetworkService/DeleteNetwork", |r| {
            (r.network.clone(), r.request_id.clone())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let key = request_key("DeleteNetwork", &req, &req.request_id, |r| {
                    r.request_id.clear()
                });
                if let Some(done) = self.replayed(&key).await? {
                    return Ok(Response::new(done));
                }
                let response = |n: &NetworkRecord| pb::DeleteNetworkResponse {
                    id: n.id.clone(),
                    name: n.name.clone(),
                };
                let answer = |n: &NetworkRecord| response(n).encode_to_vec();
                let remember = Remember {
                    key: &key,
                    answer: &answer,
                };
                let rec = self.gw.delete_network(&req.network, Some(remember)).await?;
                Ok(Response::new(response(&rec)))
            })
            .await
    }

    async fn prune_networks(
        &self,
        req: Request<pb::PruneNetworksRequest>,
    ) -> Result<Response<pb::PruneNetworksResponse>, Status> {
        let audit = self.audit(&req, "NetworkService/PruneNetworks", |_| {
            ("-".to_owned(), String::new())
        });
        audit
            .run(async move {
                let deleted = self.gw.prune(from_pb::prune(req.into_inner())).await?;
                Ok(Response::new(pb::PruneNetworksResponse {
                    networks_deleted: deleted,
                }))
            })
            .await
    }
}

#[tonic::async_trait]
impl EventService for GatewayGrpc {
    type WatchStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // A dns-svc sees what its own host needs, nothing more.
        if principal(&req).is_some_and(|p| p.role == Role::Dns) {
            own_host(&req, &req.get_ref().scope_host)?;
        }
        let peer = req.remote_addr().map(|a| a.ip());
        let client = principal(&req).map(|p| p.label()).unwrap_or_default();
        let rx = self.gw.watch_as(req.into_inner(), peer, &client).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl SandboxService for GatewayGrpc {
    async fn create_sandbox(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let audit = self.audit(&req, "SandboxService/CreateSandbox", |r| {
            (r.name.clone(), r.request_id.clone())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let key = request_key("CreateSandbox", &req, &req.request_id, |r| {
                    r.request_id.clear()
                });
                if let Some(done) = self.replayed(&key).await? {
                    return Ok(Response::new(done));
                }
                let validate_only = req.validate_only;
                let spec = SandboxSpec::validate(from_pb::sandbox(req)).map_err(invalid)?;
                let encode =
                    |v: &SandboxView| sandbox_to_pb(&v.sandbox, &v.endpoints).encode_to_vec();
                let remember = (!validate_only).then_some(Remember {
                    key: &key,
                    answer: &encode,
                });
                let view = self
                    .gw
                    .create_sandbox(spec, validate_only, remember)
                    .await?;
                Ok(Response::new(sandbox_to_pb(&view.sandbox, &view.endpoints)))
            })
            .await
    }

    async fn get_sandbox(
        &self,
        req: Request<pb::GetSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let s = self
            .gw
            .find_sandbox("sandbox", &req.into_inner().sandbox)
            .await?;
        let endpoints = self.gw.sandbox_endpoints(&s).await?;
        Ok(Response::new(sandbox_to_pb(&s, &endpoints)))
    }

    async fn list_sandboxes(
        &self,
        req: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let req = req.into_inner();
        let page = Page::parse("sandboxes", req.page_size, &req.page_token).map_err(invalid)?;
        let filter = from_pb::sandbox_filter(req).validate().map_err(invalid)?;
        let (views, next_page_token, revision) = self.gw.list_sandbox_views(&filter, &page).await?;
        Ok(Response::new(pb::ListSandboxesResponse {
            sandboxes: views
                .iter()
                .map(|v| sandbox_to_pb(&v.sandbox, &v.endpoints))
                .collect(),
            revision,
            next_page_token,
        }))
    }

    async fn delete_sandbox(
        &self,
        req: Request<pb::DeleteSandboxRequest>,
    ) -> Result<Response<pb::DeleteSandboxResponse>, Status> {
        let audit = self.audit(&req, "SandboxService/DeleteSandbox", |r| {
            (r.sandbox.clone(), r.request_id.clone())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let key = request_key("DeleteSandbox", &req, &req.request_id, |r| {
                    r.request_id.clear()
                });
                if let Some(done) = self.replayed::<pb::DeleteSandboxResponse>(&key).await? {
                    // The first call may have died between its commit and the release of
                    // the addresses beside it: they go now (releasing what is gone already
                    // changes nothing).
                    self.gw.release_owners(&done.endpoint_ids).await;
                    return Ok(Response::new(done));
                }
                let answer = |(sandbox, endpoints): &(SandboxRecord, Vec<EndpointRecord>)| {
                    pb::DeleteSandboxResponse {
                        id: sandbox.id.clone(),
                        name: sandbox.name.clone(),
                        endpoint_ids: endpoints.iter().map(|e| e.id.clone()).collect(),
                    }
                };
                let encode =
                    |done: &(SandboxRecord, Vec<EndpointRecord>)| answer(done).encode_to_vec();
                let remember = Remember {
                    key: &key,
                    answer: &encode,
                };
                let done = self.gw.delete_sandbox(&req.sandbox, Some(remember)).await?;
                Ok(Response::new(answer(&done)))
            })
            .await
    }

    async fn connect(
        &self,
        req: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let audit = self.audit(&req, "SandboxService/Connect", |r| {
            (format!("{}/{}", r.sandbox, r.network), r.request_id.clone())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let key = request_key("Connect", &req, &req.request_id, |r| r.request_id.clear());
                if let Some(done) = self.replayed(&key).await? {
                    return Ok(Response::new(done));
                }
                let validate_only = req.validate_only;
                let spec = ConnectSpec::validate(
                    req.sandbox,
                    req.network,
                    from_pb::settings(req.settings),
                )
                .map_err(invalid)?;
                let encode = |(ep, all): &(EndpointRecord, Vec<EndpointRecord>)| {
                    endpoint_view(ep, all).encode_to_vec()
                };
                let remember = (!validate_only).then_some(Remember {
                    key: &key,
                    answer: &encode,
                });
                let (ep, all) = self.gw.connect(spec, validate_only, remember).await?;
                Ok(Response::new(endpoint_view(&ep, &all)))
            })
            .await
    }

    async fn disconnect(
        &self,
        req: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        let audit = self.audit(&req, "SandboxService/Disconnect", |r| {
            (format!("{}/{}", r.sandbox, r.network), r.request_id.clone())
        });
        audit
            .run(async move {
                let req = req.into_inner();
                let key = request_key("Disconnect", &req, &req.request_id, |r| {
                    r.request_id.clear()
                });
                if let Some(done) = self.replayed::<pb::DisconnectResponse>(&key).await? {
                    // (As DeleteSandbox's: the release beside the commit may not have ended.)
                    self.gw
                        .release_owners(std::slice::from_ref(&done.endpoint_id))
                        .await;
                    return Ok(Response::new(done));
                }
                let encode = |ep: &EndpointRecord| {
                    pb::DisconnectResponse {
                        endpoint_id: ep.id.clone(),
                    }
                    .encode_to_vec()
                };
                let remember = Remember {
                    key: &key,
                    answer: &encode,
                };
                let ep = self
                    .gw
                    .disconnect(&req.sandbox, &req.network, req.force, Some(remember))
                    .await?;
                Ok(Response::new(pb::DisconnectResponse { endpoint_id: ep.id }))
            })
            .await
    }
}

#[tonic::async_trait]
impl AgentRegistryService for GatewayGrpc {
    async fn register_host(
        &self,
        req: Request<pb::RegisterHostRequest>,
    ) -> Result<Response<pb::RegisterHostResponse>, Status> {
        own_host(&req, &req.get_ref().name)?;
        let audit = self.audit(&req, "AgentRegistryService/RegisterHost", |r| {
            (r.name.clone(), String::new())
        });
        audit
            .run(async move {
                let spec = HostSpec::validate(from_pb::host(req.into_inner())).map_err(invalid)?;
                let (host, revision) = self.gw.register_host(spec).await?;
                Ok(Response::new(pb::RegisterHostResponse {
                    host: Some(host_to_pb(&host)),
                    heartbeat_interval: Some(duration(self.gw.heartbeat_interval())),
                    desired_revision: revision,
                }))
            })
            .await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        own_host(&req, &req.get_ref().host)?;
        let req = req.into_inner();
        let revision = self.gw.heartbeat(&req.host, req.unrepaired_drift).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            desired_revision: revision,
            heartbeat_interval: Some(duration(self.gw.heartbeat_interval())),
        }))
    }

    async fn get_desired_state(
        &self,
        req: Request<pb::GetDesiredStateRequest>,
    ) -> Result<Response<pb::GetDesiredStateResponse>, Status> {
        own_host(&req, &req.get_ref().host)?;
        let req = req.into_inner();
        let answer = self
            .gw
            .desired_changes(&req.host, req.since_revision)
            .await?;
        Ok(Response::new(pb::GetDesiredStateResponse {
            state: Some(answer.state),
            changes_only: answer.changes_only,
            removed_sandboxes: answer.removed,
        }))
    }
}
