//! The shipped systemd unit (`scripts/systemd/weft.service`): `systemd-analyze verify` accepts
//! it (with its ExecStart pointed at the weft under test: verify wants the binary there), and
//! the capabilities it leaves `weft up` are enough to run the whole stack, serve a sandbox's
//! names and carry its traffic.

use std::{path::PathBuf, process::Command};

use crate::{
    TestNs, WEFT,
    heal::Echo,
    join::{Sandboxes, dig_from, sandbox, table_of, weftctl},
    up::{Weft, children_of},
};

/// Where the shipped unit is.
fn unit() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/systemd/weft.service")
}

/// The value of the unit's `key=` line.
fn setting(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_owned()
}

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(analyze) = found else {
        let required = std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var("WEFT_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "systemd-analyze is missing: scripts/setup.sh installs it (apt-get install systemd)"
        );
        eprintln!("SKIPPED: systemd-analyze is missing (scripts/setup.sh installs it)");
        return;
    };
    let shipped = std::fs::read_to_string(unit()).unwrap();
    // Installable as the README says: weft and the services in /usr/local/bin, data in
    // /var/lib/weft, started again when weft up gives up.
    assert_eq!(
        setting(&shipped, "ExecStart"),
        "/usr/local/bin/weft up --data-dir /var/lib/weft"
    );
    for (key, want) in [
        ("Restart", "on-failure"),
        ("StateDirectory", "weft"),
        ("KillMode", "mixed"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(setting(&shipped, key), want, "{key}");
    }
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("weft.service");
    std::fs::write(&here, shipped.replace("/usr/local/bin/weft", WEFT)).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&here)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("weft.service"),
        "systemd-analyze verify has something to say about the unit: {said}"
    );
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn the_units_capabilities_are_enough_to_run_the_stack_and_a_sandbox() {
    let shipped = std::fs::read_to_string(unit()).unwrap();
    let caps: Vec<String> = setting(&shipped, "CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| {
            let name = c.strip_prefix("CAP_").unwrap_or(c).to_lowercase();
            format!("+{name}")
        })
        .collect();
    assert_eq!(setting(&shipped, "NoNewPrivileges"), "yes");
    // What systemd does to the unit's process: that bounding set, and no new privileges.
    let bounding = format!("--bounding-set=-all,{}", caps.join(","));
    let wrapper = ["setpriv", &bounding, "--inh-caps=-all", "--no-new-privs"];
    let ns = TestNs::named("unit");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut weft = Weft::start_under(&wrapper, &ns, &data, &["--host-name", "local"], &[]);
    table_of(&mut weft, "Talk to it:");
    // Every process of the stack holds no more than that set.
    let allowed: u64 = caps
        .iter()
        .map(|c| 1u64 << cap_bit(&c[1..]))
        .fold(0, |a, b| a | b);
    for pid in std::iter::once(weft.pid()).chain(children_of(weft.pid()).into_keys()) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let bnd = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(bnd & !allowed, 0, "{pid} has more than the unit allows");
    }
    weftctl(
        &ns,
        &data,
        &["network", "create", "--subnet", "10.242.0.0/24", "un"],
    )
    .unwrap();
    let mut made = Sandboxes::new(&ns, &data);
    made.create("a", &["--network", "un"]);
    made.create("b", &["--network", "un"]);
    let (path_a, _) = sandbox(&ns, &data, "a");
    let (path_b, ip_b) = sandbox(&ns, &data, "b");
    assert_eq!(dig_from(&path_a, "b"), ip_b);
    Echo::open(&path_a, &path_b, &ip_b).round_trip("under the unit's capabilities");
    weft.assert_running();
    drop(made);
}

/// A capability's bit (linux/capability.h), for the names the unit uses.
fn cap_bit(name: &str) -> u32 {
    match name {
        "chown" => 0,
        "dac_override" => 1,
        "fowner" => 3,
        "kill" => 5,
        "setgid" => 6,
        "setuid" => 7,
        "net_bind_service" => 10,
        "net_admin" => 12,
        "net_raw" => 13,
        "sys_admin" => 21,
        other => panic!("capability {other}: add its bit here"),
    }
}
