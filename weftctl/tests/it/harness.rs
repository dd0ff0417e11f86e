//! A real gateway and ipam-svc served in this process on loopback (SQLite stores), with the
//! test kit's fake driver-agent (which adopts a given namespace path, as the real agent does), and a way to run the built `weftctl` binary against them.

use std::{net::SocketAddr, process::Output};

use clap::Parser as _;
use weft_testkit::{TestDb, fake_agent::FakeAgent};

pub struct Stack {
    pub gateway: SocketAddr,
    pub ipam: SocketAddr,
    _dbs: (TestDb, TestDb),
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

use weft_testkit::serve;

impl Stack {
    pub async fn start() -> Self {
        let ipam_db = TestDb::sqlite();
        let gw_db = TestDb::sqlite();
        let ipam_args =
            ipam_svc::Args::try_parse_from(["ipam-svc", "--database-url", &ipam_db.url]).unwrap();
        let ipam = ipam_svc::open(&ipam_svc::Config::try_from(ipam_args).unwrap())
            .await
            .unwrap();
        let (ipam_addr, stop_ipam) =
            serve(weft_runtime::GrpcServer::new().add_service(ipam_svc::grpc::server(ipam))).await;
        let (agent_addr, stop_agent) = serve(weft_runtime::GrpcServer::new().add_service(
            weft_proto::agent::v1::agent_service_server::AgentServiceServer::new(
                FakeAgent::default(),
            ),
        ))
        .await;
        let args = gateway::Args::try_parse_from([
            "gateway",
            "--database-url",
            &gw_db.url,
            "--ipam",
            &format!("http://{ipam_addr}"),
            "--agent",
            &format!("http://{agent_addr}"),
        ])
        .unwrap();
        let gw = gateway::open(&args).await.unwrap();
        gw.ensure_predefined().await.unwrap();
        let (gw_addr, stop_gw) = serve(gateway::services(gw)).await;
        Self {
            gateway: gw_addr,
            ipam: ipam_addr,
            _dbs: (ipam_db, gw_db),
            stops: vec![stop_gw, stop_ipam, stop_agent],
        }
    }

    /// Runs `weftctl --gateway <this gateway> ARGS…`.
    pub async fn weftctl(&self, args: &[&str]) -> Run {
        let mut all = vec!["--gateway".to_owned(), format!("http://{}", self.gateway)];
        all.extend(args.iter().map(|&a| a.to_owned()));
        weftctl(&all).await
    }

    /// Like [`Stack::weftctl`], and asserts that it succeeded.
    pub async fn ok(&self, args: &[&str]) -> String {
        let r = self.weftctl(args).await;
        assert_eq!(r.code, 0, "weftctl {args:?} failed: {}", r.stderr);
        r.stdout
    }
}

/// The outcome of one weftctl run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts a failure with `code` and exactly one stderr line starting with `weftctl: `;
    /// returns that line.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit {code}: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one stderr line: {self:?}");
        assert!(lines[0].starts_with("weftctl: "), "{self:?}");
        lines[0]
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs the built weftctl with `args` (stdin closed, WEFT_GATEWAY unset).
pub async fn weftctl(args: &[String]) -> Run {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(args)
        .env_remove("WEFT_GATEWAY")
        .env_remove("WEFT_IPAM")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("weftctl runs")
        .into()
}

/// JSON Lines output, parsed.
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
