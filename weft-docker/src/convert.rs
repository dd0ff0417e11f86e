//! Docker's requests as Weft's, and Weft's answers as Docker's: pure functions, tested here.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

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
/// not told Docker's name), labelled with the id, with Docker's subnets and gateways of both
/// families (which came from this plugin's IPAM calls) and Docker's `-o` options, which Weft
/// checks itself. IPv6 is on exactly when Docker sent IPv6 subnets.
pub fn create_network(
    id: &str,
    options: &BTreeMap<String, Value>,
    ipv4: Vec<p::IpamData>,
    ipv6: Vec<p::IpamData>,
) -> Result<pb::CreateNetworkRequest, PluginError> {
    let mut configs = ipam_configs("IPv4Data", ipv4, false)?;
    let enable_ipv6 = !ipv6.is_empty();
    configs.extend(ipam_configs("IPv6Data", ipv6, true)?);
    if flag(options, p::ENABLE_IPV6) && !enable_ipv6 {
        // Weft would pick an IPv6 subnet Docker knows nothing of: the two would disagree on
        // every container's address.
        return Err(PluginError::invalid(
            "IPv6Data",
            "",
            format!(
                "missing while {} is set: create the network with --ipam-driver set to this plugin too",
                p::ENABLE_IPV6
            ),
        ));
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
    let n = id.len().min(12);
    Ok(pb::CreateNetworkRequest {
        name: format!("docker-{}", &id[..n]),
        driver: "bridge".into(),
        ipam: Some(pb::Ipam {
            configs,
            ..Default::default()
        }),
        internal,
        enable_ipv6,
        labels: [
            (CREATED_BY.0.to_owned(), CREATED_BY.1.to_owned()),
            (NETWORK_ID_LABEL.to_owned(), id.to_owned()),
        ]
        .into(),
        options: generic,
        ..Default::default()
    })
}

/// Docker's IPAM data of one family (`field`: `IPv4Data` or `IPv6Data`) as Weft's configs.
fn ipam_configs(
    field: &str,
    data: Vec<p::IpamData>,
    v6: bool,
) -> Result<Vec<pb::IpamConfig>, PluginError> {
    if data.len() > SUBNETS_MAX {
        return Err(PluginError::invalid(
            field,
            &format!("{} entries", data.len()),
            format!("at most {SUBNETS_MAX}"),
        ));
    }
    let mut configs = Vec::new();
    for d in data {
        let pool = addr::Pool::of_family(&format!("{field}.Pool"), &d.pool, v6)?;
        let gateway = if d.gateway.is_empty() {
            String::new()
        } else {
            pool.member(&format!("{field}.Gateway"), &d.gateway)?
                .to_string()
        };
        let mut aux = std::collections::HashMap::new();
        for (name, a) in d.aux_addresses.unwrap_or_default() {
            let ip = pool.member(&format!("{field}.AuxAddresses"), &a)?;
            aux.insert(name, ip.to_string());
        }
        configs.push(pb::IpamConfig {
            subnet: pool.subnet.to_string(),
            gateway,
            aux_addresses: aux,
            ..Default::default()
        });
    }
    Ok(configs)
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

/// CreateEndpoint's `Interface.AddressIPv6`: none on a network without IPv6, else the address
/// this plugin's IPAM gave, CIDR form.
pub fn endpoint_address_v6(raw: &str) -> Result<Option<Ipv6Addr>, PluginError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let net: ipnet::Ipv6Net = raw
        .parse()
        .map_err(|_| PluginError::invalid("Interface.AddressIPv6", raw, "not an IPv6 CIDR"))?;
    Ok(Some(net.addr()))
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
/// of each family (none on internal networks: Weft gives none there).
pub fn join_response(ep: &pb::Endpoint, handoff: String) -> JoinResponse {
    JoinResponse {
        interface_name: InterfaceName {
            src_name: handoff,
            dst_prefix: "eth".into(),
        },
        gateway: bare(&ep.gateway),
        gateway_ipv6: bare(&ep.ipv6_gateway),
        static_routes: Vec::new(),
        disable_gateway_service: false,
    }
}

/// An address without a prefix length (Docker's gateways are bare addresses).
fn bare(addr: &str) -> String {
    addr.split('/').next().unwrap_or_default().to_owned()
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
        let req =
            create_network(&id, &opts, vec![data("10.7.0.0/24", "10.7.0.1/24")], vec![]).unwrap();
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
        assert!(!req.enable_ipv6);
    }

    #[test]
    fn internal_networks_stay_internal() {
        let internal: BTreeMap<String, Value> =
            serde_json::from_value(json!({"com.docker.network.internal": true})).unwrap();
        assert!(
            create_network("ab", &internal, vec![], vec![])
                .unwrap()
                .internal
        );
    }

    #[test]
    fn a_dual_stack_network_carries_both_families() {
        let opts: BTreeMap<String, Value> =
            serde_json::from_value(json!({"com.docker.network.enable_ipv6": true})).unwrap();
        let mut six = data("fd00:7::/64", "fd00:7::1/64");
        six.aux_addresses = Some([("r".to_owned(), "fd00:7::99".to_owned())].into());
        let req = create_network(
            "ab",
            &opts,
            vec![data("10.7.0.0/24", "10.7.0.1/24")],
            vec![six],
        )
        .unwrap();
        assert!(req.enable_ipv6);
        let configs = req.ipam.unwrap().configs;
        let got: Vec<(&str, &str)> = configs
            .iter()
            .map(|c| (c.subnet.as_str(), c.gateway.as_str()))
            .collect();
        assert_eq!(
            got,
            [("10.7.0.0/24", "10.7.0.1"), ("fd00:7::/64", "fd00:7::1")]
        );
        assert_eq!(
            configs[1].aux_addresses.get("r").map(String::as_str),
            Some("fd00:7::99")
        );
    }

    #[test]
    fn hostile_ipv6_data_is_refused_naming_the_field() {
        let v6: BTreeMap<String, Value> =
            serde_json::from_value(json!({"com.docker.network.enable_ipv6": true})).unwrap();
        let v4 = || vec![data("10.7.0.0/24", "10.7.0.1/24")];
        let err = |ipv6: Vec<p::IpamData>| {
            create_network("ab", &v6, v4(), ipv6)
                .unwrap_err()
                .to_string()
        };
        // --ipv6 without this plugin's IPAM: Weft and Docker would disagree on addresses.
        let e = create_network("ab", &v6, v4(), vec![]).unwrap_err();
        assert!(e.to_string().starts_with("IPv6Data"), "{e}");
        let e = err(vec![data("fd00:7::/127", "")]);
        assert!(e.starts_with("IPv6Data.Pool") && e.contains("/126"), "{e}");
        let e = err(vec![data("10.8.0.0/24", "")]);
        assert!(e.starts_with("IPv6Data.Pool") && e.contains("IPv6"), "{e}");
        let e = err(vec![data("fd00:7::/64", "10.7.0.1")]);
        assert!(
            e.starts_with("IPv6Data.Gateway") && e.contains("IPv6"),
            "{e}"
        );
        let e = err(vec![data("fd00:7::/64", "fd00:8::1/64")]);
        assert!(e.starts_with("IPv6Data.Gateway"), "{e}");
        let mut aux = data("fd00:7::/64", "");
        aux.aux_addresses = Some([("x".to_owned(), "fd00:7::".to_owned())].into());
        assert!(err(vec![aux]).starts_with("IPv6Data.AuxAddresses"));
        let e = err((0..=SUBNETS_MAX).map(|_| data("fd00:7::/64", "")).collect());
        assert!(e.starts_with("IPv6Data"), "{e}");
        let e = create_network("ab", &v6, vec![data("fd00:7::/64", "")], vec![]).unwrap_err();
        assert!(e.to_string().starts_with("IPv4Data.Pool"), "{e}");
    }

    #[test]
    fn gateways_outside_the_pool_are_refused() {
        let e = create_network(
            "ab",
            &BTreeMap::new(),
            vec![data("10.7.0.0/24", "10.8.0.1/24")],
            vec![],
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
        assert!(endpoint_address("fd00::2/64").is_err());
    }

    #[test]
    fn endpoint_ipv6_addresses_are_optional_but_must_be_ipv6() {
        assert_eq!(endpoint_address_v6("").unwrap(), None);
        assert_eq!(
            endpoint_address_v6("fd00:7::2/64").unwrap(),
            Some("fd00:7::2".parse().unwrap())
        );
        for bad in ["10.7.0.2/24", "fd00:7::2", "x/64"] {
            let e = endpoint_address_v6(bad).unwrap_err().to_string();
            assert!(e.starts_with("Interface.AddressIPv6"), "{e}");
        }
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
        assert!(internal.get("GatewayIPv6").is_none());
        let dual = pb::Endpoint {
            gateway: "10.7.0.1".into(),
            ipv6_gateway: "fd00:7::1".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(join_response(&dual, "wdabc".into())).unwrap();
        assert_eq!(v["GatewayIPv6"], "fd00:7::1");
    }
}
