//! Sandbox and endpoint operations.
//!
//! Connect is a saga: addresses from IPAM (owner = the endpoint id), then the host's agent
//! attaches the endpoint, then the endpoint is recorded with its event. A failed step undoes
//! the earlier ones (detach, release by owner) and the caller gets the error of the step that
//! failed. Disconnect runs the other way: agent, IPAM, then the record.

use std::net::IpAddr;

use weft_proto::{agent::v1 as apb, gateway::v1 as pb, ipam::v1 as ipb};
use weft_runtime::FieldViolation;

use crate::{
    error::GatewayError,
    network::{NetworkRecord, check_name},
    networks::{Change, Gateway, new_id, now_ms},
    recovery::Operation,
    sandbox::{
        DnsRecord, EndpointRecord, PortRecord, SandboxRecord, check_alias, check_interface,
        check_mac, default_route, mac_for, next_interface,
    },
    store::{self, sandboxes::Owner},
};

fn parse_ip(field: &str, value: &str, errs: &mut Vec<FieldViolation>) -> Option<IpAddr> {
    match value.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            errs.push(FieldViolation::new(field, value, "not an IP address"));
            None
        }
    }
}

/// Checks the settings of one attachment; `prefix` is the field path of the settings.
fn check_settings(prefix: &str, s: &pb::EndpointSettings) -> Vec<FieldViolation> {
    let mut errs = Vec::new();
    if !s.ipv4_address.is_empty()
        && parse_ip(&format!("{prefix}ipv4_address"), &s.ipv4_address, &mut errs)
            .is_some_and(|ip| ip.is_ipv6())
    {
        errs.push(FieldViolation::new(
            format!("{prefix}ipv4_address"),
            &s.ipv4_address,
            "not an IPv4 address",
        ));
    }
    if !s.ipv6_address.is_empty()
        && parse_ip(&format!("{prefix}ipv6_address"), &s.ipv6_address, &mut errs)
            .is_some_and(|ip| ip.is_ipv4())
    {
        errs.push(FieldViolation::new(
            format!("{prefix}ipv6_address"),
            &s.ipv6_address,
            "not an IPv6 address",
        ));
    }
    if !s.mac_address.is_empty()
        && let Err(v) = check_mac(&format!("{prefix}mac_address"), &s.mac_address)
    {
        errs.push(v);
    }
    if !s.interface_name.is_empty()
        && let Err(v) = check_interface(&format!("{prefix}interface_name"), &s.interface_name)
    {
        errs.push(v);
    }
    for (i, a) in s.aliases.iter().enumerate() {
        if let Err(v) = check_alias(&format!("{prefix}aliases[{i}]"), a) {
            errs.push(v);
        }
    }
    for (i, l) in s.link_local_ips.iter().enumerate() {
        parse_ip(&format!("{prefix}link_local_ips[{i}]"), l, &mut errs);
    }
    errs
}

fn agent_network(n: &NetworkRecord) -> apb::NetworkSpec {
    let driver = match n.driver.as_str() {
        "bridge" => apb::Driver::Bridge,
        "host" => apb::Driver::Host,
        "none" => apb::Driver::None,
        "overlay" => apb::Driver::Overlay,
        "macvlan" => apb::Driver::Macvlan,
        _ => apb::Driver::Ipvlan,
    };
    let opt = |k: &str| n.options.get(k).cloned().unwrap_or_default();
    apb::NetworkSpec {
        network_id: n.id.clone(),
        name: n.name.clone(),
        driver: driver as i32,
        subnets: n
            .subnets
            .iter()
            .map(|s| apb::Subnet {
                cidr: s.subnet.clone(),
                gateway: s.gateway.clone(),
            })
            .collect(),
        enable_ipv4: n.enable_ipv4,
        enable_ipv6: n.enable_ipv6,
        internal: n.internal,
        mtu: opt("com.docker.network.driver.mtu").parse().unwrap_or(0),
        bridge_name: opt("com.docker.network.bridge.name"),
        enable_icc: opt("com.docker.network.bridge.enable_icc") != "false",
        enable_ip_masquerade: opt("com.docker.network.bridge.enable_ip_masquerade") != "false",
        host_binding_ipv4: opt("com.docker.network.bridge.host_binding_ipv4"),
        parent: opt("parent"),
        options: n.options.clone().into_iter().collect(),
        ..Default::default()
    }
}

impl Gateway {
    pub async fn find_sandbox(
        &self,
        field: &str,
        key: &str,
    ) -> Result<SandboxRecord, GatewayError> {
        if key.is_empty() {
            return Err(GatewayError::invalid(
                field,
                key,
                "must name a sandbox (name, id or id prefix)",
            ));
        }
        let mut conn = self.db.read().acquire().await?;
        let mut found = store::sandboxes::find(&mut conn, key).await?;
        match found.len() {
            0 => Err(GatewayError::SandboxNotFound(key.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(GatewayError::invalid(
                field,
                key,
                "id prefix matches several sandboxes",
            )),
        }
    }

    pub async fn endpoints(
        &self,
        owner: Owner,
        id: &str,
    ) -> Result<Vec<EndpointRecord>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::sandboxes::endpoints_of(&mut conn, owner, id).await?)
    }

    /// Creates a sandbox and connects it to its initial networks, all or nothing.
    pub async fn create_sandbox(
        &self,
        req: pb::CreateSandboxRequest,
    ) -> Result<(SandboxRecord, Vec<EndpointRecord>), GatewayError> {
        let mut errs = Vec::new();
        if let Err(v) = check_name("name", &req.name) {
            errs.push(v);
        }
        if !(req.host.is_empty() || req.host == self.host) {
            errs.push(FieldViolation::new(
                "host",
                &req.host,
                format!("unknown host (known: {})", self.host),
            ));
        }
        if !req.network_mode.is_empty() && req.network_mode != "none" {
            errs.push(FieldViolation::new(
                "network_mode",
                &req.network_mode,
                "only the default (own namespace) and none are supported yet",
            ));
        }
        if !req.hostname.is_empty()
            && let Err(v) = check_alias("hostname", &req.hostname)
        {
            errs.push(v);
        }
        let dns = req.dns.clone().unwrap_or_default();
        for (i, d) in dns.servers.iter().enumerate() {
            parse_ip(&format!("dns.servers[{i}]"), d, &mut errs);
        }
        for (i, h) in req.extra_hosts.iter().enumerate() {
            if let Err(v) = check_alias(&format!("extra_hosts[{i}].hostname"), &h.hostname) {
                errs.push(v);
            }
            parse_ip(&format!("extra_hosts[{i}].address"), &h.address, &mut errs);
        }
        for (i, p) in req.port_mappings.iter().enumerate() {
            let f = |n: &str| format!("port_mappings[{i}].{n}");
            if p.container_port == 0 || p.container_port > 65535 {
                errs.push(FieldViolation::new(
                    f("container_port"),
                    p.container_port.to_string(),
                    "a port from 1 to 65535",
                ));
            }
            if p.host_port > 65535 {
                errs.push(FieldViolation::new(
                    f("host_port"),
                    p.host_port.to_string(),
                    "a port from 0 to 65535",
                ));
            }
            let last = u64::from(p.container_port.max(p.host_port)) + u64::from(p.range.max(1)) - 1;
            if last > 65535 {
                errs.push(FieldViolation::new(
                    f("range"),
                    p.range.to_string(),
                    "the range runs past port 65535",
                ));
            }
            if !p.host_ip.is_empty() {
                parse_ip(&f("host_ip"), &p.host_ip, &mut errs);
            }
            if pb::Protocol::try_from(p.protocol).is_err() {
                errs.push(FieldViolation::new(
                    f("protocol"),
                    p.protocol.to_string(),
                    "unknown protocol (tcp, udp, sctp)",
                ));
            }
        }
        for (i, a) in req.networks.iter().enumerate() {
            if a.network.is_empty() {
                errs.push(FieldViolation::new(
                    format!("networks[{i}].network"),
                    "",
                    "must name a network",
                ));
            }
            errs.extend(check_settings(
                &format!("networks[{i}].settings."),
                &a.settings.clone().unwrap_or_default(),
            ));
        }
        if !errs.is_empty() {
            return Err(GatewayError::Invalid(errs));
        }
        {
            let mut conn = self.db.read().acquire().await?;
            if store::sandboxes::find(&mut conn, &req.name)
                .await?
                .iter()
                .any(|s| s.name == req.name)
            {
                return Err(GatewayError::SandboxNameTaken(req.name));
            }
        }
        let sandbox = SandboxRecord {
            id: new_id(),
            name: req.name.clone(),
            container_id: req.container_id.clone(),
            host: self.host.clone(),
            netns_path: req.netns_path.clone(),
            hostname: req.hostname.clone(),
            dns: DnsRecord {
                servers: dns.servers,
                search: dns.search,
                options: dns.options,
            },
            extra_hosts: req
                .extra_hosts
                .iter()
                .map(|h| (h.hostname.clone(), h.address.clone()))
                .collect(),
            port_mappings: req
                .port_mappings
                .iter()
                .map(|p| PortRecord {
                    protocol: p.protocol,
                    host_ip: p.host_ip.clone(),
                    host_port: p.host_port,
                    container_port: p.container_port,
                    range: p.range.max(1),
                })
                .collect(),
            network_mode: req.network_mode.clone(),
            labels: Default::default(),
            created_at_ms: now_ms(),
        };
        let sandbox_op = self
            .begin(&Operation::CreateSandbox {
                sandbox: sandbox.clone(),
            })
            .await?;
        self.fault("create-sandbox:recorded");
        let created = self
            .agent
            .clone()
            .create_sandbox(apb::CreateSandboxRequest {
                sandbox: Some(apb::SandboxSpec {
                    sandbox_id: sandbox.id.clone(),
                    name: sandbox.name.clone(),
                    netns_path: sandbox.netns_path.clone(),
                    host_network: false,
                    hostname: sandbox.hostname.clone(),
                    resolv_conf: String::new(),
                    hosts: String::new(),
                }),
                revision: 0,
            })
            .await;
        let created = match created {
            Ok(c) => c.into_inner(),
            Err(st) => {
                self.remove_agent_sandbox(&sandbox).await;
                self.abandon(&sandbox_op).await;
                return Err(GatewayError::Agent(st));
            }
        };
        let sandbox = SandboxRecord {
            netns_path: if created.netns_path.is_empty() {
                sandbox.netns_path
            } else {
                created.netns_path
            },
            ..sandbox
        };
        // Attach every initial network; on any failure undo all of it.
        let mut attached: Vec<(EndpointRecord, NetworkRecord, String)> = Vec::new();
        let mut failure = None;
        for a in &req.networks {
            let settings = a.settings.clone().unwrap_or_default();
            let existing: Vec<EndpointRecord> =
                attached.iter().map(|(e, _, _)| e.clone()).collect();
            match self
                .attach(&sandbox, &existing, &a.network, &settings)
                .await
            {
                Ok(done) => attached.push(done),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let result = match failure {
            Some(e) => Err(e),
            None => {
                let mut changes = vec![(
                    Change::InsertSandbox(&sandbox),
                    pb::EventKind::SandboxCreated,
                )];
                for (e, _, op) in &attached {
                    changes.push((Change::InsertEndpoint(e), pb::EventKind::EndpointConnected));
                    changes.push((Change::EndOperation(op), pb::EventKind::Unspecified));
                }
                changes.push((
                    Change::EndOperation(&sandbox_op),
                    pb::EventKind::Unspecified,
                ));
                self.commit(&changes, None).await.map(drop)
            }
        };
        if let Err(e) = result {
            for (ep, _, op) in attached.iter().rev() {
                self.undo_attach(&sandbox, ep).await;
                self.abandon(op).await;
            }
            self.remove_agent_sandbox(&sandbox).await;
            self.abandon(&sandbox_op).await;
            return Err(e);
        }
        tracing::info!(sandbox = %sandbox.name, id = %sandbox.id, networks = attached.len(), "sandbox created");
        Ok((sandbox, attached.into_iter().map(|(e, _, _)| e).collect()))
    }

    /// IPAM then agent for one endpoint; nothing is recorded. On failure, what was done is undone.
    async fn attach(
        &self,
        sandbox: &SandboxRecord,
        existing: &[EndpointRecord],
        network: &str,
        settings: &pb::EndpointSettings,
    ) -> Result<(EndpointRecord, NetworkRecord, String), GatewayError> {
        let net = self.find("network", network).await?;
        if net.predefined && net.driver != "bridge" {
            return Err(GatewayError::Precondition(format!(
                "network {:?} is joined with network_mode, not connected to",
                net.name
            )));
        }
        if existing.iter().any(|e| e.network_id == net.id) {
            return Err(GatewayError::AlreadyConnected {
                sandbox: sandbox.name.clone(),
                network: net.name.clone(),
            });
        }
        let id = new_id();
        let mut ep = EndpointRecord {
            id: id.clone(),
            network_id: net.id.clone(),
            network_name: net.name.clone(),
            sandbox_id: sandbox.id.clone(),
            sandbox_name: sandbox.name.clone(),
            host: sandbox.host.clone(),
            interface_name: if settings.interface_name.is_empty() {
                next_interface(existing)
            } else {
                settings.interface_name.clone()
            },
            mac_address: if settings.mac_address.is_empty() {
                mac_for(&id)
            } else {
                settings.mac_address.clone()
            },
            ipv4_address: String::new(),
            ipv6_address: String::new(),
            gateway: String::new(),
            ipv6_gateway: String::new(),
            aliases: settings.aliases.clone(),
            gw_priority: settings.gw_priority,
            link_local_ips: settings.link_local_ips.clone(),
            driver_options: settings.driver_options.clone().into_iter().collect(),
            internal: net.internal,
            created_at_ms: now_ms(),
        };
        if existing
            .iter()
            .any(|e| e.interface_name == ep.interface_name)
        {
            return Err(GatewayError::invalid(
                "settings.interface_name",
                &ep.interface_name,
                "already used in this sandbox",
            ));
        }
        let op = self
            .begin(&Operation::Connect {
                sandbox: sandbox.clone(),
                endpoint: ep.clone(),
            })
            .await?;
        self.fault("connect:recorded");
        match self
            .attach_steps(sandbox, existing, &net, settings, &mut ep)
            .await
        {
            Ok(()) => Ok((ep, net, op)),
            Err(e) => {
                self.abandon(&op).await;
                Err(e)
            }
        }
    }

    /// The IPAM and agent steps of `attach`; what they did is undone when one fails.
    async fn attach_steps(
        &self,
        sandbox: &SandboxRecord,
        existing: &[EndpointRecord],
        net: &NetworkRecord,
        settings: &pb::EndpointSettings,
        ep: &mut EndpointRecord,
    ) -> Result<(), GatewayError> {
        let id = ep.id.clone();
        for s in &net.subnets {
            let v6 = s.subnet.contains(':');
            let wanted = if v6 {
                &settings.ipv6_address
            } else {
                &settings.ipv4_address
            };
            let alloc = self
                .ipam
                .clone()
                .request_address(ipb::RequestAddressRequest {
                    pool_id: s.pool_id.clone(),
                    owner: id.clone(),
                    address: wanted.clone(),
                })
                .await;
            let alloc = match alloc {
                Ok(a) => a.into_inner(),
                Err(st) => {
                    self.release_owner(&id).await;
                    let field = if v6 {
                        "settings.ipv6_address"
                    } else {
                        "settings.ipv4_address"
                    };
                    return Err(GatewayError::Ipam(rename_address_field(st, field, wanted)));
                }
            };
            if v6 && ep.ipv6_address.is_empty() {
                ep.ipv6_address = alloc.cidr;
                ep.ipv6_gateway = if net.internal {
                    String::new()
                } else {
                    alloc.gateway
                };
            } else if !v6 && ep.ipv4_address.is_empty() {
                ep.ipv4_address = alloc.cidr;
                ep.gateway = if net.internal {
                    String::new()
                } else {
                    alloc.gateway
                };
            }
        }
        self.fault("connect:allocated");
        let mut all = existing.to_vec();
        all.push(ep.clone());
        let route_v4 = default_route(&all, false).is_some_and(|d| d.id == ep.id);
        let route_v6 = default_route(&all, true).is_some_and(|d| d.id == ep.id);
        let spec = apb::EndpointSpec {
            endpoint_id: ep.id.clone(),
            network_id: net.id.clone(),
            sandbox_id: sandbox.id.clone(),
            netns_path: sandbox.netns_path.clone(),
            interface_name: ep.interface_name.clone(),
            mac_address: ep.mac_address.clone(),
            ipv4_address: ep.ipv4_address.clone(),
            ipv6_address: ep.ipv6_address.clone(),
            ipv4_gateway: ep.gateway.clone(),
            ipv6_gateway: ep.ipv6_gateway.clone(),
            link_local_ips: ep.link_local_ips.clone(),
            gw_priority: ep.gw_priority,
            default_route_v4: route_v4,
            default_route_v6: route_v6,
            port_mappings: Vec::new(),
            aliases: ep.aliases.clone(),
            driver_options: ep.driver_options.clone().into_iter().collect(),
        };
        if let Err(st) = self
            .agent
            .clone()
            .attach(apb::AttachRequest {
                endpoint: Some(spec),
                network: Some(agent_network(net)),
                revision: 0,
            })
            .await
        {
            // The agent may have done part of it: detach (idempotent) before giving back the
            // addresses.
            self.detach_agent(sandbox, ep).await;
            self.release_owner(&id).await;
            return Err(GatewayError::Agent(st));
        }
        self.fault("connect:attached");
        Ok(())
    }

    async fn undo_attach(&self, sandbox: &SandboxRecord, ep: &EndpointRecord) {
        self.detach_agent(sandbox, ep).await;
        self.release_owner(&ep.id).await;
    }

    pub(crate) async fn detach_agent(
        &self,
        sandbox: &SandboxRecord,
        ep: &EndpointRecord,
    ) -> Option<tonic::Status> {
        self.agent
            .clone()
            .detach(apb::DetachRequest {
                endpoint_id: ep.id.clone(),
                network_id: ep.network_id.clone(),
                sandbox_id: sandbox.id.clone(),
                netns_path: sandbox.netns_path.clone(),
                revision: 0,
            })
            .await
            .err()
            .inspect(|st| tracing::warn!(endpoint = %ep.id, error = %st.message(), "detach failed"))
    }

    pub(crate) async fn remove_agent_sandbox(&self, sandbox: &SandboxRecord) {
        if let Err(st) = self
            .agent
            .clone()
            .remove_sandbox(apb::RemoveSandboxRequest {
                sandbox_id: sandbox.id.clone(),
                netns_path: sandbox.netns_path.clone(),
                revision: 0,
            })
            .await
        {
            tracing::warn!(sandbox = %sandbox.id, error = %st.message(), "removing the sandbox on the agent failed");
        }
    }

    /// Releases every address `owner` holds (idempotent).
    pub(crate) async fn release_owner(&self, owner: &str) {
        if let Err(st) = self
            .ipam
            .clone()
            .release_address(ipb::ReleaseAddressRequest {
                pool_id: String::new(),
                target: Some(ipb::release_address_request::Target::Owner(
                    owner.to_owned(),
                )),
            })
            .await
        {
            tracing::warn!(owner, error = %st.message(), "releasing addresses failed");
        }
    }

    /// Connects; returns the new endpoint and all of the sandbox's endpoints (to tell which
    /// one now provides the default routes).
    pub async fn connect(
        &self,
        req: pb::ConnectRequest,
    ) -> Result<(EndpointRecord, Vec<EndpointRecord>), GatewayError> {
        let settings = req.settings.unwrap_or_default();
        let errs = check_settings("settings.", &settings);
        if !errs.is_empty() {
            return Err(GatewayError::Invalid(errs));
        }
        let sandbox = self.find_sandbox("sandbox", &req.sandbox).await?;
        let existing = self.endpoints(Owner::Sandbox, &sandbox.id).await?;
        let (ep, _net, op) = self
            .attach(&sandbox, &existing, &req.network, &settings)
            .await?;
        let changes = [
            (
                Change::InsertEndpoint(&ep),
                pb::EventKind::EndpointConnected,
            ),
            (Change::EndOperation(&op), pb::EventKind::Unspecified),
        ];
        if let Err(e) = self.commit(&changes, None).await {
            self.undo_attach(&sandbox, &ep).await;
            self.abandon(&op).await;
            return Err(e);
        }
        tracing::info!(sandbox = %sandbox.name, network = %ep.network_name, endpoint = %ep.id, "connected");
        let mut all = existing;
        all.push(ep.clone());
        Ok((ep, all))
    }

    pub async fn disconnect(&self, req: pb::DisconnectRequest) -> Result<(), GatewayError> {
        let sandbox = self.find_sandbox("sandbox", &req.sandbox).await?;
        let net = self.find("network", &req.network).await?;
        let ep = self
            .endpoints(Owner::Sandbox, &sandbox.id)
            .await?
            .into_iter()
            .find(|e| e.network_id == net.id)
            .ok_or_else(|| GatewayError::NotConnected {
                sandbox: sandbox.name.clone(),
                network: net.name.clone(),
            })?;
        let op = self
            .begin(&Operation::Disconnect {
                sandbox: sandbox.clone(),
                endpoint: ep.clone(),
            })
            .await?;
        self.fault("disconnect:recorded");
        // Without `force` an agent failure stops here, so the state still says what the kernel
        // may still have; the operation record goes, the endpoint stays.
        if let Some(st) = self.detach_agent(&sandbox, &ep).await
            && !req.force
        {
            self.abandon(&op).await;
            return Err(GatewayError::Agent(st));
        }
        self.fault("disconnect:detached");
        self.release_owner(&ep.id).await;
        self.fault("disconnect:released");
        self.commit(
            &[
                (
                    Change::DeleteEndpoint(&ep),
                    pb::EventKind::EndpointDisconnected,
                ),
                (Change::EndOperation(&op), pb::EventKind::Unspecified),
            ],
            None,
        )
        .await?;
        tracing::info!(sandbox = %sandbox.name, network = %ep.network_name, endpoint = %ep.id, "disconnected");
        Ok(())
    }

    /// Detaches and releases every endpoint, removes the namespace on the agent, then the
    /// record. Once recorded, the deletion is completed by the sweep if the gateway dies.
    pub async fn delete_sandbox(&self, req: pb::DeleteSandboxRequest) -> Result<(), GatewayError> {
        let sandbox = self.find_sandbox("sandbox", &req.sandbox).await?;
        let op = self
            .begin(&Operation::DeleteSandbox {
                sandbox: sandbox.clone(),
            })
            .await?;
        self.fault("delete-sandbox:recorded");
        for ep in self
            .endpoints(Owner::Sandbox, &sandbox.id)
            .await?
            .iter()
            .rev()
        {
            self.detach_agent(&sandbox, ep).await;
            self.fault("delete-sandbox:detached");
            self.release_owner(&ep.id).await;
            self.fault("delete-sandbox:released");
            self.commit(
                &[(
                    Change::DeleteEndpoint(ep),
                    pb::EventKind::EndpointDisconnected,
                )],
                None,
            )
            .await?;
        }
        self.fault("delete-sandbox:endpoints-removed");
        self.remove_agent_sandbox(&sandbox).await;
        self.fault("delete-sandbox:agent-removed");
        self.commit(
            &[
                (
                    Change::DeleteSandbox(&sandbox),
                    pb::EventKind::SandboxRemoved,
                ),
                (Change::EndOperation(&op), pb::EventKind::Unspecified),
            ],
            None,
        )
        .await?;
        tracing::info!(sandbox = %sandbox.name, id = %sandbox.id, "sandbox removed");
        Ok(())
    }

    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::sandboxes::list(&mut conn).await?)
    }
}

/// IPAM calls the requested address `address`; the caller knows it by its settings field.
fn rename_address_field(st: tonic::Status, field: &str, value: &str) -> tonic::Status {
    use tonic_types::StatusExt as _;
    if st.code() != tonic::Code::InvalidArgument {
        return st;
    }
    let reason = st
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first())
        .and_then(|v| v.description.split_once(": ").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| st.message().to_owned());
    weft_runtime::invalid_argument(&[FieldViolation::new(field, value, reason)])
}
