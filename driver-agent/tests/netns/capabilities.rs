//! Capability detection probes a scratch namespace and reports what this kernel has.

use driver_agent::{
    capabilities::{self, ipsec},
    driver,
};

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

/// What `ip xfrm state add` says in `ns` to an ESP transport association keyed with `keys`:
/// `None` when it is taken, else the kernel's message.
fn xfrm_refusal(ns: &TestNs, spi: &str, keys: &[&str]) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "xfrm", "state", "add", "src", "192.0.2.1"])
        .args([
            "dst",
            "192.0.2.2",
            "proto",
            "esp",
            "spi",
            spi,
            "mode",
            "transport",
        ])
        .args(keys)
        .output()
        .expect("run ip");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn the_ipsec_probe_reports_what_ip_xfrm_finds_missing_and_leaves_no_state() {
    let host = TestNs::new();
    // The kernel asked directly, in a namespace of the test's own, with iproute2's words:
    // AES-GCM first (its algorithm is looked up before ESP is), then CBC + HMAC.
    let probe = TestNs::new();
    let gcm = xfrm_refusal(
        &probe,
        "0x100",
        &[
            "aead",
            "rfc4106(gcm(aes))",
            "0x0102030405060708090a0b0c0d0e0f1011121314",
            "128",
        ],
    );
    let cbc = xfrm_refusal(
        &probe,
        "0x101",
        &[
            "auth-trunc",
            "hmac(sha256)",
            "0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f10",
            "128",
            "enc",
            "cbc(aes)",
            "0x0102030405060708090a0b0c0d0e0f10",
        ],
    );
    let says = |r: &Option<String>, what: &str| r.as_deref().is_some_and(|m| m.contains(what));
    let mut expected = Vec::new();
    if says(&gcm, "Requested type not found") || says(&cbc, "Requested type not found") {
        expected.push(ipsec::NO_ESP4);
    }
    if says(&gcm, "Requested AEAD algorithm not found") {
        expected.push(ipsec::NO_AES_GCM);
    }
    let caps = capabilities::detect(&host.path).await;
    assert!(caps.ipsec.probed, "{:?}", caps.ipsec);
    assert_eq!(caps.ipsec.missing, expected, "ip xfrm: {gcm:?} / {cbc:?}");
    assert_eq!(caps.ipsec.usable(), gcm.is_none(), "{:?}", caps.ipsec);
    // Nothing of the probe's in the managed namespace.
    // (iproute2 has no JSON for xfrm.)
    assert_eq!(host.ip(&["xfrm", "state", "show"]).trim(), "");
}
