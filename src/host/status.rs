//! The human status view of a snapshot (`vfioctl status`): the host line, the VFIO layer,
//! then one block per IOMMU group (viable or not and why, the group node's owner and mode,
//! reserved regions, and each member with address, ids, class, driver, override, its VFIO
//! device cdev and what the host uses it for). A host without IOMMU groups gets a clear statement and the fix instead
//! of an empty table. Pure: snapshot in, text out.

use std::fmt::Write as _;

use crate::host::snapshot::{IommuGroup, PciDevice, Snapshot};
use crate::pci::PciAddress;

/// Renders the status view.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
    host_line(&mut out, snap);
    vfio_line(&mut out, snap);
    out.push('\n');
    let widths = Widths::of(&snap.devices);
    if snap.iommu_active() {
        for g in &snap.groups {
            group_block(&mut out, snap, g, &widths);
        }
        let ungrouped: Vec<&PciDevice> = snap
            .devices
            .iter()
            .filter(|d| d.iommu_group.is_none())
            .collect();
        if !ungrouped.is_empty() {
            let _ = writeln!(
                out,
                "Functions outside any IOMMU group (VFIO cannot use them):"
            );
            for d in ungrouped {
                member(&mut out, d, &widths);
            }
            out.push('\n');
        }
    } else {
        no_iommu(&mut out, snap);
        let _ = writeln!(out, "Functions ({}):", snap.devices.len());
        for d in &snap.devices {
            member(&mut out, d, &widths);
        }
        out.push('\n');
    }
    if !snap.warnings.is_empty() {
        let _ = writeln!(
            out,
            "{} file(s) could not be read; the view above may be incomplete:",
            snap.warnings.len()
        );
        for w in &snap.warnings {
            let _ = writeln!(out, "  {}: {}", w.path, w.message);
        }
    }
    out
}

fn host_line(out: &mut String, snap: &Snapshot) {
    let kernel = match snap.kernel.as_deref() {
        Some(k) => format!("kernel {k}"),
        None => "kernel version unknown".to_string(),
    };
    let units: Vec<&str> = snap.iommus.iter().map(|u| u.name.as_str()).collect();
    let _ = writeln!(
        out,
        "Host: {kernel}; {} PCI functions; {} IOMMU groups; IOMMU units: {}",
        snap.devices.len(),
        snap.groups.len(),
        if units.is_empty() {
            "none".to_string()
        } else {
            units.join(", ")
        }
    );
}

fn vfio_line(out: &mut String, snap: &Snapshot) {
    let v = &snap.vfio;
    let modules = if v.modules.is_empty() {
        "no vfio modules loaded".to_string()
    } else {
        format!("modules {}", v.modules.join(", "))
    };
    let mut parts = vec![modules];
    parts.push(format!(
        "/dev/vfio/vfio {}",
        if v.container_node {
            "present"
        } else {
            "absent"
        }
    ));
    if let Some(l) = v.dma_entry_limit {
        parts.push(format!("dma_entry_limit {l}"));
    }
    parts.push(match (&v.iommufd_node, v.iommufd) {
        (Some(n), _) => format!(
            "iommufd {} present (owner uid {} gid {}, mode {:04o})",
            n.path, n.uid, n.gid, n.mode
        ),
        (None, true) => "iommufd /dev/iommu present".to_string(),
        (None, false) => "iommufd absent".to_string(),
    });
    if !v.device_cdevs.is_empty() {
        parts.push(format!("device nodes {}", v.device_cdevs.join(", ")));
    }
    if v.noiommu {
        parts.push("UNSAFE no-IOMMU mode enabled".to_string());
    }
    let _ = writeln!(out, "VFIO: {}", parts.join("; "));
}

fn no_iommu(out: &mut String, snap: &Snapshot) {
    let _ = writeln!(
        out,
        "No IOMMU groups: the IOMMU is not active, so no device can be handed to VFIO safely."
    );
    let _ = writeln!(
        out,
        "Fix: boot with `intel_iommu=on` (Intel) or `amd_iommu=on` (AMD) on the kernel command \
         line\n  (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot),\n  \
         and check that the firmware enables VT-d (Intel) or AMD-Vi/IOMMU (AMD)."
    );
    let asked = snap.cmdline.as_deref().and_then(|c| {
        c.split_whitespace()
            .find(|w| *w == "intel_iommu=on" || *w == "amd_iommu=on")
    });
    if let Some(flag) = asked {
        let _ = writeln!(
            out,
            "Note: this kernel was booted with `{flag}` already, so the firmware or hardware \
             does not provide an IOMMU:\n  enable VT-d / AMD-Vi in the firmware setup and check \
             the kernel log for DMAR or AMD-Vi errors."
        );
    }
    out.push('\n');
}

fn group_block(out: &mut String, snap: &Snapshot, g: &IommuGroup, w: &Widths) {
    let verdict = match snap.viability(g.id) {
        Some(v) if v.viable => {
            "viable: every member is unbound or on a driver that does no DMA".to_string()
        }
        Some(v) => {
            let why: Vec<String> = v
                .blockers
                .iter()
                .map(|(a, d)| format!("{a} is bound to {d}"))
                .collect();
            format!("NOT viable: {}", why.join(", "))
        }
        None => "unknown".to_string(),
    };
    let kind = g
        .domain_type
        .as_deref()
        .map(|t| format!(" [{t}]"))
        .unwrap_or_default();
    let _ = writeln!(out, "IOMMU group {}{kind}: {verdict}", g.id);
    match &g.node {
        Some(n) => {
            let _ = writeln!(
                out,
                "  node {}: owner uid {} gid {}, mode {:04o}",
                n.path, n.uid, n.gid, n.mode
            );
        }
        None => {
            let _ = writeln!(out, "  node: none (no member is on a vfio driver)");
        }
    }
    if !g.reserved_regions.is_empty() {
        let regions: Vec<String> = g
            .reserved_regions
            .iter()
            .map(|r| format!("{:#x}-{:#x} {}", r.start, r.end, r.kind))
            .collect();
        let _ = writeln!(out, "  reserved: {}", regions.join(", "));
    }
    for a in &g.devices {
        match snap.device(*a) {
            Some(d) => member(out, d, w),
            None => {
                let _ = writeln!(out, "  {a}  (listed by the group, not found on the bus)");
            }
        }
    }
    out.push('\n');
}

/// Column widths shared by every member line.
struct Widths {
    class: usize,
    driver: usize,
}

impl Widths {
    fn of(devices: &[PciDevice]) -> Self {
        Widths {
            class: devices
                .iter()
                .map(|d| d.class.name().len())
                .max()
                .unwrap_or(0),
            driver: devices
                .iter()
                .map(|d| d.driver.as_deref().unwrap_or("-").len())
                .max()
                .unwrap_or(1),
        }
    }
}

fn member(out: &mut String, d: &PciDevice, w: &Widths) {
    let driver = d.driver.as_deref().unwrap_or("-");
    let mut line = format!(
        "  {}  {}:{}  {:<cw$}  driver {:<dw$}",
        d.address,
        d.vendor,
        d.device,
        d.class.name(),
        driver,
        cw = w.class,
        dw = w.driver,
    );
    if let Some(o) = &d.driver_override {
        let _ = write!(line, "  override {o}");
    }
    let mut flags = Vec::new();
    if d.usage.in_use() {
        flags.push("IN USE".to_string());
    }
    if let Some(s) = &d.sriov {
        flags.push(format!("SR-IOV PF {}/{} VFs", s.num_vfs, s.total_vfs));
    }
    if let Some(pf) = d.physfn {
        flags.push(format!("VF of {pf}"));
    }
    if d.boot_vga == Some(true) {
        flags.push("boot VGA".to_string());
    }
    if let Some(p) = behind(d) {
        flags.push(format!("behind {p}"));
    }
    if !flags.is_empty() {
        let _ = write!(line, "  [{}]", flags.join("; "));
    }
    let _ = writeln!(out, "{}", line.trim_end());
    if let Some(c) = &d.vfio_cdev {
        let node = match &c.node {
            Some(n) => format!("owner uid {} gid {}, mode {:04o}", n.uid, n.gid, n.mode),
            None => "node missing".to_string(),
        };
        let _ = writeln!(
            out,
            "      cdev {} ({}:{}): {node}",
            c.path, c.major, c.minor
        );
    }
    for reason in d.usage.reasons() {
        let _ = writeln!(out, "      in use: {reason}");
    }
    let idle: Vec<String> = d
        .usage
        .interfaces
        .iter()
        .filter(|i| !(i.up && (!i.addresses.is_empty() || i.routes > 0)))
        .map(|i| {
            format!(
                "{} ({})",
                i.name,
                if i.up { "up, unconfigured" } else { "down" }
            )
        })
        .chain(
            d.usage
                .block_devices
                .iter()
                .filter(|b| b.mounts.is_empty() && b.holders.is_empty())
                .map(|b| format!("{} (not mounted)", b.name)),
        )
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(out, "      has: {}", idle.join(", "));
    }
}

fn behind(d: &PciDevice) -> Option<PciAddress> {
    d.parent
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: a tree without `uname` said "kernel unknown kernel".
    #[test]
    fn an_unknown_kernel_is_said_once() {
        let mut snap = Snapshot::default();
        let text = render(&snap);
        assert!(text.starts_with("Host: kernel version unknown;"), "{text}");
        assert!(!text.contains("unknown kernel"), "{text}");
        snap.kernel = Some("6.1.0".into());
        assert!(render(&snap).starts_with("Host: kernel 6.1.0;"));
    }
}
