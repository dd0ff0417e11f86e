//! Connect and Disconnect.
//!
//! Connect is a saga: addresses from IPAM (owner = the endpoint id), then the host's agent
//! attaches the endpoint, then the endpoint is recorded with its event. A failed step undoes
//! the earlier ones (detach, release by owner) and the caller gets the error of the step that
//! failed. Disconnect runs the other way: agent, IPAM, then the record.

use std::net::IpAddr;

use prost::Message as _;
use weft_proto::{agent::v1 as apb, gateway::v1 as pb};
use weft_runtime::FieldViolation;

use crate::{
    desired::{agent_endpoint, agent_network},
    domain::{
        network::NetworkRecord,
        sandbox::{
            EndpointRecord, SandboxRecord, check_alias, check_interface, check_mac, default_route,
            mac_for, next_interface,
        },
    },
    engine::{Change, Gateway, new_id, now_ms},
    error::GatewayError,
    store::{operations::Operation, sandboxes::Owner},
};

pub(crate) fn parse_ip(field: &str, value: &str, errs: &mut Vec<FieldViolation>) -> Option<IpAddr> {
    match value.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            errs.push(FieldViolation::new(field, value, "not an IP address"));
            None
        }
    }
}

/// Checks the settings of one attachment; `prefix` is the field path of the settings.
pub(crate) fn check_settings(prefix: &str, s: &pb::EndpointSettings) -> Vec<FieldViolation> {
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
    pub(crate) async fn attach(
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
    pub(crate) async fn probe_endpoint(
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

    pub(crate) async fn undo_attach(&self, sandbox: &SandboxRecord, ep: &EndpointRecord) {
        self.detach_agent(sandbox, ep).await;
        self.release_owner(&ep.id).await;
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
