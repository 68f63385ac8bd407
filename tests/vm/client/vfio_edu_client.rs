//! A small VFIO client for the VM suite: drives QEMU's `edu` device through the type1 container
//! path and checks that DMA goes where the IOMMU mapping says and nowhere else.
//!
//! Usage: `vfio-edu-client GROUP ADDRESS` (e.g. `5 0000:00:05.0`), or
//! `vfio-edu-client --inherited ADDRESS` under `vfioctl domain open`: the container, group and
//! window come from the fds that command passes on (`VFIOCTL_GROUP_FDS`,
//! `VFIOCTL_WINDOW_FDS`); the window is reached through the client's own mapping of the memfd. Prints one line per step
//! (`ok STEP detail` or `error STEP detail`) and exits 1 at the first failure. Std only (no
//! crates): the suite compiles it with plain `rustc`, so the guest needs nothing but libc.
//!
//! Steps: open the container and the group (the group node's permissions decide whether an
//! unprivileged user may), check viability, attach, choose type1v2, map a 2 MiB window, refuse a
//! duplicate mapping and one over the MSI window, open the device, enable bus mastering, let
//! edu copy a pattern from the window into its buffer and back to another place in the window
//! (compared), then point it at an unmapped IOVA (the data must not arrive; the kernel logs a
//! DMAR fault) and unmap the window.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::process::exit;
use std::thread::sleep;
use std::time::{Duration, Instant};

extern "C" {
    fn ioctl(fd: i32, request: u64, ...) -> i32;
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
}

// <linux/vfio.h>: _IO(VFIO_TYPE = ';', VFIO_BASE + n)
const fn vfio_io(n: u64) -> u64 {
    (b';' as u64) << 8 | (100 + n)
}
const GET_API_VERSION: u64 = vfio_io(0);
const CHECK_EXTENSION: u64 = vfio_io(1);
const SET_IOMMU: u64 = vfio_io(2);
const GROUP_GET_STATUS: u64 = vfio_io(3);
const GROUP_SET_CONTAINER: u64 = vfio_io(4);
const GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
const DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
const IOMMU_MAP_DMA: u64 = vfio_io(13);
const IOMMU_UNMAP_DMA: u64 = vfio_io(14);
const TYPE1V2_IOMMU: u64 = 3;
const GROUP_VIABLE: u32 = 1;
const DMA_READ_WRITE: u32 = 0b11;
const BAR0: u32 = 0;
const CONFIG_REGION: u32 = 7;

// edu (QEMU hw/misc/edu.c): registers in BAR0, a 4 KiB buffer at 0x40000 in its own space,
// a 28-bit DMA mask. QEMU 7.2's edu aborts on a 4096-byte transfer: move 2 KiB.
const EDU_ID: u64 = 0x00;
const EDU_DMA_SRC: u64 = 0x80;
const EDU_DMA_DST: u64 = 0x88;
const EDU_DMA_COUNT: u64 = 0x90;
const EDU_DMA_CMD: u64 = 0x98;
const EDU_DMA_RUN: u32 = 1;
const EDU_DMA_TO_RAM: u32 = 2;
const EDU_BUFFER: u32 = 0x40000;
const LEN: usize = 2048;

const WINDOW_IOVA: u64 = 0x10_0000;
const WINDOW_SIZE: usize = 2 << 20;
const UNMAPPED_IOVA: u64 = 0x80_0000;
const MSI_IOVA: u64 = 0xfee0_0000;

#[repr(C)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

#[repr(C)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}

#[repr(C)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

fn step<T>(name: &str, r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            println!("error {name} {e}");
            exit(1);
        }
    }
}

fn ok(name: &str, detail: &str) {
    println!("ok {name} {detail}");
}

fn check(ret: i32, what: &str) -> Result<i32, String> {
    if ret < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

fn open_rw(path: &str) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))
}

fn map_dma(container: RawFd, vaddr: u64, iova: u64, size: u64) -> io::Result<()> {
    let m = DmaMap {
        argsz: std::mem::size_of::<DmaMap>() as u32,
        flags: DMA_READ_WRITE,
        vaddr,
        iova,
        size,
    };
    // SAFETY: `m` is a valid vfio_iommu_type1_dma_map for the duration of the call.
    if unsafe { ioctl(container, IOMMU_MAP_DMA, &m as *const DmaMap) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn region(device: RawFd, index: u32) -> Result<RegionInfo, String> {
    let mut r = RegionInfo {
        argsz: std::mem::size_of::<RegionInfo>() as u32,
        flags: 0,
        index,
        cap_offset: 0,
        size: 0,
        offset: 0,
    };
    // SAFETY: `r` is a valid vfio_region_info the kernel fills in.
    check(
        unsafe { ioctl(device, DEVICE_GET_REGION_INFO, &mut r as *mut RegionInfo) },
        "DEVICE_GET_REGION_INFO",
    )?;
    Ok(r)
}

struct Edu {
    dev: File,
    bar: u64,
}

impl Edu {
    fn read(&self, reg: u64) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.dev
            .read_exact_at(&mut b, self.bar + reg)
            .map_err(|e| format!("read BAR0+{reg:#x}: {e}"))?;
        Ok(u32::from_le_bytes(b))
    }

    fn write(&self, reg: u64, v: u32) -> Result<(), String> {
        self.dev
            .write_all_at(&v.to_le_bytes(), self.bar + reg)
            .map_err(|e| format!("write BAR0+{reg:#x}: {e}"))
    }

    /// One edu DMA transfer; waits for the RUN bit to clear (edu completes from a timer).
    fn dma(&self, src: u32, dst: u32, cmd: u32) -> Result<Duration, String> {
        self.write(EDU_DMA_SRC, src)?;
        self.write(EDU_DMA_DST, dst)?;
        self.write(EDU_DMA_COUNT, LEN as u32)?;
        self.write(EDU_DMA_CMD, cmd | EDU_DMA_RUN)?;
        let start = Instant::now();
        while self.read(EDU_DMA_CMD)? & EDU_DMA_RUN != 0 {
            if start.elapsed() > Duration::from_secs(5) {
                return Err("DMA did not complete within 5 s".into());
            }
            sleep(Duration::from_millis(5));
        }
        Ok(start.elapsed())
    }
}

/// `GROUP=FD,...` / `FD:IOVA:SIZE,...`: the first entry's numbers.
fn first_fields(var: &str, sep: char) -> Result<Vec<u64>, String> {
    let v = std::env::var(var).map_err(|e| format!("{var}: {e}"))?;
    let first = v.split(',').next().unwrap_or("");
    first
        .split(sep)
        .map(|f| {
            let f = f.trim();
            match f.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => f.parse(),
            }
            .map_err(|e| format!("{var}={v}: {e}"))
        })
        .collect()
}

fn open_device(gfd: RawFd, address: &str) -> Edu {
    let name = step(
        "device-name",
        CString::new(address).map_err(|e| e.to_string()),
    );
    let dfd = step(
        "device-fd",
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        check(
            unsafe { ioctl(gfd, GROUP_GET_DEVICE_FD, name.as_ptr()) },
            "GROUP_GET_DEVICE_FD",
        ),
    );
    // SAFETY: the kernel just returned this fd to us; File takes sole ownership.
    let dev = unsafe { File::from_raw_fd(dfd) };
    let bar = step("bar0", region(dfd, BAR0)).offset;
    let cfg = step("config", region(dfd, CONFIG_REGION)).offset;
    let edu = Edu { dev, bar };
    let id = step("edu-id", edu.read(EDU_ID));
    if id & 0xff != 0xed {
        step::<()>("edu-id", Err(format!("{address} is not edu (id {id:#x})")));
    }
    let mut cmd = [0u8; 2];
    step(
        "bus-master",
        edu.dev.read_exact_at(&mut cmd, cfg + 4).map_err(|e| e.to_string()),
    );
    let cmd = u16::from_le_bytes(cmd) | 0x4;
    step(
        "bus-master",
        edu.dev.write_all_at(&cmd.to_le_bytes(), cfg + 4).map_err(|e| e.to_string()),
    );
    ok("device", &format!("{address} edu id {id:#x}, bus master on"));
    edu
}

/// Under `vfioctl domain open`: nothing is opened here but the device, through the inherited
/// group; the window is the held memfd, mapped by this process.
fn inherited(address: &str) {
    let g = step("env-group", first_fields("VFIOCTL_GROUP_FDS", '='));
    let w = step("env-window", first_fields("VFIOCTL_WINDOW_FDS", ':'));
    if g.len() != 2 || w.len() != 3 {
        step::<()>("env", Err("unexpected VFIOCTL_GROUP_FDS / VFIOCTL_WINDOW_FDS".into()));
    }
    let (gfd, wfd, iova, size) = (g[1] as RawFd, w[0] as RawFd, w[1], w[2] as usize);
    ok("inherited", &format!("group {} fd {gfd}, window fd {wfd} iova {iova:#x} size {size:#x}", g[0]));
    // SAFETY: a shared mapping of the inherited memfd; the pointer is checked below.
    let buf = unsafe { mmap(std::ptr::null_mut(), size, 0x3, 0x01, wfd, 0) };
    if buf as isize == -1 {
        step::<()>("mmap-window", Err(io::Error::last_os_error().to_string()));
    }
    // SAFETY: `size` bytes of the memfd mapped above; the device writes them only through the
    // held IOMMU mapping, read volatile after each transfer.
    let window = unsafe { std::slice::from_raw_parts_mut(buf, size) };
    ok("mmap-window", "shared mapping of the memfd");
    let edu = open_device(gfd, address);
    let (src, back) = (0x2000usize, 0x5000usize);
    for (i, b) in window[src..src + LEN].iter_mut().enumerate() {
        *b = (i * 11 + 5) as u8;
    }
    window[back..back + LEN].fill(0);
    let t1 = step("dma-to-device", edu.dma((iova + src as u64) as u32, EDU_BUFFER, 0));
    let t2 = step(
        "dma-to-ram",
        edu.dma(EDU_BUFFER, (iova + back as u64) as u32, EDU_DMA_TO_RAM),
    );
    // SAFETY: pointers from live references into the window.
    let wrong = (0..LEN)
        .filter(|&i| unsafe { std::ptr::read_volatile(&window[back + i]) } != window[src + i])
        .count();
    if wrong != 0 {
        step::<()>("dma-copy", Err(format!("{wrong} of {LEN} bytes differ")));
    }
    ok(
        "dma-copy",
        &format!("{LEN} bytes window+{src:#x} -> edu -> window+{back:#x} verified ({t1:?}, {t2:?})"),
    );
    let outside = iova + size as u64 + 0x40_0000;
    // SAFETY: as above.
    let before: Vec<u8> = window.iter().map(|b| unsafe { std::ptr::read_volatile(b) }).collect();
    step(
        "dma-outside",
        edu.dma(EDU_BUFFER, outside as u32, EDU_DMA_TO_RAM).map(|_| ()),
    );
    // SAFETY: as above.
    let now: Vec<u8> = window.iter().map(|b| unsafe { std::ptr::read_volatile(b) }).collect();
    if now != before {
        step::<()>("dma-outside-blocked", Err("the window changed".into()));
    }
    ok("dma-outside-blocked", &format!("write to iova {outside:#x} went nowhere"));
    println!("done");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--inherited" {
        inherited(&args[2]);
        return;
    }
    if args.len() != 3 {
        eprintln!("usage: vfio-edu-client GROUP ADDRESS");
        exit(2);
    }
    let (group_no, address) = (&args[1], &args[2]);

    let container = step("open-container", open_rw("/dev/vfio/vfio"));
    let cfd = container.as_raw_fd();
    // SAFETY: plain ioctls without arguments on a valid fd.
    let api = step(
        "api-version",
        check(unsafe { ioctl(cfd, GET_API_VERSION) }, "GET_API_VERSION"),
    );
    let type1v2 = step(
        "type1v2",
        // SAFETY: as above, the argument is passed by value.
        check(
            unsafe { ioctl(cfd, CHECK_EXTENSION, TYPE1V2_IOMMU) },
            "CHECK_EXTENSION",
        ),
    );
    if type1v2 != 1 {
        step::<()>("type1v2", Err("the kernel lacks VFIO_TYPE1v2_IOMMU".into()));
    }
    ok("container", &format!("api {api}, type1v2"));

    let group_path = format!("/dev/vfio/{group_no}");
    let group = step("open-group", open_rw(&group_path));
    let gfd = group.as_raw_fd();
    let mut status = GroupStatus { argsz: 8, flags: 0 };
    step(
        "group-status",
        // SAFETY: `status` is a valid vfio_group_status.
        check(
            unsafe { ioctl(gfd, GROUP_GET_STATUS, &mut status as *mut GroupStatus) },
            "GROUP_GET_STATUS",
        ),
    );
    if status.flags & GROUP_VIABLE == 0 {
        step::<()>("group-viable", Err(format!("{group_path} is not viable")));
    }
    ok("group-viable", &group_path);
    step(
        "set-container",
        // SAFETY: the kernel reads one int (the container fd) through the pointer.
        check(
            unsafe { ioctl(gfd, GROUP_SET_CONTAINER, &cfd as *const RawFd) },
            "GROUP_SET_CONTAINER",
        ),
    );
    step(
        "set-iommu",
        // SAFETY: argument by value.
        check(unsafe { ioctl(cfd, SET_IOMMU, TYPE1V2_IOMMU) }, "SET_IOMMU"),
    );
    ok("attached", "type1v2");

    // SAFETY: an anonymous private mapping; the pointer is checked below.
    let buf = unsafe { mmap(std::ptr::null_mut(), WINDOW_SIZE, 0x3, 0x22, -1, 0) };
    if buf as isize == -1 {
        step::<()>("buffer", Err(io::Error::last_os_error().to_string()));
    }
    // SAFETY: `buf` is WINDOW_SIZE bytes of our own memory; the device writes it only through
    // the mapping below, and we read it after the transfer has completed.
    let window = unsafe { std::slice::from_raw_parts_mut(buf, WINDOW_SIZE) };
    step(
        "map-window",
        map_dma(cfd, buf as u64, WINDOW_IOVA, WINDOW_SIZE as u64).map_err(|e| e.to_string()),
    );
    ok(
        "map-window",
        &format!("iova {WINDOW_IOVA:#x} size {WINDOW_SIZE:#x}"),
    );
    match map_dma(cfd, buf as u64, WINDOW_IOVA, WINDOW_SIZE as u64) {
        Err(e) if e.raw_os_error() == Some(17) => ok("map-twice-refused", "EEXIST"),
        other => step::<()>(
            "map-twice-refused",
            Err(format!("expected EEXIST, got {other:?}")),
        ),
    }
    match map_dma(cfd, buf as u64, MSI_IOVA, 4096) {
        Err(e) if e.raw_os_error() == Some(22) => ok("map-msi-window-refused", "EINVAL"),
        other => step::<()>(
            "map-msi-window-refused",
            Err(format!("expected EINVAL, got {other:?}")),
        ),
    }

    let name = step(
        "device-name",
        CString::new(address.as_str()).map_err(|e| e.to_string()),
    );
    let dfd = step(
        "device-fd",
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        check(
            unsafe { ioctl(gfd, GROUP_GET_DEVICE_FD, name.as_ptr()) },
            "GROUP_GET_DEVICE_FD",
        ),
    );
    // SAFETY: the kernel just returned this fd to us; File takes sole ownership.
    let dev = unsafe { File::from_raw_fd(dfd) };
    let bar = step("bar0", region(dfd, BAR0)).offset;
    let cfg = step("config", region(dfd, CONFIG_REGION)).offset;
    let edu = Edu { dev, bar };
    let id = step("edu-id", edu.read(EDU_ID));
    if id & 0xff != 0xed {
        step::<()>("edu-id", Err(format!("{address} is not edu (id {id:#x})")));
    }
    // bus mastering on (PCI command register bit 2), or edu's DMA goes nowhere
    let mut cmd = [0u8; 2];
    step(
        "bus-master",
        edu.dev
            .read_exact_at(&mut cmd, cfg + 4)
            .map_err(|e| e.to_string()),
    );
    let cmd = u16::from_le_bytes(cmd) | 0x4;
    step(
        "bus-master",
        edu.dev
            .write_all_at(&cmd.to_le_bytes(), cfg + 4)
            .map_err(|e| e.to_string()),
    );
    ok(
        "device",
        &format!("{address} edu id {id:#x}, bus master on"),
    );

    // RAM -> edu -> RAM through the mapping
    for (i, b) in window[..LEN].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let back = 0x1000usize;
    window[back..back + LEN].fill(0);
    let t1 = step("dma-to-device", edu.dma(WINDOW_IOVA as u32, EDU_BUFFER, 0));
    let t2 = step(
        "dma-to-ram",
        edu.dma(
            EDU_BUFFER,
            (WINDOW_IOVA as u32) + back as u32,
            EDU_DMA_TO_RAM,
        ),
    );
    // the device wrote behind the compiler's back: read volatile
    let arrived: Vec<u8> = window[back..back + LEN]
        .iter()
        // SAFETY: each pointer comes from a live reference into the window.
        .map(|b| unsafe { std::ptr::read_volatile(b) })
        .collect();
    let wrong = (0..LEN).filter(|&i| arrived[i] != window[i]).count();
    if wrong != 0 {
        step::<()>(
            "dma-copy",
            Err(format!(
                "{wrong} of {LEN} bytes differ after the round trip"
            )),
        );
    }
    ok(
        "dma-copy",
        &format!("{LEN} bytes RAM->edu->RAM verified ({t1:?}, {t2:?})"),
    );

    // edu -> an IOVA with no mapping: the IOMMU must stop it (the window stays untouched)
    let before: Vec<u8> = window.to_vec();
    step(
        "dma-unmapped",
        edu.dma(EDU_BUFFER, UNMAPPED_IOVA as u32, EDU_DMA_TO_RAM)
            .map(|_| ()),
    );
    // SAFETY: as above, pointers from live references into the window.
    let now: Vec<u8> = window
        .iter()
        .map(|b| unsafe { std::ptr::read_volatile(b) })
        .collect();
    if now != before {
        step::<()>("dma-unmapped-blocked", Err("the window changed".into()));
    }
    ok(
        "dma-unmapped-blocked",
        &format!("write to iova {UNMAPPED_IOVA:#x} went nowhere"),
    );

    let u = DmaUnmap {
        argsz: std::mem::size_of::<DmaUnmap>() as u32,
        flags: 0,
        iova: WINDOW_IOVA,
        size: WINDOW_SIZE as u64,
    };
    step(
        "unmap-window",
        // SAFETY: `u` is a valid vfio_iommu_type1_dma_unmap.
        check(
            unsafe { ioctl(cfd, IOMMU_UNMAP_DMA, &u as *const DmaUnmap) },
            "IOMMU_UNMAP_DMA",
        ),
    );
    ok("unmap-window", "");
    println!("done");
}
