//! CHECK: the container's interface, addresses and host veth as `prevResult` describes them,
//! against the kernel and Weft's record; the first difference is the error, named.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use serde_json::Value;

use crate::{
    api,
    config::NetConf,
    env::CniEnv,
    error::{CniError, code},
    kernel,
};

fn differs(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

/// What CHECK reads from `prevResult`.
#[derive(Debug, Default)]
struct Prev {
    /// The container interface's MAC, if listed.
    mac: Option<String>,
    /// Host-side interfaces (no `sandbox`).
    host_links: Vec<String>,
    /// Addresses on the container interface.
    addresses: BTreeSet<IpAddr>,
    /// Default routes (by family: IPv6?) the result lists.
    default_routes: BTreeSet<bool>,
}

fn prev(result: &Value, env: &CniEnv, netns: &Path) -> Prev {
    let mut p = Prev::default();
    let interfaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let mut container = None;
    for (i, iface) in interfaces.iter().enumerate() {
        let name = iface["name"].as_str().unwrap_or_default();
        match iface["sandbox"].as_str() {
            None | Some("") => p.host_links.push(name.to_owned()),
            Some(s) if name == env.ifname && Path::new(s) == netns => {
                container = Some(i);
                p.mac = iface["mac"].as_str().map(str::to_ascii_lowercase);
            }
            Some(_) => {}
        }
    }
    for ip in result["ips"].as_array().into_iter().flatten() {
        let on_container = ip["interface"]
            .as_u64()
            .is_none_or(|i| Some(i) == container.map(|c| c as u64));
        let addr = ip["address"]
            .as_str()
            .and_then(|a| a.parse::<ipnet::IpNet>().ok());
        if let (true, Some(a)) = (on_container, addr) {
            p.addresses.insert(a.addr());
        }
    }
    for r in result["routes"].as_array().into_iter().flatten() {
        if let Some(dst) = r["dst"]
            .as_str()
            .and_then(|d| d.parse::<ipnet::IpNet>().ok())
            && dst.prefix_len() == 0
        {
            p.default_routes.insert(dst.addr().is_ipv6());
        }
    }
    p
}

pub async fn run(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let netns = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is not set"))?;
    let result = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "config key prevResult: CHECK needs it",
        )
    })?;
    let prev = prev(result, env, netns);
    let mut gw = api::connect(conf, code::TRY_AGAIN_LATER).await?;
    let host = gw.host(conf).await?.name;
    let sb = gw
        .sandbox_of(&env.container_id, &host)
        .await?
        .ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "Weft has no sandbox for container {} on host {host}",
                    env.container_id
                ),
            )
        })?;
    let network_id = gw.network_id(&conf.network).await?.unwrap_or_default();
    let ep = sb
        .endpoints
        .iter()
        .find(|e| e.interface_name == env.ifname && e.network_id == network_id)
        .ok_or_else(|| {
            differs(format!(
                "Weft has no endpoint {} of container {} on network {:?}",
                env.ifname, env.container_id, conf.network
            ))
        })?;
    if Path::new(&sb.netns_path) != netns {
        return Err(differs(format!(
            "Weft records the container's namespace as {}, not {}",
            sb.netns_path,
            netns.display()
        )));
    }
    let recorded: BTreeSet<IpAddr> = super::add::endpoint_ips(ep)
        .iter()
        .map(|ip| ip.address.addr())
        .collect();
    if recorded != prev.addresses {
        return Err(differs(format!(
            "Weft records {} on {}, prevResult has {}",
            list(&recorded),
            env.ifname,
            list(&prev.addresses)
        )));
    }
    kernel_matches(env, netns, &prev).await
}

async fn kernel_matches(env: &CniEnv, netns: &Path, prev: &Prev) -> Result<(), CniError> {
    let container = kernel::open(netns).await?;
    let link = kernel::link(&container, &env.ifname)
        .await?
        .ok_or_else(|| {
            differs(format!(
                "interface {} is missing from {}",
                env.ifname,
                netns.display()
            ))
        })?;
    if let Some(mac) = &prev.mac
        && *mac != kernel::mac(&link)
    {
        return Err(differs(format!(
            "interface {} has MAC {}, prevResult has {mac}",
            env.ifname,
            kernel::mac(&link)
        )));
    }
    let present: BTreeSet<IpAddr> = kernel::addresses(&container, link.index)
        .await?
        .into_iter()
        .collect();
    if let Some(missing) = prev.addresses.difference(&present).next() {
        return Err(differs(format!(
            "address {missing} is missing from interface {} in {}",
            env.ifname,
            netns.display()
        )));
    }
    for &v6 in &prev.default_routes {
        if kernel::default_route_oif(&container, v6).await? != Some(link.index) {
            return Err(differs(format!(
                "the default {} route through {} is missing from {}",
                if v6 { "IPv6" } else { "IPv4" },
                env.ifname,
                netns.display()
            )));
        }
    }
    let host = kernel::open_host().await?;
    for name in &prev.host_links {
        if kernel::link(&host, name).await?.is_none() {
            return Err(differs(format!(
                "host interface {name} (the host side of {}) is missing",
                env.ifname
            )));
        }
    }
    Ok(())
}

fn list(ips: &BTreeSet<IpAddr>) -> String {
    if ips.is_empty() {
        return "no address".to_owned();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
