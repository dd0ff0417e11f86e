//! The Helm chart (`helm/weft`): `scripts/helm-check.sh` renders every example values file with
//! Helm 3 and Helm 4, lints them, validates the manifests against Kubernetes 1.27 to 1.35,
//! checks what a reviewer would (capabilities, probes, mounts, tolerations, Secrets,
//! requests), has the binaries built here parse every rendered command line, and checks that
//! the refused values files are refused by the schema.

use std::{path::PathBuf, process::Command};

#[test]
fn the_chart_renders_validates_and_wires_the_real_binaries() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/helm-check.sh"))
        .arg(crate::bin_dir())
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/helm-check.sh failed:\n{text}"
    );
    assert!(text.contains(", 0 failed"), "{text}");
}

/// The rendered three-replica chart runs: `scripts/helm_run.py` plays the kubelet for every
/// rendered container (command, arguments, environment, Secrets and mounts, user and
/// capabilities, probes) with the binaries built here: two ipam-svc and two gateway pods on the
/// throwaway Postgres, three nodes (network namespaces) that join with join tokens made through
/// the API, install weft-cni into their directories and run driver-agent and dns-svc; then two
/// sandboxes on two nodes ping each other over an overlay network and resolve each other's
/// names, and a pod that the installed weft-cni attaches on the third node reaches them; the
/// third node's pod is replaced and starts again with its spent join token.
#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: namespaces play the pods and nodes"
)]
#[cfg_attr(
    weft_no_postgres,
    ignore = "needs Postgres: the three-replica values use it"
)]
fn the_rendered_three_replica_chart_runs_on_postgres_and_three_nodes() {
    helm_run(&[]);
}

/// The same with `node.privileged=false`: the agent has exactly the four capabilities the
/// chart gives it (NET_ADMIN, SYS_ADMIN, NET_BIND_SERVICE, CHOWN), and that is enough.
#[test]
#[cfg_attr(
    weft_no_root,
    ignore = "needs root: namespaces play the pods and nodes"
)]
#[cfg_attr(
    weft_no_postgres,
    ignore = "needs Postgres: the three-replica values use it"
)]
fn the_rendered_chart_runs_with_an_unprivileged_agent() {
    helm_run(&["--set", "node.privileged=false"]);
}

fn helm_run(helm_args: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var("WEFT_VENV").unwrap_or_else(|_| "/var/cache/weft/venv".into());
    let out = Command::new(PathBuf::from(venv).join("bin/python3"))
        .arg(root.join("scripts/helm_run.py"))
        .arg(crate::bin_dir())
        .args(helm_args)
        .output()
        .expect("the venv's python runs (scripts/setup.sh makes it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scripts/helm_run.py failed:\n{text}");
    assert!(
        text.contains("over the overlay")
            && text.contains("resolves to")
            && text.contains("CNI ADD on")
            && text.contains("again"),
        "{text}"
    );
}
