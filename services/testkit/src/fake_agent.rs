//! An in-process driver-agent for gateway tests and benchmarks: implements `weft.agent.v1.AgentService`,
//! records what it is asked to do, and fails attaches to networks named `broken`. The real
//! agent is tested against the kernel in its own crate.

use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};
use weft_proto::agent::v1::{self as apb, agent_service_server::AgentService};

#[derive(Debug, Default)]
pub struct Calls {
    pub attached: Vec<apb::AttachRequest>,
    pub detached: Vec<apb::DetachRequest>,
    pub sandboxes: Vec<String>,
    pub removed_sandboxes: Vec<String>,
    /// Endpoints that went with their sandbox's RemoveSandbox (as the real agent's does: it
    /// deletes a namespace it made whole, and removes Weft's interfaces from a given one).
    pub removed_with_sandbox: std::collections::BTreeSet<String>,
    /// Every EnsureNetwork, in order.
    pub ensured: Vec<apb::EnsureNetworkRequest>,
}

impl Calls {
    /// Endpoints attached and not detached since: what the kernel would still hold.
    pub fn attached_now(&self) -> std::collections::BTreeSet<String> {
        let detached: std::collections::BTreeSet<&str> = self
            .detached
            .iter()
            .map(|d| d.endpoint_id.as_str())
            .collect();
        self.attached
            .iter()
            .filter_map(|a| a.endpoint.as_ref())
            .map(|e| e.endpoint_id.clone())
            .filter(|id| !detached.contains(id.as_str()))
            .filter(|id| !self.removed_with_sandbox.contains(id))
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct FakeAgent {
    pub calls: Arc<Mutex<Calls>>,
}

#[tonic::async_trait]
impl AgentService for FakeAgent {
    async fn get_capabilities(
        &self,
        _: Request<apb::GetCapabilitiesRequest>,
    ) -> Result<Response<apb::Capabilities>, Status> {
        Ok(Response::new(apb::Capabilities {
            hostname: "fake".into(),
            drivers: vec!["bridge".into(), "host".into(), "none".into()],
            features: Some(apb::KernelFeatures {
                bridge: true,
                veth: true,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn ensure_network(
        &self,
        req: Request<apb::EnsureNetworkRequest>,
    ) -> Result<Response<apb::EnsureNetworkResponse>, Status> {
        self.calls.lock().unwrap().ensured.push(req.into_inner());
        Ok(Response::new(apb::EnsureNetworkResponse::default()))
    }

    async fn remove_network(
        &self,
        _: Request<apb::RemoveNetworkRequest>,
    ) -> Result<Response<apb::RemoveNetworkResponse>, Status> {
        Ok(Response::new(apb::RemoveNetworkResponse::default()))
    }

    async fn create_sandbox(
        &self,
        req: Request<apb::CreateSandboxRequest>,
    ) -> Result<Response<apb::CreateSandboxResponse>, Status> {
        let req = req.into_inner();
        let s = req.sandbox.unwrap_or_default();
        // As the real agent: all or nothing, the initial endpoints with the sandbox.
        if req
            .attachments
            .iter()
            .any(|a| a.network.as_ref().is_some_and(|n| n.name == "broken"))
        {
            return Err(Status::unavailable("fake agent: the kernel said no"));
        }
        // As the real agent: a given namespace is used as is, else one is "created".
        let managed = s.netns_path.is_empty() && !s.host_network;
        let netns_path = if managed {
            format!("/run/netns/fake-{}", &s.sandbox_id[..12])
        } else {
            s.netns_path.clone()
        };
        let mut calls = self.calls.lock().unwrap();
        calls.sandboxes.push(s.sandbox_id.clone());
        let attached = req
            .attachments
            .into_iter()
            .map(|mut a| {
                if let Some(e) = a.endpoint.as_mut() {
                    e.netns_path.clone_from(&netns_path);
                }
                calls.attached.push(a);
                apb::AttachResponse::default()
            })
            .collect();
        Ok(Response::new(apb::CreateSandboxResponse {
            netns_path,
            netns_managed: managed,
            sandbox_id: s.sandbox_id,
            attached,
            ..Default::default()
        }))
    }

    async fn remove_sandbox(
        &self,
        req: Request<apb::RemoveSandboxRequest>,
    ) -> Result<Response<apb::RemoveSandboxResponse>, Status> {
        let id = req.into_inner().sandbox_id;
        let mut calls = self.calls.lock().unwrap();
        let taken: Vec<String> = calls
            .attached
            .iter()
            .filter_map(|a| a.endpoint.as_ref())
            .filter(|e| e.sandbox_id == id)
            .map(|e| e.endpoint_id.clone())
            .collect();
        calls.removed_with_sandbox.extend(taken);
        calls.removed_sandboxes.push(id);
        Ok(Response::new(apb::RemoveSandboxResponse::default()))
    }

    async fn attach(
        &self,
        req: Request<apb::AttachRequest>,
    ) -> Result<Response<apb::AttachResponse>, Status> {
        let req = req.into_inner();
        if req.network.as_ref().is_some_and(|n| n.name == "broken") {
            return Err(Status::unavailable("fake agent: the kernel said no"));
        }
        self.calls.lock().unwrap().attached.push(req);
        Ok(Response::new(apb::AttachResponse::default()))
    }

    async fn detach(
        &self,
        req: Request<apb::DetachRequest>,
    ) -> Result<Response<apb::DetachResponse>, Status> {
        let req = req.into_inner();
        let files_written = req.files.is_some();
        self.calls.lock().unwrap().detached.push(req);
        Ok(Response::new(apb::DetachResponse {
            files_written,
            ..Default::default()
        }))
    }

    async fn apply_state(
        &self,
        _: Request<apb::ApplyStateRequest>,
    ) -> Result<Response<apb::ApplyStateResponse>, Status> {
        Err(Status::unimplemented("fake agent: ApplyState"))
    }
}

impl FakeAgent {
    /// A fresh fake agent served in this process on a free loopback port, its address, and the
    /// sender that stops it.
    pub async fn serve() -> (Self, std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let agent = Self::default();
        let (addr, stop) = crate::serve(weft_runtime::GrpcServer::new().add_service(
            weft_proto::agent::v1::agent_service_server::AgentServiceServer::new(agent.clone()),
        ))
        .await;
        (agent, addr, stop)
    }
}
