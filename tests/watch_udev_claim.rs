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
        fs::create_dir_all(root.join("proc")).unwrap();
        fs::write(
            root.join("proc/cmdline"),
            "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 ro quiet\n",
        )
        .unwrap();
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
            .arg("--proc-root")
            .arg(self.root.join("proc"))
            .arg("--dev-root")
            .arg(self.root.join("dev"))
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
    assert_eq!(host.override_of("0000:00:01.0").trim(), "vfio-pci");
    let record = host.root.join("run/early-claims/0000:00:01.0");
    assert_eq!(
        fs::read_to_string(record).unwrap(),
        "{\"format\":1,\"driver_override\":null}\n"
    );
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

/// Issue 15: at boot an ids selector must not claim the root disk's controller (named by the
/// kernel command line's `root=`) nor the boot VGA device; it says why and writes nothing.
#[test]
fn the_root_disk_and_the_boot_gpu_are_not_claimed_at_boot() {
    let host = Host::new();
    let sys = host.root.join("sys");
    for (addr, vendor, device, class) in [
        ("0000:01:00.0", "0x1b36", "0x0010", "0x010802"),
        ("0000:00:02.0", "0x1234", "0x1111", "0x030000"),
    ] {
        let dir = sys.join("devices/pci0000:00").join(addr);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
        fs::write(dir.join("device"), format!("{device}\n")).unwrap();
        fs::write(dir.join("class"), format!("{class}\n")).unwrap();
        fs::write(dir.join("driver_override"), "(null)\n").unwrap();
        std::os::unix::fs::symlink(&dir, sys.join("bus/pci/devices").join(addr)).unwrap();
    }
    let gpu = sys.join("devices/pci0000:00/0000:00:02.0");
    fs::write(gpu.join("boot_vga"), "1\n").unwrap();
    // The root partition, as the initramfs's nvme driver left it.
    let part = sys.join("devices/pci0000:00/0000:01:00.0/nvme/nvme0/nvme0n1/nvme0n1p2");
    fs::create_dir_all(&part).unwrap();
    fs::create_dir_all(sys.join("class/block")).unwrap();
    std::os::unix::fs::symlink(&part, sys.join("class/block/nvme0n1p2")).unwrap();
    let config = host.config(
        r#"version = 1

[[device]]
name = "nvmes"
vendor = "1b36"
device = "0010"

[[device]]
name = "gpus"
vendor = "1234"
device = "1111"
"#,
    );
    for (addr, why) in [
        (
            "0000:01:00.0",
            "root filesystem (kernel command line root=/dev/nvme0n1p2)",
        ),
        ("0000:00:02.0", "boot console"),
    ] {
        let out = host.claim(&config, addr);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(err.contains(why) && err.contains("force = true"), "{err}");
        assert_eq!(host.override_of(addr), "(null)\n");
        let refusal = host.root.join("run/early-claims/refused").join(addr);
        assert!(fs::read_to_string(refusal).unwrap().contains(why));
        assert!(!host.root.join("run/early-claims").join(addr).exists());
    }
}
