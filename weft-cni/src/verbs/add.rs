//! ADD: the container's sandbox (made, or reused by container id) connected to the network,
//! and the result the runtime caches and hands to the next plugin.

use std::{collections::HashMap, path::Path};

use serde_json::Value;
use weft_proto::gateway::v1 as pb;

use crate::{
    api::{self, CREATED_BY, Gateway},
    config::{NetConf, static_ip},
    env::CniEnv,
    error::{CniError, code},
    kernel,
    result::{Attached, Interface, Ip},
};

pub async fn run(env: &CniEnv, conf: &NetConf) -> Result<Value, CniError> {
    let netns = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is not set"))?;
    // The spec: ADD fails when the interface already exists in the container.
    let container = kernel::open(netns).await?;
    if kernel::link(&container, &env.ifname).await?.is_some() {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            format!(
                "interface {} already exists in {}",
                env.ifname,
                netns.display()
            ),
        ));
    }
    let mut gw = api::connect(conf, code::TRY_AGAIN_LATER).await?;
    let host = gw.host(conf).await?.name;
    let settings = settings(env, conf);
    let sandbox = match gw.sandbox_of(&env.container_id, &host).await? {
        Some(sb) if Path::new(&sb.netns_path) == netns => {
            connect(&mut gw, &sb, conf, settings).await?;
            sb.id
        }
        stale => {
            // A sandbox of this container id in another namespace is left from a container
            // that is gone (its runtime never called DEL): replace it.
            if let Some(sb) = stale.filter(api::is_ours) {
                gw.delete(&sb.id).await?;
            }
            create(&mut gw, env, conf, &host, netns, settings).await?
        }
    };
    let sb = gw
        .sandboxes
        .get_sandbox(pb::GetSandboxRequest { sandbox })
        .await
        .map_err(|st| CniError::from_status("read the sandbox back", &st))?
        .into_inner();
    let attached = attached(&sb, env, netns, &container).await?;
    Ok(attached.to_json(&conf.cni_version))
}

fn settings(env: &CniEnv, conf: &NetConf) -> pb::EndpointSettings {
    let mut s = pb::EndpointSettings {
        mac_address: conf.runtime.mac.clone(),
        aliases: conf.aliases.clone(),
        interface_name: env.ifname.clone(),
        ..Default::default()
    };
    for ip in conf.runtime.ips.iter().filter_map(|ip| static_ip(ip)) {
        if ip.is_ipv4() {
            s.ipv4_address = ip.to_string();
        } else {
            s.ipv6_address = ip.to_string();
        }
    }
    s
}

async fn connect(
    gw: &mut Gateway,
    sb: &pb::Sandbox,
    conf: &NetConf,
    settings: pb::EndpointSettings,
) -> Result<(), CniError> {
    gw.sandboxes
        .connect(pb::ConnectRequest {
            sandbox: sb.id.clone(),
            network: conf.network.clone(),
            settings: Some(settings),
            ..Default::default()
        })
        .await
        .map_err(|st| {
            CniError::from_status(&format!("connect to network {:?}", conf.network), &st)
        })?;
    Ok(())
}

async fn create(
    gw: &mut Gateway,
    env: &CniEnv,
    conf: &NetConf,
    host: &str,
    netns: &Path,
    settings: pb::EndpointSettings,
) -> Result<String, CniError> {
    let mut labels = HashMap::from([(CREATED_BY.0.to_owned(), CREATED_BY.1.to_owned())]);
    if let Some(pod) = &env.pod_name {
        labels.insert(api::POD_LABEL.to_owned(), pod.clone());
    }
    if let Some(ns) = &env.pod_namespace {
        labels.insert(api::NAMESPACE_LABEL.to_owned(), ns.clone());
    }
    let port_mappings = conf
        .runtime
        .port_mappings
        .iter()
        .map(|p| pb::PortMapping {
            host_ip: p.host_ip.clone(),
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: if p.protocol.eq_ignore_ascii_case("udp") {
                pb::Protocol::Udp as i32
            } else {
                pb::Protocol::Tcp as i32
            },
            range: 1,
        })
        .collect();
    let req = pb::CreateSandboxRequest {
        name: free_name(gw, env, host).await?,
        container_id: env.container_id.clone(),
        host: host.to_owned(),
        netns_path: netns.to_string_lossy().into_owned(),
        port_mappings,
        networks: vec![pb::NetworkAttachment {
            network: conf.network.clone(),
            settings: Some(settings),
        }],
        labels,
        ..Default::default()
    };
    let sb = gw
        .sandboxes
        .create_sandbox(req)
        .await
        .map_err(|st| {
            CniError::from_status(
                &format!(
                    "attach container {} to network {:?}",
                    env.container_id, conf.network
                ),
                &st,
            )
        })?
        .into_inner();
    Ok(sb.id)
}

/// The sandbox name for a pod: its name; a sandbox of the plugin's by that name whose namespace
/// is gone is a container its runtime never deleted, removed first; a live sandbox of another
/// container by that name (a pod of the same name in another Kubernetes namespace) leaves
/// `<pod>.<namespace>`. Without a pod name: empty (the gateway names it after its id).
async fn free_name(gw: &mut Gateway, env: &CniEnv, host: &str) -> Result<String, CniError> {
    let Some(pod) = &env.pod_name else {
        return Ok(String::new());
    };
    let same = gw
        .list(pb::ListSandboxesRequest {
            name: vec![pod.clone()],
            ..Default::default()
        })
        .await?
        .into_iter()
        .find(|s| s.name == *pod);
    let Some(holder) = same else {
        return Ok(pod.clone());
    };
    if api::is_ours(&holder) && holder.host == host && !Path::new(&holder.netns_path).exists() {
        gw.delete(&holder.id).await?;
        return Ok(pod.clone());
    }
    Ok(match &env.pod_namespace {
        Some(ns) if pod.len() + 1 + ns.len() <= crate::env::POD_NAME_MAX => format!("{pod}.{ns}"),
        _ => String::new(),
    })
}

/// The result: the host side of the endpoint (when its driver has one, as the gateway names it)
/// and the container interface, both as the kernel shows them; Weft's addresses.
async fn attached(
    sb: &pb::Sandbox,
    env: &CniEnv,
    netns: &Path,
    container: &rtnetlink::Handle,
) -> Result<Attached, CniError> {
    let ep = sb
        .endpoints
        .iter()
        .find(|e| e.interface_name == env.ifname)
        .ok_or_else(|| {
            CniError::new(
                code::REFUSED,
                format!(
                    "the sandbox has no interface {} after the attach",
                    env.ifname
                ),
            )
        })?;
    let inside = kernel::link(container, &env.ifname).await?.ok_or_else(|| {
        CniError::new(
            code::REFUSED,
            format!("{} did not appear in {}", env.ifname, netns.display()),
        )
    })?;
    let mut interfaces = Vec::new();
    if !ep.host_interface_name.is_empty() {
        let host = kernel::open_host().await?;
        let link = kernel::link(&host, &ep.host_interface_name)
            .await?
            .ok_or_else(|| {
                CniError::new(
                    code::REFUSED,
                    format!(
                        "the host side of {}, {}, did not appear",
                        env.ifname, ep.host_interface_name
                    ),
                )
            })?;
        interfaces.push(Interface {
            name: link.name.clone(),
            mac: kernel::mac(&link),
            sandbox: None,
        });
    }
    interfaces.push(Interface {
        name: env.ifname.clone(),
        mac: kernel::mac(&inside),
        sandbox: Some(netns.to_string_lossy().into_owned()),
    });
    Ok(Attached {
        interfaces,
        ips: endpoint_ips(ep),
        routes: routes(ep),
        search: sb
            .dns
            .as_ref()
            .map(|d| d.search.clone())
            .unwrap_or_default(),
        options: sb
            .dns
            .as_ref()
            .map(|d| d.options.clone())
            .unwrap_or_default(),
    })
}

/// The endpoint's addresses with their gateways.
pub fn endpoint_ips(ep: &pb::Endpoint) -> Vec<Ip> {
    [
        (&ep.ipv4_address, &ep.gateway),
        (&ep.ipv6_address, &ep.ipv6_gateway),
    ]
    .into_iter()
    .filter_map(|(a, g)| {
        Some(Ip {
            address: a.parse().ok()?,
            gateway: g.parse().ok(),
        })
    })
    .collect()
}

/// The default routes the endpoint provides.
fn routes(ep: &pb::Endpoint) -> Vec<(ipnet::IpNet, std::net::IpAddr)> {
    let mut r = Vec::new();
    if ep.default_route_v4
        && let Ok(gw) = ep.gateway.parse()
    {
        r.push((ipnet::IpNet::V4(ipnet::Ipv4Net::default()), gw));
    }
    if ep.default_route_v6
        && let Ok(gw) = ep.ipv6_gateway.parse()
    {
        r.push((ipnet::IpNet::V6(ipnet::Ipv6Net::default()), gw));
    }
    r
}
