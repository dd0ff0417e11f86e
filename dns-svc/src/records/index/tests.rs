//! The incremental index against the whole rebuild: a property test over random event
//! sequences, and a remove / rename / re-add sequence by hand.

#![allow(clippy::unwrap_used)]
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::{
    fixture,
    records::{Asker, Local},
};
use gw::{EventKind as K, event::Object as O};

const NETS: usize = 4;
const SANDBOXES: usize = 6;
const ENDPOINTS: usize = 8;
/// Few names, so that they collide: case, dots, a sandbox named like another's hostname.
const NAMES: [&str; 6] = ["web", "db", "WEB", "api", "x.y", ""];
const NET_NAMES: [&str; 4] = ["front", "back", "FRONT", "x.y"];
const V4: [&str; 4] = ["10.0.0.2/16", "10.0.0.3/16", "10.1.0.2/16", ""];
const V6: [&str; 2] = ["fd00::2/64", ""];
const CONTAINERS: [&str; 3] = ["", "0123456789abcdef", "0123456789ABxx"];

fn network_event() -> impl Strategy<Value = gw::Event> {
    (
        0..NETS,
        0..NET_NAMES.len(),
        any::<bool>(),
        0..5u8,
        any::<bool>(),
    )
        .prop_map(|(id, name, internal, kind, predefined)| {
            let mut n = fixture::network(
                &format!("n{id}"),
                NET_NAMES[name],
                &format!("10.{id}.0.0/16"),
                internal,
            );
            n.predefined = predefined;
            n.dns_servers = if internal {
                vec!["192.0.2.53".into()]
            } else {
                Vec::new()
            };
            // A scoped watch's network coming in and leaving (with every endpoint on it).
            let kind = [
                K::NetworkCreated,
                K::NetworkUpdated,
                K::NetworkRemoved,
                K::ScopeEntered,
                K::ScopeLeft,
            ][kind as usize];
            fixture::event(kind, O::Network(n))
        })
}

fn sandbox_event() -> impl Strategy<Value = gw::Event> {
    (
        0..SANDBOXES,
        0..NAMES.len(),
        0..NAMES.len(),
        0..CONTAINERS.len(),
        any::<bool>(),
        0..5u8,
    )
        .prop_map(|(id, name, hostname, container, host, kind)| {
            let mut s = fixture::sandbox(
                &format!("s{id}"),
                NAMES[name],
                NAMES[hostname],
                CONTAINERS[container],
            );
            s.host = if host { "here" } else { "there" }.into();
            s.netns_path = format!("/run/netns/s{id}-{}", u8::from(host));
            let kind = [
                K::SandboxCreated,
                K::SandboxCreated,
                K::SandboxRemoved,
                K::ScopeEntered,
                K::ScopeLeft,
            ][kind as usize];
            fixture::event(kind, O::Sandbox(s))
        })
}

fn endpoint_event() -> impl Strategy<Value = gw::Event> {
    (
        0..ENDPOINTS,
        0..NETS,
        0..SANDBOXES,
        0..V4.len(),
        0..V6.len(),
        proptest::collection::vec(0..NAMES.len(), 0..3),
        0..6u8,
    )
        .prop_map(|(id, net, sb, v4, v6, aliases, kind)| {
            let aliases: Vec<&str> = aliases.into_iter().map(|a| NAMES[a]).collect();
            let mut e = fixture::endpoint(
                &format!("e{id}"),
                &format!("n{net}"),
                &format!("s{sb}"),
                V4[v4],
                V6[v6],
                &aliases,
            );
            // The fifth: its host down past the grace (the endpoint stops resolving).
            e.host_down = kind == 4;
            let kind = [
                K::EndpointConnected,
                K::EndpointConnected,
                K::EndpointUpdated,
                K::EndpointDisconnected,
                K::EndpointUpdated,
                K::ScopeEntered,
            ][kind as usize];
            fixture::event(kind, O::Endpoint(e))
        })
}

fn event() -> impl Strategy<Value = gw::Event> {
    prop_oneof![
        1 => network_event(),
        2 => sandbox_event(),
        4 => endpoint_event(),
        1 => Just(gw::Event { kind: K::HostUp as i32, ..Default::default() }),
    ]
}

/// Everything the index holds, in a comparable form.
#[derive(Debug, PartialEq, Eq)]
struct Dump {
    revision: u64,
    networks: BTreeMap<String, NetworkRec>,
    net_by_name: BTreeMap<String, String>,
    sandboxes: BTreeMap<String, SandboxView>,
    names: BTreeMap<(String, String), Vec<Hit>>,
    ptr: BTreeMap<IpAddr, Vec<Hit>>,
}

fn dump(s: &Snapshot) -> Dump {
    Dump {
        revision: s.revision,
        networks: s
            .networks
            .iter()
            .map(|(k, v)| (k.clone(), (**v).clone()))
            .collect(),
        net_by_name: s
            .net_by_name
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        sandboxes: s
            .sandboxes
            .iter()
            .map(|(k, v)| (k.clone(), (**v).clone()))
            .collect(),
        names: s
            .names
            .iter()
            .flat_map(|(net, m)| {
                m.iter()
                    .map(move |(k, v)| ((net.clone(), k.clone()), v.to_vec()))
            })
            .collect(),
        ptr: s.ptr.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
    }
}

/// Every question a sandbox or the operator may ask of `s`, with its answer.
fn answers(s: &Snapshot) -> Vec<String> {
    let mut askers = vec![Asker::Operator];
    let ids: Vec<String> = (0..=SANDBOXES).map(|i| format!("s{i}")).collect();
    askers.extend(ids.iter().map(|i| Asker::Sandbox(i)));
    let mut qnames: BTreeSet<String> = BTreeSet::new();
    for n in NAMES
        .iter()
        .chain(["0123456789ab", "0123456789AB", "nobody"].iter())
    {
        qnames.insert((*n).to_owned());
        qnames.insert(format!("{n}."));
        for net in NET_NAMES {
            qnames.insert(format!("{n}.{net}"));
        }
    }
    let ips: Vec<IpAddr> = V4
        .iter()
        .chain(V6.iter())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .chain(["10.0.9.9".parse().unwrap(), "192.0.2.1".parse().unwrap()])
        .collect();
    let mut out = Vec::new();
    for a in &askers {
        for q in &qnames {
            out.push(format!("{a:?} {q}: {:?}", s.lookup(*a, q)));
        }
        for ip in &ips {
            out.push(format!("{a:?} {ip}: {:?}", s.lookup_ptr(*a, *ip)));
        }
    }
    for id in &ids {
        out.push(format!("{id} forwards: {}", s.may_forward(id)));
    }
    for n in NET_NAMES {
        out.push(format!("{n}: {:?}", s.network_by_name(n)));
    }
    out
}

/// Revisions as the gateway gives them: one per event.
fn numbered(events: Vec<gw::Event>) -> Vec<gw::Event> {
    events
        .into_iter()
        .zip(1..)
        .map(|(ev, revision)| gw::Event { revision, ..ev })
        .collect()
}

/// The sandboxes whose record differs between two snapshots.
fn sandbox_changes(a: &Snapshot, b: &Snapshot) -> BTreeSet<String> {
    let rec = |s: &Snapshot, id: &str| s.sandboxes.get(id).and_then(|v| v.rec.clone());
    a.sandboxes
        .keys()
        .chain(b.sandboxes.keys())
        .filter(|id| rec(a, id) != rec(b, id))
        .cloned()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Events applied one by one (published after random ones, as the ingester batches them)
    /// give the index that building the final state whole gives, and the same answer to every
    /// question; every published snapshot stays what it was, and its journal names every
    /// sandbox whose record changed.
    #[test]
    fn incremental_index_equals_the_whole_rebuild(
        start in proptest::collection::vec(event(), 0..20),
        live_events in proptest::collection::vec((event(), any::<bool>()), 1..60),
    ) {
        let mut live = Live::default();
        let mut relisted = State::default();
        for ev in numbered(start) {
            relisted.apply(&ev);
        }
        live.replace(relisted);
        let mut published = vec![live.publish(true)];
        let mut frozen = vec![dump(&published[0])];
        let mut revision = 100;
        for (ev, publish) in live_events {
            revision += 1;
            live.apply(&gw::Event { revision, ..ev });
            live.set_revision(revision);
            if publish {
                published.push(live.publish(true));
                frozen.push(dump(published.last().unwrap()));
            }
        }
        published.push(live.publish(true));
        frozen.push(dump(published.last().unwrap()));
        let inc = published.last().unwrap();
        let whole = Snapshot::build(live.state(), true);
        prop_assert_eq!(dump(inc), dump(&whole));
        prop_assert_eq!(answers(inc), answers(&whole));
        for (snap, before) in published.iter().zip(&frozen) {
            prop_assert_eq!(&dump(snap), before, "a published snapshot changed");
        }
        for pair in published.windows(2) {
            let noted: BTreeSet<String> = pair[1]
                .sandboxes_changed_since(pair[0].journal_mark())
                .unwrap()
                .into_iter()
                .collect();
            let changed = sandbox_changes(&pair[0], &pair[1]);
            prop_assert!(changed.is_subset(&noted), "{changed:?} not all in {noted:?}");
        }
    }
}

fn net(id: &str, name: &str, subnet: &str) -> gw::Event {
    fixture::event(
        K::NetworkCreated,
        O::Network(fixture::network(id, name, subnet, false)),
    )
}

fn sandbox(id: &str, name: &str) -> gw::Event {
    fixture::event(
        K::SandboxCreated,
        O::Sandbox(fixture::sandbox(id, name, "", "")),
    )
}

fn ep(kind: K, id: &str, net: &str, sb: &str, v4: &str, aliases: &[&str]) -> gw::Event {
    fixture::event(
        kind,
        O::Endpoint(fixture::endpoint(id, net, sb, v4, "", aliases)),
    )
}

fn found(s: &Snapshot, asker: &str, name: &str) -> Vec<(String, String)> {
    match s.lookup(Asker::Sandbox(asker), name) {
        Local::Found(ts) => ts
            .iter()
            .map(|t| (t.sandbox_name.clone(), t.network_name.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

fn ptr_name(s: &Snapshot, asker: &str, ip: &str) -> Option<String> {
    match s.lookup_ptr(Asker::Sandbox(asker), ip.parse().unwrap()) {
        Local::Found(ts) => Some(format!("{}.{}", ts[0].sandbox_name, ts[0].network_name)),
        _ => None,
    }
}

#[test]
fn remove_rename_and_re_add_are_seen_at_once_and_old_snapshots_stay_whole() {
    let mut live = Live::default();
    let mut st = State::default();
    for ev in [
        net("nb", "backend", "10.1.0.0/24"),
        sandbox("sc", "client"),
        sandbox("sw", "web"),
        ep(K::EndpointConnected, "e1", "nb", "sc", "10.1.0.2/24", &[]),
        ep(
            K::EndpointConnected,
            "e2",
            "nb",
            "sw",
            "10.1.0.3/24",
            &["api"],
        ),
    ] {
        st.apply(&ev);
    }
    live.replace(st);
    let first = live.publish(true);
    assert_eq!(
        found(&first, "sc", "web"),
        [("web".into(), "backend".into())]
    );

    // Remove: the endpoint goes, its names and its address with it.
    live.apply(&ep(
        K::EndpointDisconnected,
        "e2",
        "nb",
        "sw",
        "10.1.0.3/24",
        &["api"],
    ));
    let removed = live.publish(true);
    assert!(found(&removed, "sc", "web").is_empty());
    assert!(found(&removed, "sc", "api").is_empty());
    assert_eq!(ptr_name(&removed, "sc", "10.1.0.3"), None);

    // Rename the sandbox and the network, then re-add the endpoint with another alias.
    live.apply(&sandbox("sw", "www"));
    live.apply(&fixture::event(
        K::NetworkUpdated,
        O::Network(fixture::network("nb", "back", "10.1.0.0/24", false)),
    ));
    live.apply(&ep(
        K::EndpointConnected,
        "e2",
        "nb",
        "sw",
        "10.1.0.3/24",
        &["edge"],
    ));
    let readded = live.publish(true);
    assert!(found(&readded, "sc", "web").is_empty());
    assert_eq!(
        found(&readded, "sc", "www"),
        [("www".into(), "back".into())]
    );
    assert_eq!(
        found(&readded, "sc", "edge.back"),
        [("www".into(), "back".into())]
    );
    assert!(found(&readded, "sc", "www.backend").is_empty());
    assert_eq!(
        found(&readded, "sc", "client"),
        [("client".into(), "back".into())]
    );
    assert_eq!(
        ptr_name(&readded, "sc", "10.1.0.3").as_deref(),
        Some("www.back")
    );
    assert_eq!(
        dump(&readded),
        dump(&Snapshot::build(live.state(), true)),
        "the same index as a whole rebuild"
    );

    // What readers loaded before still answers as it did.
    assert_eq!(
        found(&first, "sc", "web"),
        [("web".into(), "backend".into())]
    );
    assert_eq!(
        found(&first, "sc", "api"),
        [("web".into(), "backend".into())]
    );
    assert_eq!(
        ptr_name(&first, "sc", "10.1.0.3").as_deref(),
        Some("web.backend")
    );
    assert!(found(&removed, "sc", "web").is_empty());

    // The sandbox removed with an endpoint still attached: nothing of it stays.
    live.apply(&fixture::event(
        K::SandboxRemoved,
        O::Sandbox(fixture::sandbox("sw", "www", "", "")),
    ));
    let gone = live.publish(true);
    assert!(found(&gone, "sc", "www").is_empty());
    assert!(found(&gone, "sc", "edge").is_empty());
    assert_eq!(ptr_name(&gone, "sc", "10.1.0.3"), None);
    assert!(gone.sandboxes.get("sw").is_none());
    let changed: BTreeSet<String> = gone
        .sandboxes_changed_since(first.journal_mark())
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(changed, BTreeSet::from(["sw".to_owned()]));
}

#[test]
fn a_relist_starts_a_new_journal_epoch() {
    let mut live = Live::default();
    live.replace(State::default());
    let a = live.publish(true);
    live.replace(State::default());
    let b = live.publish(true);
    assert!(b.sandboxes_changed_since(a.journal_mark()).is_none());
    assert!(b.sandboxes_changed_since(b.journal_mark()).is_some());
}
