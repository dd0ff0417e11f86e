//! Where the output of the service processes a test starts is kept (and the error output of the
//! clients it runs). With `WEFT_TEST_LOG_DIR` set (scripts/test.sh sets it to a fresh directory
//! per run), every log outlives its test there, for the run's final check
//! (scripts/secrets-in-logs.py: no token, no private key); without it, logs stay in the test's
//! own temporary directory and go with it.
//!
//! Layout: `$WEFT_TEST_LOG_DIR/<test binary>/<test name>/<what>-<pid>-<n>.log`.

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
};

/// The variable naming the directory where logs are kept.
pub const ENV: &str = "WEFT_TEST_LOG_DIR";

/// The kept-logs directory of this test, created on first use; `None` when logs are not kept.
fn test_dir() -> Option<PathBuf> {
    let root = PathBuf::from(std::env::var_os(ENV).filter(|v| !v.is_empty())?);
    // nextest names the binary (`crate::bin`); else the executable's name.
    let binary = std::env::var("NEXTEST_BINARY_ID")
        .ok()
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
        .replace("::", ".");
    // libtest runs each test on a thread named after it (the thread a tokio test blocks on).
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unknown").replace("::", ".");
    let dir = root.join(safe(&binary)).join(safe(&test));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// `s` with nothing a path could misread.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A fresh, unique name for a kept file of `what` (a service name).
fn kept(dir: &Path, what: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{}-{n}.log", safe(what), std::process::id()))
}

/// Where a process `what` the test starts writes its log: a kept file when logs are kept, else
/// `<fallback>/<what>.log`.
pub fn log_path(fallback: &Path, what: &str) -> PathBuf {
    test_dir().map_or_else(
        || fallback.join(format!("{}.log", safe(what))),
        |d| kept(&d, what),
    )
}

/// Keeps a copy of every `*.log` file under `dir` (logs a process wrote itself, such as
/// `weft up`'s services in `<data-dir>/logs/`), when logs are kept. Call it before `dir` goes.
pub fn keep_logs_under(dir: &Path, what: &str) {
    let Some(kept_dir) = test_dir() else {
        return;
    };
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            // (Symbolic links are not followed: a test's data directory may hold hostile ones.)
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() && p.extension().is_some_and(|x| x == "log") {
                let stem = p.file_stem().unwrap_or_default().to_string_lossy();
                let _ = std::fs::copy(&p, kept(&kept_dir, &format!("{what}.{stem}")));
            }
        }
    }
}

/// Keeps the captured stdout and stderr of a process `what` the test ran to completion
/// (`Command::output`), when logs are kept.
pub fn keep_output(what: &str, out: &Output) {
    if let Some(dir) = test_dir() {
        let mut text = out.stdout.clone();
        text.extend_from_slice(&out.stderr);
        let _ = std::fs::write(kept(&dir, what), text);
    }
}

/// Keeps the error output of a client a test ran (weftctl, grpcurl), when logs are kept and it
/// printed any: errors must not echo a credential either. (Its stdout is the test's to judge:
/// `weftctl token create` prints the new token there, once, by design.)
pub fn keep_stderr(what: &str, out: &Output) {
    if out.stderr.is_empty() {
        return;
    }
    if let Some(dir) = test_dir() {
        let _ = std::fs::write(kept(&dir, &format!("{what}.stderr")), &out.stderr);
    }
}
