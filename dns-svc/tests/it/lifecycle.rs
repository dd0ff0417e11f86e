//! The binary starts, serves health and reflection (plus its own API), and stops cleanly.

use std::time::Duration;

use nix::sys::signal::Signal;
use weft_testkit::{ServiceProcess, run_grpcurl};

/// Flags that keep the binary off the fixed default ports and away from the machine's
/// resolv.conf (the upstream is never contacted: no sandbox ever asks).
fn args(extra: &[&str]) -> Vec<String> {
    [
        "--insecure-plaintext",
        "--operator-listen",
        "127.0.0.1:0",
        "--host",
        "lifecycle-test",
        "--upstream",
        "127.0.0.1:9",
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_reflection_and_its_api_and_stops_on_sigterm() {
    let mut svc = ServiceProcess::start(env!("CARGO_BIN_EXE_dns-svc"), &args(&[])).await;
    let (code, out, err) = run_grpcurl(&["-plaintext", &svc.addr.to_string(), "list"]);
    assert_eq!(code, 0, "grpcurl list: {err}");
    for s in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "weft.dns.v1.DnsService",
    ] {
        assert!(out.lines().any(|l| l == s), "{s} missing from:\n{out}");
    }
    svc.signal(Signal::SIGTERM);
    let status = svc.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exited with {status}:\n{}",
        svc.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_json_when_asked() {
    weft_testkit::assert_logs_json(env!("CARGO_BIN_EXE_dns-svc"), &args(&[])).await;
}

#[test]
fn an_upstream_pointing_at_itself_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dns-svc"))
        .args([
            "--insecure-plaintext",
            "--host",
            "h",
            "--upstream",
            "127.0.0.1:5353",
        ])
        .output()
        .unwrap();
    weft_testkit::logs::keep_output("dns-svc", &out);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dns-svc itself"));
}
