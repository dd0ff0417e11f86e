//! The chaos run (issue 19): `weft up` in a namespace playing the host, several clients
//! driving a mixed load (networks and sandboxes created and deleted, sandboxes connected and
//! disconnected) through the public API, and meanwhile SIGKILL to a random one of the four
//! services at random moments (seeded: the seed is printed, `WEFT_CHAOS_SEED` replays it), at
//! least 40 kills over all four. Then, once supervision has brought every service back and the
//! sweep and the reconciliation have run: every acknowledged mutation is in effect and every
//! refused one left nothing, IPAM's check and the gateway's are clean, the kernel is exactly
//! the desired state, every sandbox reaches its peers and resolves their names. Last, the run's
//! objects are deleted, `weft up` is stopped, and nothing it made is left: no process in the
//! namespace, no sandbox namespace, no sandbox file.
//!
//! Every kill, every operation and every invariant is printed.

// What the run prints is its record: the seed, each kill, each operation, each invariant.
#![allow(clippy::print_stdout)]

mod killer;
mod load;
mod replica;
mod verify;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::signal::{Signal, kill};
use weft::status::ServiceState;
use weft_runtime::access::{Authed, Bearer};

use crate::{TestNs, join::table_of, up::Weft, wait_until, world::Postgres};
use load::{Client, Counts, Model};

/// Clients of the load, each on its own task.
const CLIENTS: usize = 4;
/// How long the load and the kills go on at least.
const LOAD: Duration = Duration::from_secs(150);
/// Kills the run makes at least (it goes on past [`LOAD`] until it has made them).
const MIN_KILLS: usize = 40;

/// The seed: `WEFT_CHAOS_SEED` when set (a replay), else a new one.
fn seed() -> u64 {
    match std::env::var("WEFT_CHAOS_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("WEFT_CHAOS_SEED={s:?}: not a number ({e})")),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_secs() ^ u64::from(t.subsec_nanos()) ^ u64::from(std::process::id())
        }
    }
}

/// An admin's channel to the gateway inside `ns`.
async fn gateway(ns: &TestNs, data: &Path) -> Authed {
    gateway_at(ns, data, "127.0.0.1:7700").await
}

/// An admin's channel to the gateway replica at `addr` inside `ns`.
async fn gateway_at(ns: &TestNs, data: &Path, addr: &str) -> Authed {
    let addr: SocketAddr = addr.parse().unwrap();
    let channel = weft::dial::dial(addr, Some(&ns.path), None, Duration::from_secs(60))
        .await
        .unwrap();
    Bearer::from_file(&data.join("admin.token"))
        .unwrap()
        .on(channel)
}

/// Waits until `weft up` reports every service healthy.
fn all_healthy(data: &Path) {
    wait_until(Duration::from_secs(60), "every service healthy", || {
        let s = weft::status::read(data).ok()?;
        s.services
            .iter()
            .all(|s| s.state == ServiceState::Healthy)
            .then_some(())
    });
    println!("invariant: every service is healthy again under `weft up`");
}

/// Every invariant over the system as `model` says it should be.
fn invariants(rt: &tokio::runtime::Runtime, ns: &TestNs, data: &Path, gw: &Authed, model: &Model) {
    all_healthy(data);
    verify::consistency_is_clean(rt, gw);
    verify::ipam_is_clean(ns, data);
    let described = verify::described(rt, gw);
    verify::api_matches_model(&described, model);
    verify::kernel_matches(ns, &described);
    verify::peers_reach_each_other(&described);
}

#[test]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
fn heavy_chaos_run_kills_services_under_load_and_nothing_acknowledged_is_lost_or_leaked() {
    chaos_run(false);
}

#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: runs `weft up` and Postgres in a namespace"
)]
fn heavy_chaos_run_on_postgres_with_two_gateways_crashes_one_and_postgres_and_nothing_is_lost() {
    chaos_run(true);
}

/// The run, on SQLite or (`on_postgres`) on a Postgres in the namespace that is crashed and
/// started again half-way through the load, with a second gateway replica (half the clients
/// on it) killed and started again a third of the way through.
fn chaos_run(on_postgres: bool) {
    let seed = seed();
    println!("chaos run: seed {seed} (replay with WEFT_CHAOS_SEED={seed})");
    let ns = TestNs::named("chaos").with_lo_up();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Dropped after `weft up` is stopped (declared before it): a run that fails leaves no
    // sandbox namespace behind either.
    let _namespaces = weft_testkit::netns::SandboxNamespaces::of_data_dir(&data);
    let pg = on_postgres.then(|| Postgres::start(&ns));
    let mut flags = vec!["--host-name", "local"];
    if let Some(pg) = &pg {
        flags.extend([
            "--database-url",
            &pg.gateway_url,
            "--ipam-database-url",
            &pg.ipam_url,
        ]);
    }
    // Sagas a killed gateway left are swept after 5 s (not a minute), every 2 s; the agent
    // reconciles every 2 s: the run settles in seconds once the kills stop.
    let mut weft = Weft::start_with_env(
        &ns,
        &data,
        &flags,
        &[
            ("WEFT_GATEWAY_OPERATION_TIMEOUT", "5s"),
            ("WEFT_GATEWAY_SWEEP_INTERVAL", "2s"),
            ("WEFT_AGENT_RECONCILE_INTERVAL", "2s"),
        ],
    );
    table_of(&mut weft, "Talk to it:");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gw = rt.block_on(gateway(&ns, &data));
    // On Postgres, a second gateway replica on the same database; half the clients use it.
    let mut replica = pg
        .as_ref()
        .map(|_| replica::Replica::start(&ns, &data, dir.path().join("gateway-replica.log")));
    let gw2 = replica
        .as_ref()
        .map(|_| rt.block_on(gateway_at(&ns, &data, replica::ADDR)));

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (data, stop, counts) = (data.clone(), stop.clone(), counts.clone());
        std::thread::spawn(move || killer::run(seed, data, &stop, &counts))
    };
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let channel = match &gw2 {
                Some(second) if n % 2 == 1 => second.clone(),
                _ => gw.clone(),
            };
            let mut client = Client::new(n, seed, channel, counts.clone());
            let stop = stop.clone();
            rt.spawn(async move {
                client.run(stop).await;
                client
            })
        })
        .collect();
    let started = Instant::now();
    let mut pg_crashed = false;
    let mut replica_killed = false;
    wait_until(LOAD * 3, "the load's time and the kills", || {
        weft.assert_running();
        if let Some(pg) = pg
            .as_ref()
            .filter(|_| !pg_crashed && started.elapsed() >= LOAD / 2)
        {
            println!(
                "postgres: crashed (pg_ctl stop -m immediate) at {:?}",
                started.elapsed()
            );
            pg.crash_and_restart(&ns);
            println!("postgres: started again at {:?}", started.elapsed());
            pg_crashed = true;
        }
        if let Some(r) = replica
            .as_mut()
            .filter(|_| !replica_killed && started.elapsed() >= LOAD / 3)
        {
            println!("gateway replica 2: SIGKILL at {:?}", started.elapsed());
            r.kill_and_restart();
            replica_killed = true;
        }
        (started.elapsed() >= LOAD && counts.kills.load(Ordering::SeqCst) >= MIN_KILLS)
            .then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let kills = killer.join().unwrap();
    let mut clients: Vec<Client> = tasks.into_iter().map(|t| rt.block_on(t).unwrap()).collect();
    let total: u32 = kills.values().sum();
    println!(
        "chaos run: seed {seed}, {:?} of load; kills {total} ({kills:?}); operations {}, \
         acknowledged {}, refused {} ({} not as the model expected), attempts without a \
         definite answer {}",
        started.elapsed(),
        counts.operations.load(Ordering::SeqCst),
        counts.acknowledged.load(Ordering::SeqCst),
        counts.refused.load(Ordering::SeqCst),
        counts.unexpected.load(Ordering::SeqCst),
        counts.retries.load(Ordering::SeqCst),
    );
    assert!(total as usize >= MIN_KILLS, "{kills:?}");
    for service in killer::SERVICES {
        assert!(kills.get(service).copied().unwrap_or(0) >= 5, "{kills:?}");
    }
    weft.assert_running();

    // Peers to check, whatever the load left: each client's first network with two
    // sandboxes on it (once the sweep has released what the kills left, so that a subnet
    // whose network was deleted is free again).
    all_healthy(&data);
    verify::consistency_is_clean(&rt, &gw);
    for c in &mut clients {
        rt.block_on(c.gather());
    }
    let mut model = Model::default();
    for c in &clients {
        model.merge(c.model.clone());
    }
    invariants(&rt, &ns, &data, &gw, &model);

    // The run's objects deleted, nothing of them is left in the system or the kernel.
    let mut ids = BTreeSet::new();
    for c in &mut clients {
        rt.block_on(c.clean_up());
        ids.extend(c.ids.iter().cloned());
    }
    invariants(&rt, &ns, &data, &gw, &Model::default());
    drop(gw);
    drop(gw2);
    drop(rt);
    if let Some(r) = replica {
        r.stop();
    }
    stopped_leaving_nothing(weft, &ns, &data, &ids);
}

/// Stops `weft up` (SIGTERM: exit 0) and checks that nothing it ran or made is left: no
/// process in the namespace, no namespace of a sandbox of the run (those it created, or whose
/// ids its services logged), no sandbox file in the agent's data directory.
fn stopped_leaving_nothing(mut weft: Weft, ns: &TestNs, data: &Path, ids: &BTreeSet<String>) {
    let mut child = weft.child.take().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let status = wait_until(Duration::from_secs(60), "weft up to stop", || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "weft up: {status}\n{}", weft.output());
    let ns_link = format!("net:[{}]", std::fs::metadata(&ns.path).unwrap().ino());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        // The test's own Postgres (the Postgres run) is not weft's.
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if name.trim() == "postgres" {
            continue;
        }
        assert_ne!(
            link.to_string_lossy(),
            ns_link,
            "process {:?} is still in the namespace",
            entry.file_name()
        );
    }
    println!("invariant: no process is left in the host's namespace");
    let files: Vec<String> = std::fs::read_dir(data.join("agent").join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(files.is_empty(), "sandbox files left: {files:?}");
    println!("invariant: no sandbox file is left in the agent's data directory");
    // Namespaces: those of the run's sandboxes, and any `weft-<id>` whose id the run's
    // services logged (a sandbox whose creation a kill interrupted has an id no client saw).
    let logs: String = std::fs::read_dir(data.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let mut left = Vec::new();
    for entry in std::fs::read_dir(weft_testkit::netns::NETNS_DIR)
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("weft-") else {
            continue;
        };
        if ids.contains(id) || logs.contains(id) {
            left.push(name);
        }
    }
    assert!(left.is_empty(), "namespaces left: {left:?}");
    println!(
        "invariant: none of the run's {} sandbox namespaces is left (nor any other its logs name)",
        ids.len()
    );
}
