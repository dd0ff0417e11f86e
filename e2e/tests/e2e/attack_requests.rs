//! Hostile requests against `weft up` in a namespace playing the host (security issue 11,
//! classes 3 and 4): strings that would end up in `resolv.conf`, `hosts`, nftables rules, link
//! names or DNS records, and ranges and counts past their limits. Each is INVALID_ARGUMENT with
//! a BadRequest detail naming the field, nothing is kept, a multibyte container id panics
//! nothing, and [`Bystanders::check`] shows the host and the other sandboxes as they were. (The
//! full table of hostile inputs is `gateway/tests/it/bad_input.rs`; this one goes through the
//! real stack.)

use serde_json::{Value, json};

use crate::{
    intact::Bystanders,
    world::{Weft, World, violated_fields},
};

const CREATE_SANDBOX: &str = "weft.gateway.v1.SandboxService/CreateSandbox";
const CREATE_NETWORK: &str = "weft.gateway.v1.NetworkService/CreateNetwork";
const CONNECT: &str = "weft.gateway.v1.SandboxService/Connect";

fn sandbox(name: &str, extra: Value) -> Value {
    let mut body = json!({ "name": name, "networks": [{ "network": "by-net" }] });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn on_net(settings: Value) -> Value {
    json!({ "networks": [{ "network": "by-net", "settings": settings }] })
}

fn names(w: &World, method: &str, list: &str) -> Vec<String> {
    let listed = w.grpcurl(method, r#"{"pageSize": 1000}"#);
    let mut names: Vec<String> = listed[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    names.sort_unstable();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_hostile_strings_and_counts_are_refused_naming_the_field() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    let mut by = Bystanders::new(&w).await;
    w.ok(&["network", "create", "atk-net"]);
    let networks = names(
        &w,
        "weft.gateway.v1.NetworkService/ListNetworks",
        "networks",
    );
    by.baseline(&w);

    let many = |n: usize, f: &dyn Fn(usize) -> Value| (0..n).map(f).collect::<Vec<_>>();
    let dns = |key: &str, v: Value| json!({ "dns": { key: v } });
    let extra_host = |hostname: &str, address: &str| json!({"extraHosts": [{"hostname": hostname, "address": address}]});
    let tcp = |host_port: usize| json!({"hostPort": host_port, "containerPort": 80, "protocol": "PROTOCOL_TCP"});
    let settings = |v: Value| json!({"sandbox": "by-client", "network": "atk-net", "settings": v});
    // (sandbox name, the field the refusal names, the sandbox's hostile part); one row a case.
    #[rustfmt::skip]
    let strings: Vec<(&str, &str, Value)> = vec![
        // Class 3: strings written into files, rules, link names and records.
        ("s1", "dns.search", dns("search", json!(["ok.example\nnameserver 192.0.2.9"]))),
        ("s2", "dns.options", dns("options", json!(["ndots:1\nnameserver 192.0.2.9"]))),
        ("s3", "dns.servers", dns("servers", json!(["192.0.2.9\nsearch evil"]))),
        ("s4", "hostname", json!({"hostname": "web\n192.0.2.9 evil"})),
        ("s5", "extra_hosts", extra_host("db\tevil", "192.0.2.9")),
        ("s6", "extra_hosts", extra_host("db", "192.0.2.9\n")),
        ("s7", "aliases", on_net(json!({"aliases": ["db*"]}))),
        ("s8", "aliases", on_net(json!({"aliases": ["db\nevil"]}))),
        ("s9", "interface_name", on_net(json!({"interfaceName": "eth*"}))),
        ("s10", "interface_name", on_net(json!({"interfaceName": "a-name-too-long-for-linux"}))),
        ("s11\n", "name", json!({})),
        ("s12", "container_id", json!({"containerId": "abc\ndef"})),
    ];
    #[rustfmt::skip]
    let counts: Vec<(&str, &str, Value)> = vec![
        // Class 4: ranges and counts.
        ("c1", "port_mappings", json!({"portMappings": [{"hostPort": 65530, "containerPort": 80, "protocol": "PROTOCOL_TCP", "range": 10}]})),
        ("c2", "port_mappings", json!({"portMappings": many(65, &|i| tcp(20000 + i))})),
        ("c3", "dns.servers", dns("servers", json!(many(9, &|i| json!(format!("192.0.2.{}", i + 1)))))),
        ("c4", "extra_hosts", json!({"extraHosts": many(65, &|i| json!({"hostname": format!("h{i}"), "address": "192.0.2.1"}))})),
        ("c5", "aliases", on_net(json!({"aliases": many(33, &|i| json!(format!("a{i}")))}))),
    ];
    // (method, body, the field the refusal names)
    #[rustfmt::skip]
    let others: Vec<(&str, Value, &str)> = vec![
        (CREATE_NETWORK, json!({"name": "n1\n"}), "name"),
        (CREATE_NETWORK, json!({"name": "n2", "options": {"com.docker.network.bridge.name": "br*"}}), "options"),
        (CREATE_NETWORK, json!({"name": "c6", "ipam": {"configs": [{"subnet": "10.0.0.0/7"}]}}), "subnet"),
        (CREATE_NETWORK, json!({"name": "c7", "enableIpv6": true, "ipam": {"configs": [{"subnet": "fd00::/31"}]}}), "subnet"),
        (CONNECT, settings(json!({"aliases": ["x\ny"]})), "aliases"),
        (CONNECT, settings(json!({"interfaceName": "e th"})), "interface_name"),
    ];
    let as_create = |(name, field, extra): (&'static str, &'static str, Value)| {
        (CREATE_SANDBOX, sandbox(name, extra), field)
    };
    let hostile: Vec<(&str, Value, &str)> = strings
        .into_iter()
        .map(as_create)
        .chain(others[..2].iter().cloned())
        .chain(counts.into_iter().map(as_create))
        .chain(others[2..].iter().cloned())
        .collect();
    for (method, body, field) in &hostile {
        let st = w.grpcurl_err(method, &body.to_string());
        assert_eq!(st["code"], 3, "{method} {body}: not INVALID_ARGUMENT: {st}");
        let fields = violated_fields(&st);
        assert!(
            fields.iter().any(|f| f.contains(field)),
            "{method} {body}: no BadRequest detail names {field}: {st}"
        );
    }
    // A multibyte container id is refused, and panics nothing (it once took down dns-svc's
    // listeners for every sandbox): the bystanders' check below asks dns-svc.
    let body = sandbox("mb", json!({"containerId": "é".repeat(40)})).to_string();
    let st = w.grpcurl_err(CREATE_SANDBOX, &body);
    assert_eq!(st["code"], 3, "a multibyte container id: {st}");
    assert!(
        violated_fields(&st)
            .iter()
            .any(|f| f.contains("container_id")),
        "{st}"
    );
    let st = w.grpcurl_err(
        "weft.gateway.v1.SandboxService/DeleteSandbox",
        r#"{"sandbox": "mb"}"#,
    );
    assert_eq!(st["code"], 5, "{st}");

    // Nothing kept.
    assert_eq!(
        names(
            &w,
            "weft.gateway.v1.SandboxService/ListSandboxes",
            "sandboxes"
        ),
        ["by-client", "by-server"]
    );
    assert_eq!(
        names(
            &w,
            "weft.gateway.v1.NetworkService/ListNetworks",
            "networks"
        ),
        networks
    );
    by.check(&w).await;
}
