//! Attacks through Weft's DNS and on its privileges (security issue 11, classes 5 and 6),
//! against `weft up` in a namespace playing the host: a sandbox's own DNS servers are asked
//! from the sandbox's namespace, so naming the host's loopback reaches nothing; UDP answers
//! are capped at 1232 bytes; only the driver-agent runs as root; the data directory is private.
//! [`Bystanders::check`] shows that nothing that was there is lost.

use std::{
    net::SocketAddr,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use serde_json::Value;

use crate::{
    intact::Bystanders,
    world::{UPSTREAM_ANSWER, Weft, World, dig, fake_upstream, who_is_server},
};

/// dns-svc's operator DNS listener on the host's loopback (every network's names, internal
/// ones too).
const OPERATOR_DNS: &str = "127.0.0.1:5353";
/// A DNS server of the test's own on the host's loopback (UDP), and a TCP server next to it.
const HOST_LOOPBACK_DNS: &str = "127.0.0.1:15300";
const HOST_LOOPBACK_TCP: &str = "127.0.0.1:15301";
/// A DNS server in "the internet", which sandboxes reach through the host (masquerade).
const REACHABLE_DNS: &str = "192.0.2.254:5300";
/// A DNS server in "the internet" whose every answer is [`BIG_ANSWERS`] A records.
const BIG_DNS: &str = "192.0.2.254:5301";
/// About 1,400 bytes: more than 1232, less than the uplink's MTU.
const BIG_ANSWERS: u8 = 85;

fn netns_of(sb: &Value) -> String {
    sb["netnsPath"].as_str().unwrap().to_owned()
}

/// `CreateSandbox` on `net` with these DNS servers, through grpcurl.
fn sandbox_with_dns(w: &World, name: &str, net: &str, servers: &[&str]) -> Value {
    let body = serde_json::json!({
        "name": name,
        "networks": [{"network": net}],
        "dns": {"servers": servers},
    });
    w.grpcurl(
        "weft.gateway.v1.SandboxService/CreateSandbox",
        &body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_a_sandboxs_own_dns_servers_never_reach_the_hosts_loopback() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    let mut by = Bystanders::new(&w).await;
    // The host's loopback: the operator zone (dns-svc) and the test's own DNS and TCP servers.
    let host_hits = Arc::new(AtomicUsize::new(0));
    fake_upstream(
        &w.host.path,
        HOST_LOOPBACK_DNS.parse().unwrap(),
        host_hits.clone(),
    )
    .await;
    who_is_server(&w.host.path, HOST_LOOPBACK_TCP.parse().unwrap()).await;
    // What the operator zone would tell the attacker: by-server's address.
    let by_server_ip = w.sandbox("by-server")["endpoints"][0]["ipv4Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    // A server the sandbox can reach by itself.
    let reachable_hits = Arc::new(AtomicUsize::new(0));
    fake_upstream(
        &w.internet.path,
        REACHABLE_DNS.parse().unwrap(),
        reachable_hits.clone(),
    )
    .await;
    w.ok(&["network", "create", "open"]);
    by.baseline(&w);

    // The attack: the host's loopback named as the sandbox's own DNS servers.
    let sneaky = sandbox_with_dns(
        &w,
        "sneaky",
        "open",
        &[OPERATOR_DNS, HOST_LOOPBACK_DNS, HOST_LOOPBACK_TCP],
    );
    let ns = netns_of(&sneaky);
    for name in ["by-server.by-net.weft", "by-net.weft", "anything.example"] {
        let (status, answers) = dig(&ns, "127.0.0.11", name);
        assert!(
            status == "SERVFAIL" || status == "TIMEOUT",
            "{name}: {status} {answers:?}"
        );
        assert!(answers.is_empty(), "{name}: {answers:?}");
    }
    let (_, answers) = dig(&ns, "127.0.0.11", "by-server.by-net.weft");
    assert!(!answers.contains(&by_server_ip));
    assert_eq!(
        host_hits.load(Ordering::SeqCst),
        0,
        "the host's loopback DNS never heard of the sandbox"
    );

    // A sandbox whose own server it can reach gets its answers, from that server.
    let honest = sandbox_with_dns(&w, "honest", "open", &[REACHABLE_DNS]);
    let (status, answers) = dig(&netns_of(&honest), "127.0.0.11", "www.example");
    assert_eq!(
        (status.as_str(), answers),
        ("NOERROR", vec![UPSTREAM_ANSWER.to_owned()])
    );
    assert!(reachable_hits.load(Ordering::SeqCst) >= 1);
    // Weft's own names still resolve for the attacker (on its network), and the default
    // upstream still serves sandboxes that named none.
    w.ok(&["sandbox", "create", "plain", "--network", "open"]);
    let (_, answers) = dig(&ns, "127.0.0.11", "plain");
    assert_eq!(answers.len(), 1, "{answers:?}");
    let before = w.upstream_queries.load(Ordering::SeqCst);
    let (_, answers) = dig(&netns_of(&w.sandbox("plain")), "127.0.0.11", "x.example");
    assert_eq!(answers, [UPSTREAM_ANSWER]);
    assert!(w.upstream_queries.load(Ordering::SeqCst) > before);
    assert_eq!(host_hits.load(Ordering::SeqCst), 0);

    w.ok(&["sandbox", "rm", "sneaky"]);
    w.ok(&["sandbox", "rm", "honest"]);
    w.ok(&["sandbox", "rm", "plain"]);
    w.ok(&["network", "rm", "open"]);
    by.check(&w).await;
}

/// The uid, gid and supplementary groups of a process (`/proc/<pid>/status`).
fn ids_of(pid: u32) -> (u32, u32, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    (field("Uid:")[0], field("Gid:")[0], field("Groups:"))
}

/// The children of `parent`, by name (`/proc/<pid>/stat`).
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so split after its ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push((pid, comm));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_only_the_agent_runs_as_root_and_the_data_dir_is_private() {
    let w = World::new().await;
    let weft = Weft::up(&w).await;
    let by = {
        let mut by = Bystanders::new(&w).await;
        by.baseline(&w);
        by
    };
    let weft_user = nix::unistd::User::from_name("weft").unwrap().unwrap();
    let (uid, gid) = (weft_user.uid.as_raw(), weft_user.gid.as_raw());
    assert_ne!(uid, 0);

    // What `ps` would show: the services weft up started, by PID.
    let children = children_of(weft.pid());
    let names: Vec<&str> = children.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names.len(),
        4,
        "weft up's children: {children:?}\n{}",
        weft.log_text()
    );
    for (pid, name) in &children {
        let (u, g, groups) = ids_of(*pid);
        println!("pid {pid} {name}: uid {u} gid {g} groups {groups:?}");
        if name == "driver-agent" {
            assert_eq!(u, 0, "the agent programs the kernel");
        } else {
            assert!(
                ["gateway", "ipam-svc", "dns-svc"].contains(&name.as_str()),
                "{name}"
            );
            assert_eq!((u, g), (uid, gid), "{name} runs as weft");
            assert!(
                groups.iter().all(|&x| x != 0),
                "{name} keeps no root group: {groups:?}"
            );
        }
    }
    assert_eq!(
        children
            .iter()
            .filter(|(pid, _)| ids_of(*pid).0 == 0)
            .count(),
        1,
        "only the agent is root: {children:?}"
    );

    // And they still work: a sandbox resolves a name through 127.0.0.11 (dns-svc, unprivileged,
    // listens there with sockets from the agent), and an outside name through the upstream.
    w.ok(&["network", "create", "work"]);
    w.ok(&["sandbox", "create", "one", "--network", "work"]);
    w.ok(&["sandbox", "create", "two", "--network", "work"]);
    let one = netns_of(&w.sandbox("one"));
    let (status, answers) = dig(&one, "127.0.0.11", "two");
    assert_eq!(status, "NOERROR");
    assert_eq!(answers.len(), 1);
    let (_, answers) = dig(&one, "127.0.0.11", "example.test");
    assert_eq!(answers, [UPSTREAM_ANSWER]);

    // The data directory: directories 0700, files 0600, the services' own files the service
    // user's. Excepted: the agent's per-sandbox resolv.conf and hosts (0644: a runtime
    // bind-mounts them into containers, whose every user must read them), the broker's
    // socket (0660, group weft, in the 0700 `run/`), and the certificates in `pki/` (0644 as
    // weft_identity's bootstrap keeps them: public, in root's 0700 directory; their keys and
    // the CA key are 0600 like everything else).
    let data = weft.data_dir();
    let mut seen = 0;
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700, "{}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o777;
            seen += 1;
            if m.is_dir() {
                stack.push(p);
            } else if m.file_type().is_socket() {
                assert_eq!(mode, 0o660, "{}", p.display());
                assert_eq!(m.gid(), gid, "{}", p.display());
            } else if p.parent().and_then(Path::parent).and_then(Path::file_name)
                == Some("sandboxes".as_ref())
            {
                assert_eq!(mode, 0o644, "{}", p.display());
            } else if p.parent() == Some(data.join("pki").as_path())
                && p.extension().is_some_and(|x| x == "crt")
            {
                assert_eq!((m.uid(), mode), (0, 0o644), "{}", p.display());
            } else {
                assert_eq!(mode, 0o600, "{}", p.display());
            }
        }
    }
    for db in ["gateway.db", "ipam.db"] {
        let m = std::fs::metadata(data.join(db)).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (uid, 0o600), "{db}");
    }
    let m = std::fs::metadata(&data).unwrap();
    assert_eq!(m.uid(), uid);
    assert!(seen > 5, "{seen} entries");
    // The CA key is root's; the unprivileged services have copies of their own files only.
    let ca_key = std::fs::metadata(data.join("pki").join("ca.key")).unwrap();
    assert_eq!((ca_key.uid(), ca_key.mode() & 0o777), (0, 0o600));
    let tls = data.join("run").join("tls");
    assert_eq!(std::fs::metadata(&tls).unwrap().uid(), uid);
    assert!(!tls.join("ca.key").exists() && tls.join("ca.crt").is_file());

    w.ok(&["sandbox", "rm", "one"]);
    w.ok(&["sandbox", "rm", "two"]);
    w.ok(&["network", "rm", "work"]);
    by.check(&w).await;
}

/// A DNS server in `ns` at `addr` whose answer to any question is `n` A records (UDP).
async fn big_upstream(ns: &Path, addr: SocketAddr, n: u8) {
    let sock = weft_testkit::netns::udp_socket_in(ns, addr).await;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((len, peer)) = sock.recv_from(&mut buf) {
            let q = &buf[..len];
            if q.len() < 12 || q[2] & 0x80 != 0 {
                continue;
            }
            let mut end = 12;
            while end < q.len() && q[end] != 0 {
                end += usize::from(q[end]) + 1;
            }
            end += 5;
            let Some(question) = q.get(12..end) else {
                continue;
            };
            let mut r = q[..2].to_vec();
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, n, 0, 0, 0, 0]);
            r.extend_from_slice(question);
            for i in 0..n {
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 0, i]);
            }
            let _ = sock.send_to(&r, peer);
        }
    });
}

/// `dig ARGS…` inside the namespace at `path`: its whole output.
fn dig_raw(path: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={path}"))
        .args(["dig", "+time=2", "+tries=1", "@127.0.0.11"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_udp_answers_through_127_0_0_11_are_capped_at_1232_bytes() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    let mut by = Bystanders::new(&w).await;
    big_upstream(&w.internet.path, BIG_DNS.parse().unwrap(), BIG_ANSWERS).await;
    w.ok(&["network", "create", "big"]);
    by.baseline(&w);
    let sb = sandbox_with_dns(&w, "asker", "big", &[BIG_DNS]);
    let ns = netns_of(&sb);

    // Asked for 4096 bytes: a 1232-byte cap, TC set, our OPT record saying 1232.
    let text = dig_raw(&ns, &["+bufsize=4096", "+ignore", "many.example", "A"]);
    let size: usize = text
        .lines()
        .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no answer: {text}"));
    assert!(size <= 1232, "{size} bytes: {text}");
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .unwrap_or("");
    assert!(
        flags
            .split(';')
            .next()
            .unwrap()
            .split_whitespace()
            .any(|f| f == "tc"),
        "TC set: {text}"
    );
    assert!(text.contains("udp: 1232"), "{text}");
    assert!(!text.contains("WARNING"), "{text}");
    // Over TCP (dig's retry after TC), the whole answer.
    let text = dig_raw(&ns, &["+bufsize=4096", "many.example", "A"]);
    let answers = text
        .lines()
        .filter(|l| l.starts_with("many.example.") && l.contains("\tA\t"))
        .count();
    assert_eq!(answers, usize::from(BIG_ANSWERS), "{text}");

    w.ok(&["sandbox", "rm", "asker"]);
    w.ok(&["network", "rm", "big"]);
    by.check(&w).await;
}
