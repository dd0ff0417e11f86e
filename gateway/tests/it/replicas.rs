//! Three gateway processes on one Postgres: 48 clients connect their sandboxes to one network,
//! each sending its Connect twice at once through two gateways. The database decides: one
//! endpoint per sandbox, no address twice, and a watcher on each gateway sees every event once,
//! in revision order.

use std::{collections::HashSet, time::Duration};

use futures::StreamExt as _;
use tonic::Code;
use weft_proto::{
    gateway::v1::{
        self as pb, event_service_client::EventServiceClient,
        network_service_client::NetworkServiceClient, sandbox_service_client::SandboxServiceClient,
    },
    ipam::v1 as ipb,
};
use weft_testkit::{Backend, ServiceProcess, stack::StackOptions};

use crate::harness::with_subnet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
async fn heavy_three_gateways_on_postgres_agree() {
    let deps = StackOptions::new(Backend::Postgres).start_deps().await;
    let args = deps.gateway_args();
    let bin = env!("CARGO_BIN_EXE_gateway");
    let gws = vec![
        ServiceProcess::start(bin, &args).await,
        ServiceProcess::start(bin, &args).await,
        ServiceProcess::start(bin, &args).await,
    ];
    let net = |i: usize| NetworkServiceClient::new(deps.admin_channel(gws[i % 3].addr));
    let sb = |i: usize| SandboxServiceClient::new(deps.admin_channel(gws[i % 3].addr));
    // The three raced to create the predefined networks: exactly one of each exists.
    let names = weft_testkit::wait_for(Duration::from_secs(20), "the predefined networks", || {
        let mut c = net(0);
        async move {
            let n: Vec<String> = c
                .list_networks(pb::ListNetworksRequest::default())
                .await
                .ok()?
                .into_inner()
                .networks
                .into_iter()
                .map(|n| n.name)
                .collect();
            (n.len() >= 3).then_some(n)
        }
    })
    .await;
    assert_eq!(names, vec!["bridge", "host", "none"]);
    let start = net(0)
        .create_network(with_subnet("shared", "10.100.0.0/22"))
        .await
        .unwrap();
    drop(start);
    let from = net(0)
        .list_networks(pb::ListNetworksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision;

    let mut watchers = Vec::new();
    for g in &gws {
        let mut w = EventServiceClient::new(deps.admin_channel(g.addr))
            .watch(pb::WatchRequest {
                from_revision: from,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        watchers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            // 48 SANDBOX_CREATED + 48 ENDPOINT_CONNECTED.
            while seen.len() < 96 {
                match tokio::time::timeout(Duration::from_secs(60), w.next()).await {
                    Ok(Some(Ok(e))) => seen.push(e.revision),
                    other => panic!("watch ended early after {} events: {other:?}", seen.len()),
                }
            }
            seen
        }));
    }

    let mut clients = Vec::new();
    for k in 0..48 {
        let (mut a, mut b, mut c) = (sb(k), sb(k + 1), sb(k + 2));
        clients.push(tokio::spawn(async move {
            let name = format!("c{k}");
            a.create_sandbox(pb::CreateSandboxRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            let req = pb::ConnectRequest {
                sandbox: name.clone(),
                network: "shared".into(),
                ..Default::default()
            };
            let (r1, r2) = tokio::join!(b.connect(req.clone()), c.connect(req));
            let ok = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
            assert_eq!(ok, 1, "{name}: exactly one Connect wins: {r1:?} {r2:?}");
            for r in [r1, r2] {
                if let Err(e) = r {
                    assert_eq!(e.code(), Code::AlreadyExists, "{name}: {e:?}");
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }

    let mut sequences = Vec::new();
    for w in watchers {
        let seen = w.await.unwrap();
        let expected: Vec<u64> = (from + 1..=from + 96).collect();
        assert_eq!(
            seen, expected,
            "every event once, in revision order, without gaps"
        );
        sequences.push(seen);
    }
    assert!(sequences.windows(2).all(|w| w[0] == w[1]));

    // Straight from the databases: one endpoint per sandbox, no address twice, nothing leaked.
    let gdb = weft_store::Db::open(&deps.gateway_db.url, &weft_store::StoreOptions::default())
        .await
        .unwrap();
    let endpoints: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gateway_endpoints")
        .fetch_one(gdb.read())
        .await
        .unwrap();
    let dup_endpoints: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT sandbox_id, network_id FROM gateway_endpoints GROUP BY sandbox_id, network_id HAVING COUNT(*) > 1) d",
    )
    .fetch_one(gdb.read())
    .await
    .unwrap();
    assert_eq!((endpoints, dup_endpoints), (48, 0));
    let idb = weft_store::Db::open(&deps.ipam_db.url, &weft_store::StoreOptions::default())
        .await
        .unwrap();
    let allocs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ipam_allocations")
        .fetch_one(idb.read())
        .await
        .unwrap();
    assert_eq!(allocs, 48, "the losing Connects gave their addresses back");
    let mut ipam_client = weft_proto::ipam::v1::ipam_service_client::IpamServiceClient::new(
        weft_testkit::channel(deps.ipam),
    );
    let all = ipam_client
        .list_allocations(ipb::ListAllocationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .allocations;
    assert_eq!(
        all.iter()
            .map(|a| a.address.clone())
            .collect::<HashSet<_>>()
            .len(),
        48
    );
    assert_eq!(
        ipam_client
            .check(ipb::CheckRequest {})
            .await
            .unwrap()
            .into_inner()
            .problems_count,
        0
    );
}
