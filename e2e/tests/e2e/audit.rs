//! Every mutation an end-to-end test sends is in the audit log once, with the identity that
//! sent it. When a test ends normally (its [`crate::world::Weft`] is dropped without a panic,
//! before the stack stops), [`check`] takes the calls the test sent through the
//! [`Recorder`], keeps those the gateway's access table marks as mutations (refused ones too:
//! they are audited), and asks `AuditService/ListAudit` (as admin): the log must hold exactly
//! these, in order, each with the caller's identity, its rpc and the outcome the client saw,
//! and nothing else (no entry for a read). The entries of `weft up`'s own services (the agent
//! registering its host) are not the test's and are left out.

use serde_json::Value;

use crate::recorder::{Ended, GATEWAY, Recorder};

/// What `weft up` names its admin token in the audit log.
pub const ADMIN: &str = "admin:admin";
/// The object of the last mutation [`check`] sends itself: once its entry is stored, so is
/// every entry recorded before it (the audit writer stores its queue in order).
const BARRIER: &str = "e2e-audit-barrier";
/// The audit log's roles that only `weft up`'s own services have.
const SERVICE_ROLES: [&str; 2] = ["agent", "dns"];

/// One audit entry as compared: identity, rpc (`package.Service/Method`), outcome.
type Entry = (String, String, String);

/// Checks the audit log of the stack in the namespace `host_ns` against the calls the test sent
/// from `since` on; `admin` is the admin token (to read the log). `Err` says what differs.
pub fn check(recorder: &Recorder, since: usize, host_ns: &str, admin: &str) -> Result<(), String> {
    let mut want = Vec::new();
    let mut problems = Vec::new();
    for call in recorder.calls().iter().skip(since) {
        let Some(rule) = gateway::access::RULES
            .iter()
            .find(|r| r.method == call.method)
        else {
            // Health, reflection: open to anyone, never audited.
            continue;
        };
        if !rule.mutation {
            continue;
        }
        let outcome = match call.ended() {
            Some(Ended::Status(code)) => code,
            Some(Ended::NotForwarded(e)) => {
                problems.push(format!("{} was not forwarded: {e}", call.method));
                continue;
            }
            None => {
                problems.push(format!("{} ended without a status", call.method));
                continue;
            }
        };
        // A call the gateway could not identify is audited as `-`.
        let identity = match &call.token_hash {
            _ if outcome == "Unauthenticated" => "-".to_owned(),
            None => "-".to_owned(),
            Some(hash) => recorder.identity_of(hash).unwrap_or_else(|| {
                problems.push(format!(
                    "{} carried a token the test did not name (Recorder::name_token)",
                    call.method
                ));
                "?".to_owned()
            }),
        };
        let rpc = call.method.trim_start_matches('/').to_owned();
        want.push((identity, rpc, outcome));
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }

    let revoke = "weft.gateway.v1.TokenService/RevokeToken";
    let (ok, out) = grpcurl(
        host_ns,
        admin,
        revoke,
        &serde_json::json!({ "name": BARRIER }).to_string(),
    );
    if ok {
        return Err(format!(
            "revoking the unknown token {BARRIER} succeeded: {out}"
        ));
    }
    want.push((ADMIN.to_owned(), revoke.to_owned(), "NotFound".to_owned()));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let entries = loop {
        let entries = audit_log(host_ns, admin)?;
        if entries.iter().any(|e| e["object"] == BARRIER) {
            break entries;
        }
        if std::time::Instant::now() > deadline {
            return Err("the audit log did not show the barrier's entry within 10 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let mut got: Vec<Entry> = Vec::new();
    for e in entries.iter().rev() {
        if SERVICE_ROLES.contains(&text(e, "role").as_str()) {
            continue;
        }
        let rpc = text(e, "rpc");
        if gateway::access::RULES
            .iter()
            .any(|r| r.method.trim_start_matches('/') == rpc && !r.mutation)
        {
            problems.push(format!("an entry for the read {rpc}: {e}"));
        }
        got.push((text(e, "identity"), rpc, text(e, "outcome")));
    }
    if got != want {
        problems.push(format!(
            "the audit log is not one entry per mutation the test sent\n  sent (identity, rpc, outcome): {}\n  logged: {}",
            show(&want),
            show(&got)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn show(entries: &[Entry]) -> String {
    entries
        .iter()
        .enumerate()
        .map(|(i, (who, rpc, outcome))| format!("\n    {i:3} {who} {rpc} {outcome}"))
        .collect()
}

/// The whole audit log, newest first.
fn audit_log(host_ns: &str, admin: &str) -> Result<Vec<Value>, String> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let body = serde_json::json!({ "pageSize": 1000, "pageToken": token }).to_string();
        let (ok, out) = grpcurl(
            host_ns,
            admin,
            "weft.gateway.v1.AuditService/ListAudit",
            &body,
        );
        if !ok {
            return Err(format!("ListAudit failed: {out}"));
        }
        let page: Value = serde_json::from_str(&out)
            .map_err(|e| format!("ListAudit gave no JSON ({e}): {out}"))?;
        all.extend(page["entries"].as_array().into_iter().flatten().cloned());
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_owned(),
            _ => return Ok(all),
        }
    }
}

/// grpcurl straight to the gateway (not through the recorder: the check's own calls are not
/// the test's), as `admin`: whether it succeeded, and what it printed.
fn grpcurl(host_ns: &str, admin: &str, method: &str, body: &str) -> (bool, String) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", host_ns])
        .arg(weft_testkit::grpcurl())
        .args(["-H", &format!("authorization: Bearer {admin}")])
        .args(["-plaintext", "-d", body, GATEWAY, method])
        .output();
    match out {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run grpcurl: {e}")),
    }
}
