//! Address spaces and their default address pools, and picking the first free subnet of a size.

use std::{collections::BTreeMap, str::FromStr};

use ipnet::IpNet;

use super::addr::{Family, block_size, from_u128, net_bounds};

/// Subnets of `size` bits carved out of `base` (Docker's `default-address-pools` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPool {
    pub base: IpNet,
    pub size: u8,
}

impl DefaultPool {
    pub fn new(base: &str, size: u8) -> Result<Self, String> {
        let base = IpNet::from_str(base).map_err(|_| format!("{base:?} is not a CIDR"))?;
        if base.trunc() != base {
            return Err(format!("{base} has host bits set"));
        }
        if size < base.prefix_len() || size > base.max_prefix_len() {
            return Err(format!("size /{size} does not fit in {base}"));
        }
        Ok(Self { base, size })
    }

    pub fn family(&self) -> Family {
        Family::of(self.base.addr())
    }
}

/// The address spaces with their default pools, in preference order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSpaces {
    pub spaces: BTreeMap<String, Vec<DefaultPool>>,
}

/// Docker's daemon defaults for `local`; swarm's for `global`; a ULA /40 each for IPv6.
const DEFAULTS: &[(&str, &str, u8)] = &[
    ("local", "172.17.0.0/16", 16),
    ("local", "172.18.0.0/16", 16),
    ("local", "172.19.0.0/16", 16),
    ("local", "172.20.0.0/14", 16),
    ("local", "172.24.0.0/14", 16),
    ("local", "172.28.0.0/14", 16),
    ("local", "192.168.0.0/16", 20),
    ("local", "fd77:6566:7400::/40", 64),
    ("global", "10.0.0.0/8", 24),
    ("global", "fd77:6566:7500::/40", 64),
];

impl Default for AddressSpaces {
    fn default() -> Self {
        let mut spaces: BTreeMap<String, Vec<DefaultPool>> = BTreeMap::new();
        for (space, base, size) in DEFAULTS {
            #[allow(clippy::expect_used)]
            let pool = DefaultPool::new(base, *size).expect("built-in default pools are valid");
            spaces.entry((*space).to_owned()).or_default().push(pool);
        }
        Self { spaces }
    }
}

/// Why no subnet could be picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickError {
    /// No default pool of this family can hold a subnet of that size.
    NoPoolFits {
        family: Family,
        prefix_len: Option<u8>,
    },
    /// Every candidate overlaps an existing pool.
    Exhausted {
        family: Family,
        prefix_len: Option<u8>,
    },
}

impl AddressSpaces {
    /// Parses `SPACE=BASE/LEN:SIZE` entries (for example `local=10.10.0.0/16:24`); the spaces
    /// they name replace their built-in defaults, the others keep theirs.
    pub fn with_overrides(entries: &[String]) -> Result<Self, String> {
        let mut out = Self::default();
        let mut replaced: BTreeMap<String, Vec<DefaultPool>> = BTreeMap::new();
        for e in entries {
            let (space, rest) = e
                .split_once('=')
                .ok_or_else(|| format!("{e:?}: expected SPACE=BASE/LEN:SIZE"))?;
            let (base, size) = rest
                .rsplit_once(':')
                .filter(|(b, _)| b.contains('/'))
                .ok_or_else(|| format!("{e:?}: expected SPACE=BASE/LEN:SIZE"))?;
            let size = size
                .parse::<u8>()
                .map_err(|_| format!("{e:?}: bad size {size:?}"))?;
            replaced
                .entry(space.to_owned())
                .or_default()
                .push(DefaultPool::new(base, size).map_err(|m| format!("{e:?}: {m}"))?);
        }
        out.spaces.extend(replaced);
        Ok(out)
    }

    pub fn names(&self) -> Vec<&str> {
        self.spaces.keys().map(String::as_str).collect()
    }

    /// The first subnet (in default-pool order, then address order) of `family` and
    /// `prefix_len` (default: each pool's own size) that overlaps none of `taken`.
    ///
    /// `taken` are the inclusive integer bounds of the space's existing pools, which never
    /// overlap each other. Cost: O(pools × log pools), whatever the sizes involved, because a
    /// candidate that overlaps a pool jumps straight past it.
    pub fn pick(
        &self,
        space: &str,
        family: Family,
        prefix_len: Option<u8>,
        taken: &[(u128, u128)],
    ) -> Result<IpNet, PickError> {
        let mut taken = taken.to_vec();
        taken.sort_unstable();
        let mut any_fits = false;
        for pool in self.spaces.get(space).into_iter().flatten() {
            if pool.family() != family {
                continue;
            }
            let len = prefix_len.unwrap_or(pool.size);
            if len < pool.base.prefix_len() || len > pool.base.max_prefix_len() {
                continue;
            }
            any_fits = true;
            let block = block_size(family, len);
            let (base_lo, base_hi) = net_bounds(&pool.base);
            let mut cand = base_lo;
            while let Some(cand_hi) = cand.checked_add(block - 1).filter(|h| *h <= base_hi) {
                // Ends are sorted like starts because pools are disjoint.
                let i = taken.partition_point(|(_, end)| *end < cand);
                match taken.get(i) {
                    Some((start, end)) if *start <= cand_hi => {
                        // Jump to the first aligned block after the overlapping pool.
                        let next = (end / block)
                            .checked_add(1)
                            .and_then(|n| n.checked_mul(block));
                        match next {
                            Some(n) => cand = n,
                            None => break,
                        }
                    }
                    _ => {
                        #[allow(clippy::expect_used)]
                        let net = IpNet::new(from_u128(family, cand), len)
                            .expect("prefix length checked against the base");
                        return Ok(net);
                    }
                }
            }
        }
        if any_fits {
            Err(PickError::Exhausted { family, prefix_len })
        } else {
            Err(PickError::NoPoolFits { family, prefix_len })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> (u128, u128) {
        net_bounds(&s.parse().unwrap())
    }

    #[test]
    fn picks_dockers_first_default_then_the_next_free() {
        let s = AddressSpaces::default();
        assert_eq!(
            s.pick("local", Family::V4, None, &[]).unwrap().to_string(),
            "172.17.0.0/16"
        );
        let taken = [b("172.17.0.0/16"), b("172.18.0.0/16")];
        assert_eq!(
            s.pick("local", Family::V4, None, &taken)
                .unwrap()
                .to_string(),
            "172.19.0.0/16"
        );
        assert_eq!(
            s.pick(
                "local",
                Family::V4,
                Some(24),
                &[b("172.17.0.0/24"), b("172.17.1.0/25")]
            )
            .unwrap()
            .to_string(),
            "172.17.2.0/24"
        );
        assert_eq!(
            s.pick("local", Family::V6, None, &[]).unwrap().to_string(),
            "fd77:6566:7400::/64"
        );
        assert_eq!(
            s.pick("global", Family::V4, None, &[]).unwrap().to_string(),
            "10.0.0.0/24"
        );
    }

    #[test]
    fn a_pool_that_is_too_small_or_full_is_an_error() {
        let s = AddressSpaces::with_overrides(&["local=10.10.0.0/23:24".into()]).unwrap();
        assert_eq!(
            s.pick("local", Family::V4, Some(8), &[]),
            Err(PickError::NoPoolFits {
                family: Family::V4,
                prefix_len: Some(8)
            })
        );
        let taken = [b("10.10.0.0/24"), b("10.10.1.0/24")];
        assert_eq!(
            s.pick("local", Family::V4, None, &taken),
            Err(PickError::Exhausted {
                family: Family::V4,
                prefix_len: None
            })
        );
        // A larger pool inside the base blocks every candidate it overlaps.
        assert!(
            s.pick("local", Family::V4, None, &[b("10.10.0.0/23")])
                .is_err()
        );
    }

    #[test]
    fn overrides_are_validated() {
        assert!(AddressSpaces::with_overrides(&["local=10.0.0.0/8".into()]).is_err());
        assert!(AddressSpaces::with_overrides(&["local=10.0.0.0/8:4".into()]).is_err());
        assert!(AddressSpaces::with_overrides(&["local=10.0.0.1/8:24".into()]).is_err());
    }
}
