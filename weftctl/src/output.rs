//! Human-readable output: aligned tables like Docker's, short ids, port and event lines.

use std::fmt::Write as _;

use weft_proto::gateway::v1 as pb;

/// Docker's short id length.
pub const SHORT_ID: usize = 12;

/// The first 12 characters of an id, or all of it with `no_trunc`.
pub fn short_id(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        id.get(..SHORT_ID).unwrap_or(id)
    }
}

/// A table with a header row; columns are left-aligned and separated by three spaces (as
/// Docker's tabwriter does), the last column unpadded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|&h| h.to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 3;
                    let _ = write!(line, "{cell}{:pad$}", "");
                } else {
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn protocol(p: i32) -> &'static str {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Udp) => "udp",
        Ok(pb::Protocol::Sctp) => "sctp",
        _ => "tcp",
    }
}

/// A published port as `docker ps` shows it: `0.0.0.0:8080->80/tcp`,
/// `[::1]:8000-8009->80-89/udp`, `80/tcp` for a not yet chosen host port.
pub fn port(p: &pb::PortMapping) -> String {
    let n = p.range.max(1);
    let span = |first: u32| {
        if n == 1 {
            first.to_string()
        } else {
            format!("{first}-{}", first + n - 1)
        }
    };
    let proto = protocol(p.protocol);
    if p.host_port == 0 {
        return format!("{}/{proto}", span(p.container_port));
    }
    let ip = match p.host_ip.as_str() {
        "" => String::new(),
        ip if ip.contains(':') => format!("[{ip}]:"),
        ip => format!("{ip}:"),
    };
    format!(
        "{ip}{}->{}/{proto}",
        span(p.host_port),
        span(p.container_port)
    )
}

/// The lower-case words of an event kind: `network created`, `endpoint connected`.
pub fn kind_words(kind: i32) -> String {
    let name = pb::EventKind::try_from(kind).map_or("EVENT_KIND_UNSPECIFIED", |k| k.as_str_name());
    name.trim_start_matches("EVENT_KIND_")
        .to_lowercase()
        .replace('_', " ")
}

/// One line per event, in the manner of `docker events`:
/// `TIME rev=N KIND ID (name=…, …)`.
pub fn event_line(e: &pb::Event) -> String {
    let mut line = match e.time {
        Some(t) => format!("{t} rev={} {}", e.revision, kind_words(e.kind)),
        None => format!("rev={} {}", e.revision, kind_words(e.kind)),
    };
    let (id, attrs): (&str, Vec<(&str, String)>) = match &e.object {
        Some(pb::event::Object::Network(n)) => (
            &n.id,
            vec![("name", n.name.clone()), ("driver", n.driver.clone())],
        ),
        Some(pb::event::Object::Sandbox(s)) => (
            &s.id,
            vec![("name", s.name.clone()), ("host", s.host.clone())],
        ),
        Some(pb::event::Object::Endpoint(x)) => (
            &x.id,
            vec![
                ("network", x.network_name.clone()),
                ("sandbox", x.sandbox_name.clone()),
                ("ipv4", x.ipv4_address.clone()),
                ("ipv6", x.ipv6_address.clone()),
            ],
        ),
        Some(pb::event::Object::Host(h)) => (&h.name, vec![("agent", h.agent_address.clone())]),
        None => ("", Vec::new()),
    };
    if !id.is_empty() {
        line.push(' ');
        line.push_str(id);
    }
    let attrs: Vec<String> = attrs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !attrs.is_empty() {
        let _ = write!(line, " ({})", attrs.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_like_docker() {
        let mut t = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
        t.row(vec![
            "0123456789ab".into(),
            "bridge".into(),
            "bridge".into(),
            "local".into(),
        ]);
        t.row(vec![
            "ba9876543210".into(),
            "a-much-longer-name".into(),
            "overlay".into(),
            "global".into(),
        ]);
        assert_eq!(
            t.render(),
            "NETWORK ID     NAME                 DRIVER    SCOPE\n\
             0123456789ab   bridge               bridge    local\n\
             ba9876543210   a-much-longer-name   overlay   global\n"
        );
    }

    #[test]
    fn table_with_only_a_header_prints_the_header() {
        assert_eq!(Table::new(&["A", "B"]).render(), "A   B\n");
    }

    #[test]
    fn short_ids_are_twelve_characters() {
        let id = "0123456789abcdef";
        assert_eq!(short_id(id, false), "0123456789ab");
        assert_eq!(short_id(id, true), id);
        assert_eq!(short_id("abc", false), "abc");
    }

    #[test]
    fn ports_print_like_docker_ps() {
        let p = |host_ip: &str, host_port, container_port, protocol: pb::Protocol, range| {
            port(&pb::PortMapping {
                host_ip: host_ip.into(),
                host_port,
                container_port,
                protocol: protocol.into(),
                range,
            })
        };
        assert_eq!(
            p("0.0.0.0", 8080, 80, pb::Protocol::Tcp, 1),
            "0.0.0.0:8080->80/tcp"
        );
        assert_eq!(p("", 8080, 80, pb::Protocol::Tcp, 1), "8080->80/tcp");
        assert_eq!(
            p("::1", 8000, 80, pb::Protocol::Udp, 10),
            "[::1]:8000-8009->80-89/udp"
        );
        assert_eq!(p("", 0, 53, pb::Protocol::Sctp, 0), "53/sctp");
    }

    #[test]
    fn event_lines_name_kind_object_and_attributes() {
        let e = pb::Event {
            revision: 12,
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            kind: pb::EventKind::EndpointConnected.into(),
            object: Some(pb::event::Object::Endpoint(pb::Endpoint {
                id: "e1".into(),
                network_name: "front".into(),
                sandbox_name: "web".into(),
                ipv4_address: "10.1.0.2/24".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20Z rev=12 endpoint connected e1 (network=front, sandbox=web, ipv4=10.1.0.2/24)"
        );
        let end = pb::Event {
            revision: 3,
            kind: pb::EventKind::SnapshotEnd.into(),
            ..Default::default()
        };
        assert_eq!(event_line(&end), "rev=3 snapshot end");
    }
}
