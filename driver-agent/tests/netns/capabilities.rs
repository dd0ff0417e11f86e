//! Capability detection probes a scratch namespace and reports what this kernel has.

use driver_agent::capabilities;

use crate::support::{TestNs, links};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detects_bridge_veth_macvlan_vxlan_and_reports_ipvlan_dummy_vlan_missing() {
    let host = TestNs::new();
    let before = links(&host);
    let caps = capabilities::detect(&host.path).await;
    let f = caps.features;
    assert!(
        f.bridge && f.veth && f.macvlan && f.vxlan && f.netns,
        "{f:?}"
    );
    assert!(!f.ipvlan && !f.dummy && !f.vlan, "{f:?}");
    assert!(f.nftables && f.nftables_nat, "{f:?}");
    assert_eq!(f.drivers(), ["bridge", "host", "none"]);
    // A fresh namespace forwards nothing.
    assert!(!caps.ipv4_forwarding);
    assert!(!caps.kernel_release.is_empty());
    // The probe happened elsewhere: the managed namespace is untouched.
    assert_eq!(links(&host), before);
}
