//! Three ipam-svc processes on one Postgres: 48 concurrent clients fill a /22 plus 50 more
//! requests. The database's constraints, not any process, keep it exact.

use std::collections::HashSet;

use tonic::Code;
use weft_proto::ipam::v1::ipam_service_client::IpamServiceClient;
use weft_testkit::TestDb;

use crate::harness::{alloc, check_clean, pool, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_three_replicas_on_postgres_never_duplicate() {
    let db = TestDb::postgres().await;
    let replicas = vec![
        process(&db.url, &[]).await,
        process(&db.url, &[]).await,
        process(&db.url, &[]).await,
    ];
    let mut c0 = IpamServiceClient::new(weft_testkit::channel(replicas[0].addr));
    pool(&mut c0, "p", "10.128.0.0/22").await;
    let usable = 1024 - 3;
    let total = usable + 50;

    let mut tasks = Vec::new();
    for k in 0..48 {
        let mut c = IpamServiceClient::new(weft_testkit::channel(replicas[k % 3].addr));
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut exhausted = 0;
            for i in (k..total).step_by(48) {
                match alloc(&mut c, "p", &format!("o{i}"), "").await {
                    Ok(a) => ok.push(a.address),
                    Err(e) if e.code() == Code::ResourceExhausted => exhausted += 1,
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            (ok, exhausted)
        }));
    }
    let mut addrs = Vec::new();
    let mut exhausted = 0;
    for t in tasks {
        let (ok, ex) = t.await.unwrap();
        addrs.extend(ok);
        exhausted += ex;
    }
    assert_eq!(addrs.len(), usable);
    assert_eq!(exhausted, 50);
    assert_eq!(addrs.iter().collect::<HashSet<_>>().len(), usable);

    // And in SQL, straight from the database.
    let pg = weft_store::Db::open(&db.url, &weft_store::StoreOptions::default())
        .await
        .unwrap();
    let dups: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pool_id, address FROM ipam_allocations \
         GROUP BY pool_id, address HAVING COUNT(*) > 1) d",
    )
    .fetch_one(pg.read())
    .await
    .unwrap();
    assert_eq!(dups, 0);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ipam_allocations")
        .fetch_one(pg.read())
        .await
        .unwrap();
    assert_eq!(rows, usable as i64);
    for r in &replicas {
        check_clean(&mut IpamServiceClient::new(weft_testkit::channel(r.addr))).await;
    }
}
