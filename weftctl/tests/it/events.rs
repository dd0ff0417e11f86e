//! `weftctl events` follows the Watch stream.

use std::{process::Stdio, time::Duration};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::Stack;

/// Runs `weftctl events ARGS` and collects its lines until `done` says enough (or 30 s pass,
/// which fails the test), then kills it.
async fn follow(s: &Stack, args: &[&str], mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .env("WEFT_TOKEN", &s.deps().admin_token)
        .arg("--gateway")
        .arg(format!("http://{}", s.gateway))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let read = async {
        while let Some(l) = out.next_line().await.unwrap() {
            lines.push(l);
            if done(&lines) {
                return true;
            }
        }
        false
    };
    let finished = tokio::time::timeout(Duration::from_secs(30), read).await;
    child.kill().await.unwrap();
    assert!(
        matches!(finished, Ok(true)),
        "events ended or stalled before the expected lines: {lines:#?}"
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_since_zero_shows_the_creations_then_live_ones() {
    let s = Stack::start().await;
    s.ok(&["network", "create", "ev1", "--subnet", "10.81.0.0/24"])
        .await;
    s.ok(&["sandbox", "create", "evsb", "--network", "ev1"])
        .await;

    // From 0: a snapshot of the objects as they are, then its end.
    let lines = follow(&s, &["events", "--since", "0"], |l| {
        l.iter().any(|x| x.contains("snapshot end"))
    })
    .await;
    let has = |lines: &[String], what: &str, name: &str| {
        lines.iter().any(|l| l.contains(what) && l.contains(name))
    };
    assert!(has(&lines, "network created", "name=ev1"), "{lines:#?}");
    assert!(has(&lines, "network created", "name=bridge"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" rev=") || l.starts_with("rev=")),
        "{lines:#?}"
    );

    // From revision 1: the log itself, every creation in order.
    let lines = follow(&s, &["events", "--since", "1"], |l| {
        l.iter().any(|x| x.contains("endpoint connected"))
    })
    .await;
    let at = |what: &str, name: &str| {
        lines
            .iter()
            .position(|l| l.contains(what) && l.contains(name))
            .unwrap_or_else(|| panic!("no {what} {name}: {lines:#?}"))
    };
    let (net, sb, ep) = (
        at("network created", "name=ev1"),
        at("sandbox created", "name=evsb"),
        at("endpoint connected", "sandbox=evsb"),
    );
    assert!(net < sb && sb < ep, "{lines:#?}");
    assert!(
        has(&lines, "endpoint connected", "network=ev1"),
        "{lines:#?}"
    );

    // JSON, filtered to network events; then a live creation shows up.
    let gw = s.gateway;
    let token = s.deps().admin_token.clone();
    let creator = tokio::spawn(async move {
        // Created once the follower is (very likely) watching; the follower waits for it
        // either way because `--since 0` replays it.
        crate::harness::weftctl_as(
            &[
                "--gateway".into(),
                format!("http://{gw}"),
                "network".into(),
                "create".into(),
                "live1".into(),
            ],
            Some(&token),
        )
        .await
    });
    let lines = follow(
        &s,
        &[
            "--format",
            "json",
            "events",
            "--since",
            "0",
            "-f",
            "type=network",
        ],
        |l| l.iter().any(|x| x.contains("\"live1\"")),
    )
    .await;
    assert_eq!(creator.await.unwrap().code, 0);
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "EVENT_KIND_NETWORK_CREATED" && e["network"]["name"] == "ev1")
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "EVENT_KIND_NETWORK_CREATED" && e["network"]["name"] == "live1")
    );
    assert!(
        events
            .iter()
            .all(|e| e["kind"] != "EVENT_KIND_SANDBOX_CREATED"),
        "type=network filters sandboxes out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_since_show_only_new_events() {
    let s = Stack::start().await;
    s.ok(&["network", "create", "old"]).await;
    let gw = s.gateway;
    let token = s.deps().admin_token.clone();
    let lines = follow(&s, &["events"], |l| {
        if l.len() == 1 {
            // Watching now (the first line is the snapshot end): make something happen.
            let token = token.clone();
            tokio::spawn(async move {
                crate::harness::weftctl_as(
                    &[
                        "--gateway".into(),
                        format!("http://{gw}"),
                        "network".into(),
                        "create".into(),
                        "new".into(),
                    ],
                    Some(&token),
                )
                .await
            });
        }
        l.iter().any(|x| x.contains("name=new"))
    })
    .await;
    assert!(lines[0].contains("snapshot end"), "{lines:#?}");
    assert!(!lines.iter().any(|x| x.contains("name=old")), "{lines:#?}");
}

/// A plain test with its own runtime for the servers: shutting that runtime down drops every
/// task and connection of the gateway at once, as the death of a gateway process would.
#[test]
fn events_end_with_one_line_when_the_gateway_dies() {
    use std::io::{BufRead as _, Read as _};

    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s = servers.block_on(Stack::start());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .env("WEFT_TOKEN", &s.deps().admin_token)
        .arg("--gateway")
        .arg(format!("http://{}", s.gateway))
        .arg("events")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("snapshot end"), "{first}");

    servers.shutdown_background();
    drop(s);
    // It tries to resume a few times, then gives up with exit code 4 and one line.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weftctl events still running a minute after the gateway died");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("weftctl: lost the event stream of the gateway at http://")
            && err.contains("is `weft up` running?"),
        "{err}"
    );
}
