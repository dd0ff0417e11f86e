//! The admin API: Resolve explains, GetStats counts, ListListeners lists.

use weft_proto::{
    dns::v1::{
        self as pb, AnswerSource, Rcode, UpstreamOrigin, dns_service_client::DnsServiceClient,
    },
    gateway::v1 as gw,
};

use crate::harness::{
    Dns, FakeUpstream, HOST, UPSTREAM_ANSWER, Upstream, WEB, World, dig_in, endpoint, sandbox,
    wait_listening,
};

fn client(dns: &Dns) -> DnsServiceClient<tonic::transport::Channel> {
    DnsServiceClient::new(weft_testkit::channel(dns.admin))
}

fn ask(sandbox: &str, name: &str) -> pb::ResolveRequest {
    pb::ResolveRequest {
        sandbox: sandbox.into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn resolve_explains_local_forwarded_and_refused_answers() {
    let w = World::new().await;
    let up = FakeUpstream::start(Upstream::Answers).await;
    let dns = Dns::start(&w.url, &[up.addr]).await;
    let mut c = client(&dns);

    let r = c.resolve(ask("client", "web")).await.unwrap().into_inner();
    assert_eq!(r.rcode(), Rcode::Noerror);
    assert_eq!(r.answers[0].data, WEB);
    let e = r.explanation.unwrap();
    assert_eq!(e.source(), AnswerSource::Local);
    assert_eq!(
        (
            e.matches[0].network_name.as_str(),
            e.matches[0].matched_as.as_str()
        ),
        ("backend", "name")
    );

    let r = c
        .resolve(ask("client", "www.upstream.test"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.answers[0].data, UPSTREAM_ANSWER);
    let e = r.explanation.unwrap();
    assert_eq!(e.source(), AnswerSource::Forwarded);
    assert_eq!(e.upstream_origin(), UpstreamOrigin::Host);
    assert_eq!(e.upstream, up.addr.to_string());

    let r = c
        .resolve(ask("isolated", "www.upstream.test"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.rcode(), Rcode::Refused);
    assert_eq!(r.explanation.unwrap().source(), AnswerSource::NotForwarded);
    assert_eq!(up.queries(), 1);

    let r = c
        .resolve(ask("", "web.backend.weft"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.answers[0].data, WEB,
        "empty sandbox: the operator listener"
    );

    let st = c.resolve(ask("nobody", "web")).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);
    let st = c.resolve(ask("web", "db")).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound, "web is on another host");
    let st = c.resolve(ask("client", "")).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);

    let s = c
        .get_stats(pb::GetStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let total = s.total.unwrap();
    assert_eq!(total.queries, 4);
    assert_eq!(
        (total.answered_locally, total.forwarded, total.refused),
        (2, 1, 1)
    );
    let client_stats = s
        .sandboxes
        .iter()
        .find(|x| x.sandbox_name == "client")
        .unwrap();
    assert_eq!(client_stats.counters.unwrap().queries, 2);
    assert_eq!(s.operator_listener.unwrap().queries, 1);
    assert!(s.networks.iter().any(|n| n.network_name == "backend"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn upstreams_are_tried_in_order_past_servfail() {
    let w = World::new().await;
    // A sandbox's own servers are asked from its namespace: these two are on its loopback.
    let picky_ns = crate::harness::netns();
    let bad = FakeUpstream::start_in(Some(&picky_ns), Upstream::ServFail).await;
    let good = FakeUpstream::start_in(Some(&picky_ns), Upstream::Answers).await;
    let dns = Dns::start(&w.url, &[]).await;
    let mut picky = sandbox("spicky000001", "picky", HOST, &picky_ns.path_str(), "");
    picky.dns = Some(gw::DnsConfig {
        servers: vec![bad.addr.to_string(), good.addr.to_string()],
        ..Default::default()
    });
    w.gw.sandbox(picky.clone());
    let rev =
        w.gw.connect(endpoint("epicky", &w.backend, &picky, "10.89.1.60/24", &[]));
    dns.wait_revision(rev).await;
    let r = client(&dns)
        .resolve(ask("picky", "www.upstream.test"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.answers[0].data, UPSTREAM_ANSWER);
    let e = r.explanation.unwrap();
    assert_eq!(e.upstream_origin(), UpstreamOrigin::Sandbox);
    assert_eq!(e.failed_upstreams, [bad.addr.to_string()]);
    assert_eq!(e.upstream, good.addr.to_string());
    assert_eq!((bad.queries(), good.queries()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn list_listeners_shows_the_operator_and_each_sandbox_of_this_host() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    wait_listening(&w.client_ns).await;
    wait_listening(&w.isolated_ns).await;
    let l = client(&dns)
        .list_listeners(pb::ListListenersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = l
        .listeners
        .iter()
        .map(|x| x.sandbox_name.as_str())
        .collect();
    assert_eq!(
        names,
        ["", "client", "isolated"],
        "operator first, then {HOST}'s sandboxes"
    );
    let isolated = &l.listeners[2];
    assert!(!isolated.forwards, "internal only");
    assert_eq!(isolated.address, "127.0.0.11:53");
    assert!(dig_in(&w.client_ns, &["web", "A"]).answers == [WEB]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn host_upstreams_follow_changes_of_the_resolv_conf() {
    let w = World::new().await;
    let first = FakeUpstream::start(Upstream::Answers).await;
    let second = FakeUpstream::start(Upstream::Answers).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    // Our reader takes "ip:port" too, so the fakes need no port 53.
    std::fs::write(&path, format!("nameserver {}\n", first.addr)).unwrap();
    let dns = Dns::start_with(&w.url, &["--resolv-conf", path.to_str().unwrap()]).await;
    let mut c = client(&dns);
    let r = c
        .resolve(ask("client", "www.upstream.test"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.explanation.unwrap().upstream, first.addr.to_string());

    // Replaced by a rename, as resolvconf and NetworkManager do.
    let tmp = dir.path().join("resolv.conf.new");
    std::fs::write(&tmp, format!("nameserver {}\n", second.addr)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let want = second.addr.to_string();
    weft_testkit::wait_for(
        std::time::Duration::from_secs(10),
        "the new upstream",
        || {
            let mut c = c.clone();
            let want = want.clone();
            async move {
                let mut q = ask("client", "www.upstream.test");
                q.local_only = true;
                let r = c.resolve(q).await.unwrap().into_inner();
                (r.explanation.unwrap().upstream == want).then_some(())
            }
        },
    )
    .await;
    let r = c
        .resolve(ask("client", "www.upstream.test"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.answers[0].data, UPSTREAM_ANSWER);
    assert_eq!((first.queries(), second.queries()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn stats_count_queries_nxdomain_forwarded_and_upstream_failures_per_network() {
    let w = World::new().await;
    let bad = FakeUpstream::start(Upstream::ServFail).await;
    let good = FakeUpstream::start(Upstream::Answers).await;
    let dns = Dns::start(&w.url, &[]).await;
    let mut backend = w.backend.clone();
    backend.dns_servers = vec![bad.addr.to_string(), good.addr.to_string()];
    let rev = w.gw.publish(
        gw::EventKind::NetworkUpdated,
        gw::event::Object::Network(backend),
    );
    dns.wait_revision(rev).await;
    wait_listening(&w.client_ns).await;
    let ups_before = (bad.queries(), good.queries());
    let mut c = client(&dns);
    let before = c
        .get_stats(pb::GetStatsRequest {
            networks: vec!["backend".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .networks
        .first()
        .and_then(|n| n.counters)
        .unwrap_or_default();

    assert_eq!(dig_in(&w.client_ns, &["web", "A"]).answers, [WEB]);
    assert_eq!(
        dig_in(&w.client_ns, &["nobody.backend", "A"]).status,
        "NXDOMAIN"
    );
    assert_eq!(
        dig_in(&w.client_ns, &["www.upstream.test", "A"]).answers,
        [UPSTREAM_ANSWER]
    );

    let s = c
        .get_stats(pb::GetStatsRequest {
            networks: vec!["backend".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.networks.len(), 1, "only the network asked for");
    assert_eq!(s.networks[0].network_id, w.backend.id);
    let n = s.networks[0].counters.unwrap();
    assert_eq!(
        (
            n.queries - before.queries,
            n.answered_locally - before.answered_locally,
            n.nxdomain - before.nxdomain,
            n.forwarded - before.forwarded,
            n.upstream_failures - before.upstream_failures,
        ),
        (3, 1, 1, 1, 1),
        "{n:?}"
    );
    assert_eq!(
        (bad.queries() - ups_before.0, good.queries() - ups_before.1),
        (1, 1)
    );
}

/// A listener that cannot open (here something else holds 127.0.0.11:53/udp inside the
/// sandbox's namespace) shows FAILED with its error, and is tried again each second until it
/// opens, with no new event from the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_listener_that_failed_to_open_is_retried_until_it_opens() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    wait_listening(&w.client_ns).await;
    let late_ns = crate::harness::netns();
    let taken = weft_runtime::netns::run_in(
        weft_runtime::netns::Target::Path(late_ns.path.clone()),
        "port-taker",
        || std::net::UdpSocket::bind("127.0.0.11:53"),
    )
    .await
    .unwrap()
    .unwrap();
    let late = sandbox("slate0000001", "late", HOST, &late_ns.path_str(), "");
    w.gw.sandbox(late.clone());
    let rev =
        w.gw.connect(endpoint("elate", &w.backend, &late, "10.89.1.9/24", &[]));
    dns.wait_revision(rev).await;
    let state = || async {
        let l = client(&dns)
            .list_listeners(pb::ListListenersRequest::default())
            .await
            .unwrap()
            .into_inner();
        l.listeners
            .into_iter()
            .find(|x| x.sandbox_name == "late")
            .map(|x| (x.state(), x.error))
    };
    weft_testkit::wait_for(
        std::time::Duration::from_secs(10),
        "the listener to fail",
        || async {
            state()
                .await
                .filter(|(s, _)| *s == pb::ListenerState::Failed)
        },
    )
    .await;
    let (_, error) = state().await.unwrap();
    assert!(error.contains("127.0.0.11:53"), "{error}");
    drop(taken);
    wait_listening(&late_ns).await;
    assert_eq!(
        state().await.map(|(s, _)| s),
        Some(pb::ListenerState::Listening)
    );
    let d = dig_in(&late_ns, &["client", "A"]);
    assert_eq!(d.answers, ["10.89.1.2"], "{}", d.text);
}

/// WaitForRevision returns once the records hold the revision and the sandbox listeners follow
/// them (a new sandbox's listener answers at once), also for a revision that changed nothing
/// DNS keeps; a revision not reached yet times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn wait_for_revision_releases_once_the_records_and_listeners_hold_it() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let mut c = client(&dns);
    let wait = |revision: u64| pb::WaitForRevisionRequest {
        revision,
        timeout: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
    };

    let late_ns = crate::harness::netns();
    let late = sandbox("slate0000001", "late", HOST, &late_ns.path_str(), "");
    w.gw.sandbox(late.clone());
    let rev =
        w.gw.connect(endpoint("elate", &w.backend, &late, "10.89.1.9/24", &[]));
    let got = c.wait_for_revision(wait(rev)).await.unwrap().into_inner();
    assert!(got.revision >= rev, "{got:?}");
    let d = dig_in(&late_ns, &["client", "A"]);
    assert_eq!(d.answers, ["10.89.1.2"], "listening on return: {}", d.text);

    // The same sandbox announced again as it is: nothing changes, the revision still arrives.
    let rev = w.gw.publish(
        gw::EventKind::SandboxCreated,
        gw::event::Object::Sandbox(late),
    );
    let got = c.wait_for_revision(wait(rev)).await.unwrap().into_inner();
    assert!(got.revision >= rev, "{got:?}");

    let err = c.wait_for_revision(wait(rev + 100)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
}
