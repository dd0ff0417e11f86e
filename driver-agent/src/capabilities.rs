//! What this host's kernel can do, found by trying: each link kind is created for real inside
//! a scratch namespace that dies with its thread, so probing never touches the host; so is an
//! IPsec security association (`ipsec.rs`).

pub mod ipsec;

use std::{io::Write as _, path::Path, process::Stdio};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkBridge, LinkDummy, LinkIpVlan, LinkMacVlan, LinkVeth, LinkVlan, LinkVxlan,
    packet_route::link::{IpVlanMode, MacVlanMode},
};

use crate::netns;

/// Kernel features the drivers need (each driver says which it needs, and the driver registry
/// which drivers they make usable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    pub bridge: bool,
    pub veth: bool,
    pub vxlan: bool,
    pub macvlan: bool,
    pub ipvlan: bool,
    pub vlan: bool,
    pub dummy: bool,
    pub ipv6: bool,
    pub nftables: bool,
    pub nftables_nat: bool,
    pub netns: bool,
}

/// Everything reported by `GetCapabilities`.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub hostname: String,
    pub kernel_release: String,
    pub features: Features,
    /// What encrypted overlay networks would need (the gateway refuses them either way).
    pub ipsec: ipsec::Ipsec,
    pub ipv4_forwarding: bool,
    pub ipv6_forwarding: bool,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Probes the kernel (in a scratch namespace) and reads the forwarding switches of the managed
/// namespace at `host_netns`.
pub async fn detect(host_netns: &Path) -> Capabilities {
    let probe = || (probe_features(), ipsec::probe_here());
    let (features, ipsec) = match tokio::task::spawn_blocking(move || netns::run_in_scratch(probe))
        .await
    {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot create a scratch namespace: reporting no kernel features");
            Default::default()
        }
        Err(e) => {
            tracing::warn!(error = %e, "kernel probe failed: reporting no kernel features");
            Default::default()
        }
    };
    if !ipsec.usable() {
        tracing::info!(missing = ?ipsec.missing, "no IPsec ESP with AES-GCM for encrypted overlays");
    }
    let (ipv4_forwarding, ipv6_forwarding) = forwarding(host_netns).await;
    Capabilities {
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        kernel_release: read_trimmed("/proc/sys/kernel/osrelease"),
        features,
        ipsec,
        ipv4_forwarding,
        ipv6_forwarding,
    }
}

/// The current forwarding switches (IPv4, IPv6) of the namespace at `host_netns`; they change
/// when the agent turns them on for a network, so `GetCapabilities` reads them afresh.
pub async fn forwarding(host_netns: &Path) -> (bool, bool) {
    // /proc/sys/net shows the namespace of the reading thread.
    netns::run_in(host_netns, || {
        (
            read_trimmed("/proc/sys/net/ipv4/ip_forward") == "1",
            read_trimmed("/proc/sys/net/ipv6/conf/all/forwarding") == "1",
        )
    })
    .await
    .unwrap_or_default()
}

/// Runs on the scratch thread: everything created here vanishes with the namespace.
fn probe_features() -> Features {
    let mut f = Features {
        netns: true,
        ipv6: Path::new("/proc/sys/net/ipv6").exists(),
        ..Features::default()
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the probe runtime");
            return f;
        }
    };
    rt.block_on(async {
        let Ok((conn, handle, _)) = rtnetlink::new_connection() else {
            return;
        };
        tokio::spawn(conn);
        f.bridge = try_add(&handle, LinkBridge::new("probe-br").build()).await;
        f.veth = try_add(&handle, LinkVeth::new("probe-va", "probe-vb").build()).await;
        f.dummy = try_add(&handle, LinkDummy::new("probe-dm").build()).await;
        f.vxlan = try_add(&handle, LinkVxlan::new("probe-vx", 42).port(4789).build()).await;
        // macvlan, ipvlan and vlan need a parent: the veth end, when veth works.
        if let Some(parent) = index_of(&handle, "probe-va").await {
            f.macvlan = try_add(
                &handle,
                LinkMacVlan::new("probe-mv", parent, MacVlanMode::Bridge).build(),
            )
            .await;
            f.ipvlan = try_add(
                &handle,
                LinkIpVlan::new("probe-iv", parent, IpVlanMode::L2).build(),
            )
            .await;
            f.vlan = try_add(&handle, LinkVlan::new("probe-vl", parent, 10).build()).await;
        }
    });
    (f.nftables, f.nftables_nat) = probe_nftables();
    f
}

async fn try_add(handle: &Handle, msg: rtnetlink::packet_route::link::LinkMessage) -> bool {
    match handle.link().add(msg).execute().await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "probe link refused");
            false
        }
    }
}

async fn index_of(handle: &Handle, name: &str) -> Option<u32> {
    let mut links = handle.link().get().match_name(name).execute();
    links
        .try_next()
        .await
        .ok()
        .flatten()
        .map(|l| l.header.index)
}

/// nftables through `nft`, run from the scratch thread (a child inherits the thread's
/// namespace), with the expressions the firewall uses: a filter chain matching conntrack
/// state, then NAT chains of family inet with fib, DNAT of both families and masquerade.
fn probe_nftables() -> (bool, bool) {
    let filter = "add table inet weft_probe\n\
        add chain inet weft_probe f { type filter hook forward priority 0; }\n\
        add rule inet weft_probe f oifname \"x\" ct status dnat accept\n";
    let nat = "add table inet weft_probe_nat\n\
        add chain inet weft_probe_nat pre { type nat hook prerouting priority -100; }\n\
        add chain inet weft_probe_nat post { type nat hook postrouting priority 100; }\n\
        add rule inet weft_probe_nat pre fib daddr type local meta nfproto ipv4 tcp dport 1 dnat ip to 127.0.0.1:2\n\
        add rule inet weft_probe_nat pre meta nfproto ipv6 udp dport 1 dnat ip6 to [::1]:2\n\
        add rule inet weft_probe_nat post masquerade\n";
    (nft_accepts(filter), nft_accepts(nat))
}

fn nft_accepts(script: &str) -> bool {
    let Ok(mut child) = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}
