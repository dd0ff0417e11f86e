//! The decision for one query: Weft's records, or forwarding, or neither, with the reasons.
//!
//! Both the DNS listeners and the admin `Resolve` call come through here, so what `Resolve`
//! explains is exactly what a client gets, and both count in the stats alike.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::ResponseCode,
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, PTR},
    },
};

use crate::{
    forward::{Forwarder, MAX_UPSTREAMS, Via, parse_upstream},
    records::{Asker, Local, Snapshot, Target},
    stats::{QueryRecord, Stats},
};

/// TTL of Weft's own answers. Zero: clients and caches ask again every time, so a container that
/// moved or was disconnected is seen at once; the answers are cheap (one in-memory lookup).
pub const LOCAL_TTL: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Local,
    Forwarded,
    NotForwarded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Sandbox,
    Network(String),
    Host,
}

/// The answer to one query and why.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    pub source: Source,
    pub matches: Vec<Target>,
    pub upstream: Option<SocketAddr>,
    pub origin: Option<Origin>,
    pub failed_upstreams: Vec<(SocketAddr, String)>,
    pub steps: Vec<String>,
    pub revision: u64,
}

impl Outcome {
    fn new(revision: u64) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            source: Source::NotForwarded,
            matches: Vec::new(),
            upstream: None,
            origin: None,
            failed_upstreams: Vec::new(),
            steps: Vec::new(),
            revision,
        }
    }

    fn step(&mut self, s: impl Into<String>) {
        self.steps.push(s.into());
    }
}

/// What Weft's records decide for one query (see [`Resolver::decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'s> {
    /// The first list from the gateway has not arrived yet: SERVFAIL.
    NotSynced,
    /// The asking sandbox is no longer in the records: REFUSED.
    SandboxGone,
    /// The operator zone's apex: it exists and has no records.
    Apex,
    /// Not under the operator zone (the operator listener forwards nothing): REFUSED.
    OutsideZone,
    /// Weft names, rotated (maybe none with an address of the asked family: NOERROR, empty).
    Found(Vec<&'s Target>),
    /// No such name under a network the asker sees (its id), or under the operator zone.
    NxDomain(Option<&'s str>),
    /// Not Weft's: a sandbox's query goes to its upstreams.
    Forward,
}

impl Decision<'_> {
    /// The response code of a local answer (forwarding decides its own).
    pub fn rcode(&self) -> ResponseCode {
        match self {
            Self::NotSynced => ResponseCode::ServFail,
            Self::SandboxGone | Self::OutsideZone | Self::Forward => ResponseCode::Refused,
            Self::Apex | Self::Found(_) => ResponseCode::NoError,
            Self::NxDomain(_) => ResponseCode::NXDomain,
        }
    }

    /// Whether Weft answers with authority: for its own names and their absence.
    pub fn authoritative(&self) -> bool {
        matches!(self, Self::Apex | Self::Found(_) | Self::NxDomain(_))
    }

    /// The network the query is counted against.
    pub fn network(&self) -> Option<&str> {
        match self {
            Self::Found(targets) => targets.first().map(|t| t.network_id.as_str()),
            Self::NxDomain(network_id) => *network_id,
            _ => None,
        }
    }
}

/// One query as the resolver sees it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The asking sandbox's id; `None` for the operator listener.
    pub sandbox_id: Option<&'a str>,
    pub name: &'a Name,
    pub qtype: RecordType,
    pub local_only: bool,
    pub tcp: bool,
}

#[derive(Debug)]
pub struct Resolver {
    snapshot: Arc<ArcSwap<Snapshot>>,
    forwarder: Forwarder,
    /// The host's upstreams; replaced whole when the host's resolv.conf changes.
    host_upstreams: ArcSwap<Vec<SocketAddr>>,
    /// The operator zone, lowercase, no trailing dot ("weft").
    zone: String,
    pub stats: Stats,
    rotation: AtomicUsize,
    /// The most a UDP answer may take (see [`crate::wire::DEFAULT_UDP_MAX`]).
    udp_max: u16,
}

impl Resolver {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        forwarder: Forwarder,
        host_upstreams: Vec<SocketAddr>,
        zone: &str,
    ) -> Self {
        Self {
            snapshot,
            forwarder,
            host_upstreams: ArcSwap::from_pointee(host_upstreams),
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
            stats: Stats::default(),
            rotation: AtomicUsize::new(0),
            udp_max: crate::wire::DEFAULT_UDP_MAX,
        }
    }

    /// Caps UDP answers at `max` bytes (at least 512) instead of the default 1232.
    #[must_use]
    pub fn with_udp_max(mut self, max: u16) -> Self {
        self.udp_max = max.max(crate::wire::MIN_UDP_MAX);
        self
    }

    /// The most a UDP answer may take.
    pub fn udp_max(&self) -> u16 {
        self.udp_max
    }

    pub fn host_upstreams(&self) -> Arc<Vec<SocketAddr>> {
        self.host_upstreams.load_full()
    }

    pub fn set_host_upstreams(&self, upstreams: Vec<SocketAddr>) {
        self.host_upstreams.store(Arc::new(upstreams));
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The current snapshot, for the length of one query (cheaper than [`Self::snapshot`]).
    pub fn snapshot_ref(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// What Weft's own records say about one query, from `snap`; builds no string and copies
    /// nothing, so that the DNS fast path ([`crate::handler::DnsHandler::answer_fast`]) can answer from it directly.
    /// `qname` is lowercase without the trailing dot; `ptr_ip` the address of a PTR query's
    /// `in-addr.arpa`/`ip6.arpa` name.
    pub fn decide<'s>(
        &self,
        snap: &'s Snapshot,
        sandbox_id: Option<&str>,
        qname: &str,
        ptr_ip: Option<IpAddr>,
    ) -> Decision<'s> {
        if !snap.synced {
            return Decision::NotSynced;
        }
        let asker = match sandbox_id {
            None => Asker::Operator,
            Some(id) if snap.sandboxes.contains_key(id) => Asker::Sandbox(id),
            Some(_) => return Decision::SandboxGone,
        };
        let local = match (asker, ptr_ip) {
            (_, Some(ip)) => snap.lookup_ptr(asker, ip),
            (Asker::Operator, None) => {
                if qname == self.zone {
                    return Decision::Apex;
                }
                match qname
                    .strip_suffix(self.zone.as_str())
                    .and_then(|rel| rel.strip_suffix('.'))
                {
                    Some(rel) => snap.lookup(asker, rel),
                    None => return Decision::OutsideZone,
                }
            }
            (Asker::Sandbox(_), None) => snap.lookup(asker, qname),
        };
        match local {
            Local::Found(mut targets) => {
                // Rotated per query so that clients taking the first address spread the load.
                let k = self.rotation.fetch_add(1, Relaxed) % targets.len();
                targets.rotate_left(k);
                Decision::Found(targets)
            }
            Local::NxDomain { network_id } => Decision::NxDomain(network_id),
            Local::NotOurs => Decision::Forward,
        }
    }

    /// Counts a query that `decision` answered (anything but [`Decision::Forward`]).
    pub fn count(&self, sandbox_id: Option<&str>, tcp: bool, decision: &Decision<'_>) {
        self.stats.record(&QueryRecord {
            sandbox_id,
            network_id: decision.network(),
            tcp,
            local: matches!(decision, Decision::Found(_) | Decision::Apex),
            forwarded: false,
            upstream_failures: 0,
            nxdomain: matches!(decision, Decision::NxDomain(_)),
            refused: matches!(decision, Decision::SandboxGone | Decision::OutsideZone),
            servfail: matches!(decision, Decision::NotSynced),
        });
    }

    /// The whole answer to one query, forwarding if need be, with the reasons: what the admin
    /// `Resolve` shows, and what the DNS listeners send when the fast path cannot.
    pub async fn resolve(&self, q: Query<'_>) -> Outcome {
        let snap = self.snapshot.load_full();
        let qname = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let ptr_ip = (q.qtype == RecordType::PTR)
            .then(|| q.name.parse_arpa_name().ok())
            .flatten()
            .map(|net| net.addr());
        let decision = self.decide(&snap, q.sandbox_id, &qname, ptr_ip);
        let mut out = Outcome::new(snap.revision);
        self.explain(&snap, q, &qname, ptr_ip, &decision, &mut out);
        let Some(id) = q
            .sandbox_id
            .filter(|_| matches!(decision, Decision::Forward))
        else {
            self.count(q.sandbox_id, q.tcp, &decision);
            return out;
        };
        let network = self.forward(&snap, id, q, &mut out).await;
        let rc = out.rcode;
        self.stats.record(&QueryRecord {
            sandbox_id: q.sandbox_id,
            network_id: network.as_deref(),
            tcp: q.tcp,
            local: false,
            forwarded: out.source == Source::Forwarded,
            upstream_failures: out.failed_upstreams.len() as u64,
            nxdomain: rc == ResponseCode::NXDomain,
            refused: rc == ResponseCode::Refused,
            servfail: rc == ResponseCode::ServFail,
        });
        out
    }

    /// Writes into `out` what `decision` answers for `q` (`qname` lowercase, without the
    /// trailing dot), with the reasons; a query to forward gets only its first steps here.
    fn explain(
        &self,
        snap: &Snapshot,
        q: Query<'_>,
        qname: &str,
        ptr_ip: Option<IpAddr>,
        decision: &Decision<'_>,
        out: &mut Outcome,
    ) {
        out.rcode = decision.rcode();
        out.authoritative = decision.authoritative();
        if !matches!(decision, Decision::NotSynced | Decision::SandboxGone)
            && let Some(id) = q.sandbox_id
            && let Some(view) = snap.sandboxes.get(id)
        {
            let names: Vec<&str> = view
                .networks
                .iter()
                .filter_map(|n| snap.networks.get(n).map(|n| n.name.as_str()))
                .collect();
            let sb = view.rec.as_ref().map_or(id, |r| r.name.as_str());
            out.step(format!("sandbox {sb} on networks [{}]", names.join(", ")));
        }
        match decision {
            Decision::NotSynced => out.step("not yet synchronised with the gateway"),
            Decision::SandboxGone => out.step(format!(
                "sandbox {} is gone",
                q.sandbox_id.unwrap_or_default()
            )),
            Decision::Apex => {
                out.source = Source::Local;
                out.step("the zone apex: no records");
            }
            Decision::OutsideZone => out.step(format!(
                "not under zone {}.: the operator listener forwards nothing",
                self.zone
            )),
            Decision::Found(targets) => {
                out.source = Source::Local;
                out.answers = self.records(q, ptr_ip, targets);
                for t in targets {
                    out.step(format!(
                        "{} matched {} {} on network {}",
                        qname,
                        t.matched_as.as_str(),
                        t.sandbox_name,
                        t.network_name
                    ));
                }
                out.matches = targets.iter().map(|t| (*t).clone()).collect();
            }
            Decision::NxDomain(network_id) => {
                out.source = Source::Local;
                match network_id {
                    Some(n) => out.step(format!(
                        "no such name on network {}",
                        snap.networks.get(*n).map_or(*n, |n| n.name.as_str())
                    )),
                    None => out.step("no such name"),
                }
            }
            Decision::Forward => {
                out.step("no local match");
            }
        }
    }

    fn records(&self, q: Query<'_>, ptr_ip: Option<IpAddr>, targets: &[&Target]) -> Vec<Record> {
        let rec = |data| Record::from_rdata(q.name.clone(), LOCAL_TTL, data);
        match (q.qtype, ptr_ip) {
            (RecordType::PTR, Some(_)) => targets
                .iter()
                .filter_map(|t| {
                    let mut s = format!("{}.{}.", t.sandbox_name, t.network_name);
                    if q.sandbox_id.is_none() {
                        s.push_str(&self.zone);
                        s.push('.');
                    }
                    Name::from_ascii(&s).ok().map(|n| rec(RData::PTR(PTR(n))))
                })
                .collect(),
            (RecordType::A, _) => targets
                .iter()
                .filter_map(|t| t.v4.map(|a| rec(RData::A(A(a)))))
                .collect(),
            (RecordType::AAAA, _) => targets
                .iter()
                .filter_map(|t| t.v6.map(|a| rec(RData::AAAA(AAAA(a)))))
                .collect(),
            // The name exists but has no data of this type: NOERROR, no answers.
            _ => Vec::new(),
        }
    }

    /// The upstreams for a sandbox: its own, else the first of its networks (in attach order)
    /// that has some, else the host's; at most three.
    pub fn upstreams(&self, snap: &Snapshot, sandbox_id: &str) -> (Vec<SocketAddr>, Origin) {
        let parse = |v: &[String]| -> Vec<SocketAddr> {
            v.iter()
                .filter_map(|s| parse_upstream(s))
                .take(MAX_UPSTREAMS)
                .collect()
        };
        let view = snap.sandboxes.get(sandbox_id);
        if let Some(rec) = view.and_then(|v| v.rec.as_ref())
            && !rec.dns_servers.is_empty()
        {
            return (parse(&rec.dns_servers), Origin::Sandbox);
        }
        for n in view.map(|v| v.networks.as_slice()).unwrap_or_default() {
            if let Some(net) = snap.networks.get(n)
                && !net.internal
                && !net.dns_servers.is_empty()
            {
                return (parse(&net.dns_servers), Origin::Network(net.id.clone()));
            }
        }
        (
            self.host_upstreams
                .load()
                .iter()
                .copied()
                .take(MAX_UPSTREAMS)
                .collect(),
            Origin::Host,
        )
    }

    async fn forward(
        &self,
        snap: &Snapshot,
        sandbox_id: &str,
        q: Query<'_>,
        out: &mut Outcome,
    ) -> Option<String> {
        out.rcode = ResponseCode::Refused;
        if !snap.may_forward(sandbox_id) {
            out.step("every network of the sandbox is internal: not forwarded");
            return None;
        }
        let (ups, origin) = self.upstreams(snap, sandbox_id);
        let net = match &origin {
            Origin::Network(n) => Some(n.clone()),
            _ => None,
        };
        out.origin = Some(origin);
        if ups.is_empty() {
            out.step("no upstream configured: not forwarded");
            return net;
        }
        if q.local_only {
            out.upstream = ups.first().copied();
            out.step(format!(
                "local_only: would forward to [{}]",
                ups.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return net;
        }
        let netns = snap
            .sandboxes
            .get(sandbox_id)
            .and_then(|v| v.rec.as_ref())
            .map(|r| r.netns_path.as_str())
            .unwrap_or_default();
        let via = match out.origin {
            // The sandbox's own servers are asked from its own namespace, never from ours.
            Some(Origin::Sandbox) if netns.is_empty() => {
                out.rcode = ResponseCode::ServFail;
                out.step("the sandbox has no namespace to ask its own servers from");
                return net;
            }
            Some(Origin::Sandbox) => Via::Sandbox {
                id: sandbox_id,
                netns,
            },
            _ => Via::Here,
        };
        let fwd = self.forwarder.forward(&ups, q.name, q.qtype, via).await;
        out.upstream = fwd.upstream;
        out.failed_upstreams = fwd.failures;
        for (up, why) in &out.failed_upstreams {
            out.steps.push(format!("upstream {up} failed: {why}"));
        }
        match fwd.answer {
            Some(msg) => {
                out.source = Source::Forwarded;
                out.rcode = msg.metadata.response_code;
                out.step(format!(
                    "forwarded to {}: {}",
                    fwd.upstream.map(|u| u.to_string()).unwrap_or_default(),
                    msg.metadata.response_code
                ));
                out.answers = msg.answers;
                out.authorities = msg.authorities;
                out.additionals = msg.additionals;
            }
            None => {
                out.source = Source::Forwarded;
                out.rcode = ResponseCode::ServFail;
                out.step("every upstream failed");
            }
        }
        net
    }
}
