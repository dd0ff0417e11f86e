//! CreateSandbox and DeleteSandbox.
//!
//! CreateSandbox: the spec (already validated) is placed (its host, the sandbox whose
//! namespace it shares, its free name, `host-gateway`, its host ports), then the saga runs:
//! the namespace and files on the host's agent, every initial attachment (as Connect does it),
//! then the sandbox, its endpoints and their events in one transaction; any failure undoes all
//! of it. DeleteSandbox detaches and releases every endpoint, removes the namespace, then the
//! record; once recorded, it is completed by the sweep if the gateway dies.

use weft_runtime::FieldViolation;

use crate::{
    domain::{
        endpoint::EndpointRecord,
        sandbox::{
            AttachmentSpec, HostAddress, NetworkMode, SandboxRecord, SandboxSpec, default_hostname,
            default_name,
        },
    },
    engine::{Change, Gateway, new_id},
    error::GatewayError,
    store::{self, operations::Operation, sandboxes::Owner},
};

/// A sandbox as it will be created (no id yet), with the sandbox whose namespace it shares.
struct Placed {
    sandbox: SandboxRecord,
    shared: Option<SandboxRecord>,
}

/// A sandbox and the endpoints it shows (for `container:` mode, the shared sandbox's).
#[derive(Debug, Clone)]
pub struct SandboxView {
    pub sandbox: SandboxRecord,
    pub endpoints: Vec<EndpointRecord>,
}

impl Gateway {
    /// Creates a sandbox and connects it to its initial networks, all or nothing. With
    /// `validate_only`, returns the sandbox as it would be (endpoints with the addresses that
    /// would be picked), nothing kept.
    pub async fn create_sandbox(
        &self,
        spec: SandboxSpec,
        validate_only: bool,
    ) -> Result<SandboxView, GatewayError> {
        let placed = self.place_sandbox(&spec).await?;
        if validate_only {
            return self.dry_run_sandbox(&spec.networks, placed).await;
        }
        let mut sandbox = placed.sandbox;
        sandbox.id = new_id();
        if sandbox.name.is_empty() {
            sandbox.name = default_name(&sandbox.id);
        }
        if sandbox.hostname.is_empty() {
            sandbox.hostname = default_hostname(&sandbox.container_id, &sandbox.id);
        }
        sandbox.created_at_ms = self.clock.now_ms();
        let (sandbox, endpoints) = self.create_sandbox_saga(&spec.networks, sandbox).await?;
        let endpoints = match &placed.shared {
            Some(t) => self.endpoints(Owner::Sandbox, &t.id).await?,
            None => endpoints,
        };
        Ok(SandboxView { sandbox, endpoints })
    }

    /// What depends on the state: the host, the sandbox a `container:` sandbox shares, a free
    /// name, `host-gateway`'s address, free host ports.
    async fn place_sandbox(&self, spec: &SandboxSpec) -> Result<Placed, GatewayError> {
        let host = self.place(&spec.host).await;
        let shared = self.shared_namespace(&spec.network_mode).await?;
        let (host, shared) = match (host, shared) {
            (Ok(h), Ok(s)) => (h, s),
            (h, s) => {
                let errs = [h.err(), s.err()].into_iter().flatten().collect();
                return Err(GatewayError::Invalid(errs));
            }
        };
        self.sandbox_name_free(&spec.name).await?;
        let mut extra_hosts = Vec::new();
        for (name, address) in &spec.extra_hosts {
            let address = match address {
                HostAddress::Ip(ip) => ip.to_string(),
                HostAddress::HostGateway => self.host_gateway().await?,
            };
            extra_hosts.push((name.clone(), address));
        }
        let mut port_mappings = spec.ports.clone();
        self.assign_ports(&host, &mut port_mappings).await?;
        let (netns_path, network_mode) = match &shared {
            Some(t) => (t.netns_path.clone(), format!("container:{}", t.id)),
            None => (spec.netns_path.clone(), spec.network_mode_text.clone()),
        };
        let sandbox = SandboxRecord {
            id: String::new(),
            name: spec.name.clone(),
            container_id: spec.container_id.clone(),
            host,
            netns_path,
            hostname: spec.hostname.clone(),
            dns: spec.dns.clone(),
            extra_hosts,
            port_mappings,
            network_mode,
            labels: spec.labels.clone(),
            created_at_ms: 0,
            netns_managed: false,
            resolv_conf_path: String::new(),
            hosts_path: String::new(),
        };
        Ok(Placed { sandbox, shared })
    }

    /// The sandbox whose namespace a `container:` sandbox joins; it must have one of its own.
    async fn shared_namespace(
        &self,
        mode: &NetworkMode,
    ) -> Result<Result<Option<SandboxRecord>, FieldViolation>, GatewayError> {
        let NetworkMode::Container(target) = mode else {
            return Ok(Ok(None));
        };
        let text = format!("container:{target}");
        match self.find_sandbox("network_mode", target).await {
            Ok(t) if t.network_mode.starts_with("container:") => Ok(Err(FieldViolation::new(
                "network_mode",
                text,
                format!(
                    "sandbox {:?} itself shares another sandbox's namespace",
                    t.name
                ),
            ))),
            Ok(t) => Ok(Ok(Some(t))),
            Err(GatewayError::SandboxNotFound(_)) => Ok(Err(FieldViolation::new(
                "network_mode",
                text,
                "no such sandbox to share the namespace of",
            ))),
            Err(GatewayError::Invalid(mut v)) if v.len() == 1 => Ok(Err(v.remove(0))),
            Err(e) => Err(e),
        }
    }

    async fn sandbox_name_free(&self, name: &str) -> Result<(), GatewayError> {
        if name.is_empty() {
            return Ok(());
        }
        let mut conn = self.db.read().acquire().await?;
        let found = store::sandboxes::find(&mut conn, name).await?;
        if found.iter().any(|s| s.name == name) {
            return Err(GatewayError::SandboxNameTaken(name.to_owned()));
        }
        Ok(())
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

    /// The answer of a `validate_only` CreateSandbox: every check made, addresses probed,
    /// nothing kept.
    async fn dry_run_sandbox(
        &self,
        attachments: &[AttachmentSpec],
        placed: Placed,
    ) -> Result<SandboxView, GatewayError> {
        let mut endpoints: Vec<EndpointRecord> = Vec::new();
        for a in attachments {
            let net = self.find("network", &a.network).await?;
            let ep = self
                .probe_endpoint(&placed.sandbox, &endpoints, &net, &a.settings)
                .await?;
            endpoints.push(ep);
        }
        let endpoints = match &placed.shared {
            Some(t) => self.endpoints(Owner::Sandbox, &t.id).await?,
            None => endpoints,
        };
        Ok(SandboxView {
            sandbox: placed.sandbox,
            endpoints,
        })
    }

    /// The saga of CreateSandbox: the namespace and files on the agent, every attachment, then
    /// the records and events in one transaction; on any failure, all of it undone.
    async fn create_sandbox_saga(
        &self,
        attachments: &[AttachmentSpec],
        sandbox: SandboxRecord,
    ) -> Result<(SandboxRecord, Vec<EndpointRecord>), GatewayError> {
        let sandbox_op = self
            .begin(&Operation::CreateSandbox {
                sandbox: sandbox.clone(),
            })
            .await?;
        self.fault("create-sandbox:recorded");
        let sandbox = match self.create_on_agent(sandbox.clone()).await {
            Ok(s) => s,
            Err(e) => {
                self.remove_agent_sandbox(&sandbox).await;
                self.abandon(&sandbox_op).await;
                return Err(e);
            }
        };
        let mut attached: Vec<(EndpointRecord, String)> = Vec::new();
        let result = match self.attach_all(&sandbox, attachments, &mut attached).await {
            // The files and the earlier endpoints' default routes are no part of the records:
            // they are written on the agent while the records are committed.
            Ok(()) => {
                let endpoints: Vec<EndpointRecord> =
                    attached.iter().map(|(e, _)| e.clone()).collect();
                let ((), committed) = tokio::join!(
                    self.finish_on_agent(&sandbox, &endpoints),
                    self.commit_sandbox(&sandbox, &attached, &sandbox_op)
                );
                committed
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            for (ep, op) in attached.iter().rev() {
                self.undo_attach(&sandbox, ep).await;
                self.abandon(op).await;
            }
            self.remove_agent_sandbox(&sandbox).await;
            self.abandon(&sandbox_op).await;
            return Err(e);
        }
        tracing::info!(sandbox = %sandbox.name, id = %sandbox.id, networks = attached.len(), "sandbox created");
        let endpoints = attached.into_iter().map(|(e, _)| e).collect();
        Ok((sandbox, endpoints))
    }

    /// Attaches every initial network in order; `attached` holds what was done (endpoint and
    /// operation id) so that a failure can be undone.
    async fn attach_all(
        &self,
        sandbox: &SandboxRecord,
        attachments: &[AttachmentSpec],
        attached: &mut Vec<(EndpointRecord, String)>,
    ) -> Result<(), GatewayError> {
        for a in attachments {
            let existing: Vec<EndpointRecord> = attached.iter().map(|(e, _)| e.clone()).collect();
            let done = self
                .attach(sandbox, &existing, &a.network, &a.settings)
                .await?;
            attached.push(done);
        }
        Ok(())
    }

    /// Once every endpoint is attached: the earlier endpoints learn whether later ones took the
    /// default route (and the ports), and the files list every address.
    async fn finish_on_agent(&self, sandbox: &SandboxRecord, endpoints: &[EndpointRecord]) {
        tokio::join!(
            self.reprogram(sandbox, &[], endpoints),
            self.write_files(sandbox, endpoints)
        );
    }

    /// The sandbox, its endpoints and their events in one transaction, every operation record
    /// ended; then the host's dns-svc is given the chance to catch up.
    async fn commit_sandbox(
        &self,
        sandbox: &SandboxRecord,
        attached: &[(EndpointRecord, String)],
        sandbox_op: &str,
    ) -> Result<(), GatewayError> {
        let mut changes = vec![Change::InsertSandbox(sandbox)];
        for (e, op) in attached {
            changes.push(Change::InsertEndpoint(e));
            changes.push(Change::EndOperation(op));
        }
        changes.push(Change::EndOperation(sandbox_op));
        let revision = self.commit(&changes, None).await?;
        self.sync_dns(&sandbox.host, revision).await;
        Ok(())
    }

    /// Deletes a sandbox: detaches and releases every endpoint, removes the namespace on the
    /// agent, then the record. A namespace the agent made is removed first and whole instead
    /// of detaching its endpoints one by one. Returns the sandbox and the endpoints removed with it.
    pub async fn delete_sandbox(
        &self,
        key: &str,
    ) -> Result<(SandboxRecord, Vec<EndpointRecord>), GatewayError> {
        let sandbox = self.find_sandbox("sandbox", key).await?;
        let sharers = {
            let mut conn = self.db.read().acquire().await?;
            store::sandboxes::sharing(&mut conn, &sandbox.id).await?
        };
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
        // A namespace Weft made goes whole, its veths with it (one call, before any address is
        // given back); otherwise each endpoint is detached, then the sandbox removed.
        let whole = sandbox.removal_takes_interfaces();
        if whole {
            self.remove_agent_sandbox(&sandbox).await;
        }
        for ep in endpoints.iter().rev() {
            if !whole {
                self.detach_agent(&sandbox, ep).await;
            }
            self.fault("delete-sandbox:detached");
            self.release_owner(&ep.id).await;
            self.fault("delete-sandbox:released");
            self.commit(&[Change::DeleteEndpoint(ep)], None).await?;
        }
        self.fault("delete-sandbox:endpoints-removed");
        if !whole {
            self.remove_agent_sandbox(&sandbox).await;
        }
        self.fault("delete-sandbox:agent-removed");
        self.commit(
            &[Change::DeleteSandbox(&sandbox), Change::EndOperation(&op)],
            None,
        )
        .await?;
        tracing::info!(sandbox = %sandbox.name, id = %sandbox.id, "sandbox removed");
        Ok((sandbox, endpoints))
    }
}
