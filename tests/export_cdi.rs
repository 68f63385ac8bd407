//! The generated CDI specs judged by the CDI project's own rules: the `container-device-interface`
//! crate (cncf-tags) reads each spec as a runtime's registry would (`read_spec`: its JSON schema,
//! the kind's vendor and class names, every device name's character set, the declared version
//! against the fields used, the device nodes' edits). Negative cases show the same reader
//! refuses what vfioctl must never write, and that vfioctl's own name rule agrees with it.

use std::path::{Path, PathBuf};

use container_device_interface::spec::read_spec;
use vfioctl::config::{parse_str, Config};
use vfioctl::export::cdi::{self, is_device_name};
use vfioctl::host::Snapshot;
use vfioctl::plan::{plan, simulate};

fn q35() -> Snapshot {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/vm-q35/expected.json"),
    )
    .expect("fixture");
    let mut s: Snapshot = serde_json::from_str(&text).expect("snapshot");
    s.normalize();
    s
}

fn config(text: &str) -> Config {
    parse_str(text, Path::new("t.toml")).unwrap_or_else(|d| panic!("{d:?}"))
}

/// Writes `json` as a spec file and reads it back through the CDI crate.
fn read(json: &str) -> Result<container_device_interface::spec::Spec, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("vfioctl.json");
    std::fs::write(&path, json).expect("write");
    read_spec(&path, 0).map_err(|e| format!("{e:#}"))
}

const CONFIGS: &[&str] = &[
    // one multi-function entry with a user and a group
    r#"
version = 1
[[device]]
name = "edu"
address = "0000:00:05.0"
companions = ["0000:00:05.1"]
[[user]]
name = 1000
group = 1000
mode = "0660"
devices = ["edu"]
"#,
    // a group of three behind a bridge, two entries, one by ids, names with every separator
    r#"
version = 1
[[device]]
name = "nic_0.a-b"
address = "0000:02:01.0"
companions = ["0000:02:02.0"]
[[device]]
name = "edu"
vendor = "1234"
device = "11e8"
"#,
];

fn specs() -> Vec<String> {
    let snap = q35();
    CONFIGS
        .iter()
        .map(|text| {
            let c = config(text);
            let p = plan(&c, &snap);
            assert!(p.is_realisable(), "{:?}", p.problems);
            let planned = cdi::planned(&c, &snap, &p).spec;
            // After the pass the observed host gives the same spec.
            let observed = cdi::observed(&c, &simulate(&snap, &p), &p.problems).spec;
            assert_eq!(planned, observed);
            assert!(!planned.devices.is_empty());
            planned.to_json()
        })
        .collect()
}

#[test]
fn generated_specs_pass_the_cdi_projects_validation() {
    for json in specs() {
        let spec = read(&json).unwrap_or_else(|e| panic!("CDI refuses {json}: {e}"));
        let devices = spec.get_devices();
        assert!(devices.contains_key("0000:00:05.0"), "{json}");
        assert_eq!(spec.get_vendor(), "vfioctl.io");
        assert_eq!(spec.get_class(), "device");
        for name in devices.keys() {
            assert!(is_device_name(name), "{name}");
        }
    }
}

#[test]
fn the_declared_version_is_the_minimum_the_fields_need() {
    // A PCI address starts with a digit: that needs 0.5.0, so declaring 0.4.0 is refused...
    let json = specs().remove(0);
    let older = json.replace("\"0.5.0\"", "\"0.4.0\"");
    let err = read(&older).expect_err("0.4.0 is too old for names starting with a digit");
    assert!(err.contains("at least v0.5.0"), "{err}");
    // ...and nothing in it needs more than 0.5.0.
    assert!(read(&json).is_ok());
}

fn with_device_name(json: &str, from: &str, to: &str) -> String {
    json.replace(
        &format!("\"name\": \"{from}\""),
        &format!("\"name\": \"{to}\""),
    )
}

#[test]
fn the_cdi_reader_refuses_what_vfioctl_must_not_write() {
    let json = specs().remove(0);
    let cases = [
        (
            "a name ending in a separator",
            with_device_name(&json, "edu", "edu-"),
        ),
        (
            "a name starting with a separator",
            with_device_name(&json, "edu", "-edu"),
        ),
        ("a slash in a name", with_device_name(&json, "edu", "a/b")),
        ("a space in a name", with_device_name(&json, "edu", "a b")),
        (
            "an equals sign in a name",
            with_device_name(&json, "edu", "a=b"),
        ),
        (
            "two devices with one name",
            with_device_name(&json, "0000:00:05.1", "0000:00:05.0"),
        ),
        (
            "a kind without a class",
            json.replace("vfioctl.io/device", "vfioctl.io"),
        ),
        (
            "a class with a slash",
            json.replace("vfioctl.io/device", "vfioctl.io/dev/ice"),
        ),
        (
            "an empty node path",
            json.replace("\"/dev/vfio/vfio\"", "\"\""),
        ),
        (
            "an unknown node type",
            json.replace("\"type\": \"c\"", "\"type\": \"x\""),
        ),
        ("an unknown version", json.replace("\"0.5.0\"", "\"0.5.9\"")),
        (
            "no devices",
            serde_json::json!({"cdiVersion": "0.5.0", "kind": "vfioctl.io/device", "devices": []})
                .to_string(),
        ),
    ];
    for (what, bad) in cases {
        assert_ne!(bad, json, "{what}: the case did not change the spec");
        assert!(read(&bad).is_err(), "CDI accepted {what}: {bad}");
    }
}

#[test]
fn vfioctls_name_rule_agrees_with_the_cdi_reader() {
    let json = specs().remove(0);
    for name in [
        "edu",
        "e",
        "7",
        "0000:01:00.0",
        "gpu_0.x-y:z",
        "edu-",
        "-edu",
        ".a",
        "a.",
        "a:",
        "a b",
        "a/b",
        "a=b",
        "a,b",
        "ä",
        "a\u{e9}",
    ] {
        let accepted = read(&with_device_name(&json, "edu", name)).is_ok();
        assert_eq!(
            is_device_name(name),
            accepted,
            "vfioctl and CDI disagree on {name:?}"
        );
    }
}
