//! Addresses as integers: every address is handled as a `u128` (IPv4 in the low 32 bits), which
//! makes ranges, next-free and subnet carving plain arithmetic for both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    /// Stored form (the `family` column).
    pub fn to_i64(self) -> i64 {
        match self {
            Self::V4 => 4,
            Self::V6 => 6,
        }
    }

    pub fn from_i64(v: i64) -> Option<Self> {
        match v {
            4 => Some(Self::V4),
            6 => Some(Self::V6),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `family` with integer value `v` (truncated to 32 bits for IPv4).
pub fn from_u128(family: Family, v: u128) -> IpAddr {
    match family {
        #[allow(clippy::cast_possible_truncation)]
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// First and last address of `net`, as integers.
pub fn net_bounds(net: &IpNet) -> (u128, u128) {
    (to_u128(net.network()), to_u128(net.broadcast()))
}

/// Stored form of an address: 16 bytes, big-endian, so byte order is numeric order in both
/// SQLite and Postgres.
pub fn to_bytes(v: u128) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub fn from_bytes(b: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(b).ok().map(u128::from_be_bytes)
}

/// How many addresses a prefix of `len` bits holds in `family` (saturating for a /0 IPv6).
pub fn block_size(family: Family, len: u8) -> u128 {
    let host_bits = u32::from(family.bits() - len);
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "10.1.2.3",
            "255.255.255.255",
            "::1",
            "fd00::ffff:1",
            "0.0.0.0",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            let v = to_u128(ip);
            assert_eq!(from_u128(Family::of(ip), v), ip);
            assert_eq!(from_bytes(&to_bytes(v)), Some(v));
        }
    }

    #[test]
    fn byte_order_is_numeric_order() {
        let a = to_bytes(0x0a00_00ff);
        let b = to_bytes(0x0a00_0100);
        assert!(a < b);
    }

    #[test]
    fn block_sizes() {
        assert_eq!(block_size(Family::V4, 24), 256);
        assert_eq!(block_size(Family::V6, 64), 1 << 64);
        assert_eq!(block_size(Family::V6, 0), u128::MAX);
    }
}
