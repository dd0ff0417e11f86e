//! The bridge driver: one Linux bridge per network in the managed namespace, one veth pair per
//! endpoint with its container end in the sandbox. Everything through rtnetlink. Needs bridges
//! and veth pairs from the kernel; the network's firewall rules match on its bridge. The
//! overlay driver builds on the same bridge and veths ([`ensure_bridge`], [`attach_veth`]).

use std::os::fd::AsRawFd as _;

use nix::libc;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    packet_route::link::{InfoData, InfoKind, InfoVeth},
};

use super::{
    api::{Attached, NetworkDriver, NetworkSetup, NetworkState, SandboxNs, need},
    in_sandbox,
};
use crate::{
    capabilities::Features,
    error::{AgentError, errno},
    kernel::{self, Link},
    names,
    report::{Action, Kind, Report},
    spec::{Driver, Endpoint, Network},
};

#[derive(Debug, Clone, Copy)]
pub struct Bridge;

#[async_trait::async_trait]
impl NetworkDriver for Bridge {
    fn kind(&self) -> Driver {
        Driver::Bridge
    }

    fn require(&self, _net: &Network, kernel: &Features) -> Result<(), AgentError> {
        need(self.kind(), kernel.bridge, "Linux bridges")?;
        need(self.kind(), kernel.veth, "veth pairs")
    }

    fn usable(&self, kernel: &Features) -> bool {
        kernel.bridge && kernel.veth
    }

    fn host_device(&self) -> bool {
        true
    }

    fn attaches(&self) -> bool {
        true
    }

    async fn ensure_network(
        &self,
        host: &Handle,
        net: &Network,
        report: &mut Report,
    ) -> Result<NetworkSetup, AgentError> {
        let br = ensure_bridge(host, net, net.bridge_mtu(), report).await?;
        Ok(NetworkSetup {
            state: NetworkState {
                devices: vec![br.name.clone()],
                mtu: br.mtu,
            },
            device: Some(br),
        })
    }

    async fn undo_network(&self, host: &Handle, setup: &NetworkSetup) {
        if let Some(br) = &setup.device {
            undo_network(host, br).await;
        }
    }

    async fn remove_network(&self, host: &Handle, network_id: &str, report: &mut Report) {
        remove_network(host, network_id, report).await;
    }

    async fn attach(
        &self,
        host: &Handle,
        sandbox: SandboxNs<'_>,
        setup: &NetworkSetup,
        net: &Network,
        ep: &Endpoint,
        report: &mut Report,
    ) -> Result<Attached, AgentError> {
        let br = setup.device.as_ref().ok_or_else(|| AgentError::Vanished {
            name: net.bridge.clone(),
        })?;
        match &ep.handoff {
            Some(name) => attach_handoff(host, br, ep, name, net.bridge_mtu(), report).await,
            None => attach_veth(host, sandbox, br, ep, net.bridge_mtu(), report).await,
        }
    }

    /// The host end is enough: the peer goes with it, wherever it is.
    async fn detach(
        &self,
        host: &Handle,
        sandbox: Option<&Handle>,
        endpoint_id: &str,
        report: &mut Report,
    ) {
        detach(host, sandbox, endpoint_id, report).await;
    }
}

/// Derived bridge names carry this prefix; such a bridge without an alias is one the agent
/// created but could not mark (it stopped in between), so it is adopted rather than refused.
const DERIVED_BRIDGE_PREFIX: &str = "wft-";

/// Creates or updates the network's bridge: alias, MTU, gateway addresses, up.
pub(super) async fn ensure_bridge(
    host: &Handle,
    net: &Network,
    mtu: u32,
    report: &mut Report,
) -> Result<Link, AgentError> {
    let alias = names::network_alias(&net.id);
    let mut created = false;
    let mut bridge = match kernel::link_by_name(host, &net.bridge).await? {
        Some(l) => l,
        None => {
            match host
                .link()
                .add(LinkBridge::new(&net.bridge).mtu(mtu).build())
                .execute()
                .await
            {
                Ok(()) => {
                    tracing::info!(bridge = %net.bridge, network = %net.id, "bridge created");
                    report.change(Action::Created, Kind::Link, &net.bridge, &net.id);
                    created = true;
                }
                // Someone created it meanwhile: the ownership check below decides.
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(AgentError::netlink("create bridge", &net.bridge)(e)),
            }
            kernel::link_by_name(host, &net.bridge)
                .await?
                .ok_or_else(|| AgentError::Vanished {
                    name: net.bridge.clone(),
                })?
        }
    };
    // The alias is set in a second request (the kernel does not apply it at creation), so an
    // unmarked bridge is ours when this call made it, or when it has a derived name.
    let unmarked_ours =
        bridge.alias.is_empty() && (created || net.bridge.starts_with(DERIVED_BRIDGE_PREFIX));
    if bridge.kind != Some(InfoKind::Bridge) || (bridge.alias != alias && !unmarked_ours) {
        return Err(AgentError::NotOurs {
            name: bridge.name,
            alias: bridge.alias,
        });
    }
    if bridge.alias != alias || !bridge.up {
        kernel::set_alias_up(host, &bridge, &alias).await?;
        bridge.alias = alias;
        bridge.up = true;
    }
    if bridge.mtu != mtu {
        kernel::set_mtu(host, &bridge, mtu).await?;
        report.changes.push(crate::report::Change {
            action: Action::Updated,
            kind: Kind::Link,
            object: net.bridge.clone(),
            owner: net.id.clone(),
            detail: format!("mtu {} -> {mtu}", bridge.mtu),
        });
        bridge.mtu = mtu;
    }
    for gw in &net.gateways {
        if kernel::add_address(host, bridge.index, &bridge.name, *gw).await? {
            report.change(
                Action::Created,
                Kind::Address,
                format!("{gw} dev {}", bridge.name),
                &net.id,
            );
        }
    }
    Ok(bridge)
}

/// Removes a bridge this request created, unless an endpoint joined it meanwhile.
pub(super) async fn undo_network(host: &Handle, br: &Link) {
    match kernel::links(host).await {
        Ok(all) if !all.iter().any(|l| l.controller == Some(br.index)) => {
            if let Err(e) = kernel::delete_link(host, br).await {
                tracing::warn!(bridge = %br.name, error = %e, "cannot undo a failed attach");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(bridge = %br.name, error = %e, "cannot undo a failed attach"),
    }
}

/// Removes the network's bridges (found by alias) and the endpoint veths still enslaved to
/// them; keeps going past failures.
async fn remove_network(host: &Handle, network_id: &str, report: &mut Report) {
    let all = match kernel::links(host).await {
        Ok(l) => l,
        Err(e) => {
            report.fail(Kind::Link, "links", network_id, &e);
            return;
        }
    };
    let alias = names::network_alias(network_id);
    for bridge in all.iter().filter(|l| l.alias == alias) {
        let ports = all.iter().filter(|l| {
            l.controller == Some(bridge.index) && names::endpoint_of_alias(&l.alias).is_some()
        });
        for port in ports {
            delete(host, port, network_id, report).await;
        }
        delete(host, bridge, network_id, report).await;
    }
}

pub(super) async fn delete(host: &Handle, link: &Link, owner: &str, report: &mut Report) {
    match kernel::delete_link(host, link).await {
        Ok(true) => {
            tracing::info!(link = %link.name, owner, "link removed");
            report.change(Action::Removed, Kind::Link, &link.name, owner);
        }
        Ok(false) => {}
        Err(e) => report.fail(Kind::Link, &link.name, owner, &e),
    }
}

/// Creates (or completes) the endpoint's veth pair: host end in the bridge, container end in
/// the sandbox with its name, MAC, addresses and routes, both ends with `mtu`. On failure a
/// veth created by this call is removed again.
pub(super) async fn attach_veth(
    host: &Handle,
    sandbox: SandboxNs<'_>,
    bridge: &Link,
    ep: &Endpoint,
    mtu: u32,
    report: &mut Report,
) -> Result<Attached, AgentError> {
    let host_name = names::veth_host_name(&ep.id);
    let alias = names::endpoint_alias(&ep.id);

    // In a namespace this call made there is nothing to look for first: the veth is made at
    // once, and looked for only when its name turns out to be taken (a retry after a crash).
    let made_at_once = sandbox.fresh
        && match create_veth(host, sandbox.file, bridge, ep, &host_name, mtu).await {
            Ok(()) => true,
            Err(e) if errno(&e) == Some(libc::EEXIST) => false,
            Err(e) => return Err(AgentError::netlink("create veth", &host_name)(e)),
        };
    let created = if made_at_once {
        veth_created(&host_name, ep, bridge, report);
        true
    } else {
        existing_or_new(host, sandbox, bridge, ep, (&host_name, &alias), mtu, report).await?
    };
    let res = async {
        if created {
            kernel::set_port_alias_up(host, &host_name, &alias).await?;
        }
        in_sandbox::configure(sandbox, ep, mtu, created, report).await
    }
    .await;
    if res.is_err() && created {
        if let Ok(Some(l)) = kernel::link_by_name(host, &host_name).await
            && let Err(e) = kernel::delete_link(host, &l).await
        {
            tracing::warn!(veth = %host_name, error = %e, "cannot undo a failed attach");
        }
        report.changes.clear();
    }
    res
}

/// The endpoint's veth for a runtime that moves the container end itself
/// ([`weft_proto::HANDOFF_OPTION`]): host end in the bridge, the peer born in the host's
/// namespace as `peer_name` with the endpoint's MAC and MTU, down, without address or route.
/// Once the host end exists the peer is wherever the runtime put it (inside the container,
/// named by the runtime): the agent only keeps the host end in the bridge and up. The overlay
/// driver uses it too (its bridge carries the VXLAN device).
pub(super) async fn attach_handoff(
    host: &Handle,
    bridge: &Link,
    ep: &Endpoint,
    peer_name: &str,
    mtu: u32,
    report: &mut Report,
) -> Result<Attached, AgentError> {
    let host_name = names::veth_host_name(&ep.id);
    let alias = names::endpoint_alias(&ep.id);
    let created = match kernel::link_by_name(host, &host_name).await? {
        // Unmarked too (an attach killed before it marked it): its peer may be in the
        // container already, so it is kept, and marked below.
        Some(l) => {
            reuse_host_end(host, l, &alias, bridge).await?;
            false
        }
        None => {
            if let Some(l) = kernel::link_by_name(host, peer_name).await? {
                return Err(AgentError::NotOurs {
                    name: l.name,
                    alias: l.alias,
                });
            }
            let peer = LinkUnspec::new_with_name(peer_name)
                .address(ep.mac.to_vec())
                .mtu(mtu)
                .build();
            let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(&host_name)
                .mtu(mtu)
                .controller(bridge.index)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            host.link()
                .add(msg)
                .execute()
                .await
                .map_err(AgentError::netlink("create veth", &host_name))?;
            veth_created(&host_name, ep, bridge, report);
            true
        }
    };
    kernel::set_port_alias_up(host, &host_name, &alias).await?;
    Ok(Attached {
        ifname: peer_name.to_owned(),
        index: 0,
        mac: ep.mac,
        mtu,
        addresses: ep.addresses(),
        created,
    })
}

fn veth_created(host_name: &str, ep: &Endpoint, bridge: &Link, report: &mut Report) {
    tracing::info!(veth = %host_name, endpoint = %ep.id, bridge = %bridge.name, "veth created");
    report.change(Action::Created, Kind::Link, host_name, &ep.id);
}

/// The endpoint's veth as found (it must be Weft's, for this endpoint: then it is put back in
/// the bridge and up), or made when absent (the name in the sandbox must not be someone
/// else's). Returns whether it was made.
async fn existing_or_new(
    host: &Handle,
    sandbox: SandboxNs<'_>,
    bridge: &Link,
    ep: &Endpoint,
    (host_name, alias): (&str, &str),
    mtu: u32,
    report: &mut Report,
) -> Result<bool, AgentError> {
    let found = match kernel::link_by_name(host, host_name).await? {
        // Made by an attach killed before it marked it: half made, this endpoint's by its
        // name; made again (its end in the sandbox goes with it).
        Some(l) if l.alias.is_empty() && names::is_veth_host_name(&l.name) => {
            kernel::delete_link(host, &l).await?;
            None
        }
        other => other,
    };
    Ok(match found {
        Some(l) => {
            reuse_host_end(host, l, alias, bridge).await?;
            false
        }
        None => {
            if let Some(l) = kernel::link_by_name(sandbox.handle, &ep.ifname).await?
                && l.alias != alias
            {
                return Err(AgentError::NotOurs {
                    name: format!("{} (in the sandbox)", l.name),
                    alias: l.alias,
                });
            }
            create_veth(host, sandbox.file, bridge, ep, host_name, mtu)
                .await
                .map_err(AgentError::netlink("create veth", host_name))?;
            veth_created(host_name, ep, bridge, report);
            true
        }
    })
}

/// An endpoint's host end found in the host: refused when it is another's (its alias names
/// something else); else (marked as this endpoint's, or unmarked with a name of ours) put back
/// in the bridge and up where it is not.
async fn reuse_host_end(
    host: &Handle,
    l: Link,
    alias: &str,
    bridge: &Link,
) -> Result<(), AgentError> {
    if l.alias != alias && !(l.alias.is_empty() && names::is_veth_host_name(&l.name)) {
        return Err(AgentError::NotOurs {
            name: l.name,
            alias: l.alias,
        });
    }
    if l.controller != Some(bridge.index) || !l.up {
        enslave_up(host, &l, bridge).await?;
    }
    Ok(())
}

pub(super) async fn enslave_up(
    host: &Handle,
    link: &Link,
    bridge: &Link,
) -> Result<(), AgentError> {
    host.link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .controller(bridge.index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(AgentError::netlink("enslave", &link.name))
}

/// One netlink request creates both ends: the peer is born inside the sandbox with its final
/// name and MAC (no rename, no move, no window where it sits in the host).
async fn create_veth(
    host: &Handle,
    ns: &std::fs::File,
    bridge: &Link,
    ep: &Endpoint,
    host_name: &str,
    mtu: u32,
) -> Result<(), rtnetlink::Error> {
    let peer = LinkUnspec::new_with_name(&ep.ifname)
        .address(ep.mac.to_vec())
        .mtu(mtu)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_name)
        .mtu(mtu)
        .controller(bridge.index)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    // (`ns` is borrowed: it stays open until the kernel has answered.)
    crate::metrics::timed("veth_create", host.link().add(msg).execute()).await
}

/// Removes the endpoint's host-side veth (its peer goes with it, wherever it is); the sandbox
/// namespace is not needed, so this works after it is gone. Absent: nothing to do.
async fn detach(host: &Handle, sandbox: Option<&Handle>, endpoint_id: &str, report: &mut Report) {
    let name = names::veth_host_name(endpoint_id);
    match kernel::link_by_name(host, &name).await {
        Ok(Some(l)) if l.alias == names::endpoint_alias(endpoint_id) && report.defer_unlink => {
            // Out of the bridge and down, and its peer down in the sandbox (which takes the
            // peer's addresses and routes with it): nothing passes, the sandbox's routes are
            // final; the caller removes the pair later.
            let inert = async {
                kernel::set_nocontroller_down(host, &l).await?;
                if let Some(sb) = sandbox {
                    let alias = names::endpoint_alias(endpoint_id);
                    for peer in kernel::links(sb).await? {
                        if peer.alias == alias {
                            kernel::set_nocontroller_down(sb, &peer).await?;
                        }
                    }
                }
                Ok::<_, AgentError>(())
            };
            match inert.await {
                Ok(()) => {
                    report.change(Action::Removed, Kind::Link, &l.name, endpoint_id);
                    report.doomed.push(crate::unlink::Doomed {
                        index: l.index,
                        name: l.name,
                        endpoint_id: endpoint_id.to_owned(),
                    });
                }
                Err(e) => report.fail(Kind::Link, &name, endpoint_id, &e),
            }
        }
        Ok(Some(l)) if l.alias == names::endpoint_alias(endpoint_id) => {
            delete(host, &l, endpoint_id, report).await;
        }
        Ok(Some(l)) => report.fail(
            Kind::Link,
            &name,
            endpoint_id,
            &AgentError::NotOurs {
                name: l.name,
                alias: l.alias,
            },
        ),
        Ok(None) => {}
        Err(e) => report.fail(Kind::Link, &name, endpoint_id, &e),
    }
}
