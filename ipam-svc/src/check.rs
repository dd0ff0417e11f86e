//! The consistency check: reads the whole store and reports every inconsistency it finds.

use std::collections::HashMap;

use crate::{
    domain::addr::{from_u128, net_bounds},
    error::IpamError,
    store,
};

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    AllocationOutsidePool,
    DuplicateAddress,
    OwnerHoldsSeveral,
    ReservedAddressAllocated,
    UsageMismatch,
    OverlappingPools,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub pool_id: String,
    pub address: String,
    pub owners: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub pools: u64,
    pub allocations: u64,
    pub problems: Vec<Problem>,
}

/// Pools are compared for overlaps within one address space and family.
type SpaceKey = (String, crate::domain::Family);

/// Checks every pool and allocation.
pub async fn check(db: &weft_store::Db) -> Result<Report, IpamError> {
    let mut conn = db.read().acquire().await?;
    let pools = store::all_pools(&mut conn).await?;
    let mut report = Report {
        pools: pools.len() as u64,
        ..Report::default()
    };
    let mut by_space: HashMap<SpaceKey, Vec<(u128, u128, String)>> = HashMap::new();
    for p in &pools {
        let def = &p.def;
        let (s, e) = net_bounds(&def.subnet);
        by_space
            .entry((def.space.clone(), def.family()))
            .or_default()
            .push((s, e, def.id.clone()));
        let allocs = store::pool_allocations(&mut conn, &def.id).await?;
        report.allocations += allocs.len() as u64;
        check_pool(p, &allocs, &mut report.problems);
    }
    let duplicates = store::duplicate_addresses(&mut conn).await?;
    check_duplicates(&pools, duplicates, &mut report.problems);
    check_overlaps(by_space, &mut report.problems);
    Ok(report)
}

/// The problems of one pool's own allocations: outside the pool, on a reserved address,
/// several for one owner, or a usage counter that disagrees with the table.
fn check_pool(p: &store::PoolRow, allocs: &[store::AllocRow], problems: &mut Vec<Problem>) {
    let def = &p.def;
    let (s, e) = net_bounds(&def.subnet);
    let mut owners: HashMap<&str, Vec<u128>> = HashMap::new();
    for a in allocs {
        let ip = from_u128(def.family(), a.addr);
        let problem = |kind, detail: String| Problem {
            kind,
            pool_id: def.id.clone(),
            address: ip.to_string(),
            owners: vec![a.owner.clone()],
            detail,
        };
        if a.addr < s || a.addr > e || def.is_unusable(a.addr) {
            problems.push(problem(
                ProblemKind::AllocationOutsidePool,
                format!("{ip} is not a usable address of {}", def.subnet),
            ));
        }
        if let Some(by) = def.blocked_by(a.addr) {
            problems.push(problem(
                ProblemKind::ReservedAddressAllocated,
                format!("{ip} is {by} but allocated to {}", a.owner),
            ));
        }
        owners.entry(&a.owner).or_default().push(a.addr);
    }
    for (owner, addrs) in owners {
        if addrs.len() > 1 {
            problems.push(Problem {
                kind: ProblemKind::OwnerHoldsSeveral,
                pool_id: def.id.clone(),
                address: addrs
                    .iter()
                    .map(|a| from_u128(def.family(), *a).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                owners: vec![owner.to_owned()],
                detail: format!("{owner} holds {} addresses", addrs.len()),
            });
        }
    }
    if p.allocated != allocs.len() as i64 {
        problems.push(Problem {
            kind: ProblemKind::UsageMismatch,
            pool_id: def.id.clone(),
            address: String::new(),
            owners: vec![],
            detail: format!(
                "counter says {} allocations, table has {}",
                p.allocated,
                allocs.len()
            ),
        });
    }
}

/// One problem per address held more than once in a pool.
fn check_duplicates(
    pools: &[store::PoolRow],
    duplicates: Vec<(String, u128, Vec<String>)>,
    problems: &mut Vec<Problem>,
) {
    for (pool_id, addr, owners) in duplicates {
        let family = pools
            .iter()
            .find(|p| p.def.id == pool_id)
            .map_or(crate::domain::Family::V6, |p| p.def.family());
        problems.push(Problem {
            kind: ProblemKind::DuplicateAddress,
            pool_id,
            address: from_u128(family, addr).to_string(),
            detail: format!("held by {} owners", owners.len()),
            owners,
        });
    }
}

/// One problem per pair of neighbouring pools that overlap within an address space and family.
fn check_overlaps(
    by_space: HashMap<SpaceKey, Vec<(u128, u128, String)>>,
    problems: &mut Vec<Problem>,
) {
    for ((space, _), mut nets) in by_space {
        nets.sort();
        for w in nets.windows(2) {
            if w[1].0 <= w[0].1 {
                problems.push(Problem {
                    kind: ProblemKind::OverlappingPools,
                    pool_id: w[0].2.clone(),
                    address: String::new(),
                    owners: vec![],
                    detail: format!(
                        "pools {} and {} overlap in address space {space}",
                        w[0].2, w[1].2
                    ),
                });
            }
        }
    }
}
