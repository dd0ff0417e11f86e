//! The handlers: one per call of the remote driver and IPAM protocols, over the gateway.
//!
//! What lives where: a Docker network is a Weft network labelled with Docker's network id; a
//! Docker sandbox (one container's namespace) is a Weft sandbox labelled with its SandboxKey;
//! a Docker endpoint is a Weft endpoint whose container end was handed to Docker under a name
//! derived from Docker's endpoint id. So every call finds its objects in Weft, and a restart of
//! dockerd or of the plugin loses nothing. The one thing held in memory is what Docker says
//! between CreateEndpoint and Join (the address its IPAM call got, milliseconds apart), and
//! the addresses handed out by RequestAddress but not yet joined, so that two containers
//! started at once do not get the same one.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use weft_proto::gateway::v1 as pb;
use weft_runtime::access::Bearer;

use crate::{
    addr::{self, Pool},
    docker_api::DockerApi,
    error::PluginError,
    protocol as p,
    weft::{self, CREATED_BY, Clients, SANDBOX_KEY_LABEL},
};

/// An address handed out and not joined within this long is free again (Docker joins within
/// milliseconds; a container start that failed in between never releases it otherwise).
const RESERVATION_TTL: Duration = Duration::from_secs(120);
/// The longest SandboxKey kept as a label (Weft's limit on label values).
const SANDBOX_PATH_MAX: usize = 1024;
/// Endpoints created but not joined, at most (a flood of CreateEndpoint is refused).
const PENDING_MAX: usize = 4096;

/// The address space names Docker shows; there is one space, Weft's.
const LOCAL_SPACE: &str = "weft";
const GLOBAL_SPACE: &str = "weft-global";

/// The Docker network driver a call came through. The plugin can serve two, on a socket each:
/// Docker's driver name is the socket's file name, and GetCapabilities (the scope) is asked per
/// driver, not per network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Weft bridge networks, scope `local` (`docker network create -d weft`).
    Bridge,
    /// Weft overlay networks, scope `global` (`-d weft-overlay`). dockerd 20.10 creates
    /// global-scope networks only through swarm, which takes managed plugins only (this one
    /// with `--driver overlay`): see the README's Overlay section.
    Overlay,
}

impl Driver {
    /// GetCapabilities' answer.
    pub fn capabilities(self) -> Value {
        let scope = match self {
            Self::Bridge => "local",
            Self::Overlay => "global",
        };
        json!({"Scope": scope, "ConnectivityScope": scope})
    }

    /// Weft's driver for the networks made through this one.
    pub fn weft_driver(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Overlay => "overlay",
        }
    }
}

/// Where the plugin talks to, and how.
#[derive(Debug)]
pub struct Settings {
    pub gateway: String,
    pub bearer: Bearer,
    /// dockerd's API, for the names of networks and containers (optional).
    pub docker: Option<DockerApi>,
}

/// What CreateEndpoint said, kept until Join.
#[derive(Debug, Clone)]
struct Pending {
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    mac: String,
    at: Instant,
}

#[derive(Debug)]
pub struct Plugin {
    settings: Settings,
    clients: tokio::sync::Mutex<Option<Clients>>,
    pending: std::sync::Mutex<HashMap<String, Pending>>,
    /// Held across the pick of a free address and its reservation.
    reserved: tokio::sync::Mutex<BTreeMap<IpAddr, Instant>>,
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, PluginError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| PluginError::Body(e.to_string()))
}

impl Plugin {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            clients: tokio::sync::Mutex::new(None),
            pending: std::sync::Mutex::new(HashMap::new()),
            reserved: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// dockerd's API, when the plugin was given it.
    pub fn docker(&self) -> Option<&DockerApi> {
        self.settings.docker.as_ref()
    }

    /// The connection to the gateway (for the sweep).
    pub async fn clients(&self) -> Result<Clients, PluginError> {
        self.gw().await
    }

    /// The connection to the gateway, made on first use (the plugin may start before Weft).
    async fn gw(&self) -> Result<Clients, PluginError> {
        let mut c = self.clients.lock().await;
        if let Some(c) = c.as_ref() {
            return Ok(c.clone());
        }
        let made = weft::connect(&self.settings.gateway, &self.settings.bearer).await?;
        *c = Some(made.clone());
        Ok(made)
    }

    /// Answers one call through the bridge driver (see [`Plugin::call_as`]).
    pub async fn call(&self, path: &str, body: &[u8]) -> Result<Value, PluginError> {
        self.call_as(Driver::Bridge, path, body).await
    }

    /// Answers one call that came through `driver`'s socket: `path` is the URL path
    /// ("/NetworkDriver.Join"), `body` its JSON.
    pub async fn call_as(
        &self,
        driver: Driver,
        path: &str,
        body: &[u8],
    ) -> Result<Value, PluginError> {
        match path {
            "/Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
            "/NetworkDriver.GetCapabilities" => Ok(driver.capabilities()),
            "/NetworkDriver.CreateNetwork" => self.create_network(driver, parse(body)?).await,
            "/NetworkDriver.DeleteNetwork" => self.delete_network(parse(body)?).await,
            "/NetworkDriver.CreateEndpoint" => self.create_endpoint(parse(body)?),
            "/NetworkDriver.EndpointOperInfo" => self.oper_info(parse(body)?).await,
            "/NetworkDriver.DeleteEndpoint" => self.delete_endpoint(parse(body)?).await,
            "/NetworkDriver.Join" => self.join(parse(body)?).await,
            "/NetworkDriver.Leave" => self.leave(parse(body)?).await,
            "/NetworkDriver.ProgramExternalConnectivity"
            | "/NetworkDriver.RevokeExternalConnectivity" => {
                // Published ports are the sandbox's in Weft, given at its creation by Join
                // (Docker sends the same port map there) and forwarded through the endpoint
                // with the default route, as Docker does.
                let r: p::EndpointRef = parse(body)?;
                addr::network_id(&r.network_id)?;
                addr::docker_id("EndpointID", &r.endpoint_id)?;
                Ok(json!({}))
            }
            // Weft learns about other hosts from the gateway, not from Docker.
            "/NetworkDriver.DiscoverNew" | "/NetworkDriver.DiscoverDelete" => Ok(json!({})),
            // Swarm's manager asks a global-scope driver to allocate a network before any node
            // creates it; Weft allocates nothing then (the pools come from the IPAM calls, the
            // network is made by CreateNetwork on the node).
            "/NetworkDriver.AllocateNetwork" | "/NetworkDriver.FreeNetwork"
                if driver == Driver::Overlay =>
            {
                let r: p::NetworkRef = parse(body)?;
                addr::network_id(&r.network_id)?;
                Ok(json!({}))
            }
            "/NetworkDriver.AllocateNetwork" | "/NetworkDriver.FreeNetwork" => {
                Err(PluginError::Unsupported(
                    "swarm-scoped networks (use Weft's overlay driver)".into(),
                ))
            }
            "/IpamDriver.GetCapabilities" => {
                Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
            }
            "/IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": LOCAL_SPACE,
                "GlobalDefaultAddressSpace": GLOBAL_SPACE,
            })),
            "/IpamDriver.RequestPool" => self.request_pool(parse(body)?).await,
            "/IpamDriver.ReleasePool" => {
                let r: p::PoolRef = parse(body)?;
                Pool::parse_id(&r.pool_id)?;
                // The subnet is the Weft network's, released when Docker deletes it.
                Ok(json!({}))
            }
            "/IpamDriver.RequestAddress" => self.request_address(parse(body)?).await,
            "/IpamDriver.ReleaseAddress" => self.release_address(parse(body)?).await,
            other => Err(PluginError::Unsupported(format!(
                "unknown call {:?}",
                other.chars().take(64).collect::<String>()
            ))),
        }
    }

    async fn create_network(
        &self,
        driver: Driver,
        r: p::CreateNetwork,
    ) -> Result<Value, PluginError> {
        let id = addr::network_id(&r.network_id)?.to_owned();
        let options = r.options.unwrap_or_default();
        let mut req = crate::convert::create_network(
            &id,
            &options,
            r.ipv4_data.unwrap_or_default(),
            r.ipv6_data.unwrap_or_default(),
        )?;
        req.driver = driver.weft_driver().into();
        let mut gw = self.gw().await?;
        if gw.network(&id).await?.is_some() {
            return Ok(json!({}));
        }
        gw.networks
            .create_network(req)
            .await
            .map_err(|st| PluginError::gateway("create the Weft network", &st))?;
        if let Some(docker) = self.settings.docker.clone() {
            // Docker records the network (and so knows its name) once this call returns.
            tokio::spawn(crate::names::label_network_name(gw, docker, id));
        }
        Ok(json!({}))
    }

    async fn delete_network(&self, r: p::NetworkRef) -> Result<Value, PluginError> {
        let id = addr::network_id(&r.network_id)?;
        let mut gw = self.gw().await?;
        for net in gw.networks(Some(id)).await? {
            gw.delete_network(&net.id).await.map_err(|st| {
                PluginError::gateway(format!("delete Weft network {}", net.name), &st)
            })?;
        }
        Ok(json!({}))
    }

    fn create_endpoint(&self, r: p::CreateEndpoint) -> Result<Value, PluginError> {
        addr::network_id(&r.network_id)?;
        let ep = addr::docker_id("EndpointID", &r.endpoint_id)?.to_owned();
        let iface = r.interface.unwrap_or_default();
        let ipv4 = crate::convert::endpoint_address(&iface.address)?;
        let ipv6 = crate::convert::endpoint_address_v6(&iface.address_ipv6)?;
        let mac = if iface.mac_address.is_empty() {
            addr::mac_for(ipv4)
        } else {
            iface.mac_address.clone()
        };
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        pending.retain(|_, p| now.duration_since(p.at) < RESERVATION_TTL);
        if pending.len() >= PENDING_MAX {
            return Err(PluginError::Unsupported(format!(
                "more than {PENDING_MAX} endpoints created and not joined"
            )));
        }
        pending.insert(
            ep,
            Pending {
                ipv4,
                ipv6,
                mac: mac.clone(),
                at: now,
            },
        );
        Ok(if iface.mac_address.is_empty() {
            json!({"Interface": {"MacAddress": mac}})
        } else {
            json!({})
        })
    }

    async fn oper_info(&self, r: p::EndpointRef) -> Result<Value, PluginError> {
        let net = addr::network_id(&r.network_id)?;
        let ep = addr::docker_id("EndpointID", &r.endpoint_id)?;
        let mut gw = self.gw().await?;
        let Some(weft_net) = gw.network(net).await? else {
            return Ok(json!({"Value": {}}));
        };
        let found = gw
            .endpoint_by_handoff(&weft_net.id, &addr::handoff_name(ep))
            .await?;
        let Some((sb, e)) = found else {
            return Ok(json!({"Value": {}}));
        };
        let mut value = json!({
            "weft.network": weft_net.name,
            "weft.sandbox": sb.name,
            "weft.endpoint": e.id,
            "weft.ipv4_address": e.ipv4_address,
            "weft.ipv6_address": e.ipv6_address,
            "weft.host_interface": e.host_interface_name,
        });
        // `docker ps` and `docker port` show what this key lists: the ports Weft publishes
        // through this endpoint (the one with the default route).
        if e.default_route_v4 && !sb.port_mappings.is_empty() {
            value[p::PORT_MAP] = crate::convert::docker_ports(&sb.port_mappings, &e.ipv4_address);
        }
        Ok(json!({"Value": value}))
    }

    async fn join(&self, r: p::Join) -> Result<Value, PluginError> {
        let net_id = addr::network_id(&r.network_id)?;
        let ep_id = addr::docker_id("EndpointID", &r.endpoint_id)?.to_owned();
        let key = crate::convert::sandbox_key(&r.sandbox_key)?;
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&ep_id)
            .cloned()
            .ok_or_else(|| {
                PluginError::Unknown(format!(
                    "{ep_id} (not created through this plugin process: was it restarted between CreateEndpoint and Join? start the container again)"
                ))
            })?;
        let mut gw = self.gw().await?;
        let net = gw
            .network(net_id)
            .await?
            .ok_or_else(|| PluginError::Unknown(format!("network {net_id} in Weft")))?;
        if net.driver != Driver::Bridge.weft_driver() && net.driver != Driver::Overlay.weft_driver()
        {
            // The agent hands a veth over to the runtime (weft.endpoint.handoff) on bridge and
            // overlay networks only; elsewhere Docker would look for an interface that is not
            // there.
            return Err(PluginError::Unsupported(format!(
                "containers on Weft {} networks through Docker (Weft network {}): only bridge and overlay networks hand their interface to Docker",
                net.driver, net.name
            )));
        }
        let handoff = addr::handoff_name(&ep_id);
        let settings = pb::EndpointSettings {
            ipv4_address: pending.ipv4.to_string(),
            ipv6_address: pending.ipv6.map(|a| a.to_string()).unwrap_or_default(),
            mac_address: pending.mac.clone(),
            driver_options: [(weft_proto::HANDOFF_OPTION.to_owned(), handoff.clone())].into(),
            ..Default::default()
        };
        let ports = addr::port_mappings(r.options.as_ref())?;
        let ep = self
            .attach(
                &mut gw,
                &net,
                (&key, &r.sandbox_key, &ep_id),
                settings,
                ports,
            )
            .await?;
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&ep_id);
        let mut reserved = self.reserved.lock().await;
        reserved.remove(&IpAddr::V4(pending.ipv4));
        if let Some(v6) = pending.ipv6 {
            reserved.remove(&IpAddr::V6(v6));
        }
        drop(reserved);
        serde_json::to_value(crate::convert::join_response(&ep, handoff))
            .map_err(|e| PluginError::Body(e.to_string()))
    }

    /// Connects the Weft sandbox of `key` (made with this first endpoint, Docker's
    /// `endpoint_id`, when there is none).
    async fn attach(
        &self,
        gw: &mut Clients,
        net: &pb::Network,
        (key, path, endpoint_id): (&str, &str, &str),
        settings: pb::EndpointSettings,
        ports: Vec<pb::PortMapping>,
    ) -> Result<pb::Endpoint, PluginError> {
        let handoff = settings
            .driver_options
            .get(weft_proto::HANDOFF_OPTION)
            .cloned();
        let label = format!("{SANDBOX_KEY_LABEL}={key}");
        if let Some(sb) = gw.sandboxes(Some(label), None).await?.into_iter().next() {
            return Ok(gw
                .sandboxes
                .connect(pb::ConnectRequest {
                    sandbox: sb.id,
                    network: net.id.clone(),
                    settings: Some(settings),
                    ..Default::default()
                })
                .await
                .map_err(|st| {
                    PluginError::gateway(format!("connect to Weft network {}", net.name), &st)
                })?
                .into_inner());
        }
        let mut labels: std::collections::HashMap<String, String> = [
            (CREATED_BY.0.to_owned(), CREATED_BY.1.to_owned()),
            (SANDBOX_KEY_LABEL.to_owned(), key.to_owned()),
        ]
        .into();
        if path.len() <= SANDBOX_PATH_MAX {
            labels.insert(weft::SANDBOX_PATH_LABEL.to_owned(), path.to_owned());
        }
        let docker = self.settings.docker.as_ref();
        let (container_id, name) =
            match crate::names::container_of(docker, gw, net, endpoint_id).await {
                Some((id, name)) => {
                    if !id.is_empty() {
                        labels.insert(weft::CONTAINER_LABEL.to_owned(), id.clone());
                    }
                    (id, name)
                }
                None => (String::new(), format!("docker-{key}")),
            };
        let mut req = pb::CreateSandboxRequest {
            name,
            container_id,
            port_mappings: ports,
            networks: vec![pb::NetworkAttachment {
                network: net.id.clone(),
                settings: Some(settings),
            }],
            labels,
            ..Default::default()
        };
        let fallback = format!("docker-{key}");
        let made = match gw.sandboxes.create_sandbox(req.clone()).await {
            // Docker's name taken in Weft meanwhile (another client's sandbox): the id's name.
            Err(st) if st.code() == tonic::Code::AlreadyExists && req.name != fallback => {
                req.name = fallback;
                gw.sandboxes.create_sandbox(req).await
            }
            other => other,
        };
        let sb = made
            .map_err(|st| {
                PluginError::gateway(format!("attach to Weft network {}", net.name), &st)
            })?
            .into_inner();
        sb.endpoints
            .into_iter()
            .find(|e| e.driver_options.get(weft_proto::HANDOFF_OPTION) == handoff.as_ref())
            .ok_or_else(|| PluginError::Unknown(format!("endpoint {handoff:?} after the attach")))
    }

    async fn leave(&self, r: p::EndpointRef) -> Result<Value, PluginError> {
        let net_id = addr::network_id(&r.network_id)?;
        let ep_id = addr::docker_id("EndpointID", &r.endpoint_id)?;
        let mut gw = self.gw().await?;
        let Some(net) = gw.network(net_id).await? else {
            return Ok(json!({}));
        };
        let Some((sb, _)) = gw
            .endpoint_by_handoff(&net.id, &addr::handoff_name(ep_id))
            .await?
        else {
            return Ok(json!({}));
        };
        if sb.endpoints.len() <= 1 {
            // Its last endpoint: the whole sandbox goes (its namespace is Weft's placeholder).
            gw.delete_sandbox(&sb.id).await.map_err(|st| {
                PluginError::gateway(format!("delete Weft sandbox {}", sb.name), &st)
            })?;
        } else {
            let res = gw
                .sandboxes
                .disconnect(pb::DisconnectRequest {
                    sandbox: sb.id.clone(),
                    network: net.id.clone(),
                    ..Default::default()
                })
                .await;
            weft::gone_is_fine(res).map_err(|st| {
                PluginError::gateway(format!("disconnect {} from {}", sb.name, net.name), &st)
            })?;
        }
        Ok(json!({}))
    }

    async fn delete_endpoint(&self, r: p::EndpointRef) -> Result<Value, PluginError> {
        let ep_id = addr::docker_id("EndpointID", &r.endpoint_id)?;
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(ep_id);
        // Normally left already; a Join that failed half-way is undone here.
        self.leave(r).await
    }
}

mod ipam;
#[cfg(test)]
mod tests;
