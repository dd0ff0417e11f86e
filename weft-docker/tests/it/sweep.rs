//! Sandboxes of containers dockerd removed while the plugin was down (dockerd gives up on
//! `Leave` after a minute and removes the container anyway) are deleted by the plugin's sweep;
//! nothing else is.

use std::time::Duration;

use crate::{wait_until, world::World};

#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and dockerd in a namespace"
)]
fn sandboxes_whose_docker_namespace_is_gone_are_swept_and_no_others() {
    let w = World::with_plugin_args(&["--sweep-every", "1s", "--stale-after", "0s"]);
    // Plays dockerd's exec-root/netns: one namespace file still there, one gone.
    let netns = tempfile::tempdir().unwrap();
    let alive = netns.path().join("0123456789ab");
    std::fs::write(&alive, b"").unwrap();
    let gone = netns.path().join("ba9876543210");
    let path_label = |p: &std::path::Path| format!("com.docker.sandbox.path={}", p.display());
    let ours = ["--label", "created-by=weft-docker", "--label"];
    w.weftctl(
        &[
            &["sandbox", "create"][..],
            &ours,
            &[&path_label(&alive), "alive"],
        ]
        .concat(),
    );
    w.weftctl(
        &[
            &["sandbox", "create"][..],
            &ours,
            &[&path_label(&gone), "forgotten"],
        ]
        .concat(),
    );
    // Not the plugin's: never touched, whatever its labels say.
    w.weftctl(&[
        "sandbox",
        "create",
        "--label",
        &path_label(&gone),
        "someone-elses",
    ]);
    // A network of the plugin's that dockerd does not have (removed while the plugin was
    // down), and one that dockerd has.
    let d = w.driver.clone();
    let docker_id = w.docker(&["network", "create", "-d", &d, "--ipam-driver", &d, "kept"]);
    let forgotten_id = "f".repeat(64);
    for (name, id) in [
        ("forgotten-net", forgotten_id.as_str()),
        ("kept-net", docker_id.as_str()),
    ] {
        let id_label = format!("com.docker.network.id={id}");
        w.weftctl(&[
            "network",
            "create",
            "--label",
            "created-by=weft-docker",
            "--label",
            &id_label,
            name,
        ]);
    }

    let names = || -> Vec<String> {
        w.weftctl_json(&["sandbox", "ls"])
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_until(
        Duration::from_secs(20),
        "the forgotten sandbox swept",
        || (!names().contains(&"forgotten".to_owned())).then_some(()),
    );
    assert!(
        w.plugin_log().contains("Docker's sandbox is gone"),
        "{}",
        w.plugin_log()
    );
    let left = names();
    assert!(left.contains(&"alive".to_owned()), "{left:?}");
    assert!(left.contains(&"someone-elses".to_owned()), "{left:?}");
    let networks = || -> Vec<String> {
        w.weftctl_json(&["network", "ls"])
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_until(
        Duration::from_secs(20),
        "the forgotten network swept",
        || (!networks().contains(&"forgotten-net".to_owned())).then_some(()),
    );
    let left = networks();
    assert!(left.contains(&"kept-net".to_owned()), "{left:?}");
    w.weftctl(&["sandbox", "rm", "alive", "someone-elses"]);
    w.weftctl(&["network", "rm", "kept-net"]);
    w.docker(&["network", "rm", "kept"]);
}
