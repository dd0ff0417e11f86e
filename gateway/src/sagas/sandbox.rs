//! CreateSandbox and DeleteSandbox.
//!
//! CreateSandbox: the spec (already validated) is placed (its host, the sandbox whose
//! namespace it shares, its free name, `host-gateway`, its host ports), then the saga runs
//! under one operation record: the addresses of every initial endpoint, then one call to the
//! host's agent (the namespace, every endpoint, the files), then the sandbox, its endpoints
//! and their events in one transaction; any failure undoes all of it. DeleteSandbox removes
//! the namespace (or detaches each endpoint from a namespace Weft did not make), then gives
//! the addresses back while the records go; once recorded, it is completed by the sweep if
//! the gateway dies.

use futures::future::join_all;
use weft_runtime::FieldViolation;

use crate::{
    domain::{
        endpoint::{EndpointRecord, EndpointSpec},
        network::NetworkRecord,
        sandbox::{
            AttachmentSpec, HostAddress, NetworkMode, SandboxRecord, SandboxSpec, default_hostname,
            default_name,
        },
    },
    engine::{Change, Gateway, Remember, RequestKey, new_id},
    error::GatewayError,
    sagas::connect::new_endpoint,
    steps::Steps,
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
    /// Creates a sandbox and connects it to its initial networks, all or nothing; the answer
    /// is remembered with `remember` in the transaction that records the sandbox (a retry
    /// after a crash gets it). With `validate_only`, returns the sandbox as it would be
    /// (endpoints with the addresses that would be picked), nothing kept.
    pub async fn create_sandbox(
        &self,
        spec: SandboxSpec,
        validate_only: bool,
        remember: Option<Remember<'_, SandboxView>>,
    ) -> Result<SandboxView, GatewayError> {
        if validate_only {
            let placed = self.place_sandbox(&spec).await?;
            return self.dry_run_sandbox(&spec.networks, placed).await;
        }
        let mut steps = Steps::start();
        // (Independent reads, side by side.)
        let (placed, networks) = tokio::join!(
            self.place_sandbox(&spec),
            join_all(
                spec.networks
                    .iter()
                    .map(|a| self.find("network", &a.network))
            )
        );
        let placed = placed?;
        let networks = networks.into_iter().collect::<Result<Vec<_>, _>>()?;
        steps.mark("place");
        let mut sandbox = placed.sandbox;
        sandbox.id = new_id();
        if sandbox.name.is_empty() {
            sandbox.name = default_name(&sandbox.id);
        }
        if sandbox.hostname.is_empty() {
            sandbox.hostname = default_hostname(&sandbox.container_id, &sandbox.id);
        }
        sandbox.created_at_ms = self.clock.now_ms();
        // A sandbox sharing another's namespace shows that one's endpoints.
        let shared = match &placed.shared {
            Some(t) => Some(self.endpoints(Owner::Sandbox, &t.id).await?),
            None => None,
        };
        let answer = Answer { remember, shared };
        let (sandbox, endpoints) = self
            .create_sandbox_saga(&spec.networks, networks, sandbox, steps, &answer)
            .await?;
        Ok(answer.view(sandbox, endpoints))
    }

    /// What depends on the state: the host, the sandbox a `container:` sandbox shares, a free
    /// name, `host-gateway`'s address, free host ports.
    async fn place_sandbox(&self, spec: &SandboxSpec) -> Result<Placed, GatewayError> {
        let (host, shared, name_free) = tokio::join!(
            self.place(&spec.host),
            self.shared_namespace(&spec.network_mode),
            self.sandbox_name_free(&spec.name)
        );
        let shared = shared?;
        let (host, shared) = match (host, shared) {
            (Ok(h), Ok(s)) => (h, s),
            (h, s) => {
                let errs = [h.err(), s.err()].into_iter().flatten().collect();
                return Err(GatewayError::Invalid(errs));
            }
        };
        name_free?;
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

    /// The saga of CreateSandbox, under one operation record: every endpoint planned (network,
    /// id, interface, MAC), the record written, the addresses taken (side by side), then one
    /// agent call makes the namespace, attaches every endpoint and writes the files, and one
    /// transaction records the sandbox, its endpoints and their events. On any failure, all of
    /// it is undone; a gateway killed half-way leaves the record, and the sweep undoes it.
    async fn create_sandbox_saga(
        &self,
        attachments: &[AttachmentSpec],
        networks: Vec<NetworkRecord>,
        mut sandbox: SandboxRecord,
        mut steps: Steps,
        answer: &Answer<'_>,
    ) -> Result<(SandboxRecord, Vec<EndpointRecord>), GatewayError> {
        let mut planned = plan(&sandbox, attachments, networks)?;
        let endpoints: Vec<EndpointRecord> = planned.iter().map(|p| p.ep.clone()).collect();
        steps.mark("plan");
        // The record and the addresses side by side: an address taken when the record is not
        // written (the gateway killed in between, or the write failed) is owned by no endpoint
        // and no operation, and the sweep releases it once older than the operation timeout.
        let record = Operation::CreateSandbox {
            sandbox: sandbox.clone(),
            endpoints: endpoints.clone(),
        };
        let begin = async {
            let op = self.begin(&record).await;
            if op.is_ok() {
                self.fault("create-sandbox:recorded");
            }
            op
        };
        let (op, allocated) = tokio::join!(begin, self.allocate_all(&mut planned));
        let op = match op {
            Ok(op) => op,
            Err(e) => {
                join_all(endpoints.iter().map(|e| self.release_owner(&e.id))).await;
                return Err(e);
            }
        };
        steps.mark("begin+allocate");
        let mut agent_called = false;
        match self
            .create_steps(
                &mut sandbox,
                allocated,
                &planned,
                (&op, answer),
                &mut agent_called,
                &mut steps,
            )
            .await
        {
            Ok(endpoints) => {
                tracing::info!(
                    sandbox = %sandbox.name,
                    id = %sandbox.id,
                    networks = endpoints.len(),
                    total_us = steps.total_us(),
                    steps = %steps,
                    "sandbox created"
                );
                Ok((sandbox, endpoints))
            }
            Err(e) => {
                if agent_called {
                    self.undo_create(&sandbox, &endpoints).await;
                } else {
                    join_all(endpoints.iter().map(|e| self.release_owner(&e.id))).await;
                }
                self.abandon(&op).await;
                Err(e)
            }
        }
    }

    /// Addresses for every planned endpoint, side by side; the first failure.
    async fn allocate_all(&self, planned: &mut [Planned<'_>]) -> Result<(), GatewayError> {
        join_all(planned.iter_mut().map(|p| {
            let owner = p.ep.id.clone();
            async move { self.allocate(&p.net, p.settings, &owner, &mut p.ep).await }
        }))
        .await
        .into_iter()
        .collect()
    }

    /// The steps of `create_sandbox_saga` once its record is written (and the addresses
    /// taken, or `allocated` says why not); `sandbox` gets what the agent made (namespace
    /// path, files), which the undo needs too.
    async fn create_steps(
        &self,
        sandbox: &mut SandboxRecord,
        allocated: Result<(), GatewayError>,
        planned: &[Planned<'_>],
        (op, answer): (&str, &Answer<'_>),
        agent_called: &mut bool,
        steps: &mut Steps,
    ) -> Result<Vec<EndpointRecord>, GatewayError> {
        allocated?;
        self.fault("create-sandbox:allocated");
        *agent_called = true;
        let endpoints: Vec<EndpointRecord> = planned.iter().map(|p| p.ep.clone()).collect();
        let networks: Vec<&NetworkRecord> = planned.iter().map(|p| &p.net).collect();
        *sandbox = self
            .create_on_agent(sandbox.clone(), &endpoints, &networks)
            .await?;
        self.fault("create-sandbox:attached");
        steps.mark("agent");
        let mut changes = vec![Change::InsertSandbox(sandbox)];
        changes.extend(endpoints.iter().map(Change::InsertEndpoint));
        changes.push(Change::EndOperation(op));
        let revision = self
            .commit(&changes, answer.request(sandbox, &endpoints))
            .await?;
        self.fault("create-sandbox:committed");
        steps.mark("commit");
        // The host's dns-svc is given the chance to catch up (the sandbox's listener).
        self.sync_dns(&sandbox.host, revision).await;
        steps.mark("dns");
        Ok(endpoints)
    }

    /// Undoes a sandbox's creation wherever it stopped (inline, or by the sweep from its
    /// record): the agent's side first, then the addresses (none is given back while an
    /// interface may still use it). A namespace the agent made goes whole with its interfaces;
    /// in any other, each endpoint is detached first. Every step is idempotent.
    pub(crate) async fn undo_create(&self, sandbox: &SandboxRecord, endpoints: &[EndpointRecord]) {
        if !sandbox.removal_takes_interfaces() {
            for ep in endpoints.iter().rev() {
                self.detach_agent(sandbox, ep).await;
            }
        }
        self.remove_agent_sandbox(sandbox).await;
        join_all(endpoints.iter().map(|e| self.release_owner(&e.id))).await;
    }

    /// Deletes a sandbox: detaches every endpoint, removes the namespace on the agent, then
    /// gives the addresses back while the records go (one transaction). A namespace Weft made
    /// goes whole, its veths with it, instead of detaching its endpoints one by one. Returns
    /// the sandbox and the endpoints removed with it. Once recorded, the sweep completes it if
    /// the gateway dies.
    /// The answer is remembered with `remember` in the transaction that removes the records.
    pub async fn delete_sandbox(
        &self,
        key: &str,
        remember: Option<Remember<'_, (SandboxRecord, Vec<EndpointRecord>)>>,
    ) -> Result<(SandboxRecord, Vec<EndpointRecord>), GatewayError> {
        let sandbox = self.find_sandbox("sandbox", key).await?;
        self.delete_found_sandbox(sandbox, true, remember).await
    }

    /// [`Gateway::delete_sandbox`] of a sandbox found; `reach_agent` false: the host is gone,
    /// its agent is not asked (only the records and the addresses go).
    pub(crate) async fn delete_found_sandbox(
        &self,
        sandbox: SandboxRecord,
        reach_agent: bool,
        remember: Option<Remember<'_, (SandboxRecord, Vec<EndpointRecord>)>>,
    ) -> Result<(SandboxRecord, Vec<EndpointRecord>), GatewayError> {
        let mut steps = Steps::start();
        let (sharers, endpoints) = {
            let mut conn = self.db.read().acquire().await?;
            let sharers = store::sandboxes::sharing(&mut conn, &sandbox.id).await?;
            let endpoints =
                store::sandboxes::endpoints_of(&mut conn, Owner::Sandbox, &sandbox.id).await?;
            (sharers, endpoints)
        };
        if !sharers.is_empty() {
            return Err(GatewayError::Precondition(format!(
                "sandbox {:?} shares its namespace with {}: delete them first",
                sandbox.name,
                sharers.join(", ")
            )));
        }
        steps.mark("read");
        let op = self
            .begin(&Operation::DeleteSandbox {
                sandbox: sandbox.clone(),
            })
            .await?;
        self.fault("delete-sandbox:recorded");
        steps.mark("begin");
        if reach_agent && !sandbox.removal_takes_interfaces() {
            for ep in endpoints.iter().rev() {
                self.detach_agent(&sandbox, ep).await;
            }
        }
        self.fault("delete-sandbox:detached");
        if reach_agent {
            self.remove_agent_sandbox(&sandbox).await;
        }
        self.fault("delete-sandbox:agent-removed");
        steps.mark("agent");
        // Nothing uses the addresses any more: they go back while the records go. Killed in
        // between, the record of the operation (still there) has the sweep finish it, or (gone
        // with the records) the addresses no endpoint owns are released by the sweep.
        let mut changes: Vec<Change<'_>> =
            endpoints.iter().rev().map(Change::DeleteEndpoint).collect();
        changes.push(Change::DeleteSandbox(&sandbox));
        changes.push(Change::EndOperation(&op));
        let release = async {
            join_all(endpoints.iter().map(|e| self.release_owner(&e.id))).await;
            self.fault("delete-sandbox:released");
        };
        let request = remember.map(|r| (r.key, (r.answer)(&(sandbox.clone(), endpoints.clone()))));
        let commit = async {
            let revision = self.commit(&changes, request).await?;
            self.fault("delete-sandbox:committed");
            Ok::<_, GatewayError>(revision)
        };
        let ((), committed) = tokio::join!(release, commit);
        committed?;
        steps.mark("release+commit");
        tracing::info!(
            sandbox = %sandbox.name,
            id = %sandbox.id,
            total_us = steps.total_us(),
            steps = %steps,
            "sandbox removed"
        );
        Ok((sandbox, endpoints))
    }
}

/// How a CreateSandbox answers: the request to remember with the sandbox's record, and the
/// endpoints of the sandbox whose namespace it shares (shown as its own).
struct Answer<'a> {
    remember: Option<Remember<'a, SandboxView>>,
    shared: Option<Vec<EndpointRecord>>,
}

impl Answer<'_> {
    fn view(&self, sandbox: SandboxRecord, endpoints: Vec<EndpointRecord>) -> SandboxView {
        SandboxView {
            sandbox,
            endpoints: self.shared.clone().unwrap_or(endpoints),
        }
    }

    /// The request id and its encoded answer, to record with the sandbox.
    fn request(
        &self,
        sandbox: &SandboxRecord,
        endpoints: &[EndpointRecord],
    ) -> Option<(&RequestKey, Vec<u8>)> {
        let r = self.remember.as_ref()?;
        let view = self.view(sandbox.clone(), endpoints.to_vec());
        Some((r.key, (r.answer)(&view)))
    }
}

/// Every initial endpoint of a new sandbox (on `networks`, in the order of `attachments`):
/// id, interface and MAC chosen, each checked against those before it.
fn plan<'a>(
    sandbox: &SandboxRecord,
    attachments: &'a [AttachmentSpec],
    networks: Vec<NetworkRecord>,
) -> Result<Vec<Planned<'a>>, GatewayError> {
    let mut planned: Vec<Planned<'a>> = Vec::with_capacity(attachments.len());
    for (a, net) in attachments.iter().zip(networks) {
        let existing: Vec<EndpointRecord> = planned.iter().map(|p| p.ep.clone()).collect();
        // A millisecond apart, in the order asked for: endpoints are listed by creation time
        // (then id), and a sandbox's networks keep the order they were given in.
        let at = sandbox.created_at_ms + i64::try_from(existing.len()).unwrap_or(i64::MAX);
        let ep = new_endpoint(sandbox, &existing, &net, &a.settings, at)?;
        planned.push(Planned {
            ep,
            net,
            settings: &a.settings,
        });
    }
    Ok(planned)
}

/// One initial endpoint of a new sandbox, as planned before anything is done.
struct Planned<'a> {
    ep: EndpointRecord,
    net: NetworkRecord,
    settings: &'a EndpointSpec,
}
