//! The record model: gateway objects in, an immutable name index out.
//!
//! [`State`] is the mutable mirror of the gateway's networks, sandboxes and endpoints that the
//! event ingester keeps; [`Snapshot`] is the read-only index built from it and swapped in whole,
//! so a query never waits for an update (aardvark-dns does the same with `ArcSwap`).
//!
//! Scoping follows Docker's embedded DNS: a sandbox sees the names (sandbox name, aliases,
//! hostname, short container id) of endpoints on the networks it is on, and `<name>.<network>`
//! for those networks; nothing of other networks.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
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
}

impl State {
    /// Applies one event; returns whether it changed anything DNS cares about.
    pub fn apply(&mut self, ev: &gw::Event) -> bool {
        use gw::{EventKind as K, event::Object as O};
        let kind = K::try_from(ev.kind).unwrap_or(K::Unspecified);
        match (kind, ev.object.as_ref()) {
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
                self.endpoints.retain(|_, e| e.sandbox_id != s.id);
                self.sandboxes.remove(&s.id).is_some()
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
                self.endpoints.insert(e.id.clone(), rec.clone()) != Some(rec)
            }
            (K::EndpointDisconnected, Some(O::Endpoint(e))) => {
                self.endpoints.remove(&e.id).is_some()
            }
            _ => false,
        }
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

#[derive(Debug, Clone, Default)]
pub struct SandboxView {
    pub rec: Option<SandboxRec>,
    /// Networks the sandbox has an endpoint on, in attach order.
    pub networks: Vec<String>,
}

/// The immutable name index of one gateway revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: u64,
    /// False until the first complete list from the gateway has arrived.
    pub synced: bool,
    pub networks: HashMap<String, NetworkRec>,
    net_by_name: HashMap<String, String>,
    pub sandboxes: HashMap<String, SandboxView>,
    /// Network id → name (lowercase, no trailing dot) → the endpoints it names there.
    names: HashMap<String, HashMap<String, Vec<Target>>>,
    ptr: HashMap<IpAddr, Vec<Target>>,
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

impl Snapshot {
    pub fn build(state: &State, synced: bool) -> Self {
        let mut snap = Self {
            revision: state.revision,
            synced,
            networks: state.networks.clone().into_iter().collect(),
            ..Self::default()
        };
        for n in state.networks.values() {
            snap.net_by_name.insert(norm(&n.name), n.id.clone());
        }
        for s in state.sandboxes.values() {
            snap.sandboxes.insert(
                s.id.clone(),
                SandboxView {
                    rec: Some(s.clone()),
                    networks: Vec::new(),
                },
            );
        }
        let mut eps: Vec<&EndpointRec> = state.endpoints.values().collect();
        eps.sort_by_key(|e| e.seq);
        for e in eps {
            let (Some(net), Some(sb)) = (
                state.networks.get(&e.network_id),
                state.sandboxes.get(&e.sandbox_id),
            ) else {
                continue;
            };
            if let Some(v) = snap.sandboxes.get_mut(&sb.id)
                && !v.networks.contains(&net.id)
            {
                v.networks.push(net.id.clone());
            }
            let target = |matched_as| Target {
                network_id: net.id.clone(),
                network_name: net.name.clone(),
                endpoint_id: e.id.clone(),
                sandbox_id: sb.id.clone(),
                sandbox_name: sb.name.clone(),
                matched_as,
                v4: e.v4,
                v6: e.v6,
            };
            let mut keys: Vec<(String, MatchKind)> = vec![(norm(&sb.name), MatchKind::Name)];
            keys.extend(e.aliases.iter().map(|a| (norm(a), MatchKind::Alias)));
            keys.push((norm(&sb.hostname), MatchKind::Hostname));
            if sb.container_id.len() >= 12 {
                keys.push((norm(&sb.container_id[..12]), MatchKind::ContainerId));
            }
            let mut seen = Vec::new();
            for (key, kind) in keys {
                if key.is_empty() || seen.contains(&key) {
                    continue;
                }
                seen.push(key.clone());
                snap.names
                    .entry(net.id.clone())
                    .or_default()
                    .entry(key)
                    .or_default()
                    .push(target(kind));
            }
            for ip in [e.v4.map(IpAddr::V4), e.v6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                snap.ptr.entry(ip).or_default().push(target(MatchKind::Ptr));
            }
        }
        snap
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
    fn in_network(&self, net_id: &str, name: &str) -> &[Target] {
        self.names
            .get(net_id)
            .and_then(|names| names.get(name))
            .map_or(&[], Vec::as_slice)
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
            .map(|ts| ts.iter().filter(|t| sees(&t.network_id)).collect())
            .unwrap_or_default();
        if !found.is_empty() {
            return Local::Found(found);
        }
        let inside = |n: &&NetworkRec| {
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

#[cfg(test)]
mod tests;
