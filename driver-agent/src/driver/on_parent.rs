//! A device on a parent, born in the sandbox: the path macvlan and ipvlan share.
//!
//! The endpoint's device is made on the network's parent (a link of the managed namespace) by
//! one RTM_NEWLINK that also names the sandbox's namespace (`IFLA_NET_NS_FD`), so it never
//! exists on the host; then it gets the endpoint's addresses and routes (`in_sandbox.rs`).
//! Nothing of the network is on the host: no bridge, no firewall rules, no sysctls. Removal
//! finds the device in the sandbox by its alias and kind; without the sandbox's namespace, it
//! went with it. Each driver gives only its kernel message ([`Child`]).

use std::os::fd::{AsRawFd as _, RawFd};

use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        link::{InfoKind, LinkMessage},
    },
};

use super::{api::Attached, api::SandboxNs, in_sandbox};
use crate::{
    error::AgentError,
    kernel::{self, Link},
    names,
    report::{Action, Kind, Report},
    spec::{Endpoint, Network},
};

/// What differs between the drivers that share this path.
#[derive(Debug)]
pub(super) struct Child {
    /// The device's kind: removal deletes only devices of this kind (every driver is asked to
    /// detach every endpoint, and another driver's interface is not this one's to remove).
    pub kind: InfoKind,
    /// The operation named in errors ("create macvlan").
    pub create: &'static str,
    /// The RTM_NEWLINK message making `ep`'s device of `net` on the parent with this index,
    /// born in the namespace open as this descriptor.
    pub message: fn(&Network, &Endpoint, u32, RawFd) -> LinkMessage,
}

/// Creates (or completes) the endpoint's device in the sandbox with its addresses and routes;
/// on failure, a device this call created is removed again.
pub(super) async fn attach(
    child: &Child,
    host: &Handle,
    sandbox: SandboxNs<'_>,
    net: &Network,
    ep: &Endpoint,
    report: &mut Report,
) -> Result<Attached, AgentError> {
    let created = create(child, host, sandbox, net, ep, report).await?;
    let res = in_sandbox::configure(sandbox, ep, net.mtu, created, report).await;
    if res.is_err() && created {
        remove(child, sandbox.handle, &ep.id, &mut Report::default()).await;
        report.changes.clear();
    }
    res
}

/// Removes the endpoint's device; the sandbox's namespace may be gone (`None`), and the device
/// with it.
pub(super) async fn detach(
    child: &Child,
    sandbox: Option<&Handle>,
    endpoint_id: &str,
    report: &mut Report,
) {
    if let Some(sandbox) = sandbox {
        remove(child, sandbox, endpoint_id, report).await;
    }
}

/// The network's parent in the managed namespace: the link named, or (none named) the link of
/// the host's default route, IPv4 first, as Docker picks it. Never one of Weft's own links: a
/// device on another network's bridge would put its sandboxes on that network's segment,
/// past the firewall rules that keep networks apart. (A VLAN sub-interface the agent made for
/// networks on parents, `vlan.rs`, is what it is there for.)
pub(super) async fn parent(host: &Handle, net: &Network) -> Result<Link, AgentError> {
    let link = if net.parent.is_empty() {
        let mut found = None;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            if let Some(index) = kernel::default_route_oif(host, family).await? {
                found = kernel::link_by_index(host, index).await?;
                break;
            }
        }
        found.ok_or(AgentError::NoDefaultParent)?
    } else {
        kernel::link_by_name(host, &net.parent)
            .await?
            .ok_or_else(|| AgentError::NoParent {
                name: net.parent.clone(),
            })?
    };
    if names::is_weft_alias(&link.alias) && names::vlan_of_alias(&link.alias).is_none() {
        return Err(AgentError::ParentIsWefts {
            name: link.name,
            alias: link.alias,
        });
    }
    Ok(link)
}

/// Creates the endpoint's device inside the sandbox unless it is there already (then it must
/// be Weft's, for this endpoint). Returns whether it was created.
async fn create(
    child: &Child,
    host: &Handle,
    sandbox: SandboxNs<'_>,
    net: &Network,
    ep: &Endpoint,
    report: &mut Report,
) -> Result<bool, AgentError> {
    let alias = names::endpoint_alias(&ep.id);
    if !sandbox.fresh
        && let Some(l) = kernel::link_by_name(sandbox.handle, &ep.ifname).await?
    {
        return if l.alias == alias {
            Ok(false)
        } else {
            Err(AgentError::NotOurs {
                name: format!("{} (in the sandbox)", l.name),
                alias: l.alias,
            })
        };
    }
    let parent = parent(host, net).await?;
    let msg = (child.message)(net, ep, parent.index, sandbox.file.as_raw_fd());
    // (`sandbox.file` is borrowed: it stays open until the kernel has answered.)
    host.link()
        .add(msg)
        .execute()
        .await
        .map_err(AgentError::netlink(child.create, &ep.ifname))?;
    tracing::info!(
        device = %ep.ifname,
        kind = %child.kind,
        endpoint = %ep.id,
        parent = %parent.name,
        "device created in the sandbox"
    );
    report.change(
        Action::Created,
        Kind::Link,
        format!("{} (in the sandbox)", ep.ifname),
        &ep.id,
    );
    Ok(true)
}

/// Deletes the endpoint's device in the sandbox, found by its alias and kind.
async fn remove(child: &Child, sandbox: &Handle, endpoint_id: &str, report: &mut Report) {
    let links = match kernel::links(sandbox).await {
        Ok(l) => l,
        Err(e) => {
            report.fail(Kind::Link, "links (in the sandbox)", endpoint_id, &e);
            return;
        }
    };
    let alias = names::endpoint_alias(endpoint_id);
    let ours = |l: &&Link| l.alias == alias && l.kind.as_ref() == Some(&child.kind);
    for l in links.iter().filter(ours) {
        match kernel::delete_link(sandbox, l).await {
            Ok(true) => report.change(
                Action::Removed,
                Kind::Link,
                format!("{} (in the sandbox)", l.name),
                endpoint_id,
            ),
            Ok(false) => {}
            Err(e) => report.fail(Kind::Link, &l.name, endpoint_id, &e),
        }
    }
}
