//! The services' log files as `weft up` uses them: before each start it appends a marker line,
//! so that the tail it shows when a service exits is what that one process wrote, and never
//! the end of an earlier run's log. How an exit reads (a code or a signal's name) is here too.

use std::{
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::ExitStatus,
};

/// What starts every marker line (the rest says which start it was).
pub const MARKER: &str = "---- weft up: starting ";
/// At most this much of a log's end is read for its tail: a service that logged a lot before
/// it died costs no more than this to show.
const TAIL_BYTES: u64 = 64 * 1024;
/// Longer lines are cut to this many characters in a tail.
const LINE_CHARS: usize = 400;

/// Appends the marker line of a start of `service` (its `restart`th restart; 0: the first
/// start) to the log `file`.
pub fn mark_start(file: &mut std::fs::File, service: &str, restart: u32) -> std::io::Result<()> {
    let at = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    let which = match restart {
        0 => String::new(),
        n => format!(" (restart {n})"),
    };
    writeln!(file, "{MARKER}{service}{which} at {at} ----")
}

/// The last `n` lines the latest start of the service logged in `path` (after the last marker
/// line), each cut to a printable line of at most [`LINE_CHARS`] characters.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let from = len.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        // The first line read is likely cut.
        lines.remove(0);
    }
    if let Some(i) = lines.iter().rposition(|l| l.starts_with(MARKER)) {
        lines.drain(..=i);
    }
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| printable(l)).collect()
}

/// `line` without control characters (a log may hold a terminal escape a container put in a
/// name), at most [`LINE_CHARS`] characters.
pub fn printable(line: &str) -> String {
    let mut out: String = line
        .chars()
        .take(LINE_CHARS)
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    if line.chars().nth(LINE_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// A tail as `weft up` prints it: indented, or a note that the process logged nothing.
pub fn indented(tail: &[String]) -> String {
    if tail.is_empty() {
        return "  (nothing logged since it started)".into();
    }
    tail.iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a process ended, in words: `exit code 1`, `signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = nix::sys::signal::Signal::try_from(sig).map_or("unknown", |s| s.as_str());
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("signal {sig} ({name}{core})")
        }
        None => format!("{status}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_tail_is_what_the_last_start_logged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, "an earlier run").unwrap();
        mark_start(&mut f, "x", 0).unwrap();
        for i in 1..=30 {
            writeln!(f, "line {i}").unwrap();
        }
        let t = tail(&p, 20);
        assert_eq!(t.len(), 20);
        assert_eq!(t[0], "line 11");
        assert_eq!(t[19], "line 30");
        mark_start(&mut f, "x", 1).unwrap();
        assert!(tail(&p, 20).is_empty());
        assert_eq!(
            indented(&tail(&p, 20)),
            "  (nothing logged since it started)"
        );
        writeln!(f, "bad \x1b[31mred\x1b[0m").unwrap();
        assert_eq!(tail(&p, 20), ["bad ?[31mred?[0m"]);
        assert!(tail(&dir.path().join("missing"), 5).is_empty());
    }

    #[test]
    fn a_huge_log_is_read_from_its_end_only_and_long_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.log");
        let mut f = std::fs::File::create(&p).unwrap();
        for i in 0..100_000 {
            writeln!(f, "filler {i}").unwrap();
        }
        writeln!(f, "{}", "y".repeat(5000)).unwrap();
        writeln!(f, "the end").unwrap();
        let t = tail(&p, 2);
        assert_eq!(t[0].chars().count(), LINE_CHARS + 1);
        assert_eq!(t[1], "the end");
    }

    #[test]
    fn exits_read_as_a_code_or_a_named_signal() {
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
        assert_eq!(
            describe(ExitStatus::from_raw(11 | 0x80)),
            "signal 11 (SIGSEGV, core dumped)"
        );
    }
}
