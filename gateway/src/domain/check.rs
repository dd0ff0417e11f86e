//! Checks of single values, shared by every spec, each against what its consumer accepts:
//! names, DNS names and hostnames (`hosts`, `resolv.conf`, dns-svc's records), interface names
//! (links, nftables rules, sysctl paths), resolver options, namespace paths, labels. Each
//! returns the violation naming the field and the value.

use std::{collections::BTreeMap, net::IpAddr};

use weft_runtime::FieldViolation;

use super::limits::{
    MAX_CONTAINER_ID, MAX_DNS_LABEL, MAX_DNS_NAME, MAX_ENDPOINT_SYSCTLS, MAX_HOSTNAME, MAX_IFNAME,
    MAX_KEY, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS, MAX_NAME, MAX_NETNS_PATH,
};

/// Violations collected while one request is checked.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(
        &mut self,
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.0.push(FieldViolation::new(field, value, reason));
    }

    /// Keeps the violation of a failed check.
    pub fn check(&mut self, result: Result<(), FieldViolation>) {
        if let Err(v) = result {
            self.0.push(v);
        }
    }

    pub fn extend(&mut self, more: Vec<FieldViolation>) {
        self.0.extend(more);
    }

    /// A repeated field may hold at most `max` entries; false when it holds more (the caller
    /// then skips checking each of them).
    pub fn count(&mut self, field: &str, len: usize, max: usize) -> bool {
        if len > max {
            self.add(field, len.to_string(), format!("at most {max} entries"));
            return false;
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `ok` when nothing was found, else every violation.
    pub fn finish<T>(self, ok: T) -> Result<T, Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(self.0)
        }
    }
}

fn refuse(field: &str, value: &str, reason: impl Into<String>) -> Result<(), FieldViolation> {
    Err(FieldViolation::new(field, value, reason))
}

/// Docker's name rule (networks, sandboxes, hosts): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// [`MAX_NAME`] characters.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldViolation> {
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() {
        return refuse(field, name, "must not be empty");
    }
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return refuse(field, name, "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*");
    }
    if name.len() > MAX_NAME {
        return refuse(field, name, format!("longer than {MAX_NAME} characters"));
    }
    Ok(())
}

/// A lookup key (a name, an id or an id prefix): required, at most [`MAX_KEY`] bytes, no
/// control characters.
pub fn check_key(field: &str, key: &str, what: &str) -> Result<(), FieldViolation> {
    if key.is_empty() {
        return refuse(
            field,
            key,
            format!("must name a {what} (name, id or id prefix)"),
        );
    }
    if key.len() > MAX_KEY {
        return refuse(field, key, format!("longer than {MAX_KEY} bytes"));
    }
    if key.chars().any(char::is_control) {
        return refuse(field, key, "contains control characters");
    }
    Ok(())
}

/// A DNS name (alias, extra host, hostname): dot-separated labels of 1 to 63 letters, digits,
/// `-` and `_` (not starting or ending with `-`), at most 253 characters.
pub fn check_dns_name(field: &str, name: &str) -> Result<(), FieldViolation> {
    if name.is_empty() {
        return refuse(field, name, "not a DNS name: empty");
    }
    if name.len() > MAX_DNS_NAME {
        return refuse(
            field,
            name,
            format!("not a DNS name: longer than {MAX_DNS_NAME} characters"),
        );
    }
    for label in name.split('.') {
        let reason = if label.is_empty() {
            "an empty label"
        } else if label.len() > MAX_DNS_LABEL {
            "a label longer than 63 characters"
        } else if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            "only letters, digits, - and _ in a label"
        } else if label.starts_with('-') || label.ends_with('-') {
            "a label starting or ending with -"
        } else {
            continue;
        };
        return refuse(field, name, format!("not a DNS name: {reason}"));
    }
    Ok(())
}

/// A search domain: a DNS name, optionally fully qualified (one trailing dot).
pub fn check_search_domain(field: &str, domain: &str) -> Result<(), FieldViolation> {
    let bare = domain.strip_suffix('.').unwrap_or(domain);
    check_dns_name(field, bare).map_err(|v| FieldViolation::new(field, domain, v.reason))
}

/// A hostname: a DNS name of at most [`MAX_HOSTNAME`] characters.
pub fn check_hostname(field: &str, name: &str) -> Result<(), FieldViolation> {
    check_dns_name(field, name)?;
    if name.len() > MAX_HOSTNAME {
        return refuse(
            field,
            name,
            format!("longer than {MAX_HOSTNAME} characters (the kernel's hostname limit)"),
        );
    }
    Ok(())
}

/// An interface name, strictly: 1 to 15 bytes (IFNAMSIZ) of letters, digits, `_`, `.` and
/// `-`, not starting with `-`, not `.` or `..`. The kernel refuses `/`, `:` and whitespace; the
/// rest keeps the name safe in nftables rules (no `*` wildcard, no quotes), sysctl paths and
/// `ip` command lines.
pub fn check_ifname(field: &str, name: &str) -> Result<(), FieldViolation> {
    check_ifname_len(field, name, MAX_IFNAME)
}

/// An interface name prefix (names are the prefix plus an index): as [`check_ifname`], at
/// most `max` bytes.
pub fn check_ifname_len(field: &str, name: &str, max: usize) -> Result<(), FieldViolation> {
    let rule = format!(
        "an interface name: 1 to {max} characters from a-z A-Z 0-9 _ . -, not starting with -, not . or .."
    );
    let ok = !name.is_empty()
        && name.len() <= max
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return refuse(field, name, rule);
    }
    Ok(())
}

/// A MAC address (six colon-separated hex bytes, unicast, not all zeros: the kernel and the
/// agent refuse both).
pub fn check_mac(field: &str, mac: &str) -> Result<(), FieldViolation> {
    let parts: Vec<_> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
    if !ok {
        return refuse(field, mac, "not a MAC address (aa:bb:cc:dd:ee:ff)");
    }
    if u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 1) {
        return refuse(field, mac, "a multicast MAC address");
    }
    if parts.iter().all(|p| u8::from_str_radix(p, 16) == Ok(0)) {
        return refuse(field, mac, "the all-zero MAC address");
    }
    Ok(())
}

/// An IP address of either family.
pub fn parse_ip(field: &str, value: &str) -> Result<IpAddr, FieldViolation> {
    value
        .parse()
        .map_err(|_| FieldViolation::new(field, value, "not an IP address"))
}

/// A link-local address: 169.254.0.0/16 or fe80::/10.
pub fn check_link_local(field: &str, value: &str) -> Result<(), FieldViolation> {
    let link_local = match parse_ip(field, value)? {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    };
    if !link_local {
        return refuse(
            field,
            value,
            "not a link-local address (169.254.0.0/16, fe80::/10)",
        );
    }
    Ok(())
}

/// A container id, as CNI's CONTAINERID: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// [`MAX_CONTAINER_ID`] characters (its first 12 characters become a hostname and a DNS name).
pub fn check_container_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return refuse(
            field,
            id,
            "must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (CNI's rule)",
        );
    }
    if id.len() > MAX_CONTAINER_ID {
        return refuse(
            field,
            id,
            format!("longer than {MAX_CONTAINER_ID} characters"),
        );
    }
    Ok(())
}

/// A namespace path, lexically: absolute, no `..` component, no control characters, at most
/// [`MAX_NETNS_PATH`] bytes. Whether it is a network namespace the caller may use is the
/// agent's to check (it opens the file).
pub fn check_netns_path(field: &str, path: &str) -> Result<(), FieldViolation> {
    let reason = if !path.starts_with('/') {
        "must be an absolute path"
    } else if path.len() > MAX_NETNS_PATH {
        "longer than 4096 bytes"
    } else if path.chars().any(char::is_control) {
        "contains control characters"
    } else if path.split('/').any(|c| c == "..") {
        "must not contain .. components"
    } else if is_weft_managed(path) {
        // The agent accepts Weft's own `weft-<sandbox id>` namespaces (a `container:` sandbox
        // shares one by the gateway's choice): a caller naming one would join another
        // sandbox's namespace without asking for it.
        "names a namespace Weft made for a sandbox: share one with network_mode \"container:<sandbox>\""
    } else {
        return Ok(());
    };
    refuse(field, path, reason)
}

/// Whether `path` is where the agent keeps the namespaces it makes (`/run/netns/weft-*`, also
/// through `/var/run`, with any run of slashes or `.` components).
fn is_weft_managed(path: &str) -> bool {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match parts.as_slice() {
        ["run", "netns", name] | ["var", "run", "netns", name] => name.starts_with("weft-"),
        _ => false,
    }
}

/// Free text: at most `max` bytes, no control characters.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), FieldViolation> {
    if value.len() > max {
        return refuse(field, value, format!("longer than {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return refuse(field, value, "contains control characters");
    }
    Ok(())
}

/// Labels: at most [`MAX_LABELS`]; keys of 1 to [`MAX_LABEL_KEY`] bytes without whitespace,
/// `=` (filters are `key=value`) or control characters; values of at most [`MAX_LABEL_VALUE`]
/// bytes without control characters.
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Vec<FieldViolation> {
    let mut errs = Violations::default();
    if !errs.count(field, labels.len(), MAX_LABELS) {
        return errs.0;
    }
    for (k, v) in labels {
        let key_reason = if k.is_empty() {
            Some("label keys must not be empty".to_owned())
        } else if k.len() > MAX_LABEL_KEY {
            Some(format!("a label key longer than {MAX_LABEL_KEY} bytes"))
        } else if k
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '=')
        {
            Some("a label key with whitespace, = or control characters".to_owned())
        } else {
            None
        };
        if let Some(reason) = key_reason {
            errs.add(field, k, reason);
            continue;
        }
        errs.check(check_text(&format!("{field}[{k}]"), v, MAX_LABEL_VALUE));
    }
    errs.0
}

/// A resolv.conf option as glibc's resolver knows it: `ndots:N` (0 to 15), `timeout:N` (1 to
/// 30), `attempts:N` (1 to 5), or one of the flags `rotate`, `edns0`, `single-request`,
/// `single-request-reopen`, `no-tld-query`, `use-vc`, `no-reload`, `trust-ad`, `no-aaaa`,
/// `inet6`, `debug`. (glibc clamps larger numbers; musl knows only the three numeric ones and
/// ignores the rest.)
pub fn check_resolv_option(field: &str, option: &str) -> Result<(), FieldViolation> {
    const FLAGS: &[&str] = &[
        "rotate",
        "edns0",
        "single-request",
        "single-request-reopen",
        "no-tld-query",
        "use-vc",
        "no-reload",
        "trust-ad",
        "no-aaaa",
        "inet6",
        "debug",
    ];
    let ok = match option.split_once(':') {
        Some((name, n)) => {
            let range = match name {
                "ndots" => Some(0..=15),
                "timeout" => Some(1..=30),
                "attempts" => Some(1..=5),
                _ => None,
            };
            range.is_some_and(|range| {
                n.len() <= 2
                    && n.chars().all(|c| c.is_ascii_digit())
                    && n.parse::<u32>().is_ok_and(|n| range.contains(&n))
            })
        }
        None => FLAGS.contains(&option),
    };
    if !ok {
        return refuse(
            field,
            option,
            format!(
                "not a resolver option (ndots:0-15, timeout:1-30, attempts:1-5, {})",
                FLAGS.join(", ")
            ),
        );
    }
    Ok(())
}

/// `com.docker.network.endpoint.sysctls`, as Docker takes it: comma-separated
/// `net.ipv4.conf.IFNAME.KEY=VALUE` (or `ipv6`, `mpls`), `IFNAME` literally (the interface's
/// name is put in when applied), KEY of `a-z 0-9 _`, VALUE of `A-Z a-z 0-9 _ . -`, at most
/// [`MAX_ENDPOINT_SYSCTLS`] of them: nothing that could leave the interface's sysctl directory.
pub fn check_endpoint_sysctls(field: &str, value: &str) -> Result<(), FieldViolation> {
    let entries: Vec<&str> = value.split(',').collect();
    if entries.len() > MAX_ENDPOINT_SYSCTLS {
        return refuse(
            field,
            value,
            format!("at most {MAX_ENDPOINT_SYSCTLS} sysctls"),
        );
    }
    let entry_ok = |e: &str| {
        let Some((name, v)) = e.split_once('=') else {
            return false;
        };
        let key = [
            "net.ipv4.conf.IFNAME.",
            "net.ipv6.conf.IFNAME.",
            "net.mpls.conf.IFNAME.",
        ]
        .iter()
        .find_map(|p| name.strip_prefix(p));
        key.is_some_and(|k| {
            !k.is_empty()
                && k.len() <= 64
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }) && !v.is_empty()
            && v.len() <= 64
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    if !entries.iter().all(|e| entry_ok(e)) {
        return refuse(
            field,
            value,
            "expected net.ipv4.conf.IFNAME.KEY=VALUE[,…] (ipv4, ipv6 or mpls)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["my-net", "a", "net_1.x", "N9"] {
            assert!(check_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "ü", "a/b", &"x".repeat(129)] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_and_dns_names() {
        assert!(check_mac("m", "01:00:5e:00:00:01").is_err());
        assert!(check_mac("m", "02:42:ac:11:00:02").is_ok());
        // Found by the fuzz oracle: accepted here, refused by the agent (and the kernel).
        assert!(check_mac("m", "00:00:00:00:00:00").is_err());
        assert!(check_mac("m", "00:00:00:00:00:01").is_ok());
        for ok in ["web.local", "a", "x_y", &"a".repeat(63), "example.com"] {
            assert!(check_dns_name("a", ok).is_ok(), "{ok}");
        }
        for bad in [
            "-bad",
            "a..b",
            "a\nb",
            "a b",
            "é",
            &"a".repeat(64),
            &format!("{}.com", "a.".repeat(126)),
        ] {
            assert!(check_dns_name("a", bad).is_err(), "{bad:?}");
        }
        assert!(check_search_domain("s", "example.com.").is_ok());
        assert!(check_search_domain("s", "example.com..").is_err());
        assert!(check_hostname("h", &"a".repeat(63)).is_ok());
        assert!(check_hostname("h", &format!("{}.b", "a".repeat(63))).is_err());
    }

    #[test]
    fn interface_names_are_kernel_and_nft_safe() {
        for ok in ["eth0", "br-front", "eth0.10", "a_b", "x"] {
            assert!(check_ifname("i", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "eth*",
            "a/b",
            "a b",
            "a:b",
            "a\tb",
            "-x",
            "é",
            "a\"b",
            "0123456789abcdef",
        ] {
            assert!(check_ifname("i", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_options_ids_and_sysctls() {
        assert!(check_netns_path("p", "/run/netns/x").is_ok());
        for bad in [
            "run/netns/x",
            "/run/../proc/1/ns/net",
            "/a\0b",
            "/a\nb",
            "/run/netns/weft-0123456789ab",
            "//var/run/./netns//weft-x",
        ] {
            assert!(check_netns_path("p", bad).is_err(), "{bad:?}");
        }
        assert!(check_netns_path("p", &format!("/{}", "a".repeat(4096))).is_err());
        for ok in [
            "ndots:0",
            "ndots:15",
            "timeout:30",
            "attempts:1",
            "rotate",
            "edns0",
        ] {
            assert!(check_resolv_option("o", ok).is_ok(), "{ok}");
        }
        for bad in [
            "ndots:16",
            "ndots:",
            "timeout:0",
            "x",
            "ndots:1 rotate",
            "rotate\n",
            "",
        ] {
            assert!(check_resolv_option("o", bad).is_err(), "{bad:?}");
        }
        assert!(check_container_id("c", "c0ffee").is_ok());
        for bad in ["", "-a", "ééé", "a b", "a\0"] {
            assert!(check_container_id("c", bad).is_err(), "{bad:?}");
        }
        assert!(check_endpoint_sysctls("s", "net.ipv4.conf.IFNAME.log_martians=1").is_ok());
        for bad in [
            "net.ipv4.conf.eth0.log_martians=1",
            "net.ipv4.conf.IFNAME.../../x=1",
            "kernel.panic=1",
            "net.ipv4.conf.IFNAME.x=1 2",
        ] {
            assert!(check_endpoint_sysctls("s", bad).is_err(), "{bad}");
        }
        assert!(check_link_local("l", "169.254.1.1").is_ok());
        assert!(check_link_local("l", "fe80::1").is_ok());
        assert!(check_link_local("l", "10.0.0.1").is_err());
    }
}
