//! Scan benchmark: `vfioctl::host::scan` on a synthetic host of 4096 functions in 1024
//! groups, against a minimal baseline that performs the same file system calls (the same
//! listings, link reads and file reads) without parsing or building anything.
//!
//! Run with `cargo bench --bench scan` (optionally `-- FUNCTIONS GROUPS RUNS`). Prints the
//! median and minimum of each, interleaved run by run so that load from other processes hits
//! both alike, and the ratio (target: at most 1.5). Then the scoped scan (`scan_closure`) of
//! one function, as a hot-plug pass or `reconcile --device` reads it, against the whole scan.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use vfioctl::fixtures::synthetic::SyntheticHost;
use vfioctl::host::{scan, scan_closure, Roots};

fn read(p: &Path) -> usize {
    fs::read_to_string(p).map(|s| s.len()).unwrap_or(0)
}

fn link(p: &Path) -> usize {
    fs::read_link(p).map(|t| t.as_os_str().len()).unwrap_or(0)
}

fn list(p: &Path) -> Vec<std::ffi::OsString> {
    fs::read_dir(p)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// Resolves a sysfs link lexically (what the scanner does), without any other work.
fn resolve(p: &Path) -> std::path::PathBuf {
    match fs::read_link(p) {
        Ok(t) => {
            let mut out = std::path::PathBuf::new();
            for c in p.parent().unwrap_or(Path::new("/")).join(t).components() {
                match c {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    other => out.push(other.as_os_str()),
                }
            }
            out
        }
        Err(_) => p.to_path_buf(),
    }
}

/// The same reads as the scanner, nothing else.
fn baseline(roots: &Roots) -> usize {
    let sys = fs::canonicalize(&roots.sysfs).unwrap();
    let mut n = 0;
    let devices = sys.join("bus/pci/devices");
    for name in list(&devices) {
        let dir = resolve(&devices.join(name));
        for f in [
            "vendor",
            "device",
            "class",
            "subsystem_vendor",
            "subsystem_device",
            "revision",
            "driver_override",
            "numa_node",
            "reset_method",
        ] {
            n += read(&dir.join(f));
        }
        for l in ["driver", "iommu_group", "iommu", "physfn"] {
            n += link(&dir.join(l));
        }
        if fs::read_to_string(dir.join("class")).is_ok_and(|c| c.starts_with("0x0300")) {
            n += read(&dir.join("boot_vga"));
        }
        if let Ok(total) = fs::read_to_string(dir.join("sriov_totalvfs")) {
            n += total.len();
            let num: u32 = fs::read_to_string(dir.join("sriov_numvfs"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            for f in ["sriov_offset", "sriov_stride", "sriov_vf_device"] {
                n += read(&dir.join(f));
            }
            for i in 0..num {
                n += link(&dir.join(format!("virtfn{i}")));
            }
        }
    }
    let groups = sys.join("kernel/iommu_groups");
    for g in list(&groups) {
        let d = groups.join(g);
        n += list(&d.join("devices")).len();
        n += read(&d.join("type"));
        n += read(&d.join("reserved_regions"));
    }
    let units = sys.join("class/iommu");
    for u in list(&units) {
        n += list(&units.join(u).join("devices")).len();
    }
    let modules = sys.join("module");
    n += list(&modules).len();
    n += read(&modules.join("vfio_iommu_type1/parameters/dma_entry_limit"));
    n += read(&modules.join("vfio/parameters/enable_unsafe_noiommu_mode"));
    n += usize::from(fs::symlink_metadata(roots.dev.join("iommu")).is_ok());
    for e in list(&roots.dev.join("vfio")) {
        n += fs::metadata(roots.dev.join("vfio").join(e))
            .map(|m| m.len() as usize)
            .unwrap_or(0);
    }
    for f in [
        "net/route",
        "net/fib_trie",
        "net/if_inet6",
        "net/ipv6_route",
    ] {
        n += read(&roots.proc.join(f));
    }
    let class_net = sys.join("class/net");
    for i in list(&class_net) {
        let dir = resolve(&class_net.join(i));
        let _ = resolve(&dir.join("device"));
        n += read(&dir.join("operstate"));
        n += read(&dir.join("flags"));
    }
    n += read(&roots.proc.join("self/mountinfo"));
    let class_block = sys.join("class/block");
    for b in list(&class_block) {
        let dir = resolve(&class_block.join(b));
        n += usize::from(dir.join("partition").exists());
        n += read(&dir.join("dev"));
        n += list(&dir.join("holders")).len();
    }
    n += list(&sys.join("bus/pci/drivers")).len();
    n += read(&roots.proc.join("sys/kernel/osrelease"));
    n += read(&roots.proc.join("cmdline"));
    n
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; take numbers only.
    let nums: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let functions = nums.first().copied().unwrap_or(4096);
    let groups = nums.get(1).copied().unwrap_or(1024);
    let runs = nums.get(2).copied().unwrap_or(25);

    let dir = tempfile::tempdir().expect("temporary directory");
    let t = Instant::now();
    let roots = SyntheticHost::new(functions, groups)
        .write(dir.path())
        .expect("write synthetic host");
    let written = t.elapsed();
    let snap = scan(&roots).expect("scan");
    assert_eq!(snap.devices.len(), functions, "scan found every function");
    assert_eq!(
        snap.groups.len(),
        groups.min(functions),
        "scan found every group"
    );
    assert!(snap.warnings.is_empty(), "{:?}", &snap.warnings[..1]);
    println!(
        "synthetic host: {functions} functions, {groups} groups, {} interfaces, {} disks (written in {})",
        snap.devices.iter().map(|d| d.usage.interfaces.len()).sum::<usize>(),
        snap.devices.iter().map(|d| d.usage.block_devices.len()).sum::<usize>(),
        ms(written)
    );

    // Warm the caches for both.
    for _ in 0..3 {
        black_box(baseline(&roots));
        black_box(scan(&roots).ok());
    }
    let mut base = Vec::with_capacity(runs);
    let mut ours = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        black_box(baseline(&roots));
        base.push(t.elapsed());
        let t = Instant::now();
        black_box(scan(&roots).ok());
        ours.push(t.elapsed());
    }
    let (bmin, omin) = (*base.iter().min().unwrap(), *ours.iter().min().unwrap());
    let (bmed, omed) = (median(&mut base), median(&mut ours));
    println!(
        "baseline (same reads, no parsing): median {}, min {} over {runs} runs",
        ms(bmed),
        ms(bmin)
    );
    println!(
        "vfioctl host::scan:                median {}, min {} over {runs} runs",
        ms(omed),
        ms(omin)
    );
    let ratio = omed.as_secs_f64() / bmed.as_secs_f64();
    println!(
        "ratio (median): {ratio:.2}x, (min): {:.2}x; target <= 1.5x: {}",
        omin.as_secs_f64() / bmin.as_secs_f64(),
        if ratio <= 1.5 { "met" } else { "NOT met" }
    );

    // The scoped scan: one function's closure, for a sample of functions across the host.
    let seeds: Vec<_> = snap.devices.iter().step_by(97).map(|d| d.address).collect();
    let mut scoped = Vec::with_capacity(runs * seeds.len());
    let mut sizes = Vec::new();
    for _ in 0..runs {
        for seed in &seeds {
            let t = Instant::now();
            let part = black_box(scan_closure(&roots, &[*seed]).expect("scoped scan"));
            scoped.push(t.elapsed());
            sizes.push(part.devices.len());
        }
    }
    let smed = median(&mut scoped);
    sizes.sort_unstable();
    println!(
        "vfioctl host::scan_closure (one function's closure, {} seeds, {}-{} functions read): median {}; {:.0}x faster than the whole scan",
        seeds.len(),
        sizes.first().copied().unwrap_or(0),
        sizes.last().copied().unwrap_or(0),
        ms(smed),
        omed.as_secs_f64() / smed.as_secs_f64()
    );
}
