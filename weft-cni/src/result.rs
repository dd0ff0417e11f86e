//! The result of ADD, in the shape of the config's `cniVersion`: 0.4.0 marks each IP with its
//! `version`; 1.0.0 and 1.1.0 do not.

use serde_json::{Value, json};

/// One interface of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// The container's namespace; `None` for the host side.
    pub sandbox: Option<String>,
}

/// One address: CIDR form, with the network's gateway of that family (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ip {
    pub address: ipnet::IpNet,
    pub gateway: Option<std::net::IpAddr>,
}

/// What ADD found, before it is shaped for a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The host side first (when the driver has one), then the container interface.
    pub interfaces: Vec<Interface>,
    pub ips: Vec<Ip>,
    /// Default routes: (destination, gateway).
    pub routes: Vec<(ipnet::IpNet, std::net::IpAddr)>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// The embedded DNS server every Weft sandbox has.
pub const NAMESERVER: &str = "127.0.0.11";

impl Attached {
    /// The result object for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let container = self
            .interfaces
            .iter()
            .position(|i| i.sandbox.is_some())
            .unwrap_or(0);
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({"name": i.name, "mac": i.mac});
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                v
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({"interface": container, "address": ip.address.to_string()});
                if let Some(g) = ip.gateway {
                    v["gateway"] = json!(g.to_string());
                }
                if cni_version == "0.4.0" {
                    v["version"] = json!(if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    });
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|(dst, gw)| json!({"dst": dst.to_string(), "gw": gw.to_string()}))
            .collect();
        let mut dns = json!({"nameservers": [NAMESERVER]});
        if !self.search.is_empty() {
            dns["search"] = json!(self.search);
        }
        if !self.options.is_empty() {
            dns["options"] = json!(self.options);
        }
        json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached() -> Attached {
        Attached {
            interfaces: vec![
                Interface {
                    name: "wv1234".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:42:0a:00:00:02".into(),
                    sandbox: Some("/run/netns/c".into()),
                },
            ],
            ips: vec![Ip {
                address: "10.0.0.2/24".parse().unwrap(),
                gateway: Some("10.0.0.1".parse().unwrap()),
            }],
            routes: vec![("0.0.0.0/0".parse().unwrap(), "10.0.0.1".parse().unwrap())],
            search: vec!["example.com".into()],
            options: vec![],
        }
    }

    #[test]
    fn ips_point_at_the_container_interface_and_carry_their_version_only_in_0_4_0() {
        let v1 = attached().to_json("1.0.0");
        assert_eq!(v1["ips"][0]["interface"], 1);
        assert_eq!(v1["ips"][0].get("version"), None);
        assert_eq!(v1["interfaces"][0].get("sandbox"), None);
        assert_eq!(v1["interfaces"][1]["sandbox"], "/run/netns/c");
        assert_eq!(v1["dns"]["nameservers"][0], "127.0.0.11");
        assert_eq!(
            v1["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.0.0.1"})
        );
        let v04 = attached().to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["cniVersion"], "0.4.0");
    }
}
