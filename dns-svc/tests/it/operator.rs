//! The operator listener on loopback: `<name>.<network>.weft.`, and protocol hygiene.

use std::time::Duration;

use hickory_proto::{
    op::{Message, MessageType, Query, ResponseCode},
    rr::{Name, RecordType},
    serialize::binary::BinDecodable,
};

use crate::harness::{Dns, HIDDEN, WEB, World, dig_at, endpoint, sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
