//! `weft up` refuses to start what could not work, before starting anything.

use std::process::Command;

use crate::{WEFT, bin_dir};

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: setpriv to another user")]
fn without_root_weft_up_says_so_in_one_line_and_exits_1_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            WEFT,
            "up",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--bin-dir")
        .arg(bin_dir())
        .output()
        .expect("setpriv (util-linux) runs");
    weft_testkit::logs::keep_output("weft-up", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("weft up: "), "{stderr}");
    assert!(lines[0].contains("root"), "{stderr}");
    assert!(lines[0].contains("`sudo weft up`"), "{stderr}");
    assert!(lines[0].contains("setcap"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!data.exists(), "nothing may be created before the check");
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn a_missing_namespace_is_named_with_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(WEFT)
        .args(["up", "--netns", "wft-up-not-there-7c1f"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    weft_testkit::logs::keep_output("weft-up", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("/run/netns/wft-up-not-there-7c1f"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ip netns add wft-up-not-there-7c1f"),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn missing_service_binaries_are_named_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(WEFT)
        .args(["up", "--bin-dir"])
        .arg(dir.path())
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    weft_testkit::logs::keep_output("weft-up", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "ipam-svc not found at {}",
            dir.path().join("ipam-svc").display()
        )),
        "{stderr}"
    );
    assert!(!data.exists());
}

#[test]
fn weft_version_prints_the_version() {
    let out = Command::new(WEFT).arg("version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("weft {}\n", env!("CARGO_PKG_VERSION"))
    );
}
