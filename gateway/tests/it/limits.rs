//! Limits that are not about one field: lists come in pages, one client holds a bounded number
//! of Watch streams, and request ids expire (by time, on a clock the test moves) and are
//! bounded in number.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tonic::Code;
use weft_proto::gateway::v1 as pb;
use weft_testkit::Backend;

use crate::harness::{Stack, create, names, sandboxes};

weft_testkit::on_both_backends!(
    lists_come_in_pages_that_add_up_to_the_whole_list,
    request_ids_expire_after_their_time_to_live,
    request_ids_are_bounded_in_number_oldest_first,
);

/// Every page of a list, through a closure that asks for one page.
async fn all_pages<T, F, Fut>(mut page: F) -> (Vec<T>, usize)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = (Vec<T>, String)>,
{
    let (mut all, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let (items, next) = page(token).await;
        pages += 1;
        all.extend(items);
        if next.is_empty() {
            return (all, pages);
        }
        token = next;
    }
}

async fn lists_come_in_pages_that_add_up_to_the_whole_list(b: Backend) {
    let s = Stack::start(b).await;
    let mut nets = s.networks();
    for i in 0..5 {
        nets.create_network(create(&format!("p{i}"))).await.unwrap();
    }
    let whole: Vec<String> = names(&mut nets).await;
    assert_eq!(whole.len(), 8, "{whole:?}");
    let (paged, pages) = all_pages(|token| {
        let mut c = nets.clone();
        async move {
            let r = c
                .list_networks(pb::ListNetworksRequest {
                    page_size: 3,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(r.networks.len() <= 3);
            (
                r.networks.into_iter().map(|n| n.name).collect(),
                r.next_page_token,
            )
        }
    })
    .await;
    assert_eq!(paged, whole);
    assert_eq!(pages, 3);

    // Sandboxes, with a filter: the pages hold only what matches.
    let mut sb = sandboxes(&s);
    for name in ["a1", "b1", "a2", "b2", "a3"] {
        sb.create_sandbox(pb::CreateSandboxRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let (paged, pages) = all_pages(|token| {
        let mut c = sb.clone();
        async move {
            let r = c
                .list_sandboxes(pb::ListSandboxesRequest {
                    name: vec!["a".into()],
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.sandboxes.into_iter().map(|s| s.name).collect::<Vec<_>>(),
                r.next_page_token,
            )
        }
    })
    .await;
    assert_eq!(paged, ["a1", "a2", "a3"]);
    assert_eq!(pages, 2);

    // Hosts: the registered ones and the configured one.
    for name in ["h1", "h2", "h3"] {
        let mut reg = s.registry_for(name).await;
        reg.register_host(pb::RegisterHostRequest {
            name: name.into(),
            agent_address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let hosts = s.hosts();
    let (paged, _) = all_pages(|token| {
        let mut c = hosts.clone();
        async move {
            let r = c
                .list_hosts(pb::ListHostsRequest {
                    page_size: 1,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.hosts.into_iter().map(|h| h.name).collect::<Vec<_>>(),
                r.next_page_token,
            )
        }
    })
    .await;
    assert_eq!(paged, ["h1", "h2", "h3", "local"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_a_bounded_number_of_watch_streams() {
    let s = Stack::start_with(Backend::Sqlite, &["--max-watches-per-client", "2"]).await;
    let open = || {
        let mut c = s.events();
        async move {
            c.watch(pb::WatchRequest {
                skip_snapshot: true,
                ..Default::default()
            })
            .await
        }
    };
    let mut first = open().await.unwrap().into_inner();
    let mut second = open().await.unwrap().into_inner();
    for w in [&mut first, &mut second] {
        let e = w.next().await.unwrap().unwrap();
        assert_eq!(e.kind, pb::EventKind::SnapshotEnd as i32);
    }
    let err = open().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--max-watches-per-client 2"),
        "{}",
        err.message()
    );
    // A stream that ends gives its slot back (once the gateway notices the client left).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        match open().await {
            Ok(w) => break w,
            Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the slot did not come back: {e:?}"),
        }
    };
    drop((second, third));
}

fn create_with_id(name: &str, id: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        request_id: id.into(),
        ..create(name)
    }
}

async fn request_ids_expire_after_their_time_to_live(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    let first = c
        .create_network(create_with_id("e1", "rid"))
        .await
        .unwrap()
        .into_inner();
    // Within the time to live: the same id replays, another request with it is refused.
    let again = c
        .create_network(create_with_id("e1", "rid"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, first.id);
    let err = c
        .create_network(create_with_id("e2", "rid"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("request_id"), "{}", err.message());
    // Past the time to live (24 h by default): the id is free again.
    s.gateway_handle()
        .clock()
        .advance(Duration::from_secs(24 * 3600 + 1));
    let retried = c
        .create_network(create_with_id("e1", "rid"))
        .await
        .unwrap_err();
    assert_eq!(
        retried.code(),
        Code::AlreadyExists,
        "ran again: {retried:?}"
    );
    let other = c
        .create_network(create_with_id("e2", "rid"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.name, "e2");
    // And it is remembered afresh.
    let replayed = c
        .create_network(create_with_id("e2", "rid"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.id, other.id);
}

async fn request_ids_are_bounded_in_number_oldest_first(b: Backend) {
    let s = Stack::start_with(b, &["--request-id-max", "3"]).await;
    let mut c = s.networks();
    let mut ids = Vec::new();
    for i in 0..4 {
        let n = c
            .create_network(create_with_id(&format!("m{i}"), &format!("r{i}")))
            .await
            .unwrap()
            .into_inner();
        ids.push(n.id);
        s.gateway_handle().clock().advance(Duration::from_secs(1));
    }
    // r0 is forgotten: its retry runs again (and finds its name taken) ...
    let err = c
        .create_network(create_with_id("m0", "r0"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // ... while the three newest still replay.
    for (i, id) in ids.iter().enumerate().skip(1) {
        let n = c
            .create_network(create_with_id(&format!("m{i}"), &format!("r{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&n.id, id, "r{i}");
    }
}
