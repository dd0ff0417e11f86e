//! Records follow the gateway's event stream: list, watch, resume, relist.

use dns_svc::records::{Asker, Local};

use crate::harness::{Dns, World, endpoint, sandbox};

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
