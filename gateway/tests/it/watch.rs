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
