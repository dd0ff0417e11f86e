//! The operator listener on loopback: `<name>.<network>.weft.`, and protocol hygiene.

use std::time::Duration;

use hickory_proto::{
    op::{Message, MessageType, Query, ResponseCode},
    rr::{Name, RecordType},
    serialize::binary::BinDecodable,
};

use crate::harness::{Dns, HIDDEN, WEB, World, dig_at, endpoint, sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn the_operator_listener_answers_name_dot_network_in_the_zone() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let d = dig_at(dns.operator, &["web.backend.weft.", "A"]);
    assert_eq!(
        (d.status.as_str(), d.answers.clone()),
        ("NOERROR", vec![WEB.to_owned()]),
        "{}",
        d.text
    );
    assert!(d.text.contains(" aa"), "authoritative: {}", d.text);
    let d = dig_at(dns.operator, &["+tcp", "hidden.secret.weft.", "A"]);
    assert_eq!(
        d.answers,
        [HIDDEN],
        "every network, over TCP too: {}",
        d.text
    );
    let d = dig_at(dns.operator, &["nobody.backend.weft.", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    let d = dig_at(dns.operator, &["web.weft.", "A"]);
    assert_eq!(
        d.status, "NXDOMAIN",
        "a bare name is not an operator name: {}",
        d.text
    );
    let d = dig_at(dns.operator, &["www.upstream.test.", "A"]);
    assert_eq!(
        d.status, "REFUSED",
        "the operator listener forwards nothing: {}",
        d.text
    );
    let d = dig_at(dns.operator, &["-x", WEB]);
    assert_eq!(d.answers, ["web.backend.weft."], "{}", d.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn edns_is_echoed_only_when_asked() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let d = dig_at(dns.operator, &["web.backend.weft.", "A"]);
    assert!(d.text.contains("OPT PSEUDOSECTION"), "{}", d.text);
    let d = dig_at(dns.operator, &["+noedns", "web.backend.weft.", "A"]);
    assert!(!d.text.contains("OPT PSEUDOSECTION"), "{}", d.text);
    assert_eq!(d.answers, [WEB], "{}", d.text);
}

async fn exchange(addr: std::net::SocketAddr, msg: &Message, wait: Duration) -> Option<Message> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&msg.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_bytes(&buf[..n]).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn two_questions_get_formerr_and_a_response_packet_gets_nothing() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let name = Name::from_ascii("web.backend.weft.").unwrap();
    let mut two = Message::query();
    two.add_query(Query::query(name.clone(), RecordType::A));
    two.add_query(Query::query(name.clone(), RecordType::AAAA));
    let resp = exchange(dns.operator, &two, Duration::from_secs(2))
        .await
        .expect("an answer");
    assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);

    let mut response = Message::query();
    response.metadata.message_type = MessageType::Response;
    response.add_query(Query::query(name.clone(), RecordType::A));
    // Asserting an absence needs a bounded wait; a valid query right after proves the
    // listener is alive and answers within that time.
    assert!(
        exchange(dns.operator, &response, Duration::from_millis(500))
            .await
            .is_none()
    );
    let mut ok = Message::query();
    ok.add_query(Query::query(name, RecordType::A));
    let resp = exchange(dns.operator, &ok, Duration::from_secs(2))
        .await
        .expect("an answer");
    assert_eq!(resp.answers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn big_answers_are_truncated_without_edns_and_whole_with_edns_or_tcp() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let mut rev = 0;
    for i in 0..60 {
        let sb = sandbox(&format!("smany{i:07}"), &format!("m{i}"), "h2", "", "");
        w.gw.sandbox(sb.clone());
        rev = w.gw.connect(endpoint(
            &format!("emany{i}"),
            &w.backend,
            &sb,
            &format!("10.89.1.{}/24", 100 + i),
            &["many"],
        ));
    }
    dns.wait_revision(rev).await;
    let d = dig_at(
        dns.operator,
        &["+noedns", "+ignore", "many.backend.weft.", "A"],
    );
    assert!(d.text.contains(" tc"), "TC set: {}", d.text);
    assert!(
        d.answers.len() < 60,
        "cut to 512 bytes: {}",
        d.answers.len()
    );
    let d = dig_at(
        dns.operator,
        &["+bufsize=4096", "+ignore", "many.backend.weft.", "A"],
    );
    assert_eq!(d.answers.len(), 60, "the EDNS size is honoured: {}", d.text);
    let d = dig_at(dns.operator, &["+tcp", "many.backend.weft.", "A"]);
    assert_eq!(d.answers.len(), 60, "TCP is complete: {}", d.text);
    let truncated = dns.resolver.stats.total.to_pb().truncated;
    assert_eq!(truncated, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn several_queries_share_one_tcp_connection() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let d = dig_at(
        dns.operator,
        &[
            "+tcp",
            "+keepopen",
            "web.backend.weft.",
            "A",
            "hidden.secret.weft.",
            "A",
        ],
    );
    assert_eq!(d.answers, [WEB, HIDDEN], "{}", d.text);
    let tcp = dns.resolver.stats.total.to_pb().tcp_queries;
    assert_eq!(tcp, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn two_opt_records_get_formerr() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("web.backend.weft.").unwrap(),
        RecordType::A,
    ));
    q.set_edns(hickory_proto::op::Edns::new());
    let mut bytes = q.to_vec().unwrap();
    // A second OPT pseudo-record: root name, type 41, class (payload) 1232, TTL 0, no data.
    bytes.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    bytes[11] += 1; // ARCOUNT
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&bytes, dns.operator).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let resp = Message::from_bytes(&buf[..n]).unwrap();
    assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn an_edns_version_above_zero_gets_badvers() {
    let w = World::new().await;
    let dns = Dns::start(&w.url, &[]).await;
    let d = dig_at(
        dns.operator,
        &["+edns=1", "+noednsneg", "web.backend.weft.", "A"],
    );
    assert_eq!(d.status, "BADVERS", "{}", d.text);
    assert!(d.answers.is_empty(), "{}", d.text);
    let d = dig_at(dns.operator, &["+edns=0", "web.backend.weft.", "A"]);
    assert_eq!(d.answers, [WEB], "{}", d.text);
}

/// Reads until the server closes the connection; `true` if it did within `wait`.
async fn closed_within(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 512];
    tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// One query over an open TCP connection; the answer's rcode and answer count.
async fn tcp_query(s: &mut tokio::net::TcpStream, name: &str) -> (ResponseCode, usize) {
    try_tcp_query(s, name).await.expect("an answer over TCP")
}

/// [`tcp_query`], `None` when the connection fails.
async fn try_tcp_query(s: &mut tokio::net::TcpStream, name: &str) -> Option<(ResponseCode, usize)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let b = q.to_vec().unwrap();
    let mut out = u16::try_from(b.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    s.write_all(&out).await.ok()?;
    let n = s.read_u16().await.ok()?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.ok()?;
    let m = Message::from_bytes(&buf).ok()?;
    Some((m.metadata.response_code, m.answers.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn a_client_gets_at_most_its_share_of_tcp_connections() {
    let w = World::new().await;
    let dns = Dns::start_with(
        &w.url,
        &["--upstream", "127.0.0.1:9", "--tcp-max-per-client", "4"],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(dns.operator).await.unwrap();
        assert_eq!(
            tcp_query(&mut s, "web.backend.weft.").await,
            (ResponseCode::NoError, 1)
        );
        held.push(s);
    }
    let mut fifth = tokio::net::TcpStream::connect(dns.operator).await.unwrap();
    assert!(
        closed_within(&mut fifth, Duration::from_secs(5)).await,
        "the fifth connection of one client is closed"
    );
    // The held ones still work, and a freed slot can be taken again.
    assert_eq!(
        tcp_query(&mut held[0], "web.backend.weft.").await,
        (ResponseCode::NoError, 1)
    );
    drop(held.pop());
    let mut again = weft_testkit::wait_for(Duration::from_secs(5), "a free slot", || async {
        let mut s = tokio::net::TcpStream::connect(dns.operator).await.ok()?;
        let ok = tokio::time::timeout(
            Duration::from_secs(1),
            try_tcp_query(&mut s, "web.backend.weft."),
        )
        .await
        .ok()??;
        (ok == (ResponseCode::NoError, 1)).then_some(s)
    })
    .await;
    assert_eq!(
        tcp_query(&mut again, "hidden.secret.weft.").await,
        (ResponseCode::NoError, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn idle_and_half_sent_tcp_connections_are_closed() {
    use tokio::io::AsyncWriteExt as _;
    let w = World::new().await;
    let dns = Dns::start_with(
        &w.url,
        &["--upstream", "127.0.0.1:9", "--tcp-idle-timeout", "300ms"],
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(dns.operator).await.unwrap();
    let mut half_prefix = tokio::net::TcpStream::connect(dns.operator).await.unwrap();
    half_prefix.write_all(&[0]).await.unwrap();
    let mut half_query = tokio::net::TcpStream::connect(dns.operator).await.unwrap();
    half_query.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
    for (what, s) in [
        ("silent", &mut silent),
        ("half a length prefix", &mut half_prefix),
        ("half a query", &mut half_query),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "{what}: closed after the idle timeout"
        );
    }
    // A connection that keeps asking stays open past the timeout.
    let mut busy = tokio::net::TcpStream::connect(dns.operator).await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            tcp_query(&mut busy, "web.backend.weft.").await.0,
            ResponseCode::NoError
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: creates network namespaces")]
async fn several_dns_threads_share_the_operator_address() {
    let w = World::new().await;
    let dns = Dns::start_with(&w.url, &["--upstream", "127.0.0.1:9", "--dns-threads", "3"]).await;
    // Each client socket hashes to one of the three SO_REUSEPORT sockets: with 60 clients, a
    // socket nobody served would leave some of them unanswered.
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("web.backend.weft.").unwrap(),
        RecordType::A,
    ));
    for i in 0..60u16 {
        q.metadata.id = i;
        let m = exchange(dns.operator, &q, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("client {i} got no answer"));
        assert_eq!((m.metadata.id, m.answers.len()), (i, 1));
    }
    let mut s = tokio::net::TcpStream::connect(dns.operator).await.unwrap();
    assert_eq!(
        tcp_query(&mut s, "web.backend.weft.").await,
        (ResponseCode::NoError, 1)
    );
}
