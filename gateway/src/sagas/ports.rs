//! Published ports: Docker's `-p` rules, which host ports clash, and the choice of free ones.

use weft_proto::gateway::v1 as pb;
use weft_runtime::FieldViolation;

use crate::{
    domain::sandbox::PortRecord, engine::Gateway, error::GatewayError, sagas::connect::parse_ip,
    store,
};

impl Gateway {
    /// Refuses host ports already published on `host` (naming the holder) and picks free ones
    /// for `host_port: 0`.
    pub(crate) async fn assign_ports(
        &self,
        host: &str,
        ports: &mut [PortRecord],
    ) -> Result<(), GatewayError> {
        if ports.is_empty() {
            return Ok(());
        }
        let taken: Vec<(String, PortRecord)> = {
            let mut conn = self.db.read().acquire().await?;
            store::sandboxes::list(&mut conn)
                .await?
                .into_iter()
                .filter(|s| s.host == host)
                .flat_map(|s| {
                    s.port_mappings
                        .into_iter()
                        .map(move |p| (s.name.clone(), p))
                })
                .collect()
        };
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
                let first = (EPHEMERAL_FIRST..=EPHEMERAL_LAST + 1 - p.range).find(|&start| {
                    let cand = PortRecord {
                        host_port: start,
                        ..p.clone()
                    };
                    holders().all(|(_, t)| !ports_clash(&cand, t))
                });
                match first {
                    Some(start) => p.host_port = start,
                    None => {
                        return Err(GatewayError::Exhausted(format!(
                            "no {} free host ports on host {host:?}",
                            p.range
                        )));
                    }
                }
            } else if let Some((holder, t)) = holders().find(|(_, t)| ports_clash(p, t)) {
                return Err(GatewayError::PortTaken(format!(
                    "host port {}{}/{} is already published by sandbox {holder:?} ({}:{})",
                    if p.host_ip.is_empty() {
                        String::new()
                    } else {
                        format!("{}:", p.host_ip)
                    },
                    p.host_port,
                    protocol_name(p.protocol),
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
}

/// Docker's ephemeral range for published ports whose host port is 0.
const EPHEMERAL_FIRST: u32 = 49153;
const EPHEMERAL_LAST: u32 = 60999;

fn protocol_name(p: i32) -> &'static str {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Udp) => "udp",
        Ok(pb::Protocol::Sctp) => "sctp",
        _ => "tcp",
    }
}

/// Whether two published ranges would take the same host port: same protocol, overlapping
/// ports, and host addresses that overlap (a wildcard of a family overlaps every address of
/// it; empty overlaps everything).
fn ports_clash(a: &PortRecord, b: &PortRecord) -> bool {
    let proto = |p: i32| if p == 0 { pb::Protocol::Tcp as i32 } else { p };
    if proto(a.protocol) != proto(b.protocol) {
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

/// Checks published ports (Docker's `-p` rules).
pub(crate) fn check_ports(ports: &[pb::PortMapping]) -> Vec<FieldViolation> {
    let mut errs = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let f = |n: &str| format!("port_mappings[{i}].{n}");
        if p.container_port == 0 || p.container_port > 65535 {
            errs.push(FieldViolation::new(
                f("container_port"),
                p.container_port.to_string(),
                "a port from 1 to 65535",
            ));
        }
        if p.host_port > 65535 {
            errs.push(FieldViolation::new(
                f("host_port"),
                p.host_port.to_string(),
                "a port from 0 to 65535",
            ));
        }
        let last = u64::from(p.container_port.max(p.host_port)) + u64::from(p.range.max(1)) - 1;
        if last > 65535 {
            errs.push(FieldViolation::new(
                f("range"),
                p.range.to_string(),
                "the range runs past port 65535",
            ));
        }
        if !p.host_ip.is_empty() {
            parse_ip(&f("host_ip"), &p.host_ip, &mut errs);
        }
        if pb::Protocol::try_from(p.protocol).is_err() {
            errs.push(FieldViolation::new(
                f("protocol"),
                p.protocol.to_string(),
                "unknown protocol (tcp, udp, sctp)",
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: &str, port: u32, range: u32, proto: pb::Protocol) -> PortRecord {
        PortRecord {
            protocol: proto as i32,
            host_ip: ip.into(),
            host_port: port,
            container_port: 80,
            range,
        }
    }

    #[test]
    fn port_clashes_follow_protocol_range_and_address() {
        use pb::Protocol::{Tcp, Udp};
        assert!(ports_clash(
            &port("", 8080, 1, Tcp),
            &port("", 8080, 1, Tcp)
        ));
        assert!(!ports_clash(
            &port("", 8080, 1, Tcp),
            &port("", 8080, 1, Udp)
        ));
        assert!(ports_clash(
            &port("", 8000, 10, Tcp),
            &port("", 8009, 1, Tcp)
        ));
        assert!(!ports_clash(
            &port("", 8000, 10, Tcp),
            &port("", 8010, 1, Tcp)
        ));
        assert!(ports_clash(
            &port("0.0.0.0", 80, 1, Tcp),
            &port("127.0.0.1", 80, 1, Tcp)
        ));
        assert!(!ports_clash(
            &port("::", 80, 1, Tcp),
            &port("127.0.0.1", 80, 1, Tcp)
        ));
        assert!(!ports_clash(
            &port("127.0.0.1", 80, 1, Tcp),
            &port("127.0.0.2", 80, 1, Tcp)
        ));
        assert!(ports_clash(&port("", 80, 1, Tcp), &port("::1", 80, 1, Tcp)));
    }
}
