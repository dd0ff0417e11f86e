//! Checks of single values, shared by every spec: names, DNS names, interface names, MAC and
//! IP addresses, labels. Each returns the violation naming the field and the value.

use std::{collections::BTreeMap, net::IpAddr};

use weft_runtime::FieldViolation;

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

/// Docker's name rule (networks, sandboxes, hosts): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, here at most
/// 128 characters.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldViolation> {
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() {
        return Err(FieldViolation::new(field, name, "must not be empty"));
    }
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(FieldViolation::new(
            field,
            name,
            "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        ));
    }
    if name.len() > 128 {
        return Err(FieldViolation::new(
            field,
            name,
            "longer than 128 characters",
        ));
    }
    Ok(())
}

/// An interface name: 1 to 15 characters, no `/`, space or `:`.
pub fn check_interface(field: &str, name: &str) -> Result<(), FieldViolation> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', ':'])
        || name == "."
        || name == ".."
    {
        return Err(FieldViolation::new(
            field,
            name,
            "an interface name: 1 to 15 characters, no / : or space",
        ));
    }
    Ok(())
}

/// A DNS name (alias, hostname, extra host): dot-separated labels of letters, digits, `-` and
/// `_`, at most 253 characters.
pub fn check_dns_name(field: &str, name: &str) -> Result<(), FieldViolation> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(FieldViolation::new(field, name, "not a DNS name"));
    }
    Ok(())
}

/// A MAC address (six colon-separated hex bytes, unicast).
pub fn check_mac(field: &str, mac: &str) -> Result<(), FieldViolation> {
    let parts: Vec<_> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
    if !ok {
        return Err(FieldViolation::new(
            field,
            mac,
            "not a MAC address (aa:bb:cc:dd:ee:ff)",
        ));
    }
    if u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 1) {
        return Err(FieldViolation::new(field, mac, "a multicast MAC address"));
    }
    Ok(())
}

/// An IP address of either family.
pub fn parse_ip(field: &str, value: &str) -> Result<IpAddr, FieldViolation> {
    value
        .parse()
        .map_err(|_| FieldViolation::new(field, value, "not an IP address"))
}

/// Label keys must not be empty.
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Vec<FieldViolation> {
    labels
        .keys()
        .filter(|k| k.is_empty())
        .map(|k| FieldViolation::new(field, k, "label keys must not be empty"))
        .collect()
}

/// A lookup key (a name, an id or an id prefix) is required.
pub fn check_key(field: &str, key: &str, what: &str) -> Result<(), FieldViolation> {
    if key.is_empty() {
        return Err(FieldViolation::new(
            field,
            key,
            format!("must name a {what} (name, id or id prefix)"),
        ));
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
        assert!(check_dns_name("a", "web.local").is_ok());
        assert!(check_dns_name("a", "-bad").is_err());
    }
}
