//! The record model: gateway objects in, an immutable name index out.
//!
//! [`State`] is the mutable mirror of the gateway's networks, sandboxes and endpoints that the
//! event ingester keeps; [`Snapshot`] is the read-only index over it, swapped in whole, so a
//! query never waits for an update (aardvark-dns does the same with `ArcSwap`). Its maps are
//! persistent: [`Live`] (in `index`) makes the next snapshot from the last one by changing only
//! what the events touched, sharing the rest, so a change costs what it touches (and a
//! logarithm of the world's size), not the world; [`Snapshot::build`] builds one whole (a
//! relist, and the reference the incremental path is tested against).
//!
//! Scoping follows Docker's embedded DNS: a sandbox sees the names (sandbox name, aliases,
//! hostname, short container id) of endpoints on the networks it is on, and `<name>.<network>`
//! for those networks; nothing of other networks.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

// Queries look names up in these maps; foldhash (randomly seeded) hashes a short name several
// times faster than the standard SipHash (`bench/dns.sh`).
use foldhash::HashMap;

use weft_proto::gateway::v1 as gw;

/// How a name matched an endpoint (the `matched_as` of the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Name,
    Alias,
    Hostname,
    ContainerId,
    Ptr,
}

impl MatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Alias => "alias",
            Self::Hostname => "hostname",
            Self::ContainerId => "container_id",
            Self::Ptr => "ptr",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRec {
    pub id: String,
    pub name: String,
    pub internal: bool,
    /// Whether its members resolve each other by name: not on the predefined `bridge`
    /// network (Docker's default bridge has no embedded name resolution).
    pub resolves_names: bool,
    pub dns_servers: Vec<String>,
    /// Subnets in use: reverse lookups inside them are answered here, never forwarded.
    pub subnets: Vec<(IpAddr, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRec {
    pub id: String,
    pub name: String,
    pub container_id: String,
    pub host: String,
    pub netns_path: String,
    pub hostname: String,
    pub network_mode: String,
    pub dns_servers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRec {
    pub id: String,
    pub network_id: String,
    pub sandbox_id: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub aliases: Vec<String>,
    /// Arrival order: a sandbox's networks are considered in attach order.
    pub seq: u64,
}

/// `"10.0.0.7/24"` or `"10.0.0.7"` → the address; anything else → `None`.
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    if s.is_empty() {
        return None;
    }
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = a.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if p.is_empty() { max } else { p.parse().ok()? };
    (len <= max).then_some((ip, len))
}

fn in_subnet(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl From<&gw::Network> for NetworkRec {
    fn from(n: &gw::Network) -> Self {
        Self {
            id: n.id.clone(),
            name: n.name.clone(),
            internal: n.internal,
            resolves_names: !(n.predefined && n.name == "bridge"),
            dns_servers: n.dns_servers.clone(),
            subnets: n
                .ipam
                .iter()
                .flat_map(|i| &i.configs)
                .filter_map(|c| parse_cidr(&c.subnet))
                .collect(),
        }
    }
}

impl From<&gw::Sandbox> for SandboxRec {
    fn from(s: &gw::Sandbox) -> Self {
        Self {
            id: s.id.clone(),
            name: s.name.clone(),
            container_id: s.container_id.clone(),
            host: s.host.clone(),
            netns_path: s.netns_path.clone(),
            hostname: s.hostname.clone(),
            network_mode: s.network_mode.clone(),
            dns_servers: s
                .dns
                .as_ref()
                .map(|d| d.servers.clone())
                .unwrap_or_default(),
        }
    }
}

impl EndpointRec {
    fn from_pb(e: &gw::Endpoint, seq: u64) -> Self {
        let v4 = match parse_cidr(&e.ipv4_address) {
            Some((IpAddr::V4(a), _)) => Some(a),
            _ => None,
        };
        let v6 = match parse_cidr(&e.ipv6_address) {
            Some((IpAddr::V6(a), _)) => Some(a),
            _ => None,
        };
        Self {
            id: e.id.clone(),
            network_id: e.network_id.clone(),
            sandbox_id: e.sandbox_id.clone(),
            v4,
            v6,
            aliases: e.aliases.clone(),
            seq,
        }
    }
}

/// The mutable mirror of the gateway's objects, fed event by event.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub revision: u64,
    pub networks: BTreeMap<String, NetworkRec>,
    pub sandboxes: BTreeMap<String, SandboxRec>,
    pub endpoints: BTreeMap<String, EndpointRec>,
    next_seq: u64,
    /// Sandbox id → the ids of its endpoints, and the same by network: a change to a sandbox or
    /// a network finds its endpoints without reading every endpoint.
    by_sandbox: BTreeMap<String, BTreeSet<String>>,
    by_network: BTreeMap<String, BTreeSet<String>>,
}

/// The ids of what events changed in a [`State`] since the index last caught up with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub networks: BTreeSet<String>,
    pub sandboxes: BTreeSet<String>,
    pub endpoints: BTreeSet<String>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.sandboxes.is_empty() && self.endpoints.is_empty()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

fn unlink(map: &mut BTreeMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl State {
    /// Applies one event; returns whether it changed anything DNS cares about.
    pub fn apply(&mut self, ev: &gw::Event) -> bool {
        self.apply_noting(ev, &mut Touched::default())
    }

    /// [`Self::apply`], noting in `touched` the ids of what changed.
    pub fn apply_noting(&mut self, ev: &gw::Event, touched: &mut Touched) -> bool {
        use gw::{EventKind as K, event::Object as O};
        // A scoped watch (`scope_host`): what comes into scope is taken as if created, what
        // leaves it as if removed (a network with every endpoint on it).
        let kind = match (K::try_from(ev.kind).unwrap_or(K::Unspecified), &ev.object) {
            (K::ScopeEntered, Some(O::Network(_))) => K::NetworkCreated,
            (K::ScopeEntered, Some(O::Sandbox(_))) => K::SandboxCreated,
            (K::ScopeEntered, Some(O::Endpoint(_))) => K::EndpointConnected,
            (K::ScopeLeft, Some(O::Sandbox(_))) => K::SandboxRemoved,
            (K::ScopeLeft, Some(O::Endpoint(_))) => K::EndpointDisconnected,
            (k, _) => k,
        };
        let changed = match (kind, ev.object.as_ref()) {
            (K::ScopeLeft, Some(O::Network(n))) => {
                for id in self.by_network.remove(&n.id).unwrap_or_default() {
                    if let Some(e) = self.endpoints.remove(&id) {
                        unlink(&mut self.by_sandbox, &e.sandbox_id, &id);
                    }
                    touched.endpoints.insert(id);
                }
                self.networks.remove(&n.id).is_some()
            }
            (K::NetworkCreated | K::NetworkUpdated, Some(O::Network(n))) => {
                let rec = NetworkRec::from(n);
                self.networks.insert(n.id.clone(), rec.clone()) != Some(rec)
            }
            (K::NetworkRemoved, Some(O::Network(n))) => self.networks.remove(&n.id).is_some(),
            (K::SandboxCreated, Some(O::Sandbox(s))) => {
                let rec = SandboxRec::from(s);
                self.sandboxes.insert(s.id.clone(), rec.clone()) != Some(rec)
            }
            (K::SandboxRemoved, Some(O::Sandbox(s))) => {
                // Endpoints normally go first; drop stragglers so no name outlives its sandbox.
                for id in self.by_sandbox.remove(&s.id).unwrap_or_default() {
                    if let Some(e) = self.endpoints.remove(&id) {
                        unlink(&mut self.by_network, &e.network_id, &id);
                    }
                    touched.endpoints.insert(id);
                }
                self.sandboxes.remove(&s.id).is_some()
            }
            // Its host has been down past the gateway's grace: its names stop resolving until
            // it comes back (an ENDPOINT_UPDATED without host_down).
            (K::EndpointConnected | K::EndpointUpdated, Some(O::Endpoint(e))) if e.host_down => {
                match self.endpoints.remove(&e.id) {
                    Some(old) => {
                        unlink(&mut self.by_sandbox, &old.sandbox_id, &e.id);
                        unlink(&mut self.by_network, &old.network_id, &e.id);
                        true
                    }
                    None => false,
                }
            }
            (K::EndpointConnected | K::EndpointUpdated, Some(O::Endpoint(e))) => {
                let seq = self.endpoints.get(&e.id).map_or_else(
                    || {
                        self.next_seq += 1;
                        self.next_seq
                    },
                    |old| old.seq,
                );
                let rec = EndpointRec::from_pb(e, seq);
                self.by_sandbox
                    .entry(rec.sandbox_id.clone())
                    .or_default()
                    .insert(e.id.clone());
                self.by_network
                    .entry(rec.network_id.clone())
                    .or_default()
                    .insert(e.id.clone());
                match self.endpoints.insert(e.id.clone(), rec.clone()) {
                    Some(old) if old == rec => false,
                    Some(old) => {
                        if old.sandbox_id != rec.sandbox_id {
                            unlink(&mut self.by_sandbox, &old.sandbox_id, &e.id);
                        }
                        if old.network_id != rec.network_id {
                            unlink(&mut self.by_network, &old.network_id, &e.id);
                        }
                        true
                    }
                    None => true,
                }
            }
            (K::EndpointDisconnected, Some(O::Endpoint(e))) => match self.endpoints.remove(&e.id) {
                Some(old) => {
                    unlink(&mut self.by_sandbox, &old.sandbox_id, &e.id);
                    unlink(&mut self.by_network, &old.network_id, &e.id);
                    true
                }
                None => false,
            },
            _ => false,
        };
        if changed {
            match ev.object.as_ref() {
                Some(O::Network(n)) => touched.networks.insert(n.id.clone()),
                Some(O::Sandbox(s)) => touched.sandboxes.insert(s.id.clone()),
                Some(O::Endpoint(e)) => touched.endpoints.insert(e.id.clone()),
                _ => false,
            };
        }
        changed
    }

    /// The ids of the endpoints of sandbox `id`.
    pub fn endpoints_of_sandbox(&self, id: &str) -> impl Iterator<Item = &String> {
        self.by_sandbox.get(id).into_iter().flatten()
    }

    /// The ids of the endpoints on network `id`.
    pub fn endpoints_on_network(&self, id: &str) -> impl Iterator<Item = &String> {
        self.by_network.get(id).into_iter().flatten()
    }

    /// The networks sandbox `id` has an endpoint on, in attach order: what its
    /// [`SandboxView::networks`] holds.
    fn networks_of(&self, id: &str) -> Vec<String> {
        let mut eps: Vec<&EndpointRec> = self
            .endpoints_of_sandbox(id)
            .filter_map(|e| self.endpoints.get(e))
            .collect();
        eps.sort_by_key(|e| e.seq);
        let mut out: Vec<String> = Vec::new();
        for e in eps {
            if self.networks.contains_key(&e.network_id) && !out.contains(&e.network_id) {
                out.push(e.network_id.clone());
            }
        }
        out
    }
}

/// One endpoint a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub network_id: String,
    pub network_name: String,
    pub endpoint_id: String,
    pub sandbox_id: String,
    pub sandbox_name: String,
    pub matched_as: MatchKind,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// What the records say about a name, for one asker (borrowing from the snapshot: a lookup
/// copies nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local<'s> {
    /// Weft names matched (maybe none with an address of the asked family).
    Found(Vec<&'s Target>),
    /// Under a network the asker is on (or the operator zone) but no such name: NXDOMAIN.
    NxDomain { network_id: Option<&'s str> },
    /// Not a Weft name: forward it if the asker may.
    NotOurs,
}

/// Who asks: a sandbox (by id) through its own listener, or the operator listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker<'a> {
    Sandbox(&'a str),
    Operator,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxView {
    pub rec: Option<SandboxRec>,
    /// Networks the sandbox has an endpoint on, in attach order.
    pub networks: Vec<String>,
}

/// The snapshot's maps: persistent (a copy shares everything it does not change, so the next
/// snapshot costs what the change touches, not the size of the world), hashed with foldhash
/// (randomly seeded; several times faster than SipHash on a short name).
pub type Map<K, V> =
    imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

/// One endpoint a name (or an address) names, in the order endpoints were attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The endpoint's arrival order ([`EndpointRec::seq`]): a list is kept sorted by it.
    seq: u64,
    target: Arc<Target>,
}

/// Everything a name names on one network (or an address anywhere); replaced whole on change.
type Hits = Arc<[Hit]>;

/// The immutable name index of one gateway revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: u64,
    /// False until the first complete list from the gateway has arrived.
    pub synced: bool,
    pub networks: Map<String, Arc<NetworkRec>>,
    net_by_name: Map<String, String>,
    pub sandboxes: Map<String, Arc<SandboxView>>,
    /// Network id → name (lowercase, no trailing dot) → the endpoints it names there.
    names: Map<String, Map<String, Hits>>,
    ptr: Map<IpAddr, Hits>,
    /// Which sandboxes' records changed, for the listeners ([`Self::sandboxes_changed_since`]).
    journal: Journal,
}

/// The sandboxes whose record changed, in order, so that the listener manager reconciles what
/// changed since the snapshot it last saw instead of every sandbox. Bounded: the oldest half is
/// dropped past [`JOURNAL_MIN`] entries (or twice the number of sandboxes, if more), and whoever
/// is further behind reconciles everything once, which past that many changes costs no more
/// per change than reading them would have.
#[derive(Debug, Clone, Default)]
struct Journal {
    /// Changes when the index is rebuilt whole (a relist): marks of another epoch are stale.
    epoch: u64,
    /// The position of `ids[0]` since the epoch began.
    start: u64,
    ids: imbl::Vector<String>,
}

/// The journal keeps at least this many changes.
const JOURNAL_MIN: usize = 4096;

/// Where a reader stands in a snapshot's journal of sandbox changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalMark {
    epoch: u64,
    at: u64,
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// [`norm`], copying only when there is something to change.
fn norm_cow(name: &str) -> Cow<'_, str> {
    let name = name.trim_end_matches('.');
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The names endpoint `e` of sandbox `sb` goes by on its network, each once (the first way it
/// matches wins): the sandbox name, the endpoint's aliases, the hostname, the short container
/// id.
fn endpoint_keys(sb: &SandboxRec, e: &EndpointRec) -> Vec<(String, MatchKind)> {
    let mut keys: Vec<(String, MatchKind)> = vec![(norm(&sb.name), MatchKind::Name)];
    keys.extend(e.aliases.iter().map(|a| (norm(a), MatchKind::Alias)));
    keys.push((norm(&sb.hostname), MatchKind::Hostname));
    if let Some(short) = sb.container_id.get(..12)
        && sb.container_id.len() >= 12
    {
        keys.push((norm(short), MatchKind::ContainerId));
    }
    let mut out: Vec<(String, MatchKind)> = Vec::with_capacity(keys.len());
    for (key, kind) in keys {
        if !key.is_empty() && !out.iter().any(|(k, _)| *k == key) {
            out.push((key, kind));
        }
    }
    out
}

/// The addresses endpoint `e` answers reverse lookups for.
fn endpoint_ips(e: &EndpointRec) -> Vec<IpAddr> {
    [e.v4.map(IpAddr::V4), e.v6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
        .collect()
}

fn target(net: &NetworkRec, sb: &SandboxRec, e: &EndpointRec, matched_as: MatchKind) -> Target {
    Target {
        network_id: net.id.clone(),
        network_name: net.name.clone(),
        endpoint_id: e.id.clone(),
        sandbox_id: sb.id.clone(),
        sandbox_name: sb.name.clone(),
        matched_as,
        v4: e.v4,
        v6: e.v6,
    }
}

impl Snapshot {
    /// The index of `state`, built whole (at start, and when a relist replaces everything).
    pub fn build(state: &State, synced: bool) -> Self {
        let mut snap = Self {
            revision: state.revision,
            synced,
            networks: state
                .networks
                .iter()
                .map(|(id, n)| (id.clone(), Arc::new(n.clone())))
                .collect(),
            ..Self::default()
        };
        for n in state.networks.values() {
            snap.net_by_name.insert(norm(&n.name), n.id.clone());
        }
        let mut views: BTreeMap<&str, SandboxView> = state
            .sandboxes
            .values()
            .map(|s| {
                (
                    s.id.as_str(),
                    SandboxView {
                        rec: Some(s.clone()),
                        networks: Vec::new(),
                    },
                )
            })
            .collect();
        let mut names: HashMap<&str, HashMap<String, Vec<Hit>>> = HashMap::default();
        let mut ptr: HashMap<IpAddr, Vec<Hit>> = HashMap::default();
        let mut eps: Vec<&EndpointRec> = state.endpoints.values().collect();
        eps.sort_by_key(|e| e.seq);
        for e in eps {
            let (Some(net), Some(sb)) = (
                state.networks.get(&e.network_id),
                state.sandboxes.get(&e.sandbox_id),
            ) else {
                continue;
            };
            if let Some(v) = views.get_mut(sb.id.as_str())
                && !v.networks.contains(&net.id)
            {
                v.networks.push(net.id.clone());
            }
            let hit = |kind| Hit {
                seq: e.seq,
                target: Arc::new(target(net, sb, e, kind)),
            };
            for (key, kind) in endpoint_keys(sb, e) {
                names
                    .entry(&net.id)
                    .or_default()
                    .entry(key)
                    .or_default()
                    .push(hit(kind));
            }
            for ip in endpoint_ips(e) {
                ptr.entry(ip).or_default().push(hit(MatchKind::Ptr));
            }
        }
        snap.sandboxes = views
            .into_iter()
            .map(|(id, v)| (id.to_owned(), Arc::new(v)))
            .collect();
        snap.names = names
            .into_iter()
            .map(|(net, m)| {
                (
                    net.to_owned(),
                    m.into_iter().map(|(k, v)| (k, Hits::from(v))).collect(),
                )
            })
            .collect();
        snap.ptr = ptr.into_iter().map(|(k, v)| (k, Hits::from(v))).collect();
        snap
    }

    /// Where the journal of sandbox changes ends in this snapshot.
    pub fn journal_mark(&self) -> JournalMark {
        JournalMark {
            epoch: self.journal.epoch,
            at: self.journal.start + self.journal.ids.len() as u64,
        }
    }

    /// The ids of the sandboxes whose record changed after `mark` (maybe repeated), or `None`
    /// when this snapshot cannot tell (rebuilt since, or `mark` is older than the journal
    /// keeps): then every sandbox may have changed.
    pub fn sandboxes_changed_since(&self, mark: JournalMark) -> Option<imbl::Vector<String>> {
        let j = &self.journal;
        let end = j.start + j.ids.len() as u64;
        if mark.epoch != j.epoch || mark.at < j.start || mark.at > end {
            return None;
        }
        Some(j.ids.skip(usize::try_from(mark.at - j.start).ok()?))
    }

    /// The sandbox with this id, unique id prefix or name.
    pub fn find_sandbox(&self, key: &str) -> Result<&SandboxView, FindError> {
        if key.is_empty() {
            return Err(FindError::NotFound);
        }
        if let Some(v) = self
            .sandboxes
            .values()
            .find(|v| v.rec.as_ref().is_some_and(|r| r.name == key))
        {
            return Ok(v);
        }
        if let Some(v) = self.sandboxes.get(key) {
            return Ok(v);
        }
        let mut hits = self.sandboxes.iter().filter(|(id, _)| id.starts_with(key));
        match (hits.next(), hits.next()) {
            (Some((_, v)), None) => Ok(v),
            (Some(_), Some(_)) => Err(FindError::Ambiguous),
            _ => Err(FindError::NotFound),
        }
    }

    pub fn network_by_name(&self, name: &str) -> Option<&NetworkRec> {
        self.net_by_name
            .get(&norm(name))
            .and_then(|id| self.networks.get(id))
            .map(|n| &**n)
    }

    /// The networks the asker is on, in attach order (none for the operator, which is on no
    /// network but sees them all).
    fn member_networks(&self, asker: Asker<'_>) -> &[String] {
        match asker {
            Asker::Operator => &[],
            Asker::Sandbox(id) => self.sandboxes.get(id).map_or(&[], |v| &v.networks),
        }
    }

    /// Whether the asker sees the names of `net`: the operator sees every network, a sandbox
    /// those it is on, except the default bridge.
    fn sees(asker: Asker<'_>, member: &[String], net: &NetworkRec) -> bool {
        match asker {
            Asker::Operator => true,
            Asker::Sandbox(_) => net.resolves_names && member.contains(&net.id),
        }
    }

    /// The endpoints `name` (normalized) names on network `net_id`.
    fn in_network(&self, net_id: &str, name: &str) -> impl Iterator<Item = &Target> {
        self.names
            .get(net_id)
            .and_then(|names| names.get(name))
            .map_or(&[][..], |hits| &hits[..])
            .iter()
            .map(|h| &*h.target)
    }

    /// Looks a name up for `asker`. For the operator, `name` is relative to the zone (the zone
    /// suffix already removed) and must be `<name>.<network>`.
    pub fn lookup(&self, asker: Asker<'_>, name: &str) -> Local<'_> {
        let name = norm_cow(name);
        let member = self.member_networks(asker);
        let mut found = Vec::new();
        for net in member.iter().filter_map(|id| self.networks.get(id)) {
            if Self::sees(asker, member, net) {
                found.extend(self.in_network(&net.id, &name));
            }
        }
        if !found.is_empty() {
            return Local::Found(found);
        }
        // `<name>.<network>`; network names may contain dots: try every split, the longest
        // network name first.
        for (i, _) in name.match_indices('.') {
            let (prefix, suffix) = (&name[..i], &name[i + 1..]);
            let Some(net) = self
                .net_by_name
                .get(suffix)
                .and_then(|id| self.networks.get(id))
            else {
                continue;
            };
            if Self::sees(asker, member, net) {
                found.extend(self.in_network(&net.id, prefix));
                return if found.is_empty() {
                    Local::NxDomain {
                        network_id: Some(&net.id),
                    }
                } else {
                    Local::Found(found)
                };
            }
        }
        match asker {
            Asker::Operator => Local::NxDomain { network_id: None },
            Asker::Sandbox(_) => Local::NotOurs,
        }
    }

    /// Reverse lookup of `ip` for `asker`: endpoints on networks it sees; NXDOMAIN inside the
    /// subnets of those networks; otherwise not ours.
    pub fn lookup_ptr(&self, asker: Asker<'_>, ip: IpAddr) -> Local<'_> {
        let member = self.member_networks(asker);
        let sees = |net_id: &str| {
            self.networks
                .get(net_id)
                .is_some_and(|n| Self::sees(asker, member, n))
        };
        let found: Vec<&Target> = self
            .ptr
            .get(&ip)
            .map(|hits| {
                hits.iter()
                    .map(|h| &*h.target)
                    .filter(|t| sees(&t.network_id))
                    .collect()
            })
            .unwrap_or_default();
        if !found.is_empty() {
            return Local::Found(found);
        }
        let inside = |n: &&Arc<NetworkRec>| {
            Self::sees(asker, member, n) && n.subnets.iter().any(|s| in_subnet(ip, *s))
        };
        let net = match asker {
            Asker::Operator => self.networks.values().find(inside),
            Asker::Sandbox(_) => member
                .iter()
                .filter_map(|id| self.networks.get(id))
                .find(inside),
        };
        match net {
            Some(n) => Local::NxDomain {
                network_id: Some(&n.id),
            },
            None if asker == Asker::Operator => Local::NxDomain { network_id: None },
            None => Local::NotOurs,
        }
    }

    /// Whether names that are not Weft's may be forwarded for this sandbox: only when it is on
    /// at least one network that is not internal (Docker's rule).
    pub fn may_forward(&self, sandbox_id: &str) -> bool {
        self.member_networks(Asker::Sandbox(sandbox_id))
            .iter()
            .filter_map(|id| self.networks.get(id))
            .any(|n| !n.internal)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    #[error("no such sandbox on this host")]
    NotFound,
    #[error("ambiguous sandbox id prefix")]
    Ambiguous,
}

mod index;
pub use index::Live;

#[cfg(test)]
mod tests;
