//! dns-svc's metrics (see `weft_runtime::metrics`): the query counters it keeps anyway
//! ([`crate::stats`]), read at scrape time, and the time each query takes, by listener: the
//! sandboxes' (127.0.0.11 inside each) or the operator's.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use ::metrics::Histogram;

use weft_runtime::metrics::{CollectorGuard, Family, Kind};

use crate::resolver::Resolver;

/// Adds the query counters to every scrape, when this process serves metrics, while the
/// guard is kept.
pub fn register(resolver: &Arc<Resolver>) -> Option<CollectorGuard> {
    if !weft_runtime::metrics::enabled() {
        return None;
    }
    let resolver = resolver.clone();
    Some(weft_runtime::metrics::add_collector(Arc::new(move || {
        let text = render(&resolver);
        Box::pin(async move { text })
    })))
}

/// The start of a query, when this process serves metrics (else nothing is timed).
pub fn query_started() -> Option<Instant> {
    weft_runtime::metrics::enabled().then(Instant::now)
}

/// Records how long one query took (`sandbox`: asked inside a sandbox).
pub fn query_done(sandbox: bool, started: Option<Instant>) {
    // The handles once (the recorder is installed before any query), not a lookup per query.
    static HANDLES: OnceLock<[Histogram; 2]> = OnceLock::new();
    let Some(started) = started else {
        return;
    };
    let [sandboxes, operator] = HANDLES.get_or_init(|| {
        [
            ::metrics::histogram!("weft_dns_query_duration_seconds", "listener" => "sandbox"),
            ::metrics::histogram!("weft_dns_query_duration_seconds", "listener" => "operator"),
        ]
    });
    let h = if sandbox { sandboxes } else { operator };
    h.record(started.elapsed().as_secs_f64());
}

fn render(resolver: &Resolver) -> String {
    let stats = &resolver.stats;
    let total = stats.total.to_pb();
    let operator = stats.operator.to_pb();
    // The sandboxes' listeners are everything that is not the operator's.
    let minus = |t: u64, o: u64| t.saturating_sub(o);
    let sandbox = weft_proto::dns::v1::Counters {
        queries: minus(total.queries, operator.queries),
        answered_locally: minus(total.answered_locally, operator.answered_locally),
        nxdomain: minus(total.nxdomain, operator.nxdomain),
        forwarded: minus(total.forwarded, operator.forwarded),
        upstream_failures: minus(total.upstream_failures, operator.upstream_failures),
        refused: minus(total.refused, operator.refused),
        servfail: minus(total.servfail, operator.servfail),
        tcp_queries: minus(total.tcp_queries, operator.tcp_queries),
        truncated: minus(total.truncated, operator.truncated),
    };
    let mut queries = Family::new(
        "weft_dns_queries_total",
        Kind::Counter,
        "DNS queries answered, by listener (sandbox: 127.0.0.11 inside sandboxes; operator).",
    );
    let mut answers = Family::new(
        "weft_dns_answers_total",
        Kind::Counter,
        "DNS answers by kind: local (from Weft's records), forwarded (from an upstream, whatever \
         its code), nxdomain, refused and servfail (by response code, also of forwarded ones).",
    );
    let mut failures = Family::new(
        "weft_dns_upstream_failures_total",
        Kind::Counter,
        "Upstream servers that failed to answer a forwarded query.",
    );
    let mut tcp = Family::new(
        "weft_dns_tcp_queries_total",
        Kind::Counter,
        "DNS queries that came over TCP.",
    );
    let mut truncated = Family::new(
        "weft_dns_truncated_total",
        Kind::Counter,
        "UDP answers sent truncated (TC set).",
    );
    for (listener, c) in [("sandbox", &sandbox), ("operator", &operator)] {
        let l = [("listener", listener)];
        queries.sample(&l, c.queries);
        for (kind, n) in [
            ("local", c.answered_locally),
            ("forwarded", c.forwarded),
            ("nxdomain", c.nxdomain),
            ("refused", c.refused),
            ("servfail", c.servfail),
        ] {
            answers.sample(&[("listener", listener), ("kind", kind)], n);
        }
        failures.sample(&l, c.upstream_failures);
        tcp.sample(&l, c.tcp_queries);
        truncated.sample(&l, c.truncated);
    }
    [
        queries.finish(),
        answers.finish(),
        failures.finish(),
        tcp.finish(),
        truncated.finish(),
    ]
    .concat()
}
