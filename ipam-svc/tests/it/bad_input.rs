//! Bad input: each case gets the right code, a message naming the field and the value, and
//! leaves the store exactly as it was.

use tonic::{Code, Status};
use weft_proto::ipam::v1 as pb;
use weft_testkit::Backend;

use crate::harness::{Client, InProc, all_allocations, alloc, pool};

fn pool_req(f: impl FnOnce(&mut pb::RequestPoolRequest)) -> pb::RequestPoolRequest {
    let mut r = pb::RequestPoolRequest {
        subnet: "10.90.0.0/24".into(),
        ..Default::default()
    };
    f(&mut r);
    r
}

enum Call {
    Pool(pb::RequestPoolRequest),
    Addr(&'static str, &'static str, &'static str),
    Release(pb::ReleaseAddressRequest),
    ReleasePool(&'static str, bool),
    List(pb::ListAllocationsRequest),
    ListPools(pb::ListPoolsRequest),
    Get(&'static str),
}

async fn run(c: &mut Client, call: Call) -> Result<(), Status> {
    match call {
        Call::Pool(r) => c.request_pool(r).await.map(drop),
        Call::Addr(p, o, a) => alloc(c, p, o, a).await.map(drop),
        Call::Release(r) => c.release_address(r).await.map(drop),
        Call::ReleasePool(p, force) => c
            .release_pool(pb::ReleasePoolRequest {
                pool_id: p.into(),
                force,
            })
            .await
            .map(drop),
        Call::List(r) => c.list_allocations(r).await.map(drop),
        Call::ListPools(r) => c.list_pools(r).await.map(drop),
        Call::Get(p) => c
            .get_pool(pb::GetPoolRequest { pool_id: p.into() })
            .await
            .map(drop),
    }
}

fn by_addr(pool: &str, a: &str) -> pb::ReleaseAddressRequest {
    pb::ReleaseAddressRequest {
        pool_id: pool.into(),
        target: Some(pb::release_address_request::Target::Address(a.into())),
    }
}

async fn snapshot(c: &mut Client) -> String {
    let pools = c
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let allocs = all_allocations(c, "").await;
    format!("{pools:?}\n{allocs:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_field_and_value_and_writes_nothing() {
    use Code::*;
    let s = InProc::start(Backend::Sqlite).await;
    let mut c = s.client();
    pool(&mut c, "p", "10.99.0.0/24").await;
    pool(&mut c, "v6", "fd00:99::/64").await;
    alloc(&mut c, "p", "holder", "10.99.0.10").await.unwrap();

    // (case, call, code, what the message names); one row a case.
    #[rustfmt::skip]
    let cases: Vec<(&str, Call, Code, &[&str])> = vec![
        ("prefix too long", Call::Pool(pool_req(|r| r.subnet = "10.0.0.0/33".into())), InvalidArgument, &["subnet", "10.0.0.0/33"]),
        ("host bits set", Call::Pool(pool_req(|r| r.subnet = "10.0.0.1/24".into())), InvalidArgument, &["subnet", "10.0.0.1/24", "host bits"]),
        ("octet out of range", Call::Pool(pool_req(|r| r.subnet = "300.1.1.1/8".into())), InvalidArgument, &["subnet", "300.1.1.1/8"]),
        ("v6 prefix too long", Call::Pool(pool_req(|r| r.subnet = "::/129".into())), InvalidArgument, &["subnet", "::/129"]),
        ("not a cidr", Call::Pool(pool_req(|r| r.subnet = "banana".into())), InvalidArgument, &["subnet", "banana"]),
        ("missing prefix", Call::Pool(pool_req(|r| r.subnet = "10.0.0.0".into())), InvalidArgument, &["subnet", "10.0.0.0"]),
        ("leading space", Call::Pool(pool_req(|r| r.subnet = " 10.0.0.0/24".into())), InvalidArgument, &["subnet", " 10.0.0.0/24"]),
        ("/31 is too small", Call::Pool(pool_req(|r| r.subnet = "10.0.0.0/31".into())), InvalidArgument, &["subnet", "10.0.0.0/31"]),
        ("/0", Call::Pool(pool_req(|r| r.subnet = "128.0.0.0/0".into())), InvalidArgument, &["subnet", "128.0.0.0/0"]),
        ("gateway outside", Call::Pool(pool_req(|r| r.gateway = "10.91.0.1".into())), InvalidArgument, &["gateway", "10.91.0.1", "not inside"]),
        ("gateway is network", Call::Pool(pool_req(|r| r.gateway = "10.90.0.0".into())), InvalidArgument, &["gateway", "10.90.0.0", "network"]),
        ("gateway is broadcast", Call::Pool(pool_req(|r| r.gateway = "10.90.0.255".into())), InvalidArgument, &["gateway", "10.90.0.255", "broadcast"]),
        ("gateway wrong family", Call::Pool(pool_req(|r| r.gateway = "fd00::1".into())), InvalidArgument, &["gateway", "fd00::1"]),
        ("gateway not an ip", Call::Pool(pool_req(|r| r.gateway = "10.90.0.x".into())), InvalidArgument, &["gateway", "10.90.0.x"]),
        ("range outside", Call::Pool(pool_req(|r| r.ip_range = "10.91.0.0/25".into())), InvalidArgument, &["ip_range", "10.91.0.0/25"]),
        ("range larger than subnet", Call::Pool(pool_req(|r| r.ip_range = "10.90.0.0/23".into())), InvalidArgument, &["ip_range", "10.90.0.0/23"]),
        ("reversed range", Call::Pool(pool_req(|r| r.ip_range = "10.90.0.50-10.90.0.10".into())), InvalidArgument, &["ip_range", "10.90.0.50-10.90.0.10", "after"]),
        ("range host bits", Call::Pool(pool_req(|r| r.ip_range = "10.90.0.1/25".into())), InvalidArgument, &["ip_range", "10.90.0.1/25"]),
        ("reserved outside", Call::Pool(pool_req(|r| { r.reserved_addresses.insert("x".into(), "10.92.0.5".into()); })), InvalidArgument, &["reserved_addresses[x]", "10.92.0.5"]),
        ("reserved not an ip", Call::Pool(pool_req(|r| { r.reserved_addresses.insert("y".into(), "nope".into()); })), InvalidArgument, &["reserved_addresses[y]", "nope"]),
        ("gateway without subnet", Call::Pool(pool_req(|r| { r.subnet = "0.0.0.0/24".into(); r.gateway = "10.0.0.1".into(); })), InvalidArgument, &["gateway", "10.0.0.1", "explicit subnet"]),
        ("unknown space", Call::Pool(pool_req(|r| r.address_space = "moon".into())), InvalidArgument, &["address_space", "moon", "local"]),
        ("family mismatch", Call::Pool(pool_req(|r| r.family = pb::Family::Ipv6 as i32)), InvalidArgument, &["family", "IPv6", "10.90.0.0/24"]),
        ("unknown family", Call::Pool(pool_req(|r| r.family = 9)), InvalidArgument, &["family", "9"]),
        ("bad pool id", Call::Pool(pool_req(|r| r.pool_id = "a b".into())), InvalidArgument, &["pool_id", "a b"]),
        ("overlap", Call::Pool(pool_req(|r| r.subnet = "10.99.0.128/25".into())), AlreadyExists, &["10.99.0.128/25", "\"p\"", "10.99.0.0/24"]),
        ("any subnet too large for defaults", Call::Pool(pool_req(|r| r.subnet = "0.0.0.0/2".into())), InvalidArgument, &["subnet", "0.0.0.0/2"]),
        ("empty pool id", Call::Addr("", "o", ""), InvalidArgument, &["pool_id", "\"\""]),
        ("empty owner", Call::Addr("p", "", ""), InvalidArgument, &["owner", "\"\""]),
        ("owner too long", Call::Addr("p", "oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo", ""), InvalidArgument, &["owner", "longer than 128"]),
        ("unknown pool", Call::Addr("nope", "o", ""), NotFound, &["nope"]),
        ("address not an ip", Call::Addr("p", "o", "10.99.0.300"), InvalidArgument, &["address", "10.99.0.300"]),
        ("address outside", Call::Addr("p", "o", "10.98.0.5"), InvalidArgument, &["address", "10.98.0.5", "not inside"]),
        ("network address", Call::Addr("p", "o", "10.99.0.0"), InvalidArgument, &["address", "10.99.0.0", "network"]),
        ("broadcast address", Call::Addr("p", "o", "10.99.0.255"), InvalidArgument, &["address", "10.99.0.255", "broadcast"]),
        ("wrong family", Call::Addr("p", "o", "fd00:99::5"), InvalidArgument, &["address", "fd00:99::5"]),
        ("address taken", Call::Addr("p", "o", "10.99.0.10"), AlreadyExists, &["10.99.0.10", "holder"]),
        ("gateway taken", Call::Addr("p", "o", "10.99.0.1"), AlreadyExists, &["10.99.0.1", "gateway"]),
        ("owner holds another", Call::Addr("p", "holder", "10.99.0.11"), AlreadyExists, &["holder", "10.99.0.10"]),
        ("v6 subnet-router anycast", Call::Addr("v6", "o", "fd00:99::"), InvalidArgument, &["address", "fd00:99::", "network"]),
        ("release without target", Call::Release(pb::ReleaseAddressRequest { pool_id: "p".into(), target: None, }), InvalidArgument, &["target"]),
        ("release bad address", Call::Release(by_addr("p", "1.2.3")), InvalidArgument, &["address", "1.2.3"]),
        ("release unallocated", Call::Release(by_addr("p", "10.99.0.77")), NotFound, &["10.99.0.77", "\"p\""]),
        ("release address without pool", Call::Release(by_addr("", "10.99.0.10")), InvalidArgument, &["pool_id", "releasing by address"]),
        ("release in unknown pool", Call::Release(by_addr("gone", "10.99.0.10")), NotFound, &["gone"]),
        ("release pool in use", Call::ReleasePool("p", false), FailedPrecondition, &["\"p\"", "1 allocations"]),
        ("release pool empty id", Call::ReleasePool("", false), InvalidArgument, &["pool_id"]),
        ("release unknown pool", Call::ReleasePool("ghost", true), NotFound, &["ghost"]),
        ("page too large", Call::List(pb::ListAllocationsRequest { page_size: 20_000, ..Default::default() }), InvalidArgument, &["page_size", "20000"]),
        ("pool page too large", Call::ListPools(pb::ListPoolsRequest { page_size: 1001, ..Default::default() }), InvalidArgument, &["page_size", "1001"]),
        ("bad pool page token", Call::ListPools(pb::ListPoolsRequest { page_token: "p6g".into(), ..Default::default() }), InvalidArgument, &["page_token", "p6g"]),
        ("bad page token", Call::List(pb::ListAllocationsRequest { page_token: "garbage".into(), ..Default::default() }), InvalidArgument, &["page_token", "garbage"]),
        ("get unknown pool", Call::Get("missing"), NotFound, &["missing"]),
    ];
    assert!(cases.len() >= 30);
    for (name, call, code, needles) in cases {
        let before = snapshot(&mut c).await;
        let err = run(&mut c, call).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        for n in needles {
            assert!(
                err.message().contains(n),
                "{name}: message {:?} does not name {n:?}",
                err.message()
            );
        }
        if code == InvalidArgument {
            let details = tonic_types::StatusExt::get_error_details(&err);
            let bad = details
                .bad_request()
                .unwrap_or_else(|| panic!("{name}: no BadRequest details"));
            assert!(!bad.field_violations.is_empty(), "{name}");
        }
        assert_eq!(snapshot(&mut c).await, before, "{name}: the store changed");
    }
}
