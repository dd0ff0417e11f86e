//! The allocator of one pool.
//!
//! State is the set of taken addresses (allocations plus the gateway and reserved addresses),
//! the owner of each allocation, and a cursor: the last address handed out dynamically. Next-free
//! walks the ordered set from the cursor and stops at the first gap, so its cost depends on how
//! many addresses are allocated around the cursor, never on the size of the pool, and memory is
//! bounded by what is allocated. A just-released address is not handed out again until the
//! cursor wraps around to it.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

// Every allocation inserts into both maps and looks the owner up first: foldhash (randomly
// seeded, so an owner chosen to collide cannot be planned) hashes a fraction of what SipHash does.
use foldhash::{HashMap, HashMapExt as _};

use super::pool::PoolDef;

/// Why an allocation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// No free address in the range.
    Exhausted,
    /// The requested address is outside the subnet or is the network or broadcast address.
    Unusable(u128),
    /// The requested address is held by `holder` (an owner, the gateway or a reserved name).
    Taken { addr: u128, holder: String },
    /// The owner already holds another address in this pool.
    OwnerHoldsOther { addr: u128 },
}

/// What an allocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new allocation of this address.
    New(u128),
    /// The owner already held this address (a retried request).
    Existing(u128),
}

impl Outcome {
    pub fn addr(self) -> u128 {
        match self {
            Self::New(a) | Self::Existing(a) => a,
        }
    }
}

/// The allocations of one pool, as far as this process knows them.
#[derive(Debug, Clone)]
pub struct PoolState {
    def: Arc<PoolDef>,
    bounds: (u128, u128),
    dynamic: Option<(u128, u128)>,
    blocked: BTreeSet<u128>,
    /// Allocations and blocked addresses, in address order.
    taken: BTreeSet<u128>,
    owners: HashMap<u128, String>,
    by_owner: HashMap<String, u128>,
    cursor: Option<u128>,
    /// Allocations inside the dynamic range.
    in_range: u128,
    capacity: u128,
}

impl PoolState {
    /// A pool with `allocations` (address → owner) and the stored cursor.
    pub fn new(
        def: Arc<PoolDef>,
        allocations: BTreeMap<u128, String>,
        cursor: Option<u128>,
    ) -> Self {
        let blocked = def.blocked();
        let dynamic = def.dynamic_bounds();
        let mut s = Self {
            bounds: def.bounds(),
            capacity: def.capacity(),
            dynamic,
            taken: blocked.clone(),
            blocked,
            owners: HashMap::with_capacity(allocations.len()),
            by_owner: HashMap::with_capacity(allocations.len()),
            cursor,
            in_range: 0,
            def,
        };
        for (a, owner) in allocations {
            s.insert(a, owner);
        }
        s
    }

    pub fn def(&self) -> &Arc<PoolDef> {
        &self.def
    }

    pub fn cursor(&self) -> Option<u128> {
        self.cursor
    }

    pub fn allocated(&self) -> usize {
        self.owners.len()
    }

    /// Addresses dynamic allocation can still hand out.
    pub fn free(&self) -> u128 {
        self.capacity - self.in_range.min(self.capacity)
    }

    pub fn owner_of(&self, a: u128) -> Option<&str> {
        self.owners.get(&a).map(String::as_str)
    }

    pub fn addr_of(&self, owner: &str) -> Option<u128> {
        self.by_owner.get(owner).copied()
    }

    fn in_dynamic(&self, a: u128) -> bool {
        self.dynamic.is_some_and(|(lo, hi)| (lo..=hi).contains(&a))
    }

    fn insert(&mut self, a: u128, owner: String) {
        if self.in_dynamic(a) && !self.blocked.contains(&a) {
            self.in_range += 1;
        }
        self.taken.insert(a);
        self.by_owner.insert(owner.clone(), a);
        self.owners.insert(a, owner);
    }

    /// Allocates for `owner`: `specific`, or the next free address after the cursor.
    pub fn allocate(&mut self, owner: &str, specific: Option<u128>) -> Result<Outcome, AllocError> {
        if let Some(held) = self.addr_of(owner) {
            return match specific {
                Some(a) if a != held => Err(AllocError::OwnerHoldsOther { addr: held }),
                _ => Ok(Outcome::Existing(held)),
            };
        }
        let a = match specific {
            Some(a) => {
                if a < self.bounds.0 || a > self.bounds.1 || self.def.is_unusable(a) {
                    return Err(AllocError::Unusable(a));
                }
                if let Some(holder) = self.owners.get(&a) {
                    return Err(AllocError::Taken {
                        addr: a,
                        holder: holder.clone(),
                    });
                }
                if let Some(holder) = self.def.blocked_by(a) {
                    return Err(AllocError::Taken { addr: a, holder });
                }
                a
            }
            None => {
                let a = self.next_free().ok_or(AllocError::Exhausted)?;
                self.cursor = Some(a);
                a
            }
        };
        self.insert(a, owner.to_owned());
        Ok(Outcome::New(a))
    }

    /// The next free address after the cursor, wrapping around once.
    pub fn next_free(&self) -> Option<u128> {
        let (lo, hi) = self.dynamic?;
        if self.free() == 0 {
            return None;
        }
        let start = match self.cursor {
            Some(c) if c >= lo && c < hi => c + 1,
            _ => lo,
        };
        self.first_gap(start, hi).or_else(|| {
            (start > lo)
                .then(|| self.first_gap(lo, start - 1))
                .flatten()
        })
    }

    /// The first address in `from..=to` that is not taken.
    fn first_gap(&self, from: u128, to: u128) -> Option<u128> {
        let mut cand = from;
        for &t in self.taken.range(from..=to) {
            if t != cand {
                return Some(cand);
            }
            if t == to {
                return None;
            }
            cand = t + 1;
        }
        Some(cand)
    }

    /// Releases `a`; returns its owner, or `None` when it was not allocated.
    pub fn release_addr(&mut self, a: u128) -> Option<String> {
        let owner = self.owners.remove(&a)?;
        self.by_owner.remove(&owner);
        self.taken.remove(&a);
        if self.in_dynamic(a) && !self.blocked.contains(&a) {
            self.in_range -= 1;
        }
        Some(owner)
    }

    /// Releases what `owner` holds; `None` when it holds nothing.
    pub fn release_owner(&mut self, owner: &str) -> Option<u128> {
        let a = self.addr_of(owner)?;
        self.release_addr(a);
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ipnet::IpNet;
    use proptest::prelude::*;

    use super::*;
    use crate::domain::pool::{PoolRequest, RawPoolRequest, SubnetRequest};

    fn pool(subnet: &str, range: &str, reserved: &[&str]) -> Arc<PoolDef> {
        let raw = RawPoolRequest {
            subnet: subnet.into(),
            ip_range: range.into(),
            reserved: reserved
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("r{i}"), (*a).to_owned()))
                .collect(),
            ..Default::default()
        };
        let req = PoolRequest::validate(raw, &["local"]).unwrap();
        let SubnetRequest::Explicit(net) = req.subnet else {
            panic!()
        };
        Arc::new(PoolDef::new("p".into(), net, &req, 0).unwrap())
    }

    fn ip(s: &str) -> u128 {
        crate::domain::addr::to_u128(s.parse().unwrap())
    }

    #[test]
    fn hands_out_in_order_skipping_gateway_and_reserved_and_wraps() {
        let mut s = PoolState::new(
            pool("10.0.0.0/29", "", &["10.0.0.3"]),
            BTreeMap::new(),
            None,
        );
        let got: Vec<_> = (0..4)
            .map(|i| s.allocate(&format!("o{i}"), None).unwrap().addr())
            .collect();
        assert_eq!(
            got,
            vec![
                ip("10.0.0.2"),
                ip("10.0.0.4"),
                ip("10.0.0.5"),
                ip("10.0.0.6")
            ]
        );
        assert_eq!(s.allocate("o9", None), Err(AllocError::Exhausted));
        // A released address comes back only after the cursor wraps to it.
        s.release_addr(ip("10.0.0.4"));
        assert_eq!(s.allocate("o5", None).unwrap().addr(), ip("10.0.0.4"));
    }

    #[test]
    fn same_owner_gets_the_same_address_and_specific_rules_hold() {
        let mut s = PoolState::new(pool("10.0.0.0/24", "", &[]), BTreeMap::new(), None);
        let a = s.allocate("ep1", None).unwrap();
        assert_eq!(
            s.allocate("ep1", None).unwrap(),
            Outcome::Existing(a.addr())
        );
        assert_eq!(
            s.allocate("ep1", Some(a.addr())).unwrap(),
            Outcome::Existing(a.addr())
        );
        assert!(matches!(
            s.allocate("ep1", Some(ip("10.0.0.50"))),
            Err(AllocError::OwnerHoldsOther { .. })
        ));
        assert!(matches!(
            s.allocate("ep2", Some(a.addr())),
            Err(AllocError::Taken { .. })
        ));
        assert!(matches!(
            s.allocate("ep2", Some(ip("10.0.0.1"))),
            Err(AllocError::Taken { .. })
        ));
        assert_eq!(
            s.allocate("ep2", Some(ip("10.0.0.0"))),
            Err(AllocError::Unusable(ip("10.0.0.0")))
        );
        assert_eq!(
            s.allocate("ep2", Some(ip("10.0.0.255"))),
            Err(AllocError::Unusable(ip("10.0.0.255")))
        );
        assert_eq!(
            s.allocate("ep2", Some(ip("10.0.1.1"))),
            Err(AllocError::Unusable(ip("10.0.1.1")))
        );
        assert_eq!(s.release_owner("ep1"), Some(a.addr()));
        assert_eq!(s.release_owner("ep1"), None);
    }

    #[test]
    fn a_slash_64_and_a_slash_8_allocate_without_scanning() {
        let mut s = PoolState::new(pool("fd00::/64", "", &[]), BTreeMap::new(), None);
        for i in 0..10_000 {
            s.allocate(&format!("o{i}"), None).unwrap();
        }
        assert_eq!(s.allocated(), 10_000);
        let mut s = PoolState::new(
            pool("10.0.0.0/8", "", &[]),
            BTreeMap::new(),
            Some(ip("10.255.255.250")),
        );
        // The cursor near the end wraps to the start.
        let got: Vec<_> = (0..6)
            .map(|i| s.allocate(&format!("o{i}"), None).unwrap().addr())
            .collect();
        assert_eq!(
            got[..4],
            [
                ip("10.255.255.251"),
                ip("10.255.255.252"),
                ip("10.255.255.253"),
                ip("10.255.255.254")
            ]
        );
        assert_eq!(got[4], ip("10.0.0.2"));
    }

    /// The obvious allocator: a linear scan from the cursor over every address.
    struct Model {
        lo: u128,
        hi: u128,
        net: (u128, u128),
        v4: bool,
        blocked: BTreeSet<u128>,
        held: BTreeMap<u128, String>,
        cursor: Option<u128>,
    }

    impl Model {
        fn allocate(&mut self, owner: &str, specific: Option<u128>) -> Result<Outcome, AllocError> {
            if let Some((&a, _)) = self.held.iter().find(|(_, o)| *o == owner) {
                return match specific {
                    Some(s) if s != a => Err(AllocError::OwnerHoldsOther { addr: a }),
                    _ => Ok(Outcome::Existing(a)),
                };
            }
            if let Some(a) = specific {
                if a < self.net.0
                    || a > self.net.1
                    || a == self.net.0
                    || (self.v4 && a == self.net.1)
                {
                    return Err(AllocError::Unusable(a));
                }
                if self.held.contains_key(&a) || self.blocked.contains(&a) {
                    return Err(AllocError::Taken {
                        addr: a,
                        holder: String::new(),
                    });
                }
                self.held.insert(a, owner.into());
                return Ok(Outcome::New(a));
            }
            let n = self.hi - self.lo + 1;
            let start = match self.cursor {
                Some(c) if c >= self.lo && c < self.hi => c + 1,
                _ => self.lo,
            };
            for i in 0..n {
                let a = self.lo + (start - self.lo + i) % n;
                if !self.held.contains_key(&a) && !self.blocked.contains(&a) {
                    self.held.insert(a, owner.into());
                    self.cursor = Some(a);
                    return Ok(Outcome::New(a));
                }
            }
            Err(AllocError::Exhausted)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u8),
        AllocSpecific(u8, u32),
        ReleaseAddr(u32),
        ReleaseOwner(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Alloc),
            2 => (any::<u8>(), any::<u32>()).prop_map(|(o, a)| Op::AllocSpecific(o, a)),
            2 => any::<u32>().prop_map(Op::ReleaseAddr),
            2 => any::<u8>().prop_map(Op::ReleaseOwner),
        ]
    }

    fn subnet() -> impl Strategy<Value = String> {
        prop_oneof![
            (16u8..=30).prop_map(|p| format!("10.0.0.0/{p}")),
            Just("fd00:1::/64".to_owned()),
        ]
    }

    fn check_against_model(
        subnet: &str,
        with_range: bool,
        ops: &[Op],
    ) -> Result<(), TestCaseError> {
        let net: IpNet = subnet.parse().unwrap();
        let (ns, ne) = crate::domain::addr::net_bounds(&net);
        let v4 = matches!(net, IpNet::V4(_));
        // An allocation range over the upper half, and one reserved address, when asked.
        let range = if with_range && net.prefix_len() < net.max_prefix_len() - 2 {
            net.subnets(net.prefix_len() + 1)
                .unwrap()
                .nth(1)
                .unwrap()
                .to_string()
        } else {
            String::new()
        };
        let reserved =
            crate::domain::addr::from_u128(crate::domain::Family::of(net.addr()), ns + 2)
                .to_string();
        let def = pool(subnet, &range, &[&reserved]);
        let mut s = PoolState::new(def.clone(), BTreeMap::new(), None);
        let (lo, hi) = def.dynamic_bounds().unwrap();
        let mut m = Model {
            lo,
            hi,
            net: (ns, ne),
            v4,
            blocked: def.blocked(),
            held: BTreeMap::new(),
            cursor: None,
        };
        // Specific addresses are drawn near the start and end so they collide often.
        let span = (ne - ns + 1).min(4096);
        let pick = |x: u32| -> u128 {
            let off = u128::from(x) % (span + 8);
            if x.is_multiple_of(2) {
                ns.saturating_add(off).saturating_sub(4)
            } else {
                ne.saturating_sub(off).saturating_add(4)
            }
        };
        for op in ops {
            match op {
                Op::Alloc(o) => {
                    let owner = format!("o{o}");
                    prop_assert_eq!(s.allocate(&owner, None), m.allocate(&owner, None));
                }
                Op::AllocSpecific(o, x) => {
                    let owner = format!("o{o}");
                    let a = pick(*x);
                    let got = s.allocate(&owner, Some(a)).map_err(|e| match e {
                        AllocError::Taken { addr, .. } => AllocError::Taken {
                            addr,
                            holder: String::new(),
                        },
                        e => e,
                    });
                    prop_assert_eq!(got, m.allocate(&owner, Some(a)));
                }
                Op::ReleaseAddr(x) => {
                    // Release an address that is held (by index), or one that is not.
                    let a = if m.held.is_empty() || x % 3 == 0 {
                        pick(*x)
                    } else {
                        *m.held.keys().nth(*x as usize % m.held.len()).unwrap()
                    };
                    let first = s.release_addr(a);
                    prop_assert_eq!(first.clone(), m.held.remove(&a));
                    // Releasing twice finds nothing.
                    prop_assert_eq!(s.release_addr(a), None);
                }
                Op::ReleaseOwner(o) => {
                    let owner = format!("o{o}");
                    let expected = m.held.iter().find(|(_, h)| **h == owner).map(|(a, _)| *a);
                    if let Some(a) = expected {
                        m.held.remove(&a);
                    }
                    prop_assert_eq!(s.release_owner(&owner), expected);
                    prop_assert_eq!(s.release_owner(&owner), None);
                }
            }
            prop_assert_eq!(s.allocated(), m.held.len());
            let in_range = m
                .held
                .keys()
                .filter(|a| (lo..=hi).contains(*a) && !m.blocked.contains(a))
                .count() as u128;
            prop_assert_eq!(s.free(), def.capacity() - in_range);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn allocator_matches_the_model(
            subnet in subnet(),
            with_range in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..600),
        ) {
            check_against_model(&subnet, with_range, &ops)?;
        }
    }

    #[test]
    fn model_check_covers_every_prefix_from_30_to_16() {
        // Deterministic sweep so every size is exercised, with enough allocations to fill small
        // pools and wrap the cursor.
        for p in 16..=30u8 {
            let subnet = format!("10.0.0.0/{p}");
            let mut ops = Vec::new();
            for i in 0..300u32 {
                ops.push(Op::Alloc((i % 251) as u8));
                if i % 7 == 0 {
                    ops.push(Op::ReleaseAddr(i * 31));
                }
                if i % 11 == 0 {
                    ops.push(Op::AllocSpecific((i % 13) as u8, i * 17));
                }
                if i % 13 == 0 {
                    ops.push(Op::ReleaseOwner((i % 29) as u8));
                }
            }
            check_against_model(&subnet, p % 2 == 0, &ops).unwrap();
        }
    }
}
