//! `weft-cni install`: puts the plugin binary and a conflist where a runtime finds them (the
//! Helm chart's per-node init step, or a Podman host's setup). Each file is written to a
//! temporary name in its directory and renamed over the old one, so a runtime never reads half
//! a file; a file already as wanted is left alone, so running it again changes nothing.

#![allow(clippy::print_stdout)]

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use weftctl::commands::cni::{ConflistArgs, conflist};

/// weft-cni: Weft's CNI plugin. A runtime runs it without arguments (CNI_* environment,
/// config on stdin); these subcommands are for installing it.
#[derive(Debug, Parser)]
#[command(name = "weft-cni", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Copy this binary into the CNI binary directory and write a conflist for a Weft network
    /// into the CNI config directory (atomically; idempotent).
    Install(InstallArgs),
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The runtime's CNI plugin directory.
    #[arg(long, default_value = "/opt/cni/bin", value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// The runtime's CNI config directory.
    #[arg(long, default_value = "/etc/cni/net.d", value_name = "DIR")]
    pub conf_dir: PathBuf,
    /// The conflist's file name. Default: `50-<name>.conflist` (runtimes that take the first
    /// file, such as the kubelet's, take the lowest name).
    #[arg(long, value_name = "FILE")]
    pub file: Option<String>,
    #[command(flatten)]
    pub conflist: ConflistArgs,
}

/// What an install did to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// Writes `content` to `path` through a temporary file in the same directory and a rename,
/// unless the file already holds exactly that.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<Outcome> {
    if let Ok(old) = fs::read(path)
        && old == content
        && fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode)
    {
        return Ok(Outcome::Unchanged);
    }
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other(format!("{} has no directory", path.display())))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| Outcome::Written)
}

/// Installs: the binary `exe` into `bin_dir/weft-cni`, the conflist into `conf_dir`.
pub fn install(a: &InstallArgs, exe: &Path) -> Result<Vec<(PathBuf, Outcome)>, String> {
    let name = a.conflist.name.as_deref().unwrap_or(&a.conflist.network);
    let file = a
        .file
        .clone()
        .unwrap_or_else(|| format!("50-{name}.conflist"));
    if file.contains('/') || file.starts_with('.') || !file.ends_with(".conflist") {
        return Err(format!(
            "--file {file:?}: expected a file name ending in .conflist, without / or a leading ."
        ));
    }
    for dir in [&a.bin_dir, &a.conf_dir] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let binary = fs::read(exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    let mut text = serde_json::to_string_pretty(&conflist(&a.conflist))
        .map_err(|e| format!("cannot encode the conflist: {e}"))?;
    text.push('\n');
    let mut done = Vec::new();
    for (path, content, mode) in [
        (a.bin_dir.join("weft-cni"), binary, 0o755),
        (a.conf_dir.join(file), text.into_bytes(), 0o644),
    ] {
        let outcome = write_atomic(&path, &content, mode)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        done.push((path, outcome));
    }
    Ok(done)
}

/// `weft-cni <subcommand>`: the process's arguments parsed and run.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let Cmd::Install(a) = cli.command;
    let result = std::env::current_exe()
        .map_err(|e| format!("cannot find this binary: {e}"))
        .and_then(|exe| install(&a, &exe));
    match result {
        Ok(done) => {
            for (path, outcome) in done {
                let what = match outcome {
                    Outcome::Written => "wrote",
                    Outcome::Unchanged => "unchanged",
                };
                println!("{what} {}", path.display());
            }
            for chained in ["portmap", "tuning"] {
                if !a.bin_dir.join(chained).exists() {
                    eprintln!(
                        "weft-cni: note: the conflist chains {chained}, which is not in {}",
                        a.bin_dir.display()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> InstallArgs {
        let cli = Cli::try_parse_from([&["weft-cni", "install"], args].concat()).unwrap();
        let Cmd::Install(a) = cli.command;
        a
    }

    #[test]
    fn install_writes_both_files_once_and_then_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("built");
        fs::write(&exe, b"\x7fELF binary").unwrap();
        let a = parse(&[
            "--bin-dir",
            dir.path().join("bin").to_str().unwrap(),
            "--conf-dir",
            dir.path().join("net.d").to_str().unwrap(),
            "--network",
            "web",
        ]);
        let first = install(&a, &exe).unwrap();
        assert!(
            first.iter().all(|(_, o)| *o == Outcome::Written),
            "{first:?}"
        );
        let bin = dir.path().join("bin/weft-cni");
        assert_eq!(fs::read(&bin).unwrap(), b"\x7fELF binary");
        assert_eq!(
            fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let conf: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("net.d/50-web.conflist")).unwrap())
                .unwrap();
        assert_eq!(conf["plugins"][0]["network"], "web");
        let again = install(&a, &exe).unwrap();
        assert!(
            again.iter().all(|(_, o)| *o == Outcome::Unchanged),
            "{again:?}"
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("net.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["50-web.conflist"]);
    }

    #[test]
    fn a_file_name_with_a_slash_is_refused() {
        let a = parse(&["--network", "n", "--file", "../x.conflist"]);
        let e = install(&a, Path::new("/nonexistent")).unwrap_err();
        assert!(e.contains("--file"), "{e}");
    }
}
