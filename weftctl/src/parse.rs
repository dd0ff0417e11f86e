//! Parsers for flag values in Docker's syntax: `key=value` pairs, `--publish`, `--add-host`,
//! `--network` attachment specs and `--filter` expressions. Each returns a message that names
//! the offending value, which clap shows as a usage error (exit code 2).

use std::net::IpAddr;

use weft_proto::gateway::v1 as pb;

/// A `key=value` flag value (`--opt`, `--driver-opt`, `--aux-address`): the key must be
/// non-empty and the `=` present.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        Some(_) => Err(format!("{s:?}: the key before '=' is empty")),
        None => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// A `--label` value: `key=value`, or `key` alone for an empty value (as Docker accepts).
pub fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(_) => key_value(s),
        None if s.trim().is_empty() => Err("empty label".to_owned()),
        None => Ok((s.trim().to_owned(), String::new())),
    }
}

/// An `--aux-address name=ip` value: the address must be an IP address.
pub fn aux_address(s: &str) -> Result<(String, String), String> {
    let (k, v) = key_value(s).map_err(|e| format!("{e} (expected NAME=IP)"))?;
    let ip = strip_brackets(v.trim());
    ip.parse::<IpAddr>()
        .map_err(|_| format!("{s:?}: {v:?} is not an IP address"))?;
    Ok((k, ip.to_owned()))
}

/// An IP address flag (`--ip`, `--ip6`, `--gateway`).
pub fn ip(s: &str) -> Result<String, String> {
    let ip = strip_brackets(s.trim());
    ip.parse::<IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("{s:?} is not an IP address"))
}

/// An IPv4 address flag (`--ip`).
pub fn ipv4(s: &str) -> Result<String, String> {
    match ip(s)?.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(a.to_string()),
        _ => Err(format!("{s:?} is not an IPv4 address")),
    }
}

/// An IPv6 address flag (`--ip6`).
pub fn ipv6(s: &str) -> Result<String, String> {
    match ip(s)?.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => Ok(a.to_string()),
        _ => Err(format!("{s:?} is not an IPv6 address")),
    }
}

/// A subnet or range flag (`--subnet`, `--ip-range`): CIDR notation; the zero address with a
/// prefix length (`0.0.0.0/24`) is passed on as the API's "any free subnet of that size".
pub fn cidr(s: &str) -> Result<String, String> {
    s.trim()
        .parse::<ipnet::IpNet>()
        .map(|n| n.to_string())
        .map_err(|_| format!("{s:?} is not a subnet in CIDR notation (e.g. 10.1.0.0/24)"))
}

fn strip_brackets(s: &str) -> &str {
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s)
}

/// A `--add-host` value: `HOST:IP` (Docker's form; the IP may be IPv6, bracketed or not) or
/// `HOST=IP`. The address may also be Docker's special `host-gateway`.
pub fn extra_host(s: &str) -> Result<pb::ExtraHost, String> {
    let (host, addr) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("{s:?}: expected HOST:IP"))?;
    let host = host.trim();
    if host.is_empty() {
        return Err(format!("{s:?}: the host name is empty (expected HOST:IP)"));
    }
    let addr = strip_brackets(addr.trim());
    let address = if addr == "host-gateway" {
        addr.to_owned()
    } else {
        addr.parse::<IpAddr>()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP address or host-gateway"))?
            .to_string()
    };
    Ok(pb::ExtraHost {
        hostname: host.to_owned(),
        address,
    })
}

/// A port or a port range (`80`, `8000-8010`) as (first, count).
fn port_range(s: &str, what: &str, spec: &str) -> Result<(u32, u32), String> {
    let port = |p: &str| -> Result<u32, String> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n),
            _ => Err(format!(
                "{spec:?}: invalid {what} {p:?} (ports are 1-65535)"
            )),
        }
    };
    match s.split_once('-') {
        None => Ok((port(s)?, 1)),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(format!(
                    "{spec:?}: invalid {what} range {s:?} (the end is before the start)"
                ));
            }
            Ok((a, b - a + 1))
        }
    }
}

/// A `-p/--publish` value in Docker's syntax, `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`, with
/// port ranges (`8000-8010:80-90`) and IPv6 host addresses (`[::1]:8080:80`).
///
/// An empty host port (`80`, `127.0.0.1::80`) asks for an ephemeral one. A host range must be as
/// long as the container range, since the API maps port `host_port+i` to `container_port+i`.
pub fn publish(spec: &str) -> Result<pb::PortMapping, String> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto),
        None => (spec, "tcp"),
    };
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => pb::Protocol::Tcp,
        "udp" => pb::Protocol::Udp,
        "sctp" => pb::Protocol::Sctp,
        _ => {
            return Err(format!(
                "{spec:?}: unknown protocol {proto:?} (expected tcp, udp or sctp)"
            ));
        }
    };
    // Docker's split: the last part is the container port, the one before the host port, and
    // everything before that the host address (which may itself contain colons).
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host_port, container_port) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        [rest @ .., h, c] => {
            // `rest` holds the pieces of an IPv6 address; rejoin them.
            let n: usize = rest.iter().map(|p| p.len() + 1).sum::<usize>() - 1;
            (&ports[..n], *h, *c)
        }
        [] => ("", "", ""),
    };
    if container_port.is_empty() {
        return Err(format!("{spec:?}: the container port is missing"));
    }
    let (container_port, container_count) = port_range(container_port, "container port", spec)?;
    let host_ip = if host_ip.is_empty() {
        String::new()
    } else {
        let raw = strip_brackets(host_ip);
        raw.parse::<IpAddr>()
            .map_err(|_| format!("{spec:?}: invalid host IP {host_ip:?}"))?
            .to_string()
    };
    let (host_port, host_count) = if host_port.is_empty() {
        (0, container_count)
    } else {
        port_range(host_port, "host port", spec)?
    };
    if host_count != container_count {
        return Err(format!(
            "{spec:?}: the host range has {host_count} port(s) and the container range {container_count}: they must be the same length"
        ));
    }
    Ok(pb::PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol: protocol.into(),
        range: container_count,
    })
}

/// A `--network` value of `sandbox create`: a network name, or Docker's long form
/// `name=NET,alias=A,ip=IP,ip6=IP,mac-address=MAC,gw-priority=N,driver-opt=K=V,link-local-ip=IP`
/// with per-attachment settings.
pub fn attachment(s: &str) -> Result<pb::NetworkAttachment, String> {
    if !s.contains('=') {
        if s.trim().is_empty() {
            return Err("empty network name".to_owned());
        }
        return Ok(pb::NetworkAttachment {
            network: s.trim().to_owned(),
            settings: None,
        });
    }
    let mut network = String::new();
    let mut settings = pb::EndpointSettings::default();
    for field in s.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: {field:?} is not KEY=VALUE"))?;
        match k.trim() {
            "name" => network = v.to_owned(),
            "alias" => settings.aliases.push(v.to_owned()),
            "ip" => settings.ipv4_address = ipv4(v).map_err(|e| format!("{s:?}: {e}"))?,
            "ip6" => settings.ipv6_address = ipv6(v).map_err(|e| format!("{s:?}: {e}"))?,
            "mac-address" => settings.mac_address = v.to_owned(),
            "link-local-ip" => settings
                .link_local_ips
                .push(ip(v).map_err(|e| format!("{s:?}: {e}"))?),
            "gw-priority" => {
                settings.gw_priority = v
                    .parse()
                    .map_err(|_| format!("{s:?}: gw-priority {v:?} is not an integer"))?;
            }
            "driver-opt" => {
                let (dk, dv) = key_value(v).map_err(|e| format!("{s:?}: driver-opt {e}"))?;
                settings.driver_options.insert(dk, dv);
            }
            "interface-name" => settings.interface_name = v.to_owned(),
            other => {
                return Err(format!(
                    "{s:?}: unknown key {other:?} (known: name, alias, ip, ip6, mac-address, link-local-ip, gw-priority, driver-opt, interface-name)"
                ));
            }
        }
    }
    if network.is_empty() {
        return Err(format!("{s:?}: name=NETWORK is missing"));
    }
    Ok(pb::NetworkAttachment {
        network,
        settings: Some(settings),
    })
}

/// One `-f/--filter KEY=VALUE` expression (`label!=` kept as its own key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub key: String,
    pub value: String,
}

/// Parses a `--filter` value; `label!=x` becomes key `label!`.
pub fn filter(s: &str) -> Result<Filter, String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE (e.g. name=web)"))?;
    let key = k.trim().to_ascii_lowercase();
    if key.is_empty() || key == "!" {
        return Err(format!("{s:?}: the filter name is empty"));
    }
    Ok(Filter {
        key,
        value: v.to_owned(),
    })
}

/// Checks every filter's key against `known`, naming the first unknown one.
pub fn check_filter_keys(filters: &[Filter], known: &[&str]) -> Result<(), String> {
    for f in filters {
        if !known.contains(&f.key.as_str()) {
            return Err(format!(
                "unknown filter {:?} (known: {})",
                f.key,
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// The values of every filter with this key.
pub fn values(filters: &[Filter], key: &str) -> Vec<String> {
    filters
        .iter()
        .filter(|f| f.key == key)
        .map(|f| f.value.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: &str) -> pb::PortMapping {
        publish(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn pm(
        host_ip: &str,
        host_port: u32,
        container_port: u32,
        proto: pb::Protocol,
        range: u32,
    ) -> pb::PortMapping {
        pb::PortMapping {
            host_ip: host_ip.into(),
            host_port,
            container_port,
            protocol: proto.into(),
            range,
        }
    }

    use pb::Protocol::{Sctp, Tcp, Udp};

    #[test]
    fn publish_container_port_alone_asks_for_an_ephemeral_host_port() {
        assert_eq!(p("80"), pm("", 0, 80, Tcp, 1));
        assert_eq!(p("53/udp"), pm("", 0, 53, Udp, 1));
    }

    #[test]
    fn publish_host_and_container_ports() {
        assert_eq!(p("8080:80"), pm("", 8080, 80, Tcp, 1));
        assert_eq!(p("8080:80/tcp"), pm("", 8080, 80, Tcp, 1));
        assert_eq!(p("5353:53/UDP"), pm("", 5353, 53, Udp, 1));
        assert_eq!(p("9999:99/sctp"), pm("", 9999, 99, Sctp, 1));
        assert_eq!(p("65535:1"), pm("", 65535, 1, Tcp, 1));
    }

    #[test]
    fn publish_with_ipv4_host_ip() {
        assert_eq!(p("127.0.0.1:8080:80"), pm("127.0.0.1", 8080, 80, Tcp, 1));
        assert_eq!(p("0.0.0.0:8080:80/udp"), pm("0.0.0.0", 8080, 80, Udp, 1));
        assert_eq!(p("127.0.0.1::80"), pm("127.0.0.1", 0, 80, Tcp, 1));
    }

    #[test]
    fn publish_with_ipv6_host_ip_bracketed_or_not() {
        assert_eq!(p("[::1]:8080:80"), pm("::1", 8080, 80, Tcp, 1));
        assert_eq!(p("[::]:8080:80/udp"), pm("::", 8080, 80, Udp, 1));
        assert_eq!(p("[::1]::80"), pm("::1", 0, 80, Tcp, 1));
        assert_eq!(p("::1:8080:80"), pm("::1", 8080, 80, Tcp, 1));
        assert_eq!(
            p("[fd00:1::7]:8000-8002:80-82"),
            pm("fd00:1::7", 8000, 80, Tcp, 3)
        );
        assert_eq!(p("fd00::1:443:443"), pm("fd00::1", 443, 443, Tcp, 1));
        assert_eq!(
            p("[0:0:0:0:0:0:0:1]:80:80"),
            pm("::1", 80, 80, Tcp, 1),
            "the address is canonicalised"
        );
    }

    #[test]
    fn publish_ranges() {
        assert_eq!(p("8000-8010:80-90"), pm("", 8000, 80, Tcp, 11));
        assert_eq!(p("80-90"), pm("", 0, 80, Tcp, 11));
        assert_eq!(p("127.0.0.1::80-81/udp"), pm("127.0.0.1", 0, 80, Udp, 2));
        assert_eq!(p("8080-8080:80-80"), pm("", 8080, 80, Tcp, 1));
    }

    #[test]
    fn publish_refuses_bad_specs_naming_the_problem() {
        let err = |s: &str| publish(s).expect_err(s);
        assert!(err("").contains("container port is missing"));
        assert!(err("8080:").contains("container port is missing"));
        assert!(err("0").contains("ports are 1-65535"));
        assert!(err("65536").contains("invalid container port \"65536\""));
        assert!(err("70000:80").contains("invalid host port \"70000\""));
        assert!(err("http").contains("invalid container port"));
        assert!(err("80/icmp").contains("unknown protocol \"icmp\""));
        assert!(err("80/").contains("unknown protocol \"\""));
        assert!(err("8000-8010:80").contains("must be the same length"));
        assert!(err("8000:80-90").contains("must be the same length"));
        assert!(err("8000-8001:80-90").contains("must be the same length"));
        assert!(err("90-80").contains("end is before the start"));
        assert!(err("-80").contains("invalid container port"));
        assert!(err("localhost:8080:80").contains("invalid host IP \"localhost\""));
        assert!(err("1.2.3:8080:80").contains("invalid host IP"));
        assert!(err("[::1:8080:80").contains("invalid host IP"));
        assert!(err("127.0.0.1:80").contains("invalid host port \"127.0.0.1\""));
    }

    #[test]
    fn key_value_needs_a_key_and_an_equals_sign() {
        assert_eq!(
            key_value("com.docker.network.driver.mtu=1400").unwrap(),
            ("com.docker.network.driver.mtu".into(), "1400".into())
        );
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(key_value("a=").unwrap(), ("a".into(), String::new()));
        assert!(key_value("novalue").unwrap_err().contains("KEY=VALUE"));
        assert!(
            key_value("=x")
                .unwrap_err()
                .contains("key before '=' is empty")
        );
    }

    #[test]
    fn labels_may_omit_the_value() {
        assert_eq!(label("env=prod").unwrap(), ("env".into(), "prod".into()));
        assert_eq!(label("flag").unwrap(), ("flag".into(), String::new()));
        assert!(label("").is_err());
    }

    #[test]
    fn aux_address_needs_a_name_and_an_ip() {
        assert_eq!(
            aux_address("router=10.1.0.5").unwrap(),
            ("router".into(), "10.1.0.5".into())
        );
        assert_eq!(
            aux_address("r6=[fd00::5]").unwrap(),
            ("r6".into(), "fd00::5".into())
        );
        assert!(aux_address("10.1.0.5").unwrap_err().contains("NAME=IP"));
        assert!(
            aux_address("r=10.1.0.300")
                .unwrap_err()
                .contains("not an IP address")
        );
    }

    #[test]
    fn ip_flags_check_the_family() {
        assert_eq!(ipv4("10.0.0.7").unwrap(), "10.0.0.7");
        assert!(ipv4("fd00::7").unwrap_err().contains("not an IPv4"));
        assert_eq!(ipv6("FD00::0007").unwrap(), "fd00::7");
        assert!(ipv6("10.0.0.7").unwrap_err().contains("not an IPv6"));
        assert!(ip("nope").is_err());
    }

    #[test]
    fn cidr_accepts_subnets_and_zero_address_sizes() {
        assert_eq!(cidr("10.1.0.0/24").unwrap(), "10.1.0.0/24");
        assert_eq!(cidr("0.0.0.0/24").unwrap(), "0.0.0.0/24");
        assert_eq!(cidr("fd00:1::/64").unwrap(), "fd00:1::/64");
        assert!(cidr("10.1.0.0").unwrap_err().contains("CIDR"));
        assert!(cidr("10.1.0.0/33").is_err());
    }

    #[test]
    fn add_host_accepts_docker_forms() {
        let h = extra_host("db:10.0.0.9").unwrap();
        assert_eq!(
            (h.hostname.as_str(), h.address.as_str()),
            ("db", "10.0.0.9")
        );
        let h = extra_host("db6:fd00::9").unwrap();
        assert_eq!(
            (h.hostname.as_str(), h.address.as_str()),
            ("db6", "fd00::9")
        );
        let h = extra_host("db6:[fd00::9]").unwrap();
        assert_eq!(h.address, "fd00::9");
        let h = extra_host("gw=host-gateway").unwrap();
        assert_eq!(
            (h.hostname.as_str(), h.address.as_str()),
            ("gw", "host-gateway")
        );
        assert!(extra_host("db").unwrap_err().contains("HOST:IP"));
        assert!(
            extra_host(":10.0.0.1")
                .unwrap_err()
                .contains("host name is empty")
        );
        assert!(
            extra_host("db:nope")
                .unwrap_err()
                .contains("not an IP address")
        );
    }

    #[test]
    fn network_attachment_short_and_long_forms() {
        let a = attachment("front").unwrap();
        assert_eq!(a.network, "front");
        assert!(a.settings.is_none());
        let a = attachment(
            "name=back,alias=db,alias=pg,ip=10.2.0.9,gw-priority=-5,driver-opt=com.docker.network.endpoint.sysctls=x=1",
        )
        .unwrap();
        assert_eq!(a.network, "back");
        let s = a.settings.unwrap();
        assert_eq!(s.aliases, ["db", "pg"]);
        assert_eq!(s.ipv4_address, "10.2.0.9");
        assert_eq!(s.gw_priority, -5);
        assert_eq!(
            s.driver_options["com.docker.network.endpoint.sysctls"],
            "x=1"
        );
        assert!(attachment("alias=x").unwrap_err().contains("name=NETWORK"));
        assert!(
            attachment("name=x,colour=red")
                .unwrap_err()
                .contains("unknown key \"colour\"")
        );
        assert!(
            attachment("name=x,ip=fd00::1")
                .unwrap_err()
                .contains("not an IPv4")
        );
        assert!(
            attachment("name=x,gw-priority=high")
                .unwrap_err()
                .contains("not an integer")
        );
    }

    #[test]
    fn filters_parse_and_check_keys() {
        assert_eq!(
            filter("label=env=prod").unwrap(),
            Filter {
                key: "label".into(),
                value: "env=prod".into()
            }
        );
        assert_eq!(filter("label!=tmp").unwrap().key, "label!");
        assert_eq!(filter("Name=web").unwrap().key, "name");
        assert!(filter("web").unwrap_err().contains("KEY=VALUE"));
        assert!(filter("=web").unwrap_err().contains("filter name is empty"));
        let fs = vec![filter("name=a").unwrap(), filter("colour=b").unwrap()];
        let err = check_filter_keys(&fs, &["name", "id"]).unwrap_err();
        assert!(
            err.contains("unknown filter \"colour\" (known: name, id)"),
            "{err}"
        );
        assert_eq!(values(&fs, "name"), ["a"]);
    }
}
