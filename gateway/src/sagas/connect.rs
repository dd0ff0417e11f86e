//! Connect and Disconnect.
//!
//! Connect is a saga: addresses from IPAM (owner = the endpoint id), then the host's agent
//! attaches the endpoint, then the endpoint is recorded with its event. A failed step undoes
//! the earlier ones (detach, release by owner) and the caller gets the error of the step that
//! failed. Disconnect runs the other way: the agent (which rewrites the files in the same
//! call), then IPAM and the record side by side.

use crate::{
    domain::{
        endpoint::{ConnectSpec, EndpointRecord, EndpointSpec, mac_for, next_interface},
        network::NetworkRecord,
        sandbox::SandboxRecord,
    },
    engine::{Change, Gateway, Remember, new_id},
    error::GatewayError,
    steps::Steps,
    store::{operations::Operation, sandboxes::Owner},
};

impl Gateway {
    /// Connects a sandbox to a network; returns the new endpoint among all of the sandbox's
    /// endpoints (remembered with `remember`'s answer in the transaction that records the
    /// endpoint, so that a retry after a crash gets it). With `validate_only`, the endpoint as
    /// it would be (addresses as IPAM would give them now, no id), nothing kept.
    pub async fn connect(
        &self,
        spec: ConnectSpec,
        validate_only: bool,
        remember: Option<Remember<'_, (EndpointRecord, Vec<EndpointRecord>)>>,
    ) -> Result<(EndpointRecord, Vec<EndpointRecord>), GatewayError> {
        let sandbox = self.find_sandbox("sandbox", &spec.sandbox).await?;
        let existing = self.endpoints(Owner::Sandbox, &sandbox.id).await?;
        if validate_only {
            let net = self.find("network", &spec.network).await?;
            let ep = self
                .probe_endpoint(&sandbox, &existing, &net, &spec.settings)
                .await?;
            let mut all = existing;
            all.push(ep.clone());
            return Ok((ep, all));
        }
        let (ep, op) = self
            .attach(&sandbox, &existing, &spec.network, &spec.settings)
            .await?;
        let mut all = existing.clone();
        all.push(ep.clone());
        // The files are rewritten while the commit runs (one round trip fewer); a failed
        // commit puts them back.
        let changes = [Change::InsertEndpoint(&ep), Change::EndOperation(&op)];
        let request = remember.map(|r| (r.key, (r.answer)(&(ep.clone(), all.clone()))));
        let (committed, ()) = tokio::join!(
            self.commit(&changes, request),
            self.write_files(&sandbox, &all)
        );
        let revision = match committed {
            Ok(r) => {
                self.fault("connect:committed");
                r
            }
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
        Ok((ep, all))
    }

    /// IPAM then agent for one endpoint of `sandbox` on `network`, recorded as an operation in
    /// flight (whose id is returned) but not yet as an endpoint. On failure, what was done is
    /// undone.
    pub(crate) async fn attach(
        &self,
        sandbox: &SandboxRecord,
        existing: &[EndpointRecord],
        network: &str,
        settings: &EndpointSpec,
    ) -> Result<(EndpointRecord, String), GatewayError> {
        let net = self.find("network", network).await?;
        let now = self.clock.now_ms();
        let mut ep = new_endpoint(sandbox, existing, &net, settings, now)?;
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
            Ok(()) => Ok((ep, op)),
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
        settings: &EndpointSpec,
        ep: &mut EndpointRecord,
    ) -> Result<(), GatewayError> {
        let id = ep.id.clone();
        self.allocate(net, settings, &id, ep).await?;
        self.fault("connect:allocated");
        let mut all = existing.to_vec();
        all.push(ep.clone());
        if let Err(e) = self.attach_agent(sandbox, &all, ep, net).await {
            // The agent may have done part of it: detach (idempotent) before giving back the
            // addresses.
            self.undo_attach(sandbox, ep).await;
            return Err(e);
        }
        self.fault("connect:attached");
        Ok(())
    }

    /// Detaches on the agent and gives the addresses back.
    pub(crate) async fn undo_attach(&self, sandbox: &SandboxRecord, ep: &EndpointRecord) {
        self.detach_agent(sandbox, ep).await;
        self.release_owner(&ep.id).await;
    }

    /// The endpoint a Connect would make, with the addresses IPAM would give right now (taken
    /// and given back at once): the answer of `validate_only`.
    pub(crate) async fn probe_endpoint(
        &self,
        sandbox: &SandboxRecord,
        existing: &[EndpointRecord],
        net: &NetworkRecord,
        settings: &EndpointSpec,
    ) -> Result<EndpointRecord, GatewayError> {
        let mut ep = new_endpoint(sandbox, existing, net, settings, 0)?;
        let probe = format!("validate-only:{}", ep.id);
        let got = self.allocate(net, settings, &probe, &mut ep).await;
        self.release_owner(&probe).await;
        got?;
        if settings.mac_address.is_empty() {
            ep.mac_address = String::new();
        }
        ep.id = String::new();
        Ok(ep)
    }

    /// Disconnects a sandbox from a network; returns the removed endpoint. Without `force`, an
    /// agent that cannot detach stops it (the endpoint stays, as the kernel may still have it).
    /// The agent rewrites the sandbox's files in the same call; the address goes back while
    /// the record goes.
    /// The answer is remembered with `remember` in the transaction that removes the record.
    pub async fn disconnect(
        &self,
        sandbox: &str,
        network: &str,
        force: bool,
        remember: Option<Remember<'_, EndpointRecord>>,
    ) -> Result<EndpointRecord, GatewayError> {
        let mut steps = Steps::start();
        let sandbox = self.find_sandbox("sandbox", sandbox).await?;
        let net = self.find("network", network).await?;
        let before = self.endpoints(Owner::Sandbox, &sandbox.id).await?;
        let ep = before
            .iter()
            .find(|e| e.network_id == net.id)
            .cloned()
            .ok_or_else(|| GatewayError::NotConnected {
                sandbox: sandbox.name.clone(),
                network: net.name.clone(),
            })?;
        steps.mark("read");
        let op = self
            .begin(&Operation::Disconnect {
                sandbox: sandbox.clone(),
                endpoint: ep.clone(),
            })
            .await?;
        self.fault("disconnect:recorded");
        steps.mark("begin");
        let after: Vec<EndpointRecord> = before.iter().filter(|e| e.id != ep.id).cloned().collect();
        match self.detach_with_files(&sandbox, &ep, &after).await {
            Err(st) if !force => {
                self.abandon(&op).await;
                return Err(GatewayError::agent(&sandbox.host)(st));
            }
            Err(_) => self.write_files(&sandbox, &after).await,
            Ok(true) => {}
            // An agent that does not write files with a detach.
            Ok(false) => self.write_files(&sandbox, &after).await,
        }
        self.fault("disconnect:detached");
        steps.mark("agent");
        // Nothing uses the address any more: it goes back while the record goes (killed in
        // between, the sweep finishes the operation, or releases the address no endpoint owns).
        let changes = [Change::DeleteEndpoint(&ep), Change::EndOperation(&op)];
        let release = async {
            self.release_owner(&ep.id).await;
            self.fault("disconnect:released");
        };
        let request = remember.map(|r| (r.key, (r.answer)(&ep)));
        let ((), committed) = tokio::join!(release, self.commit(&changes, request));
        let revision = committed?;
        self.fault("disconnect:committed");
        steps.mark("release+commit");
        tokio::join!(
            self.reprogram(&sandbox, &before, &after),
            self.sync_dns(&sandbox.host, revision)
        );
        steps.mark("dns");
        tracing::info!(
            sandbox = %sandbox.name,
            network = %ep.network_name,
            endpoint = %ep.id,
            total_us = steps.total_us(),
            steps = %steps,
            "disconnected"
        );
        Ok(ep)
    }
}

/// A new endpoint of `sandbox` on `net` as `settings` ask (no addresses yet), checked against
/// the sandbox's other endpoints.
pub(crate) fn new_endpoint(
    sandbox: &SandboxRecord,
    existing: &[EndpointRecord],
    net: &NetworkRecord,
    settings: &EndpointSpec,
    now_ms: i64,
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
    let interface_name = if settings.interface_name.is_empty() {
        next_interface(existing)
    } else {
        settings.interface_name.clone()
    };
    if existing.iter().any(|e| e.interface_name == interface_name) {
        return Err(GatewayError::invalid(
            "settings.interface_name",
            &interface_name,
            "already used in this sandbox",
        ));
    }
    Ok(EndpointRecord {
        network_id: net.id.clone(),
        network_name: net.name.clone(),
        sandbox_id: sandbox.id.clone(),
        sandbox_name: sandbox.name.clone(),
        host: sandbox.host.clone(),
        interface_name,
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
        driver_options: settings.driver_options.clone(),
        internal: net.internal,
        created_at_ms: now_ms,
        host_interface: if weft_runtime::names::driver_has_host_veth(&net.driver) {
            weft_runtime::names::veth_host_name(&id)
        } else {
            String::new()
        },
        id,
        host_down: false,
        global: net.scope == "global",
    })
}
