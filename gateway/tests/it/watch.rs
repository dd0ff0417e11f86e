//! EventService.Watch: snapshot then changes, strictly increasing revisions, resume without
//! loss, a clear error past the kept history.

use std::time::Duration;

use futures::StreamExt as _;
use tonic::{Code, Streaming};
use weft_proto::gateway::v1 as pb;
use weft_testkit::Backend;

use crate::harness::{Stack, create};

async fn next(s: &mut Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("an event within 5 s")
        .expect("stream open")
        .expect("no error")
}

fn kind(e: &pb::Event) -> pb::EventKind {
    pb::EventKind::try_from(e.kind).unwrap()
}

fn name(e: &pb::Event) -> String {
    match &e.object {
        Some(pb::event::Object::Network(n)) => n.name.clone(),
        _ => String::new(),
    }
}

async fn watch(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    let mut w = s
        .events()
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut snapshot = Vec::new();
    let end = loop {
        let e = next(&mut w).await;
        if kind(&e) == pb::EventKind::SnapshotEnd {
            break e.revision;
        }
        snapshot.push(name(&e));
    };
    assert_eq!(snapshot, vec!["bridge", "host", "none"]);

    c.create_network(create("w1")).await.unwrap();
    c.update_network(pb::UpdateNetworkRequest {
        network: "w1".into(),
        labels: [("x".to_owned(), "y".to_owned())].into(),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels".into()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_network(pb::DeleteNetworkRequest {
        network: "w1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let got: Vec<_> = [next(&mut w).await, next(&mut w).await, next(&mut w).await].into();
    assert_eq!(
        got.iter().map(kind).collect::<Vec<_>>(),
        vec![
            pb::EventKind::NetworkCreated,
            pb::EventKind::NetworkUpdated,
            pb::EventKind::NetworkRemoved
        ]
    );
    assert!(got.iter().all(|e| name(e) == "w1"));
    let revs: Vec<u64> = got.iter().map(|e| e.revision).collect();
    assert_eq!(
        revs,
        vec![end + 1, end + 2, end + 3],
        "strictly increasing, no gaps"
    );

    // A client that reconnects with its last revision gets exactly what came after it.
    c.create_network(create("w2")).await.unwrap();
    let mut resumed = s
        .events()
        .watch(pb::WatchRequest {
            from_revision: end + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let again: Vec<_> = [
        next(&mut resumed).await,
        next(&mut resumed).await,
        next(&mut resumed).await,
    ]
    .into();
    assert_eq!(
        again.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![end + 2, end + 3, end + 4]
    );
    assert_eq!(name(&again[2]), "w2");

    // Filters: only removals.
    let mut removals = s
        .events()
        .watch(pb::WatchRequest {
            from_revision: end,
            kinds: vec![pb::EventKind::NetworkRemoved as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r = next(&mut removals).await;
    assert_eq!(
        (kind(&r), r.revision),
        (pb::EventKind::NetworkRemoved, end + 3)
    );

    // A revision from the future is refused.
    let e = s
        .events()
        .watch(pb::WatchRequest {
            from_revision: end + 100,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // History is bounded (50 events in the harness): an old revision gets OUT_OF_RANGE.
    for i in 0..30 {
        c.create_network(create(&format!("h{i}"))).await.unwrap();
        c.delete_network(pb::DeleteNetworkRequest {
            network: format!("h{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let e = s
        .events()
        .watch(pb::WatchRequest {
            from_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert!(e.message().contains("list again"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_every_change_in_order_and_resumes_on_sqlite() {
    watch(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
async fn watch_streams_every_change_in_order_and_resumes_on_postgres() {
    watch(Backend::Postgres).await;
}

/// The sandbox, host and network filters (exact names or full ids, never a prefix) and
/// bookmarks on a stream whose filters match nothing.
async fn filters(b: Backend) {
    let s = Stack::start(b).await;
    let mut nets = s.networks();
    let n1 = nets
        .create_network(create("n1"))
        .await
        .unwrap()
        .into_inner();
    nets.create_network(create("n2")).await.unwrap();
    let end = s
        .events()
        .watch(pb::WatchRequest {
            skip_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut end = end;
    let from = next(&mut end).await.revision;
    let mut sb = crate::harness::sandboxes(&s);
    for (name, net) in [("a", "n1"), ("b", "n2")] {
        sb.create_sandbox(pb::CreateSandboxRequest {
            name: name.into(),
            networks: vec![pb::NetworkAttachment {
                network: net.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let watch = |req: pb::WatchRequest| {
        let mut events = s.events();
        async move {
            events
                .watch(pb::WatchRequest {
                    from_revision: from,
                    ..req
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let object_name = |e: &pb::Event| match &e.object {
        Some(pb::event::Object::Sandbox(x)) => format!("sandbox {}", x.name),
        Some(pb::event::Object::Endpoint(x)) => format!("endpoint {}", x.sandbox_name),
        Some(pb::event::Object::Network(x)) => format!("network {}", x.name),
        Some(pb::event::Object::Host(x)) => format!("host {}", x.name),
        None => String::new(),
    };
    // Sandbox `a`: its creation and its endpoint, nothing of `b`.
    let mut w = watch(pb::WatchRequest {
        sandbox: "a".into(),
        ..Default::default()
    })
    .await;
    let got = [next(&mut w).await, next(&mut w).await];
    assert_eq!(
        got.iter().map(object_name).collect::<Vec<_>>(),
        ["sandbox a", "endpoint a"]
    );
    // Network n1 by full id: a's endpoint only; an id prefix matches nothing.
    let mut w = watch(pb::WatchRequest {
        network: n1.id.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(object_name(&next(&mut w).await), "endpoint a");
    // A host with no sandboxes: none of their events; a network made later passes.
    let mut w = watch(pb::WatchRequest {
        host: "elsewhere".into(),
        ..Default::default()
    })
    .await;
    let mut prefix = watch(pb::WatchRequest {
        network: n1.id[..12].to_owned(),
        bookmarks: true,
        ..Default::default()
    })
    .await;
    nets.create_network(create("n3")).await.unwrap();
    assert_eq!(object_name(&next(&mut w).await), "network n3");
    // The prefix stream sees nothing but, with bookmarks, a BOOKMARK at the revision reached.
    let mark = tokio::time::timeout(Duration::from_secs(15), prefix.next())
        .await
        .expect("a bookmark within 15 s")
        .unwrap()
        .unwrap();
    assert_eq!(kind(&mark), pb::EventKind::Bookmark);
    assert!(mark.revision > from && mark.object.is_none(), "{mark:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_by_sandbox_host_and_network_and_sends_bookmarks_on_sqlite() {
    filters(Backend::Sqlite).await;
}
