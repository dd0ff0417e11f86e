//! The agent's metrics (see `weft_runtime::metrics`): how long calls into the kernel take
//! (reconciliation passes and their drift are counted in `reconcile_metrics`, which this leaf
//! module, used by the kernel and namespace code, must not import).

use std::{future::Future, time::Instant};

/// Awaits `f`, a call into the kernel named `call` (a constant), and records how long it took
/// in `weft_agent_kernel_call_duration_seconds`.
pub(crate) async fn timed<T>(call: &'static str, f: impl Future<Output = T>) -> T {
    if !weft_runtime::metrics::enabled() {
        return f.await;
    }
    let started = Instant::now();
    let out = f.await;
    ::metrics::histogram!("weft_agent_kernel_call_duration_seconds", "call" => call)
        .record(started.elapsed().as_secs_f64());
    out
}
