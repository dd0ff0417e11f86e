//! The binary starts, serves health and reflection, logs JSON when asked, and stops cleanly on
//! SIGTERM. It manages a namespace this test makes (and deletes, also on failure), never the
//! machine's own, and keeps its files in a temporary directory.

use std::process::Command;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("wft-l-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn args(ns: &Netns, dir: &tempfile::TempDir) -> Vec<String> {
    vec![
        "--insecure-plaintext".into(),
        "--netns".into(),
        format!("/run/netns/{}", ns.0),
        "--data-dir".into(),
        dir.path().display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn serves_health_and_reflection_and_stops_on_sigterm() {
    let (ns, dir) = (Netns::new("a"), tempfile::tempdir().unwrap());
    weft_testkit::assert_service_lifecycle(env!("CARGO_BIN_EXE_driver-agent"), &args(&ns, &dir))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn logs_json_when_asked() {
    let (ns, dir) = (Netns::new("j"), tempfile::tempdir().unwrap());
    weft_testkit::assert_logs_json(env!("CARGO_BIN_EXE_driver-agent"), &args(&ns, &dir)).await;
}
