//! GC keeps exactly the attachments the runtime lists; parallel ADDs get distinct addresses;
//! STATUS says 51 while this host's agent is down and 50 once the gateway is gone.

use std::collections::BTreeSet;

use std::time::Duration;

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::json;

use crate::{Host, container, has_link, wait_until};

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn parallel_adds_gc_and_status() {
    let mut host = Host::up();
    let conf = host.conf("1.1.0", &json!({}));
    host.status(&conf).success();

    // 20 ADDs at once, as a busy node makes them.
    let containers: Vec<_> = (0..20).map(|_| container()).collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .map(|c| s.spawn(|| host.call("ADD", c, &conf)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = BTreeSet::new();
    for (c, r) in containers.iter().zip(&results) {
        let address = r.success()["ips"][0]["address"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(crate::addresses(c, "eth0"), std::slice::from_ref(&address));
        seen.insert(address);
    }
    assert_eq!(seen.len(), 20, "{seen:?}");

    // GC with the first five valid: exactly the other fifteen go, in Weft and in the kernel.
    let (keep, gone) = containers.split_at(5);
    let valid: Vec<_> = keep
        .iter()
        .map(|c| json!({"containerID": c.name, "ifname": "eth0"}))
        .collect();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!(valid);
    host.plugin(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &gc)
        .success();
    let left: BTreeSet<String> = host
        .sandboxes()
        .iter()
        .map(|s| s["containerId"].as_str().unwrap().to_owned())
        .collect();
    let kept: BTreeSet<String> = keep.iter().map(|c| c.name.clone()).collect();
    assert_eq!(left, kept);
    assert!(keep.iter().all(|c| has_link(c, "eth0")));
    assert!(gone.iter().all(|c| !has_link(c, "eth0")));
    // Their addresses were released: IPAM has exactly the five (plus the gateway).
    let net = host.weftctl(&["--format", "json", "network", "inspect", crate::NETWORK]);
    assert_eq!(net.matches("\"endpointId\"").count(), 5, "{net}");

    // This host's agent frozen (SIGSTOP, by its PID): once the gateway marks the host down,
    // STATUS is 51; thawed, STATUS is 0 again.
    let agent = host
        .weft
        .service_pid("driver-agent")
        .expect("the driver-agent of weft up");
    let agent = Pid::from_raw(i32::try_from(agent).unwrap());
    let frozen = Frozen::stop(agent);
    let down = wait_until(
        Duration::from_secs(90),
        "STATUS 51 with the agent frozen",
        || {
            let r = host.status(&conf);
            (!r.ok && r.out["code"] == 51).then_some(r)
        },
    );
    assert!(down.msg().contains("down"), "{}", down.out);
    drop(frozen);
    wait_until(
        Duration::from_secs(90),
        "STATUS 0 with the agent thawed",
        || host.status(&conf).ok.then_some(()),
    );

    // The gateway gone: STATUS is 50.
    host.weft.stop();
    let r = host.status(&conf);
    assert_eq!(r.code(), 50, "{}", r.out);
}

/// A process stopped with SIGSTOP, continued when this goes (also when the test fails, so that
/// `weft up` can stop it).
struct Frozen(Pid);

impl Frozen {
    fn stop(pid: Pid) -> Self {
        kill(pid, Signal::SIGSTOP).unwrap();
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}
