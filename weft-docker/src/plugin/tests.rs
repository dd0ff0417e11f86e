//! The calls that need no gateway; those that do are exercised by the Docker test
//! (`tests/it`), against a real dockerd and a real Weft.

use super::*;

fn plugin() -> Plugin {
    // Port 9 (discard): any call that reached for the gateway would fail, not hang.
    Plugin::new(Settings {
        gateway: "http://127.0.0.1:9".into(),
        bearer: Bearer::none(),
        docker: None,
    })
}

async fn call(p: &Plugin, path: &str, body: Value) -> Result<Value, PluginError> {
    p.call(path, body.to_string().as_bytes()).await
}

#[tokio::test]
async fn activation_names_both_drivers_and_local_scope() {
    let p = plugin();
    let v = p.call("/Plugin.Activate", b"").await.unwrap();
    assert_eq!(v, json!({"Implements": ["NetworkDriver", "IpamDriver"]}));
    let caps = p
        .call("/NetworkDriver.GetCapabilities", b"{}")
        .await
        .unwrap();
    assert_eq!(caps["Scope"], "local");
    let spaces = p
        .call("/IpamDriver.GetDefaultAddressSpaces", b"")
        .await
        .unwrap();
    assert_eq!(spaces["LocalDefaultAddressSpace"], LOCAL_SPACE);
    let ipam = p.call("/IpamDriver.GetCapabilities", b"").await.unwrap();
    assert_eq!(ipam["RequiresMACAddress"], false);
}

#[tokio::test]
async fn unknown_calls_malformed_bodies_and_swarm_are_errors() {
    let p = plugin();
    let e = p.call("/NetworkDriver.Nope", b"{}").await.unwrap_err();
    assert!(e.to_string().contains("unknown call"), "{e}");
    let e = p
        .call("/NetworkDriver.Join", b"{not json")
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::Body(_)), "{e}");
    let e = p.call("/NetworkDriver.Join", b"\"x\"").await.unwrap_err();
    assert!(matches!(e, PluginError::Body(_)), "{e}");
    // (serde takes an array for a struct: all fields missing, refused by the id check.)
    let e = p.call("/NetworkDriver.Join", b"[]").await.unwrap_err();
    assert!(e.to_string().contains("NetworkID"), "{e}");
    let e = p
        .call("/NetworkDriver.AllocateNetwork", b"{}")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("swarm"), "{e}");
}

#[tokio::test]
async fn pools_given_explicitly_need_no_gateway() {
    let p = plugin();
    let v = call(
        &p,
        "/IpamDriver.RequestPool",
        json!({"AddressSpace": "weft", "Pool": "10.5.0.0/24", "SubPool": "", "V6": false}),
    )
    .await
    .unwrap();
    assert_eq!(
        v,
        json!({"PoolID": "weft:10.5.0.0/24", "Pool": "10.5.0.0/24", "Data": {}})
    );
    let v6 = json!({"AddressSpace": "weft", "Pool": "fd00:5::/64", "SubPool": "", "V6": true});
    assert_eq!(
        call(&p, "/IpamDriver.RequestPool", v6).await.unwrap(),
        json!({"PoolID": "weft:fd00:5::/64", "Pool": "fd00:5::/64", "Data": {}})
    );
    // The family Docker asked for, named in the error.
    let e = call(
        &p,
        "/IpamDriver.RequestPool",
        json!({"Pool": "10.5.0.0/24", "V6": true}),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().starts_with("Pool") && e.to_string().contains("IPv6"),
        "{e}"
    );
    let e = call(
        &p,
        "/IpamDriver.RequestPool",
        json!({"Pool": "fd00:5::/127", "V6": true}),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("/126"), "{e}");
    let e = call(
        &p,
        "/IpamDriver.RequestPool",
        json!({"Pool": "", "SubPool": "10.5.0.0/25"}),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().starts_with("SubPool"), "{e}");
    let e = call(
        &p,
        "/IpamDriver.RequestPool",
        json!({"Pool": "10.5.0.1/24"}),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("host bits"), "{e}");
}

#[tokio::test]
async fn gateway_and_static_addresses_come_from_the_pool_id() {
    let p = plugin();
    let gw = json!({"PoolID": "weft:10.5.0.0/24", "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}});
    assert_eq!(
        call(&p, "/IpamDriver.RequestAddress", gw).await.unwrap()["Address"],
        "10.5.0.1/24"
    );
    let fixed = json!({"PoolID": "weft:10.5.0.0/24", "Address": "10.5.0.9", "Options": null});
    assert_eq!(
        call(&p, "/IpamDriver.RequestAddress", fixed).await.unwrap()["Address"],
        "10.5.0.9/24"
    );
    assert!(
        p.reserved
            .lock()
            .await
            .contains_key(&IpAddr::V4(Ipv4Addr::new(10, 5, 0, 9)))
    );
    let rel = json!({"PoolID": "weft:10.5.0.0/24", "Address": "10.5.0.9/24"});
    call(&p, "/IpamDriver.ReleaseAddress", rel).await.unwrap();
    // The gateway stays reserved (swarm's manager asks for addresses before any network).
    assert_eq!(
        p.reserved.lock().await.keys().copied().collect::<Vec<_>>(),
        [IpAddr::V4(Ipv4Addr::new(10, 5, 0, 1))]
    );
    let foreign = json!({"PoolID": "default/10.5.0.0/24", "Address": ""});
    assert!(
        call(&p, "/IpamDriver.RequestAddress", foreign)
            .await
            .is_err()
    );
    let outside = json!({"PoolID": "weft:10.5.0.0/24", "Address": "10.6.0.9"});
    assert!(
        call(&p, "/IpamDriver.RequestAddress", outside)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn ipv6_gateways_and_static_addresses_come_from_the_pool_id() {
    let p = plugin();
    let gw = json!({"PoolID": "weft:fd00:5::/64", "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}});
    assert_eq!(
        call(&p, "/IpamDriver.RequestAddress", gw).await.unwrap()["Address"],
        "fd00:5::1/64"
    );
    let fixed = json!({"PoolID": "weft:fd00:5::/64", "Address": "fd00:5::9", "Options": null});
    assert_eq!(
        call(&p, "/IpamDriver.RequestAddress", fixed).await.unwrap()["Address"],
        "fd00:5::9/64"
    );
    let v6: IpAddr = "fd00:5::9".parse().unwrap();
    assert!(p.reserved.lock().await.contains_key(&v6));
    let rel = json!({"PoolID": "weft:fd00:5::/64", "Address": "fd00:5::9/64"});
    call(&p, "/IpamDriver.ReleaseAddress", rel).await.unwrap();
    let gateway: IpAddr = "fd00:5::1".parse().unwrap();
    assert_eq!(
        p.reserved.lock().await.keys().copied().collect::<Vec<_>>(),
        [gateway]
    );
    // A v4 address asked of a v6 pool: refused, naming the field.
    let wrong = json!({"PoolID": "weft:fd00:5::/64", "Address": "10.5.0.9"});
    let e = call(&p, "/IpamDriver.RequestAddress", wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("Address") && e.contains("IPv6"), "{e}");
}

#[tokio::test]
async fn create_endpoint_gives_dockers_mac_and_is_remembered_until_join() {
    let p = plugin();
    let ep = "e".repeat(64);
    let req = json!({"NetworkID": "ab", "EndpointID": ep, "Interface": {"Address": "10.5.0.2/24", "AddressIPv6": "", "MacAddress": ""}, "Options": {}});
    let v = call(&p, "/NetworkDriver.CreateEndpoint", req)
        .await
        .unwrap();
    assert_eq!(v, json!({"Interface": {"MacAddress": "02:42:0a:05:00:02"}}));
    assert!(p.pending.lock().unwrap().contains_key(&ep));
    let dual = "d".repeat(64);
    let req = json!({"NetworkID": "ab", "EndpointID": dual, "Interface": {"Address": "10.5.0.3/24", "AddressIPv6": "fd00:5::3/64", "MacAddress": ""}});
    call(&p, "/NetworkDriver.CreateEndpoint", req)
        .await
        .unwrap();
    let pending = p.pending.lock().unwrap().get(&dual).cloned().unwrap();
    assert_eq!(pending.ipv6, Some("fd00:5::3".parse().unwrap()));
    let v4_as_v6 = json!({"NetworkID": "ab", "EndpointID": "ef", "Interface": {"Address": "10.5.0.4/24", "AddressIPv6": "10.5.0.4/24"}});
    let e = call(&p, "/NetworkDriver.CreateEndpoint", v4_as_v6)
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("Interface.AddressIPv6"), "{e}");
    let no_ipam = json!({"NetworkID": "ab", "EndpointID": "ef", "Interface": {}});
    let e = call(&p, "/NetworkDriver.CreateEndpoint", no_ipam)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--ipam-driver"), "{e}");
    let hostile = json!({"NetworkID": "../../x", "EndpointID": "ef"});
    assert!(
        call(&p, "/NetworkDriver.CreateEndpoint", hostile)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn join_without_create_endpoint_is_refused_before_any_gateway_call() {
    let p = plugin();
    let req = json!({"NetworkID": "ab", "EndpointID": "cd", "SandboxKey": "/var/run/docker/netns/0123456789ab", "Options": {}});
    let e = call(&p, "/NetworkDriver.Join", req).await.unwrap_err();
    assert!(e.to_string().contains("restarted"), "{e}");
    let bad_key = json!({"NetworkID": "ab", "EndpointID": "cd", "SandboxKey": "/etc/passwd"});
    assert!(
        call(&p, "/NetworkDriver.Join", bad_key)
            .await
            .unwrap_err()
            .to_string()
            .contains("SandboxKey")
    );
}

#[tokio::test]
async fn the_overlay_driver_has_global_scope_and_the_bridge_local() {
    let p = plugin();
    let caps = p
        .call_as(Driver::Overlay, "/NetworkDriver.GetCapabilities", b"")
        .await
        .unwrap();
    assert_eq!(
        caps,
        json!({"Scope": "global", "ConnectivityScope": "global"})
    );
    let caps = p
        .call_as(Driver::Bridge, "/NetworkDriver.GetCapabilities", b"")
        .await
        .unwrap();
    assert_eq!(
        caps,
        json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    assert_eq!(Driver::Overlay.weft_driver(), "overlay");
    assert_eq!(Driver::Bridge.weft_driver(), "bridge");
    // Both drivers share the IPAM driver and its checks.
    let e = p
        .call_as(
            Driver::Overlay,
            "/NetworkDriver.CreateNetwork",
            br#"{"NetworkID": "../x"}"#,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("NetworkID"), "{e}");
}

#[tokio::test]
async fn swarm_allocates_overlay_networks_only_and_checks_the_id() {
    let p = plugin();
    // Swarm's network ids are base 36.
    let id = "qsz7l4d0jh8q0h3hftqbzvl3o";
    for path in [
        "/NetworkDriver.AllocateNetwork",
        "/NetworkDriver.FreeNetwork",
    ] {
        let body = json!({"NetworkID": id, "Options": {}, "IPv4Data": []}).to_string();
        let v = p
            .call_as(Driver::Overlay, path, body.as_bytes())
            .await
            .unwrap();
        assert_eq!(v, json!({}), "{path}");
        let e = p
            .call_as(Driver::Bridge, path, body.as_bytes())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("swarm"), "{path}: {e}");
        let e = p
            .call_as(Driver::Overlay, path, br#"{"NetworkID": "../x"}"#)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("NetworkID"), "{path}: {e}");
    }
}
