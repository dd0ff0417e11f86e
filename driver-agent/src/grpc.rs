//! The gRPC edge of `weft.agent.v1.AgentService`: requests become domain types (bad input is
//! `INVALID_ARGUMENT` naming the field and the value), results become messages.

use std::{path::PathBuf, sync::Arc};

use tonic::{Request, Response, Status};
use weft_proto::agent::v1::{self as pb, agent_service_server::AgentService};
use weft_runtime::{
    access::{Role, Rule},
    size,
};

use crate::{
    agent::{Agent, DefaultRoutes},
    capabilities, driver,
    error::AgentError,
    names,
    report::{self, Report},
    sandbox::{self, Sandbox},
    spec::{self, Endpoint, Network, Violations},
};

/// Who may call the agent: the gateway alone (by its certificate), for every method; and the
/// largest request each takes where not the default (`weft_runtime::size` has the numbers).
/// Checked when the agent serves TLS; a method missing here keeps the server from starting.
pub const RULES: &[Rule] = &[
    Rule::only(
        "/weft.agent.v1.AgentService/GetCapabilities",
        GATEWAY,
        false,
    ),
    Rule::only("/weft.agent.v1.AgentService/EnsureNetwork", GATEWAY, true),
    Rule::only("/weft.agent.v1.AgentService/RemoveNetwork", GATEWAY, true),
    Rule::only("/weft.agent.v1.AgentService/CreateSandbox", GATEWAY, true)
        .max_message(size::SANDBOX),
    Rule::only("/weft.agent.v1.AgentService/RemoveSandbox", GATEWAY, true),
    Rule::only("/weft.agent.v1.AgentService/Attach", GATEWAY, true),
    Rule::only("/weft.agent.v1.AgentService/Detach", GATEWAY, true),
    Rule::only("/weft.agent.v1.AgentService/ApplyState", GATEWAY, true)
        .max_message(size::DESIRED_STATE),
];

const GATEWAY: &[Role] = &[Role::Gateway];

/// The tonic service for `agent`, taking requests as large as [`RULES`] allow.
pub fn server(agent: Arc<Agent>) -> pb::agent_service_server::AgentServiceServer<AgentGrpc> {
    use pb::agent_service_server::AgentServiceServer;
    weft_runtime::grpc::limit_requests(
        AgentServiceServer::new(AgentGrpc { agent }),
        RULES,
        AgentServiceServer::max_decoding_message_size,
    )
}

#[derive(Debug, Clone)]
pub struct AgentGrpc {
    agent: Arc<Agent>,
}

fn kind(k: report::Kind) -> pb::ObjectKind {
    match k {
        report::Kind::Netns => pb::ObjectKind::Netns,
        report::Kind::Link => pb::ObjectKind::Link,
        report::Kind::Address => pb::ObjectKind::Address,
        report::Kind::Route => pb::ObjectKind::Route,
        report::Kind::Neighbour => pb::ObjectKind::Neighbour,
        report::Kind::FdbEntry => pb::ObjectKind::FdbEntry,
        report::Kind::File => pb::ObjectKind::File,
        report::Kind::NftTable => pb::ObjectKind::NftTable,
        report::Kind::NftRule => pb::ObjectKind::NftRule,
        report::Kind::Sysctl => pb::ObjectKind::Sysctl,
    }
}

fn changes(r: &Report) -> Vec<pb::Change> {
    r.changes
        .iter()
        .map(|c| pb::Change {
            action: match c.action {
                report::Action::Created => pb::ChangeAction::Created,
                report::Action::Updated => pb::ChangeAction::Updated,
                report::Action::Removed => pb::ChangeAction::Removed,
            } as i32,
            kind: kind(c.kind) as i32,
            object: c.object.clone(),
            owner_id: c.owner.clone(),
            detail: c.detail.clone(),
        })
        .collect()
}

fn failures(r: &Report) -> Vec<pb::Failure> {
    r.failures
        .iter()
        .map(|f| pb::Failure {
            kind: kind(f.kind) as i32,
            object: f.object.clone(),
            owner_id: f.owner.clone(),
            error: f.error.clone(),
        })
        .collect()
}

/// What `GetCapabilities` answers (and what the agent registers with the gateway).
pub async fn capabilities_pb(agent: &crate::Agent) -> Result<pb::Capabilities, AgentError> {
    let addresses = agent
        .underlay_addresses()
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    let (ipv4_forwarding, ipv6_forwarding) = capabilities::forwarding(agent.host_netns()).await;
    let c = agent.capabilities();
    let f = &c.features;
    Ok(pb::Capabilities {
        hostname: c.hostname.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release: c.kernel_release.clone(),
        drivers: driver::usable(f).into_iter().map(str::to_owned).collect(),
        features: Some(pb::KernelFeatures {
            bridge: f.bridge,
            veth: f.veth,
            vxlan: f.vxlan,
            macvlan: f.macvlan,
            ipvlan: f.ipvlan,
            vlan: f.vlan,
            ipv6: f.ipv6,
            nftables: f.nftables,
            nftables_nat: f.nftables_nat,
            netns: f.netns,
            ipsec: c.ipsec.usable(),
            ipsec_missing: c.ipsec.missing.clone(),
        }),
        ipv4_forwarding,
        ipv6_forwarding,
        addresses,
    })
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, AgentError> {
    v.ok_or_else(|| {
        AgentError::Invalid(vec![weft_runtime::FieldViolation::new(
            field,
            "",
            "must be set",
        )])
    })
}

fn check_ids(ids: &[(&str, &str)]) -> Result<(), AgentError> {
    let mut v = Violations::default();
    for (field, id) in ids {
        spec::check_id(&mut v, field, id);
    }
    v.finish(()).map_err(AgentError::Invalid)
}

fn routes_ids(r: DefaultRoutes) -> (String, String) {
    (r.v4.unwrap_or_default(), r.v6.unwrap_or_default())
}

/// The most endpoints one CreateSandbox attaches.
pub const MAX_ATTACHMENTS: usize = 64;

/// A CreateSandbox's initial endpoints, checked: each valid, of this sandbox, in its
/// namespace (an empty `netns_path`: whichever it gets), with its network.
fn attachments(
    sb: &Sandbox,
    raw: Vec<pb::AttachRequest>,
) -> Result<Vec<(Endpoint, Network)>, AgentError> {
    if raw.len() > MAX_ATTACHMENTS {
        return Err(AgentError::Invalid(vec![
            weft_runtime::FieldViolation::new(
                "attachments",
                raw.len().to_string(),
                format!("at most {MAX_ATTACHMENTS} endpoints per sandbox creation"),
            ),
        ]));
    }
    let own_path = match &sb.netns {
        sandbox::SandboxNetns::Given(p) => Some(p.clone()),
        sandbox::SandboxNetns::Managed => Some(crate::netns::named_path(
            &sandbox::managed_netns_name(&sb.id),
        )),
        sandbox::SandboxNetns::Host => None,
    };
    let mut v = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, a) in raw.into_iter().enumerate() {
        let prefix = format!("attachments[{i}]");
        let (ep, net) = match (a.endpoint, a.network) {
            (Some(e), Some(n)) => (e, n),
            (e, _) => {
                let missing = if e.is_none() { "endpoint" } else { "network" };
                v.push(weft_runtime::FieldViolation::new(
                    format!("{prefix}.{missing}"),
                    "",
                    "must be set",
                ));
                continue;
            }
        };
        let ep = Endpoint::from_pb_in_sandbox(ep, &format!("{prefix}.endpoint"));
        let net = Network::from_pb(net, &format!("{prefix}.network"));
        let (ep, net) = match (ep, net) {
            (Ok(e), Ok(n)) => (e, n),
            (e, n) => {
                v.extend(e.err().into_iter().chain(n.err()).flatten());
                continue;
            }
        };
        if ep.sandbox_id != sb.id {
            v.push(weft_runtime::FieldViolation::new(
                format!("{prefix}.endpoint.sandbox_id"),
                &ep.sandbox_id,
                format!("differs from sandbox.sandbox_id {:?}", sb.id),
            ));
        }
        match &own_path {
            None => v.push(weft_runtime::FieldViolation::new(
                format!("{prefix}.endpoint.netns_path"),
                ep.netns.display().to_string(),
                "a host-network sandbox has no endpoints of its own",
            )),
            Some(p) if !ep.netns.as_os_str().is_empty() && ep.netns != *p => {
                v.push(weft_runtime::FieldViolation::new(
                    format!("{prefix}.endpoint.netns_path"),
                    ep.netns.display().to_string(),
                    format!("not the sandbox's namespace {}", p.display()),
                ));
            }
            Some(_) => {}
        }
        if ep.network_id != net.id {
            v.push(weft_runtime::FieldViolation::new(
                format!("{prefix}.endpoint.network_id"),
                &ep.network_id,
                format!("differs from {prefix}.network.network_id {:?}", net.id),
            ));
        }
        out.push((ep, net));
    }
    if v.is_empty() {
        Ok(out)
    } else {
        Err(AgentError::Invalid(v))
    }
}

/// The files a Detach rewrites, checked: they belong to the sandbox the request names.
fn detach_files(sandbox_id: &str, f: pb::SandboxSpec) -> Result<Sandbox, AgentError> {
    let mut v = Violations::default();
    sandbox::check_sandbox_id(&mut v, "files.sandbox_id", &f.sandbox_id);
    if f.sandbox_id != sandbox_id {
        v.add(
            "files.sandbox_id",
            &f.sandbox_id,
            &format!("differs from sandbox_id {sandbox_id:?}"),
        );
    }
    v.finish(()).map_err(AgentError::Invalid)?;
    // Only the id and the contents matter here; the namespace is not touched.
    Sandbox::from_pb(pb::SandboxSpec {
        netns_path: String::new(),
        host_network: false,
        ..f
    })
    .map_err(|v| {
        AgentError::Invalid(
            v.into_iter()
                .map(|f| {
                    weft_runtime::FieldViolation::new(
                        format!("files.{}", f.field),
                        f.value,
                        f.reason,
                    )
                })
                .collect(),
        )
    })
}

/// What an Attach answers: the interface made (none for drivers without one) and where the
/// sandbox's default routes go.
fn attach_response(
    ep: &Endpoint,
    done: Option<(crate::driver::Attached, DefaultRoutes)>,
    changes: Vec<pb::Change>,
) -> pb::AttachResponse {
    let (interface, routes) = match done {
        Some((a, routes)) => (
            Some(pb::Interface {
                endpoint_id: ep.id.clone(),
                name: a.ifname,
                mac_address: names::format_mac(&a.mac),
                index: a.index,
                mtu: a.mtu,
                addresses: a.addresses.iter().map(ToString::to_string).collect(),
            }),
            routes,
        ),
        None => (None, DefaultRoutes::default()),
    };
    let (v4, v6) = routes_ids(routes);
    pb::AttachResponse {
        interface,
        default_route_v4_endpoint_id: v4,
        default_route_v6_endpoint_id: v6,
        changes,
    }
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn get_capabilities(
        &self,
        _req: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::Capabilities>, Status> {
        Ok(Response::new(capabilities_pb(&self.agent).await?))
    }

    async fn ensure_network(
        &self,
        req: Request<pb::EnsureNetworkRequest>,
    ) -> Result<Response<pb::EnsureNetworkResponse>, Status> {
        let r = req.into_inner();
        let net = Network::from_pb(required(r.network, "network")?, "network")
            .map_err(AgentError::Invalid)?;
        let mut report = Report::default();
        self.agent.recent.touch(&net.id, true);
        let state = self.agent.ensure_network(&net, &mut report).await?;
        Ok(Response::new(pb::EnsureNetworkResponse {
            network: Some(pb::NetworkState {
                network_id: net.id.clone(),
                devices: state.devices,
                mtu: state.mtu,
            }),
            changes: changes(&report),
        }))
    }

    async fn remove_network(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let r = req.into_inner();
        check_ids(&[("network_id", &r.network_id)])?;
        self.agent.recent.touch(&r.network_id, false);
        let report = self.agent.remove_network(&r.network_id).await;
        Ok(Response::new(pb::RemoveNetworkResponse {
            changes: changes(&report),
            failures: failures(&report),
        }))
    }

    async fn create_sandbox(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::CreateSandboxResponse>, Status> {
        let r = req.into_inner();
        let sb = Sandbox::from_pb(required(r.sandbox, "sandbox")?).map_err(AgentError::Invalid)?;
        let mut attachments = attachments(&sb, r.attachments)?;
        let mut report = Report::default();
        self.agent.recent.touch(&sb.id, true);
        for (ep, net) in &attachments {
            self.agent.recent.touch(&ep.id, true);
            self.agent.recent.touch(&net.id, true);
        }
        let (state, attached) = self
            .agent
            .create_sandbox_attached(&sb, &mut attachments, &mut report)
            .await?;
        Ok(Response::new(pb::CreateSandboxResponse {
            sandbox_id: sb.id,
            netns_path: state.netns_path.display().to_string(),
            netns_managed: state.managed,
            resolv_conf_path: state.resolv_conf.display().to_string(),
            hosts_path: state.hosts.display().to_string(),
            changes: changes(&report),
            attached: attachments
                .iter()
                .zip(attached)
                .map(|((ep, _), done)| attach_response(ep, done, Vec::new()))
                .collect(),
        }))
    }

    async fn remove_sandbox(
        &self,
        req: Request<pb::RemoveSandboxRequest>,
    ) -> Result<Response<pb::RemoveSandboxResponse>, Status> {
        let r = req.into_inner();
        let mut v = Violations::default();
        sandbox::check_sandbox_id(&mut v, "sandbox_id", &r.sandbox_id);
        v.finish(()).map_err(AgentError::Invalid)?;
        self.agent.recent.touch(&r.sandbox_id, false);
        let report = self
            .agent
            .remove_sandbox(&r.sandbox_id, &PathBuf::from(&r.netns_path))
            .await?;
        Ok(Response::new(pb::RemoveSandboxResponse {
            changes: changes(&report),
            failures: failures(&report),
        }))
    }

    async fn attach(
        &self,
        req: Request<pb::AttachRequest>,
    ) -> Result<Response<pb::AttachResponse>, Status> {
        let r = req.into_inner();
        let ep = required(r.endpoint, "endpoint")?;
        let net = required(r.network, "network")?;
        let (ep, net) = match (
            Endpoint::from_pb(ep, "endpoint"),
            Network::from_pb(net, "network"),
        ) {
            (Ok(e), Ok(n)) => (e, n),
            (e, n) => {
                let v = e.err().into_iter().chain(n.err()).flatten().collect();
                return Err(AgentError::Invalid(v).into());
            }
        };
        let mut report = Report::default();
        self.agent.recent.touch(&ep.id, true);
        self.agent.recent.touch(&ep.sandbox_id, true);
        self.agent.recent.touch(&net.id, true);
        let done = self.agent.attach(&ep, &net, &mut report).await?;
        Ok(Response::new(attach_response(&ep, done, changes(&report))))
    }

    async fn detach(
        &self,
        req: Request<pb::DetachRequest>,
    ) -> Result<Response<pb::DetachResponse>, Status> {
        let r = req.into_inner();
        check_ids(&[("endpoint_id", &r.endpoint_id)])?;
        if !r.network_id.is_empty() {
            check_ids(&[("network_id", &r.network_id)])?;
        }
        let files = r
            .files
            .map(|f| detach_files(&r.sandbox_id, f))
            .transpose()?;
        self.agent.recent.touch(&r.endpoint_id, false);
        let (routes, mut report) = self
            .agent
            .detach(&r.endpoint_id, &PathBuf::from(&r.netns_path))
            .await?;
        if let Some(f) = &files {
            self.agent
                .write_files(&f.id, &f.resolv_conf, &f.hosts, &mut report)?;
        }
        if !r.network_id.is_empty() {
            self.agent
                .remove_network_if_idle(&r.network_id, &mut report)
                .await;
        }
        let (v4, v6) = routes_ids(routes);
        Ok(Response::new(pb::DetachResponse {
            default_route_v4_endpoint_id: v4,
            default_route_v6_endpoint_id: v6,
            changes: changes(&report),
            failures: failures(&report),
            files_written: files.is_some(),
        }))
    }

    async fn apply_state(
        &self,
        req: Request<pb::ApplyStateRequest>,
    ) -> Result<Response<pb::ApplyStateResponse>, Status> {
        let r = req.into_inner();
        let state = required(r.state, "state")?;
        if let Some(host) = self.agent.host_name.get()
            && *host != state.host
        {
            return Err(AgentError::Invalid(vec![weft_runtime::FieldViolation::new(
                "state.host",
                &state.host,
                format!("this agent is host {host:?}"),
            )])
            .into());
        }
        let report = self.agent.apply_state(&state, r.dry_run).await;
        Ok(Response::new(pb::ApplyStateResponse {
            revision: state.revision,
            changes: changes(&report),
            failures: failures(&report),
        }))
    }
}
