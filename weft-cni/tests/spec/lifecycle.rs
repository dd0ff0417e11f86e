//! ADD, CHECK and DEL of single containers as a runtime calls them: the result's shape per
//! version, the kernel and Weft's record behind it, tampering that CHECK names, DEL that
//! succeeds whatever is already gone.

use serde_json::{Value, json};

use crate::{Host, NETWORK, addresses, container, has_link};

fn link_mac(ns: &weft_testkit::netns::TestNs, name: &str) -> String {
    ns.ip_json(&["link", "show", "dev", name])[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn sandbox_named(host: &Host, name: &str) -> Option<Value> {
    host.sandboxes().into_iter().find(|s| s["name"] == name)
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn add_check_del_as_a_runtime_does() {
    let host = Host::up();
    let c = container();
    let conf = host.conf("1.0.0", &json!({}));
    let add = host.plugin(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", &c.name),
            ("CNI_NETNS", &c.path_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
        ],
        &conf,
    );
    let result = add.success().clone();
    assert_eq!(result["cniVersion"], "1.0.0");
    // The host veth (no sandbox) and the container interface, with the kernel's MACs.
    let (veth, inside) = (&result["interfaces"][0], &result["interfaces"][1]);
    assert_eq!(veth.get("sandbox"), None, "{result}");
    let veth_name = veth["name"].as_str().unwrap().to_owned();
    assert_eq!(veth["mac"], link_mac(&host.ns, &veth_name));
    assert_eq!(inside["name"], "eth0");
    assert_eq!(inside["sandbox"], c.path_str());
    assert_eq!(inside["mac"], link_mac(&c, "eth0"));
    // The address on the container interface, as the kernel has it.
    let ip = &result["ips"][0];
    assert_eq!(ip["interface"], 1);
    assert_eq!(ip.get("version"), None);
    let address = ip["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("10.89.0."), "{result}");
    assert_eq!(addresses(&c, "eth0"), std::slice::from_ref(&address));
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": ip["gateway"]}])
    );
    assert_eq!(result["dns"]["nameservers"], json!(["127.0.0.11"]));
    // Weft's record: the pod's name and labels.
    let sb = sandbox_named(&host, "web-0").expect("a sandbox named after the pod");
    assert_eq!(sb["containerId"], c.name);
    assert_eq!(sb["labels"]["k8s.pod"], "web-0");
    assert_eq!(sb["labels"]["k8s.namespace"], "default");
    // The host veth is the one Weft's record names.
    assert_eq!(sb["endpoints"][0]["hostInterfaceName"], veth_name);

    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    host.call("CHECK", &c, &check).success();

    // ADD of an interface that exists is refused, and changes nothing.
    let again = host.call("ADD", &c, &conf);
    assert_eq!(again.code(), 103, "{}", again.out);
    assert!(again.msg().contains("eth0"), "{}", again.out);
    assert_eq!(
        sandbox_named(&host, "web-0").unwrap()["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Tampering: CHECK names what is gone.
    c.ip(&["route", "del", "default"]);
    let r = host.call("CHECK", &c, &check);
    assert_eq!(r.code(), 104, "{}", r.out);
    assert!(r.msg().contains("default IPv4 route"), "{}", r.out);
    c.ip(&["addr", "flush", "dev", "eth0"]);
    let r = host.call("CHECK", &c, &check);
    assert_eq!(r.code(), 104, "{}", r.out);
    let bare = address.split('/').next().unwrap();
    assert!(
        r.msg().contains(bare) && r.msg().contains("missing"),
        "{}",
        r.out
    );
    host.ns.ip(&["link", "del", &veth_name]);
    let r = host.call("CHECK", &c, &check);
    assert_eq!(r.code(), 104, "{}", r.out);
    assert!(
        r.msg().contains("eth0") && r.msg().contains("missing"),
        "{}",
        r.out
    );

    // DEL, again, and without a namespace: all succeed; the sandbox is gone.
    host.call("DEL", &c, &conf).success();
    assert!(sandbox_named(&host, "web-0").is_none());
    host.call("DEL", &c, &conf).success();
    host.call_if("DEL", &c.name, "", "eth0", &conf).success();
    let r = host.call("CHECK", &c, &check);
    assert_eq!(r.code(), 3, "{}", r.out);
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn runtime_config_is_honoured_and_del_follows_a_failed_add() {
    let host = Host::up();
    // An address outside the network: the gateway refuses, nothing is left, DEL succeeds.
    let c = container();
    let outside = host.conf("1.0.0", &json!({"runtimeConfig": {"ips": ["10.200.0.5"]}}));
    let r = host.call("ADD", &c, &outside);
    assert_eq!(r.code(), 100, "{}", r.out);
    assert!(r.msg().contains("10.200.0.5"), "{}", r.out);
    assert!(!has_link(&c, "eth0"));
    assert!(host.sandboxes().is_empty());
    host.call("DEL", &c, &outside).success();
    host.call("DEL", &c, &outside).success();

    // A 0.4.0 config: each IP says its version.
    let r = host.call("ADD", &c, &host.conf("0.4.0", &json!({})));
    let result = r.success();
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4");

    // ips, mac and aliases from runtimeConfig (Podman's aliases map, keyed by network).
    let d = container();
    let conf = host.conf(
        "1.1.0",
        &json!({"runtimeConfig": {
            "ips": ["10.89.0.77/24"],
            "mac": "02:00:00:00:00:77",
            "aliases": {NETWORK: ["db"]},
        }}),
    );
    let result = host.call("ADD", &d, &conf).success().clone();
    assert_eq!(result["ips"][0]["address"], "10.89.0.77/24");
    assert_eq!(addresses(&d, "eth0"), ["10.89.0.77/24"]);
    assert_eq!(link_mac(&d, "eth0"), "02:00:00:00:00:77");
    let sb = host
        .sandboxes()
        .into_iter()
        .find(|s| s["containerId"] == d.name)
        .unwrap();
    assert_eq!(sb["endpoints"][0]["aliases"], json!(["db"]));

    for x in [&c, &d] {
        host.call("DEL", x, &host.conf("1.0.0", &json!({})))
            .success();
    }
    assert!(host.sandboxes().is_empty());
}

/// ADD of `c` as Kubernetes' pod `pod` in namespace `ns`.
fn add_pod(host: &Host, c: &weft_testkit::netns::TestNs, pod: &str, ns: &str) -> Value {
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod}");
    host.plugin(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", &c.name),
            ("CNI_NETNS", &c.path_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            ("CNI_ARGS", &args),
        ],
        &host.conf("1.0.0", &json!({})),
    )
    .success()
    .clone()
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn pod_names_stay_unique_and_a_vanished_container_gives_its_name_back() {
    let host = Host::up();
    let conf = host.conf("1.0.0", &json!({}));
    let (a, b) = (container(), container());
    add_pod(&host, &a, "web", "team-a");
    // The same pod name in another namespace: qualified by its namespace.
    add_pod(&host, &b, "web", "team-b");
    assert_eq!(sandbox_named(&host, "web").unwrap()["containerId"], a.name);
    assert_eq!(
        sandbox_named(&host, "web.team-b").unwrap()["containerId"],
        b.name
    );

    // `a` vanishes without a DEL (its namespace gone): the next `web` takes the name back.
    let (a_name, a_path) = (a.name.clone(), a.path_str());
    drop(a);
    let c = container();
    add_pod(&host, &c, "web", "team-a");
    assert_eq!(sandbox_named(&host, "web").unwrap()["containerId"], c.name);
    assert!(!host.sandboxes().iter().any(|s| s["containerId"] == a_name));
    // The late DEL of `a`, its namespace gone, succeeds.
    host.call_if("DEL", &a_name, &a_path, "eth0", &conf)
        .success();

    for x in [&b, &c] {
        host.call("DEL", x, &conf).success();
    }
    assert!(host.sandboxes().is_empty());
}
