//! Exhaustion, moby's parallel pattern: usable + 10 concurrent requests from 2, 4 and 8 clients
//! give exactly `usable` addresses, exactly 10 RESOURCE_EXHAUSTED and no duplicate; then every
//! odd address is released and requested again by value, twice at once, and each is won once.

use std::collections::HashSet;

use tonic::Code;
use weft_proto::ipam::v1 as pb;
use weft_testkit::Backend;

use crate::harness::{InProc, all_allocations, alloc, check_clean, fill_concurrently, pool};

async fn exhaust(backend: Backend, prefix: u8, parallel: usize) {
    let s = InProc::start(backend).await;
    let mut c = s.client();
    let subnet = format!("10.80.0.0/{prefix}");
    pool(&mut c, "p", &subnet).await;
    let usable = (1usize << (32 - prefix)) - 3;
    let total = usable + 10;

    // Each client has its own connection.
    let clients = (0..parallel).map(|_| s.client()).collect();
    let (addrs, exhausted) = fill_concurrently(clients, "p", total).await;
    let unique: HashSet<_> = addrs.iter().cloned().collect();
    assert_eq!(addrs.len(), usable, "{subnet} x{parallel}: successes");
    assert_eq!(exhausted, 10, "{subnet} x{parallel}: RESOURCE_EXHAUSTED");
    assert_eq!(unique.len(), usable, "{subnet} x{parallel}: duplicates");
    assert_eq!(all_allocations(&mut c, "p").await.len(), usable);

    // Release every odd address, by value.
    let odd: Vec<String> = addrs
        .iter()
        .filter(|a| a.parse::<std::net::Ipv4Addr>().unwrap().octets()[3] % 2 == 1)
        .cloned()
        .collect();
    let mut tasks = Vec::new();
    for (k, chunk) in odd.chunks(odd.len().div_ceil(parallel)).enumerate() {
        let mut c = s.client();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for a in chunk {
                c.release_address(pb::ReleaseAddressRequest {
                    pool_id: "p".into(),
                    target: Some(pb::release_address_request::Target::Address(a.clone())),
                })
                .await
                .unwrap_or_else(|e| panic!("release {a} (client {k}): {e:?}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Each released address is asked for twice at once, by two owners: exactly one wins.
    let mut tasks = Vec::new();
    for (i, a) in odd.iter().enumerate() {
        for twin in 0..2 {
            let mut c = c.clone();
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                (
                    a.clone(),
                    alloc(&mut c, "p", &format!("again{i}-{twin}"), &a).await,
                )
            }));
        }
    }
    let mut wins = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        let (a, r) = t.await.unwrap();
        match r {
            Ok(got) => {
                assert_eq!(got.address, a);
                *wins.entry(a).or_default() += 1;
            }
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{a}: {e:?}"),
        }
    }
    assert_eq!(wins.len(), odd.len(), "every odd address re-allocated");
    assert!(wins.values().all(|n| *n == 1), "an address was won twice");
    assert_eq!(all_allocations(&mut c, "p").await.len(), usable);
    check_clean(&mut c).await;
}

macro_rules! cases {
    ($($name:ident: $prefix:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
            async fn $name() {
                for backend in [Backend::Sqlite, Backend::Postgres] {
                    for parallel in [2, 4, 8] {
                        exhaust(backend, $prefix, parallel).await;
                    }
                }
            }
        )*
    };
}

cases! {
    exhaustion_is_exact_for_a_slash_29: 29;
    exhaustion_is_exact_for_a_slash_25: 25;
    exhaustion_is_exact_for_a_slash_24: 24;
    exhaustion_is_exact_for_a_slash_22: 22;
}
