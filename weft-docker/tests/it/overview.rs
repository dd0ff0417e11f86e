//! Docker's networking overview, replayed with the real `docker` CLI on a Weft network; once
//! as it is, once with dockerd and the plugin restarted in the middle.

use std::time::Duration;

use serde_json::Value;
use weft_testkit::netns::{HOST_UPLINK, INTERNET};

use crate::{wait_until, world::World};

pub const IMAGE: &str = "weft-busybox:test";

#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and dockerd in a namespace"
)]
fn docker_networking_overview_on_weft() {
    overview(false);
}

#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and dockerd in a namespace"
)]
fn docker_networking_overview_survives_restarts_of_dockerd_and_the_plugin() {
    overview(true);
}

fn overview(restart: bool) {
    let mut w = World::new();
    w.dockerd.import_busybox(IMAGE);
    let before = w.host.kernel_snapshot();
    let d = w.driver.clone();

    let my_net = w.docker(&["network", "create", "-d", &d, "--ipam-driver", &d, "my-net"]);
    weft_network_is_labelled(&w, &my_net, "my-net");
    run(&w, "c1", &["--network", "my-net"], &["sleep", "600"]);
    run(&w, "c2", &["--network", "my-net"], &["sleep", "600"]);
    let c2 = address_of(&w, "c2", "my-net");
    ping(&w, "c1", &c2);
    ping(&w, "c1", "c2");
    inspect_shows_wefts_addresses(&w, "my-net", &my_net, &["c1", "c2"]);

    if restart {
        w.dockerd.restart();
        w.start_plugin();
        // The containers kept their networking, and new ones attach.
        ping(&w, "c1", "c2");
        run(&w, "c5", &["--network", "my-net"], &["sleep", "600"]);
        ping(&w, "c5", "c1");
        ping(&w, "c1", "c5");
        inspect_shows_wefts_addresses(&w, "my-net", &my_net, &["c1", "c2", "c5"]);
    }

    // A second network, connected to a running container (dockerd 20.10 has no --gw-priority).
    let net2 = w.docker(&[
        "network",
        "create",
        "-d",
        &d,
        "--ipam-driver",
        &d,
        "--subnet",
        "10.123.0.0/24",
        // Docker's -o options reach Weft, which applies them (here to the handed-off veth).
        "-o",
        "com.docker.network.driver.mtu=1400",
        "net2",
    ]);
    w.docker(&["network", "connect", "net2", "c1"]);
    run(&w, "c3", &["--network", "net2"], &["sleep", "600"]);
    let c1_on_net2 = address_of(&w, "c1", "net2");
    assert!(c1_on_net2.starts_with("10.123.0."), "{c1_on_net2}");
    ping(&w, "c3", &c1_on_net2);
    ping(&w, "c3", "c1");
    inspect_shows_wefts_addresses(&w, "net2", &net2, &["c1", "c3"]);
    let mtu = w.docker(&["exec", "c3", "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu, "1400");
    // Disconnected in Docker, disconnected in Weft.
    w.docker(&["network", "disconnect", "net2", "c1"]);
    inspect_shows_wefts_addresses(&w, "net2", &net2, &["c3"]);
    let c1 = w.weftctl_json(&["sandbox", "inspect", "c1"]);
    assert_eq!(c1[0]["endpoints"].as_array().unwrap().len(), 1, "{c1:?}");

    // An internal network reaches nothing outside; a normal one does.
    w.docker(&[
        "network",
        "create",
        "-d",
        &d,
        "--ipam-driver",
        &d,
        "--internal",
        "int-net",
    ]);
    run(&w, "c4", &["--network", "int-net"], &["sleep", "600"]);
    assert!(
        w.dockerd
            .try_docker(&["exec", "c4", "ping", "-c1", "-W1", INTERNET])
            .is_err()
    );
    assert!(
        w.dockerd
            .try_docker(&["exec", "c4", "ping", "-c1", "-W1", HOST_UPLINK])
            .is_err()
    );
    ping(&w, "c1", INTERNET);

    // A published port answers from the internet.
    run(
        &w,
        "web",
        &["--network", "my-net", "-p", "8080:80"],
        &["httpd", "-f", "-p", "80", "-h", "/"],
    );
    let hostname = w.docker(&["exec", "web", "hostname"]);
    let url = format!("http://{HOST_UPLINK}:8080/etc/hostname");
    let got = wait_until(Duration::from_secs(20), "the published port", || {
        let get = format!(
            "import urllib.request;print(urllib.request.urlopen('{url}',timeout=2).read().decode())"
        );
        let out = w
            .internet
            .exec("python3")
            .args(["-c", &get])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    assert_eq!(got, hostname);

    // Everything undone in Docker is undone in Weft and in the kernel.
    w.docker(&["rm", "-f", "c1", "c2", "c3", "c4", "web"]);
    if restart {
        w.docker(&["rm", "-f", "c5"]);
    }
    w.docker(&["network", "rm", "my-net", "net2", "int-net"]);
    nothing_left(&w, &before);
}

/// After `docker rm -f` and `docker network rm` of everything: no sandbox and no network of
/// the plugin's in Weft, `weftctl check` clean, the host namespace's kernel as `before`.
pub fn nothing_left(w: &World, before: &[Value]) {
    assert!(
        w.weftctl_json(&["sandbox", "ls"]).is_empty(),
        "{}",
        w.weftctl(&["sandbox", "ls"])
    );
    let ours: Vec<Value> = w
        .weftctl_json(&["network", "ls"])
        .into_iter()
        .filter(|n| n["labels"]["created-by"] == "weft-docker")
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    w.weftctl(&["check"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = w.host.kernel_snapshot();
        if now == before {
            break;
        }
        if std::time::Instant::now() > deadline {
            // The dumps that differ, each whole: links, routes v4, routes v6, FDB, neighbours,
            // nftables.
            for (i, (b, n)) in before.iter().zip(&now).enumerate() {
                assert_eq!(b, n, "kernel dump {i} differs after the teardown");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!w.plugin_log().contains("panicked"), "{}", w.plugin_log());
}

/// `docker run -d --name NAME ARGS… IMAGE CMD…`.
pub fn run(w: &World, name: &str, args: &[&str], cmd: &[&str]) {
    let mut all = vec!["run", "-d", "--name", name];
    all.extend_from_slice(args);
    all.push(IMAGE);
    all.extend_from_slice(cmd);
    w.docker(&all);
}

/// One ping from `container` to `target` (an address or a name Docker's DNS resolves).
#[track_caller]
pub fn ping(w: &World, container: &str, target: &str) {
    w.docker(&["exec", container, "ping", "-c1", "-W3", target]);
}

/// The container's IPv4 address on `network`, as Docker shows it.
fn address_of(w: &World, container: &str, network: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    w.docker(&["inspect", "-f", &f, container])
}

/// The Weft network of Docker network `id` (by its label) once it also carries Docker's name.
pub fn weft_network_is_labelled(w: &World, id: &str, name: &str) -> Value {
    wait_until(Duration::from_secs(20), "the Weft network labelled", || {
        w.weftctl_json(&["network", "ls"]).into_iter().find(|n| {
            n["labels"]["com.docker.network.id"] == id
                && n["labels"]["com.docker.network.name"] == name
        })
    })
}

/// The endpoints of Weft network `weft_net` as `weftctl network inspect` shows them: (sandbox
/// name, IPv4 address), sorted.
pub(crate) fn weft_endpoints(w: &World, weft_net: &Value) -> Vec<(String, String)> {
    let inspected = w.weftctl_json(&["network", "inspect", weft_net["name"].as_str().unwrap()]);
    let mut endpoints: Vec<(String, String)> = inspected[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["sandboxName"].as_str().unwrap().to_owned(),
                e["ipv4Address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    endpoints.sort();
    endpoints
}

/// `docker network inspect` lists exactly the addresses Weft gave, the containers appear in
/// Weft as sandboxes with their Docker names, and inside each container the interface has
/// that address.
fn inspect_shows_wefts_addresses(w: &World, network: &str, id: &str, containers: &[&str]) {
    let docker: Value = serde_json::from_str(&w.docker(&["network", "inspect", network])).unwrap();
    let mut in_docker: Vec<(String, String)> = docker[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| {
            (
                c["Name"].as_str().unwrap().to_owned(),
                c["IPv4Address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    in_docker.sort();
    let weft_net = weft_network_is_labelled(w, id, network);
    let in_weft = weft_endpoints(w, &weft_net);
    assert_eq!(in_docker, in_weft);
    let names: Vec<&str> = in_weft.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, containers);
    for (name, cidr) in &in_weft {
        let shown = w.docker(&["exec", name, "ip", "-o", "-4", "addr", "show"]);
        assert!(
            shown.contains(cidr.as_str()),
            "{name}: {cidr} not in {shown}"
        );
        // Weft's dns-svc knows them too, on its operator listener.
        let fqdn = format!("{name}.{}.weft.", weft_net["name"].as_str().unwrap());
        let ip = cidr.split('/').next().unwrap();
        wait_until(
            Duration::from_secs(10),
            "the operator listener's answer",
            || {
                let out = w
                    .host
                    .exec("dig")
                    .args(["+short", "-p", "5353", "@127.0.0.1", &fqdn, "A"])
                    .output()
                    .unwrap();
                (String::from_utf8_lossy(&out.stdout).trim() == ip).then_some(())
            },
        );
    }
}
