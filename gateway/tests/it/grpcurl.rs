//! The real grpcurl against the gateway: create, inspect, list with a filter, connect,
//! disconnect, delete, watch.

use weft_testkit::{Backend, run_grpcurl};

use crate::harness::Stack;

fn call(addr: &str, auth: &str, method: &str, body: &str) -> serde_json::Value {
    let (code, out, err) = run_grpcurl(&["-plaintext", "-H", auth, "-d", body, addr, method]);
    assert_eq!(code, 0, "{method} {body}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_creates_inspects_lists_watches_and_deletes() {
    let s = Stack::start(Backend::Sqlite).await;
    let addr = s.gateway.to_string();
    // Every call but `list` (reflection) presents the admin token.
    let auth = format!("authorization: Bearer {}", s.deps().admin_token);
    let (code, out, _) = run_grpcurl(&["-plaintext", &addr, "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("weft.gateway.v1.NetworkService")
            && out.contains("weft.gateway.v1.EventService")
            && out.contains("weft.gateway.v1.SandboxService")
            && out.contains("weft.gateway.v1.HostService"),
        "{out}"
    );

    let n = call(
        &addr,
        &auth,
        "weft.gateway.v1.NetworkService/CreateNetwork",
        r#"{"name":"my-net","labels":{"team":"a"},"ipam":{"configs":[{"subnet":"10.9.0.0/24","gateway":"10.9.0.254"}]}}"#,
    );
    assert_eq!(n["ipam"]["configs"][0]["gateway"], "10.9.0.254");
    let id = n["id"].as_str().unwrap().to_owned();
    let got = call(
        &addr,
        &auth,
        "weft.gateway.v1.NetworkService/GetNetwork",
        &format!(r#"{{"network":"{}"}}"#, &id[..12]),
    );
    assert_eq!(got["name"], "my-net");
    let l = call(
        &addr,
        &auth,
        "weft.gateway.v1.NetworkService/ListNetworks",
        r#"{"label":["team=a"]}"#,
    );
    assert_eq!(l["networks"].as_array().unwrap().len(), 1);
    let revision = l["revision"].as_str().unwrap().parse::<u64>().unwrap();

    // A sandbox on it, connected, disconnected and deleted.
    let sb = call(
        &addr,
        &auth,
        "weft.gateway.v1.SandboxService/CreateSandbox",
        r#"{"name":"web","hostname":"web-1","portMappings":[{"hostPort":8080,"containerPort":80}]}"#,
    );
    assert_eq!(sb["hostname"], "web-1");
    assert_eq!(sb["portMappings"][0]["protocol"], "PROTOCOL_TCP");
    let ep = call(
        &addr,
        &auth,
        "weft.gateway.v1.SandboxService/Connect",
        r#"{"sandbox":"web","network":"my-net","settings":{"aliases":["www"],"ipv4Address":"10.9.0.7"}}"#,
    );
    assert_eq!(ep["ipv4Address"], "10.9.0.7/24");
    assert_eq!(ep["defaultRouteV4"], true);
    assert_eq!(ep["interfaceName"], "eth0");
    let inspected = call(
        &addr,
        &auth,
        "weft.gateway.v1.NetworkService/GetNetwork",
        r#"{"network":"my-net"}"#,
    );
    assert!(inspected.to_string().contains("10.9.0.7/24"), "{inspected}");
    let listed = call(
        &addr,
        &auth,
        "weft.gateway.v1.SandboxService/ListSandboxes",
        r#"{"network":["my-net"]}"#,
    );
    assert_eq!(listed["sandboxes"][0]["name"], "web");
    let (code, out, err) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"network":"my-net"}"#,
        &addr,
        "weft.gateway.v1.NetworkService/DeleteNetwork",
    ]);
    assert_eq!(code, 64 + 9, "in use is FAILED_PRECONDITION: {out}{err}");
    assert!(err.contains("web"), "{err}");
    let d = call(
        &addr,
        &auth,
        "weft.gateway.v1.SandboxService/Disconnect",
        r#"{"sandbox":"web","network":"my-net"}"#,
    );
    assert_eq!(d["endpointId"], ep["id"]);
    call(
        &addr,
        &auth,
        "weft.gateway.v1.SandboxService/DeleteSandbox",
        r#"{"sandbox":"web"}"#,
    );
    call(
        &addr,
        &auth,
        "weft.gateway.v1.NetworkService/DeleteNetwork",
        r#"{"network":"my-net"}"#,
    );
    // Watch from the list's revision: the removal arrives (grpcurl stops after -max-time).
    let (_, out, err) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-max-time",
        "2",
        "-d",
        &format!(r#"{{"fromRevision":"{revision}"}}"#),
        &addr,
        "weft.gateway.v1.EventService/Watch",
    ]);
    for kind in [
        "EVENT_KIND_SANDBOX_CREATED",
        "EVENT_KIND_ENDPOINT_CONNECTED",
        "EVENT_KIND_ENDPOINT_DISCONNECTED",
        "EVENT_KIND_SANDBOX_REMOVED",
        "EVENT_KIND_NETWORK_REMOVED",
    ] {
        assert!(out.contains(kind), "{kind} missing: {out}{err}");
    }
    let order: Vec<usize> = ["SANDBOX_CREATED", "ENDPOINT_CONNECTED", "NETWORK_REMOVED"]
        .iter()
        .map(|k| out.find(k).unwrap())
        .collect();
    assert!(order.is_sorted(), "events out of order: {out}");

    let (code, out, err) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"name":"bad name"}"#,
        &addr,
        "weft.gateway.v1.NetworkService/CreateNetwork",
    ]);
    assert_eq!(code, 67, "{out}{err}");
    assert!(format!("{out}{err}").contains("bad name"));
}
