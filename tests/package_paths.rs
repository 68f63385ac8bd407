//! One path everywhere: the Debian package's assets (`[package.metadata.deb]` in Cargo.toml),
//! the systemd unit, the udev rule, the initramfs hook, the man pages and README.md's install
//! sections all name the same installed paths.

use std::path::Path;

/// Each shipped file: where it lives in the repository, where it is installed.
const INSTALLED: &[(&str, &str)] = &[
    ("target/release/vfioctl", "/usr/bin/vfioctl"),
    (
        "contrib/systemd/vfioctl-watch.service",
        "/usr/lib/systemd/system/vfioctl-watch.service",
    ),
    (
        "contrib/udev/70-vfioctl.rules",
        "/usr/lib/udev/rules.d/70-vfioctl.rules",
    ),
    (
        "contrib/initramfs/vfioctl",
        "/usr/share/initramfs-tools/hooks/vfioctl",
    ),
    (
        "schema/vfio.schema.json",
        "/usr/share/vfioctl/vfio.schema.json",
    ),
    ("contrib/man/vfio.toml.5", "/usr/share/man/man5/vfio.toml.5"),
    (
        "contrib/completions/vfioctl.bash",
        "/usr/share/bash-completion/completions/vfioctl",
    ),
    (
        "contrib/completions/_vfioctl",
        "/usr/share/zsh/vendor-completions/_vfioctl",
    ),
    (
        "contrib/completions/vfioctl.fish",
        "/usr/share/fish/vendor_completions.d/vfioctl.fish",
    ),
];

fn repo(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The package's assets as (source, installed path); a destination ending in `/` is a
/// directory that keeps the source's file name.
fn assets() -> Vec<(String, String)> {
    let manifest: toml::Table = toml::from_str(&repo("Cargo.toml")).expect("Cargo.toml parses");
    let deb = &manifest["package"]["metadata"]["deb"];
    deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("[source, dest, mode]");
            let (src, dest) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
            let dest = if dest.ends_with('/') {
                format!("/{dest}{}", src.rsplit('/').next().unwrap())
            } else {
                format!("/{dest}")
            };
            (src.to_string(), dest)
        })
        .collect()
}

#[test]
fn the_package_installs_each_file_where_the_others_expect_it() {
    let assets = assets();
    for (src, installed) in INSTALLED {
        let found: Vec<&String> = assets
            .iter()
            .filter(|(s, _)| s == src)
            .map(|(_, d)| d)
            .collect();
        assert_eq!(found, vec![installed], "{src}");
    }
    // Every asset source exists (globs: at least one match), except the binary cargo builds.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (src, _) in &assets {
        if src.starts_with("target/") {
            continue;
        }
        let matched = match src.rsplit_once("/*") {
            Some((dir, ext)) => std::fs::read_dir(root.join(dir))
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(ext)),
            None => root.join(src).is_file(),
        };
        assert!(matched, "asset {src} matches no file");
    }
    let deb = repo("Cargo.toml");
    assert!(deb.contains("maintainer-scripts = \"contrib/debian/\""));
    for script in ["postinst", "prerm", "postrm"] {
        let text = repo(&format!("contrib/debian/{script}"));
        assert!(
            text.contains("vfioctl-watch.service"),
            "{script} names the unit"
        );
    }
}

#[test]
fn unit_rule_hook_and_pages_name_the_installed_paths() {
    let unit = repo("contrib/systemd/vfioctl-watch.service");
    assert!(unit.contains("\nExecStart=/usr/bin/vfioctl watch --config /etc/vfio.toml\n"));
    assert!(unit.contains("/usr/lib/systemd/system/vfioctl-watch.service"));
    assert!(
        !unit.contains("\nConditionPathExists="),
        "a missing config must not skip the unit silently"
    );

    let rule = repo("contrib/udev/70-vfioctl.rules");
    let programs: Vec<&str> = rule
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .filter(|v| v.starts_with('/'))
        .collect();
    assert_eq!(programs.len(), 2, "{programs:?}");
    assert!(programs.iter().all(|p| p.starts_with("/usr/bin/vfioctl ")));
    assert!(rule.contains("/usr/lib/udev/rules.d/70-vfioctl.rules"));
    assert!(rule.contains("/usr/share/initramfs-tools/hooks/vfioctl"));

    let hook = repo("contrib/initramfs/vfioctl");
    for path in [
        "/usr/bin/vfioctl",
        "/usr/lib/udev/rules.d/70-vfioctl.rules",
        "/etc/vfio.toml",
        "/usr/share/initramfs-tools/hooks/vfioctl",
    ] {
        assert!(hook.contains(path), "the initramfs hook lacks {path}");
    }

    let page = repo("contrib/man/vfioctl.1").replace("\\-", "-");
    for path in [
        "/usr/lib/systemd/system/vfioctl-watch.service",
        "/usr/lib/udev/rules.d/70-vfioctl.rules",
        "/usr/share/vfioctl/vfio.schema.json",
        "/usr/share/doc/vfioctl/examples/",
    ] {
        assert!(page.contains(path), "vfioctl.1 lacks {path}");
    }
}

#[test]
fn readme_installs_the_package_and_the_same_paths_by_hand() {
    let readme = repo("README.md");
    let install = readme
        .split("\n## Install\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Install section");
    assert!(install.contains("cargo deb"));
    assert!(install.contains("apt install ./target/debian/vfioctl_*.deb"));
    for (src, installed) in INSTALLED {
        assert!(
            install.contains(installed),
            "README install lacks {installed}"
        );
        if !src.starts_with("target/") {
            assert!(install.contains(src), "README manual install lacks {src}");
        }
    }
    for wrong in ["/usr/local/", "/etc/udev/rules.d", "/etc/systemd/system"] {
        assert!(!install.contains(wrong), "README install names {wrong}");
    }
    // The schema line the config section recommends names the installed schema.
    assert!(readme.contains("#:schema /usr/share/vfioctl/vfio.schema.json"));
}
