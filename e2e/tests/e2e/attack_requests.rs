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
    let hostile: Vec<(&str, Value, &str)> = vec![
        // Class 3: strings written into files, rules, link names and records.
        (
            CREATE_SANDBOX,
            sandbox(
                "s1",
                json!({"dns": {"search": ["ok.example\nnameserver 192.0.2.9"]}}),
            ),
            "dns.search",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "s2",
                json!({"dns": {"options": ["ndots:1\nnameserver 192.0.2.9"]}}),
            ),
            "dns.options",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "s3",
                json!({"dns": {"servers": ["192.0.2.9\nsearch evil"]}}),
            ),
            "dns.servers",
        ),
        (
            CREATE_SANDBOX,
            sandbox("s4", json!({"hostname": "web\n192.0.2.9 evil"})),
            "hostname",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "s5",
                json!({"extraHosts": [{"hostname": "db\tevil", "address": "192.0.2.9"}]}),
            ),
            "extra_hosts",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "s6",
                json!({"extraHosts": [{"hostname": "db", "address": "192.0.2.9\n"}]}),
            ),
            "extra_hosts",
        ),
        (
            CREATE_SANDBOX,
            sandbox("s7", on_net(json!({"aliases": ["db*"]}))),
            "aliases",
        ),
        (
            CREATE_SANDBOX,
            sandbox("s8", on_net(json!({"aliases": ["db\nevil"]}))),
            "aliases",
        ),
        (
            CREATE_SANDBOX,
            sandbox("s9", on_net(json!({"interfaceName": "eth*"}))),
            "interface_name",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "s10",
                on_net(json!({"interfaceName": "a-name-too-long-for-linux"})),
            ),
            "interface_name",
        ),
        (CREATE_SANDBOX, sandbox("s11\n", json!({})), "name"),
        (
            CREATE_SANDBOX,
            sandbox("s12", json!({"containerId": "abc\ndef"})),
            "container_id",
        ),
        (CREATE_NETWORK, json!({"name": "n1\n"}), "name"),
        (
            CREATE_NETWORK,
            json!({"name": "n2", "options": {"com.docker.network.bridge.name": "br*"}}),
            "options",
        ),
        // Class 4: ranges and counts.
        (
            CREATE_SANDBOX,
            sandbox(
                "c1",
                json!({"portMappings": [{"hostPort": 65530, "containerPort": 80, "protocol": "PROTOCOL_TCP", "range": 10}]}),
            ),
            "port_mappings",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "c2",
                json!({"portMappings": many(65, &|i| json!({"hostPort": 20000 + i, "containerPort": 80, "protocol": "PROTOCOL_TCP"}))}),
            ),
            "port_mappings",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "c3",
                json!({"dns": {"servers": many(9, &|i| json!(format!("192.0.2.{}", i + 1)))}}),
            ),
            "dns.servers",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "c4",
                json!({"extraHosts": many(65, &|i| json!({"hostname": format!("h{i}"), "address": "192.0.2.1"}))}),
            ),
            "extra_hosts",
        ),
        (
            CREATE_SANDBOX,
            sandbox(
                "c5",
                on_net(json!({"aliases": many(33, &|i| json!(format!("a{i}")))})),
            ),
            "aliases",
        ),
        (
            CREATE_NETWORK,
            json!({"name": "c6", "ipam": {"configs": [{"subnet": "10.0.0.0/7"}]}}),
            "subnet",
        ),
        (
            CREATE_NETWORK,
            json!({"name": "c7", "enableIpv6": true, "ipam": {"configs": [{"subnet": "fd00::/31"}]}}),
            "subnet",
        ),
        (
            CONNECT,
            json!({"sandbox": "by-client", "network": "atk-net", "settings": {"aliases": ["x\ny"]}}),
            "aliases",
        ),
        (
            CONNECT,
            json!({"sandbox": "by-client", "network": "atk-net", "settings": {"interfaceName": "e th"}}),
            "interface_name",
        ),
    ];
    for (method, body, field) in &hostile {
        let st = w.grpcurl_err(method, &body.to_string());
        assert_eq!(st["code"], 3, "{method} {body}: not INVALID_ARGUMENT: {st}");
        let fields = violated_fields(&st);
        assert!(
            fields.iter().any(|f| f.contains(field)),
            "{method} {body}: no BadRequest detail names {field}: {st}"
        );
    }
    // A multibyte container id is refused or taken, and panics nothing (it once took down
    // dns-svc's listeners for every sandbox): the bystanders' check below asks dns-svc.
    let body = sandbox("mb", json!({"containerId": "é".repeat(40)})).to_string();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &w.host.name])
        .arg(weft_testkit::grpcurl())
        .args(["-plaintext", "-d", &body, "127.0.0.1:7700", CREATE_SANDBOX])
        .output()
        .unwrap();
    let _ = out;
    let _ = w.grpcurl_err(
        "weft.gateway.v1.SandboxService/DeleteSandbox",
        r#"{"sandbox": "mb"}"#,
    );

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
