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
