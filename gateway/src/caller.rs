//! The caller of the request a task serves, for the events it causes.

/// The caller of the request being served, for the events it causes.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `role:name`.
    pub identity: String,
    pub request_id: String,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `f` as `caller`: the events it commits carry the caller's identity and request id.
pub async fn as_caller<F: std::future::Future>(caller: Caller, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// The caller of the request this task serves (empty outside one).
pub fn current_caller() -> Caller {
    CALLER.try_with(Clone::clone).unwrap_or_default()
}
