//! The real grpcurl against the gateway: create, inspect, list with a filter, watch, delete.

use weft_testkit::{Backend, run_grpcurl};

use crate::harness::Stack;

fn call(addr: &str, method: &str, body: &str) -> serde_json::Value {
    let (code, out, err) = run_grpcurl(&["-plaintext", "-d", body, addr, method]);
    assert_eq!(code, 0, "{method} {body}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_creates_inspects_lists_watches_and_deletes() {
    let s = Stack::start(Backend::Sqlite).await;
    let addr = s.gateway.to_string();
    let (code, out, _) = run_grpcurl(&["-plaintext", &addr, "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("weft.gateway.v1.NetworkService")
            && out.contains("weft.gateway.v1.EventService"),
        "{out}"
    );

    let n = call(
        &addr,
        "weft.gateway.v1.NetworkService/CreateNetwork",
        r#"{"name":"my-net","labels":{"team":"a"},"ipam":{"configs":[{"subnet":"10.9.0.0/24","gateway":"10.9.0.254"}]}}"#,
    );
    assert_eq!(n["ipam"]["configs"][0]["gateway"], "10.9.0.254");
    let id = n["id"].as_str().unwrap().to_owned();
    let got = call(
        &addr,
        "weft.gateway.v1.NetworkService/GetNetwork",
        &format!(r#"{{"network":"{}"}}"#, &id[..12]),
    );
    assert_eq!(got["name"], "my-net");
    let l = call(
        &addr,
        "weft.gateway.v1.NetworkService/ListNetworks",
        r#"{"label":["team=a"]}"#,
    );
    assert_eq!(l["networks"].as_array().unwrap().len(), 1);
    let revision = l["revision"].as_str().unwrap().parse::<u64>().unwrap();

    call(
        &addr,
        "weft.gateway.v1.NetworkService/DeleteNetwork",
        r#"{"network":"my-net"}"#,
    );
    // Watch from the list's revision: the removal arrives (grpcurl stops after -max-time).
    let (_, out, err) = run_grpcurl(&[
        "-plaintext",
        "-max-time",
        "2",
        "-d",
        &format!(r#"{{"fromRevision":"{revision}"}}"#),
        &addr,
        "weft.gateway.v1.EventService/Watch",
    ]);
    assert!(
        out.contains("EVENT_KIND_NETWORK_REMOVED") && out.contains("my-net"),
        "{out}{err}"
    );

    let (code, out, err) = run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name":"bad name"}"#,
        &addr,
        "weft.gateway.v1.NetworkService/CreateNetwork",
    ]);
    assert_eq!(code, 67, "{out}{err}");
    assert!(format!("{out}{err}").contains("bad name"));
}
