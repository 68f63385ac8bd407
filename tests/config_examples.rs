//! The shipped examples are valid and point editors at the committed schema, and the committed
//! schema is what `vfioctl schema` generates.

use std::path::{Path, PathBuf};

use vfioctl::config::{check_str, schema};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_is_valid_without_warnings() {
    let files = examples();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "dpdk-sriov.toml",
        "gpu-passthrough.toml",
        "isolated-per-device.toml",
        "shared-domain-vm.toml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "examples/{want} is missing"
        );
    }
    for path in &files {
        let source = std::fs::read_to_string(path).unwrap();
        let checked = check_str(&source, path);
        assert!(
            checked.diagnostics.is_empty(),
            "{} has problems:\n{}",
            path.display(),
            checked.diagnostics
        );
        assert!(checked.config.is_some());
    }
}

#[test]
fn examples_name_the_schema_on_their_first_line() {
    for path in examples() {
        let source = std::fs::read_to_string(&path).unwrap();
        let first = source.lines().next().unwrap_or("");
        assert_eq!(
            first,
            "#:schema ../schema/vfio.schema.json",
            "{}: Taplo reads the schema from the first line",
            path.display()
        );
        let target = path.parent().unwrap().join("../schema/vfio.schema.json");
        assert!(target.exists(), "{} does not exist", target.display());
    }
}

#[test]
fn examples_show_the_features_they_are_named_for() {
    let read = |name: &str| {
        let path = root().join("examples").join(name);
        let source = std::fs::read_to_string(&path).unwrap();
        check_str(&source, Path::new(name)).config.expect("valid")
    };
    let gpu = read("gpu-passthrough.toml");
    assert!(gpu.devices.iter().any(|d| !d.companions.is_empty()));
    let dpdk = read("dpdk-sriov.toml");
    assert!(!dpdk.sriov.is_empty());
    let iso = read("isolated-per-device.toml");
    assert!(iso
        .domains
        .iter()
        .any(|d| d.placement == vfioctl::config::Placement::PerGroup));
    let vm = read("shared-domain-vm.toml");
    assert!(vm.domains.iter().any(|d| d.windows.len() >= 2));
}

#[test]
fn committed_schema_matches_the_types() {
    let path = root().join("schema/vfio.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = schema::json_schema_text();
    assert!(
        committed == generated,
        "schema/vfio.schema.json is out of date with src/config/raw.rs; regenerate it with\n\
         \n    cargo run -q -- schema > schema/vfio.schema.json\n"
    );
}
