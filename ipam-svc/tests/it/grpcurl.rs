//! The real grpcurl against a running ipam-svc: reflection, health, and a pool used end to end.

use weft_testkit::{TestDb, run_grpcurl};

use crate::harness::process;

fn call(addr: &str, method: &str, body: &str) -> serde_json::Value {
    let (code, out, err) = run_grpcurl(&["-plaintext", "-d", body, addr, method]);
    assert_eq!(code, 0, "{method} {body}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_services_and_drives_a_pool() {
    let db = TestDb::sqlite();
    let svc = process(&db.url, &[]).await;
    let addr = svc.addr.to_string();

    let (code, out, err) = run_grpcurl(&["-plaintext", &addr, "list"]);
    assert_eq!(code, 0, "{err}");
    for s in [
        "weft.ipam.v1.IpamService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(out.lines().any(|l| l == s), "{s} missing from:\n{out}");
    }
    let (code, out, _) =
        run_grpcurl(&["-plaintext", &addr, "describe", "weft.ipam.v1.IpamService"]);
    assert_eq!(code, 0);
    assert!(out.contains("rpc RequestAddress"), "{out}");

    let h = call(
        &addr,
        "grpc.health.v1.Health/Check",
        r#"{"service":"weft.ipam.v1.IpamService"}"#,
    );
    assert_eq!(h["status"], "SERVING");

    let p = call(
        &addr,
        "weft.ipam.v1.IpamService/RequestPool",
        r#"{"poolId":"demo","subnet":"10.5.0.0/24"}"#,
    );
    assert_eq!(p["subnet"], "10.5.0.0/24");
    assert_eq!(p["gateway"], "10.5.0.1");
    assert_eq!(p["usage"]["size"], "253");

    let a = call(
        &addr,
        "weft.ipam.v1.IpamService/RequestAddress",
        r#"{"poolId":"demo","owner":"ep1"}"#,
    );
    assert_eq!(a["address"], "10.5.0.2");
    assert_eq!(a["cidr"], "10.5.0.2/24");
    let b = call(
        &addr,
        "weft.ipam.v1.IpamService/RequestAddress",
        r#"{"poolId":"demo","owner":"ep2","address":"10.5.0.50"}"#,
    );
    assert_eq!(b["address"], "10.5.0.50");

    let r = call(
        &addr,
        "weft.ipam.v1.IpamService/ReleaseAddress",
        r#"{"poolId":"demo","owner":"ep1"}"#,
    );
    assert_eq!(r["released"][0]["address"], "10.5.0.2");
    let r = call(
        &addr,
        "weft.ipam.v1.IpamService/ReleaseAddress",
        r#"{"poolId":"demo","address":"10.5.0.50"}"#,
    );
    assert_eq!(r["released"][0]["owner"], "ep2");

    let l = call(
        &addr,
        "weft.ipam.v1.IpamService/ListAllocations",
        r#"{"poolId":"demo"}"#,
    );
    assert!(l.get("allocations").is_none(), "{l}");
    let c = call(&addr, "weft.ipam.v1.IpamService/Check", "{}");
    assert!(c.get("problemsCount").is_none(), "{c}");

    // Bad input: INVALID_ARGUMENT (grpcurl exits 64 + 3) with the BadRequest details decoded.
    let (code, out, err) = run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"subnet":"10.0.0.0/33"}"#,
        &addr,
        "weft.ipam.v1.IpamService/RequestPool",
    ]);
    assert_eq!(code, 67, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("InvalidArgument") && text.contains("10.0.0.0/33"),
        "{text}"
    );
    assert!(
        text.contains("google.rpc.BadRequest") && text.contains("fieldViolations"),
        "{text}"
    );
}
