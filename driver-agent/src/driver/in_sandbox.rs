//! The endpoint's interface once it is in the sandbox, for every driver whose interface lands
//! there (the bridge's veth peer; ipvlan's device): IPv6 on only for a network with IPv6,
//! alias and up, loopback up, exactly the endpoint's addresses, and the default route per
//! family.

use super::api::{Attached, SandboxNs};
use crate::{
    error::AgentError,
    kernel, names, netns,
    report::{Action, Kind, Report},
    spec::Endpoint,
    sysctl,
};
use rtnetlink::Handle;

/// `fresh`: the interface was just created, so it has no addresses to clean up.
pub(super) async fn configure(
    ns: SandboxNs<'_>,
    ep: &Endpoint,
    mtu: u32,
    fresh: bool,
    report: &mut Report,
) -> Result<Attached, AgentError> {
    let sandbox = ns.handle;
    let alias = names::endpoint_alias(&ep.id);
    let link = kernel::link_by_name(sandbox, &ep.ifname)
        .await?
        .ok_or_else(|| AgentError::Vanished {
            name: format!("{} (in the sandbox)", ep.ifname),
        })?;
    // Before the interface comes up (an address made at "up" would be there already).
    ipv6_switch(ns, ep, fresh, report).await?;
    if link.alias != alias || !link.up {
        kernel::set_alias_up(sandbox, &link, &alias).await?;
    }
    if !ns.fresh
        && let Some(lo) = kernel::link_by_name(sandbox, "lo").await?
        && !lo.up
    {
        kernel::set_up(sandbox, lo.index, "lo").await?;
    }
    let addresses = ep.addresses();
    // Addresses the endpoint no longer has (a re-attach with a changed spec) go first: removing
    // a subnet's primary address would also take the new one with it if it sat beside it.
    if !fresh {
        for a in kernel::remove_other_addresses(sandbox, link.index, &ep.ifname, &addresses).await?
        {
            report.change(
                Action::Removed,
                Kind::Address,
                format!("{a} dev {}", ep.ifname),
                &ep.id,
            );
        }
    }
    for a in &addresses {
        if kernel::add_address(sandbox, link.index, &ep.ifname, *a).await? {
            report.change(
                Action::Created,
                Kind::Address,
                format!("{a} dev {}", ep.ifname),
                &ep.id,
            );
        }
    }
    routes(sandbox, ep, link.index, fresh, report).await?;
    let mac = <[u8; 6]>::try_from(link.mac.as_slice()).unwrap_or(ep.mac);
    Ok(Attached {
        ifname: ep.ifname.clone(),
        index: link.index,
        mac,
        mtu: if link.mtu == 0 { mtu } else { link.mtu },
        addresses,
        created: fresh,
    })
}

/// IPv6 on the endpoint's interface only when its network has IPv6: an interface of an
/// IPv4-only network gets no link-local address, joins no multicast group and takes no router
/// advertisement (the container cannot be reached or configured over IPv6 through it, as
/// with Docker since 26.0.2, GHSA-x84c-p2g9-rqv9), and sends nothing that the bridge floods to
/// every other port (duplicate address detection, MLD reports, router solicitations: per
/// attach, work for every endpoint already there). Nothing to do for a new interface in a
/// namespace the agent made with IPv6 off by default; otherwise a thread enters the namespace.
async fn ipv6_switch(
    ns: SandboxNs<'_>,
    ep: &Endpoint,
    fresh: bool,
    report: &mut Report,
) -> Result<(), AgentError> {
    let on = ep
        .addresses()
        .iter()
        .any(|a| matches!(a, ipnet::IpNet::V6(_)));
    if fresh && !on && ns.ipv6_off_by_default {
        return Ok(());
    }
    let ifname = ep.ifname.clone();
    let changed = netns::run_in_file(ns.file, ns.path, move || {
        sysctl::set_interface_ipv6_here(&ifname, on)
    })
    .await
    .map_err(AgentError::netns(ns.path))??;
    if changed {
        report.change(
            Action::Updated,
            Kind::Sysctl,
            format!(
                "net.ipv6.conf.{}.disable_ipv6={}",
                ep.ifname,
                if on { 0 } else { 1 }
            ),
            &ep.id,
        );
    }
    Ok(())
}

/// The default route per family: via this endpoint's gateway when it carries it, otherwise
/// not through this interface. A `fresh` interface has no route through it yet: nothing to
/// look up or take away.
async fn routes(
    sandbox: &Handle,
    ep: &Endpoint,
    index: u32,
    fresh: bool,
    report: &mut Report,
) -> Result<(), AgentError> {
    use rtnetlink::packet_route::AddressFamily;
    let families = [
        (
            AddressFamily::Inet,
            ep.default_route_v4,
            ep.ipv4_gateway.map(std::net::IpAddr::V4),
        ),
        (
            AddressFamily::Inet6,
            ep.default_route_v6,
            ep.ipv6_gateway.map(std::net::IpAddr::V6),
        ),
    ];
    for (family, wanted, gateway) in families {
        match (wanted, gateway) {
            (true, Some(gw)) => {
                let already =
                    !fresh && kernel::default_route_oif(sandbox, family).await? == Some(index);
                // Replaced even when already here: the gateway may have changed.
                kernel::replace_default_route(sandbox, index, gw).await?;
                if already {
                    continue;
                }
                report.change(
                    Action::Updated,
                    Kind::Route,
                    format!("default via {gw} dev {}", ep.ifname),
                    &ep.id,
                );
            }
            _ if fresh => {}
            _ => {
                if kernel::remove_default_route_via(sandbox, family, index).await? {
                    report.change(
                        Action::Removed,
                        Kind::Route,
                        format!("default dev {}", ep.ifname),
                        &ep.id,
                    );
                }
            }
        }
    }
    Ok(())
}
