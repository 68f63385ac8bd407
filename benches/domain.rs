//! Domain benchmarks on a real VFIO host (the VM suite's `domain-bench` and `broker` scenarios
//! run them in the guest as `vfioctl-bench-domain`). Moved out of the CLI: they are
//! measurements, not commands.
//!
//! - `map --device ADDRESS [--backend legacy|iommufd] [--mib 512] [--rounds 5]`: vfioctl's
//!   domain reconcile of one window against the minimal sequence a hand-written program would
//!   run, alternately, on the same memory: both back the window with
//!   `domain::memory::WindowMemory` (a fresh shared memfd each round, so both pay the same page
//!   faults when the kernel pins it). Prints both medians and the ratio. The minimal sequence on
//!   `legacy` (the default): open container and group, attach, type1v2, one
//!   `VFIO_IOMMU_MAP_DMA`; on `iommufd`: open `/dev/iommu` and the function's cdev, bind,
//!   allocate an IOAS, attach, one `IOMMU_IOAS_MAP`.
//! - `open NAME [--direct GROUP] [--rounds 200] [--run-dir DIR]`: the broker's hand-over of a
//!   domain (request to fds received), or with `--direct` the same user opening the container
//!   and the group and attaching directly; prints the median, min and max.
//!
//! `cargo bench` runs it with only `--bench`: it needs a VFIO device, so it says so and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vfioctl::config::model::{
    BackendChoice, Config, DeviceSpec, DomainSpec, Origin, Placement, Selector, WindowSpec,
};
use vfioctl::domain::iommu::Backing;
use vfioctl::domain::linux::LinuxIommu;
use vfioctl::domain::memory::WindowMemory;
use vfioctl::domain::windows::Window;
use vfioctl::domain::Domains;
use vfioctl::host::Roots;
use vfioctl::vfio::container::{Container, Group};
use vfioctl::vfio::iommufd::{DeviceFd, Iommufd};

#[derive(Debug, Parser)]
#[command(name = "vfioctl-bench-domain")]
struct Cli {
    #[command(subcommand)]
    what: Option<What>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Map one window through vfioctl's domain layer and through a minimal sequence.
    Map {
        /// A function on vfio-pci whose group is mapped.
        #[arg(long, value_name = "ADDRESS")]
        device: String,
        /// The backend both sides map through.
        #[arg(long, value_enum, default_value_t = BenchBackend::Legacy)]
        backend: BenchBackend,
        /// Window size in MiB.
        #[arg(long, default_value_t = 512)]
        mib: u64,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Time the broker's hand-over of a domain, or a direct open and attach of a group.
    Open {
        name: String,
        /// Time a direct open of this group instead (watch must not hold it).
        #[arg(long, value_name = "GROUP")]
        direct: Option<u32>,
        #[arg(long, default_value_t = 200)]
        rounds: u32,
        /// The running watch's run directory (its broker socket).
        #[arg(long, default_value = "/run/vfioctl")]
        run_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchBackend {
    /// Groups and a type1 container.
    Legacy,
    /// `/dev/iommu`, the device's cdev and an IOAS (a kernel with iommufd and device cdevs).
    Iommufd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.what {
        None => {
            println!("domain benchmarks need a VFIO device: run `vfioctl-bench-domain map|open` on one (the VM suite does)");
            return ExitCode::SUCCESS;
        }
        Some(What::Map {
            device,
            backend,
            mib,
            rounds,
        }) => bench_map(&device, backend, mib, rounds),
        Some(What::Open {
            name,
            direct,
            rounds,
            run_dir,
        }) => bench_open(&name, direct, rounds, &run_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfioctl-bench-domain: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench_map(device: &str, backend: BenchBackend, mib: u64, rounds: u32) -> Result<(), String> {
    let roots = Roots::default();
    let addr: vfioctl::pci::PciAddress = device
        .parse()
        .map_err(|_| format!("{device}: not a PCI address"))?;
    let snap =
        vfioctl::host::observe(&roots, None).map_err(|e| format!("cannot read the host: {e}"))?;
    let group = snap
        .device(addr)
        .and_then(|d| d.iommu_group)
        .ok_or_else(|| format!("{addr}: no such function or no IOMMU group"))?;
    let cdev = match backend {
        BenchBackend::Legacy => None,
        BenchBackend::Iommufd => Some(PathBuf::from(
            &snap
                .cdev(addr)
                .ok_or_else(|| format!("{addr} has no VFIO device cdev (not on vfio-pci, or a kernel without VFIO_DEVICE_CDEV)"))?
                .path,
        )),
    };
    let size = mib << 20;
    let cfg = Config {
        version: 1,
        devices: vec![DeviceSpec {
            name: "dev".into(),
            selector: Selector::Address(addr),
            driver: "vfio-pci".into(),
            companions: vec![],
            force: false,
            origin: Origin::default(),
        }],
        domains: vec![DomainSpec {
            name: "bench".into(),
            devices: vec!["dev".into()],
            placement: Placement::Shared,
            backend: match backend {
                BenchBackend::Legacy => BackendChoice::Legacy,
                BenchBackend::Iommufd => BackendChoice::Iommufd,
            },
            windows: vec![WindowSpec {
                name: Some("w".into()),
                iova: 1 << 32,
                size,
                hugepages: false,
                origin: Origin::default(),
            }],
            origin: Origin::default(),
        }],
        ..Config::default()
    };
    let limit = vfioctl::domain::memory::ensure_memlock(size);
    if limit.shortfall > 0 {
        return Err(format!("RLIMIT_MEMLOCK is {} bytes short", limit.shortfall));
    }
    // One untimed round first: the guest's first touch of that much memory costs about a
    // second more, whichever side pays it.
    let minimal_map = |roots: &Roots| match &cdev {
        None => minimal_map(roots, group, size),
        Some(path) => minimal_ioas_map(roots, path, device, size),
    };
    minimal_map(&roots).map_err(|e| format!("warm-up: {e}"))?;
    let mut ours = Vec::new();
    let mut minimal = Vec::new();
    for _ in 0..rounds.max(1) {
        let mut domains = Domains::new(LinuxIommu::new(roots.clone()));
        let t = Instant::now();
        let report = domains.reconcile(&cfg, &snap);
        let took = t.elapsed();
        if !report.ok() || domains.pinned_bytes() != size {
            return Err(format!("vfioctl did not map the window:\n{report}"));
        }
        domains.release_all();
        ours.push(took);
        minimal.push(minimal_map(&roots).map_err(|e| format!("minimal sequence: {e}"))?);
    }
    let (o, m) = (median(&mut ours), median(&mut minimal));
    let (what, call) = match backend {
        BenchBackend::Legacy => ("legacy", "MAP_DMA"),
        BenchBackend::Iommufd => ("iommufd", "IOAS_MAP"),
    };
    println!(
        "bench-map: {mib} MiB window, group {group}, backend {what}, {} rounds: vfioctl median {:.1} ms, minimal {call} median {:.1} ms, ratio {:.3}",
        ours.len(),
        o.as_secs_f64() * 1e3,
        m.as_secs_f64() * 1e3,
        o.as_secs_f64() / m.as_secs_f64()
    );
    println!("bench-map: vfioctl runs (ms): {}", millis(&ours));
    println!("bench-map: minimal runs (ms): {}", millis(&minimal));
    Ok(())
}

/// What a minimal program does: open the container and group, attach, select type1v2, back
/// the window with a memfd (the same `WindowMemory` vfioctl uses) and map it with one
/// `VFIO_IOMMU_MAP_DMA`. Timed from the first open to the map's return, like the reconcile.
fn minimal_map(roots: &Roots, group: u32, size: u64) -> Result<Duration, String> {
    let window = Window {
        name: "bench".into(),
        iova: 1 << 32,
        size,
        hugepages: false,
    };
    let t = Instant::now();
    let c = Container::open(&roots.dev_vfio().join("vfio")).map_err(|e| e.to_string())?;
    let g = Group::open(&roots.group_node(group), group).map_err(|e| e.to_string())?;
    g.set_container(&c).map_err(|e| e.to_string())?;
    c.set_iommu_type1v2().map_err(|e| e.to_string())?;
    let memory = WindowMemory::allocate(&window, &roots.proc).map_err(|e| e.to_string())?;
    // SAFETY: `memory` stays mapped until after the container is closed below.
    let mapped = unsafe { c.map_dma(window.iova, size, memory.addr()) };
    let took = t.elapsed();
    drop(g);
    drop(c);
    drop(memory);
    mapped.map_err(|e| e.to_string())?;
    Ok(took)
}

/// The same on iommufd: open `/dev/iommu` and the function's cdev, bind, allocate an IOAS,
/// attach, back the window with a `WindowMemory` and map it with one `IOMMU_IOAS_MAP`. Timed
/// from the first open to the map's return.
fn minimal_ioas_map(
    roots: &Roots,
    cdev: &std::path::Path,
    address: &str,
    size: u64,
) -> Result<Duration, String> {
    let window = Window {
        name: "bench".into(),
        iova: 1 << 32,
        size,
        hugepages: false,
    };
    let t = Instant::now();
    let iommufd = Iommufd::open(&roots.iommufd()).map_err(|e| e.to_string())?;
    let device = DeviceFd::open(cdev, address).map_err(|e| e.to_string())?;
    device.bind(&iommufd).map_err(|e| e.to_string())?;
    let ioas = iommufd.alloc_ioas().map_err(|e| e.to_string())?;
    device.attach(ioas).map_err(|e| e.to_string())?;
    let memory = WindowMemory::allocate(&window, &roots.proc).map_err(|e| e.to_string())?;
    // SAFETY: `memory` stays mapped until after the iommufd and the device are closed below.
    let mapped = unsafe { iommufd.map(ioas, window.iova, size, memory.addr()) };
    let took = t.elapsed();
    drop(device);
    drop(iommufd);
    drop(memory);
    mapped.map_err(|e| e.to_string())?;
    Ok(took)
}

fn bench_open(
    name: &str,
    direct: Option<u32>,
    rounds: u32,
    run_dir: &std::path::Path,
) -> Result<(), String> {
    let roots = Roots::default();
    let mut times = Vec::new();
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        match direct {
            None => vfioctl::broker::client::open(run_dir, name)
                .map(drop)
                .map_err(|e| e.to_string())?,
            Some(g) => {
                let c =
                    Container::open(&roots.dev_vfio().join("vfio")).map_err(|e| e.to_string())?;
                let grp = Group::open(&roots.group_node(g), g).map_err(|e| e.to_string())?;
                grp.set_container(&c).map_err(|e| e.to_string())?;
                c.set_iommu_type1v2().map_err(|e| e.to_string())?;
            }
        }
        times.push(start.elapsed());
    }
    times.sort_unstable();
    let what = match direct {
        None => format!("broker hand-over of \"{name}\""),
        Some(g) => format!("direct open+attach of group {g}"),
    };
    println!(
        "{what}: median {:?}, min {:?}, max {:?} over {} rounds",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn millis(v: &[Duration]) -> String {
    v.iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(" ")
}
