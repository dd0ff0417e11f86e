//! A short pass of the request path's fuzz oracle, so that CI runs it on every change; the long
//! runs are the cargo-fuzz target and the `fuzz_loop` example (see the README).

use rand::{SeedableRng as _, rngs::StdRng};

use crate::fuzz_inputs;

#[test]
fn a_short_fuzz_pass_finds_no_failure() {
    let handlers = dns_svc::offline::offline_handlers();
    let seeds = fuzz_inputs::seeds();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for i in 0..100_000 {
        let input = fuzz_inputs::input(i, &mut rng, &seeds);
        let res = std::panic::catch_unwind(|| dns_svc::offline::check_offline(&handlers, &input));
        assert!(res.is_ok(), "input {i} failed: {input:?}");
    }
}
