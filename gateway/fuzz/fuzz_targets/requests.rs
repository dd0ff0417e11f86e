//! `CreateSandbox`, `CreateNetwork` and `Connect` requests decoded from any bytes, through the
//! gateway's validation and, when accepted, the rendering of resolv.conf, hosts, the agent's
//! specs and its nftables rules, read back. `weft_fuzz_oracle::check` panics on a refusal that
//! names no field of the request, or on anything rendered that does not read back as asked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_fuzz_oracle::check(data);
});
