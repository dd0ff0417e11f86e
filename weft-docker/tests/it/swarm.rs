//! The plugin as managed plugins: a local-scope Weft bridge network through one, and in swarm
//! mode (one node, advertised on the host namespace's uplink) an attachable Weft overlay network
//! through a second one started with `--driver overlay`, the first serving as its IPAM driver.

use std::time::Duration;

use serde_json::Value;
use weft_testkit::netns::HOST_UPLINK;

use crate::{
    managed::Managed,
    overview::{IMAGE, nothing_left, ping, run},
    wait_until,
    world::World,
};

#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and dockerd in a namespace"
)]
fn a_managed_plugin_serves_a_local_weft_network() {
    let w = World::new();
    w.dockerd.import_busybox(IMAGE);
    let net = Managed::create(&w.dockerd, &plugin_name(&w, "net"), "bridge", w.token());
    let before = w.host.kernel_snapshot();
    let d = net.name.as_str();
    let id = w.docker(&["network", "create", "-d", d, "--ipam-driver", d, "m-net"]);
    run(&w, "m1", &["--network", "m-net"], &["sleep", "600"]);
    run(&w, "m2", &["--network", "m-net"], &["sleep", "600"]);
    let weft_net = crate::overview::weft_network_is_labelled(&w, &id, "m-net");
    assert_eq!(weft_net["driver"], "bridge", "{weft_net}");
    let m2 = weft_address_of(&w, &weft_net, "m2");
    ping(&w, "m1", &m2);
    ping(&w, "m1", "m2");
    w.docker(&["rm", "-f", "m1", "m2"]);
    w.docker(&["network", "rm", "m-net"]);
    nothing_left(&w, &before);
}

#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and dockerd in a namespace"
)]
fn swarm_attachable_weft_overlay_network_through_managed_plugins() {
    let w = World::for_swarm();
    w.dockerd.import_busybox(IMAGE);
    let net = Managed::create(&w.dockerd, &plugin_name(&w, "net"), "bridge", w.token());
    let ovl = Managed::create(&w.dockerd, &plugin_name(&w, "ovl"), "overlay", w.token());
    let swarm = Swarm::init(&w);
    // Swarm's own objects (its ingress sandbox) are no concern of Weft's: compared from here.
    let before = w.host.kernel_snapshot();
    let id = w.docker(&[
        "network",
        "create",
        "-d",
        &ovl.name,
        "--attachable",
        "--ipam-driver",
        &net.name,
        "ov",
    ]);
    run(&w, "o1", &["--network", "ov"], &["sleep", "600"]);
    run(&w, "o2", &["--network", "ov"], &["sleep", "600"]);
    let weft_net = crate::overview::weft_network_is_labelled(&w, &id, "ov");
    assert_eq!(weft_net["driver"], "overlay", "{weft_net}");
    let (o1, o2) = (
        weft_address_of(&w, &weft_net, "o1"),
        weft_address_of(&w, &weft_net, "o2"),
    );
    for (c, addr) in [("o1", &o1), ("o2", &o2)] {
        let shown = w.docker(&["exec", c, "ip", "-o", "-4", "addr", "show", "eth0"]);
        assert!(shown.contains(&format!("inet {addr}/")), "{c}: {shown}");
    }
    ping(&w, "o1", &o2);
    ping(&w, "o2", &o1);
    // Docker's embedded DNS answers on a swarm network of a remote driver too.
    ping(&w, "o1", "o2");
    w.docker(&["rm", "-f", "o1", "o2"]);
    w.docker(&["network", "rm", "ov"]);
    // The node drops its copy of a swarm network (DeleteNetwork) once the manager's is gone.
    wait_until(Duration::from_secs(30), "the Weft network deleted", || {
        w.weftctl_json(&["network", "ls"])
            .iter()
            .all(|n| n["labels"]["com.docker.network.id"] != id.as_str())
            .then_some(())
    });
    // The agent takes the overlay's devices down moments after the network is gone from the
    // gateway (checked: within a second); `weftctl check` in between reports that as drift.
    // Past the deadline nothing_left shows what differs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while w.host.kernel_snapshot() != before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    nothing_left(&w, &before);
    // Leaving the swarm leaves nothing in Weft either.
    drop(swarm);
    assert!(w.weftctl_json(&["sandbox", "ls"]).is_empty());
    assert!(
        w.weftctl_json(&["network", "ls"])
            .iter()
            .all(|n| n["labels"]["created-by"] != "weft-docker")
    );
    w.weftctl(&["check"]);
}

/// A plugin name of this test's own (`weft-t<random>/KIND:latest`).
fn plugin_name(w: &World, kind: &str) -> String {
    format!("{}/{kind}:latest", w.driver)
}

/// The IPv4 address (bare) of the endpoint of sandbox `name` on Weft network `net`.
fn weft_address_of(w: &World, net: &Value, name: &str) -> String {
    let inspected = w.weftctl_json(&["network", "inspect", net["name"].as_str().unwrap()]);
    let ep = inspected[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sandboxName"] == name)
        .unwrap_or_else(|| panic!("no {name} in {}", inspected[0]))
        .clone();
    let cidr = ep["ipv4Address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_owned()
}

/// Swarm's VXLAN port: Weft's overlay keeps 4789.
const SWARM_DATA_PORT: &str = "4790";

/// Swarm mode on the test's dockerd, left (`--force`) on drop.
struct Swarm<'a>(&'a World);

impl<'a> Swarm<'a> {
    fn init(w: &'a World) -> Self {
        // Docker's own overlay networks (swarm's ingress, VNI 4096 on) and Weft's (VNIs from
        // 4096 too) cannot share a UDP port: the kernel refuses a second VXLAN device with a
        // VNI already bound to the port in the namespace.
        w.docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            HOST_UPLINK,
            "--data-path-port",
            SWARM_DATA_PORT,
        ]);
        // dockerd then wires swarm's ingress sandbox to its `docker_gwbridge` in the host's
        // namespace, on its own time: awaited, so that the test's kernel snapshot includes it.
        wait_until(Duration::from_secs(30), "swarm's ingress sandbox", || {
            let out = w
                .host
                .exec("ip")
                .args(["-j", "link", "show", "master", "docker_gwbridge"])
                .output()
                .unwrap();
            let ports: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            ports
                .as_array()
                .is_some_and(|p| !p.is_empty())
                .then_some(())
        });
        Self(w)
    }
}

impl Drop for Swarm<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.dockerd.try_docker(&["swarm", "leave", "--force"]) {
            eprintln!("{e}");
        }
    }
}
