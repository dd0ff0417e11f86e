//! The agent's reconciliation metrics (see `weft_runtime::metrics`): passes, and the drift
//! they find and repair.

use std::time::Instant;

use crate::report::{Kind, Report};

/// Counts one reconciliation pass of `depth` (`full`, `changes`, `dry_run`, `audit`) that took
/// since `started` and reported `report`: every change is drift found (and, but in a dry run,
/// repaired); every failure is drift found and not repaired.
pub(crate) fn pass(depth: &'static str, started: Instant, report: &Report) {
    if !weft_runtime::metrics::enabled() {
        return;
    }
    ::metrics::counter!("weft_agent_reconcile_runs_total", "depth" => depth).increment(1);
    ::metrics::histogram!("weft_agent_reconcile_duration_seconds", "depth" => depth)
        .record(started.elapsed().as_secs_f64());
    for c in &report.changes {
        let kind = kind_name(c.kind);
        ::metrics::counter!("weft_agent_drift_found_total", "depth" => depth, "kind" => kind)
            .increment(1);
        if depth != "dry_run" {
            ::metrics::counter!("weft_agent_drift_repaired_total", "depth" => depth, "kind" => kind)
                .increment(1);
        }
    }
    for f in &report.failures {
        let kind = kind_name(f.kind);
        ::metrics::counter!("weft_agent_drift_found_total", "depth" => depth, "kind" => kind)
            .increment(1);
        ::metrics::counter!("weft_agent_repair_failures_total", "depth" => depth, "kind" => kind)
            .increment(1);
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Netns => "netns",
        Kind::Link => "link",
        Kind::Address => "address",
        Kind::Route => "route",
        Kind::Neighbour => "neighbour",
        Kind::FdbEntry => "fdb_entry",
        Kind::File => "file",
        Kind::NftTable => "nft_table",
        Kind::NftRule => "nft_rule",
        Kind::Sysctl => "sysctl",
    }
}
