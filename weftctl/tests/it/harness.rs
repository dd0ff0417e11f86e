//! A real gateway and ipam-svc served in this process on loopback (SQLite stores), with the
//! test kit's fake driver-agent (which adopts a given namespace path, as the real agent does), and a way to run the built `weftctl` binary against them.

use std::process::Output;

use weft_testkit::Backend;

/// The test kit's stack on SQLite with the fake agent.
pub struct Stack(weft_testkit::stack::Stack);

impl std::ops::Deref for Stack {
    type Target = weft_testkit::stack::Stack;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Stack {
    pub async fn start() -> Self {
        Self(weft_testkit::stack::Stack::start(Backend::Sqlite).await)
    }

    /// Runs `weftctl --gateway <this gateway> ARGS…`.
    pub async fn weftctl(&self, args: &[&str]) -> Run {
        let mut all = vec!["--gateway".to_owned(), format!("http://{}", self.gateway)];
        all.extend(args.iter().map(|&a| a.to_owned()));
        weftctl_as(&all, Some(&self.deps().admin_token)).await
    }

    /// Like [`Stack::weftctl`], and asserts that it succeeded.
    pub async fn ok(&self, args: &[&str]) -> String {
        let r = self.weftctl(args).await;
        assert_eq!(r.code, 0, "weftctl {args:?} failed: {}", r.stderr);
        r.stdout
    }
}

/// The outcome of one weftctl run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts a failure with `code` and exactly one stderr line starting with `weftctl: `;
    /// returns that line.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit {code}: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one stderr line: {self:?}");
        assert!(lines[0].starts_with("weftctl: "), "{self:?}");
        lines[0]
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs the built weftctl with `args` (stdin closed, WEFT_GATEWAY unset, no token).
pub async fn weftctl(args: &[String]) -> Run {
    weftctl_as(args, None).await
}

/// Runs the built weftctl with `args` and the token `token` (WEFT_TOKEN).
pub async fn weftctl_as(args: &[String], token: Option<&str>) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weftctl"));
    match token {
        Some(t) => cmd.env("WEFT_TOKEN", t),
        None => cmd.env_remove("WEFT_TOKEN"),
    };
    let out = cmd
        .args(args)
        .env_remove("WEFT_GATEWAY")
        .env_remove("WEFT_IPAM")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("weftctl runs");
    weft_testkit::logs::keep_stderr("weftctl", &out);
    out.into()
}

/// JSON Lines output, parsed.
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
