//! The network configuration on stdin, decoded once into a checked [`NetConf`]. Unknown keys
//! are ignored (runtimes and other plugins add their own); known keys with bad values are
//! refused naming the key.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, code};

/// The versions of the spec this plugin speaks; the last is the newest.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The newest supported version.
pub const NEWEST: &str = "1.1.0";
/// stdin larger than this is refused (a config with a GC list of many thousand attachments
/// fits).
pub const STDIN_MAX: usize = 4 << 20;
/// The gateway of `weft up` on this host.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:7700";
/// Limits on runtimeConfig: the gateway's own limits where it has them.
pub const PORT_MAPPINGS_MAX: usize = 64;
pub const ALIASES_MAX: usize = 32;
pub const IPS_MAX: usize = 2;
/// `cni.dev/valid-attachments` entries.
pub const VALID_ATTACHMENTS_MAX: usize = 65_536;
/// Network and host names, as the gateway bounds them.
pub const NAME_MAX: usize = 128;
pub const HOST_MAX: usize = 253;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    cni_version: Option<String>,
    name: Option<String>,
    network: Option<String>,
    gateway: Option<String>,
    token_file: Option<PathBuf>,
    host: Option<String>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// What the runtime passes for the capabilities the conflist declares.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Static addresses ("10.0.0.7" or "10.0.0.7/24"), at most one per family.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: String,
    /// Podman's shape, `{"<network name>": ["alias", …]}`, or a plain list.
    #[serde(default)]
    pub aliases: Option<Value>,
}

/// One `portMappings` entry (the `portmap` plugin's shape).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub cni_version: String,
    /// The conflist's name (Podman keys `aliases` by it).
    pub name: String,
    /// The Weft network (name, id or unique id prefix).
    pub network: String,
    /// `HOST:PORT` of the gateway.
    pub gateway: String,
    pub token_file: Option<PathBuf>,
    /// The Weft host; empty: this host's registered name, else the only host.
    pub host: String,
    pub runtime: RuntimeConfig,
    /// Aliases for this network, from `runtimeConfig.aliases`.
    pub aliases: Vec<String>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Vec<Attachment>,
}

fn invalid(key: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(code::INVALID_CONFIG, format!("config key {key}: {why}"))
}

/// The version a config asks for, when stdin is readable at all; the newest otherwise (for the
/// error object of a config that could not be decoded).
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| NEWEST.to_owned())
}

impl NetConf {
    /// Decodes and checks stdin. `needs_network`: ADD, DEL, CHECK and GC act on one network.
    pub fn parse(stdin: &[u8], needs_network: bool) -> Result<Self, CniError> {
        if stdin.len() > STDIN_MAX {
            return Err(CniError::new(
                code::DECODE,
                format!("the config is {} bytes; at most {STDIN_MAX}", stdin.len()),
            ));
        }
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("the config on stdin is not JSON: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(CniError::new(
                code::DECODE,
                "the config on stdin is not a JSON object",
            ));
        }
        let raw: Raw = serde_json::from_value(value)
            .map_err(|e| CniError::new(code::INVALID_CONFIG, format!("invalid config: {e}")))?;
        let cni_version = raw
            .cni_version
            .ok_or_else(|| invalid("cniVersion", "missing"))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {:?} is not supported; supported: {}",
                    crate::env::clip(&cni_version),
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let network = raw.network.unwrap_or_default();
        if needs_network || !network.is_empty() {
            name_like("network", &network, NAME_MAX)?;
        }
        let host = raw.host.unwrap_or_default();
        if !host.is_empty() {
            name_like("host", &host, HOST_MAX)?;
        }
        let gateway = raw.gateway.unwrap_or_else(|| DEFAULT_GATEWAY.to_owned());
        check_gateway(&gateway)?;
        if let Some(p) = &raw.token_file
            && !p.is_absolute()
        {
            return Err(invalid(
                "tokenFile",
                format!("{p:?} is not an absolute path"),
            ));
        }
        let name = raw.name.unwrap_or_default();
        check_runtime(&raw.runtime_config)?;
        let aliases = aliases_for(raw.runtime_config.aliases.as_ref(), &name, &network)?;
        let valid_attachments = raw.valid_attachments.unwrap_or_default();
        if valid_attachments.len() > VALID_ATTACHMENTS_MAX {
            return Err(invalid(
                "cni.dev/valid-attachments",
                format!(
                    "{} entries; at most {VALID_ATTACHMENTS_MAX}",
                    valid_attachments.len()
                ),
            ));
        }
        if let Some(p) = &raw.prev_result
            && !p.is_object()
        {
            return Err(invalid("prevResult", "not a JSON object"));
        }
        Ok(Self {
            cni_version,
            name,
            network,
            gateway,
            token_file: raw.token_file,
            host,
            runtime: raw.runtime_config,
            aliases,
            prev_result: raw.prev_result,
            valid_attachments,
        })
    }
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*` of at most `max` characters.
fn name_like(key: &str, v: &str, max: usize) -> Result<(), CniError> {
    let mut chars = v.chars();
    let ok = v.len() <= max
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else if v.is_empty() {
        Err(invalid(key, "missing (the Weft network to attach to)"))
    } else {
        Err(invalid(
            key,
            format!(
                "{:?}: expected [a-zA-Z0-9][a-zA-Z0-9_.-]* of at most {max} characters",
                crate::env::clip(v)
            ),
        ))
    }
}

/// `HOST:PORT`, with a port from 1 to 65535.
fn check_gateway(v: &str) -> Result<(), CniError> {
    let bad = || {
        invalid(
            "gateway",
            format!("{:?}: expected HOST:PORT", crate::env::clip(v)),
        )
    };
    if v.len() > HOST_MAX + 8 {
        return Err(bad());
    }
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = host.parse::<std::net::IpAddr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')));
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(())
}

fn check_runtime(rc: &RuntimeConfig) -> Result<(), CniError> {
    if rc.port_mappings.len() > PORT_MAPPINGS_MAX {
        return Err(invalid(
            "runtimeConfig.portMappings",
            format!(
                "{} mappings; at most {PORT_MAPPINGS_MAX}",
                rc.port_mappings.len()
            ),
        ));
    }
    for (i, p) in rc.port_mappings.iter().enumerate() {
        let key = format!("runtimeConfig.portMappings[{i}]");
        if !(1..=65535).contains(&p.container_port) || p.host_port > 65535 {
            return Err(invalid(
                &key,
                "ports are 1-65535 (hostPort 0: any free port)",
            ));
        }
        if !matches!(p.protocol.to_ascii_lowercase().as_str(), "" | "tcp" | "udp") {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!(
                    "{key}.protocol {:?} is not supported: tcp or udp",
                    crate::env::clip(&p.protocol)
                ),
            ));
        }
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                &key,
                format!(
                    "hostIP {:?} is not an IP address",
                    crate::env::clip(&p.host_ip)
                ),
            ));
        }
    }
    if rc.ips.len() > IPS_MAX {
        return Err(invalid(
            "runtimeConfig.ips",
            format!("{} addresses; at most one per family", rc.ips.len()),
        ));
    }
    let mut families = Vec::new();
    for ip in &rc.ips {
        let addr = static_ip(ip).ok_or_else(|| {
            invalid(
                "runtimeConfig.ips",
                format!(
                    "{:?} is not an IP address (with or without /prefix)",
                    crate::env::clip(ip)
                ),
            )
        })?;
        if families.contains(&addr.is_ipv4()) {
            return Err(invalid(
                "runtimeConfig.ips",
                "at most one address per family",
            ));
        }
        families.push(addr.is_ipv4());
    }
    if !rc.mac.is_empty() && weft_runtime::mac::parse(&rc.mac).is_none() {
        return Err(invalid(
            "runtimeConfig.mac",
            format!("{:?} is not a MAC address", crate::env::clip(&rc.mac)),
        ));
    }
    Ok(())
}

/// The address of a `runtimeConfig.ips` entry, without its prefix length.
pub fn static_ip(v: &str) -> Option<std::net::IpAddr> {
    v.split_once('/').map_or(v, |(a, _)| a).parse().ok()
}

/// Aliases on this network: Podman's map (keyed by the conflist name, or the Weft network)
/// or a plain list.
fn aliases_for(v: Option<&Value>, name: &str, network: &str) -> Result<Vec<String>, CniError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(_)) => v,
        Some(Value::Object(m)) => m.get(name).or_else(|| m.get(network)),
        Some(_) => {
            return Err(invalid(
                "runtimeConfig.aliases",
                "expected a list or a map of lists",
            ));
        }
    };
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let aliases: Vec<String> = serde_json::from_value(list.clone())
        .map_err(|_| invalid("runtimeConfig.aliases", "expected a list of names"))?;
    if aliases.len() > ALIASES_MAX {
        return Err(invalid(
            "runtimeConfig.aliases",
            format!("{} aliases; at most {ALIASES_MAX}", aliases.len()),
        ));
    }
    Ok(aliases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes(), true)
    }

    #[test]
    fn a_full_config_is_read() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"web","type":"weft-cni","network":"my-net",
            "gateway":"10.0.0.1:7700","tokenFile":"/etc/weft/token","unknown":{"x":1},
            "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
            "ips":["10.1.0.9/24"],"mac":"02:42:ac:11:00:09","aliases":{"web":["www"]}}}"#,
        )
        .unwrap();
        assert_eq!(c.network, "my-net");
        assert_eq!(c.aliases, ["www"]);
        assert_eq!(c.runtime.port_mappings[0].host_port, 8080);
        assert_eq!(c.gateway, "10.0.0.1:7700");
    }

    #[test]
    fn bad_input_gets_the_spec_codes_naming_the_key() {
        for (conf, code, names) in [
            ("not json", 6, "not JSON"),
            ("[1]", 6, "not a JSON object"),
            (r#"{"cniVersion":"0.3.1","network":"n"}"#, 1, "0.3.1"),
            (r#"{"cniVersion":"1.0.0"}"#, 7, "network"),
            (r#"{"cniVersion":"1.0.0","network":"a b"}"#, 7, "network"),
            (
                r#"{"cniVersion":"1.0.0","network":"n","gateway":"x"}"#,
                7,
                "gateway",
            ),
            (
                r#"{"cniVersion":"1.0.0","network":"n","tokenFile":"t"}"#,
                7,
                "tokenFile",
            ),
            (
                r#"{"cniVersion":"1.0.0","network":"n","runtimeConfig":{"mac":"zz"}}"#,
                7,
                "mac",
            ),
            (
                r#"{"cniVersion":"1.0.0","network":"n","runtimeConfig":{"ips":["10.0.0.1","10.0.0.2"]}}"#,
                7,
                "ips",
            ),
            (
                r#"{"cniVersion":"1.0.0","network":"n","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":2,"protocol":"sctp"}]}}"#,
                2,
                "sctp",
            ),
            (
                r#"{"cniVersion":"1.0.0","network":"n","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":0}]}}"#,
                7,
                "portMappings[0]",
            ),
        ] {
            let e = parse(conf).unwrap_err();
            assert_eq!(e.code, code, "{conf}: {e}");
            assert!(e.msg.contains(names), "{conf}: {e}");
        }
        let big = vec![b' '; STDIN_MAX + 1];
        assert_eq!(NetConf::parse(&big, true).unwrap_err().code, 6);
    }
}
