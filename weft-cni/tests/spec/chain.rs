//! Chaining as a runtime does it at cniVersion 1.0.0, with Debian's standard plugins after
//! weft-cni: each plugin gets the previous one's result as `prevResult`. portmap publishes a
//! port (a connection to the host's port reaches the container), tuning sets the MAC, bandwidth
//! shapes on the host veth that weft-cni's result names; CHECK of the final result passes;
//! DEL in reverse order leaves nothing.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::{Host, NETWORK, Run, container, plugin_in};

const STANDARD: &str = "/usr/lib/cni";
const MAC: &str = "02:11:22:33:44:55";

/// One plugin of the chain, as libcni calls it: the list's name and version injected, the
/// previous result as prevResult, runtimeConfig for declared capabilities.
fn call(
    host: &Host,
    plugin: &Value,
    command: &str,
    c: &weft_testkit::netns::TestNs,
    prev: Option<&Value>,
) -> Run {
    let mut conf = plugin.clone();
    conf["cniVersion"] = json!("1.0.0");
    conf["name"] = json!(NETWORK);
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", c.name.as_str()),
        ("CNI_NETNS", &c.path_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", STANDARD),
    ];
    match conf["type"].as_str().unwrap() {
        "weft-cni" => plugin_in(Some(&host.ns), &env, &conf.to_string()),
        standard => crate::plugin_program_in(
            &host.ns,
            &Path::new(STANDARD).join(standard),
            &env,
            &conf.to_string(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn portmap_tuning_and_bandwidth_chain_after_weft_at_1_0_0() {
    assert!(
        Path::new(STANDARD).join("portmap").exists(),
        "Debian's containernetworking-plugins are not installed in {STANDARD}"
    );
    let host = Host::up();
    let c = container();
    let weft = host.conf("1.0.0", &json!({}));
    let chain = [
        weft.clone(),
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true,
               "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
        json!({"type": "tuning", "mac": MAC}),
        json!({"type": "bandwidth", "ingressRate": 8_000_000, "ingressBurst": 100_000,
               "egressRate": 8_000_000, "egressBurst": 100_000}),
    ];
    let mut prev: Option<Value> = None;
    for plugin in &chain {
        let r = call(&host, plugin, "ADD", &c, prev.as_ref());
        prev = Some(r.success().clone());
    }
    let result = prev.unwrap();
    // tuning's MAC, in the kernel and in the result.
    assert_eq!(
        c.ip_json(&["link", "show", "dev", "eth0"])[0]["address"],
        MAC
    );
    assert_eq!(result["interfaces"][1]["mac"], MAC);
    // bandwidth shaped the host veth weft-cni named.
    let veth = result["interfaces"][0]["name"].as_str().unwrap().to_owned();
    let qdisc = crate::run_in(&host.ns, "tc", &["-j", "qdisc", "show", "dev", &veth]);
    assert!(qdisc.contains("\"tbf\""), "{qdisc}");
    // portmap: the host's port 8080 (on its bridge address) reaches the container's port 80.
    let inside: SocketAddr = format!(
        "{}:80",
        result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
    )
    .parse()
    .unwrap();
    let listener = weft_testkit::netns::tcp_listener_in(&c.path, inside).await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"from the container\n").await;
        }
    });
    let gateway = result["ips"][0]["gateway"].as_str().unwrap().to_owned();
    let to: SocketAddr = format!("{gateway}:8080").parse().unwrap();
    let got = driver_agent::netns::run_in(&host.ns.path, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok::<_, std::io::Error>(text)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, "from the container\n");

    // CHECK of weft-cni against the final result (tuning's MAC included) passes.
    call(&host, &weft, "CHECK", &c, Some(&result)).success();

    // DEL in reverse order, each with the final result.
    for plugin in chain.iter().rev() {
        call(&host, plugin, "DEL", &c, Some(&result)).success();
    }
    assert!(host.sandboxes().is_empty());
    assert!(!crate::has_link(&c, "eth0"));
}
