//! The chaos run's killer: SIGKILL to one of the four services (its PID from `weft up`'s
//! status file) at random moments, from a seeded generator. The services are taken in rounds,
//! each round the four in a random order, so the kills spread over all of them; a service is
//! killed only while it is healthy (a kill during its restart would only stretch the backoff)
//! and only while its run of exits stays clear of `weft up`'s crash-loop limit (giving up is
//! `weft up`'s documented answer to a crash loop, not what this run tests).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};
use weft::status::ServiceState;

use super::load::Counts;

pub(crate) const SERVICES: [&str; 4] = ["gateway", "ipam-svc", "driver-agent", "dns-svc"];
/// The shortest and longest pause between two kills, in milliseconds.
const PAUSE_MS: std::ops::Range<u64> = 300..3_000;

/// Kills by service.
pub(crate) type Kills = BTreeMap<&'static str, u32>;

/// Kills services until `stop` is set (counting them in `counts.kills`).
pub(crate) fn run(seed: u64, data: PathBuf, stop: &Arc<AtomicBool>, counts: &Arc<Counts>) -> Kills {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut kills = Kills::new();
    let mut total = 0;
    let mut round: Vec<&'static str> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.random_range(PAUSE_MS)));
        if round.is_empty() {
            round = SERVICES.to_vec();
            round.shuffle(&mut rng);
        }
        let service = round[round.len() - 1];
        let Ok(status) = weft::status::read(&data) else {
            continue;
        };
        let row = status.services.iter().find(|s| s.name == service).unwrap();
        let limit = weft::policy::CRASH_LIMIT - 3;
        let (ServiceState::Healthy, Some(pid), true) =
            (row.state, row.pid, row.exits_in_a_row < limit)
        else {
            // Its turn waits until it is healthy again.
            continue;
        };
        round.pop();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        total += 1;
        counts.kills.fetch_add(1, Ordering::SeqCst);
        *kills.entry(service).or_default() += 1;
        println!(
            "kill {total}: {service} (pid {pid}) at {:.1}s, {} operation(s) in flight, its \
             exits in a row before: {}",
            started.elapsed().as_secs_f64(),
            counts.in_flight.load(Ordering::SeqCst),
            row.exits_in_a_row
        );
    }
    kills
}
