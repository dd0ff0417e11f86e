//! Identity against `weft up`: weftctl works with no flags beside the data directory, tokens
//! are made and revoked with weftctl, every mutation lands in the audit log with the identity
//! that made it, and no log holds a token or a private key.

use std::path::Path;

use serde_json::Value;

use crate::world::{Weft, World};

/// `weftctl ARGS` in the host namespace, run from `cwd`, with `token` in WEFT_TOKEN (or no
/// token flag or variable at all). (The gateway's address is the recorder's, for the audit
/// check every e2e test ends with.)
fn weftctl_in(w: &World, cwd: &Path, token: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = w.host.exec(w.bins.join("weftctl"));
    cmd.current_dir(cwd)
        .args(args)
        .env("WEFT_GATEWAY", w.gateway())
        .env_remove("WEFT_TOKEN");
    if let Some(t) = token {
        cmd.env("WEFT_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    weft_testkit::logs::keep_stderr("weftctl", &out);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every file under `dir`, recursively, as text (lossy).
fn all_text_under(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_text_under(&p, out);
        } else if p.extension().is_some_and(|x| x == "log") {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            out.push((p.display().to_string(), text));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_tokens_roles_and_the_audit_log_through_weftctl() {
    let w = World::new().await;
    let weft = Weft::up(&w).await;
    let data = weft.data_dir();
    let beside = data.parent().unwrap();
    let admin = weft_runtime::access::read_token_file(&data.join("admin.token")).unwrap();

    // No flag, no variable: weftctl finds ./weft-data/admin.token.
    let (ok, out) = weftctl_in(&w, beside, None, &["network", "ls"]);
    assert!(ok, "{out}");
    // ipam-svc takes certificates only: `weftctl ipam check` presents the admin's, from
    // ./weft-data/pki.
    let (ok, out) = weftctl_in(&w, beside, None, &["ipam", "check"]);
    assert!(ok && out.contains("problems: 0"), "{out}");
    // Anywhere else, without a token, the API says what it needs.
    let (ok, out) = weftctl_in(&w, Path::new("/"), None, &["network", "ls"]);
    assert!(!ok && out.contains("needs credentials"), "{out}");

    // An operator token, printed once as the last word.
    let (ok, out) = weftctl_in(
        &w,
        beside,
        None,
        &["token", "create", "--role", "operator", "--name", "ci"],
    );
    assert!(ok, "{out}");
    let ci = out.split_whitespace().last().unwrap().to_owned();
    assert!(
        weft_runtime::access::looks_like_token(&ci),
        "not a token as the last word: {} bytes of output",
        out.len()
    );
    w.recorder.name_token(&ci, "operator:ci");
    let (ok, out) = weftctl_in(
        &w,
        beside,
        None,
        &["token", "create", "--role", "viewer", "--name", "look"],
    );
    assert!(ok, "{out}");
    let look = out.split_whitespace().last().unwrap().to_owned();
    w.recorder.name_token(&look, "viewer:look");

    // The operator's mutations; a viewer's refused one.
    let root = Path::new("/");
    for args in [
        &["network", "create", "idnet", "--subnet", "10.61.0.0/24"][..],
        &["sandbox", "create", "idsb", "--network", "idnet"],
        &["network", "disconnect", "idnet", "idsb"],
        &["sandbox", "rm", "idsb"],
    ] {
        let (ok, out) = weftctl_in(&w, root, Some(&ci), args);
        assert!(ok, "{args:?}: {out}");
    }
    let (ok, out) = weftctl_in(&w, root, Some(&look), &["network", "rm", "idnet"]);
    assert!(!ok && out.contains("needs the role operator"), "{out}");
    let (ok, out) = weftctl_in(&w, root, Some(&look), &["network", "ls"]);
    assert!(ok, "{out}");
    let (ok, out) = weftctl_in(&w, root, Some(&ci), &["network", "rm", "idnet"]);
    assert!(ok, "{out}");
    // Revoked: refused at once.
    let (ok, out) = weftctl_in(&w, beside, None, &["token", "revoke", "ci"]);
    assert!(ok, "{out}");
    let (ok, out) = weftctl_in(&w, root, Some(&ci), &["network", "ls"]);
    assert!(!ok && out.contains("unknown or revoked token"), "{out}");
    // Only an admin reads the audit log.
    let (ok, out) = weftctl_in(&w, root, Some(&look), &["audit"]);
    assert!(!ok && out.contains("needs the role admin"), "{out}");

    // One entry per mutation, oldest last, each with its caller. (The records are written
    // by a background writer: wait until the last one is there.)
    let entries = weft_testkit::wait_for(
        std::time::Duration::from_secs(10),
        "the audit records",
        || async {
            let (ok, out) = weftctl_in(&w, beside, None, &["--format", "json", "audit"]);
            assert!(ok, "{out}");
            // The agent's own registrations are audited too; this test counts the people's.
            let e: Vec<Value> = out
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|e| !e["Identity"].as_str().unwrap().starts_with("agent:"))
                .collect();
            (e.len() >= 9).then_some(e)
        },
    )
    .await;
    let got: Vec<(String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["Identity"].as_str().unwrap().to_owned(),
                e["Rpc"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                e["Outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("admin:admin", "CreateToken", "OK"),
        ("admin:admin", "CreateToken", "OK"),
        ("operator:ci", "CreateNetwork", "OK"),
        ("operator:ci", "CreateSandbox", "OK"),
        ("operator:ci", "Disconnect", "OK"),
        ("operator:ci", "DeleteSandbox", "OK"),
        ("viewer:look", "DeleteNetwork", "PermissionDenied"),
        ("operator:ci", "DeleteNetwork", "OK"),
        ("admin:admin", "RevokeToken", "OK"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(got, want, "{entries:#?}");

    // No token and no private key in any log of the run.
    let mut logs = Vec::new();
    all_text_under(beside, &mut logs);
    assert!(logs.len() >= 5, "{logs:?}");
    for (path, text) in &logs {
        for secret in [&admin, &ci, &look] {
            assert!(!text.contains(secret.as_str()), "{path} holds a token");
        }
        assert!(!text.contains("PRIVATE KEY"), "{path} holds a private key");
    }
    drop(weft);
}
