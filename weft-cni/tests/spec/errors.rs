//! Refusals before any gateway is involved, and an unreachable gateway: the spec's error
//! object with the spec's code on stdout, a non-zero exit, never a panic.

use serde_json::json;

use crate::{Run, plugin_in};

const ADD: [(&str, &str); 5] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_NETNS", "/run/netns/none-such-cni-test"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/usr/lib/cni"),
];

fn with(
    env: &[(&'static str, &'static str)],
    k: &'static str,
    v: &'static str,
) -> Vec<(&'static str, &'static str)> {
    let mut e: Vec<_> = env.iter().copied().filter(|(key, _)| *key != k).collect();
    e.push((k, v));
    e
}

fn run(env: &[(&str, &str)], stdin: &str) -> Run {
    plugin_in(None, env, stdin)
}

/// Nothing listens on port 1 of the loopback.
const DEAD_GATEWAY: &str = "127.0.0.1:1";

#[test]
fn version_answers_with_placeholders_in_the_environment() {
    let r = run(
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_CONTAINERID", ""),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
        ],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    let out = r.success();
    assert_eq!(out["cniVersion"], "1.0.0");
    assert_eq!(out["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
}

/// The environment, stdin, the expected code and a word the message must contain.
type Case = (Vec<(&'static str, &'static str)>, String, u64, &'static str);

#[test]
fn refusals_carry_the_spec_codes_and_name_what_is_wrong() {
    let conf =
        json!({"cniVersion": "1.0.0", "name": "n", "type": "weft-cni", "network": "n"}).to_string();
    let cases: Vec<Case> = vec![
        (ADD.to_vec(), json!({"cniVersion": "0.3.1", "network": "n"}).to_string(), 1, "0.3.1"),
        (with(&ADD, "CNI_COMMAND", "ATTACH"), conf.clone(), 4, "CNI_COMMAND"),
        (ADD.iter().copied().filter(|(k, _)| *k != "CNI_IFNAME").collect(), conf.clone(), 4, "CNI_IFNAME"),
        (with(&ADD, "CNI_IFNAME", "much-too-long-ifname"), conf.clone(), 4, "CNI_IFNAME"),
        (with(&ADD, "CNI_CONTAINERID", "../etc"), conf.clone(), 4, "CNI_CONTAINERID"),
        (with(&ADD, "CNI_NETNS", "netns"), conf.clone(), 4, "CNI_NETNS"),
        (ADD.to_vec(), "{not json".to_owned(), 6, "not JSON"),
        (ADD.to_vec(), json!({"cniVersion": "1.0.0"}).to_string(), 7, "network"),
        (ADD.to_vec(), json!({"cniVersion": "1.0.0", "network": "n", "gateway": "nowhere"}).to_string(), 7, "gateway"),
        (ADD.to_vec(), json!({"cniVersion": "1.0.0", "network": "n", "runtimeConfig": {"ips": ["10.0.0.300"]}}).to_string(), 7, "ips"),
        (ADD.to_vec(), json!({"cniVersion": "1.0.0", "network": "n", "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]}}).to_string(), 2, "sctp"),
    ];
    for (env, stdin, code, names) in cases {
        let r = run(&env, &stdin);
        assert_eq!(r.code(), code, "{env:?} {stdin}: {}", r.out);
        assert!(r.msg().contains(names), "{env:?} {stdin}: {}", r.out);
    }
    // The error object speaks the config's version.
    let r = run(
        &with(&ADD, "CNI_IFNAME", "-x"),
        &json!({"cniVersion": "0.4.0", "network": "n"}).to_string(),
    );
    assert_eq!(r.out["cniVersion"], "0.4.0");
    // A config too large to be one is refused before it is parsed.
    let huge = format!(
        "{{\"cniVersion\":\"1.0.0\",\"pad\":\"{}\"}}",
        "x".repeat(5 << 20)
    );
    assert_eq!(run(&ADD, &huge).code(), 6);
}

#[test]
fn an_unreachable_gateway_is_try_again_later_and_status_50() {
    let conf = json!({"cniVersion": "1.1.0", "network": "n", "gateway": DEAD_GATEWAY});
    let del = run(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ],
        &conf.to_string(),
    );
    assert_eq!(del.code(), 11, "{}", del.out);
    assert!(del.msg().contains(DEAD_GATEWAY), "{}", del.out);
    let status = run(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")],
        &conf.to_string(),
    );
    assert_eq!(status.code(), 50, "{}", status.out);
    // A token file that cannot be read is an I/O error naming it.
    let mut conf = conf;
    conf["tokenFile"] = json!("/nonexistent/weft.token");
    let status = run(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")],
        &conf.to_string(),
    );
    assert_eq!(status.code(), 5, "{}", status.out);
    assert!(
        status.msg().contains("/nonexistent/weft.token"),
        "{}",
        status.out
    );
}
