//! Inputs for the request path's fuzz oracle (`dns_svc::offline::check_offline`), shared by the
//! `fuzz_loop` example (a million of them) and the short pass the test suite runs: random
//! bytes, and seed queries (A/AAAA/PTR/TXT, with and without EDNS, for both listeners' names)
//! mutated by byte flips, cuts, insertions, splices and lying counts.

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{Name, RecordType},
};
use rand::{Rng as _, rngs::StdRng};

pub fn seeds() -> Vec<Vec<u8>> {
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

pub fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
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

/// The `i`-th input of a run: one in four random bytes, the others mutated seeds.
pub fn input(i: u64, rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if i.is_multiple_of(4) {
        let len = rng.random_range(0..600);
        (0..len).map(|_| rng.random()).collect()
    } else {
        mutate(rng, seeds)
    }
}
