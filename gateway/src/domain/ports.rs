//! Published ports: Docker's `-p` rules, which host ports clash, and the choice of free ones
//! for `host_port: 0`, as pure functions of the ports already published on the host.

use serde::{Deserialize, Serialize};
use weft_runtime::FieldViolation;

use super::{
    check::{Violations, parse_ip},
    limits::MAX_PORT_MAPPINGS,
};

/// Transport protocol of a published port; the numbers are the API's (`weft.gateway.v1.Protocol`)
/// and the stored records'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "i32", try_from = "i32")]
pub enum Protocol {
    Tcp = 1,
    Udp = 2,
    Sctp = 3,
}

impl Protocol {
    /// The API's number; 0 (unspecified) is TCP, as in Docker.
    pub fn from_number(n: i32) -> Option<Self> {
        match n {
            0 | 1 => Some(Self::Tcp),
            2 => Some(Self::Udp),
            3 => Some(Self::Sctp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

impl From<Protocol> for i32 {
    fn from(p: Protocol) -> Self {
        p as i32
    }
}

impl TryFrom<i32> for Protocol {
    type Error = String;

    fn try_from(n: i32) -> Result<Self, Self::Error> {
        Self::from_number(n).ok_or_else(|| format!("unknown protocol {n}"))
    }
}

/// One published port range as asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawPort {
    pub host_ip: String,
    pub host_port: u32,
    pub container_port: u32,
    /// The API's protocol number.
    pub protocol: i32,
    pub range: u32,
}

/// A published port range as stored: protocol and range explicit, the host port chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub protocol: Protocol,
    pub host_ip: String,
    pub host_port: u32,
    pub container_port: u32,
    pub range: u32,
}

/// Docker's ephemeral range for published ports whose host port is 0.
pub const EPHEMERAL_FIRST: u32 = 49153;
pub const EPHEMERAL_LAST: u32 = 60999;
/// How many ports the ephemeral range holds: the largest `range` with `host_port: 0`.
pub const EPHEMERAL_PORTS: u32 = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1;

/// Checks published ports (Docker's `-p` rules) and makes protocol and range explicit; the
/// host port stays 0 where one is to be chosen.
pub fn validate(ports: Vec<RawPort>) -> Result<Vec<PortRecord>, Vec<FieldViolation>> {
    let mut errs = Violations::default();
    let mut out = Vec::new();
    if !errs.count("port_mappings", ports.len(), MAX_PORT_MAPPINGS) {
        return errs.finish(out);
    }
    for (i, p) in ports.into_iter().enumerate() {
        let f = |n: &str| format!("port_mappings[{i}].{n}");
        if p.container_port == 0 || p.container_port > 65535 {
            errs.add(
                f("container_port"),
                p.container_port.to_string(),
                "a port from 1 to 65535",
            );
        }
        if p.host_port > 65535 {
            errs.add(
                f("host_port"),
                p.host_port.to_string(),
                "a port from 0 to 65535",
            );
        }
        let last = u64::from(p.container_port.max(p.host_port)) + u64::from(p.range.max(1)) - 1;
        if last > 65535 {
            errs.add(
                f("range"),
                p.range.to_string(),
                "the range runs past port 65535",
            );
        } else if p.host_port == 0 && p.range > EPHEMERAL_PORTS {
            errs.add(
                f("range"),
                p.range.to_string(),
                format!(
                    "a block of chosen host ports holds at most {EPHEMERAL_PORTS} (the ephemeral range {EPHEMERAL_FIRST}-{EPHEMERAL_LAST})"
                ),
            );
        }
        // Kept in its canonical spelling, so that clashes compare addresses, not spellings
        // (`::0` is the IPv6 wildcard, `0::1` is `::1`), as the agent compares them.
        let mut host_ip = p.host_ip.clone();
        if !p.host_ip.is_empty() {
            match parse_ip(&f("host_ip"), &p.host_ip) {
                Ok(ip) => host_ip = ip.to_string(),
                Err(v) => errs.check(Err(v)),
            }
        }
        let Some(protocol) = Protocol::from_number(p.protocol) else {
            errs.add(
                f("protocol"),
                p.protocol.to_string(),
                "unknown protocol (tcp, udp, sctp)",
            );
            continue;
        };
        out.push(PortRecord {
            protocol,
            host_ip,
            host_port: p.host_port,
            container_port: p.container_port,
            range: p.range.max(1),
        });
    }
    errs.finish(out)
}

/// Whether two published ranges would take the same host port: same protocol, overlapping
/// ports, and host addresses that overlap (a wildcard of a family overlaps every address of
/// it; empty overlaps everything).
pub fn clash(a: &PortRecord, b: &PortRecord) -> bool {
    if a.protocol != b.protocol {
        return false;
    }
    let (a0, a1) = (a.host_port, a.host_port + a.range.max(1) - 1);
    let (b0, b1) = (b.host_port, b.host_port + b.range.max(1) - 1);
    if a1 < b0 || b1 < a0 {
        return false;
    }
    let family = |ip: &str| -> (Option<bool>, bool) {
        // (is v6, is wildcard)
        match ip {
            "" => (None, true),
            "0.0.0.0" => (Some(false), true),
            "::" => (Some(true), true),
            ip => (Some(ip.contains(':')), false),
        }
    };
    let ((fa, wa), (fb, wb)) = (family(&a.host_ip), family(&b.host_ip));
    match (fa, fb) {
        (Some(x), Some(y)) if x != y => false,
        _ => wa || wb || a.host_ip == b.host_ip,
    }
}

/// Why ports cannot be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortConflict {
    /// No block of free ephemeral ports is large enough.
    Exhausted(String),
    /// A host port is already published (the message names the holder).
    Taken(String),
}

/// Refuses host ports that clash with `taken` (published by the named sandboxes) or with an
/// earlier mapping of the same request, and picks free ones for `host_port: 0`.
pub fn assign(
    host: &str,
    taken: &[(String, PortRecord)],
    ports: &mut [PortRecord],
) -> Result<(), PortConflict> {
    for i in 0..ports.len() {
        let (done, rest) = ports.split_at_mut(i);
        let p = &mut rest[0];
        let holders = || {
            taken
                .iter()
                .map(|(n, t)| (n.as_str(), t))
                .chain(done.iter().map(|t| ("this sandbox", t)))
        };
        if p.host_port == 0 {
            // `validate` bounds the range by the ephemeral range; saturating all the same.
            let last_start = (EPHEMERAL_LAST + 1).saturating_sub(p.range);
            let first = (EPHEMERAL_FIRST..=last_start).find(|&start| {
                let cand = PortRecord {
                    host_port: start,
                    ..p.clone()
                };
                holders().all(|(_, t)| !clash(&cand, t))
            });
            match first {
                Some(start) => p.host_port = start,
                None => {
                    return Err(PortConflict::Exhausted(format!(
                        "no {} free host ports on host {host:?}",
                        p.range
                    )));
                }
            }
        } else if let Some((holder, t)) = holders().find(|(_, t)| clash(p, t)) {
            return Err(PortConflict::Taken(format!(
                "host port {}{}/{} is already published by sandbox {holder:?} ({}:{})",
                if p.host_ip.is_empty() {
                    String::new()
                } else {
                    format!("{}:", p.host_ip)
                },
                p.host_port,
                p.protocol.name(),
                if t.host_ip.is_empty() {
                    "*"
                } else {
                    &t.host_ip
                },
                t.host_port
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: &str, port: u32, range: u32, protocol: Protocol) -> PortRecord {
        PortRecord {
            protocol,
            host_ip: ip.into(),
            host_port: port,
            container_port: 80,
            range,
        }
    }

    #[test]
    fn port_clashes_follow_protocol_range_and_address() {
        use Protocol::{Tcp, Udp};
        assert!(clash(&port("", 8080, 1, Tcp), &port("", 8080, 1, Tcp)));
        assert!(!clash(&port("", 8080, 1, Tcp), &port("", 8080, 1, Udp)));
        assert!(clash(&port("", 8000, 10, Tcp), &port("", 8009, 1, Tcp)));
        assert!(!clash(&port("", 8000, 10, Tcp), &port("", 8010, 1, Tcp)));
        assert!(clash(
            &port("0.0.0.0", 80, 1, Tcp),
            &port("127.0.0.1", 80, 1, Tcp)
        ));
        assert!(!clash(
            &port("::", 80, 1, Tcp),
            &port("127.0.0.1", 80, 1, Tcp)
        ));
        assert!(!clash(
            &port("127.0.0.1", 80, 1, Tcp),
            &port("127.0.0.2", 80, 1, Tcp)
        ));
        assert!(clash(&port("", 80, 1, Tcp), &port("::1", 80, 1, Tcp)));
    }

    /// Found by the fuzz oracle: `::0` and `::1` (or `0::1` and `::1`) did not clash here, so
    /// the request was accepted and then refused by the agent, which compares addresses.
    #[test]
    fn host_addresses_are_compared_whatever_their_spelling() {
        let raw = |ip: &str| RawPort {
            host_ip: ip.into(),
            host_port: 8080,
            container_port: 80,
            protocol: 1,
            range: 1,
        };
        let ports = validate(vec![raw("::0"), raw("0::1"), raw("0:0:0:0:0:0:0:1")]).unwrap();
        let ips: Vec<&str> = ports.iter().map(|p| p.host_ip.as_str()).collect();
        assert_eq!(ips, ["::", "::1", "::1"]);
        assert!(clash(&ports[0], &ports[1]));
        assert!(clash(&ports[1], &ports[2]));
        let mut ports = ports;
        assert!(matches!(
            assign("h", &[], &mut ports),
            Err(PortConflict::Taken(_))
        ));
    }

    #[test]
    fn stored_protocols_keep_the_api_numbers() {
        let json = serde_json::to_string(&port("", 80, 1, Protocol::Udp)).unwrap();
        assert!(json.contains("\"protocol\":2"), "{json}");
        let back: PortRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.protocol, Protocol::Udp);
    }
}
