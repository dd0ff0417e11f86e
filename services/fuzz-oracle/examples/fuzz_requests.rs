//! The fuzz target's oracle without libFuzzer: N seeded random inputs (default 1,000,000)
//! through `weft_fuzz_oracle::check`, the same entry the cargo-fuzz target `requests` calls.
//!
//! Usage: `fuzz_requests [N] [seed] [--keep-going]`; exits non-zero on the first failing input,
//! after printing it (with `--keep-going`, counts failures and prints each distinct message
//! once).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use weft_fuzz_oracle::{Outcome, Request};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep_going = args.iter().any(|a| a == "--keep-going");
    let mut nums = args.iter().filter_map(|a| a.parse::<u64>().ok());
    let n = nums.next().unwrap_or(1_000_000);
    let seed = nums.next().unwrap_or(1);
    if keep_going {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally: BTreeMap<(Request, Outcome), u64> = BTreeMap::new();
    let mut failures = 0u64;
    let mut seen = BTreeSet::new();
    let started = std::time::Instant::now();
    for i in 0..n {
        let len = rng.random_range(0..512);
        let input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        match std::panic::catch_unwind(|| weft_fuzz_oracle::check(&input)) {
            Ok(key) => *tally.entry(key).or_insert(0) += 1,
            Err(e) if keep_going => {
                failures += 1;
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                let chars: Vec<char> = msg.chars().collect();
                let short: String = if chars.len() > 400 {
                    let head: String = chars[..120].iter().collect();
                    let tail: String = chars[chars.len() - 280..].iter().collect();
                    format!("{head} … {tail}")
                } else {
                    msg.clone()
                };
                let tail: String = chars.iter().rev().take(60).collect();
                if seen.insert(tail) {
                    println!("input {i} failed: {short}");
                }
            }
            Err(_) => {
                eprintln!("input {i} (seed {seed}) failed: {input:?}");
                std::process::exit(1);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} runs (seed {seed}) in {secs:.1} s ({:.0} runs/s), {failures} failures",
        n as f64 / secs
    );
    for r in [
        Request::CreateSandbox,
        Request::CreateNetwork,
        Request::Connect,
    ] {
        let get = |o| tally.get(&(r, o)).copied().unwrap_or(0);
        println!(
            "  {r:?}: {} accepted and read back, {} refused naming the field, {} accepted then refused by a state-dependent step",
            get(Outcome::Accepted),
            get(Outcome::Refused),
            get(Outcome::RefusedLater)
        );
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
