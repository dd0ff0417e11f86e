//! Dual-stack Docker networks on Weft (`--ipv6`, with a subnet of the user's and with Weft's
//! default IPv6 pool), and containers started at once, each of which must become the Weft
//! sandbox of its own Docker name.

use std::{collections::BTreeMap, thread};

use serde_json::Value;

use crate::{
    overview::{IMAGE, nothing_left, ping, run, weft_endpoints, weft_network_is_labelled},
    world::World,
};

#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and dockerd in a namespace"
)]
fn docker_dual_stack_networks_on_weft() {
    let w = World::new();
    w.dockerd.import_busybox(IMAGE);
    // As on a Docker host with IPv6 networks: Weft turns IPv6 forwarding on for a dual-stack
    // network that is not internal and, as Docker does (and as with IPv4), leaves it on.
    w.host.sysctl_w(&["net.ipv6.conf.all.forwarding=1"]);
    let before = w.host.kernel_snapshot();
    let d = w.driver.clone();

    // A subnet of the user's, and one from Weft's default IPv6 pools.
    let net6 = w.docker(&[
        "network",
        "create",
        "-d",
        &d,
        "--ipam-driver",
        &d,
        "--ipv6",
        "--subnet",
        "fd00:d0c:6::/64",
        "net6",
    ]);
    let auto6 = w.docker(&[
        "network",
        "create",
        "-d",
        &d,
        "--ipam-driver",
        &d,
        "--ipv6",
        "auto6",
    ]);
    for (net, c) in [
        ("net6", "a1"),
        ("net6", "a2"),
        ("auto6", "b1"),
        ("auto6", "b2"),
    ] {
        run(&w, c, &["--network", net], &["sleep", "600"]);
    }

    let weft_net6 = weft_network_is_labelled(&w, &net6, "net6");
    assert_eq!(v6_subnet(&weft_net6), "fd00:d0c:6::/64");
    let weft_auto6 = weft_network_is_labelled(&w, &auto6, "auto6");
    // Weft picked the IPv6 subnet, and Docker shows the same one.
    let picked = v6_subnet(&weft_auto6);
    let docker_auto6: Value =
        serde_json::from_str(&w.docker(&["network", "inspect", "auto6"])).unwrap();
    let docker_subnets: Vec<&str> = docker_auto6[0]["IPAM"]["Config"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["Subnet"].as_str())
        .collect();
    assert!(
        docker_subnets.contains(&picked.as_str()),
        "{docker_subnets:?} {picked}"
    );

    for (net, weft_net, pair) in [
        ("net6", &weft_net6, ["a1", "a2"]),
        ("auto6", &weft_auto6, ["b1", "b2"]),
    ] {
        let shown = inspect_shows_wefts_v6_addresses(&w, net, weft_net, &pair);
        let peer = shown[pair[1]].split('/').next().unwrap().to_owned();
        let pinged = w.docker(&["exec", pair[0], "ping", "-6", "-c1", "-W3", &peer]);
        // (The README's transcript is taken from these.)
        println!("$ docker exec {} ping -6 -c1 {peer}\n{pinged}", pair[0]);
        let listed = w.docker(&[
            "network",
            "inspect",
            net,
            "--format",
            "{{range .Containers}}{{.Name}} {{.IPv4Address}} {{.IPv6Address}}{{println}}{{end}}",
        ]);
        println!("$ docker network inspect {net} ...\n{listed}");
        // Docker routes IPv6 through the gateway Join named.
        let gw = w.docker(&["inspect", "-f", &field(net, "IPv6Gateway"), pair[0]]);
        assert!(!gw.is_empty(), "{net}: no IPv6 gateway in Docker");
        let routes = w.docker(&["exec", pair[0], "ip", "-6", "route", "show", "default"]);
        assert!(routes.contains(&format!("via {gw}")), "{routes}");
        // IPv4 keeps working next to it.
        ping(&w, pair[1], pair[0]);
    }

    w.docker(&["rm", "-f", "a1", "a2", "b1", "b2"]);
    w.docker(&["network", "rm", "net6", "auto6"]);
    nothing_left(&w, &before);
}

#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and dockerd in a namespace"
)]
fn containers_started_at_once_get_their_own_names_in_weft() {
    const N: usize = 6;
    let w = World::new();
    w.dockerd.import_busybox(IMAGE);
    let before = w.host.kernel_snapshot();
    let d = w.driver.clone();
    let id = w.docker(&["network", "create", "-d", &d, "--ipam-driver", &d, "par"]);
    let names: Vec<String> = (0..N).map(|i| format!("par{i}")).collect();
    thread::scope(|s| {
        for name in &names {
            let w = &w;
            s.spawn(move || run(w, name, &["--network", "par"], &["sleep", "600"]));
        }
    });
    let weft_net = weft_network_is_labelled(&w, &id, "par");
    let by_sandbox: BTreeMap<String, String> = weft_endpoints(&w, &weft_net).into_iter().collect();
    let sandboxes: Vec<&String> = by_sandbox.keys().collect();
    assert_eq!(
        sandboxes,
        names.iter().collect::<Vec<_>>(),
        "{by_sandbox:?}"
    );
    for name in &names {
        // The sandbox of that name is that container's: the same address, its id as label.
        let ip = w.docker(&["inspect", "-f", &field("par", "IPAddress"), name]);
        assert_eq!(
            by_sandbox[name].split('/').next(),
            Some(ip.as_str()),
            "{name}"
        );
        let docker_id = w.docker(&["inspect", "-f", "{{.Id}}", name]);
        let sb = w.weftctl_json(&["sandbox", "inspect", name]);
        assert_eq!(sb[0]["containerId"], docker_id.as_str(), "{sb:?}");
    }
    // A container created and never started sits on the network without an endpoint, as the
    // one being started again does: the name still follows the endpoint being joined.
    w.docker(&[
        "create",
        "--name",
        "idle",
        "--network",
        "par",
        IMAGE,
        "sleep",
        "600",
    ]);
    w.docker(&["stop", "-t", "0", "par0"]);
    w.docker(&["start", "par0"]);
    let sb = w.weftctl_json(&["sandbox", "inspect", "par0"]);
    let ip = w.docker(&["inspect", "-f", &field("par", "IPAddress"), "par0"]);
    let weft_ip = sb[0]["endpoints"][0]["ipv4Address"].as_str().unwrap();
    assert_eq!(weft_ip.split('/').next(), Some(ip.as_str()), "{sb:?}");
    assert!(
        w.weftctl_json(&["sandbox", "ls"])
            .iter()
            .all(|s| s["name"] != "idle"),
        "{}",
        w.weftctl(&["sandbox", "ls"])
    );
    let mut rm = vec!["rm", "-f", "idle"];
    rm.extend(names.iter().map(String::as_str));
    w.docker(&rm);
    w.docker(&["network", "rm", "par"]);
    nothing_left(&w, &before);
}

/// A Go template for field `what` of the container's endpoint on `network`.
fn field(network: &str, what: &str) -> String {
    format!("{{{{(index .NetworkSettings.Networks \"{network}\").{what}}}}}")
}

/// The IPv6 subnet of a Weft network (as `weftctl network ls` shows it).
fn v6_subnet(net: &Value) -> String {
    net["ipam"]["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["subnet"].as_str())
        .find(|s| s.contains(':'))
        .unwrap_or_else(|| panic!("no IPv6 subnet: {net}"))
        .to_owned()
}

/// `docker network inspect` lists exactly the IPv6 addresses Weft gave (and the IPv4 ones),
/// inside each container the interface has its IPv6 address; returns them by container.
fn inspect_shows_wefts_v6_addresses(
    w: &World,
    network: &str,
    weft_net: &Value,
    containers: &[&str],
) -> BTreeMap<String, String> {
    let docker: Value = serde_json::from_str(&w.docker(&["network", "inspect", network])).unwrap();
    let pick = |v: &Value, name: &str, v4: &str, v6: &str| {
        (
            v[name].as_str().unwrap().to_owned(),
            (
                v[v4].as_str().unwrap().to_owned(),
                v[v6].as_str().unwrap().to_owned(),
            ),
        )
    };
    let in_docker: BTreeMap<String, (String, String)> = docker[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| pick(c, "Name", "IPv4Address", "IPv6Address"))
        .collect();
    let inspected = w.weftctl_json(&["network", "inspect", weft_net["name"].as_str().unwrap()]);
    let in_weft: BTreeMap<String, (String, String)> = inspected[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| pick(e, "sandboxName", "ipv4Address", "ipv6Address"))
        .collect();
    assert_eq!(in_docker, in_weft);
    let names: Vec<&str> = in_weft.keys().map(String::as_str).collect();
    assert_eq!(names, containers);
    let subnet: ipnet::Ipv6Net = v6_subnet(weft_net).parse().unwrap();
    let mut v6 = BTreeMap::new();
    for (name, (_, cidr)) in in_weft {
        let addr: ipnet::Ipv6Net = cidr.parse().unwrap();
        assert!(
            subnet.contains(&addr.addr()),
            "{name}: {cidr} not in {subnet}"
        );
        let shown = w.docker(&["exec", &name, "ip", "-o", "-6", "addr", "show"]);
        assert!(shown.contains(&cidr), "{name}: {cidr} not in {shown}");
        v6.insert(name, cidr);
    }
    v6
}
