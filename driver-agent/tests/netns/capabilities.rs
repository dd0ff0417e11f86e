//! Capability detection probes a scratch namespace and reports what this kernel has.

use driver_agent::{capabilities, driver};

use crate::support::{TestNs, links};

/// (ipvlan, dummy, 802.1q) as this kernel makes them: each tried with `ip link add`.
pub fn kernel_link_kinds(ns: &TestNs) -> (bool, bool, bool) {
    // A parent for the kinds that need one.
    let made = std::process::Command::new("ip")
        .args([
            "-n", &ns.name, "link", "add", "par0", "type", "veth", "peer", "name", "par1",
        ])
        .status()
        .expect("run ip")
        .success();
    assert!(made, "this kernel makes veth pairs");
    let ipvlan = ns.kernel_makes_link(&["link", "par0", "type", "ipvlan"]);
    let dummy = ns.kernel_makes_link(&["type", "dummy"]);
    let vlan = ns.kernel_makes_link(&["link", "par0", "type", "vlan", "id", "7"]);
    (ipvlan, dummy, vlan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn detects_what_this_kernel_makes_and_reports_the_rest_missing() {
    let host = TestNs::new();
    let before = links(&host);
    // What the kernel has, asked directly (in another namespace): on this project's CI kernel
    // ipvlan, dummy and 802.1q are missing, on a stock kernel they are there.
    let probe = TestNs::new();
    let (ipvlan, dummy, vlan) = kernel_link_kinds(&probe);
    let caps = capabilities::detect(&host.path).await;
    let f = caps.features;
    assert!(
        f.bridge && f.veth && f.macvlan && f.vxlan && f.netns,
        "{f:?}"
    );
    assert_eq!((f.ipvlan, f.dummy, f.vlan), (ipvlan, dummy, vlan), "{f:?}");
    assert!(f.nftables && f.nftables_nat, "{f:?}");
    assert_eq!(
        driver::usable(&f),
        ["bridge", "host", "none", "overlay", "macvlan"]
    );
    // A fresh namespace forwards nothing.
    assert!(!caps.ipv4_forwarding);
    assert!(!caps.kernel_release.is_empty());
    // The probe happened elsewhere: the managed namespace is untouched.
    assert_eq!(links(&host), before);
}
