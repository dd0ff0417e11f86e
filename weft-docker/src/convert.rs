//! Docker's requests as Weft's, and Weft's answers as Docker's: pure functions, tested here.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde_json::Value;
use weft_proto::gateway::v1 as pb;

use crate::{
    addr,
    error::PluginError,
    protocol::{self as p, InterfaceName, JoinResponse},
    weft::{CREATED_BY, NETWORK_ID_LABEL},
};

/// Subnets of one Docker network, at most (Weft's own limit is higher).
const SUBNETS_MAX: usize = 16;

/// The Weft network for Docker network `id`: named `docker-<first 12 digits>` (drivers are
/// not told Docker's name), labelled with the id, with Docker's subnets and gateways (which
/// came from this plugin's IPAM calls) and Docker's `-o` options, which Weft checks itself.
pub fn create_network(
    id: &str,
    options: &BTreeMap<String, Value>,
    ipv4: Vec<p::IpamData>,
) -> Result<pb::CreateNetworkRequest, PluginError> {
    if ipv4.len() > SUBNETS_MAX {
        return Err(PluginError::invalid(
            "IPv4Data",
            &format!("{} entries", ipv4.len()),
            format!("at most {SUBNETS_MAX}"),
        ));
    }
    let mut configs = Vec::new();
    for d in ipv4 {
        let pool = addr::Pool::new(&d.pool, "")?;
        let gateway = if d.gateway.is_empty() {
            String::new()
        } else {
            pool.member("IPv4Data.Gateway", &d.gateway)?.to_string()
        };
        let mut aux = std::collections::HashMap::new();
        for (name, a) in d.aux_addresses.unwrap_or_default() {
            aux.insert(name, pool.member("IPv4Data.AuxAddresses", &a)?.to_string());
        }
        configs.push(pb::IpamConfig {
            subnet: pool.subnet.to_string(),
            gateway,
            aux_addresses: aux,
            ..Default::default()
        });
    }
    let mut generic = std::collections::HashMap::new();
    if let Some(g) = options.get(p::GENERIC_OPTIONS).filter(|g| !g.is_null()) {
        let map: BTreeMap<String, Value> = serde_json::from_value(g.clone())
            .map_err(|e| PluginError::invalid(p::GENERIC_OPTIONS, &g.to_string(), e.to_string()))?;
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            generic.insert(k, v);
        }
    }
    let internal =
        flag(options, p::INTERNAL) || generic.remove(p::INTERNAL).is_some_and(|v| v == "true");
    if flag(options, p::ENABLE_IPV6) {
        return Err(PluginError::Unsupported("IPv6 (--ipv6)".into()));
    }
    let n = id.len().min(12);
    Ok(pb::CreateNetworkRequest {
        name: format!("docker-{}", &id[..n]),
        driver: "bridge".into(),
        ipam: Some(pb::Ipam {
            configs,
            ..Default::default()
        }),
        internal,
        labels: [
            (CREATED_BY.0.to_owned(), CREATED_BY.1.to_owned()),
            (NETWORK_ID_LABEL.to_owned(), id.to_owned()),
        ]
        .into(),
        options: generic,
        ..Default::default()
    })
}

/// A boolean option as Docker sends it (true, or "true").
fn flag(options: &BTreeMap<String, Value>, key: &str) -> bool {
    match options.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// CreateEndpoint's `Interface.Address`: the address this plugin's IPAM gave, CIDR form.
pub fn endpoint_address(raw: &str) -> Result<Ipv4Addr, PluginError> {
    if raw.is_empty() {
        return Err(PluginError::invalid(
            "Interface.Address",
            raw,
            "missing: create the network with --ipam-driver set to this plugin too",
        ));
    }
    let net: ipnet::Ipv4Net = raw
        .parse()
        .map_err(|_| PluginError::invalid("Interface.Address", raw, "not an IPv4 CIDR"))?;
    Ok(net.addr())
}

/// The SandboxKey's last component (Docker's sandbox id prefix), which names the Weft sandbox:
/// an absolute path whose last component is 1 to 64 hex digits.
pub fn sandbox_key(path: &str) -> Result<String, PluginError> {
    let bad = |why: &str| PluginError::invalid("SandboxKey", path, why.to_owned());
    if !path.starts_with('/') || path.len() > 4096 {
        return Err(bad("not an absolute path of at most 4096 bytes"));
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    addr::docker_id("SandboxKey", last)
        .map_err(|_| bad("its last component is not a Docker sandbox id"))?;
    Ok(last.to_owned())
}

/// Join's answer: the interface Docker moves in and names `eth<N>`, and the network's gateway
/// (none on internal networks: Weft gives none there).
pub fn join_response(ep: &pb::Endpoint, handoff: String) -> JoinResponse {
    JoinResponse {
        interface_name: InterfaceName {
            src_name: handoff,
            dst_prefix: "eth".into(),
        },
        gateway: ep.gateway.clone(),
        gateway_ipv6: String::new(),
        static_routes: Vec::new(),
        disable_gateway_service: false,
    }
}

/// Weft's published ports as Docker lists them (`com.docker.network.portmap`), each port of a
/// range on its own.
pub fn docker_ports(ports: &[pb::PortMapping], ipv4_cidr: &str) -> Value {
    let ip = ipv4_cidr.split('/').next().unwrap_or_default();
    let mut out = Vec::new();
    for m in ports {
        let proto = match pb::Protocol::try_from(m.protocol) {
            Ok(pb::Protocol::Udp) => 17,
            Ok(pb::Protocol::Sctp) => 132,
            _ => 6,
        };
        for i in 0..m.range.clamp(1, 64) {
            out.push(serde_json::json!({
                "Proto": proto, "IP": ip, "Port": m.container_port + i,
                "HostIP": m.host_ip, "HostPort": m.host_port + i, "HostPortEnd": m.host_port + i,
            }));
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data(pool: &str, gw: &str) -> p::IpamData {
        p::IpamData {
            pool: pool.into(),
            gateway: gw.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_docker_network_becomes_a_labelled_weft_bridge() {
        let opts: BTreeMap<String, Value> = serde_json::from_value(json!({
            "com.docker.network.enable_ipv6": false,
            "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400"},
        }))
        .unwrap();
        let id = "ab".repeat(32);
        let req = create_network(&id, &opts, vec![data("10.7.0.0/24", "10.7.0.1/24")]).unwrap();
        assert_eq!(req.name, format!("docker-{}", &id[..12]));
        assert_eq!(req.labels.get(NETWORK_ID_LABEL), Some(&id));
        assert_eq!(
            req.labels.get("created-by").map(String::as_str),
            Some("weft-docker")
        );
        let c = &req.ipam.unwrap().configs[0];
        assert_eq!(
            (c.subnet.as_str(), c.gateway.as_str()),
            ("10.7.0.0/24", "10.7.0.1")
        );
        assert_eq!(
            req.options
                .get("com.docker.network.driver.mtu")
                .map(String::as_str),
            Some("1400")
        );
        assert!(!req.internal);
    }

    #[test]
    fn internal_networks_stay_internal_and_ipv6_is_refused() {
        let internal: BTreeMap<String, Value> =
            serde_json::from_value(json!({"com.docker.network.internal": true})).unwrap();
        assert!(create_network("ab", &internal, vec![]).unwrap().internal);
        let v6: BTreeMap<String, Value> =
            serde_json::from_value(json!({"com.docker.network.enable_ipv6": true})).unwrap();
        assert!(create_network("ab", &v6, vec![]).is_err());
    }

    #[test]
    fn gateways_outside_the_pool_are_refused() {
        let e = create_network(
            "ab",
            &BTreeMap::new(),
            vec![data("10.7.0.0/24", "10.8.0.1/24")],
        );
        assert!(e.unwrap_err().to_string().contains("IPv4Data.Gateway"));
    }

    #[test]
    fn published_ports_are_listed_as_docker_does() {
        let m = pb::PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: pb::Protocol::Tcp as i32,
            range: 1,
            ..Default::default()
        };
        assert_eq!(
            docker_ports(&[m], "10.7.0.2/24"),
            json!([{"Proto": 6, "IP": "10.7.0.2", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}])
        );
    }

    #[test]
    fn sandbox_keys_must_end_in_a_docker_id() {
        assert_eq!(
            sandbox_key("/var/run/docker/netns/b44fabd6ffa1").unwrap(),
            "b44fabd6ffa1"
        );
        for bad in [
            "",
            "relative/abc",
            "/var/run/docker/netns/../x",
            "/x/default",
            "/x/",
        ] {
            assert!(sandbox_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoint_addresses_come_from_the_ipam_call() {
        assert_eq!(
            endpoint_address("10.7.0.2/24").unwrap(),
            Ipv4Addr::new(10, 7, 0, 2)
        );
        assert!(
            endpoint_address("")
                .unwrap_err()
                .to_string()
                .contains("--ipam-driver")
        );
        assert!(endpoint_address("10.7.0.2").is_err());
    }

    #[test]
    fn join_names_the_handed_over_interface_and_the_gateway() {
        let ep = pb::Endpoint {
            gateway: "10.7.0.1".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(join_response(&ep, "wdabc".into())).unwrap();
        assert_eq!(
            v,
            json!({"InterfaceName": {"SrcName": "wdabc", "DstPrefix": "eth"}, "Gateway": "10.7.0.1",
                   "StaticRoutes": [], "DisableGatewayService": false})
        );
        let internal =
            serde_json::to_value(join_response(&pb::Endpoint::default(), "wdabc".into())).unwrap();
        assert!(internal.get("Gateway").is_none());
    }
}
