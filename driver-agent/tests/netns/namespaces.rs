//! Named namespaces made and removed without forking, the way `ip netns` sees them.

use std::process::Command;

use driver_agent::netns::{self, NetnsError};

fn ip_netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn named_namespace_is_visible_to_ip_netns_and_deleting_it_twice_is_fine() {
    let name = format!("wft-t-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let path = netns::create_named(&name).unwrap();
    let guard = crate::support::TestNs {
        name: name.clone(),
        path: path.clone(),
    };
    assert!(ip_netns_list().lines().any(|l| l.starts_with(&name)));
    // A second create of the same name is refused, not merged.
    assert!(matches!(
        netns::create_named(&name),
        Err(NetnsError::Exists { .. })
    ));
    // It is a namespace of its own: only a loopback, down.
    let out = Command::new("ip")
        .args(["-n", &name, "-j", "link"])
        .output()
        .unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
    assert_eq!(links[0]["ifname"], "lo");
    // Entering it from a dedicated thread sees that namespace, not ours.
    let inside = netns::run_in(&path, || std::fs::read_link("/proc/thread-self/ns/net"))
        .await
        .unwrap()
        .unwrap();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(inside, ours);

    netns::delete_named(&name).unwrap();
    assert!(!path.exists());
    assert!(!ip_netns_list().lines().any(|l| l.starts_with(&name)));
    netns::delete_named(&name).unwrap();
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_missing_namespaces_are_reported() {
    for bad in ["", "..", "a/b"] {
        assert!(
            matches!(
                netns::create_named(bad),
                Err(NetnsError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    let missing = netns::named_path("wft-t-does-not-exist");
    assert!(matches!(
        netns::connect(&missing).await,
        Err(NetnsError::NotFound { .. })
    ));
}
