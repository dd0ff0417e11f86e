//! `kill -9` of ipam-svc under allocation load, then restart: every acknowledged allocation is
//! there, with the address that was acknowledged, and the check finds nothing wrong.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::Mutex;
use weft_proto::ipam::v1::ipam_service_client::IpamServiceClient;
use weft_testkit::{Backend, ServiceProcess, TestDb};

use crate::harness::{all_allocations, alloc, check_clean, ipam_bin, pool};

async fn crash_under_load(backend: Backend) {
    let db = TestDb::new(backend).await;
    let args = vec![
        "--insecure-plaintext".to_owned(),
        "--database-url".to_owned(),
        db.url.clone(),
    ];
    let mut svc = ServiceProcess::start(ipam_bin(), &args).await;
    let addr = svc.addr;
    pool(
        &mut IpamServiceClient::new(weft_testkit::channel(addr)),
        "p",
        "10.200.0.0/16",
    )
    .await;
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();

    for round in 0..3 {
        let mut tasks = Vec::new();
        for k in 0..16 {
            let acked = acked.clone();
            let mut c = IpamServiceClient::new(weft_testkit::channel(addr));
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let owner = format!("r{round}-c{k}-{i}");
                    match alloc(&mut c, "p", &owner, "").await {
                        Ok(a) => {
                            acked.lock().await.insert(owner, a.address);
                        }
                        // The process died under us: stop this client.
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let the load run, then kill in the middle of it.
        let target = (round + 1) * 400;
        weft_testkit::wait_for(Duration::from_secs(60), "acknowledged allocations", || {
            let acked = acked.clone();
            async move { (acked.lock().await.len() >= target).then_some(()) }
        })
        .await;
        svc.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        svc = ServiceProcess::start_at(ipam_bin(), &args, addr).await;
        let mut c = IpamServiceClient::new(weft_testkit::channel(addr));
        let stored: HashMap<String, String> = all_allocations(&mut c, "p")
            .await
            .into_iter()
            .map(|a| (a.owner, a.address))
            .collect();
        let acked = acked.lock().await;
        for (owner, address) in acked.iter() {
            assert_eq!(
                stored.get(owner),
                Some(address),
                "acknowledged {owner} = {address} lost after kill -9"
            );
        }
        check_clean(&mut c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_kill_9_under_load_loses_nothing_on_sqlite() {
    crash_under_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
async fn heavy_kill_9_under_load_loses_nothing_on_postgres() {
    crash_under_load(Backend::Postgres).await;
}
