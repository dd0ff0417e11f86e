//! Three ipam-svc processes on one Postgres: 48 concurrent clients fill a /22 plus 50 more
//! requests. The database's constraints, not any process, keep it exact.

use std::collections::HashSet;

use weft_proto::ipam::v1::ipam_service_client::IpamServiceClient;
use weft_testkit::TestDb;

use crate::harness::{check_clean, fill_concurrently, pool, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
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

    let clients = (0..48)
        .map(|k| IpamServiceClient::new(weft_testkit::channel(replicas[k % 3].addr)))
        .collect();
    let (addrs, exhausted) = fill_concurrently(clients, "p", total).await;
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
