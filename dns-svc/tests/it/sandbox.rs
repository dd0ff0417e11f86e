//! From inside sandbox namespaces, with the real dig against 127.0.0.11:53.

use std::time::Duration;

use weft_proto::gateway::v1::{EventKind, event::Object};

use crate::harness::{
    DB, Dns, FakeUpstream, HIDDEN, HOST, MANY_ANSWERS, TCP_ANSWERS, UPSTREAM_ANSWER, Upstream, WEB,
    WEB6, World, dig_in, endpoint, sandbox, wait_listening,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_peers_name_alias_hostname_and_qualified_name_resolve_inside_the_sandbox() {
    let w = World::new().await;
    let up = FakeUpstream::start(Upstream::Answers).await;
    let _dns = Dns::start(&w.url, &[up.addr]).await;
    wait_listening(&w.client_ns).await;
    // The readiness probe is not a Weft name, so it went upstream.
    let before = up.queries();
    for name in ["web", "WEB", "web-host", "web.backend", "Web.Backend."] {
        let d = dig_in(&w.client_ns, &[name, "A"]);
        assert_eq!(d.status, "NOERROR", "{name}: {}", d.text);
        assert_eq!(d.answers, [WEB], "{name}: {}", d.text);
    }
    let d = dig_in(&w.client_ns, &["web", "AAAA"]);
    assert_eq!(d.answers, [WEB6], "{}", d.text);
    let d = dig_in(&w.client_ns, &["db", "AAAA"]);
    assert_eq!(
        (d.status.as_str(), d.answers.len()),
        ("NOERROR", 0),
        "no IPv6: {}",
        d.text
    );
    let d = dig_in(&w.client_ns, &["+tcp", "db", "A"]);
    assert_eq!(d.answers, [DB], "over TCP: {}", d.text);
    let ttl = d
        .text
        .lines()
        .find(|l| l.starts_with("db."))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    assert_eq!(ttl.as_deref(), Some("0"), "TTL 0: {}", d.text);
    let d = dig_in(&w.client_ns, &["nobody.backend", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    assert_eq!(up.queries(), before, "local names never reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_shared_alias_returns_every_member_in_rotating_order() {
    let w = World::new().await;
    let _dns = Dns::start(&w.url, &[]).await;
    wait_listening(&w.client_ns).await;
    let first = dig_in(&w.client_ns, &["api", "A"]);
    let second = dig_in(&w.client_ns, &["api", "A"]);
    for d in [&first, &second] {
        let mut got = d.answers.clone();
        got.sort();
        assert_eq!(got, [WEB, DB], "{}", d.text);
    }
    assert_ne!(first.answers, second.answers, "order rotates per query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn ptr_of_a_peer_address_names_the_peer_on_its_network() {
    let w = World::new().await;
    let _dns = Dns::start(&w.url, &[]).await;
    wait_listening(&w.client_ns).await;
    let d = dig_in(&w.client_ns, &["-x", WEB]);
    assert_eq!(d.answers, ["web.backend."], "{}", d.text);
    let d = dig_in(&w.client_ns, &["-x", WEB6]);
    assert_eq!(d.answers, ["web.backend."], "IPv6 too: {}", d.text);
    let d = dig_in(&w.client_ns, &["-x", "10.89.1.200"]);
    assert_eq!(
        d.status, "NXDOMAIN",
        "unknown address in a subnet of ours: {}",
        d.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_name_on_a_network_the_asker_is_not_on_is_nxdomain() {
    let w = World::new().await;
    let up = FakeUpstream::start(Upstream::Answers).await;
    let _dns = Dns::start(&w.url, &[up.addr]).await;
    wait_listening(&w.client_ns).await;
    for name in ["hidden", "hidden.secret"] {
        let d = dig_in(&w.client_ns, &[name, "A"]);
        assert_eq!(d.status, "NXDOMAIN", "{name}: {}", d.text);
        assert!(d.answers.is_empty(), "{name}: {}", d.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn external_names_are_forwarded_to_the_upstream_and_its_answer_comes_back() {
    let w = World::new().await;
    let up = FakeUpstream::start(Upstream::Answers).await;
    let _dns = Dns::start(&w.url, &[up.addr]).await;
    wait_listening(&w.client_ns).await;
    let before = up.queries();
    let d = dig_in(&w.client_ns, &["www.upstream.test", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert_eq!(d.answers, [UPSTREAM_ANSWER], "{}", d.text);
    assert_eq!(up.queries(), before + 1);
    let d = dig_in(&w.client_ns, &["big.tcp.upstream.test", "A"]);
    let mut got = d.answers.clone();
    got.sort();
    assert_eq!(
        got, TCP_ANSWERS,
        "a truncated upstream answer is asked again over TCP: {}",
        d.text
    );
    assert_eq!(up.tcp_queries(), 1);
    let d = dig_in(&w.client_ns, &["missing.example", "A"]);
    assert_eq!(
        d.status, "NXDOMAIN",
        "the upstream's NXDOMAIN is final: {}",
        d.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn queries_from_an_internal_network_never_reach_the_upstream() {
    let w = World::new().await;
    let up = FakeUpstream::start(Upstream::Answers).await;
    let _dns = Dns::start(&w.url, &[up.addr]).await;
    wait_listening(&w.isolated_ns).await;
    let d = dig_in(&w.isolated_ns, &["hidden", "A"]);
    assert_eq!(
        d.answers,
        [HIDDEN],
        "peers on the internal network resolve: {}",
        d.text
    );
    let d = dig_in(&w.isolated_ns, &["www.upstream.test", "A"]);
    assert!(d.answers.is_empty(), "no answer from outside: {}", d.text);
    assert_eq!(d.status, "REFUSED", "{}", d.text);
    assert_eq!(up.queries(), 0, "the upstream was never asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn listeners_open_when_a_sandbox_appears_and_close_when_it_goes() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    wait_listening(&w.client_ns).await;
    let late_ns = crate::harness::netns();
    let late = sandbox("slate0000001", "late", HOST, &late_ns.path_str(), "");
    w.gw.sandbox(late.clone());
    let rev =
        w.gw.connect(endpoint("elate", &w.backend, &late, "10.89.1.9/24", &[]));
    dns.wait_revision(rev).await;
    wait_listening(&late_ns).await;
    let d = dig_in(&late_ns, &["client", "A"]);
    assert_eq!(d.answers, ["10.89.1.2"], "{}", d.text);
    let d = dig_in(&w.client_ns, &["late", "A"]);
    assert_eq!(d.answers, ["10.89.1.9"], "{}", d.text);

    w.gw.publish(
        EventKind::EndpointDisconnected,
        Object::Endpoint(endpoint("elate", &w.backend, &late, "10.89.1.9/24", &[])),
    );
    w.gw.publish(EventKind::SandboxRemoved, Object::Sandbox(late));
    weft_testkit::wait_for(Duration::from_secs(10), "the listener to close", || {
        let d = dig_in(&late_ns, &["+timeout=1", "client", "A"]);
        async move { d.status.is_empty().then_some(()) }
    })
    .await;
    let d = dig_in(&w.client_ns, &["late.backend", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
}

/// A sandbox announced again with another namespace gets its listener there and loses the old
/// one (the listeners follow the sandboxes changed since their last pass), and one announced
/// again unchanged keeps its listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_sandbox_moved_to_another_namespace_gets_its_listener_there() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    wait_listening(&w.client_ns).await;
    let (first_ns, second_ns) = (crate::harness::netns(), crate::harness::netns());
    let first = sandbox("smove0000001", "moving", HOST, &first_ns.path_str(), "");
    w.gw.sandbox(first.clone());
    let rev =
        w.gw.connect(endpoint("emove", &w.backend, &first, "10.89.1.10/24", &[]));
    dns.wait_revision(rev).await;
    wait_listening(&first_ns).await;

    let moved = sandbox("smove0000001", "moving", HOST, &second_ns.path_str(), "");
    let rev =
        w.gw.publish(EventKind::SandboxCreated, Object::Sandbox(moved));
    dns.wait_revision(rev).await;
    wait_listening(&second_ns).await;
    let d = dig_in(&second_ns, &["client", "A"]);
    assert_eq!(d.answers, ["10.89.1.2"], "{}", d.text);
    weft_testkit::wait_for(Duration::from_secs(10), "the old listener to close", || {
        let d = dig_in(&first_ns, &["+timeout=1", "client", "A"]);
        async move { d.status.is_empty().then_some(()) }
    })
    .await;

    // The client, announced again as it is: nothing to do, its listener stays.
    let rev =
        w.gw.publish(EventKind::SandboxCreated, Object::Sandbox(w.client.clone()));
    dns.wait_revision(rev).await;
    let d = dig_in(&w.client_ns, &["moving", "A"]);
    assert_eq!(d.answers, ["10.89.1.10"], "{}", d.text);
}

/// Issue 11: whatever EDNS size a client advertises, a UDP answer through 127.0.0.11 is at most
/// 1232 bytes, with TC set when the answer is bigger; the client then gets it whole over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn udp_answers_are_capped_at_1232_bytes_whatever_edns_size_is_asked() {
    let w = World::new().await;
    let up = FakeUpstream::start(Upstream::Answers).await;
    let _dns = Dns::start(&w.url, &[up.addr]).await;
    wait_listening(&w.client_ns).await;
    let d = dig_in(
        &w.client_ns,
        &["+bufsize=4096", "+ignore", "x.many.upstream.test", "A"],
    );
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    let size = msg_size(&d.text);
    assert!(size <= 1232, "{size} bytes over UDP: {}", d.text);
    assert!(flags(&d.text).contains(&"tc".to_owned()), "TC: {}", d.text);
    assert!(d.answers.len() < usize::from(MANY_ANSWERS), "{}", d.text);
    assert!(!d.text.contains("WARNING"), "a clean message: {}", d.text);
    // The OPT record says what we take: the cap, not what was asked.
    assert!(d.text.contains("udp: 1232"), "{}", d.text);
    // Without +ignore, dig asks again over TCP and gets every record.
    let d = dig_in(
        &w.client_ns,
        &["+bufsize=4096", "x.many.upstream.test", "A"],
    );
    assert_eq!(d.answers.len(), usize::from(MANY_ANSWERS), "{}", d.text);
    assert!(!flags(&d.text).contains(&"tc".to_owned()), "{}", d.text);
}

/// The size dig reports for the answer (`;; MSG SIZE  rcvd: N`).
fn msg_size(text: &str) -> usize {
    text.lines()
        .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size in {text}"))
}

/// The header flags dig shows (`;; flags: qr tc rd ra;`).
fn flags(text: &str) -> Vec<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .map(|f| {
            f.split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 11: a sandbox's own DNS servers are asked from the sandbox's namespace. One that
/// names a loopback server of dns-svc's namespace gets SERVFAIL (that server never hears of it);
/// one whose server is on its own loopback gets the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_sandboxs_own_dns_servers_are_asked_from_its_own_namespace() {
    let w = World::new().await;
    let host_side = FakeUpstream::start(Upstream::Answers).await;
    let dns = Dns::start(&w.url, &[host_side.addr]).await;

    // `sneaky` names the loopback server of dns-svc's namespace as its own.
    let sneaky_ns = crate::harness::netns();
    let mut sneaky = sandbox("ssneaky00001", "sneaky", HOST, &sneaky_ns.path_str(), "");
    sneaky.dns = Some(weft_proto::gateway::v1::DnsConfig {
        servers: vec![host_side.addr.to_string()],
        ..Default::default()
    });
    w.gw.sandbox(sneaky.clone());
    w.gw.connect(endpoint(
        "esneaky",
        &w.backend,
        &sneaky,
        "10.89.1.20/24",
        &[],
    ));
    // `own` has a server on its own loopback.
    let own_ns = crate::harness::netns();
    let inside = FakeUpstream::start_in(Some(&own_ns), Upstream::Answers).await;
    let mut own = sandbox("sown00000001", "own", HOST, &own_ns.path_str(), "");
    own.dns = Some(weft_proto::gateway::v1::DnsConfig {
        servers: vec![inside.addr.to_string()],
        ..Default::default()
    });
    w.gw.sandbox(own.clone());
    let rev =
        w.gw.connect(endpoint("eown", &w.backend, &own, "10.89.1.21/24", &[]));
    dns.wait_revision(rev).await;
    wait_listening(&sneaky_ns).await;
    wait_listening(&own_ns).await;

    let d = dig_in(&sneaky_ns, &["www.upstream.test", "A"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    assert!(d.answers.is_empty(), "{}", d.text);
    let d = dig_in(&sneaky_ns, &["big.tcp.upstream.test", "A"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    assert_eq!(
        host_side.queries(),
        0,
        "the host-side server never heard of it"
    );

    let d = dig_in(&own_ns, &["www.upstream.test", "A"]);
    assert_eq!(d.answers, [UPSTREAM_ANSWER], "{}", d.text);
    let d = dig_in(&own_ns, &["big.tcp.upstream.test", "A"]);
    assert_eq!(
        d.answers.len(),
        TCP_ANSWERS.len(),
        "over TCP too: {}",
        d.text
    );
    assert_eq!(inside.tcp_queries(), 1);
    assert_eq!(host_side.queries(), 0);
    // Weft's own names still resolve for both.
    let d = dig_in(&sneaky_ns, &["client", "A"]);
    assert_eq!(d.answers, ["10.89.1.2"], "{}", d.text);
    // And sandboxes without servers of their own still use the host's.
    let d = dig_in(&w.client_ns, &["www.upstream.test", "A"]);
    assert_eq!(d.answers, [UPSTREAM_ANSWER], "{}", d.text);
    assert_eq!(host_side.queries(), 1);
}
