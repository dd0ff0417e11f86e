//! `weftctl sandbox exec` enters the sandbox's namespace: checked with a namespace this test
//! creates (`ip netns add`) and adopts as the sandbox's (`--netns`).

use weft_testkit::netns::TestNs;

use crate::harness::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates a network namespace")]
async fn exec_runs_the_command_in_the_sandbox_namespace_with_its_exit_code() {
    let s = Stack::start().await;
    let ns = TestNs::named("cli");
    s.ok(&["sandbox", "create", "box", "--netns", &ns.path_str()])
        .await;
    let inspected: serde_json::Value =
        serde_json::from_str(&s.ok(&["sandbox", "inspect", "box"]).await).unwrap();
    assert_eq!(inspected[0]["netnsPath"], ns.path_str().as_str());

    // Inside: only the namespace's own loopback (the machine's namespace has more).
    let out = s
        .ok(&["sandbox", "exec", "box", "--", "ip", "-j", "link"])
        .await;
    let links: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lo"], "{out}");
    // What the test put in the namespace is what exec sees.
    ns.ip(&["link", "add", "wfttest0", "type", "bridge"]);
    let out = s
        .ok(&["sandbox", "exec", "box", "--", "ip", "-j", "link"])
        .await;
    assert!(out.contains("\"wfttest0\""), "{out}");

    // The command's exit code is weftctl's; a missing command is 127 with one line.
    let r = s
        .weftctl(&["sandbox", "exec", "box", "--", "sh", "-c", "exit 7"])
        .await;
    assert_eq!(r.code, 7, "{r:?}");
    let r = s
        .weftctl(&["sandbox", "exec", "box", "--", "/nonexistent/cmd"])
        .await;
    assert!(r.fails(127).contains("/nonexistent/cmd"), "{r:?}");
    let r = s.weftctl(&["sandbox", "exec", "ghost", "--", "true"]).await;
    r.fails(3);
    s.ok(&["sandbox", "rm", "box"]).await;
    assert!(ns.path.exists(), "an adopted namespace is not deleted");
}
