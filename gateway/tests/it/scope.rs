//! Watch with `scope_host` (dns-svc's view): the networks with an endpoint on that host, all of
//! their endpoints and those endpoints' sandboxes, the host's own sandboxes, nothing else. A
//! network comes in with its first endpoint on the host (SCOPE_ENTERED before the
//! ENDPOINT_CONNECTED that caused it) and goes with its last (SCOPE_LEFT); a resume from any
//! revision replays exactly what the live stream sent; a dns caller watches its own host only.

use std::time::Duration;

use futures::StreamExt as _;
use tonic::{Code, Streaming};
use weft_proto::gateway::v1::{self as pb, EventKind as K, event::Object as O};
use weft_runtime::access::{Bearer, Role};
use weft_testkit::Backend;

use crate::{
    feed::on,
    harness::{Stack, create, fake_agent, sandboxes, with_subnet},
    hosts::register,
};

weft_testkit::on_both_backends!(
    a_scoped_watch_carries_the_networks_of_the_hosts_endpoints_and_resumes_exactly,
);

/// An event in short: kind, revision, and what it is about.
type Brief = (String, u64, String);

fn brief(e: &pb::Event) -> Brief {
    let kind = K::try_from(e.kind).map_or("?".into(), |k| k.as_str_name().to_owned());
    let what = match &e.object {
        Some(O::Network(n)) => format!("network {}", n.name),
        Some(O::Sandbox(s)) => format!("sandbox {}", s.name),
        Some(O::Endpoint(ep)) => format!("endpoint {}@{}", ep.sandbox_name, ep.network_name),
        Some(O::Host(h)) => format!("host {}", h.name),
        None => String::new(),
    };
    (
        kind.trim_start_matches("EVENT_KIND_").to_owned(),
        e.revision,
        what,
    )
}

fn b(kind: &str, revision: u64, what: &str) -> Brief {
    (kind.to_owned(), revision, what.to_owned())
}

async fn next(w: &mut Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("no error")
}

/// Makes sandbox `name` on h2 (in scope: the host's own), then returns what `w` sent before
/// its SANDBOX_CREATED, and the marker's revision; `seen` gets all of it, the marker too.
async fn upto_marker(
    s: &Stack,
    w: &mut Streaming<pb::Event>,
    name: &str,
    seen: &mut Vec<Brief>,
) -> (Vec<Brief>, u64) {
    sandboxes(s)
        .create_sandbox(pb::CreateSandboxRequest {
            name: name.into(),
            host: "h2".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let e = next(w).await;
        let brief = brief(&e);
        seen.push(brief.clone());
        if brief.0 == "SANDBOX_CREATED" && brief.2 == format!("sandbox {name}") {
            return (got, e.revision);
        }
        got.push(brief);
    }
}

async fn watch_as(s: &Stack, who: &Bearer, req: pb::WatchRequest) -> Streaming<pb::Event> {
    pb::event_service_client::EventServiceClient::new(s.channel_as(who))
        .watch(req)
        .await
        .unwrap()
        .into_inner()
}

fn scoped(from_revision: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        from_revision,
        scope_host: "h2".into(),
        ..Default::default()
    }
}

/// Everything up to SNAPSHOT_END, and its revision.
async fn snapshot(w: &mut Streaming<pb::Event>) -> (Vec<Brief>, u64) {
    let mut got = Vec::new();
    loop {
        let e = next(w).await;
        if e.kind == K::SnapshotEnd as i32 {
            return (got, e.revision);
        }
        got.push(brief(&e));
    }
}

async fn a_scoped_watch_carries_the_networks_of_the_hosts_endpoints_and_resumes_exactly(
    backend: Backend,
) {
    let s = Stack::start(backend).await;
    let (_a2, addr2, _stop2) = fake_agent().await;
    let (_a3, addr3, _stop3) = fake_agent().await;
    for (name, addr) in [("h2", addr2), ("h3", addr3)] {
        s.registry_for(name)
            .await
            .register_host(register(name, &addr.to_string()))
            .await
            .unwrap();
    }
    let mut nets = s.networks();
    nets.create_network(with_subnet("n1", "10.91.1.0/24"))
        .await
        .unwrap();
    nets.create_network(with_subnet("n2", "10.91.2.0/24"))
        .await
        .unwrap();
    let (_, dns) = s
        .gateway_handle()
        .tokens()
        .create("dns-h2", Role::Dns, "h2", "test")
        .await
        .unwrap();
    let dns = Bearer::new(&dns).unwrap();
    let mut sb = sandboxes(&s);
    // r1 on h3 is on n1 before h2 has anything there; x on h3 is on n2, which h2 never joins.
    sb.create_sandbox(on("r1", "h3", "n1")).await.unwrap();
    sb.create_sandbox(on("x", "h3", "n2")).await.unwrap();

    // h2 has no endpoint: its snapshot is its host, nothing else.
    let mut live = watch_as(&s, &dns, scoped(0)).await;
    let (snap, start) = snapshot(&mut live).await;
    assert_eq!(snap, vec![b("HOST_UP", start, "host h2")]);
    let mut seen = Vec::new();

    // a on h2 joins n1: n1 comes in with r1 and its endpoint, then a's endpoint.
    sb.create_sandbox(on("a", "h2", "n1")).await.unwrap();
    let (got, _) = upto_marker(&s, &mut live, "m1", &mut seen).await;
    let t = got[1].1;
    assert_eq!(
        got,
        vec![
            b("SANDBOX_CREATED", t - 1, "sandbox a"),
            b("SCOPE_ENTERED", t, "network n1"),
            b("SCOPE_ENTERED", t, "sandbox r1"),
            b("SCOPE_ENTERED", t, "endpoint r1@n1"),
            b("ENDPOINT_CONNECTED", t, "endpoint a@n1"),
        ]
    );

    // x (h3) joins n1 too: x comes in before its endpoint; nothing of n2 ever shows.
    sb.connect(pb::ConnectRequest {
        sandbox: "x".into(),
        network: "n1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (got, _) = upto_marker(&s, &mut live, "m2", &mut seen).await;
    let t = got[0].1;
    assert_eq!(
        got[..2],
        [
            b("SCOPE_ENTERED", t, "sandbox x"),
            b("ENDPOINT_CONNECTED", t, "endpoint x@n1"),
        ]
    );
    assert!(got.iter().all(|e| !e.2.contains("@n2")), "{got:?}");

    // r1 goes: its sandbox leaves the scope before its endpoint's removal; its removal itself
    // is not shown (nothing of it is held any more).
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: "r1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (got, _) = upto_marker(&s, &mut live, "m3", &mut seen).await;
    let t = got[0].1;
    assert_eq!(
        got,
        vec![
            b("SCOPE_LEFT", t, "sandbox r1"),
            b("ENDPOINT_DISCONNECTED", t, "endpoint r1@n1"),
        ]
    );

    // a leaves n1, its last endpoint on h2 there: x and n1 leave the scope, then a's endpoint.
    sb.disconnect(pb::DisconnectRequest {
        sandbox: "a".into(),
        network: "n1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (got, end) = upto_marker(&s, &mut live, "m4", &mut seen).await;
    let t = got[0].1;
    assert_eq!(
        got,
        vec![
            b("SCOPE_LEFT", t, "sandbox x"),
            b("SCOPE_LEFT", t, "network n1"),
            b("ENDPOINT_DISCONNECTED", t, "endpoint a@n1"),
        ]
    );

    // What the live stream sent, replayed from every revision: the same events, although
    // the store now holds another state (the scope at each revision is rebuilt, what entered
    // is rolled back to its revision).
    assert_eq!(seen.last().unwrap().1, end);
    assert!(seen.iter().all(|e| !e.2.contains("n2")), "{seen:?}");
    for from in start..end {
        let mut w = watch_as(&s, &dns, scoped(from)).await;
        for want in seen.iter().filter(|e| e.1 > from) {
            assert_eq!(&brief(&next(&mut w).await), want, "resumed from {from}");
        }
    }

    // a joins n1 again: the snapshot of a new watch shows n1 with a and x (and nothing of n2).
    sb.connect(pb::ConnectRequest {
        sandbox: "a".into(),
        network: "n1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (snap, at) = snapshot(&mut watch_as(&s, &dns, scoped(0)).await).await;
    let mut shown: Vec<String> = snap.iter().map(|e| format!("{} {}", e.0, e.2)).collect();
    shown.sort();
    assert_eq!(
        shown,
        [
            "ENDPOINT_CONNECTED endpoint a@n1",
            "ENDPOINT_CONNECTED endpoint x@n1",
            "HOST_UP host h2",
            "NETWORK_CREATED network n1",
            "SANDBOX_CREATED sandbox a",
            "SANDBOX_CREATED sandbox m1",
            "SANDBOX_CREATED sandbox m2",
            "SANDBOX_CREATED sandbox m3",
            "SANDBOX_CREATED sandbox m4",
            "SANDBOX_CREATED sandbox x",
        ]
    );
    assert!(snap.iter().all(|e| e.1 == at));

    // Past the kept history (50 events here) a resume is OUT_OF_RANGE: the client lists again.
    for i in 0..30 {
        nets.create_network(create(&format!("h{i}"))).await.unwrap();
        nets.delete_network(pb::DeleteNetworkRequest {
            network: format!("h{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let st = pb::event_service_client::EventServiceClient::new(s.channel_as(&dns))
        .watch(scoped(start))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::OutOfRange, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_caller_watches_its_own_hosts_scope_only() {
    let s = Stack::start(Backend::Sqlite).await;
    let (_, dns) = s
        .gateway_handle()
        .tokens()
        .create("dns-h2", Role::Dns, "h2", "test")
        .await
        .unwrap();
    let dns = Bearer::new(&dns).unwrap();
    let mut client = pb::event_service_client::EventServiceClient::new(s.channel_as(&dns));
    for other in ["h3", ""] {
        let st = client
            .watch(pb::WatchRequest {
                scope_host: other.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::PermissionDenied, "{other:?}: {st:?}");
        assert!(st.message().contains("may act for host \"h2\""), "{st:?}");
    }
    client.watch(scoped(0)).await.unwrap();
    // An operator may watch any host's scope; a name that is no host name is refused.
    let mut admin = s.events();
    admin
        .watch(pb::WatchRequest {
            scope_host: "h3".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let st = admin
        .watch(pb::WatchRequest {
            scope_host: "no such/host".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("scope_host"), "{st:?}");
}
