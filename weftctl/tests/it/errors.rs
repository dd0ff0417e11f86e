//! Bad input, API refusals and an unreachable gateway: one `weftctl: …` line on stderr and the
//! documented exit code. Also the small commands (hosts, ipam check, completion).

use crate::harness::{Stack, weftctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_one_line_and_the_right_exit_code() {
    let s = Stack::start().await;
    // Usage errors found by the parser: exit 2.
    let r = s.weftctl(&["network", "create"]).await;
    assert!(r.fails(2).contains("<NAME>"), "{r:?}");
    let r = s
        .weftctl(&["sandbox", "create", "x", "-p", "70000:80"])
        .await;
    assert!(r.fails(2).contains("invalid host port \"70000\""), "{r:?}");
    let r = s
        .weftctl(&["sandbox", "create", "x", "-p", "8000-8010:80"])
        .await;
    assert!(r.fails(2).contains("same length"), "{r:?}");
    let r = s
        .weftctl(&["network", "create", "x", "--aux-address", "10.0.0.5"])
        .await;
    assert!(r.fails(2).contains("NAME=IP"), "{r:?}");
    let r = s.weftctl(&["network", "frobnicate"]).await;
    assert!(r.fails(2).contains("frobnicate"), "{r:?}");
    // Usage errors found after parsing: exit 2 as well.
    let r = s.weftctl(&["network", "ls", "-f", "colour=red"]).await;
    assert!(r.fails(2).contains("unknown filter \"colour\""), "{r:?}");
    let r = s
        .weftctl(&[
            "network",
            "create",
            "x",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.9.9.1",
        ])
        .await;
    assert!(r.fails(2).contains("not inside any --subnet"), "{r:?}");

    // Refusals of the API: exit 1, the server's message naming the field and value.
    let r = s.weftctl(&["network", "create", "bad name!"]).await;
    let line = r.fails(1);
    assert!(
        line.contains("name") && line.contains("bad name!"),
        "{line}"
    );
    let r = s
        .weftctl(&["network", "create", "x", "-o", "colour=red"])
        .await;
    assert!(r.fails(1).contains("colour"), "{r:?}");
    s.ok(&["network", "create", "dup"]).await;
    let r = s.weftctl(&["network", "create", "dup"]).await;
    assert!(r.fails(1).contains("already taken"), "{r:?}");
    let r = s.weftctl(&["network", "rm", "bridge"]).await;
    assert!(r.fails(1).contains("predefined"), "{r:?}");

    // Not found: exit 3; inspect still prints the (empty) array.
    let r = s.weftctl(&["network", "inspect", "nosuch"]).await;
    assert!(r.fails(3).contains("nosuch"), "{r:?}");
    assert_eq!(r.stdout.trim(), "[]");
    let r = s.weftctl(&["network", "connect", "nosuch", "nobody"]).await;
    r.fails(3);

    // rm of several goes on after a failure and reports each failure on its own line.
    s.ok(&["network", "create", "gone"]).await;
    let r = s.weftctl(&["network", "rm", "ghost", "gone"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "gone\n");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_says_so_and_how_to_fix_it() {
    let port = weft_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let r = weftctl(&[
        "--gateway".into(),
        url.clone(),
        "network".into(),
        "ls".into(),
    ])
    .await;
    let line = r.fails(4);
    assert!(
        line.contains(&format!("cannot reach the gateway at {url}")),
        "{line}"
    );
    assert!(line.contains("is `weft up` running?"), "{line}");

    // The address also comes from WEFT_GATEWAY, and a bare HOST:PORT is accepted.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(["sandbox", "ls"])
        .env("WEFT_GATEWAY", format!("127.0.0.1:{port}"))
        .output()
        .await
        .unwrap();
    weft_testkit::logs::keep_stderr("weftctl", &out);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&url));

    let r = weftctl(&["ipam".into(), "check".into(), "--ipam".into(), url.clone()]).await;
    assert!(
        r.fails(4)
            .contains(&format!("cannot reach ipam-svc at {url}")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_ipam_check_and_completion() {
    let s = Stack::start().await;
    let hosts = s.ok(&["hosts"]).await;
    assert!(hosts.starts_with("NAME"), "{hosts}");
    assert!(
        hosts.lines().nth(1).is_some_and(|l| l.starts_with("local")),
        "{hosts}"
    );

    s.ok(&["network", "create", "chk", "--subnet", "10.82.0.0/24"])
        .await;
    s.ok(&["sandbox", "create", "c1", "--network", "chk"]).await;
    let ipam = format!("http://{}", s.ipam);
    let out = s.ok(&["ipam", "check", "--ipam", &ipam]).await;
    assert!(out.contains("problems: 0"), "{out}");
    let pools: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("pools checked: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(pools >= 1, "{out}");
    let json = s
        .ok(&["--format", "json", "ipam", "check", "--ipam", &ipam])
        .await;
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["problemsCount"], "0");

    for shell in ["bash", "zsh", "fish"] {
        let script = s.ok(&["completion", shell]).await;
        assert!(
            script.contains("weftctl") && script.contains("network"),
            "{shell}"
        );
    }
    let r = s.weftctl(&["completion", "tcsh"]).await;
    r.fails(2);

    let help = s.ok(&["--help"]).await;
    assert!(
        help.contains("Exit codes:") && help.contains("4  unavailable"),
        "{help}"
    );
}
