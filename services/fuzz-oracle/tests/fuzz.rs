//! A short pass of the oracle on every test run (20,000 seeded inputs); the long runs are the
//! cargo-fuzz target (`gateway/fuzz`) and the `fuzz_requests` example.

use std::collections::BTreeMap;

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

#[test]
fn a_short_fuzz_pass_finds_no_failure_and_accepts_some_of_each_request() {
    let mut rng = StdRng::seed_from_u64(0x5eed_f00d);
    let mut tally = BTreeMap::new();
    for i in 0..20_000 {
        let len = rng.random_range(0..512);
        let input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let res = std::panic::catch_unwind(|| weft_fuzz_oracle::check(&input));
        let Ok(key) = res else {
            panic!("input {i} failed: {input:?}");
        };
        *tally.entry(key).or_insert(0u32) += 1;
    }
    use weft_fuzz_oracle::{Outcome::*, Request::*};
    for r in [CreateSandbox, CreateNetwork, Connect] {
        for o in [Accepted, Refused] {
            assert!(tally.get(&(r, o)).is_some_and(|n| *n >= 100), "{tally:?}");
        }
    }
}
