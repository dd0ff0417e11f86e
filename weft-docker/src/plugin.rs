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
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
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
    mac: String,
    at: Instant,
}

#[derive(Debug)]
pub struct Plugin {
    settings: Settings,
    clients: tokio::sync::Mutex<Option<Clients>>,
    pending: std::sync::Mutex<HashMap<String, Pending>>,
    /// Held across the pick of a free address and its reservation.
    reserved: tokio::sync::Mutex<BTreeMap<Ipv4Addr, Instant>>,
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

    /// Answers one call: `path` is the URL path ("/NetworkDriver.Join"), `body` its JSON.
    pub async fn call(&self, path: &str, body: &[u8]) -> Result<Value, PluginError> {
        match path {
            "/Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
            "/NetworkDriver.GetCapabilities" => {
                Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
            }
            "/NetworkDriver.CreateNetwork" => self.create_network(parse(body)?).await,
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
                addr::docker_id("NetworkID", &r.network_id)?;
                addr::docker_id("EndpointID", &r.endpoint_id)?;
                Ok(json!({}))
            }
            // Weft learns about other hosts from the gateway, not from Docker.
            "/NetworkDriver.DiscoverNew" | "/NetworkDriver.DiscoverDelete" => Ok(json!({})),
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

    async fn request_pool(&self, r: p::RequestPool) -> Result<Value, PluginError> {
        if r.v6 {
            return Err(PluginError::Unsupported(
                "IPv6 pools (create the network with Docker's default IPAM or without --ipv6)"
                    .into(),
            ));
        }
        let pool = if r.pool.is_empty() {
            Pool::new(&self.free_subnet().await?, &r.sub_pool)?
        } else {
            Pool::new(&r.pool, &r.sub_pool)?
        };
        Ok(json!({"PoolID": pool.id(), "Pool": pool.subnet.to_string(), "Data": {}}))
    }

    /// A free /24 from Weft's default pools, as Weft would pick it for a new network.
    async fn free_subnet(&self) -> Result<String, PluginError> {
        let mut gw = self.gw().await?;
        let probe = pb::CreateNetworkRequest {
            name: format!("docker-pool-{}", std::process::id()),
            ipam: Some(pb::Ipam {
                configs: vec![pb::IpamConfig {
                    subnet: "0.0.0.0/24".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            validate_only: true,
            ..Default::default()
        };
        let net = gw
            .networks
            .create_network(probe)
            .await
            .map_err(|st| PluginError::gateway("pick a free subnet", &st))?
            .into_inner();
        net.ipam
            .and_then(|i| {
                i.configs
                    .into_iter()
                    .map(|c| c.subnet)
                    .find(|s| !s.contains(':'))
            })
            .ok_or_else(|| PluginError::Exhausted("Weft's default pools".into()))
    }

    async fn request_address(&self, r: p::RequestAddress) -> Result<Value, PluginError> {
        let pool = Pool::parse_id(&r.pool_id)?;
        let options = r.options.unwrap_or_default();
        let gateway =
            options.get(p::GATEWAY_REQUEST.0).map(String::as_str) == Some(p::GATEWAY_REQUEST.1);
        if gateway {
            return Ok(json!({"Address": pool.cidr(pool.gateway(&r.address)?), "Data": {}}));
        }
        let mut reserved = self.reserved.lock().await;
        let now = Instant::now();
        reserved.retain(|_, at| now.duration_since(*at) < RESERVATION_TTL);
        let ip = if r.address.is_empty() {
            let taken = self.taken(&pool, &reserved).await?;
            pool.first_free(&taken)
                .ok_or_else(|| PluginError::Exhausted(pool.subnet.to_string()))?
        } else {
            pool.member("Address", &r.address)?
        };
        reserved.insert(ip, now);
        Ok(json!({"Address": pool.cidr(ip), "Data": {}}))
    }

    /// The addresses of `pool` in use: its Weft network's gateways, reserved addresses and
    /// endpoints, and those handed out but not joined yet.
    async fn taken(
        &self,
        pool: &Pool,
        reserved: &BTreeMap<Ipv4Addr, Instant>,
    ) -> Result<BTreeSet<Ipv4Addr>, PluginError> {
        let mut gw = self.gw().await?;
        let mut taken: BTreeSet<Ipv4Addr> = reserved.keys().copied().collect();
        let subnet = pool.subnet.to_string();
        for summary in gw.networks(None).await? {
            let configs = summary
                .ipam
                .as_ref()
                .map(|i| i.configs.as_slice())
                .unwrap_or_default();
            if !configs.iter().any(|c| c.subnet == subnet) {
                continue;
            }
            let Some(net) = gw.network_by_id(&summary.id).await? else {
                continue;
            };
            for c in net.ipam.iter().flat_map(|i| &i.configs) {
                taken.extend(c.gateway.parse::<Ipv4Addr>().ok());
                taken.extend(
                    c.aux_addresses
                        .values()
                        .filter_map(|a| a.parse::<Ipv4Addr>().ok()),
                );
            }
            for e in &net.endpoints {
                taken.extend(
                    e.ipv4_address
                        .split('/')
                        .next()
                        .and_then(|a| a.parse::<Ipv4Addr>().ok()),
                );
            }
        }
        Ok(taken)
    }

    async fn release_address(&self, r: p::ReleaseAddress) -> Result<Value, PluginError> {
        let pool = Pool::parse_id(&r.pool_id)?;
        if !r.address.is_empty() {
            let ip = pool.member("Address", &r.address)?;
            self.reserved.lock().await.remove(&ip);
        }
        // An endpoint's address is released in Weft by Leave (Disconnect); the gateway's
        // with the network.
        Ok(json!({}))
    }

    async fn create_network(&self, r: p::CreateNetwork) -> Result<Value, PluginError> {
        let id = addr::docker_id("NetworkID", &r.network_id)?.to_owned();
        if r.ipv6_data.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(PluginError::Unsupported("IPv6 subnets".into()));
        }
        let options = r.options.unwrap_or_default();
        let req = crate::convert::create_network(&id, &options, r.ipv4_data.unwrap_or_default())?;
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
        let id = addr::docker_id("NetworkID", &r.network_id)?;
        let mut gw = self.gw().await?;
        for net in gw.networks(Some(id)).await? {
            let res = gw
                .networks
                .delete_network(pb::DeleteNetworkRequest {
                    network: net.id.clone(),
                    ..Default::default()
                })
                .await;
            weft::gone_is_fine(res).map_err(|st| {
                PluginError::gateway(format!("delete Weft network {}", net.name), &st)
            })?;
        }
        Ok(json!({}))
    }

    fn create_endpoint(&self, r: p::CreateEndpoint) -> Result<Value, PluginError> {
        addr::docker_id("NetworkID", &r.network_id)?;
        let ep = addr::docker_id("EndpointID", &r.endpoint_id)?.to_owned();
        let iface = r.interface.unwrap_or_default();
        if !iface.address_ipv6.is_empty() {
            return Err(PluginError::Unsupported("IPv6 addresses".into()));
        }
        let ipv4 = crate::convert::endpoint_address(&iface.address)?;
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
        let net = addr::docker_id("NetworkID", &r.network_id)?;
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
        let net_id = addr::docker_id("NetworkID", &r.network_id)?;
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
        let handoff = addr::handoff_name(&ep_id);
        let settings = pb::EndpointSettings {
            ipv4_address: pending.ipv4.to_string(),
            mac_address: pending.mac.clone(),
            driver_options: [(weft_proto::HANDOFF_OPTION.to_owned(), handoff.clone())].into(),
            ..Default::default()
        };
        let ports = addr::port_mappings(r.options.as_ref())?;
        let ep = self
            .attach(&mut gw, &net, (&key, &r.sandbox_key), settings, ports)
            .await?;
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&ep_id);
        self.reserved.lock().await.remove(&pending.ipv4);
        serde_json::to_value(crate::convert::join_response(&ep, handoff))
            .map_err(|e| PluginError::Body(e.to_string()))
    }

    /// Connects the Weft sandbox of `key` (made with this first endpoint when there is none).
    async fn attach(
        &self,
        gw: &mut Clients,
        net: &pb::Network,
        (key, path): (&str, &str),
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
        let (container_id, name) =
            match crate::names::container_of(self.settings.docker.as_ref(), gw, net).await {
                Some((id, name)) => {
                    labels.insert(weft::CONTAINER_LABEL.to_owned(), id.clone());
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
        let net_id = addr::docker_id("NetworkID", &r.network_id)?;
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
            let res = gw
                .sandboxes
                .delete_sandbox(pb::DeleteSandboxRequest {
                    sandbox: sb.id.clone(),
                    ..Default::default()
                })
                .await;
            weft::gone_is_fine(res).map_err(|st| {
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

#[cfg(test)]
mod tests;
