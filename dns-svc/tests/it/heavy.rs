//! Load and abuse: junk packets and stalled connections against the real binary, and queries
//! while the records churn. `heavy_` tests run one at a time (.config/nextest.toml).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
    serialize::binary::BinDecodable,
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use tokio::{io::AsyncWriteExt as _, net::UdpSocket};
use weft_proto::{
    dns::v1::{self as pb, dns_service_client::DnsServiceClient},
    gateway::v1::{self as gw, EventKind, event::Object},
};
use weft_testkit::ServiceProcess;

use crate::harness::{DB, Dns, FakeGateway, WEB, dig_at, endpoint, network, sandbox};

/// A gateway with `web` and `db` on network `backend` (sandboxes of another host).
async fn stable_world() -> (FakeGateway, String, gw::Network) {
    let gw = FakeGateway::default();
    let backend = network("nbackend0001", "backend", "10.89.1.0/24", false);
    gw.network(backend.clone());
    for (id, name, ip) in [("sweb00000001", "web", WEB), ("sdb000000001", "db", DB)] {
        let sb = sandbox(id, name, "h2", "", "");
        gw.sandbox(sb.clone());
        gw.connect(endpoint(
            &format!("e{name}"),
            &backend,
            &sb,
            &format!("{ip}/24"),
            &[],
        ));
    }
    let url = gw.serve().await;
    (gw, url, backend)
}

fn query_bytes(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut q = Message::query();
    q.metadata.id = id;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        q.set_edns(Edns::new());
    }
    q.to_vec().unwrap()
}

/// One UDP query, up to `tries` times with a 1 s wait each; the answer.
async fn udp_ask(addr: SocketAddr, name: &str, tries: usize) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let id = rand::random::<u16>();
    let q = query_bytes(id, name, RecordType::A, true);
    let mut buf = vec![0u8; 4096];
    for _ in 0..tries {
        sock.send_to(&q, addr).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                let (n, _) = sock.recv_from(&mut buf).await.ok()?;
                if let Ok(m) = Message::from_bytes(&buf[..n])
                    && m.metadata.id == id
                {
                    return Some(m);
                }
            }
        })
        .await;
        if let Ok(Some(m)) = got {
            return Some(m);
        }
    }
    None
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(100)
}

/// A junk packet: random bytes, a valid query with bytes flipped, cut or extended, a response,
/// a header alone, or a query with lying counts.
fn junk(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    match rng.random_range(0..6) {
        0 => {
            let n = rng.random_range(0..600);
            (0..n).map(|_| rng.random()).collect()
        }
        1 => {
            let mut b = valid.to_vec();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            // Keep QR=0 half of the time, so most mutants get past the reflection check.
            if rng.random() {
                b[2] &= 0x7f;
            }
            b
        }
        2 => {
            let cut = rng.random_range(0..valid.len());
            valid[..cut].to_vec()
        }
        3 => {
            let mut b = valid.to_vec();
            b[2] |= 0x80;
            b
        }
        4 => {
            let mut b = valid.to_vec();
            let extra = rng.random_range(1..300);
            b.extend((0..extra).map(|_| rng.random::<u8>()));
            b
        }
        _ => {
            let mut b = valid.to_vec();
            // QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT: random.
            for x in &mut b[4..12] {
                *x = rng.random();
            }
            b
        }
    }
}

async fn operator_addr(admin: SocketAddr) -> SocketAddr {
    let mut c = DnsServiceClient::new(weft_testkit::channel(admin));
    let l = c
        .list_listeners(pb::ListListenersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let op = l
        .listeners
        .iter()
        .find(|l| l.kind() == pb::ListenerKind::Operator)
        .unwrap();
    op.address.parse().unwrap()
}

/// The real binary following `url`, with its operator listener on a free loopback port (the
/// address returned), once it answers from the records.
async fn start_process(url: &str) -> (ServiceProcess, SocketAddr) {
    let args: Vec<String> = [
        "--insecure-plaintext",
        "--gateway",
        url,
        "--host",
        "heavy-test",
        "--operator-listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let svc = ServiceProcess::start(env!("CARGO_BIN_EXE_dns-svc"), &args).await;
    let op = operator_addr(svc.addr).await;
    weft_testkit::wait_for(
        Duration::from_secs(10),
        "dns-svc to synchronise",
        || async {
            let m = udp_ask(op, "web.backend.weft.", 1).await?;
            (a_records(&m) == [WEB]).then_some(())
        },
    )
    .await;
    (svc, op)
}

/// 1,000 stalled TCP connections to `op` from 100 loopback addresses: half of them send
/// nothing, half send one byte of a length prefix. Those that connected.
async fn stalled_connections(op: SocketAddr) -> Vec<tokio::net::TcpStream> {
    let mut stalled = Vec::new();
    for i in 0..1000u32 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        let src: SocketAddr = format!("127.0.1.{}:0", 1 + i % 100).parse().unwrap();
        sock.bind(src).unwrap();
        let Ok(mut s) = sock.connect(op).await else {
            continue;
        };
        if i % 2 == 1 {
            let _ = s.write_all(&[0]).await;
        }
        stalled.push(s);
    }
    stalled
}

/// The CPU the process `pid` uses over the next second, in percent of one core (printed).
async fn cpu_percent_over_a_second(pid: i32) -> f64 {
    let hz = clock_ticks_per_second();
    let before = cpu_ticks(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(pid) - before;
    let wall = t0.elapsed().as_secs_f64();
    let percent = used as f64 * 100.0 / hz as f64 / wall;
    println!(
        "CPU over a second after the burst: {percent:.1} % ({used} ticks at {hz} Hz in {wall:.2} s)"
    );
    percent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_junk_and_stalled_connections_leave_it_alive_answering_and_idle() {
    let (_gw, url, _) = stable_world().await;
    let (svc, op) = start_process(&url).await;
    let pid = svc.pid().as_raw();

    // 1,000 stalled TCP connections from 100 loopback addresses: half of them send nothing,
    // half send one byte of a length prefix.
    let stalled = stalled_connections(op).await;
    assert!(stalled.len() >= 900, "connected: {}", stalled.len());

    // 100,000 junk packets over UDP, with a valid probe after every 10,000.
    let valid = query_bytes(0x4242, "web.backend.weft.", RecordType::A, true);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut probes = 0;
    for i in 0..100_000 {
        let _ = sock.send_to(&junk(&mut rng, &valid), op).await;
        if i % 10_000 == 9_999 {
            let m = udp_ask(op, "db.backend.weft.", 3)
                .await
                .unwrap_or_else(|| panic!("no answer to a probe after {i} junk packets"));
            assert_eq!(a_records(&m), [DB]);
            probes += 1;
        }
    }
    // And junk over TCP: 100 connections, each a few junk frames.
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(op).await {
            for _ in 0..5 {
                let j = junk(&mut rng, &valid);
                let mut f = u16::try_from(j.len()).unwrap().to_be_bytes().to_vec();
                f.extend_from_slice(&j);
                let _ = s.write_all(&f).await;
            }
        }
    }
    assert_eq!(probes, 10);

    // After the burst, with the stalled connections still open, the process goes idle: CPU is
    // measured over one-second windows until one is below 5 %, within a deadline (a fixed
    // sleep before a single window would race the burst's tail on a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let percent = cpu_percent_over_a_second(pid).await;
        if percent < 5.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CPU {percent:.1} % still, 15 s after the burst"
        );
    }

    let m = udp_ask(op, "web.backend.weft.", 1).await.expect("alive");
    assert_eq!(a_records(&m), [WEB]);
    let d = dig_at(op, &["web.backend.weft.", "A"]);
    assert_eq!(d.answers, [WEB], "{}", d.text);
    // Over TCP too, once the stalled connections that fill every TCP slot
    // (MAX_TCP_CONNECTIONS) have been closed by the idle timeout (5 s by default): a fast
    // machine gets here before that.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = dig_at(op, &["+tcp", "db.backend.weft.", "A"]);
        if d.answers == [DB] {
            break;
        }
        assert!(Instant::now() < deadline, "{}", d.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stalled);
}

/// What the churn test's querier saw.
#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    timeouts: AtomicU64,
    servfail: AtomicU64,
    wrong: AtomicU64,
}

/// The querier: `qps` queries a second to `op` for `run`, alternating the two stable names,
/// each waiting up to 2 s for its answer; every outcome counted in `tally`.
fn spawn_querier(
    op: SocketAddr,
    tally: Arc<Tally>,
    run: Duration,
    qps: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / qps));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        let end = Instant::now() + run;
        let mut i = 0u64;
        while Instant::now() < end {
            tick.tick().await;
            i += 1;
            let (name, want) = if i.is_multiple_of(2) {
                ("web.backend.weft.", WEB)
            } else {
                ("db.backend.weft.", DB)
            };
            tally.sent.fetch_add(1, Ordering::Relaxed);
            let tally = tally.clone();
            tasks.spawn(async move {
                let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let id = rand::random::<u16>();
                sock.send_to(&query_bytes(id, name, RecordType::A, false), op)
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 1500];
                let got = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
                        if let Ok(m) = Message::from_bytes(&buf[..n])
                            && m.metadata.id == id
                        {
                            return m;
                        }
                    }
                })
                .await;
                match got {
                    Err(_) => tally.timeouts.fetch_add(1, Ordering::Relaxed),
                    Ok(m) if m.metadata.response_code == ResponseCode::ServFail => {
                        tally.servfail.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(m) if a_records(&m) == [want] => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => tally.wrong.fetch_add(1, Ordering::Relaxed),
                };
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// The churn: `total` changes on `backend` spread over `run` from `started` (sandboxes come,
/// connect, update, leave). The changes made, the last revision, and how many sandboxes came
/// and went.
async fn churn(
    gw: &FakeGateway,
    backend: &gw::Network,
    total: u64,
    started: Instant,
    run: Duration,
) -> (u64, u64, u32) {
    let mut changes = 0u64;
    let mut last = 0;
    let mut n = 0u32;
    while changes < total {
        let id = format!("schurn{n:06}");
        let sb = sandbox(&id, &format!("churn{n}"), "h2", "", "");
        let mut ep = endpoint(
            &format!("echurn{n}"),
            backend,
            &sb,
            &format!("10.89.1.{}/24", 10 + n % 200),
            &["churner"],
        );
        let steps: [(EventKind, Object); 5] = [
            (EventKind::SandboxCreated, Object::Sandbox(sb.clone())),
            (EventKind::EndpointConnected, Object::Endpoint(ep.clone())),
            (EventKind::EndpointUpdated, {
                ep.aliases.push("churned".into());
                Object::Endpoint(ep.clone())
            }),
            (EventKind::EndpointDisconnected, Object::Endpoint(ep)),
            (EventKind::SandboxRemoved, Object::Sandbox(sb)),
        ];
        for (kind, obj) in steps {
            last = gw.publish(kind, obj);
            changes += 1;
            let due = started + run.mul_f64(changes as f64 / (total + 20) as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        n += 1;
    }
    (changes, last, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_record_churn_never_fails_a_stable_name() {
    const CHANGES: u64 = 1000;
    const RUN: Duration = Duration::from_secs(60);
    const QPS: u64 = 200;
    let (gw, url, backend) = stable_world().await;
    let dns = Dns::start(&url, &[]).await;
    let op = dns.operator;

    // The querier: 200 queries a second for 60 s, alternating the two stable names, each
    // waiting up to 2 s for its answer.
    let tally = Arc::new(Tally::default());
    let querier = spawn_querier(op, tally.clone(), RUN, QPS);

    // The churn: 1,000 changes spread over the run (sandboxes come, connect, update, leave).
    let started = Instant::now();
    let (changes, last, n) = churn(&gw, &backend, CHANGES, started, RUN).await;
    dns.wait_revision(last).await;
    querier.await.unwrap();
    let (sent, ok, timeouts, servfail, wrong) = (
        tally.sent.load(Ordering::Relaxed),
        tally.ok.load(Ordering::Relaxed),
        tally.timeouts.load(Ordering::Relaxed),
        tally.servfail.load(Ordering::Relaxed),
        tally.wrong.load(Ordering::Relaxed),
    );
    println!(
        "churn: {changes} record changes ({n} sandboxes came and went), {sent} queries in {:.1} s: \
         {ok} right, {timeouts} timeouts, {servfail} SERVFAIL, {wrong} wrong",
        started.elapsed().as_secs_f64()
    );
    assert!(sent >= 11_000, "the querier kept its rate: {sent}");
    assert_eq!((timeouts, servfail, wrong), (0, 0, 0));
    assert_eq!(ok, sent);
}
