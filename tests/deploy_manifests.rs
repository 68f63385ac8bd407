//! deploy/kubernetes: the per-node config files are valid vfioctl configs, and the kustomize
//! base renders (`kubectl kustomize`) to objects that validate offline against the Kubernetes
//! OpenAPI schemas (`kubernetes-validate --strict`, from PyPI; .ci/run installs it).
//!
//! Without kubectl or kubernetes-validate the schema check says so loudly and skips; under CI
//! (`CI=true`, or `VFIOCTL_REQUIRE_TOOLS` set, as .ci/run does) a missing tool fails it.

use std::path::{Path, PathBuf};
use std::process::Command;

const VFIOCTL: &str = env!("CARGO_BIN_EXE_vfioctl");

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn tool(name: &str, how: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var_os("VFIOCTL_REQUIRE_TOOLS").is_some()
        {
            panic!("{name} is missing: CI must provide it ({how})");
        }
        eprintln!("\n!!! SKIPPED: {name} is not installed ({how}); this check did not run !!!\n");
    }
    found
}

#[test]
fn every_node_config_in_the_configmap_is_valid() {
    let mut n = 0;
    for e in std::fs::read_dir(base().join("config")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let out = Command::new(VFIOCTL)
                .arg("validate")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stdout)
            );
            n += 1;
        }
    }
    assert!(n >= 1, "no default.toml");
    // The kustomization names every file it ships.
    let k = std::fs::read_to_string(base().join("kustomization.yaml")).unwrap();
    assert!(k.contains("config/default.toml"));
}

#[test]
fn the_kustomize_base_renders_and_validates_against_the_schemas() {
    let (Some(kubectl), Some(validate)) = (
        tool("kubectl", "the machine image's kubectl"),
        tool("kubernetes-validate", "pip install kubernetes-validate"),
    ) else {
        return;
    };
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(base())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let ds = rendered.find("kind: DaemonSet").expect("a DaemonSet");
    let daemonset = &rendered[ds..];
    for must in [
        "--kubelet-dir /var/lib/kubelet/device-plugins",
        "path: /sys",
        "path: /dev",
        "path: /run/vfioctl",
        "path: /var/lib/vfioctl",
        "path: /var/lib/kubelet/device-plugins",
        "fieldPath: spec.nodeName",
        "name: vfioctl-config",
    ] {
        assert!(daemonset.contains(must), "{must} missing:\n{rendered}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let check = |file: &Path| {
        Command::new(&validate)
            .args(["--strict", "--quiet"])
            .arg(file)
            .output()
            .unwrap()
    };
    let out = check(&file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does reject a wrong field (the check can fail).
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        rendered.replace("hostNetwork: true", "hostNetwrk: true"),
    )
    .unwrap();
    assert!(!check(&bad).status.success());
}
