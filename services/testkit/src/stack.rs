//! The in-process Weft control plane for tests and benchmarks: a real ipam-svc and (unless the
//! test runs its own) the fake agent, each served on loopback, each store on a fresh database;
//! then a real gateway served in this process ([`Stack`]) or the flags a test needs to run
//! gateway processes against them ([`GatewayDeps`]). Behind the `stack` feature.

use std::net::SocketAddr;

use clap::Parser as _;
use tonic::transport::Channel;
use weft_proto::{gateway::v1 as pb, ipam::v1 as ipb};
use weft_runtime::access::{Authed, Bearer};

use crate::{Backend, TestDb, channel, fake_agent::FakeAgent, serve};

/// Which agent the gateway talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentChoice {
    /// The test kit's fake agent, served in this process.
    Fake,
    /// A real agent the test starts itself at this address (after the stack).
    At(SocketAddr),
}

/// What differs between the stacks tests start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub backend: Backend,
    pub agent: AgentChoice,
    /// Flags for ipam-svc after `--database-url`.
    pub ipam_flags: Vec<String>,
    /// Flags for the in-process gateway after `--database-url`, `--ipam` and `--agent`.
    pub gateway_flags: Vec<String>,
}

impl StackOptions {
    /// Both stores on `backend`, the fake agent, no extra flags.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            agent: AgentChoice::Fake,
            ipam_flags: Vec::new(),
            gateway_flags: Vec::new(),
        }
    }

    /// The gateway talks to a real agent the test starts at `addr`.
    #[must_use]
    pub fn agent_at(mut self, addr: SocketAddr) -> Self {
        self.agent = AgentChoice::At(addr);
        self
    }

    #[must_use]
    pub fn ipam_flags(mut self, flags: &[&str]) -> Self {
        self.ipam_flags.extend(flags.iter().map(|&f| f.to_owned()));
        self
    }

    #[must_use]
    pub fn gateway_flags(mut self, flags: &[&str]) -> Self {
        self.gateway_flags
            .extend(flags.iter().map(|&f| f.to_owned()));
        self
    }

    /// ipam-svc and the agent, for gateway processes the test runs itself.
    pub async fn start_deps(&self) -> GatewayDeps {
        GatewayDeps::start(self).await
    }

    /// The whole stack, the gateway served in this process.
    pub async fn start(&self) -> Stack {
        Stack::start_opts(self).await
    }
}

/// What a gateway needs, served in this process: ipam-svc on its own store, the agent (fake
/// unless [`StackOptions::agent_at`]), and a fresh database for the gateway. Stopped on drop.
#[derive(Debug)]
pub struct GatewayDeps {
    pub ipam: SocketAddr,
    /// The gateway's `--agent` address.
    pub agent_addr: SocketAddr,
    /// The fake agent's record of calls (never served with [`AgentChoice::At`]).
    pub agent: FakeAgent,
    pub ipam_db: TestDb,
    pub gateway_db: TestDb,
    /// The admin token the gateway is started with (`--admin-token-sha256`).
    pub admin_token: String,
    /// Its credentials, for clients.
    pub admin: Bearer,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl GatewayDeps {
    pub async fn start(opts: &StackOptions) -> Self {
        let ipam_db = TestDb::new(opts.backend).await;
        let gateway_db = TestDb::new(opts.backend).await;
        let mut argv = vec![
            "ipam-svc".to_owned(),
            // Served in this process, without the binary's transport.
            "--insecure-plaintext".to_owned(),
            "--database-url".to_owned(),
            ipam_db.url.clone(),
        ];
        argv.extend(opts.ipam_flags.iter().cloned());
        let ipam_args = ipam_svc::Args::try_parse_from(argv).unwrap();
        let ipam = ipam_svc::open(&ipam_svc::Config::try_from(ipam_args).unwrap())
            .await
            .unwrap();
        let (ipam_addr, stop_ipam) =
            serve(weft_runtime::GrpcServer::new().add_service(ipam_svc::grpc::server(ipam))).await;
        let mut stops = vec![stop_ipam];
        let (agent, agent_addr) = match opts.agent {
            AgentChoice::Fake => {
                let (agent, addr, stop) = FakeAgent::serve().await;
                stops.push(stop);
                (agent, addr)
            }
            AgentChoice::At(addr) => (FakeAgent::default(), addr),
        };
        let admin_token = weft_runtime::access::new_token().unwrap();
        let admin = Bearer::new(&admin_token).unwrap();
        Self {
            ipam: ipam_addr,
            agent_addr,
            agent,
            ipam_db,
            gateway_db,
            admin_token,
            admin,
            stops,
        }
    }

    /// `--database-url DB --ipam URL --agent URL`: a gateway's flags to use these.
    pub fn gateway_args(&self) -> Vec<String> {
        vec![
            "--database-url".to_owned(),
            self.gateway_db.url.clone(),
            "--ipam".to_owned(),
            format!("http://{}", self.ipam),
            "--agent".to_owned(),
            format!("http://{}", self.agent_addr),
            "--admin-token-sha256".to_owned(),
            weft_runtime::access::token_hash(&self.admin_token),
        ]
    }

    /// A channel to `addr` whose calls carry the admin token.
    pub fn admin_channel(&self, addr: SocketAddr) -> Authed {
        self.admin.on(channel(addr))
    }
}

impl Drop for GatewayDeps {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

/// A real gateway served in this process (its predefined networks made) on [`GatewayDeps`].
#[derive(Debug)]
pub struct Stack {
    pub gateway: SocketAddr,
    pub ipam: SocketAddr,
    /// The fake agent's record of calls.
    pub agent: FakeAgent,
    gw: gateway::Gateway,
    stop_gw: Option<tokio::sync::oneshot::Sender<()>>,
    deps: GatewayDeps,
    agent_tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(s) = self.stop_gw.take() {
            let _ = s.send(());
        }
    }
}

impl Stack {
    /// The stack on `backend` with the fake agent and no extra flags.
    pub async fn start(backend: Backend) -> Self {
        StackOptions::new(backend).start().await
    }

    async fn start_opts(opts: &StackOptions) -> Self {
        let deps = GatewayDeps::start(opts).await;
        let mut argv = vec!["gateway".to_owned()];
        argv.extend(deps.gateway_args());
        argv.extend(opts.gateway_flags.iter().cloned());
        let args = gateway::Args::try_parse_from(argv).unwrap();
        let gw = gateway::open(&args).await.unwrap();
        gw.ensure_predefined().await.unwrap();
        let (gateway, stop_gw) = serve(gateway::services(gw.clone())).await;
        Self {
            gateway,
            ipam: deps.ipam,
            agent: deps.agent.clone(),
            gw,
            stop_gw: Some(stop_gw),
            deps,
            agent_tokens: Default::default(),
        }
    }

    /// The gateway itself, for what no RPC triggers (the heartbeat check).
    pub fn gateway_handle(&self) -> &gateway::Gateway {
        &self.gw
    }

    /// ipam-svc, the agent and the databases under the gateway.
    pub fn deps(&self) -> &GatewayDeps {
        &self.deps
    }

    /// The newest event revision.
    pub async fn events_revision(&self) -> u64 {
        self.networks()
            .list_networks(pb::ListNetworksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .revision
    }

    pub fn networks(&self) -> pb::network_service_client::NetworkServiceClient<Authed> {
        pb::network_service_client::NetworkServiceClient::new(self.deps.admin_channel(self.gateway))
    }

    pub fn sandboxes(&self) -> pb::sandbox_service_client::SandboxServiceClient<Authed> {
        pb::sandbox_service_client::SandboxServiceClient::new(self.deps.admin_channel(self.gateway))
    }

    pub fn hosts(&self) -> pb::host_service_client::HostServiceClient<Authed> {
        pb::host_service_client::HostServiceClient::new(self.deps.admin_channel(self.gateway))
    }

    /// The registry as `host`'s agent (a token of role agent for that host, made once).
    pub async fn registry_for(
        &self,
        host: &str,
    ) -> pb::agent_registry_service_client::AgentRegistryServiceClient<Authed> {
        let bearer = self.agent_bearer(host).await;
        pb::agent_registry_service_client::AgentRegistryServiceClient::new(
            bearer.on(channel(self.gateway)),
        )
    }

    /// Credentials of role agent for `host`.
    pub async fn agent_bearer(&self, host: &str) -> Bearer {
        Bearer::new(&self.agent_token(host).await).unwrap()
    }

    /// A token of role agent for `host` (made once).
    pub async fn agent_token(&self, host: &str) -> String {
        if let Some(t) = self.agent_tokens.lock().unwrap().get(host) {
            return t.clone();
        }
        let (_, token) = self
            .gw
            .tokens()
            .create(
                &format!("agent-{}", host.to_ascii_lowercase()),
                weft_runtime::access::Role::Agent,
                host,
                "test",
            )
            .await
            .unwrap();
        self.agent_tokens
            .lock()
            .unwrap()
            .insert(host.to_owned(), token.clone());
        token
    }

    /// A file (0600, in `dir`) holding a token of role agent for `host`: an agent process's
    /// `--gateway-token-file`.
    pub async fn agent_token_file(&self, host: &str, dir: &std::path::Path) -> std::path::PathBuf {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let path = dir.join(format!("agent-{host}.token"));
        if !path.exists() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap();
            writeln!(f, "{}", self.agent_token(host).await).unwrap();
        }
        path
    }

    pub fn events(&self) -> pb::event_service_client::EventServiceClient<Authed> {
        pb::event_service_client::EventServiceClient::new(self.deps.admin_channel(self.gateway))
    }

    /// Clients with other credentials than the admin's.
    pub fn channel_as(&self, bearer: &Bearer) -> Authed {
        bearer.on(channel(self.gateway))
    }

    pub fn ipam(&self) -> ipb::ipam_service_client::IpamServiceClient<Channel> {
        ipb::ipam_service_client::IpamServiceClient::new(channel(self.ipam))
    }
}
