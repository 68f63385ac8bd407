//! `vfioctl udev-claim` as the udev rule runs it, on a fake sysfs tree: it claims a configured
//! function (override written, original recorded, `VFIOCTL_CLAIM=` printed for IMPORT{program}),
//! and touches nothing for an unconfigured one or when the config is invalid.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Host {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Host {
    fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for (addr, vendor, device) in [
            ("0000:00:01.0", "0x8086", "0x10d3"),
            ("0000:02:00.0", "0x1af4", "0x1041"),
        ] {
            let dir = root.join("sys/bus/pci/devices").join(addr);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
            fs::write(dir.join("device"), format!("{device}\n")).unwrap();
            fs::write(dir.join("class"), "0x020000\n").unwrap();
            fs::write(dir.join("driver_override"), "(null)\n").unwrap();
        }
        Host { _tmp: tmp, root }
    }

    fn config(&self, text: &str) -> PathBuf {
        let path = self.root.join("vfio.toml");
        fs::write(&path, text).unwrap();
        path
    }

    fn claim(&self, config: &Path, addr: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vfioctl"))
            .arg("--sysfs-root")
            .arg(self.root.join("sys"))
            .arg("--run-dir")
            .arg(self.root.join("run"))
            .args(["udev-claim", "--config"])
            .arg(config)
            .arg(addr)
            .env_clear()
            .output()
            .unwrap()
    }

    fn override_of(&self, addr: &str) -> String {
        fs::read_to_string(
            self.root
                .join("sys/bus/pci/devices")
                .join(addr)
                .join("driver_override"),
        )
        .unwrap()
    }
}

const CONFIG: &str = r#"version = 1

[[device]]
name = "nic"
vendor = "8086"
device = "10d3"
"#;

#[test]
fn a_configured_function_is_claimed_for_import_program() {
    let host = Host::new();
    let config = host.config(CONFIG);
    let out = host.claim(&config, "0000:00:01.0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "VFIOCTL_CLAIM=vfio-pci\n"
    );
    assert_eq!(host.override_of("0000:00:01.0"), "vfio-pci");
    let record = host.root.join("run/early-claims/0000:00:01.0");
    assert_eq!(fs::read_to_string(record).unwrap(), "");
}

#[test]
fn an_unconfigured_function_is_left_alone_silently() {
    let host = Host::new();
    let config = host.config(CONFIG);
    let out = host.claim(&config, "0000:02:00.0");
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(host.override_of("0000:02:00.0"), "(null)\n");
    assert!(!host.root.join("run/early-claims").exists());
}

#[test]
fn an_invalid_config_claims_nothing_and_says_why() {
    let host = Host::new();
    let config = host.config("version = 1\n[[devcie]]\n");
    let out = host.claim(&config, "0000:00:01.0");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("devcie"), "{err}");
    assert_eq!(host.override_of("0000:00:01.0"), "(null)\n");
}

#[test]
fn a_bad_address_is_a_usage_error() {
    let host = Host::new();
    let config = host.config(CONFIG);
    let out = host.claim(&config, "not-an-address");
    assert_eq!(out.status.code(), Some(2));
}
