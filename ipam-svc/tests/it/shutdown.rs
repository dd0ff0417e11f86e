//! Graceful shutdown of the real binary: SIGTERM turns health NOT_SERVING while calls keep being
//! served for the shutdown delay, in-flight calls finish, and the process exits 0.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use nix::sys::signal::Signal;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use weft_proto::ipam::v1::ipam_service_client::IpamServiceClient;
use weft_testkit::TestDb;

use crate::harness::{alloc, pool, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero() {
    let db = TestDb::sqlite();
    // A drain window wide enough to observe even on a loaded machine.
    let mut svc = process(&db.url, &["--shutdown-delay", "3s"]).await;
    let addr = svc.addr;
    pool(
        &mut IpamServiceClient::new(weft_testkit::channel(addr)),
        "p",
        "10.201.0.0/16",
    )
    .await;

    let signalled = Arc::new(AtomicBool::new(false));
    let served_after_signal = Arc::new(AtomicUsize::new(0));
    // Clients that have had a first call served: the signal is sent once all of them are busy.
    let clients_served = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..8 {
        let (signalled, after) = (signalled.clone(), served_after_signal.clone());
        let served = clients_served.clone();
        let mut c = IpamServiceClient::new(weft_testkit::channel(addr));
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let sent_after = signalled.load(Ordering::SeqCst);
                match alloc(&mut c, "p", &format!("c{k}-{i}"), "").await {
                    Ok(_) if sent_after => {
                        after.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        if i == 0 {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // Once the server stops accepting, calls fail with UNAVAILABLE, or are refused
                    // by the server's GOAWAY (NO_ERROR) before reaching a handler, which the
                    // client reports as an h2 error; nothing else is acceptable.
                    Err(e) => {
                        let refused =
                            e.code() == Code::Internal && format!("{e:?}").contains("GoAway");
                        assert!(
                            refused
                                || matches!(
                                    e.code(),
                                    Code::Unavailable | Code::Cancelled | Code::Unknown
                                ),
                            "{e:?}"
                        );
                        return;
                    }
                }
            }
        }));
    }
    weft_testkit::wait_for(Duration::from_secs(10), "every client served once", || {
        let n = clients_served.load(Ordering::SeqCst);
        async move { (n == 8).then_some(()) }
    })
    .await;
    signalled.store(true, Ordering::SeqCst);
    svc.signal(Signal::SIGTERM);
    weft_testkit::wait_for(Duration::from_secs(1), "health NOT_SERVING", || async {
        (weft_testkit::health(addr, "weft.ipam.v1.IpamService").await
            == Some(ServingStatus::NotServing))
        .then_some(())
    })
    .await;
    let status = svc.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}\n{}", svc.log_text());
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        served_after_signal.load(Ordering::SeqCst) > 0,
        "no call was served during the drain delay"
    );
    assert!(svc.log_text().contains("shutdown requested"));
}
