//! Build-time probe shared by every crate with tests that need root or Postgres.
//!
//! A crate's `build.rs` calls [`emit`]. It declares two cfgs and sets them when the build cannot
//! run such tests:
//!
//! - `weft_no_root`: the build runs with an effective uid other than 0. Tests that create
//!   network namespaces, links or nftables, or start `weft up`, carry
//!   `#[cfg_attr(weft_no_root, ignore = "needs root: …")]`.
//! - `weft_no_postgres`: `WEFT_TEST_DATABASE_URL` is not set at build time. Tests on the
//!   throwaway Postgres carry `#[cfg_attr(weft_no_postgres, ignore = "needs Postgres: …")]`.
//!
//! Ignored tests are counted and printed, with their reason, by `cargo test` and
//! `cargo nextest`. `scripts/test.sh` (root, Postgres started) sets `WEFT_TEST_REQUIRE_ALL=1`:
//! then a build that would skip anything fails here instead, so CI never skips silently.
//!
//! Cargo reruns a build script only on what it was told to watch. The environment variables are
//! watched exactly; the uid is not something Cargo can watch, so `USER` and `HOME` stand in for
//! it (both change under `sudo -i`, `su -`, `runuser -l`). A build for another user normally
//! uses another target directory anyway, since a root-owned one is not writable.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;

/// The variable naming the throwaway Postgres server (scripts/pg-up.sh prints it).
pub const DATABASE_URL_VAR: &str = "WEFT_TEST_DATABASE_URL";

/// Set to `1` by scripts/test.sh: skipping anything is then a build error.
pub const REQUIRE_ALL_VAR: &str = "WEFT_TEST_REQUIRE_ALL";

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub root: bool,
    pub postgres: bool,
}

impl Probe {
    /// Probes the running build script: its effective uid and its environment.
    pub fn current() -> Self {
        Self {
            root: effective_uid() == Some(0),
            postgres: std::env::var_os(DATABASE_URL_VAR).is_some_and(|v| !v.is_empty()),
        }
    }

    /// The Cargo directives for this probe (one per line), or the reason the build must fail
    /// when `require_all` is set and something would be skipped.
    pub fn directives(self, require_all: bool) -> Result<String, String> {
        let mut skipped = Vec::new();
        if !self.root {
            skipped.push("tests that need root (the build does not run as uid 0)".to_owned());
        }
        if !self.postgres {
            skipped.push(format!(
                "tests that need Postgres ({DATABASE_URL_VAR} is not set)"
            ));
        }
        if require_all && !skipped.is_empty() {
            return Err(format!(
                "{REQUIRE_ALL_VAR}=1 but this build would skip {}: run scripts/test.sh as root",
                skipped.join(" and ")
            ));
        }
        let mut out = String::new();
        for var in [DATABASE_URL_VAR, REQUIRE_ALL_VAR, "USER", "HOME"] {
            let _ = writeln!(out, "cargo::rerun-if-env-changed={var}");
        }
        out.push_str("cargo::rustc-check-cfg=cfg(weft_no_root)\n");
        out.push_str("cargo::rustc-check-cfg=cfg(weft_no_postgres)\n");
        if !self.root {
            out.push_str("cargo::rustc-cfg=weft_no_root\n");
        }
        if !self.postgres {
            out.push_str("cargo::rustc-cfg=weft_no_postgres\n");
        }
        Ok(out)
    }
}

/// Prints the directives for the current build; panics (failing the build) with the reason when
/// `WEFT_TEST_REQUIRE_ALL=1` and something would be skipped.
pub fn emit() {
    let require_all = std::env::var(REQUIRE_ALL_VAR).is_ok_and(|v| v == "1");
    match Probe::current().directives(require_all) {
        Ok(out) => print!("{out}"),
        Err(why) => panic!("{why}"),
    }
}

/// The effective uid, from the `Uid:` line of /proc/self/status (real, effective, saved, fs).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_effective_uid(&status)
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_the_second_field_of_the_uid_line() {
        let status = "Name:\tcargo\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t5\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t5\tx\n"), None);
    }

    #[test]
    fn a_normal_user_without_postgres_sets_both_cfgs() {
        let out = Probe {
            root: false,
            postgres: false,
        }
        .directives(false)
        .unwrap();
        assert!(out.contains("cargo::rustc-cfg=weft_no_root\n"));
        assert!(out.contains("cargo::rustc-cfg=weft_no_postgres\n"));
        assert!(out.contains("cargo::rustc-check-cfg=cfg(weft_no_root)\n"));
        assert!(out.contains("cargo::rerun-if-env-changed=WEFT_TEST_DATABASE_URL\n"));
        assert!(out.contains("cargo::rerun-if-env-changed=USER\n"));
    }

    #[test]
    fn root_with_postgres_skips_nothing_even_when_everything_is_required() {
        let out = Probe {
            root: true,
            postgres: true,
        }
        .directives(true)
        .unwrap();
        assert!(!out.contains("rustc-cfg=weft_no"), "{out}");
        assert!(out.contains("cargo::rustc-check-cfg=cfg(weft_no_postgres)\n"));
    }

    #[test]
    fn requiring_everything_refuses_a_build_that_would_skip() {
        let err = Probe {
            root: true,
            postgres: false,
        }
        .directives(true)
        .unwrap_err();
        assert!(err.contains("WEFT_TEST_DATABASE_URL is not set"), "{err}");
        assert!(!err.contains("need root"), "{err}");
        let err = Probe {
            root: false,
            postgres: true,
        }
        .directives(true)
        .unwrap_err();
        assert!(err.contains("need root"), "{err}");
    }
}
