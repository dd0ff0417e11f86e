//! `weftctl sandbox …` against the real gateway.

use serde_json::Value;

use crate::harness::{Stack, json_lines};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_create_ls_inspect_rm() {
    let s = Stack::start().await;
    s.ok(&["network", "create", "front", "--subnet", "10.79.0.0/24"])
        .await;
    s.ok(&["network", "create", "back", "--subnet", "10.80.0.0/24"])
        .await;
    let id = s
        .ok(&[
            "sandbox",
            "create",
            "web",
            "--network",
            "front",
            "--network",
            "name=back,ip=10.80.0.20,alias=api",
            "--hostname",
            "web1",
            "--dns",
            "1.1.1.1",
            "--dns-search",
            "example.org",
            "--dns-option",
            "ndots:2",
            "--add-host",
            "db:10.0.0.9",
            "-p",
            "127.0.0.1:8080:80",
            "--publish",
            "5353:53/udp",
            "--container-id",
            "c0ffee",
        ])
        .await;
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    s.ok(&["sandbox", "create", "idle"]).await;

    let table = s.ok(&["sandbox", "ls"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("SANDBOX ID")
            && lines[0].contains("NETWORKS")
            && lines[0].ends_with("PORTS"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    let web = lines
        .iter()
        .find(|l| l.contains(" web "))
        .expect("web listed");
    assert!(web.starts_with(&id[..12]), "{web}");
    assert!(web.contains("front,back"), "{web}");
    assert!(
        web.contains("127.0.0.1:8080->80/tcp") && web.contains("5353->53/udp"),
        "{web}"
    );

    assert_eq!(
        s.ok(&["sandbox", "ls", "-q", "-f", "network=back"])
            .await
            .trim(),
        &id[..12]
    );
    assert_eq!(
        s.ok(&["sandbox", "ls", "-q", "--no-trunc", "-f", "name=we"])
            .await
            .trim(),
        id
    );
    let idle = json_lines(
        &s.ok(&["--format", "json", "sandbox", "ls", "-f", "name=idle"])
            .await,
    );
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0]["endpoints"], serde_json::json!([]));

    let v: Value = serde_json::from_str(&s.ok(&["sandbox", "inspect", "web"]).await).unwrap();
    let sb = &v[0];
    assert_eq!(sb["id"], id.as_str());
    assert_eq!(sb["hostname"], "web1");
    assert_eq!(sb["containerId"], "c0ffee");
    assert!(!sb["netnsPath"].as_str().unwrap().is_empty());
    assert_eq!(sb["dns"]["servers"], serde_json::json!(["1.1.1.1"]));
    assert_eq!(sb["dns"]["search"], serde_json::json!(["example.org"]));
    assert_eq!(sb["extraHosts"][0]["hostname"], "db");
    assert_eq!(sb["extraHosts"][0]["address"], "10.0.0.9");
    let ports = sb["portMappings"].as_array().unwrap();
    assert_eq!(ports[0]["hostIp"], "127.0.0.1");
    assert_eq!(ports[0]["hostPort"], 8080);
    assert_eq!(ports[0]["containerPort"], 80);
    assert_eq!(ports[1]["protocol"], "PROTOCOL_UDP");
    let eps = sb["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["networkName"], "front");
    assert_eq!(eps[1]["networkName"], "back");
    assert_eq!(eps[1]["ipv4Address"], "10.80.0.20/24");
    assert!(
        eps[1]["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "api")
    );

    assert_eq!(s.ok(&["sandbox", "rm", "web", "idle"]).await, "web\nidle\n");
    assert_eq!(s.ok(&["sandbox", "ls", "-q"]).await, "");
    // The addresses went back: the networks have no endpoints and can be removed.
    assert_eq!(
        s.ok(&["network", "rm", "front", "back"]).await,
        "front\nback\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_network_modes_and_missing_sandboxes() {
    let s = Stack::start().await;
    s.ok(&["sandbox", "create", "base"]).await;
    s.ok(&["sandbox", "create", "side", "--network", "none"])
        .await;
    let v: Value = serde_json::from_str(&s.ok(&["sandbox", "inspect", "side"]).await).unwrap();
    assert_eq!(v[0]["networkMode"], "none", "{v}");
    let table = s.ok(&["sandbox", "ls", "-f", "name=side"]).await;
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains("none")),
        "{table}"
    );

    let r = s.weftctl(&["sandbox", "inspect", "side", "ghost"]).await;
    assert!(r.fails(3).contains("ghost"), "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        1,
        "the found one is still printed"
    );

    let r = s.weftctl(&["sandbox", "rm", "ghost"]).await;
    assert!(r.fails(3).contains("ghost"), "{r:?}");
}
