//! Hosts (machines running a driver-agent) in the gateway's own terms: a registration as asked,
//! validated, and the host as stored.

use weft_runtime::FieldViolation;

use super::{
    check::{Violations, check_name, check_text, parse_ip},
    limits::{
        MAX_HOST_ADDRESSES, MAX_HOST_DRIVERS, MAX_HOST_IPSEC_MISSING, MAX_HOST_IPSEC_TEXT,
        MAX_HOST_TEXT,
    },
};

/// What a host's kernel and agent can do, as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCapabilities {
    pub drivers: Vec<String>,
    pub bridge: bool,
    pub veth: bool,
    pub vxlan: bool,
    pub macvlan: bool,
    pub ipvlan: bool,
    pub vlan: bool,
    pub ipv6: bool,
    pub nftables: bool,
    pub nftables_nat: bool,
    pub kernel_release: String,
    /// IPsec ESP transport through XFRM with AES-GCM, what encrypted overlays need.
    pub ipsec: bool,
    /// What the agent's probe found missing for it.
    pub ipsec_missing: Vec<String>,
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub name: String,
    /// Where the gateway reaches the host's driver-agent (`HOST:PORT` or a URL).
    pub agent_address: String,
    /// The host's dns-svc admin API; empty when it has none.
    pub dns_address: String,
    pub addresses: Vec<String>,
    pub capabilities: Option<HostCapabilities>,
    pub agent_version: String,
    /// 0 when unknown.
    pub registered_at_ms: i64,
    pub up: bool,
    pub last_heartbeat_ms: i64,
}

/// The raw fields of a RegisterHost request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawHost {
    pub name: String,
    pub agent_address: String,
    pub dns_address: String,
    pub addresses: Vec<String>,
    pub capabilities: Option<HostCapabilities>,
    pub agent_version: String,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec(pub RawHost);

impl HostSpec {
    /// Every string of a registration ends up in ListHosts, events and a terminal's table:
    /// names by Docker's rule, addresses that can be dialled, bounded free text without
    /// control characters.
    pub fn validate(raw: RawHost) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Violations::default();
        errs.check(check_name("name", &raw.name));
        if raw.agent_address.is_empty() {
            errs.add(
                "agent_address",
                "",
                "required: where the gateway reaches the host's driver-agent (HOST:PORT)",
            );
        } else {
            errs.check(check_address("agent_address", &raw.agent_address));
        }
        if !raw.dns_address.is_empty() {
            errs.check(check_address("dns_address", &raw.dns_address));
        }
        if errs.count("addresses", raw.addresses.len(), MAX_HOST_ADDRESSES) {
            for (i, a) in raw.addresses.iter().enumerate() {
                errs.check(parse_ip(&format!("addresses[{i}]"), a).map(drop));
            }
        }
        errs.check(check_text(
            "agent_version",
            &raw.agent_version,
            MAX_HOST_TEXT,
        ));
        if let Some(c) = &raw.capabilities {
            let field = "capabilities.drivers";
            if errs.count(field, c.drivers.len(), MAX_HOST_DRIVERS) {
                for (i, d) in c.drivers.iter().enumerate() {
                    errs.check(check_name(&format!("{field}[{i}]"), d));
                }
            }
            errs.check(check_text(
                "capabilities.kernel_release",
                &c.kernel_release,
                MAX_HOST_TEXT,
            ));
            let field = "capabilities.ipsec_missing";
            if errs.count(field, c.ipsec_missing.len(), MAX_HOST_IPSEC_MISSING) {
                for (i, m) in c.ipsec_missing.iter().enumerate() {
                    errs.check(check_text(&format!("{field}[{i}]"), m, MAX_HOST_IPSEC_TEXT));
                }
            }
        }
        errs.finish(Self(raw))
    }
}

/// Why an encrypted overlay network (`--opt encrypted`) is refused, given every known host:
/// the hosts whose kernel lacks IPsec ESP with AES-GCM and what each lacks, as their agents
/// probed it; where every kernel has it, that Weft does not program IPsec tunnels yet.
pub fn encrypted_overlay_refusal(hosts: &[HostRecord]) -> String {
    let lacking: Vec<String> = hosts
        .iter()
        .filter_map(|h| match &h.capabilities {
            Some(c) if c.ipsec => None,
            Some(c) if !c.ipsec_missing.is_empty() => Some(format!(
                "host {:?} lacks {}",
                h.name,
                c.ipsec_missing.join(", ")
            )),
            Some(_) => Some(format!(
                "host {:?} has not probed it (an older agent, or one that could not)",
                h.name
            )),
            None => Some(format!("host {:?} has not reported its kernel", h.name)),
        })
        .collect();
    const WITHOUT: &str = "create the network without --opt encrypted";
    if lacking.is_empty() {
        format!(
            "encrypted overlay networks need IPsec tunnels between hosts, which Weft does not program yet (every host's kernel offers IPsec ESP with AES-GCM): {WITHOUT}"
        )
    } else {
        format!(
            "encrypted overlay networks need IPsec ESP in transport mode (XFRM, rfc4106(gcm(aes))) in every host's kernel, and Weft does not program IPsec tunnels yet: {}; {WITHOUT}",
            lacking.join("; ")
        )
    }
}

/// An address the gateway dials: `HOST:PORT` or a URL, bounded, without whitespace.
fn check_address(field: &str, address: &str) -> Result<(), FieldViolation> {
    check_text(field, address, MAX_HOST_TEXT)?;
    let dialable = !address.contains(char::is_whitespace)
        && tonic::transport::Endpoint::from_shared(agent_url(address)).is_ok();
    if !dialable {
        return Err(FieldViolation::new(
            field,
            address,
            "expected HOST:PORT or http://HOST:PORT",
        ));
    }
    Ok(())
}

/// `host:port` or a URL: a URL that can be dialled.
pub fn agent_url(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(missing: Vec<String>) -> RawHost {
        RawHost {
            name: "h1".into(),
            agent_address: "127.0.0.1:7702".into(),
            capabilities: Some(HostCapabilities {
                ipsec_missing: missing,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn what_a_host_lacks_for_ipsec_is_bounded_text() {
        let ok = vec!["esp4".to_owned(), "rfc4106(gcm(aes))".to_owned()];
        assert!(HostSpec::validate(raw(ok)).is_ok());
        let errs =
            HostSpec::validate(raw(vec!["x".into(); MAX_HOST_IPSEC_MISSING + 1])).unwrap_err();
        assert_eq!(errs[0].field, "capabilities.ipsec_missing", "{errs:?}");
        let errs = HostSpec::validate(raw(vec!["esp4\n\x1b[2J".into()])).unwrap_err();
        assert_eq!(errs[0].field, "capabilities.ipsec_missing[0]", "{errs:?}");
        let errs = HostSpec::validate(raw(vec!["e".repeat(MAX_HOST_IPSEC_TEXT + 1)])).unwrap_err();
        assert_eq!(errs[0].field, "capabilities.ipsec_missing[0]", "{errs:?}");
    }

    fn host(name: &str, caps: Option<HostCapabilities>) -> HostRecord {
        HostRecord {
            name: name.into(),
            agent_address: String::new(),
            dns_address: String::new(),
            addresses: Vec::new(),
            capabilities: caps,
            agent_version: String::new(),
            registered_at_ms: 0,
            up: true,
            last_heartbeat_ms: 0,
        }
    }

    #[test]
    fn the_encrypted_overlay_refusal_names_each_host_without_ipsec_and_what_it_lacks() {
        let with = |ipsec: bool, missing: &[&str]| {
            Some(HostCapabilities {
                ipsec,
                ipsec_missing: missing.iter().map(|m| (*m).to_owned()).collect(),
                ..Default::default()
            })
        };
        let m = encrypted_overlay_refusal(&[
            host("a", with(false, &["esp4", "rfc4106(gcm(aes))"])),
            host("b", with(true, &[])),
            host("c", with(false, &[])),
            host("d", None),
        ]);
        assert!(
            m.contains("host \"a\" lacks esp4, rfc4106(gcm(aes)); "),
            "{m}"
        );
        assert!(!m.contains("\"b\""), "{m}");
        assert!(m.contains("host \"c\" has not probed it"), "{m}");
        assert!(m.contains("host \"d\" has not reported its kernel"), "{m}");
        assert!(
            m.ends_with("create the network without --opt encrypted"),
            "{m}"
        );
        let m = encrypted_overlay_refusal(&[host("b", with(true, &[]))]);
        assert!(m.contains("which Weft does not program yet"), "{m}");
        assert!(!m.contains("host \""), "{m}");
    }
}
