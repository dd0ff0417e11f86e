//! Sandboxes (the network namespace of a container or pod) in the gateway's own terms: the
//! request as asked, the validated spec, and the record as stored.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use weft_runtime::FieldViolation;

use super::{
    check::{
        Violations, check_container_id, check_dns_name, check_hostname, check_key, check_labels,
        check_name, check_netns_path, check_resolv_option, check_search_domain, parse_ip,
    },
    endpoint::{EndpointSpec, RawSettings},
    limits::{
        MAX_ATTACHMENTS, MAX_DNS_OPTIONS, MAX_DNS_SEARCH, MAX_DNS_SEARCH_LINE, MAX_DNS_SERVERS,
        MAX_EXTRA_HOSTS,
    },
    ports::{self, PortRecord, RawPort},
};

/// The resolver settings of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// A sandbox as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub container_id: String,
    pub host: String,
    pub netns_path: String,
    pub hostname: String,
    pub dns: DnsRecord,
    /// (hostname, address), in the order given.
    pub extra_hosts: Vec<(String, String)>,
    pub port_mappings: Vec<PortRecord>,
    pub network_mode: String,
    pub labels: BTreeMap<String, String>,
    pub created_at_ms: i64,
    /// The agent created the namespace (and deletes it with the sandbox).
    #[serde(default)]
    pub netns_managed: bool,
    /// Where the agent wrote the sandbox's resolv.conf and hosts files.
    #[serde(default)]
    pub resolv_conf_path: String,
    #[serde(default)]
    pub hosts_path: String,
}

impl SandboxRecord {
    /// The sandbox whose endpoints this one shows: itself, or for `container:` mode the one
    /// whose namespace it shares.
    pub fn endpoints_owner(&self) -> &str {
        self.network_mode
            .strip_prefix("container:")
            .unwrap_or(&self.id)
    }

    /// Whether removing the sandbox on the agent takes all its interfaces with it: a namespace
    /// the agent made for this sandbox alone is deleted whole (the kernel destroys its veths),
    /// so its endpoints need no Detach one by one.
    pub fn removal_takes_interfaces(&self) -> bool {
        self.netns_managed && !self.network_mode.starts_with("container:")
    }
}

/// One initial attachment as asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawAttachment {
    pub network: String,
    pub settings: RawSettings,
}

/// The raw fields of a CreateSandbox request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSandbox {
    pub name: String,
    pub container_id: String,
    pub host: String,
    pub netns_path: String,
    pub hostname: String,
    pub dns: DnsRecord,
    /// (hostname, address).
    pub extra_hosts: Vec<(String, String)>,
    pub port_mappings: Vec<RawPort>,
    pub networks: Vec<RawAttachment>,
    pub network_mode: String,
    pub labels: BTreeMap<String, String>,
}

/// Whose namespace a sandbox lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// Its own namespace, connected to networks.
    Own,
    /// Its own namespace, loopback only, never connected.
    None,
    /// The host's namespace.
    Host,
    /// The namespace of the sandbox this key names.
    Container(String),
}

impl NetworkMode {
    fn parse(mode: &str) -> Result<Self, FieldViolation> {
        match mode {
            "" => Ok(Self::Own),
            "none" => Ok(Self::None),
            "host" => Ok(Self::Host),
            m => match m.strip_prefix("container:") {
                Some(target) => Ok(Self::Container(target.to_owned())),
                None => Err(FieldViolation::new(
                    "network_mode",
                    m,
                    "expected empty, \"none\", \"host\" or \"container:<sandbox>\"",
                )),
            },
        }
    }
}

/// An extra hosts entry's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAddress {
    Ip(IpAddr),
    /// Docker's `host-gateway`: the gateway address of the `bridge` network.
    HostGateway,
}

/// One initial attachment, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentSpec {
    pub network: String,
    pub settings: EndpointSpec,
}

/// A validated CreateSandbox request: every value checked for what its consumer accepts;
/// what depends on other state (the host, the shared sandbox, free names and ports) is
/// checked by the saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Empty: derived from the id.
    pub name: String,
    pub container_id: String,
    /// Empty: the only host.
    pub host: String,
    pub netns_path: String,
    /// Empty: derived from the container id or the id.
    pub hostname: String,
    pub dns: DnsRecord,
    pub extra_hosts: Vec<(String, HostAddress)>,
    /// Host ports 0 still to be chosen.
    pub ports: Vec<PortRecord>,
    pub networks: Vec<AttachmentSpec>,
    pub network_mode: NetworkMode,
    /// As asked (`container:` with the caller's key).
    pub network_mode_text: String,
    pub labels: BTreeMap<String, String>,
}

impl SandboxSpec {
    pub fn validate(raw: RawSandbox) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Violations::default();
        if !raw.name.is_empty() {
            errs.check(check_name("name", &raw.name));
        }
        if !raw.container_id.is_empty() {
            errs.check(check_container_id("container_id", &raw.container_id));
        }
        if !raw.host.is_empty() {
            errs.check(check_name("host", &raw.host));
        }
        if !raw.netns_path.is_empty() {
            errs.check(check_netns_path("netns_path", &raw.netns_path));
        }
        let mode = NetworkMode::parse(&raw.network_mode)
            .map_err(|v| errs.check(Err(v)))
            .unwrap_or(NetworkMode::Own);
        check_mode_excludes(&raw, &mut errs);
        if !raw.hostname.is_empty() {
            errs.check(check_hostname("hostname", &raw.hostname));
        }
        check_dns(&raw.dns, &mut errs);
        let extra_hosts = check_extra_hosts(&raw.extra_hosts, &mut errs);
        let ports = ports::validate(raw.port_mappings)
            .map_err(|v| errs.extend(v))
            .unwrap_or_default();
        let networks = check_attachments(raw.networks, &mut errs);
        errs.extend(check_labels("labels", &raw.labels));
        errs.finish(Self {
            name: raw.name,
            container_id: raw.container_id,
            host: raw.host,
            netns_path: raw.netns_path,
            hostname: raw.hostname,
            dns: raw.dns,
            extra_hosts,
            ports,
            networks,
            network_mode: mode,
            network_mode_text: raw.network_mode,
            labels: raw.labels,
        })
    }
}

/// At most [`MAX_ATTACHMENTS`], each naming a network, with valid settings.
fn check_attachments(
    attachments: Vec<RawAttachment>,
    errs: &mut Violations,
) -> Vec<AttachmentSpec> {
    if !errs.count("networks", attachments.len(), MAX_ATTACHMENTS) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, a) in attachments.into_iter().enumerate() {
        let field = format!("networks[{i}].network");
        if a.network.is_empty() {
            errs.add(field, "", "must name a network");
        } else {
            errs.check(check_key(&field, &a.network, "network"));
        }
        match EndpointSpec::validate(&format!("networks[{i}].settings."), a.settings) {
            Ok(settings) => out.push(AttachmentSpec {
                network: a.network,
                settings,
            }),
            Err(v) => errs.extend(v),
        }
    }
    out
}

/// A sandbox that shares or lacks a namespace of its own has no attachments or ports.
fn check_mode_excludes(raw: &RawSandbox, errs: &mut Violations) {
    let mode = raw.network_mode.as_str();
    if mode.is_empty() {
        return;
    }
    if !raw.networks.is_empty() {
        errs.add(
            "networks",
            raw.networks.len().to_string(),
            format!("no attachments with network_mode {mode:?}"),
        );
    }
    if !raw.port_mappings.is_empty() {
        errs.add(
            "port_mappings",
            raw.port_mappings.len().to_string(),
            format!("no published ports with network_mode {mode:?}"),
        );
    }
}

/// The resolver settings, for `resolv.conf` and dns-svc: at most [`MAX_DNS_SERVERS`] upstreams
/// (an IP address, or IP:PORT with a port other than 0), at most [`MAX_DNS_SEARCH`] search
/// domains (DNS names, on a line of at most [`MAX_DNS_SEARCH_LINE`] bytes), at most
/// [`MAX_DNS_OPTIONS`] options the resolver knows.
fn check_dns(dns: &DnsRecord, errs: &mut Violations) {
    if errs.count("dns.servers", dns.servers.len(), MAX_DNS_SERVERS) {
        for (i, d) in dns.servers.iter().enumerate() {
            let ok = d.parse::<IpAddr>().is_ok()
                || d.parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.port() != 0);
            if !ok {
                errs.add(
                    format!("dns.servers[{i}]"),
                    d,
                    "not an IP address (or IP:PORT)",
                );
            }
        }
    }
    if errs.count("dns.search", dns.search.len(), MAX_DNS_SEARCH) {
        for (i, s) in dns.search.iter().enumerate() {
            errs.check(check_search_domain(&format!("dns.search[{i}]"), s));
        }
        let line = dns.search.join(" ");
        if line.len() > MAX_DNS_SEARCH_LINE {
            errs.add(
                "dns.search",
                line,
                format!("longer than {MAX_DNS_SEARCH_LINE} bytes joined (resolvers ignore a longer search line)"),
            );
        }
    }
    if errs.count("dns.options", dns.options.len(), MAX_DNS_OPTIONS) {
        for (i, o) in dns.options.iter().enumerate() {
            errs.check(check_resolv_option(&format!("dns.options[{i}]"), o));
        }
    }
}

/// At most [`MAX_EXTRA_HOSTS`], each a DNS name and an IP address or `host-gateway`.
fn check_extra_hosts(
    hosts: &[(String, String)],
    errs: &mut Violations,
) -> Vec<(String, HostAddress)> {
    let mut out = Vec::new();
    if !errs.count("extra_hosts", hosts.len(), MAX_EXTRA_HOSTS) {
        return out;
    }
    for (i, (name, address)) in hosts.iter().enumerate() {
        errs.check(check_dns_name(&format!("extra_hosts[{i}].hostname"), name));
        let address = if address == "host-gateway" {
            Ok(HostAddress::HostGateway)
        } else {
            parse_ip(&format!("extra_hosts[{i}].address"), address).map(HostAddress::Ip)
        };
        match address {
            Ok(a) => out.push((name.clone(), a)),
            Err(v) => errs.check(Err(v)),
        }
    }
    out
}

/// The first `n` characters of `s` (never splits a character).
pub fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(at, _)| &s[..at])
}

/// The name of a sandbox created without one: the first 12 characters of its id, as Docker's
/// short ids.
pub fn default_name(id: &str) -> String {
    prefix(id, 12).to_owned()
}

/// The hostname of a sandbox created without one: the first 12 characters of the container id
/// when it has 12 or more and they make a hostname (a CNI id may have `.` or `-` there), else
/// of the sandbox id (as Docker uses the short container id).
pub fn default_hostname(container_id: &str, id: &str) -> String {
    let short = prefix(container_id, 12);
    if container_id.chars().count() >= 12 && check_hostname("hostname", short).is_ok() {
        short.to_owned()
    } else {
        prefix(id, 12).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz oracle: 255 bytes of domains made a 262-byte `search` line, which musl
    /// ignores whole.
    #[test]
    fn the_search_line_fits_musls_line_buffer() {
        let raw = |search: Vec<String>| RawSandbox {
            dns: DnsRecord {
                search,
                ..DnsRecord::default()
            },
            ..RawSandbox::default()
        };
        // Four domains of 60 bytes and one of 3: 247 bytes joined, a 254-byte line.
        let mut ok: Vec<String> = ["a", "b", "c", "d"].map(|c| c.repeat(60)).to_vec();
        ok.push("abc".into());
        assert_eq!(ok.join(" ").len(), 247);
        assert!(SandboxSpec::validate(raw(ok.clone())).is_ok());
        let mut over = ok;
        over[4] = "abcd".into();
        let errs = SandboxSpec::validate(raw(over)).unwrap_err();
        assert_eq!(errs[0].field, "dns.search", "{errs:?}");
    }

    #[test]
    fn prefixes_never_split_a_character() {
        assert_eq!(prefix("abcdef", 3), "abc");
        assert_eq!(prefix("ab", 3), "ab");
        let multibyte = "ééééééééééééé";
        assert_eq!(prefix(multibyte, 12).chars().count(), 12);
        assert_eq!(default_hostname("ééé", "0123456789abcdef"), "0123456789ab");
        assert_eq!(
            default_hostname(multibyte, "0123456789abcdef")
                .chars()
                .count(),
            12
        );
    }
}
