//! Sets `cfg(weft_no_root)` and `cfg(weft_no_postgres)` when this build cannot run the tests
//! that need root or Postgres, so they are ignored with their reason (see `weft-testcfg`).

fn main() {
    weft_testcfg::emit();
}
