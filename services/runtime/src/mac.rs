//! The one rule that gives an endpoint its MAC address when the caller names none: the gateway
//! stores it with the endpoint, and the agent falls back to the same rule for a spec without
//! one, so both always agree.
//!
//! `02:42` as Docker's prefix (locally administered, unicast), then 32 bits of FNV-1a over the
//! endpoint id: stable across builds and hosts, spread for any id (Docker takes the IPv4
//! address instead, which IPv6-only endpoints do not have).

/// The MAC of endpoint `endpoint_id`, as six bytes.
pub fn derive(endpoint_id: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in endpoint_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // Fold the upper half in so every input byte reaches the four bytes kept.
    [
        0x02,
        0x42,
        b[0] ^ b[4],
        b[1] ^ b[5],
        b[2] ^ b[6],
        b[3] ^ b[7],
    ]
}

/// Parses "aa:bb:cc:dd:ee:ff" (two hex digits per octet, six octets, nothing else).
pub fn parse(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for o in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// "aa:bb:cc:dd:ee:ff", lower case.
pub fn format(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_unicast_locally_administered_and_spread() {
        let a = derive("ep-1");
        assert_eq!(a, derive("ep-1"));
        assert_ne!(a, derive("ep-2"));
        assert_eq!(&a[..2], &[0x02, 0x42]);
        assert_eq!(a[0] & 0x01, 0, "unicast");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
        // Ids that share a prefix (and non-hex ids) still differ. (Parsing and formatting are
        // tested where the agent uses them, `driver_agent::names`.)
        let many: std::collections::HashSet<_> = (0..10_000)
            .map(|i| derive(&format!("sandbox-{i}")))
            .collect();
        assert_eq!(many.len(), 10_000);
    }
}
