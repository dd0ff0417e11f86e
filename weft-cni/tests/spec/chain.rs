//! Chaining as a runtime does it at cniVersion 1.0.0, with Debian's standard plugins after
//! weft-cni: each plugin gets the previous one's result as `prevResult`. portmap publishes a
//! port (a connection to the host's port reaches the container), tuning sets the MAC, bandwidth
//! shapes on the host veth that weft-cni's result names; CHECK of the final result passes;
//! DEL in reverse order leaves nothing.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{Host, NETWORK, Run, container, plugin_in};

const STANDARD: &str = "/usr/lib/cni";
const MAC: &str = "02:11:22:33:44:55";
/// The rate bandwidth is given both ways, bits/s (1 MB/s), and its burst, bits.
const RATE: u64 = 8_000_000;
const BURST: u64 = 100_000;
/// What each measurement sends: two seconds at [`RATE`].
const SENT: usize = 2_000_000;

/// Sends [`SENT`] bytes over TCP from namespace `from` to `to`, a listener made in namespace
/// `at`: the rate the receiver saw, bits/s, from its first byte to the end.
async fn measured_rate(from: &Path, at: &Path, to: SocketAddr) -> f64 {
    let listener = weft_testkit::netns::tcp_listener_in(at, to).await;
    let receiver = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = s.read(&mut buf).await.unwrap();
        let start = Instant::now();
        let mut after_first = 0;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            after_first += n;
        }
        total += after_first;
        assert_eq!(total, SENT);
        after_first as f64 * 8.0 / start.elapsed().as_secs_f64()
    });
    driver_agent::netns::run_in(from, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.write_all(&vec![0x5a; SENT])?;
        s.shutdown(std::net::Shutdown::Write)
    })
    .await
    .unwrap()
    .unwrap();
    receiver.await.unwrap()
}

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
        json!({"type": "bandwidth", "ingressRate": RATE, "ingressBurst": BURST,
               "egressRate": RATE, "egressBurst": BURST}),
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

    // bandwidth's limit, measured both ways: into the container (tbf on the host veth) and out
    // of it (the veth's ingress redirected to an ifb device with tbf). Shaping can only make a
    // transfer slower, so the bound is safe on a slow machine; the figures are printed.
    let container_at: SocketAddr = format!("{}:5201", inside.ip()).parse().unwrap();
    let host_at: SocketAddr = format!("{gateway}:5202").parse().unwrap();
    let into = measured_rate(&host.ns.path, &c.path, container_at).await;
    let out_of = measured_rate(&c.path, &host.ns.path, host_at).await;
    println!(
        "bandwidth at {} Mbit/s: into the container {:.2} Mbit/s, out of it {:.2} Mbit/s",
        RATE / 1_000_000,
        into / 1e6,
        out_of / 1e6
    );
    for (way, rate) in [("into", into), ("out of", out_of)] {
        assert!(
            rate <= RATE as f64 * 1.2,
            "{way} the container: {rate} bit/s, over the limit of {RATE}"
        );
    }

    // CHECK of weft-cni against the final result (tuning's MAC included) passes.
    call(&host, &weft, "CHECK", &c, Some(&result)).success();

    // DEL in reverse order, each with the final result.
    for plugin in chain.iter().rev() {
        call(&host, plugin, "DEL", &c, Some(&result)).success();
    }
    assert!(host.sandboxes().is_empty());
    assert!(!crate::has_link(&c, "eth0"));
}
