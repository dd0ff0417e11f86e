//! What an operation did to the kernel, and what it could not do: returned to the gateway so
//! that every repair and every failure is visible.

/// Kinds of objects the agent manages (the subset this agent programs so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Netns,
    Link,
    Address,
    Route,
    /// A static neighbour entry (overlay peers' addresses).
    Neighbour,
    /// A forwarding-database entry (overlay peers' MACs and VTEPs).
    FdbEntry,
    File,
    NftTable,
    NftRule,
    Sysctl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    pub kind: Kind,
    pub object: String,
    pub owner: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    pub object: String,
    pub owner: String,
    pub error: String,
}

/// Changes and failures collected along an operation; teardown keeps going past failures.
#[derive(Debug, Default)]
pub struct Report {
    pub changes: Vec<Change>,
    pub failures: Vec<Failure>,
    /// Set by a caller that removes endpoint links itself, off the request path
    /// (`unlink.rs`): a driver then only makes such a link inert and lists it in `doomed`.
    pub defer_unlink: bool,
    pub doomed: Vec<crate::unlink::Doomed>,
    /// Reconciliation: how many desired objects the pass ensured (entered and checked); the
    /// others it found unchanged.
    pub ensured: usize,
}

impl Report {
    pub fn change(&mut self, action: Action, kind: Kind, object: impl Into<String>, owner: &str) {
        self.changes.push(Change {
            action,
            kind,
            object: object.into(),
            owner: owner.to_owned(),
            detail: String::new(),
        });
    }

    /// A failure described by a message rather than an error value.
    pub fn fail_msg(&mut self, kind: Kind, object: impl Into<String>, owner: &str, error: String) {
        let object = object.into();
        tracing::warn!(%object, owner, %error, "step failed");
        self.failures.push(Failure {
            kind,
            object,
            owner: owner.to_owned(),
            error,
        });
    }

    pub fn fail(
        &mut self,
        kind: Kind,
        object: impl Into<String>,
        owner: &str,
        error: &(dyn std::error::Error + 'static),
    ) {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        let object = object.into();
        tracing::warn!(%object, owner, error = %text, "teardown step failed");
        self.failures.push(Failure {
            kind,
            object,
            owner: owner.to_owned(),
            error: text,
        });
    }
}
