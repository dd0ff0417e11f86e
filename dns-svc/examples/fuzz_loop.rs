//! The fuzz target's oracle without libFuzzer: N inputs (default 1,000,000) through
//! `dns_svc::offline::check_offline`, the same entry the cargo-fuzz target `request_path` calls.
//! Inputs are random bytes, and seed queries (A/AAAA/PTR/TXT, with and without EDNS, for both
//! listeners' names) mutated by byte flips, cuts, insertions, splices and lying counts
//! (`tests/it/fuzz_inputs.rs`, which the test suite's short pass uses too).
//!
//! Usage: `fuzz_loop [N] [seed]`; exits non-zero (a panic) on the first failing input, after
//! printing it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/it/fuzz_inputs.rs"]
mod fuzz_inputs;

use rand::{SeedableRng as _, rngs::StdRng};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = fuzz_inputs::seeds();
    let handlers = dns_svc::offline::offline_handlers();
    let started = std::time::Instant::now();
    let (mut random, mut mutated) = (0u64, 0u64);
    for i in 0..n {
        if i.is_multiple_of(4) {
            random += 1;
        } else {
            mutated += 1;
        }
        let input = fuzz_inputs::input(i, &mut rng, &seeds);
        let res = std::panic::catch_unwind(|| dns_svc::offline::check_offline(&handlers, &input));
        if res.is_err() {
            eprintln!("input {i} failed: {input:?}");
            std::process::exit(1);
        }
    }
    println!(
        "{n} inputs ({random} random, {mutated} mutated) through the request path, each to 2 \
         listeners over UDP and TCP, in {:.1} s: no failure",
        started.elapsed().as_secs_f64()
    );
}
