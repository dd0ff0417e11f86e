//! The gateway's public API as the plugin uses it: one lazily made connection with the
//! configured credentials (authenticated as the CNI plugin is: a bearer token read from a file),
//! and the look-ups by Docker's ids, which live in Weft as labels.

use tonic::Code;
use weft_proto::gateway::v1::{
    self as pb, network_service_client::NetworkServiceClient,
    sandbox_service_client::SandboxServiceClient,
};
use weft_runtime::access::{Authed, Bearer};
use weftctl::{
    client,
    error::CliError,
    pages::{PagesError, all_pages},
};

use crate::error::PluginError;

/// Marks what the plugin created in Weft.
pub const CREATED_BY: (&str, &str) = ("created-by", "weft-docker");
/// On a Weft network: Docker's network id, and its name once known.
pub const NETWORK_ID_LABEL: &str = "com.docker.network.id";
pub const NETWORK_NAME_LABEL: &str = "com.docker.network.name";
/// On a Weft sandbox: the last path component of Docker's SandboxKey (its sandbox id prefix).
pub const SANDBOX_KEY_LABEL: &str = "com.docker.sandbox.key";
/// On a Weft sandbox: Docker's SandboxKey itself (where dockerd keeps the namespace), for the
/// sweep of sandboxes Docker forgot.
pub const SANDBOX_PATH_LABEL: &str = "com.docker.sandbox.path";
/// On a Weft sandbox: Docker's container id, when the plugin could learn it.
pub const CONTAINER_LABEL: &str = "com.docker.container.id";

#[derive(Debug, Clone)]
pub struct Clients {
    pub networks: NetworkServiceClient<Authed>,
    pub sandboxes: SandboxServiceClient<Authed>,
}

/// Connects with `bearer`.
pub async fn connect(url: &str, bearer: &Bearer) -> Result<Clients, PluginError> {
    let target = client::Target {
        what: "the Weft gateway",
        hint: "is Weft running there? (--gateway)",
    };
    let channel = client::connect_authed(url, target, bearer)
        .await
        .map_err(|e| match e {
            CliError::Unavailable(m) => PluginError::Unavailable(m),
            other => PluginError::Unavailable(other.to_string()),
        })?;
    Ok(Clients {
        networks: NetworkServiceClient::new(channel.clone()),
        sandboxes: SandboxServiceClient::new(channel),
    })
}

impl Clients {
    /// Every network carrying the plugin's mark and, when given, Docker's network id.
    pub async fn networks(
        &mut self,
        docker_id: Option<&str>,
    ) -> Result<Vec<pb::Network>, PluginError> {
        let mut label = vec![format!("{}={}", CREATED_BY.0, CREATED_BY.1)];
        if let Some(id) = docker_id {
            label.push(format!("{NETWORK_ID_LABEL}={id}"));
        }
        let req = pb::ListNetworksRequest {
            label,
            page_size: 1000,
            ..Default::default()
        };
        let c = self.networks.clone();
        all_pages(req, |req| {
            let mut c = c.clone();
            async move { Ok(c.list_networks(req).await?.into_inner()) }
        })
        .await
        .map_err(|e| listing("networks", e))
    }

    /// The Weft network of Docker network `docker_id`, with its endpoints.
    pub async fn network(&mut self, docker_id: &str) -> Result<Option<pb::Network>, PluginError> {
        let Some(summary) = self.networks(Some(docker_id)).await?.into_iter().next() else {
            return Ok(None);
        };
        self.network_by_id(&summary.id).await
    }

    pub async fn network_by_id(&mut self, id: &str) -> Result<Option<pb::Network>, PluginError> {
        match self
            .networks
            .get_network(pb::GetNetworkRequest {
                network: id.to_owned(),
            })
            .await
        {
            Ok(n) => Ok(Some(n.into_inner())),
            Err(st) if st.code() == Code::NotFound => Ok(None),
            Err(st) => Err(PluginError::gateway(format!("read network {id}"), &st)),
        }
    }

    /// The plugin's sandboxes matching `label` (and `network` when given), all pages.
    pub async fn sandboxes(
        &mut self,
        label: Option<String>,
        network: Option<&str>,
    ) -> Result<Vec<pb::Sandbox>, PluginError> {
        let mut labels = vec![format!("{}={}", CREATED_BY.0, CREATED_BY.1)];
        labels.extend(label);
        let req = pb::ListSandboxesRequest {
            label: labels,
            network: network.map(|n| vec![n.to_owned()]).unwrap_or_default(),
            page_size: 1000,
            ..Default::default()
        };
        let c = self.sandboxes.clone();
        all_pages(req, |req| {
            let mut c = c.clone();
            async move { Ok(c.list_sandboxes(req).await?.into_inner()) }
        })
        .await
        .map_err(|e| listing("sandboxes", e))
    }

    /// The sandbox and endpoint whose container end was handed to Docker as `handoff`.
    pub async fn endpoint_by_handoff(
        &mut self,
        network: &str,
        handoff: &str,
    ) -> Result<Option<(pb::Sandbox, pb::Endpoint)>, PluginError> {
        for sb in self.sandboxes(None, Some(network)).await? {
            let found = sb.endpoints.iter().find(|e| {
                e.driver_options
                    .get(weft_proto::HANDOFF_OPTION)
                    .map(String::as_str)
                    == Some(handoff)
            });
            if let Some(ep) = found.cloned() {
                return Ok(Some((sb, ep)));
            }
        }
        Ok(None)
    }

    /// Deletes Weft sandbox `id`; already gone counts as done.
    pub async fn delete_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let res = self
            .sandboxes
            .delete_sandbox(pb::DeleteSandboxRequest {
                sandbox: id.to_owned(),
                ..Default::default()
            })
            .await;
        gone_is_fine(res)
    }

    /// Deletes Weft network `id`; already gone counts as done.
    pub async fn delete_network(&mut self, id: &str) -> Result<(), tonic::Status> {
        let res = self
            .networks
            .delete_network(pb::DeleteNetworkRequest {
                network: id.to_owned(),
                ..Default::default()
            })
            .await;
        gone_is_fine(res)
    }
}

/// Gone already counts as done.
pub fn gone_is_fine<T>(r: Result<T, tonic::Status>) -> Result<(), tonic::Status> {
    match r {
        Ok(_) => Ok(()),
        Err(st) if st.code() == Code::NotFound => Ok(()),
        Err(st) => Err(st),
    }
}

/// A list that could not be read whole, as the plugin reports it.
fn listing(what: &str, e: PagesError) -> PluginError {
    match e {
        PagesError::Call(st) => PluginError::gateway(format!("list {what}"), &st),
        e @ PagesError::TooMany(_) => PluginError::Unsupported(format!("{what}: {e}")),
    }
}
