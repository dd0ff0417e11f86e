//! Records follow the gateway's event stream: list, watch, resume, relist.

use dns_svc::records::{Asker, Local};

use weft_proto::gateway::v1 as gw;

use crate::harness::{Dns, HOST, World, endpoint, network, sandbox};

fn resolves(dns: &Dns, asker: &str, name: &str) -> bool {
    matches!(
        dns.resolver.snapshot().lookup(Asker::Sandbox(asker), name),
        Local::Found(_)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn the_snapshot_then_live_events_build_the_records() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    assert!(resolves(&dns, &w.client.id, "web"), "from the snapshot");
    assert_eq!(w.gw.watches(), [0], "listed once from revision 0");
    let new = sandbox("snew00000001", "newcomer", "h2", "", "");
    w.gw.sandbox(new.clone());
    let rev =
        w.gw.connect(endpoint("enew", &w.backend, &new, "10.89.1.50/24", &[]));
    dns.wait_revision(rev).await;
    assert!(
        resolves(&dns, &w.client.id, "newcomer"),
        "from a live event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_broken_stream_resumes_from_the_last_revision_seen() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let seen = w.gw.revision();
    w.gw.end_streams();
    let new = sandbox("snew00000001", "newcomer", "h2", "", "");
    w.gw.sandbox(new.clone());
    let rev =
        w.gw.connect(endpoint("enew", &w.backend, &new, "10.89.1.50/24", &[]));
    dns.wait_revision(rev).await;
    assert!(resolves(&dns, &w.client.id, "newcomer"));
    assert_eq!(w.gw.watches(), [0, seen], "resumed, not relisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_revision_gone_from_the_log_makes_it_relist() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let seen = w.gw.revision();
    w.gw.end_streams();
    let new = sandbox("snew00000001", "newcomer", "h2", "", "");
    w.gw.sandbox(new.clone());
    let rev =
        w.gw.connect(endpoint("enew", &w.backend, &new, "10.89.1.50/24", &[]));
    w.gw.compact_log();
    dns.wait_revision(rev).await;
    assert!(resolves(&dns, &w.client.id, "newcomer"));
    assert!(
        resolves(&dns, &w.client.id, "web"),
        "the relisted snapshot is whole"
    );
    let watches = w.gw.watches();
    assert_eq!(watches[..2], [0, seen], "{watches:?}");
    assert_eq!(
        watches.last(),
        Some(&0),
        "relisted after OUT_OF_RANGE: {watches:?}"
    );
}

fn operator_finds(dns: &Dns, name: &str) -> bool {
    matches!(
        dns.resolver.snapshot().lookup(Asker::Operator, name),
        Local::Found(_)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_network_enters_and_leaves_the_scope_and_a_break_inside_its_events_resumes_before_them() {
    use weft_proto::gateway::v1::{EventKind as K, event::Object as O};
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    assert_eq!(
        w.gw.scopes(),
        [HOST],
        "dns-svc watches its own host's scope"
    );
    // `far` comes into scope when client (this host) joins it: the gateway sends far, the
    // sandbox of another host on it and its endpoint, then client's ENDPOINT_CONNECTED. The
    // stream breaks before that last one: dns-svc resumes from before them all.
    let far = network("nfar00000001", "far", "10.89.7.0/24", false);
    let remote = sandbox("sremote00001", "remote", "h3", "/run/netns/elsewhere", "");
    let remote_ep = endpoint("eremote", &far, &remote, "10.89.7.2/24", &["r-alias"]);
    let client_ep = endpoint("eclientfar", &far, &w.client, "10.89.7.3/24", &[]);
    let seen = w.gw.revision();
    let entered = [
        (K::ScopeEntered, O::Network(far.clone())),
        (K::ScopeEntered, O::Sandbox(remote.clone())),
        (K::ScopeEntered, O::Endpoint(remote_ep)),
    ];
    let rev = w.gw.publish_scoped(
        &entered,
        K::EndpointConnected,
        O::Endpoint(client_ep.clone()),
        true,
    );
    dns.wait_revision(rev).await;
    assert_eq!(w.gw.watches(), [0, seen], "resumed before the scope events");
    for name in ["remote", "r-alias", "remote.far"] {
        assert!(resolves(&dns, &w.client.id, name), "{name}");
    }
    assert!(operator_finds(&dns, "remote.far"));

    // client leaves far, its last endpoint there: remote and far leave the scope, and with
    // them every record of far.
    let left = [
        (
            K::ScopeLeft,
            O::Sandbox(gw::Sandbox {
                id: remote.id.clone(),
                name: remote.name.clone(),
                host: remote.host.clone(),
                ..Default::default()
            }),
        ),
        (
            K::ScopeLeft,
            O::Network(gw::Network {
                id: far.id.clone(),
                name: far.name.clone(),
                ..Default::default()
            }),
        ),
    ];
    let rev = w.gw.publish_scoped(
        &left,
        K::EndpointDisconnected,
        O::Endpoint(client_ep),
        false,
    );
    dns.wait_revision(rev).await;
    assert!(!resolves(&dns, &w.client.id, "remote"));
    assert!(!operator_finds(&dns, "remote.far"));
    let snap = dns.resolver.snapshot();
    assert!(!snap.networks.contains_key(&far.id));
    assert!(!snap.sandboxes.contains_key(&remote.id));
    assert!(resolves(&dns, &w.client.id, "web"), "the rest stays");
}
