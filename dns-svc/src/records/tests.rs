//! The record model's tests: lookups, scoping, PTR and removals over small fixed worlds.

#![allow(clippy::unwrap_used)]
use super::*;
use crate::fixture;
use gw::{EventKind as K, event::Object as O};

fn net(id: &str, name: &str, internal: bool, subnet: &str) -> gw::Event {
    fixture::event(
        K::NetworkCreated,
        O::Network(fixture::network(id, name, subnet, internal)),
    )
}

fn sandbox(id: &str, name: &str, hostname: &str) -> gw::Event {
    let container_id = format!("{id}0123456789abcdef");
    fixture::event(
        K::SandboxCreated,
        O::Sandbox(fixture::sandbox(id, name, hostname, &container_id)),
    )
}

fn ep(id: &str, net: &str, sb: &str, v4: &str, aliases: &[&str]) -> gw::Event {
    fixture::event(
        K::EndpointConnected,
        O::Endpoint(fixture::endpoint(id, net, sb, v4, "", aliases)),
    )
}

/// client on backend; web and db on backend sharing alias "api"; hidden only on secret.
fn world() -> Snapshot {
    let mut st = State::default();
    for ev in [
        net("nb", "backend", false, "10.1.0.0/24"),
        net("ns", "secret", true, "10.2.0.0/24"),
        sandbox("sc", "client", "client"),
        sandbox("sw", "web", "web-host"),
        sandbox("sd", "db", ""),
        sandbox("sh", "hidden", ""),
        ep("e1", "nb", "sc", "10.1.0.2/24", &[]),
        ep("e2", "nb", "sw", "10.1.0.3/24", &["api"]),
        ep("e3", "nb", "sd", "10.1.0.4/24", &["API"]),
        ep("e4", "ns", "sh", "10.2.0.5/24", &[]),
    ] {
        assert!(st.apply(&ev));
    }
    Snapshot::build(&st, true)
}

fn addrs(l: &Local<'_>) -> Vec<String> {
    match l {
        Local::Found(ts) => {
            let mut v: Vec<String> = ts.iter().map(|t| format!("{:?}", t.v4)).collect();
            v.sort();
            v
        }
        other => panic!("expected a match, got {other:?}"),
    }
}

#[test]
fn peer_name_alias_hostname_and_network_qualified_name_resolve() {
    let s = world();
    let me = Asker::Sandbox("sc");
    assert_eq!(addrs(&s.lookup(me, "web")), ["Some(10.1.0.3)"]);
    assert_eq!(addrs(&s.lookup(me, "web-host")), ["Some(10.1.0.3)"]);
    assert_eq!(addrs(&s.lookup(me, "web.backend")), ["Some(10.1.0.3)"]);
    assert_eq!(addrs(&s.lookup(me, "sw0123456789")), ["Some(10.1.0.3)"]);
}

#[test]
fn lookups_ignore_case_and_a_trailing_dot() {
    let s = world();
    assert_eq!(
        addrs(&s.lookup(Asker::Sandbox("sc"), "WEB.Backend.")),
        ["Some(10.1.0.3)"]
    );
}

#[test]
fn a_shared_alias_answers_every_member() {
    let s = world();
    assert_eq!(
        addrs(&s.lookup(Asker::Sandbox("sc"), "api")),
        ["Some(10.1.0.3)", "Some(10.1.0.4)"]
    );
}

#[test]
fn the_default_bridge_resolves_no_names() {
    let mut st = State::default();
    let mut bridge = net("nb", "bridge", false, "172.17.0.0/16");
    if let Some(O::Network(n)) = bridge.object.as_mut() {
        n.predefined = true;
    }
    for e in [
        bridge,
        sandbox("s1", "one", ""),
        sandbox("s2", "two", ""),
        ep("e1", "nb", "s1", "172.17.0.2/16", &[]),
        ep("e2", "nb", "s2", "172.17.0.3/16", &[]),
    ] {
        st.apply(&e);
    }
    let snap = Snapshot::build(&st, true);
    assert!(matches!(
        snap.lookup(Asker::Sandbox("s1"), "two"),
        Local::NotOurs
    ));
    assert!(snap.may_forward("s1"));
}

#[test]
fn names_of_networks_the_asker_is_not_on_are_invisible() {
    let s = world();
    let me = Asker::Sandbox("sc");
    assert_eq!(s.lookup(me, "hidden"), Local::NotOurs);
    assert_eq!(s.lookup(me, "hidden.secret"), Local::NotOurs);
}

#[test]
fn unknown_name_under_a_network_of_the_asker_is_nxdomain() {
    let s = world();
    assert_eq!(
        s.lookup(Asker::Sandbox("sc"), "nobody.backend"),
        Local::NxDomain {
            network_id: Some("nb")
        }
    );
}

#[test]
fn operator_sees_every_network_but_only_qualified_names() {
    let s = world();
    assert_eq!(
        addrs(&s.lookup(Asker::Operator, "hidden.secret")),
        ["Some(10.2.0.5)"]
    );
    assert_eq!(
        s.lookup(Asker::Operator, "hidden"),
        Local::NxDomain { network_id: None }
    );
}

#[test]
fn ptr_answers_shared_networks_and_nxdomain_inside_their_subnets() {
    let s = world();
    let me = Asker::Sandbox("sc");
    let Local::Found(t) = s.lookup_ptr(me, "10.1.0.3".parse().unwrap()) else {
        panic!()
    };
    assert_eq!(
        (t[0].sandbox_name.as_str(), t[0].network_name.as_str()),
        ("web", "backend")
    );
    assert!(matches!(
        s.lookup_ptr(me, "10.1.0.99".parse().unwrap()),
        Local::NxDomain { .. }
    ));
    assert_eq!(
        s.lookup_ptr(me, "10.2.0.5".parse().unwrap()),
        Local::NotOurs
    );
    assert_eq!(
        s.lookup_ptr(me, "192.0.2.1".parse().unwrap()),
        Local::NotOurs
    );
}

#[test]
fn removed_endpoints_and_sandboxes_disappear() {
    let mut st = State::default();
    for ev in [
        net("nb", "backend", false, "10.1.0.0/24"),
        sandbox("sc", "client", ""),
        sandbox("sw", "web", ""),
        ep("e1", "nb", "sc", "10.1.0.2/24", &[]),
        ep("e2", "nb", "sw", "10.1.0.3/24", &[]),
    ] {
        st.apply(&ev);
    }
    let mut gone = ep("e2", "nb", "sw", "10.1.0.3/24", &[]);
    gone.kind = K::EndpointDisconnected as i32;
    assert!(st.apply(&gone));
    let s = Snapshot::build(&st, true);
    assert!(matches!(
        s.lookup(Asker::Sandbox("sc"), "web"),
        Local::NotOurs
    ));
}

#[test]
fn only_sandboxes_on_a_non_internal_network_forward() {
    let s = world();
    assert!(s.may_forward("sc"));
    assert!(!s.may_forward("sh"));
    assert!(!s.may_forward("unknown"));
}

#[test]
fn sandboxes_are_found_by_name_id_and_unique_prefix() {
    let s = world();
    assert!(s.find_sandbox("client").is_ok());
    assert!(s.find_sandbox("sw").is_ok());
    assert_eq!(s.find_sandbox("s").unwrap_err(), FindError::Ambiguous);
    assert_eq!(s.find_sandbox("zz").unwrap_err(), FindError::NotFound);
}

#[test]
fn an_endpoint_whose_host_is_down_past_the_grace_stops_resolving_until_it_is_back() {
    let mut st = State::default();
    for ev in [
        net("nb", "backend", false, "10.1.0.0/24"),
        sandbox("sc", "client", ""),
        sandbox("sw", "web", ""),
        ep("e1", "nb", "sc", "10.1.0.2/24", &[]),
        ep("e2", "nb", "sw", "10.1.0.3/24", &["api"]),
    ] {
        st.apply(&ev);
    }
    let updated = |down: bool| {
        let mut e = fixture::endpoint("e2", "nb", "sw", "10.1.0.3/24", "", &["api"]);
        e.host_down = down;
        fixture::event(K::EndpointUpdated, O::Endpoint(e))
    };
    assert!(st.apply(&updated(true)));
    let s = Snapshot::build(&st, true);
    for name in ["web", "api"] {
        assert!(
            matches!(s.lookup(Asker::Sandbox("sc"), name), Local::NotOurs),
            "{name}"
        );
    }
    // Marked again: nothing changes. Back: it resolves again.
    assert!(!st.apply(&updated(true)));
    assert!(st.apply(&updated(false)));
    let s = Snapshot::build(&st, true);
    assert_eq!(
        addrs(&s.lookup(Asker::Sandbox("sc"), "api")),
        ["Some(10.1.0.3)"]
    );
}
