//! Sandbox and endpoint operations.
//!
//! Connect is a saga: addresses from IPAM (owner = the endpoint id), then the host's agent
//! attaches the endpoint, then the endpoint is recorded with its event. A failed step undoes
//! the earlier ones (detach, release by owner) and the caller gets the error of the step that
//! failed. Disconnect runs the other way: agent, IPAM, then the record.

use std::net::IpAddr;

use prost::Message as _;
use weft_proto::{agent::v1 as apb, gateway::v1 as pb, ipam::v1 as ipb};
use weft_runtime::FieldViolation;

use crate::{
    desired::{agent_endpoint, agent_network, agent_sandbox, role},
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

    /// Checks a CreateSandbox request and builds the sandbox it asks for (no id yet, nothing
    /// written). `shared` is the sandbox whose namespace a `container:` sandbox joins.
    async fn prepare_sandbox(
        &self,
        req: &pb::CreateSandboxRequest,
    ) -> Result<(SandboxRecord, Option<SandboxRecord>), GatewayError> {
        let mut errs = Vec::new();
        if !req.name.is_empty()
            && let Err(v) = check_name("name", &req.name)
        {
            errs.push(v);
        }
        let host = self.place(&req.host).await.map_err(|v| errs.push(v)).ok();
        let mut shared = None;
        let mode = req.network_mode.as_str();
        match mode {
            "" | "none" | "host" => {}
            m if m.starts_with("container:") => {
                let target = &m["container:".len()..];
                match self.find_sandbox("network_mode", target).await {
                    Ok(t) if t.network_mode.starts_with("container:") => {
                        errs.push(FieldViolation::new(
                            "network_mode",
                            m,
                            format!(
                                "sandbox {:?} itself shares another sandbox's namespace",
                                t.name
                            ),
                        ));
                    }
                    Ok(t) => shared = Some(t),
                    Err(GatewayError::SandboxNotFound(_)) => errs.push(FieldViolation::new(
                        "network_mode",
                        m,
                        "no such sandbox to share the namespace of",
                    )),
                    Err(e) => return Err(e),
                }
            }
            m => errs.push(FieldViolation::new(
                "network_mode",
                m,
                "expected empty, \"none\", \"host\" or \"container:<sandbox>\"",
            )),
        }
        if !mode.is_empty() {
            if !req.networks.is_empty() {
                errs.push(FieldViolation::new(
                    "networks",
                    req.networks.len().to_string(),
                    format!("no attachments with network_mode {mode:?}"),
                ));
            }
            if !req.port_mappings.is_empty() {
                errs.push(FieldViolation::new(
                    "port_mappings",
                    req.port_mappings.len().to_string(),
                    format!("no published ports with network_mode {mode:?}"),
                ));
            }
        }
        if !req.hostname.is_empty()
            && let Err(v) = check_alias("hostname", &req.hostname)
        {
            errs.push(v);
        }
        let dns = req.dns.clone().unwrap_or_default();
        for (i, d) in dns.servers.iter().enumerate() {
            let plain = d
                .parse::<IpAddr>()
                .is_ok()
                .then_some(())
                .or_else(|| d.parse::<std::net::SocketAddr>().ok().map(drop));
            if plain.is_none() {
                errs.push(FieldViolation::new(
                    format!("dns.servers[{i}]"),
                    d,
                    "not an IP address (or IP:PORT)",
                ));
            }
        }
        for (i, h) in req.extra_hosts.iter().enumerate() {
            if let Err(v) = check_alias(&format!("extra_hosts[{i}].hostname"), &h.hostname) {
                errs.push(v);
            }
            if h.address != "host-gateway" {
                parse_ip(&format!("extra_hosts[{i}].address"), &h.address, &mut errs);
            }
        }
        errs.extend(check_ports(&req.port_mappings));
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
        if req.labels.keys().any(String::is_empty) {
            errs.push(FieldViolation::new("labels", "", "a label key is empty"));
        }
        let Some(host) = host.filter(|_| errs.is_empty()) else {
            return Err(GatewayError::Invalid(errs));
        };
        if !req.name.is_empty() {
            let mut conn = self.db.read().acquire().await?;
            if store::sandboxes::find(&mut conn, &req.name)
                .await?
                .iter()
                .any(|s| s.name == req.name)
            {
                return Err(GatewayError::SandboxNameTaken(req.name.clone()));
            }
        }
        let mut extra_hosts = Vec::new();
        for h in &req.extra_hosts {
            let address = if h.address == "host-gateway" {
                self.host_gateway().await?
            } else {
                h.address.clone()
            };
            extra_hosts.push((h.hostname.clone(), address));
        }
        let mut ports: Vec<PortRecord> = req
            .port_mappings
            .iter()
            .map(|p| PortRecord {
                protocol: if p.protocol == 0 {
                    pb::Protocol::Tcp as i32
                } else {
                    p.protocol
                },
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                container_port: p.container_port,
                range: p.range.max(1),
            })
            .collect();
        self.assign_ports(&host, &mut ports).await?;
        let (netns_path, network_mode) = match &shared {
            Some(t) => (t.netns_path.clone(), format!("container:{}", t.id)),
            None => (req.netns_path.clone(), req.network_mode.clone()),
        };
        Ok((
            SandboxRecord {
                id: String::new(),
                name: req.name.clone(),
                container_id: req.container_id.clone(),
                host,
                netns_path,
                hostname: req.hostname.clone(),
                dns: DnsRecord {
                    servers: dns.servers,
                    search: dns.search,
                    options: dns.options,
                },
                extra_hosts,
                port_mappings: ports,
                network_mode,
                labels: req.labels.clone().into_iter().collect(),
                created_at_ms: 0,
                netns_managed: false,
                resolv_conf_path: String::new(),
                hosts_path: String::new(),
            },
            shared,
        ))
    }

    /// The gateway address of the predefined `bridge` network (Docker's `host-gateway`).
    async fn host_gateway(&self) -> Result<String, GatewayError> {
        let bridge = self.find("extra_hosts", "bridge").await?;
        bridge
            .subnets
            .iter()
            .map(|s| s.gateway.clone())
            .find(|g| !g.is_empty())
            .ok_or_else(|| {
                GatewayError::Precondition("the bridge network has no gateway address".into())
            })
    }

    /// Refuses host ports already published on `host` (naming the holder) and picks free ones
    /// for `host_port: 0`.
    async fn assign_ports(&self, host: &str, ports: &mut [PortRecord]) -> Result<(), GatewayError> {
        if ports.is_empty() {
            return Ok(());
        }
        let taken: Vec<(String, PortRecord)> = {
            let mut conn = self.db.read().acquire().await?;
            store::sandboxes::list(&mut conn)
                .await?
                .into_iter()
                .filter(|s| s.host == host)
                .flat_map(|s| {
                    s.port_mappings
                        .into_iter()
                        .map(move |p| (s.name.clone(), p))
                })
                .collect()
        };
        for i in 0..ports.len() {
            let (done, rest) = ports.split_at_mut(i);
            let p = &mut rest[0];
            let holders = || {
                taken
                    .iter()
                    .map(|(n, t)| (n.as_str(), t))
                    .chain(done.iter().map(|t| ("this sandbox", t)))
            };
            if p.host_port == 0 {
                let first = (EPHEMERAL_FIRST..=EPHEMERAL_LAST + 1 - p.range).find(|&start| {
                    let cand = PortRecord {
                        host_port: start,
                        ..p.clone()
                    };
                    holders().all(|(_, t)| !ports_clash(&cand, t))
                });
                match first {
                    Some(start) => p.host_port = start,
                    None => {
                        return Err(GatewayError::Exhausted(format!(
                            "no {} free host ports on host {host:?}",
                            p.range
                        )));
                    }
                }
            } else if let Some((holder, t)) = holders().find(|(_, t)| ports_clash(p, t)) {
                return Err(GatewayError::PortTaken(format!(
                    "host port {}{}/{} is already published by sandbox {holder:?} ({}:{})",
                    if p.host_ip.is_empty() {
                        String::new()
                    } else {
                        format!("{}:", p.host_ip)
                    },
                    p.host_port,
                    protocol_name(p.protocol),
                    if t.host_ip.is_empty() {
                        "*"
                    } else {
                        &t.host_ip
                    },
                    t.host_port
                )));
            }
        }
        Ok(())
    }

    /// Creates a sandbox and connects it to its initial networks, all or nothing. With
    /// `validate_only`, returns the sandbox as it would be.
    pub async fn create_sandbox(
        &self,
        req: pb::CreateSandboxRequest,
    ) -> Result<pb::Sandbox, GatewayError> {
        let fingerprint = pb::CreateSandboxRequest {
            request_id: String::new(),
            ..req.clone()
        }
        .encode_to_vec();
        if let Some(done) = self
            .replay(&req.request_id, "CreateSandbox", &fingerprint)
            .await?
        {
            return Ok(done);
        }
        let (mut sandbox, shared) = self.prepare_sandbox(&req).await?;
        if req.validate_only {
            return self.dry_run_sandbox(&req, sandbox, shared.as_ref()).await;
        }
        sandbox.id = new_id();
        if sandbox.name.is_empty() {
            sandbox.name = sandbox.id[..12].to_owned();
        }
        if sandbox.hostname.is_empty() {
            sandbox.hostname = if sandbox.container_id.len() >= 12 {
                sandbox.container_id[..12].to_owned()
            } else {
                sandbox.id[..12].to_owned()
            };
        }
        sandbox.created_at_ms = now_ms();
        let (sandbox, endpoints) = self.create_sandbox_saga(&req, sandbox).await?;
        let shown = match &shared {
            Some(t) => self.endpoints(Owner::Sandbox, &t.id).await?,
            None => endpoints,
        };
        let answer = crate::to_pb::sandbox_to_pb(&sandbox, &shown);
        self.remember(&req.request_id, "CreateSandbox", fingerprint, &answer)
            .await;
        Ok(answer)
    }

    /// The answer of a `validate_only` CreateSandbox: every check made, addresses probed,
    /// nothing kept.
    async fn dry_run_sandbox(
        &self,
        req: &pb::CreateSandboxRequest,
        sandbox: SandboxRecord,
        shared: Option<&SandboxRecord>,
    ) -> Result<pb::Sandbox, GatewayError> {
        let mut endpoints: Vec<EndpointRecord> = Vec::new();
        for a in &req.networks {
            let settings = a.settings.clone().unwrap_or_default();
            let net = self.find("network", &a.network).await?;
            let ep = self
                .probe_endpoint(&sandbox, &endpoints, &net, &settings)
                .await?;
            endpoints.push(ep);
        }
        let shown = match shared {
            Some(t) => self.endpoints(Owner::Sandbox, &t.id).await?,
            None => endpoints,
        };
        let mut answer = crate::to_pb::sandbox_to_pb(&sandbox, &shown);
        answer.created_at = None;
        Ok(answer)
    }

    /// The saga of CreateSandbox: the namespace and files on the agent, every attachment, then
    /// the records and events in one transaction.
    async fn create_sandbox_saga(
        &self,
        req: &pb::CreateSandboxRequest,
        sandbox: SandboxRecord,
    ) -> Result<(SandboxRecord, Vec<EndpointRecord>), GatewayError> {
        let sandbox_op = self
            .begin(&Operation::CreateSandbox {
                sandbox: sandbox.clone(),
            })
            .await?;
        self.fault("create-sandbox:recorded");
        let created = match self.agent_for(&sandbox.host).await {
            Ok(mut agent) => agent
                .create_sandbox(apb::CreateSandboxRequest {
                    sandbox: Some(agent_sandbox(&sandbox, &[])),
                    revision: 0,
                })
                .await
                .map_err(GatewayError::Agent),
            Err(e) => Err(e),
        };
        let created = match created {
            Ok(c) => c.into_inner(),
            Err(e) => {
                self.remove_agent_sandbox(&sandbox).await;
                self.abandon(&sandbox_op).await;
                return Err(e);
            }
        };
        let sandbox = SandboxRecord {
            netns_path: if created.netns_path.is_empty() {
                sandbox.netns_path
            } else {
                created.netns_path
            },
            netns_managed: created.netns_managed,
            resolv_conf_path: created.resolv_conf_path,
            hosts_path: created.hosts_path,
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
        let endpoints: Vec<EndpointRecord> = attached.iter().map(|(e, _, _)| e.clone()).collect();
        if failure.is_none() {
            // Earlier endpoints may have lost the default route (and the ports) to later ones.
            tokio::join!(
                self.reprogram(&sandbox, &[], &endpoints),
                self.write_files(&sandbox, &endpoints)
            );
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
                match self.commit(&changes, None).await {
                    Ok(revision) => {
                        self.sync_dns(&sandbox.host, revision).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
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
        Ok((sandbox, endpoints))
    }

    /// A new endpoint of `sandbox` on `net` as `settings` ask (no addresses yet), checked
    /// against the sandbox's other endpoints.
    fn new_endpoint(
        sandbox: &SandboxRecord,
        existing: &[EndpointRecord],
        net: &NetworkRecord,
        settings: &pb::EndpointSettings,
    ) -> Result<EndpointRecord, GatewayError> {
        if !sandbox.network_mode.is_empty() {
            return Err(GatewayError::Precondition(format!(
                "sandbox {:?} has network_mode {:?}: it cannot be connected to networks",
                sandbox.name, sandbox.network_mode
            )));
        }
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
        let ep = EndpointRecord {
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
        Ok(ep)
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
        let mut ep = Self::new_endpoint(sandbox, existing, &net, settings)?;
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

    /// The endpoint a Connect would make, with the addresses IPAM would give right now (taken
    /// and given back at once): the answer of `validate_only`.
    async fn probe_endpoint(
        &self,
        sandbox: &SandboxRecord,
        existing: &[EndpointRecord],
        net: &NetworkRecord,
        settings: &pb::EndpointSettings,
    ) -> Result<EndpointRecord, GatewayError> {
        let mut ep = Self::new_endpoint(sandbox, existing, net, settings)?;
        let probe = format!("validate-only:{}", ep.id);
        let got = self.allocate(net, settings, &probe, &mut ep).await;
        self.release_owner(&probe).await;
        got?;
        if settings.mac_address.is_empty() {
            ep.mac_address = String::new();
        }
        ep.id = String::new();
        ep.created_at_ms = 0;
        Ok(ep)
    }

    /// Addresses for `ep` from each of the network's pools, held by `owner`; on failure what
    /// was taken is given back.
    async fn allocate(
        &self,
        net: &NetworkRecord,
        settings: &pb::EndpointSettings,
        owner: &str,
        ep: &mut EndpointRecord,
    ) -> Result<(), GatewayError> {
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
                    owner: owner.to_owned(),
                    address: wanted.clone(),
                })
                .await;
            let alloc = match alloc {
                Ok(a) => a.into_inner(),
                Err(st) => {
                    self.release_owner(owner).await;
                    let field = if v6 {
                        "settings.ipv6_address"
                    } else {
                        "settings.ipv4_address"
                    };
                    return Err(GatewayError::Ipam(rename_address_field(st, field, wanted)));
                }
            };
            let gateway = if net.internal {
                String::new()
            } else {
                alloc.gateway
            };
            if v6 && ep.ipv6_address.is_empty() {
                ep.ipv6_address = alloc.cidr;
                ep.ipv6_gateway = gateway;
            } else if !v6 && ep.ipv4_address.is_empty() {
                ep.ipv4_address = alloc.cidr;
                ep.gateway = gateway;
            }
        }
        Ok(())
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
        self.allocate(net, settings, &id, ep).await?;
        self.fault("connect:allocated");
        let mut all = existing.to_vec();
        all.push(ep.clone());
        let attached = match self.agent_for(&sandbox.host).await {
            Ok(mut agent) => agent
                .attach(apb::AttachRequest {
                    endpoint: Some(agent_endpoint(sandbox, &all, ep)),
                    network: Some(agent_network(net)),
                    revision: 0,
                })
                .await
                .map(drop)
                .map_err(GatewayError::Agent),
            Err(e) => Err(e),
        };
        if let Err(e) = attached {
            // The agent may have done part of it: detach (idempotent) before giving back the
            // addresses.
            self.detach_agent(sandbox, ep).await;
            self.release_owner(&id).await;
            return Err(e);
        }
        self.fault("connect:attached");
        Ok(())
    }

    async fn undo_attach(&self, sandbox: &SandboxRecord, ep: &EndpointRecord) {
        self.detach_agent(sandbox, ep).await;
        self.release_owner(&ep.id).await;
    }

    /// Tells the agent again about the endpoints of `after` whose default route or published
    /// ports differ from what they had in `before` (the default route moved).
    async fn reprogram(
        &self,
        sandbox: &SandboxRecord,
        before: &[EndpointRecord],
        after: &[EndpointRecord],
    ) {
        for (i, ep) in after.iter().enumerate() {
            // An endpoint not in `before` was attached knowing the endpoints before it.
            let was = if before.iter().any(|b| b.id == ep.id) {
                role(sandbox, before, ep)
            } else if before.is_empty() {
                role(sandbox, &after[..=i], ep)
            } else {
                role(sandbox, after, ep)
            };
            if was == role(sandbox, after, ep) {
                continue;
            }
            let net = match self.find("network", &ep.network_id).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(endpoint = %ep.id, error = %e, "cannot move the default route");
                    continue;
                }
            };
            let mut agent = self.agent_for_cleanup(&sandbox.host).await;
            if let Err(st) = agent
                .attach(apb::AttachRequest {
                    endpoint: Some(agent_endpoint(sandbox, after, ep)),
                    network: Some(agent_network(&net)),
                    revision: 0,
                })
                .await
            {
                tracing::warn!(endpoint = %ep.id, error = %st.message(), "moving the default route failed; the agent's reconciliation repairs it");
            }
        }
    }

    /// Rewrites the sandbox's resolv.conf and hosts files (its addresses changed).
    async fn write_files(&self, sandbox: &SandboxRecord, endpoints: &[EndpointRecord]) {
        let mut agent = self.agent_for_cleanup(&sandbox.host).await;
        if let Err(st) = agent
            .create_sandbox(apb::CreateSandboxRequest {
                sandbox: Some(agent_sandbox(sandbox, endpoints)),
                revision: 0,
            })
            .await
        {
            tracing::warn!(sandbox = %sandbox.id, error = %st.message(), "rewriting the sandbox's files failed");
        }
    }

    pub(crate) async fn detach_agent(
        &self,
        sandbox: &SandboxRecord,
        ep: &EndpointRecord,
    ) -> Option<tonic::Status> {
        self.agent_for_cleanup(&sandbox.host)
            .await
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
            .agent_for_cleanup(&sandbox.host)
            .await
            .remove_sandbox(apb::RemoveSandboxRequest {
                sandbox_id: sandbox.id.clone(),
                // Only the sandbox's own namespace: a managed one is found by id, and one
                // shared with another sandbox (`container:`) keeps that sandbox's interfaces.
                netns_path: if sandbox.netns_managed
                    || sandbox.network_mode.starts_with("container:")
                {
                    String::new()
                } else {
                    sandbox.netns_path.clone()
                },
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

    /// Connects a sandbox to a network. With `validate_only`, returns the endpoint as it would
    /// be.
    pub async fn connect(&self, req: pb::ConnectRequest) -> Result<pb::Endpoint, GatewayError> {
        let fingerprint = pb::ConnectRequest {
            request_id: String::new(),
            ..req.clone()
        }
        .encode_to_vec();
        if let Some(done) = self
            .replay(&req.request_id, "Connect", &fingerprint)
            .await?
        {
            return Ok(done);
        }
        let settings = req.settings.clone().unwrap_or_default();
        let errs = check_settings("settings.", &settings);
        if !errs.is_empty() {
            return Err(GatewayError::Invalid(errs));
        }
        let sandbox = self.find_sandbox("sandbox", &req.sandbox).await?;
        let existing = self.endpoints(Owner::Sandbox, &sandbox.id).await?;
        if req.validate_only {
            let net = self.find("network", &req.network).await?;
            let ep = self
                .probe_endpoint(&sandbox, &existing, &net, &settings)
                .await?;
            let mut all = existing;
            all.push(ep.clone());
            return Ok(endpoint_view(&ep, &all));
        }
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
        let mut all = existing.clone();
        all.push(ep.clone());
        // The files are rewritten while the commit runs (one round trip fewer); a failed
        // commit puts them back.
        let (committed, ()) = tokio::join!(
            self.commit(&changes, None),
            self.write_files(&sandbox, &all)
        );
        let revision = match committed {
            Ok(r) => r,
            Err(e) => {
                self.undo_attach(&sandbox, &ep).await;
                self.write_files(&sandbox, &existing).await;
                self.abandon(&op).await;
                return Err(e);
            }
        };
        tracing::info!(sandbox = %sandbox.name, network = %ep.network_name, endpoint = %ep.id, "connected");
        tokio::join!(
            self.reprogram(&sandbox, &existing, &all),
            self.sync_dns(&sandbox.host, revision)
        );
        let answer = endpoint_view(&ep, &all);
        self.remember(&req.request_id, "Connect", fingerprint, &answer)
            .await;
        Ok(answer)
    }

    pub async fn disconnect(
        &self,
        req: pb::DisconnectRequest,
    ) -> Result<pb::DisconnectResponse, GatewayError> {
        let fingerprint = pb::DisconnectRequest {
            request_id: String::new(),
            ..req.clone()
        }
        .encode_to_vec();
        if let Some(done) = self
            .replay(&req.request_id, "Disconnect", &fingerprint)
            .await?
        {
            return Ok(done);
        }
        let sandbox = self.find_sandbox("sandbox", &req.sandbox).await?;
        let net = self.find("network", &req.network).await?;
        let before = self.endpoints(Owner::Sandbox, &sandbox.id).await?;
        let ep = before
            .iter()
            .find(|e| e.network_id == net.id)
            .cloned()
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
        let revision = self
            .commit(
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
        let after: Vec<EndpointRecord> = before.iter().filter(|e| e.id != ep.id).cloned().collect();
        tokio::join!(
            self.reprogram(&sandbox, &before, &after),
            self.write_files(&sandbox, &after),
            self.sync_dns(&sandbox.host, revision)
        );
        let answer = pb::DisconnectResponse {
            endpoint_id: ep.id.clone(),
        };
        self.remember(&req.request_id, "Disconnect", fingerprint, &answer)
            .await;
        Ok(answer)
    }

    /// Detaches and releases every endpoint, removes the namespace on the agent, then the
    /// record. Once recorded, the deletion is completed by the sweep if the gateway dies.
    pub async fn delete_sandbox(
        &self,
        req: pb::DeleteSandboxRequest,
    ) -> Result<pb::DeleteSandboxResponse, GatewayError> {
        let fingerprint = pb::DeleteSandboxRequest {
            request_id: String::new(),
            ..req.clone()
        }
        .encode_to_vec();
        if let Some(done) = self
            .replay(&req.request_id, "DeleteSandbox", &fingerprint)
            .await?
        {
            return Ok(done);
        }
        let sandbox = self.find_sandbox("sandbox", &req.sandbox).await?;
        let sharers: Vec<String> = self
            .list_sandboxes()
            .await?
            .into_iter()
            .filter(|s| s.network_mode == format!("container:{}", sandbox.id))
            .map(|s| s.name)
            .collect();
        if !sharers.is_empty() {
            return Err(GatewayError::Precondition(format!(
                "sandbox {:?} shares its namespace with {}: delete them first",
                sandbox.name,
                sharers.join(", ")
            )));
        }
        let endpoints = self.endpoints(Owner::Sandbox, &sandbox.id).await?;
        let op = self
            .begin(&Operation::DeleteSandbox {
                sandbox: sandbox.clone(),
            })
            .await?;
        self.fault("delete-sandbox:recorded");
        for ep in endpoints.iter().rev() {
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
        let answer = pb::DeleteSandboxResponse {
            id: sandbox.id.clone(),
            name: sandbox.name.clone(),
            endpoint_ids: endpoints.into_iter().map(|e| e.id).collect(),
        };
        self.remember(&req.request_id, "DeleteSandbox", fingerprint, &answer)
            .await;
        Ok(answer)
    }

    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        Ok(store::sandboxes::list(&mut conn).await?)
    }

    /// The endpoints a sandbox shows: its own, or for `container:` mode those of the sandbox
    /// whose namespace it shares.
    pub async fn sandbox_endpoints(
        &self,
        s: &SandboxRecord,
    ) -> Result<Vec<EndpointRecord>, GatewayError> {
        let owner = s.network_mode.strip_prefix("container:").unwrap_or(&s.id);
        self.endpoints(Owner::Sandbox, owner).await
    }
}

/// An endpoint as the API shows it, among all of its sandbox's endpoints.
fn endpoint_view(ep: &EndpointRecord, all: &[EndpointRecord]) -> pb::Endpoint {
    let id = |e: Option<&EndpointRecord>| e.map(|e| e.id.clone()).unwrap_or_default();
    let v4 = id(default_route(all, false));
    let v6 = id(default_route(all, true));
    let mut view = crate::to_pb::endpoint_to_pb(ep, Some((&v4, &v6)));
    if ep.id.is_empty() {
        // A validate_only answer: the endpoint would provide the route if nothing else does.
        view.default_route_v4 = port_carrier_is(all, ep, false);
        view.default_route_v6 = port_carrier_is(all, ep, true);
        view.created_at = None;
    }
    view
}

fn port_carrier_is(all: &[EndpointRecord], ep: &EndpointRecord, v6: bool) -> bool {
    default_route(all, v6).is_some_and(|d| d.id == ep.id && d.network_id == ep.network_id)
}

/// Docker's ephemeral range for published ports whose host port is 0.
const EPHEMERAL_FIRST: u32 = 49153;
const EPHEMERAL_LAST: u32 = 60999;

fn protocol_name(p: i32) -> &'static str {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Udp) => "udp",
        Ok(pb::Protocol::Sctp) => "sctp",
        _ => "tcp",
    }
}

/// Whether two published ranges would take the same host port: same protocol, overlapping
/// ports, and host addresses that overlap (a wildcard of a family overlaps every address of
/// it; empty overlaps everything).
fn ports_clash(a: &PortRecord, b: &PortRecord) -> bool {
    let proto = |p: i32| if p == 0 { pb::Protocol::Tcp as i32 } else { p };
    if proto(a.protocol) != proto(b.protocol) {
        return false;
    }
    let (a0, a1) = (a.host_port, a.host_port + a.range.max(1) - 1);
    let (b0, b1) = (b.host_port, b.host_port + b.range.max(1) - 1);
    if a1 < b0 || b1 < a0 {
        return false;
    }
    let family = |ip: &str| -> (Option<bool>, bool) {
        // (is v6, is wildcard)
        match ip {
            "" => (None, true),
            "0.0.0.0" => (Some(false), true),
            "::" => (Some(true), true),
            ip => (Some(ip.contains(':')), false),
        }
    };
    let ((fa, wa), (fb, wb)) = (family(&a.host_ip), family(&b.host_ip));
    match (fa, fb) {
        (Some(x), Some(y)) if x != y => false,
        _ => wa || wb || a.host_ip == b.host_ip,
    }
}

/// Checks published ports (Docker's `-p` rules).
fn check_ports(ports: &[pb::PortMapping]) -> Vec<FieldViolation> {
    let mut errs = Vec::new();
    for (i, p) in ports.iter().enumerate() {
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
    errs
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

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: &str, port: u32, range: u32, proto: pb::Protocol) -> PortRecord {
        PortRecord {
            protocol: proto as i32,
            host_ip: ip.into(),
            host_port: port,
            container_port: 80,
            range,
        }
    }

    #[test]
    fn port_clashes_follow_protocol_range_and_address() {
        use pb::Protocol::{Tcp, Udp};
        assert!(ports_clash(
            &port("", 8080, 1, Tcp),
            &port("", 8080, 1, Tcp)
        ));
        assert!(!ports_clash(
            &port("", 8080, 1, Tcp),
            &port("", 8080, 1, Udp)
        ));
        assert!(ports_clash(
            &port("", 8000, 10, Tcp),
            &port("", 8009, 1, Tcp)
        ));
        assert!(!ports_clash(
            &port("", 8000, 10, Tcp),
            &port("", 8010, 1, Tcp)
        ));
        assert!(ports_clash(
            &port("0.0.0.0", 80, 1, Tcp),
            &port("127.0.0.1", 80, 1, Tcp)
        ));
        assert!(!ports_clash(
            &port("::", 80, 1, Tcp),
            &port("127.0.0.1", 80, 1, Tcp)
        ));
        assert!(!ports_clash(
            &port("127.0.0.1", 80, 1, Tcp),
            &port("127.0.0.2", 80, 1, Tcp)
        ));
        assert!(ports_clash(&port("", 80, 1, Tcp), &port("::1", 80, 1, Tcp)));
    }
}
