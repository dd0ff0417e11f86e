//! Starts ipam-svc in-process (engine + real gRPC server on 127.0.0.1:0) or as a process.

use std::{net::SocketAddr, time::Duration};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use weft_proto::ipam::v1::{self as pb, ipam_service_client::IpamServiceClient};
use weft_runtime::grpc::ShutdownTiming;
use weft_testkit::{Backend, TestDb};

pub type Client = IpamServiceClient<Channel>;

/// An ipam-svc served in this process.
pub struct InProc {
    pub addr: SocketAddr,
    db: Option<TestDb>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl InProc {
    pub async fn start(backend: Backend) -> Self {
        let db = TestDb::new(backend).await;
        Self::start_on(db).await
    }

    pub async fn start_on(db: TestDb) -> Self {
        let config = config(&db.url);
        let ipam = ipam_svc::open(&config).await.unwrap();
        let (listener, addr) = weft_runtime::GrpcServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let timing = ShutdownTiming {
            delay: Duration::ZERO,
            grace: Duration::from_secs(5),
        };
        let task = tokio::spawn(async move {
            let db = ipam.db().clone();
            ipam_svc::serve(ipam, listener, timing, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
            db.close().await;
        });
        Self {
            addr,
            db: Some(db),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn client(&self) -> Client {
        IpamServiceClient::new(weft_testkit::channel(self.addr))
    }

    /// Stops the server and closes the store (so the same database can be opened again).
    pub async fn stop(mut self) -> TestDb {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.db.take().unwrap()
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn config(url: &str) -> ipam_svc::Config {
    use clap::Parser as _;
    let args =
        ipam_svc::Args::try_parse_from(["ipam-svc", "--insecure-plaintext", "--database-url", url])
            .unwrap();
    ipam_svc::Config::try_from(args).unwrap()
}

pub async fn pool(c: &mut Client, id: &str, subnet: &str) -> pb::Pool {
    c.request_pool(pb::RequestPoolRequest {
        pool_id: id.into(),
        subnet: subnet.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("pool {subnet}: {e}"))
    .into_inner()
}

pub async fn alloc(
    c: &mut Client,
    pool: &str,
    owner: &str,
    address: &str,
) -> Result<pb::Allocation, tonic::Status> {
    c.request_address(pb::RequestAddressRequest {
        pool_id: pool.into(),
        owner: owner.into(),
        address: address.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Every allocation, through all pages.
pub async fn all_allocations(c: &mut Client, pool: &str) -> Vec<pb::Allocation> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let resp = c
            .list_allocations(pb::ListAllocationsRequest {
                pool_id: pool.into(),
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(resp.allocations);
        if resp.next_page_token.is_empty() {
            return out;
        }
        token = resp.next_page_token;
    }
}

pub async fn check_clean(c: &mut Client) -> pb::CheckResponse {
    let r = c.check(pb::CheckRequest {}).await.unwrap().into_inner();
    assert_eq!(
        r.problems_count, 0,
        "check found problems: {:?}",
        r.problems
    );
    r
}

pub fn ipam_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ipam-svc")
}

/// Starts the real ipam-svc binary on `url`.
pub async fn process(url: &str, extra: &[&str]) -> weft_testkit::ServiceProcess {
    let mut args = vec![
        "--insecure-plaintext".to_owned(),
        "--database-url".to_owned(),
        url.to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    weft_testkit::ServiceProcess::start(ipam_bin(), &args).await
}

/// Sends `total` allocation requests (owners `o0`…) from one task per client, each client taking
/// every n-th request; returns the addresses handed out and the RESOURCE_EXHAUSTED count. Any
/// other error fails the test.
pub async fn fill_concurrently(
    clients: Vec<Client>,
    pool: &str,
    total: usize,
) -> (Vec<String>, usize) {
    let n = clients.len();
    let mut tasks = Vec::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        let pool = pool.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut exhausted = 0;
            for i in (k..total).step_by(n) {
                match alloc(&mut c, &pool, &format!("o{i}"), "").await {
                    Ok(a) => ok.push(a.address),
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => exhausted += 1,
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
    (addrs, exhausted)
}
