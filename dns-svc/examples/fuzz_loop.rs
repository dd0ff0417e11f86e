//! The fuzz target's oracle without libFuzzer: N inputs (default 1,000,000) through
//! `dns_svc::wire::check_offline`, the same entry the cargo-fuzz target `request_path` calls.
//! Inputs are random bytes, and seed queries (A/AAAA/PTR/TXT, with and without EDNS, for both
//! listeners' names) mutated by byte flips, cuts, insertions, splices and lying counts.
//!
//! Usage: `fuzz_loop [N] [seed]`; exits non-zero (a panic) on the first failing input, after
//! printing it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{Name, RecordType},
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for name in [
        "web.backend.weft.",
        "api.",
        "web.",
        "hidden.secret.weft.",
        "3.1.89.10.in-addr.arpa.",
        "weft.",
        "nobody.backend.",
        "x.example.",
    ] {
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::PTR,
            RecordType::TXT,
        ] {
            for edns in [None, Some((0u8, 1232u16)), Some((1, 4096)), Some((0, 100))] {
                let mut q = Message::query();
                q.add_query(Query::query(
                    Name::from_ascii(name).unwrap_or_default(),
                    qtype,
                ));
                if let Some((v, size)) = edns {
                    let mut e = Edns::new();
                    e.set_version(v);
                    e.set_max_payload(size);
                    q.set_edns(e);
                }
                if let Ok(b) = q.to_vec() {
                    out.push(b);
                }
            }
        }
    }
    out
}

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..5) {
        match rng.random_range(0..6) {
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            1 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            2 => b.truncate(rng.random_range(0..=b.len())),
            3 => {
                let i = rng.random_range(0..=b.len());
                let n = rng.random_range(1..64);
                let ins: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, ins);
            }
            4 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=other.len());
                b.extend_from_slice(&other[cut..]);
            }
            _ if b.len() >= 12 => {
                let i = 4 + 2 * rng.random_range(0..4);
                b[i] = 0;
                b[i + 1] = rng.random_range(0..4);
            }
            _ => {}
        }
    }
    // Mostly queries (QR=0), so that most inputs go past the first check.
    if b.len() > 2 && rng.random_range(0..8) != 0 {
        b[2] &= 0x7f;
    }
    b
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = seeds();
    let handlers = dns_svc::wire::offline_handlers();
    let started = std::time::Instant::now();
    let (mut random, mut mutated) = (0u64, 0u64);
    for i in 0..n {
        let input = if i % 4 == 0 {
            random += 1;
            let len = rng.random_range(0..600);
            (0..len).map(|_| rng.random()).collect()
        } else {
            mutated += 1;
            mutate(&mut rng, &seeds)
        };
        let res = std::panic::catch_unwind(|| dns_svc::wire::check_offline(&handlers, &input));
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
