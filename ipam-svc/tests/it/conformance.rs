//! The store conformance suite: the same behaviour, asserted through the real gRPC API, on SQLite
//! and on a real Postgres.

use tonic::Code;
use weft_proto::ipam::v1 as pb;
use weft_testkit::Backend;

use crate::harness::{InProc, all_allocations, alloc, check_clean, pool};

weft_testkit::on_both_backends!(
    pool_lifecycle_and_usage,
    prefix_length_alone_picks_the_first_free_subnet,
    overlapping_pools_are_refused_naming_the_other,
    retried_pool_request_returns_the_same_pool,
    addresses_follow_the_allocation_rules,
    release_by_owner_is_idempotent_across_pools,
    pool_with_allocations_needs_force,
    allocations_list_in_pages,
    pools_list_in_pages,
    allocations_survive_a_restart,
    validate_only_writes_nothing,
    check_reports_planted_inconsistencies,
    counters_follow_concurrent_allocations_and_releases,
);

async fn pool_lifecycle_and_usage(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    let p = c
        .request_pool(pb::RequestPoolRequest {
            pool_id: "net1/0".into(),
            subnet: "10.10.0.0/24".into(),
            ip_range: "10.10.0.128/25".into(),
            reserved_addresses: [("dev".to_owned(), "10.10.0.200".to_owned())].into(),
            labels: [("team".to_owned(), "a".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.gateway, "10.10.0.1");
    assert_eq!(p.family, pb::Family::Ipv4 as i32);
    assert_eq!(p.address_space, "local");
    let u = p.usage.unwrap();
    // .128 to .254 minus the reserved .200
    assert_eq!((u.size, u.allocated, u.free), (126, 0, 126));
    alloc(&mut c, "net1/0", "ep1", "").await.unwrap();
    alloc(&mut c, "net1/0", "ep2", "10.10.0.5").await.unwrap();
    let u = c
        .get_pool(pb::GetPoolRequest {
            pool_id: "net1/0".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .usage
        .unwrap();
    // The specific address outside the range counts as allocated, not against the range.
    assert_eq!((u.size, u.allocated, u.free), (126, 2, 125));
    let listed = c
        .list_pools(pb::ListPoolsRequest {
            address_space: "local".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.pools.len(), 1);
    assert_eq!(
        listed.pools[0].labels.get("team").map(String::as_str),
        Some("a")
    );
    let global = c
        .list_pools(pb::ListPoolsRequest {
            address_space: "global".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(global.pools.is_empty());
    let r = c
        .release_pool(pb::ReleasePoolRequest {
            pool_id: "net1/0".into(),
            force: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.released_allocations, 2);
    let e = c
        .get_pool(pb::GetPoolRequest {
            pool_id: "net1/0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    check_clean(&mut c).await;
}

async fn prefix_length_alone_picks_the_first_free_subnet(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    assert_eq!(pool(&mut c, "", "0.0.0.0/24").await.subnet, "172.17.0.0/24");
    assert_eq!(pool(&mut c, "", "0.0.0.0/24").await.subnet, "172.17.1.0/24");
    // A /16 cannot overlap the two /24s: the next whole /16.
    assert_eq!(pool(&mut c, "", "").await.subnet, "172.18.0.0/16");
    assert_eq!(
        pool(&mut c, "", "::/64").await.subnet,
        "fd77:6566:7400::/64"
    );
    let g = c
        .request_pool(pb::RequestPoolRequest {
            address_space: "global".into(),
            subnet: "0.0.0.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.subnet, "10.0.0.0/24");
    // An explicit pool in the way is skipped.
    pool(&mut c, "", "172.17.2.0/23").await;
    assert_eq!(pool(&mut c, "", "0.0.0.0/24").await.subnet, "172.17.4.0/24");
    let e = c
        .request_pool(pb::RequestPoolRequest {
            subnet: "0.0.0.0/4".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    check_clean(&mut c).await;
}

async fn overlapping_pools_are_refused_naming_the_other(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    pool(&mut c, "first", "10.20.0.0/16").await;
    for subnet in ["10.20.5.0/24", "10.0.0.0/8", "10.20.0.0/16"] {
        let e = c
            .request_pool(pb::RequestPoolRequest {
                subnet: subnet.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists);
        assert!(
            e.message().contains("\"first\"") && e.message().contains("10.20.0.0/16"),
            "{}",
            e.message()
        );
    }
    // Another address space may hold the same subnet.
    c.request_pool(pb::RequestPoolRequest {
        address_space: "global".into(),
        subnet: "10.20.0.0/16".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    check_clean(&mut c).await;
}

async fn retried_pool_request_returns_the_same_pool(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    let a = pool(&mut c, "n/0", "0.0.0.0/24").await;
    let again = pool(&mut c, "n/0", "0.0.0.0/24").await;
    assert_eq!(a.subnet, again.subnet);
    assert_eq!(a.created_at, again.created_at);
    let e = c
        .request_pool(pb::RequestPoolRequest {
            pool_id: "n/0".into(),
            subnet: "10.1.0.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let pools = c
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1);
}

async fn addresses_follow_the_allocation_rules(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    c.request_pool(pb::RequestPoolRequest {
        pool_id: "p".into(),
        subnet: "192.168.50.0/29".into(),
        reserved_addresses: [("r".to_owned(), "192.168.50.3".to_owned())].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let a = alloc(&mut c, "p", "e1", "").await.unwrap();
    assert_eq!(
        (a.address.as_str(), a.cidr.as_str(), a.gateway.as_str()),
        ("192.168.50.2", "192.168.50.2/29", "192.168.50.1")
    );
    // Same owner: same address.
    assert_eq!(
        alloc(&mut c, "p", "e1", "").await.unwrap().address,
        "192.168.50.2"
    );
    // Next skips the reserved .3.
    assert_eq!(
        alloc(&mut c, "p", "e2", "").await.unwrap().address,
        "192.168.50.4"
    );
    assert_eq!(
        alloc(&mut c, "p", "e3", "192.168.50.6")
            .await
            .unwrap()
            .address,
        "192.168.50.6"
    );
    let taken = alloc(&mut c, "p", "e4", "192.168.50.6").await.unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert!(taken.message().contains("e3"), "{}", taken.message());
    for (addr, code) in [
        ("192.168.50.1", Code::AlreadyExists),
        ("192.168.50.3", Code::AlreadyExists),
        ("192.168.50.0", Code::InvalidArgument),
        ("192.168.50.7", Code::InvalidArgument),
        ("192.168.51.2", Code::InvalidArgument),
        ("fd00::2", Code::InvalidArgument),
    ] {
        let e = alloc(&mut c, "p", "e4", addr).await.unwrap_err();
        assert_eq!(e.code(), code, "{addr}: {e:?}");
    }
    // Release .2; the next free continues after the cursor (.6 was specific, so .5), and the
    // just-released .2 only comes back after the wrap.
    let r = c
        .release_address(pb::ReleaseAddressRequest {
            pool_id: "p".into(),
            target: Some(pb::release_address_request::Target::Address(
                "192.168.50.2".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.released[0].owner, "e1");
    assert_eq!(
        alloc(&mut c, "p", "e5", "").await.unwrap().address,
        "192.168.50.5"
    );
    assert_eq!(
        alloc(&mut c, "p", "e6", "").await.unwrap().address,
        "192.168.50.2"
    );
    let full = alloc(&mut c, "p", "e7", "").await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);
    let e = c
        .release_address(pb::ReleaseAddressRequest {
            pool_id: "p".into(),
            target: Some(pb::release_address_request::Target::Address(
                "192.168.50.2".into(),
            )),
        })
        .await;
    assert!(e.is_ok());
    let e = c
        .release_address(pb::ReleaseAddressRequest {
            pool_id: "p".into(),
            target: Some(pb::release_address_request::Target::Address(
                "192.168.50.2".into(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    check_clean(&mut c).await;
}

async fn release_by_owner_is_idempotent_across_pools(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    pool(&mut c, "v4", "10.30.0.0/24").await;
    pool(&mut c, "v6", "fd00:30::/64").await;
    alloc(&mut c, "v4", "ep", "").await.unwrap();
    let six = alloc(&mut c, "v6", "ep", "").await.unwrap();
    assert_eq!(six.address, "fd00:30::2");
    let by_owner = |owner: &str| pb::ReleaseAddressRequest {
        pool_id: String::new(),
        target: Some(pb::release_address_request::Target::Owner(owner.into())),
    };
    let r = c
        .release_address(by_owner("ep"))
        .await
        .unwrap()
        .into_inner();
    let mut got: Vec<_> = r.released.iter().map(|a| a.address.clone()).collect();
    got.sort();
    assert_eq!(got, vec!["10.30.0.2", "fd00:30::2"]);
    let r = c
        .release_address(by_owner("ep"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.released.is_empty());
    let r = c
        .release_address(by_owner("never-held"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.released.is_empty());
    check_clean(&mut c).await;
}

async fn pool_with_allocations_needs_force(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    pool(&mut c, "p", "10.40.0.0/24").await;
    alloc(&mut c, "p", "a", "").await.unwrap();
    let e = c
        .release_pool(pb::ReleasePoolRequest {
            pool_id: "p".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("1 allocations"), "{}", e.message());
    assert_eq!(all_allocations(&mut c, "p").await.len(), 1);
    c.release_pool(pb::ReleasePoolRequest {
        pool_id: "p".into(),
        force: true,
    })
    .await
    .unwrap();
    assert!(all_allocations(&mut c, "p").await.is_empty());
    check_clean(&mut c).await;
}

async fn allocations_list_in_pages(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    pool(&mut c, "p", "10.50.0.0/20").await;
    let mut tasks = Vec::new();
    for i in 0..1200 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            alloc(&mut c, "p", &format!("o{i}"), "").await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = all_allocations(&mut c, "p").await;
    assert_eq!(all.len(), 1200);
    let unique: std::collections::HashSet<_> = all.iter().map(|a| a.address.clone()).collect();
    assert_eq!(unique.len(), 1200);
    let by_owner = c
        .list_allocations(pb::ListAllocationsRequest {
            owner: "o7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_owner.allocations.len(), 1);
    assert!(by_owner.allocations[0].created_at.is_some());
    check_clean(&mut c).await;
}

async fn pools_list_in_pages(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    for i in 0..7 {
        pool(&mut c, &format!("pool{i}"), &format!("10.60.{i}.0/24")).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_pools(pb::ListPoolsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.pools.len() <= 3);
        pages += 1;
        seen.extend(page.pools.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let want: Vec<String> = (0..7).map(|i| format!("pool{i}")).collect();
    assert_eq!(seen, want);
    assert_eq!(pages, 3);
    // The default page holds them all.
    let all = c
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.pools.len(), 7);
    assert!(all.next_page_token.is_empty());
}

async fn allocations_survive_a_restart(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    pool(&mut c, "p", "10.60.0.0/24").await;
    for i in 0..5 {
        alloc(&mut c, "p", &format!("o{i}"), "").await.unwrap();
    }
    c.release_address(pb::ReleaseAddressRequest {
        pool_id: "p".into(),
        target: Some(pb::release_address_request::Target::Owner("o1".into())),
    })
    .await
    .unwrap();
    drop(c);
    let db = s.stop().await;
    let s = InProc::start_on(db).await;
    let mut c = s.client();
    let all = all_allocations(&mut c, "p").await;
    let addrs: Vec<_> = all.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(
        addrs,
        vec!["10.60.0.2", "10.60.0.4", "10.60.0.5", "10.60.0.6"]
    );
    // The cursor survived too: the released .3 is not handed out next.
    assert_eq!(
        alloc(&mut c, "p", "new", "").await.unwrap().address,
        "10.60.0.7"
    );
    check_clean(&mut c).await;
}

async fn validate_only_writes_nothing(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    let p = c
        .request_pool(pb::RequestPoolRequest {
            subnet: "0.0.0.0/24".into(),
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.subnet, "172.17.0.0/24");
    assert!(
        c.list_pools(pb::ListPoolsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .pools
            .is_empty()
    );
}

async fn check_reports_planted_inconsistencies(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    pool(&mut c, "p", "10.70.0.0/24").await;
    alloc(&mut c, "p", "a", "").await.unwrap();
    check_clean(&mut c).await;
    // Plant rows behind the service's back (stopped first: SQLite has one opener at a time):
    // the gateway allocated, an address outside the subnet, and a counter that no longer
    // matches.
    drop(c);
    let tdb = s.stop().await;
    let db = weft_store::Db::open(&tdb.url, &weft_store::StoreOptions::default())
        .await
        .unwrap();
    plant(&db).await;
    db.close().await;
    drop(db);
    let s = InProc::start_on(tdb).await;
    assert_planted(&mut s.client()).await;
}

async fn plant(db: &weft_store::Db) {
    let gw = ipam_svc::domain::addr::to_bytes(ipam_svc::domain::addr::to_u128(
        "10.70.0.1".parse().unwrap(),
    ));
    let out = ipam_svc::domain::addr::to_bytes(ipam_svc::domain::addr::to_u128(
        "10.71.0.9".parse().unwrap(),
    ));
    for (addr, owner) in [(gw, "x"), (out, "y")] {
        sqlx::query("INSERT INTO ipam_allocations (pool_id, address, owner, created_at_ms) VALUES ('p', $1, $2, 0)")
            .bind(addr)
            .bind(owner)
            .execute(db.write())
            .await
            .unwrap();
    }
    sqlx::query("UPDATE ipam_pools SET allocated = 99 WHERE id = 'p'")
        .execute(db.write())
        .await
        .unwrap();
}

async fn assert_planted(c: &mut crate::harness::Client) {
    let r = c.check(pb::CheckRequest {}).await.unwrap().into_inner();
    let kinds: Vec<_> = r.problems.iter().map(|p| p.kind).collect();
    assert!(
        kinds.contains(&(pb::problem::Kind::ReservedAddressAllocated as i32)),
        "{r:?}"
    );
    assert!(
        kinds.contains(&(pb::problem::Kind::AllocationOutsidePool as i32)),
        "{r:?}"
    );
    assert!(
        kinds.contains(&(pb::problem::Kind::UsageMismatch as i32)),
        "{r:?}"
    );
    assert_eq!(r.problems_count, 3, "{r:?}");
}

async fn allocated_of(c: &mut crate::harness::Client, pool: &str) -> u64 {
    c.get_pool(pb::GetPoolRequest {
        pool_id: pool.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .usage
    .unwrap()
    .allocated
}

/// The pool's counters (allocated, and the cursor next-free continues from) stay those of the
/// table when concurrent callers' batches mix dynamic and specific allocations and releases by
/// owner and by address; also after a restart, which reads them back from the store.
async fn counters_follow_concurrent_allocations_and_releases(b: Backend) {
    let s = InProc::start(b).await;
    let mut c = s.client();
    pool(&mut c, "p", "10.80.0.0/24").await;
    let tasks: Vec<_> = (0..16)
        .map(|k| {
            let mut c = s.client();
            tokio::spawn(async move {
                let mut highest = 0u32;
                for j in 0..8 {
                    let owner = format!("t{k}-{j}");
                    let a = alloc(&mut c, "p", &owner, "").await.unwrap();
                    let last: u32 = a.address.rsplit('.').next().unwrap().parse().unwrap();
                    highest = highest.max(last);
                    if j % 2 == 1 {
                        c.release_address(pb::ReleaseAddressRequest {
                            pool_id: "p".into(),
                            target: Some(pb::release_address_request::Target::Owner(owner)),
                        })
                        .await
                        .unwrap();
                    }
                }
                // A specific address (it does not move the cursor); half of them released by
                // address.
                let specific = format!("10.80.0.{}", 200 + k);
                alloc(&mut c, "p", &format!("s{k}"), &specific)
                    .await
                    .unwrap();
                if k % 2 == 0 {
                    c.release_address(pb::ReleaseAddressRequest {
                        pool_id: "p".into(),
                        target: Some(pb::release_address_request::Target::Address(specific)),
                    })
                    .await
                    .unwrap();
                }
                highest
            })
        })
        .collect();
    let mut highest = 0;
    for t in tasks {
        highest = highest.max(t.await.unwrap());
    }
    // 16 tasks kept 4 dynamic allocations each, and 8 of them their specific one.
    assert_eq!(all_allocations(&mut c, "p").await.len(), 72);
    assert_eq!(allocated_of(&mut c, "p").await, 72);
    check_clean(&mut c).await;
    drop(c);
    let db = s.stop().await;
    let s = InProc::start_on(db).await;
    let mut c = s.client();
    assert_eq!(allocated_of(&mut c, "p").await, 72);
    // Next-free continues after the last address it handed out (it never wrapped: 128 of 253).
    assert_eq!(
        alloc(&mut c, "p", "after", "").await.unwrap().address,
        format!("10.80.0.{}", highest + 1)
    );
    assert_eq!(allocated_of(&mut c, "p").await, 73);
    check_clean(&mut c).await;
}
