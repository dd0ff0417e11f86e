//! The gateway's public API as the plugin uses it: one connection with the config's
//! credentials, this host, the sandbox of a container, its endpoints.

use tonic::{Code, Status};
use weft_proto::gateway::v1::{
    self as pb, host_service_client::HostServiceClient,
    network_service_client::NetworkServiceClient, sandbox_service_client::SandboxServiceClient,
};
use weft_runtime::access::{Authed, Bearer, TokenFileError};
use weftctl::{client, error::CliError, pages::PagesError};

use crate::{
    config::NetConf,
    error::{CniError, code},
};

/// The label that marks sandboxes the plugin created (GC and DEL touch only those).
pub const CREATED_BY: (&str, &str) = ("created-by", "weft-cni");
/// Kubernetes' pod and namespace, from `CNI_ARGS`.
pub const POD_LABEL: &str = "k8s.pod";
pub const NAMESPACE_LABEL: &str = "k8s.namespace";

/// A connection to the gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub sandboxes: SandboxServiceClient<Authed>,
    pub networks: NetworkServiceClient<Authed>,
    pub hosts: HostServiceClient<Authed>,
}

/// Connects with the config's credentials; an unreachable gateway is `unreachable_code`
/// (11 for the verbs that change things, 50 for STATUS).
pub async fn connect(conf: &NetConf, unreachable_code: u32) -> Result<Gateway, CniError> {
    let bearer = match &conf.token_file {
        None => Bearer::none(),
        Some(path) => Bearer::from_file(path).map_err(|e| {
            let c = match e {
                TokenFileError::Read { .. } => code::IO,
                _ => code::INVALID_CONFIG,
            };
            CniError::new(c, format!("config key tokenFile: {e}"))
        })?,
    };
    let target = client::Target {
        what: "the Weft gateway",
        hint: "is Weft running there? (config key gateway)",
    };
    let channel = client::connect_authed(&conf.gateway, target, &bearer)
        .await
        .map_err(|e| match e {
            CliError::Unavailable(m) => CniError::new(unreachable_code, m),
            other => CniError::new(code::INVALID_CONFIG, other.to_string()),
        })?;
    Ok(Gateway {
        sandboxes: SandboxServiceClient::new(channel.clone()),
        networks: NetworkServiceClient::new(channel.clone()),
        hosts: HostServiceClient::new(channel),
    })
}

/// The machine's hostname, the default name of its agent's host.
fn own_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

impl Gateway {
    /// The host the config names; else the one registered under this machine's hostname; else
    /// the only host.
    pub async fn host(&mut self, conf: &NetConf) -> Result<pb::Host, CniError> {
        let hosts = self
            .hosts
            .list_hosts(pb::ListHostsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .map_err(|st| CniError::from_status("list the hosts", &st))?
            .into_inner()
            .hosts;
        let wanted = if conf.host.is_empty() {
            own_hostname()
        } else {
            Some(conf.host.clone())
        };
        if let Some(h) = hosts.iter().find(|h| Some(&h.name) == wanted.as_ref()) {
            return Ok(h.clone());
        }
        if !conf.host.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "config key host: {:?} is not a registered Weft host",
                    conf.host
                ),
            ));
        }
        match hosts.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(CniError::new(
                code::TRY_AGAIN_LATER,
                "no Weft host is registered yet (is the driver-agent running?)",
            )),
            many => Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "several Weft hosts are registered ({}) and none is named as this machine: set config key host",
                    many.iter()
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The network's id (the config may name it by name or id prefix).
    pub async fn network_id(&mut self, network: &str) -> Result<Option<String>, CniError> {
        match self
            .networks
            .get_network(pb::GetNetworkRequest {
                network: network.to_owned(),
            })
            .await
        {
            Ok(n) => Ok(Some(n.into_inner().id)),
            Err(st) if st.code() == Code::NotFound => Ok(None),
            Err(st) => Err(CniError::from_status(
                &format!("look up network {network:?}"),
                &st,
            )),
        }
    }

    /// The sandbox of `container_id` on `host`, if there is one.
    pub async fn sandbox_of(
        &mut self,
        container_id: &str,
        host: &str,
    ) -> Result<Option<pb::Sandbox>, CniError> {
        let found = self
            .list(pb::ListSandboxesRequest {
                container_id: vec![container_id.to_owned()],
                host: vec![host.to_owned()],
                ..Default::default()
            })
            .await?;
        Ok(found.into_iter().find(|s| s.container_id == container_id))
    }

    /// Every sandbox matching `req`, all pages.
    pub async fn list(
        &mut self,
        mut req: pb::ListSandboxesRequest,
    ) -> Result<Vec<pb::Sandbox>, CniError> {
        req.page_size = 1000;
        let c = self.sandboxes.clone();
        weftctl::pages::all_pages(req, |req| {
            let mut c = c.clone();
            async move { Ok(c.list_sandboxes(req).await?.into_inner()) }
        })
        .await
        .map_err(|e| match e {
            PagesError::Call(st) => CniError::from_status("list the sandboxes", &st),
            e @ PagesError::TooMany(_) => CniError::new(code::REFUSED, format!("sandboxes: {e}")),
        })
    }

    /// Disconnects an endpoint; already gone is success.
    pub async fn disconnect(&mut self, sandbox: &str, network: &str) -> Result<(), CniError> {
        let req = pb::DisconnectRequest {
            sandbox: sandbox.to_owned(),
            network: network.to_owned(),
            ..Default::default()
        };
        gone_is_fine(self.sandboxes.disconnect(req).await.map(drop))
            .map_err(|st| CniError::from_status("disconnect", &st))
    }

    /// Deletes a sandbox; already gone is success.
    pub async fn delete(&mut self, sandbox: &str) -> Result<(), CniError> {
        let req = pb::DeleteSandboxRequest {
            sandbox: sandbox.to_owned(),
            ..Default::default()
        };
        gone_is_fine(self.sandboxes.delete_sandbox(req).await.map(drop))
            .map_err(|st| CniError::from_status("delete the sandbox", &st))
    }
}

fn gone_is_fine(r: Result<(), Status>) -> Result<(), Status> {
    match r {
        Err(st) if st.code() == Code::NotFound => Ok(()),
        other => other,
    }
}

/// Whether the plugin made this sandbox.
pub fn is_ours(sb: &pb::Sandbox) -> bool {
    sb.labels.get(CREATED_BY.0).map(String::as_str) == Some(CREATED_BY.1)
}
