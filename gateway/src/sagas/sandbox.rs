//! CreateSandbox and DeleteSandbox.
//!
//! CreateSandbox is a saga: the namespace and files on the host's agent, then every initial
//! attachment (as Connect does it), then the sandbox, its endpoints and their events in one
//! transaction; any failure undoes all of it. DeleteSandbox detaches and releases every
//! endpoint, removes the namespace, then the record; once recorded, it is completed by the
//! sweep if the gateway dies.

use std::net::IpAddr;

use prost::Message as _;
use weft_proto::{agent::v1 as apb, gateway::v1 as pb};
use weft_runtime::FieldViolation;

use crate::{
    desired::agent_sandbox,
    domain::{
        network::{NetworkRecord, check_name},
        sandbox::{DnsRecord, EndpointRecord, PortRecord, SandboxRecord, check_alias},
    },
    engine::{Change, Gateway, new_id, now_ms},
    error::GatewayError,
    sagas::{
        connect::{check_settings, parse_ip},
        ports::check_ports,
    },
    store::{self, operations::Operation, sandboxes::Owner},
};

impl Gateway {
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
