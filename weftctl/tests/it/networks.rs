//! `weftctl network …` against the real gateway.

use serde_json::Value;

use crate::harness::{Stack, json_lines};

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_ls_inspect_rm_round_trip() {
    let s = Stack::start().await;
    let out = s
        .ok(&[
            "network",
            "create",
            "front",
            "--subnet",
            "10.77.0.0/24",
            "--gateway",
            "10.77.0.254",
            "--ip-range",
            "10.77.0.128/25",
            "--aux-address",
            "router=10.77.0.5",
            "--label",
            "env=prod",
            "--label",
            "tier=web",
            "--internal",
            "--attachable",
            "-o",
            "com.docker.network.driver.mtu=1400",
        ])
        .await;
    let front_id = out.trim().to_owned();
    assert!(is_hex_id(&front_id, 64), "create prints the id: {out:?}");
    s.ok(&["network", "create", "back"]).await;

    // The table: Docker's header and one row per network with 12-character ids.
    let table = s.ok(&["network", "ls"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NETWORK ID")
            && lines[0].contains("NAME")
            && lines[0].contains("DRIVER")
            && lines[0].ends_with("SCOPE"),
        "{table}"
    );
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        names,
        ["back", "bridge", "front", "host", "none"],
        "{table}"
    );
    for l in &lines[1..] {
        assert!(is_hex_id(l.split_whitespace().next().unwrap(), 12), "{l}");
    }
    let name_col = lines[0].find("NAME").unwrap();
    assert!(
        lines[1..]
            .iter()
            .all(|l| l[name_col..].starts_with(|c: char| c.is_ascii_alphabetic())),
        "columns align:\n{table}"
    );
    let front_row = lines.iter().find(|l| l.contains("front")).unwrap();
    assert!(
        front_row.starts_with(&front_id[..12])
            && front_row.contains("bridge")
            && front_row.ends_with("local")
    );

    // -q, --no-trunc, filters.
    assert_eq!(s.ok(&["network", "ls", "-q"]).await.lines().count(), 5);
    let full = s
        .ok(&["network", "ls", "-q", "--no-trunc", "-f", "name=fro"])
        .await;
    assert_eq!(full.trim(), front_id);
    let labelled = s
        .ok(&["network", "ls", "-q", "--filter", "label=env=prod"])
        .await;
    assert_eq!(labelled.trim(), &front_id[..12]);
    assert_eq!(
        s.ok(&["network", "ls", "-q", "-f", "label=env=dev"]).await,
        ""
    );
    let host = s
        .ok(&["--format", "json", "network", "ls", "-f", "driver=host"])
        .await;
    let host = json_lines(&host);
    assert_eq!(host.len(), 1);
    assert_eq!(host[0]["name"], "host");
    let custom = json_lines(
        &s.ok(&["--format", "json", "network", "ls", "-f", "type=custom"])
            .await,
    );
    let custom: Vec<&str> = custom.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(custom, ["back", "front"]);
    let by_id = s
        .ok(&[
            "network",
            "ls",
            "-q",
            "-f",
            &format!("id={}", &front_id[..6]),
        ])
        .await;
    assert_eq!(by_id.trim(), &front_id[..12]);

    // inspect: a JSON array with every field, by name and by id prefix.
    let inspected: Value = serde_json::from_str(
        &s.ok(&["network", "inspect", "front", &front_id[..10]])
            .await,
    )
    .unwrap();
    let arr = inspected.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let n = &arr[0];
    assert_eq!(n, &arr[1]);
    assert_eq!(n["id"], front_id.as_str());
    assert_eq!(n["driver"], "bridge");
    assert_eq!(n["scope"], "local");
    assert_eq!(n["internal"], true);
    assert_eq!(n["attachable"], true);
    assert_eq!(n["enableIpv4"], true);
    assert_eq!(n["labels"]["env"], "prod");
    assert_eq!(n["labels"]["tier"], "web");
    assert_eq!(n["options"]["com.docker.network.driver.mtu"], "1400");
    let c = &n["ipam"]["configs"][0];
    assert_eq!(c["subnet"], "10.77.0.0/24");
    assert_eq!(c["gateway"], "10.77.0.254");
    assert_eq!(c["ipRange"], "10.77.0.128/25");
    assert_eq!(c["auxAddresses"]["router"], "10.77.0.5");
    assert!(n["createdAt"].as_str().unwrap().ends_with('Z'));

    // --dry-run: the network as it would be, nothing created.
    let would: Value = serde_json::from_str(
        &s.ok(&[
            "network",
            "create",
            "maybe",
            "--subnet",
            "0.0.0.0/24",
            "--dry-run",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(would["id"], "");
    assert_eq!(would["name"], "maybe");
    assert!(
        !would["ipam"]["configs"][0]["subnet"]
            .as_str()
            .unwrap()
            .starts_with("0.0.0.0"),
        "{would}"
    );
    let r = s.weftctl(&["network", "inspect", "maybe"]).await;
    r.fails(3);

    // rm several: each name printed.
    assert_eq!(
        s.ok(&["network", "rm", "front", "back"]).await,
        "front\nback\n"
    );
    assert_eq!(
        s.ok(&["network", "ls", "-q", "-f", "type=custom"]).await,
        ""
    );
}

/// Docker's macvlan command line: the parent and mode as options, the LAN's subnet and router;
/// a mode the driver does not have and a subnet another macvlan network on the same parent has
/// are refused (exit 1) naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macvlan_create_with_parent_and_mode_and_its_refusals() {
    let s = Stack::start().await;
    let id = s
        .ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            "parent=eth1",
            "-o",
            "macvlan_mode=bridge",
            "--subnet",
            "192.168.50.0/24",
            "--gateway",
            "192.168.50.1",
            "lan",
        ])
        .await;
    assert!(is_hex_id(id.trim(), 64), "{id:?}");
    let inspected: Value =
        serde_json::from_str(&s.ok(&["network", "inspect", "lan"]).await).unwrap();
    let n = &inspected[0];
    assert_eq!(n["driver"], "macvlan");
    assert_eq!(n["scope"], "local");
    assert_eq!(n["options"]["parent"], "eth1");
    assert_eq!(n["options"]["macvlan_mode"], "bridge");
    assert_eq!(n["ipam"]["configs"][0]["subnet"], "192.168.50.0/24");
    assert_eq!(n["ipam"]["configs"][0]["gateway"], "192.168.50.1");

    let r = s
        .weftctl(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            "macvlan_mode=l2",
            "odd",
        ])
        .await;
    let line = r.fails(1);
    assert!(
        line.contains("macvlan_mode") && line.contains("l2"),
        "{line}"
    );
    let r = s
        .weftctl(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            "parent=eth1",
            "--subnet",
            "192.168.50.128/25",
            "lan2",
        ])
        .await;
    let line = r.fails(1);
    assert!(line.contains("\"lan\"") && line.contains("eth1"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_disconnect_and_rm_of_a_network_in_use() {
    let s = Stack::start().await;
    s.ok(&["network", "create", "app", "--subnet", "10.78.0.0/24"])
        .await;
    s.ok(&["sandbox", "create", "web"]).await;
    s.ok(&["sandbox", "create", "worker"]).await;
    let out = s
        .ok(&[
            "network",
            "connect",
            "--ip",
            "10.78.0.9",
            "--alias",
            "db",
            "--alias",
            "pg",
            "--gw-priority",
            "-5",
            "app",
            "web",
        ])
        .await;
    assert_eq!(out, "", "connect prints nothing, as docker's");
    s.ok(&["network", "connect", "app", "worker"]).await;

    let net: Value = serde_json::from_str(&s.ok(&["network", "inspect", "app"]).await).unwrap();
    let eps = net[0]["endpoints"].as_array().unwrap();
    let web = eps
        .iter()
        .find(|e| e["sandboxName"] == "web")
        .expect("web is on app");
    assert_eq!(web["ipv4Address"], "10.78.0.9/24");
    let sb: Value = serde_json::from_str(&s.ok(&["sandbox", "inspect", "web"]).await).unwrap();
    let ep = &sb[0]["endpoints"][0];
    assert_eq!(ep["networkName"], "app");
    assert_eq!(ep["aliases"], serde_json::json!(["db", "pg"]));
    assert_eq!(ep["gwPriority"], "-5");
    assert_eq!(ep["gateway"], "10.78.0.1");

    // A network in use is refused: exit 1, one line naming the endpoints.
    let r = s.weftctl(&["network", "rm", "app"]).await;
    let line = r.fails(1);
    assert!(
        line.contains("app") && line.contains("web") && line.contains("worker"),
        "{line}"
    );

    s.ok(&["network", "disconnect", "app", "web"]).await;
    let r = s.weftctl(&["network", "disconnect", "app", "web"]).await;
    assert!(r.fails(3).contains("not connected"), "{r:?}");
    s.ok(&["network", "disconnect", "-f", "app", "worker"])
        .await;
    assert_eq!(s.ok(&["network", "rm", "app"]).await, "app\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_unused_networks_and_wants_force_without_a_terminal() {
    let s = Stack::start().await;
    for args in [
        &["network", "create", "p1", "--label", "tmp"][..],
        &["network", "create", "p2", "--label", "tmp=yes"],
        &["network", "create", "keep"],
        &["network", "create", "used", "--label", "tmp"],
    ] {
        s.ok(args).await;
    }
    s.ok(&["sandbox", "create", "sb", "--network", "used"])
        .await;

    let r = s.weftctl(&["network", "prune"]).await;
    assert!(r.fails(2).contains("-f/--force"), "{r:?}");
    assert_eq!(
        s.ok(&["network", "ls", "-q", "-f", "type=custom"])
            .await
            .lines()
            .count(),
        4,
        "nothing pruned"
    );

    let out = s
        .ok(&["network", "prune", "-f", "--filter", "label=tmp"])
        .await;
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.remove(0), "Deleted Networks:");
    lines.sort_unstable();
    assert_eq!(lines, ["p1", "p2"]);
    let left = json_lines(
        &s.ok(&["--format", "json", "network", "ls", "-f", "type=custom"])
            .await,
    );
    let left: Vec<&str> = left.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(left, ["keep", "used"]);

    let out = s
        .ok(&["--format", "json", "network", "prune", "--force"])
        .await;
    assert_eq!(
        json_lines(&out)[0]["networksDeleted"],
        serde_json::json!(["keep"])
    );
}

/// Runs `weftctl ARGS` on a terminal (util-linux `script` gives it a pty) and types `answer`.
async fn on_a_terminal(s: &Stack, args: &str, answer: &str) -> (i32, String) {
    use tokio::io::AsyncWriteExt;

    let cmd = format!(
        "{} --gateway http://{} {args}",
        env!("CARGO_BIN_EXE_weftctl"),
        s.gateway
    );
    let mut child = tokio::process::Command::new("script")
        .env("WEFT_TOKEN", &s.deps().admin_token)
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("util-linux script runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace('\r', ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_on_a_terminal_asks_first() {
    let s = Stack::start().await;
    s.ok(&["network", "create", "spare"]).await;

    let (code, out) = on_a_terminal(&s, "network prune", "n\n").await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Are you sure you want to continue? [y/N]"),
        "{out}"
    );
    assert!(!out.contains("Deleted Networks:"), "{out}");
    assert_eq!(
        s.ok(&["network", "ls", "-q", "-f", "name=spare"])
            .await
            .lines()
            .count(),
        1
    );

    let (code, out) = on_a_terminal(&s, "network prune", "y\n").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Deleted Networks:\nspare\n"), "{out}");
    assert_eq!(s.ok(&["network", "ls", "-q", "-f", "name=spare"]).await, "");
}
