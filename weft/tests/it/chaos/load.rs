//! The chaos run's load: clients that each own a few networks and sandboxes (their names carry
//! the client's number, so no two clients race for one object and each keeps an exact model of
//! its own) and drive the public API with a mixed load. Every mutation carries a request id and
//! is retried, with that same id, until it gets a definite answer: acknowledged (the model
//! takes it) or refused (the model stays as it was, and the run checks that it left nothing).

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::IndexedRandom as _};
use tonic::{Code, Status};
use weft_proto::gateway::v1::{
    self as pb, network_service_client::NetworkServiceClient,
    sandbox_service_client::SandboxServiceClient,
};
use weft_runtime::access::Authed;

/// Every network and sandbox of the run has this prefix.
pub(crate) const PREFIX: &str = "chaos-";
/// Networks one client holds at most.
const MAX_NETWORKS: usize = 3;
/// Sandboxes one client holds at most.
const MAX_SANDBOXES: usize = 4;
/// How long one call may take before it is abandoned (and retried).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an operation may go without a definite answer before the run fails.
const ANSWER_WITHIN: Duration = Duration::from_secs(180);
/// Between two attempts of one operation.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// A sandbox as the model knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SandboxModel {
    pub(crate) networks: BTreeSet<String>,
    /// Its published TCP host port.
    pub(crate) port: Option<u32>,
}

/// What one client's acknowledged operations imply.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// Network name → its subnet.
    pub(crate) networks: BTreeMap<String, String>,
    pub(crate) sandboxes: BTreeMap<String, SandboxModel>,
}

impl Model {
    fn users_of(&self, network: &str) -> usize {
        self.sandboxes
            .values()
            .filter(|s| s.networks.contains(network))
            .count()
    }

    /// Another client's model merged into this one (their names never overlap).
    pub(crate) fn merge(&mut self, other: Model) {
        self.networks.extend(other.networks);
        self.sandboxes.extend(other.sandboxes);
    }
}

/// What the run counted.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) operations: AtomicUsize,
    pub(crate) acknowledged: AtomicUsize,
    pub(crate) refused: AtomicUsize,
    /// Refused when the model expected an acknowledgement, or the other way round.
    pub(crate) unexpected: AtomicUsize,
    /// Attempts that got no definite answer (and were retried).
    pub(crate) retries: AtomicUsize,
    /// Operations being called right now (the killer prints it: kills land mid-saga).
    pub(crate) in_flight: AtomicUsize,
    /// Services killed so far.
    pub(crate) kills: AtomicUsize,
}

/// One client of the load.
pub(crate) struct Client {
    pub(crate) n: usize,
    seed: u64,
    rng: StdRng,
    networks: NetworkServiceClient<Authed>,
    sandboxes: SandboxServiceClient<Authed>,
    pub(crate) model: Model,
    counts: Arc<Counts>,
    /// Operations this client started (its request ids' numbers).
    ops: u64,
    /// Sandboxes this client created so far (their names' numbers).
    made: u64,
    /// Ids of the sandboxes it created.
    pub(crate) ids: BTreeSet<String>,
}

/// One mutation and the model's expectation of it.
#[derive(Debug, Clone)]
enum Op {
    CreateNetwork {
        name: String,
        subnet: String,
    },
    DeleteNetwork {
        name: String,
    },
    CreateSandbox {
        name: String,
        networks: Vec<String>,
        port: Option<u32>,
    },
    DeleteSandbox {
        name: String,
    },
    Connect {
        sandbox: String,
        network: String,
    },
    Disconnect {
        sandbox: String,
        network: String,
    },
}

impl Client {
    pub(crate) fn new(n: usize, seed: u64, channel: Authed, counts: Arc<Counts>) -> Self {
        Self {
            n,
            seed,
            rng: StdRng::seed_from_u64(seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            networks: NetworkServiceClient::new(channel.clone()),
            sandboxes: SandboxServiceClient::new(channel),
            model: Model::default(),
            counts,
            ops: 0,
            made: 0,
            ids: BTreeSet::new(),
        }
    }

    /// Runs operations until `stop` is set.
    pub(crate) async fn run(&mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            let (op, expect_ok) = self.next_op();
            self.apply(op, expect_ok).await;
        }
    }

    /// Makes sure the model has peers to check, whatever state the load left: two new
    /// sandboxes on its first network (made if there is none), each acknowledged.
    pub(crate) async fn gather(&mut self) {
        if self.model.networks.is_empty() {
            let name = self.network_name(0);
            let subnet = format!("10.{}.0.0/24", 60 + self.n);
            self.apply(Op::CreateNetwork { name, subnet }, true).await;
        }
        let network = self.model.networks.keys().next().unwrap().clone();
        for _ in 0..2 {
            self.made += 1;
            let name = format!("{PREFIX}c{}-s{}", self.n, self.made);
            let networks = vec![network.clone()];
            self.apply(
                Op::CreateSandbox {
                    name,
                    networks,
                    port: None,
                },
                true,
            )
            .await;
        }
        let on = self.model.users_of(&network);
        assert!(on >= 2, "client {}: {network} has {on} sandbox(es)", self.n);
    }

    /// Deletes every sandbox and network of the model (acknowledged, each).
    pub(crate) async fn clean_up(&mut self) {
        let sandboxes: Vec<String> = self.model.sandboxes.keys().cloned().collect();
        for name in sandboxes {
            self.apply(Op::DeleteSandbox { name }, true).await;
        }
        let networks: Vec<String> = self.model.networks.keys().cloned().collect();
        for name in networks {
            self.apply(Op::DeleteNetwork { name }, true).await;
        }
        assert!(
            self.model.networks.is_empty() && self.model.sandboxes.is_empty(),
            "client {}: clean-up refused: {:?}",
            self.n,
            self.model
        );
    }

    /// The next operation, chosen at random among those the model allows, and whether the
    /// model expects it acknowledged (a few are meant to be refused).
    fn next_op(&mut self) -> (Op, bool) {
        let m = &self.model;
        let nets: Vec<String> = m.networks.keys().cloned().collect();
        let sbxs: Vec<String> = m.sandboxes.keys().cloned().collect();
        loop {
            match self.rng.random_range(0..100) {
                0..15 if nets.len() < MAX_NETWORKS => {
                    let slot = (0..MAX_NETWORKS)
                        .find(|s| !m.networks.contains_key(&self.network_name(*s)))
                        .unwrap();
                    let name = self.network_name(slot);
                    let subnet = format!("10.{}.{slot}.0/24", 60 + self.n);
                    return (Op::CreateNetwork { name, subnet }, true);
                }
                15..25 if !nets.is_empty() => {
                    let name = nets.choose(&mut self.rng).unwrap().clone();
                    let ok = m.users_of(&name) == 0;
                    return (Op::DeleteNetwork { name }, ok);
                }
                25..45 if sbxs.len() < MAX_SANDBOXES => {
                    self.made += 1;
                    let name = format!("{PREFIX}c{}-s{}", self.n, self.made);
                    let count = self.rng.random_range(0..=nets.len().min(2));
                    let networks: Vec<String> = nets
                        .choose_multiple(&mut self.rng, count)
                        .cloned()
                        .collect();
                    let port = self
                        .rng
                        .random_bool(0.5)
                        .then(|| 30_000 + 1_000 * self.n as u32 + self.made as u32);
                    return (
                        Op::CreateSandbox {
                            name,
                            networks,
                            port,
                        },
                        true,
                    );
                }
                45..60 if !sbxs.is_empty() => {
                    let name = sbxs.choose(&mut self.rng).unwrap().clone();
                    return (Op::DeleteSandbox { name }, true);
                }
                60..85 if !sbxs.is_empty() && !nets.is_empty() => {
                    let sandbox = sbxs.choose(&mut self.rng).unwrap().clone();
                    let network = nets.choose(&mut self.rng).unwrap().clone();
                    // Connected already: ALREADY_EXISTS, by design.
                    let ok = !m.sandboxes[&sandbox].networks.contains(&network);
                    return (Op::Connect { sandbox, network }, ok);
                }
                85..100 if !sbxs.is_empty() => {
                    let sandbox = sbxs.choose(&mut self.rng).unwrap().clone();
                    let on: Vec<&String> = m.sandboxes[&sandbox].networks.iter().collect();
                    let Some(network) = on.choose(&mut self.rng).map(|n| (*n).clone()) else {
                        continue;
                    };
                    return (Op::Disconnect { sandbox, network }, true);
                }
                _ => {}
            }
        }
    }

    fn network_name(&self, slot: usize) -> String {
        format!("{PREFIX}c{}-n{slot}", self.n)
    }

    /// Calls `op` until it has a definite answer, prints it, and updates the model.
    async fn apply(&mut self, op: Op, expect_ok: bool) {
        self.ops += 1;
        let request_id = format!("chaos-{}-{}-{}", self.seed, self.n, self.ops);
        let started = Instant::now();
        self.counts.operations.fetch_add(1, Ordering::SeqCst);
        self.counts.in_flight.fetch_add(1, Ordering::SeqCst);
        let (answer, attempts) = self.call(&op, &request_id).await;
        self.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        let outcome = match &answer {
            Ok(id) => {
                self.counts.acknowledged.fetch_add(1, Ordering::SeqCst);
                self.ids.extend(id.clone());
                self.take(&op);
                "acknowledged".to_owned()
            }
            Err(st) => {
                self.counts.refused.fetch_add(1, Ordering::SeqCst);
                format!("refused {:?}: {}", st.code(), st.message())
            }
        };
        let surprise = if answer.is_ok() == expect_ok {
            ""
        } else {
            self.counts.unexpected.fetch_add(1, Ordering::SeqCst);
            " (UNEXPECTED)"
        };
        println!(
            "op {request_id}: {op:?}: {outcome}{surprise} after {attempts} attempt(s), {:?}",
            started.elapsed()
        );
    }

    /// The model after an acknowledged `op`.
    fn take(&mut self, op: &Op) {
        let m = &mut self.model;
        match op.clone() {
            Op::CreateNetwork { name, subnet } => {
                m.networks.insert(name, subnet);
            }
            Op::DeleteNetwork { name } => {
                m.networks.remove(&name);
            }
            Op::CreateSandbox {
                name,
                networks,
                port,
            } => {
                let networks = networks.into_iter().collect();
                m.sandboxes.insert(name, SandboxModel { networks, port });
            }
            Op::DeleteSandbox { name } => {
                m.sandboxes.remove(&name);
            }
            Op::Connect { sandbox, network } => {
                m.sandboxes
                    .get_mut(&sandbox)
                    .unwrap()
                    .networks
                    .insert(network);
            }
            Op::Disconnect { sandbox, network } => {
                m.sandboxes
                    .get_mut(&sandbox)
                    .unwrap()
                    .networks
                    .remove(&network);
            }
        }
    }

    /// One operation, retried with the same request id until its answer is definite.
    async fn call(&self, op: &Op, request_id: &str) -> (Result<Option<String>, Status>, u32) {
        let rid = request_id.to_owned();
        let (nets, sbxs) = (self.networks.clone(), self.sandboxes.clone());
        match op.clone() {
            Op::CreateNetwork { name, subnet } => {
                let req = pb::CreateNetworkRequest {
                    name,
                    driver: "bridge".into(),
                    ipam: Some(pb::Ipam {
                        configs: vec![pb::IpamConfig {
                            subnet,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    request_id: rid,
                    ..Default::default()
                };
                self.definite(request_id, || {
                    let (mut c, r) = (nets.clone(), req.clone());
                    async move { c.create_network(r).await.map(|_| None) }
                })
                .await
            }
            Op::DeleteNetwork { name } => {
                let req = pb::DeleteNetworkRequest {
                    network: name,
                    request_id: rid,
                };
                self.definite(request_id, || {
                    let (mut c, r) = (nets.clone(), req.clone());
                    async move { c.delete_network(r).await.map(|_| None) }
                })
                .await
            }
            Op::CreateSandbox {
                name,
                networks,
                port,
            } => {
                let req = pb::CreateSandboxRequest {
                    name,
                    networks: networks
                        .into_iter()
                        .map(|network| pb::NetworkAttachment {
                            network,
                            settings: None,
                        })
                        .collect(),
                    port_mappings: port
                        .map(|host_port| pb::PortMapping {
                            host_port,
                            container_port: 80,
                            ..Default::default()
                        })
                        .into_iter()
                        .collect(),
                    request_id: rid,
                    ..Default::default()
                };
                self.definite(request_id, || {
                    let (mut c, r) = (sbxs.clone(), req.clone());
                    async move { c.create_sandbox(r).await.map(|s| Some(s.into_inner().id)) }
                })
                .await
            }
            Op::DeleteSandbox { name } => {
                let req = pb::DeleteSandboxRequest {
                    sandbox: name,
                    request_id: rid,
                };
                self.definite(request_id, || {
                    let (mut c, r) = (sbxs.clone(), req.clone());
                    async move { c.delete_sandbox(r).await.map(|_| None) }
                })
                .await
            }
            Op::Connect { sandbox, network } => {
                let req = pb::ConnectRequest {
                    sandbox,
                    network,
                    request_id: rid,
                    ..Default::default()
                };
                self.definite(request_id, || {
                    let (mut c, r) = (sbxs.clone(), req.clone());
                    async move { c.connect(r).await.map(|_| None) }
                })
                .await
            }
            Op::Disconnect { sandbox, network } => {
                let req = pb::DisconnectRequest {
                    sandbox,
                    network,
                    force: false,
                    request_id: rid,
                };
                self.definite(request_id, || {
                    let (mut c, r) = (sbxs.clone(), req.clone());
                    async move { c.disconnect(r).await.map(|_| None) }
                })
                .await
            }
        }
    }

    /// Calls `f` until its answer is definite (anything but a transport failure, UNAVAILABLE
    /// or a timeout); the answer and the attempts it took.
    async fn definite<T, F, Fut>(&self, what: &str, mut f: F) -> (Result<T, Status>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + ANSWER_WITHIN;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let why = match tokio::time::timeout(CALL_TIMEOUT, f()).await {
                Ok(Err(st)) if indefinite(&st) => format!("{:?}: {}", st.code(), st.message()),
                Ok(answer) => return (answer, attempts),
                Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
            };
            self.counts.retries.fetch_add(1, Ordering::SeqCst);
            println!("op {what}: attempt {attempts} got no definite answer ({why}): retrying");
            assert!(
                Instant::now() < deadline,
                "op {what}: no definite answer within {ANSWER_WITHIN:?}"
            );
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// Whether `st` says nothing about the outcome: the call may or may not have been applied.
fn indefinite(st: &Status) -> bool {
    match st.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => true,
        // The connection died under the call (h2's own errors surface as INTERNAL).
        Code::Internal => {
            let m = st.message();
            m.contains("h2 protocol error") || m.contains("transport error")
        }
        _ => false,
    }
}
