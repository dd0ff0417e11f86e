//! What the tests share: fake upstream resolvers, network namespaces that are always deleted,
//! the real `dig`, dns-svc running in-process, and a small world; the fake gateway
//! EventService is in `gateway.rs` (its names are re-exported here).

use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use clap::Parser as _;
use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{RData, Record, RecordType, rdata::A},
    serialize::binary::BinDecodable,
};
use tokio::sync::oneshot;
use weft_proto::gateway::v1 as gw;
use weft_testkit::netns::TestNs;

pub use crate::gateway::{FakeGateway, endpoint, network, sandbox};

// ---------------------------------------------------------------------------------------------
// Fake upstream resolver
// ---------------------------------------------------------------------------------------------

/// What a fake upstream does with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// `*.upstream.test.` A → 192.0.2.10 (TEST-NET-1); everything else NXDOMAIN.
    Answers,
    /// SERVFAIL to everything.
    ServFail,
}

/// The address every `*.upstream.test.` name gets from an answering fake upstream.
pub const UPSTREAM_ANSWER: &str = "192.0.2.10";

/// Names under this suffix are answered over TCP only: over UDP the fake upstream sends an empty
/// truncated answer, as a server does when the answer is too big.
pub const TCP_ONLY: &str = ".tcp.upstream.test.";

/// Names under this suffix get [`MANY_ANSWERS`] A records over UDP and TCP alike (about 2 kB:
/// the fake upstream does not truncate).
pub const MANY: &str = ".many.upstream.test.";

/// How many A records a `*.many.upstream.test.` name gets.
pub const MANY_ANSWERS: u8 = 120;

/// The addresses a `*.tcp.upstream.test.` name gets (over TCP).
pub const TCP_ANSWERS: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];

fn upstream_answer(q: &Message, behaviour: Upstream, tcp: bool) -> Message {
    let mut resp = Message::response(q.metadata.id, q.metadata.op_code);
    resp.metadata.recursion_available = true;
    resp.add_queries(q.queries.clone());
    let Some(query) = q.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    let name = query.name().to_ascii().to_ascii_lowercase();
    let a =
        |ip: &str| Record::from_rdata(query.name().clone(), 60, RData::A(A(ip.parse().unwrap())));
    resp.metadata.response_code = match behaviour {
        Upstream::ServFail => ResponseCode::ServFail,
        Upstream::Answers if name.ends_with(TCP_ONLY) => {
            if tcp {
                for ip in TCP_ANSWERS {
                    resp.add_answer(a(ip));
                }
            } else {
                resp.metadata.truncation = true;
            }
            ResponseCode::NoError
        }
        Upstream::Answers if name.ends_with(MANY) => {
            for i in 0..MANY_ANSWERS {
                resp.add_answer(a(&format!("198.18.0.{i}")));
            }
            ResponseCode::NoError
        }
        Upstream::Answers if name.ends_with(".upstream.test.") => {
            if query.query_type() == RecordType::A {
                resp.add_answer(a(UPSTREAM_ANSWER));
            }
            ResponseCode::NoError
        }
        Upstream::Answers => ResponseCode::NXDomain,
    };
    debug_assert_eq!(resp.metadata.message_type, MessageType::Response);
    resp
}

/// A resolver on a loopback port (UDP and TCP) that counts the queries it gets.
#[derive(Debug)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    udp: Arc<AtomicUsize>,
    tcp: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl FakeUpstream {
    pub async fn start(behaviour: Upstream) -> Self {
        Self::start_in(None, behaviour).await
    }

    /// A fake upstream on the loopback of namespace `ns` (its sockets are made there), or of
    /// the test's own namespace.
    pub async fn start_in(ns: Option<&TestNs>, behaviour: Upstream) -> Self {
        let path = ns.map(TestNs::path_str);
        let (sock, listener) = std::thread::spawn(move || {
            if let Some(p) = path {
                let f = std::fs::File::open(p).unwrap();
                weft_runtime::netns::enter(&f).unwrap();
            }
            // One port for both protocols: the TCP port may be taken, then try another.
            for _ in 0..20 {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                if let Ok(l) = std::net::TcpListener::bind(sock.local_addr().unwrap()) {
                    sock.set_nonblocking(true).unwrap();
                    l.set_nonblocking(true).unwrap();
                    return (sock, l);
                }
            }
            panic!("no free port for UDP and TCP");
        })
        .join()
        .unwrap();
        let addr = sock.local_addr().unwrap();
        let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (udp, tcp) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (stop, mut stopped) = oneshot::channel();
        let (u, t) = (udp.clone(), tcp.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let (n, from) = r.unwrap();
                        let Ok(q) = Message::from_bytes(&buf[..n]) else { continue };
                        u.fetch_add(1, Ordering::SeqCst);
                        let resp = upstream_answer(&q, behaviour, false);
                        let _ = sock.send_to(&resp.to_vec().unwrap(), from).await;
                    }
                    r = listener.accept() => {
                        let (mut conn, _) = r.unwrap();
                        t.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let len = conn.read_u16().await.unwrap();
                            let mut b = vec![0u8; usize::from(len)];
                            conn.read_exact(&mut b).await.unwrap();
                            let q = Message::from_bytes(&b).unwrap();
                            let out = upstream_answer(&q, behaviour, true).to_vec().unwrap();
                            conn.write_u16(u16::try_from(out.len()).unwrap()).await.unwrap();
                            conn.write_all(&out).await.unwrap();
                        });
                    }
                    _ = &mut stopped => return,
                }
            }
        });
        Self {
            addr,
            udp,
            tcp,
            _stop: stop,
        }
    }

    /// Queries received over UDP and TCP.
    pub fn queries(&self) -> usize {
        self.udp.load(Ordering::SeqCst) + self.tcp.load(Ordering::SeqCst)
    }

    pub fn tcp_queries(&self) -> usize {
        self.tcp.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

/// A network namespace of the test's own, with loopback up; deleted on drop, also when the
/// test fails.
pub fn netns() -> TestNs {
    TestNs::named("d").with_lo_up()
}

// ---------------------------------------------------------------------------------------------
// The real dig
// ---------------------------------------------------------------------------------------------

/// What dig printed, parsed.
#[derive(Debug, Clone)]
pub struct Dig {
    /// "NOERROR", "NXDOMAIN", …; empty when no answer came.
    pub status: String,
    /// The data of the answer records, in order.
    pub answers: Vec<String>,
    /// The whole output.
    pub text: String,
}

fn parse_dig(text: String) -> Dig {
    let status = text
        .lines()
        .find_map(|l| l.split_once("status: "))
        .map(|(_, rest)| rest.split(',').next().unwrap_or("").to_owned())
        .unwrap_or_default();
    let mut answers = Vec::new();
    let mut in_answer = false;
    for l in text.lines() {
        if l.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
        } else if in_answer && (l.trim().is_empty() || l.starts_with(";;")) {
            in_answer = false;
        } else if in_answer {
            answers.push(l.split_whitespace().last().unwrap_or("").to_owned());
        }
    }
    Dig {
        status,
        answers,
        text,
    }
}

fn run_dig(prefix: &[&str], args: &[&str]) -> Dig {
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..])
        .arg("dig")
        .args(["+time=2", "+tries=1"])
        .args(args);
    let out = cmd.output().expect("dig runs");
    parse_dig(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// dig inside `ns`, against the sandbox listener at 127.0.0.11:53.
pub fn dig_in(ns: &TestNs, args: &[&str]) -> Dig {
    let mut all = vec!["@127.0.0.11"];
    all.extend_from_slice(args);
    run_dig(&["ip", "netns", "exec", &ns.name], &all)
}

/// dig against `addr` from the test's own namespace (loopback only).
pub fn dig_at(addr: SocketAddr, args: &[&str]) -> Dig {
    let server = format!("@{}", addr.ip());
    let port = addr.port().to_string();
    let mut all = vec![server.as_str(), "-p", port.as_str()];
    all.extend_from_slice(args);
    run_dig(&["env"], &all)
}

// ---------------------------------------------------------------------------------------------
// dns-svc in-process
// ---------------------------------------------------------------------------------------------

/// The host name tests give dns-svc: sandboxes on it get listeners.
pub const HOST: &str = "h1";

/// A dns-svc running in the test process; stopped on drop.
#[derive(Debug)]
pub struct Dns {
    pub operator: SocketAddr,
    pub admin: SocketAddr,
    pub resolver: Arc<dns_svc::resolver::Resolver>,
    _stop: oneshot::Sender<()>,
}

impl Dns {
    /// dns-svc with these host upstreams (none: one nobody listens on, never the machine's
    /// resolv.conf).
    pub async fn start(gateway_url: &str, upstreams: &[SocketAddr]) -> Self {
        let ups: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
        let ups = if ups.is_empty() {
            "127.0.0.1:9".to_owned()
        } else {
            ups.join(",")
        };
        Self::start_with(gateway_url, &["--upstream", &ups]).await
    }

    /// dns-svc with these extra flags.
    pub async fn start_with(gateway_url: &str, extra: &[&str]) -> Self {
        let mut args: Vec<String> = [
            "dns-svc",
            // Served in this process, without the binary's transport.
            "--insecure-plaintext",
            "--host",
            HOST,
            "--gateway",
            gateway_url,
            "--operator-listen",
            "127.0.0.1:0",
            "--upstream-timeout",
            "500ms",
            "--shutdown-grace",
            "1s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let config =
            dns_svc::Config::try_from(dns_svc::Args::try_parse_from(&args).unwrap()).unwrap();
        let running = dns_svc::start(&config).unwrap();
        let operator = running.operator_addr;
        let resolver = running.resolver.clone();
        let grace = weft_runtime::grpc::ShutdownTiming::from(&config.common).grace;
        let (admin, stop) = weft_testkit::serve_with(grace, |listener, timing, stop| {
            dns_svc::serve(running, listener, timing, stop)
        })
        .await;
        let dns = Self {
            operator,
            admin,
            resolver,
            _stop: stop,
        };
        weft_testkit::wait_for(Duration::from_secs(10), "dns-svc to synchronise", || {
            let synced = dns.resolver.snapshot().synced;
            async move { synced.then_some(()) }
        })
        .await;
        dns
    }

    /// Waits until the records reflect at least `revision`.
    pub async fn wait_revision(&self, revision: u64) {
        weft_testkit::wait_for(Duration::from_secs(10), "dns-svc to catch up", || {
            let r = self.resolver.snapshot().revision;
            async move { (r >= revision).then_some(()) }
        })
        .await;
    }
}

/// Waits until dig inside `ns` gets an answer at all (the sandbox listener is open).
pub async fn wait_listening(ns: &TestNs) {
    weft_testkit::wait_for(Duration::from_secs(10), "the sandbox listener", || {
        let d = dig_in(ns, &["+timeout=1", "listening.probe.", "A"]);
        async move { (!d.status.is_empty()).then_some(()) }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// A small world
// ---------------------------------------------------------------------------------------------

/// The test world: `client` (in namespace `client_ns`, on `backend`), peers `web` (alias
/// `api`, hostname `web-host`, also IPv6) and `db` (alias `api`) on `backend` on another host, `hidden` on
/// the internal network `secret`, and `isolated` (in namespace `isolated_ns`, on `secret` only).
#[derive(Debug)]
pub struct World {
    pub gw: FakeGateway,
    pub url: String,
    pub client_ns: TestNs,
    pub isolated_ns: TestNs,
    pub backend: gw::Network,
    pub client: gw::Sandbox,
}

pub const WEB: &str = "10.89.1.3";
pub const DB: &str = "10.89.1.4";
pub const WEB6: &str = "fd89:1::3";
pub const HIDDEN: &str = "10.89.2.5";

impl World {
    pub async fn new() -> Self {
        let gw = FakeGateway::default();
        let client_ns = netns();
        let isolated_ns = netns();
        let backend = network("nbackend0001", "backend", "10.89.1.0/24", false);
        let secret = network("nsecret00001", "secret", "10.89.2.0/24", true);
        gw.network(backend.clone());
        gw.network(secret.clone());
        let client = sandbox(
            "sclient00001",
            "client",
            HOST,
            &client_ns.path_str(),
            "client",
        );
        let web = sandbox(
            "sweb00000001",
            "web",
            "h2",
            "/run/netns/elsewhere",
            "web-host",
        );
        let db = sandbox("sdb000000001", "db", "h2", "/run/netns/elsewhere", "");
        let hidden = sandbox("shidden00001", "hidden", "h2", "/run/netns/elsewhere", "");
        let isolated = sandbox(
            "sisolated001",
            "isolated",
            HOST,
            &isolated_ns.path_str(),
            "",
        );
        for s in [&client, &web, &db, &hidden, &isolated] {
            gw.sandbox(s.clone());
        }
        gw.connect(endpoint("eclient", &backend, &client, "10.89.1.2/24", &[]));
        let mut eweb = endpoint("eweb", &backend, &web, &format!("{WEB}/24"), &["api"]);
        eweb.ipv6_address = format!("{WEB6}/64");
        gw.connect(eweb);
        gw.connect(endpoint(
            "edb",
            &backend,
            &db,
            &format!("{DB}/24"),
            &["api"],
        ));
        gw.connect(endpoint(
            "ehidden",
            &secret,
            &hidden,
            &format!("{HIDDEN}/24"),
            &[],
        ));
        gw.connect(endpoint(
            "eisolated",
            &secret,
            &isolated,
            "10.89.2.6/24",
            &[],
        ));
        let url = gw.serve().await;
        Self {
            gw,
            url,
            client_ns,
            isolated_ns,
            backend,
            client,
        }
    }
}
