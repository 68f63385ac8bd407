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
//!
//! The iommufd path (kernels with `/dev/iommu` and VFIO device cdevs, Linux 6.6+):
//! - `vfio-edu-client --cdev ADDRESS`: the direct client. Opens `/dev/iommu` and the function's
//!   cdev (`/dev/vfio/devices/vfioN`, found through `<function>/vfio-dev/`), binds the device
//!   (`VFIO_DEVICE_BIND_IOMMUFD`), allocates an IOAS, attaches the device to it, maps a 2 MiB
//!   memfd window with `IOMMU_IOAS_MAP`, refuses a duplicate map and one over the MSI window and
//!   a second bind of the device, then the same edu DMA as above, and unmaps.
//! - `vfio-edu-client --inherited-iommufd ADDRESS`: under `vfioctl domain open` of a domain held
//!   on the iommufd backend. Opens nothing: the iommufd (`VFIOCTL_IOMMUFD_FD`), the IOAS
//!   (`VFIOCTL_IOAS_ID`), the device already bound and attached (`VFIOCTL_DEVICE_FDS`,
//!   `ADDRESS=FD,...`) and the window (`VFIOCTL_WINDOW_FDS`, `FD:IOVA:SIZE,...`, already mapped
//!   in the IOAS) are inherited; checks they are what they claim (the IOAS answers, the window's
//!   IOVA is taken in it, the device is bound), then DMA through the window.
//! - `vfio-edu-client --bench-bind ADDRESS ROUNDS`: the hand-over benchmark's baseline: time
//!   opening `/dev/iommu` and the cdev, binding, allocating an IOAS and attaching (what the
//!   broker's client receives ready-made); prints the median, min and max.

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
    fn munmap(addr: *mut u8, len: usize) -> i32;
    fn memfd_create(name: *const std::ffi::c_char, flags: u32) -> i32;
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
const DEVICE_BIND_IOMMUFD: u64 = vfio_io(18);
const DEVICE_ATTACH_IOMMUFD_PT: u64 = vfio_io(19);

// <linux/iommufd.h>: _IO(IOMMUFD_TYPE = ';', n)
const fn iommufd_io(n: u64) -> u64 {
    (b';' as u64) << 8 | n
}
const IOMMU_IOAS_ALLOC: u64 = iommufd_io(0x81);
const IOMMU_IOAS_IOVA_RANGES: u64 = iommufd_io(0x84);
const IOMMU_IOAS_MAP: u64 = iommufd_io(0x85);
const IOMMU_IOAS_UNMAP: u64 = iommufd_io(0x86);
const IOAS_MAP_FIXED_IOVA: u32 = 1;
const IOAS_MAP_WRITEABLE: u32 = 2;
const IOAS_MAP_READABLE: u32 = 4;
const EINVAL: i32 = 22;
const EEXIST: i32 = 17;
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

// ---- the iommufd path ----

#[repr(C)]
struct BindIommufd {
    argsz: u32,
    flags: u32,
    iommufd: i32,
    out_devid: u32,
}

#[repr(C)]
struct AttachPt {
    argsz: u32,
    flags: u32,
    pt_id: u32,
}

#[repr(C)]
struct IoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}

#[repr(C)]
struct IoasMap {
    size: u32,
    flags: u32,
    ioas_id: u32,
    reserved: u32,
    user_va: u64,
    length: u64,
    iova: u64,
}

#[repr(C)]
struct IoasUnmap {
    size: u32,
    ioas_id: u32,
    iova: u64,
    length: u64,
}

#[repr(C)]
struct IovaRanges {
    size: u32,
    ioas_id: u32,
    num_iovas: u32,
    reserved: u32,
    allowed_iovas: u64,
    out_iova_alignment: u64,
}

/// `/dev/vfio/devices/vfioN` of a function, from `<function>/vfio-dev/vfioN`.
fn cdev_path(address: &str) -> Result<String, String> {
    let dir = format!("/sys/bus/pci/devices/{address}/vfio-dev");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e} (not on vfio-pci, or a kernel without VFIO_DEVICE_CDEV)"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vfio"))
        .collect();
    names.sort();
    match names.first() {
        Some(n) => Ok(format!("/dev/vfio/devices/{n}")),
        None => Err(format!("{dir} names no vfioN")),
    }
}

fn bind(device: RawFd, iommufd: RawFd) -> io::Result<u32> {
    let mut b = BindIommufd {
        argsz: std::mem::size_of::<BindIommufd>() as u32,
        flags: 0,
        iommufd,
        out_devid: 0,
    };
    // SAFETY: `b` is a valid vfio_device_bind_iommufd the kernel reads and fills in.
    if unsafe { ioctl(device, DEVICE_BIND_IOMMUFD, &mut b as *mut BindIommufd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(b.out_devid)
}

fn ioas_alloc(iommufd: RawFd) -> Result<u32, String> {
    let mut a = IoasAlloc {
        size: std::mem::size_of::<IoasAlloc>() as u32,
        flags: 0,
        out_ioas_id: 0,
    };
    // SAFETY: `a` is a valid iommu_ioas_alloc.
    check(
        unsafe { ioctl(iommufd, IOMMU_IOAS_ALLOC, &mut a as *mut IoasAlloc) },
        "IOMMU_IOAS_ALLOC",
    )?;
    Ok(a.out_ioas_id)
}

fn attach(device: RawFd, ioas: u32) -> Result<u32, String> {
    let mut a = AttachPt {
        argsz: std::mem::size_of::<AttachPt>() as u32,
        flags: 0,
        pt_id: ioas,
    };
    // SAFETY: `a` is a valid vfio_device_attach_iommufd_pt.
    check(
        unsafe { ioctl(device, DEVICE_ATTACH_IOMMUFD_PT, &mut a as *mut AttachPt) },
        "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
    )?;
    Ok(a.pt_id)
}

fn ioas_map(iommufd: RawFd, ioas: u32, vaddr: u64, iova: u64, size: u64) -> io::Result<()> {
    let m = IoasMap {
        size: std::mem::size_of::<IoasMap>() as u32,
        flags: IOAS_MAP_FIXED_IOVA | IOAS_MAP_WRITEABLE | IOAS_MAP_READABLE,
        ioas_id: ioas,
        reserved: 0,
        user_va: vaddr,
        length: size,
        iova,
    };
    // SAFETY: `m` is a valid iommu_ioas_map; the kernel pins `size` bytes at `vaddr`, which the
    // caller keeps mapped until the IOAS or the mapping is gone.
    if unsafe { ioctl(iommufd, IOMMU_IOAS_MAP, &m as *const IoasMap) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ioas_unmap(iommufd: RawFd, ioas: u32, iova: u64, size: u64) -> Result<(), String> {
    let u = IoasUnmap {
        size: std::mem::size_of::<IoasUnmap>() as u32,
        ioas_id: ioas,
        iova,
        length: size,
    };
    // SAFETY: `u` is a valid iommu_ioas_unmap.
    check(
        unsafe { ioctl(iommufd, IOMMU_IOAS_UNMAP, &u as *const IoasUnmap) },
        "IOMMU_IOAS_UNMAP",
    )
    .map(|_| ())
}

/// The IOAS's usable IOVA ranges (`IOMMU_IOAS_IOVA_RANGES`), as `(start, last)`.
fn iova_ranges(iommufd: RawFd, ioas: u32) -> Result<Vec<(u64, u64)>, String> {
    let mut buf = [0u64; 2 * 16];
    let mut r = IovaRanges {
        size: std::mem::size_of::<IovaRanges>() as u32,
        ioas_id: ioas,
        num_iovas: 16,
        reserved: 0,
        allowed_iovas: buf.as_mut_ptr() as u64,
        out_iova_alignment: 0,
    };
    // SAFETY: `r` points at `buf`, room for 16 iommu_iova_range.
    check(
        unsafe { ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &mut r as *mut IovaRanges) },
        "IOMMU_IOAS_IOVA_RANGES",
    )?;
    let n = (r.num_iovas as usize).min(16);
    Ok((0..n).map(|i| (buf[2 * i], buf[2 * i + 1])).collect())
}

/// A shared memfd of `size` bytes, mapped here: the window the direct client maps (vfioctl
/// backs its windows the same way).
fn memfd_window(size: usize) -> Result<(File, *mut u8), String> {
    let name = CString::new("vfio-edu-client-window").map_err(|e| e.to_string())?;
    // SAFETY: `name` is NUL-terminated; flags: MFD_CLOEXEC.
    let fd = check(unsafe { memfd_create(name.as_ptr(), 1) }, "memfd_create")?;
    // SAFETY: a fresh fd we own from here on.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size as u64).map_err(|e| format!("ftruncate: {e}"))?;
    // SAFETY: a shared mapping of the memfd; checked below.
    let buf = unsafe { mmap(std::ptr::null_mut(), size, 0x3, 0x01, fd, 0) };
    if buf as isize == -1 {
        return Err(format!("mmap: {}", io::Error::last_os_error()));
    }
    Ok((file, buf))
}

/// BAR0 and config space of an edu device fd (group-obtained or a bound cdev: the region
/// ioctls are the same), with bus mastering switched on.
fn edu_on(dev: File, address: &str) -> Edu {
    let dfd = dev.as_raw_fd();
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

fn volatile_copy(window: &[u8]) -> Vec<u8> {
    // SAFETY: pointers from live references into the window; the device writes behind the
    // compiler's back, so every byte is read volatile.
    window.iter().map(|b| unsafe { std::ptr::read_volatile(b) }).collect()
}

/// edu copies a pattern from window+0x2000 into its buffer and back to window+0x5000
/// (compared), then writes to `outside` (an IOVA with no mapping): the window stays as it was.
fn window_dma(edu: &Edu, window: &mut [u8], iova: u64, outside: u64) {
    let (src, back) = (0x2000usize, 0x5000usize);
    for (i, b) in window[src..src + LEN].iter_mut().enumerate() {
        *b = (i * 13 + 1) as u8;
    }
    window[back..back + LEN].fill(0);
    let t1 = step("dma-to-device", edu.dma((iova + src as u64) as u32, EDU_BUFFER, 0));
    let t2 = step(
        "dma-to-ram",
        edu.dma(EDU_BUFFER, (iova + back as u64) as u32, EDU_DMA_TO_RAM),
    );
    let now = volatile_copy(window);
    let wrong = (0..LEN).filter(|&i| now[back + i] != now[src + i]).count();
    if wrong != 0 {
        step::<()>("dma-copy", Err(format!("{wrong} of {LEN} bytes differ")));
    }
    ok(
        "dma-copy",
        &format!("{LEN} bytes iova {:#x} -> edu -> iova {:#x} verified ({t1:?}, {t2:?})", iova + src as u64, iova + back as u64),
    );
    let before = volatile_copy(window);
    step(
        "dma-outside",
        edu.dma(EDU_BUFFER, outside as u32, EDU_DMA_TO_RAM).map(|_| ()),
    );
    if volatile_copy(window) != before {
        step::<()>("dma-outside-blocked", Err("the window changed".into()));
    }
    ok("dma-outside-blocked", &format!("write to iova {outside:#x} went nowhere"));
}

fn ranges_text(r: &[(u64, u64)]) -> String {
    r.iter()
        .map(|(a, b)| format!("{a:#x}-{b:#x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The direct client: everything opened, bound, allocated and mapped by this process.
fn cdev_direct(address: &str) {
    let path = step("cdev", cdev_path(address));
    // Under `vfioctl iommufd open` (as QEMU with `-object iommufd,fd=N`): the handed iommufd.
    let handed = std::env::var("VFIOCTL_IOMMUFD_FD").ok();
    let iommufd = match &handed {
        // SAFETY: the fd `vfioctl iommufd open` passed on; nothing else here owns it.
        Some(v) => unsafe { File::from_raw_fd(step("env-iommufd", parse_num("VFIOCTL_IOMMUFD_FD", v, false)) as RawFd) },
        None => step("open-iommufd", open_rw("/dev/iommu")),
    };
    let ifd = iommufd.as_raw_fd();
    ok("open-iommufd", handed.as_ref().map_or("/dev/iommu", |_| "VFIOCTL_IOMMUFD_FD"));
    let dev = step("open-cdev", open_rw(&path));
    let dfd = dev.as_raw_fd();
    ok("open-cdev", &path);
    let devid = step("bind", bind(dfd, ifd).map_err(|e| format!("VFIO_DEVICE_BIND_IOMMUFD: {e}")));
    ok("bind", &format!("devid {devid}"));
    let ioas = step("ioas", ioas_alloc(ifd));
    let pt = step("attach", attach(dfd, ioas));
    ok("attach", &format!("ioas {ioas}, pt {pt}"));
    let ranges = step("iova-ranges", iova_ranges(ifd, ioas));
    if ranges.iter().any(|&(a, b)| a <= MSI_IOVA && MSI_IOVA <= b) {
        step::<()>("iova-ranges", Err(format!("the MSI window is usable: {}", ranges_text(&ranges))));
    }
    ok("iova-ranges", &ranges_text(&ranges));

    let (_memfd, buf) = step("window", memfd_window(WINDOW_SIZE));
    // SAFETY: WINDOW_SIZE bytes of the memfd mapped above, alive until the process exits.
    let window = unsafe { std::slice::from_raw_parts_mut(buf, WINDOW_SIZE) };
    step(
        "map-window",
        ioas_map(ifd, ioas, buf as u64, WINDOW_IOVA, WINDOW_SIZE as u64).map_err(|e| format!("IOMMU_IOAS_MAP: {e}")),
    );
    ok("map-window", &format!("iova {WINDOW_IOVA:#x} size {WINDOW_SIZE:#x}"));
    match ioas_map(ifd, ioas, buf as u64, WINDOW_IOVA, WINDOW_SIZE as u64) {
        Err(e) if e.raw_os_error() == Some(EEXIST) => ok("map-twice-refused", "EEXIST"),
        other => step::<()>("map-twice-refused", Err(format!("expected EEXIST, got {other:?}"))),
    }
    match ioas_map(ifd, ioas, buf as u64, MSI_IOVA, 4096) {
        Err(e) if e.raw_os_error() == Some(EINVAL) => ok("map-msi-window-refused", "EINVAL"),
        other => step::<()>("map-msi-window-refused", Err(format!("expected EINVAL, got {other:?}"))),
    }
    // the cdev opened a second time: binding it is refused while this process holds the device
    let again = step("open-cdev-again", open_rw(&path));
    let other = step("open-iommufd-again", match &handed {
        Some(_) => iommufd.try_clone().map_err(|e| e.to_string()),
        None => open_rw("/dev/iommu"),
    });
    match bind(again.as_raw_fd(), other.as_raw_fd()) {
        Err(e) if e.raw_os_error() == Some(EINVAL) => ok("second-bind-refused", "EINVAL"),
        other => step::<()>("second-bind-refused", Err(format!("expected EINVAL, got {other:?}"))),
    }
    drop(again);
    drop(other);

    let edu = edu_on(dev, address);
    window_dma(&edu, window, WINDOW_IOVA, UNMAPPED_IOVA);
    step("unmap-window", ioas_unmap(ifd, ioas, WINDOW_IOVA, WINDOW_SIZE as u64));
    ok("unmap-window", "");
    drop(edu);
    // SAFETY: the mapping made by memfd_window; nothing references it any more.
    unsafe { munmap(buf, WINDOW_SIZE) };
    println!("done");
}

fn env_var(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|e| format!("{var}: {e}"))
}

fn parse_num(var: &str, f: &str, hex: bool) -> Result<u64, String> {
    let f = f.trim();
    let r = match f.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None if hex => u64::from_str_radix(f, 16),
        None => f.parse(),
    };
    r.map_err(|e| format!("{var}: `{f}`: {e}"))
}

/// Under `vfioctl domain open` of an iommufd domain: nothing is opened, bound or mapped here.
fn inherited_iommufd(address: &str) {
    let ifd = step("env-iommufd", env_var("VFIOCTL_IOMMUFD_FD").and_then(|v| parse_num("VFIOCTL_IOMMUFD_FD", &v, false))) as RawFd;
    let ioas = step("env-ioas", env_var("VFIOCTL_IOAS_ID").and_then(|v| parse_num("VFIOCTL_IOAS_ID", &v, false))) as u32;
    let devices = step("env-devices", env_var("VFIOCTL_DEVICE_FDS"));
    let dfd = step(
        "env-devices",
        devices
            .split(',')
            .find_map(|e| e.split_once('=').filter(|(a, _)| a.trim() == address))
            .ok_or_else(|| format!("VFIOCTL_DEVICE_FDS={devices} names no {address}"))
            .and_then(|(_, fd)| parse_num("VFIOCTL_DEVICE_FDS", fd, false)),
    ) as RawFd;
    let windows = step("env-window", env_var("VFIOCTL_WINDOW_FDS"));
    let w: Vec<&str> = windows.split(',').next().unwrap_or("").split(':').collect();
    if w.len() != 3 {
        step::<()>("env-window", Err(format!("VFIOCTL_WINDOW_FDS={windows}: expected FD:IOVA:SIZE")));
    }
    let wfd = step("env-window", parse_num("VFIOCTL_WINDOW_FDS", w[0], false)) as RawFd;
    let iova = step("env-window", parse_num("VFIOCTL_WINDOW_FDS", w[1], true));
    let size = step("env-window", parse_num("VFIOCTL_WINDOW_FDS", w[2], true)) as usize;
    ok(
        "inherited",
        &format!("iommufd fd {ifd}, ioas {ioas}, device {address} fd {dfd}, window fd {wfd} iova {iova:#x} size {size:#x}"),
    );
    // the IOAS answers on the inherited iommufd
    let ranges = step("ioas", iova_ranges(ifd, ioas));
    ok("ioas", &format!("ioas {ioas} usable {}", ranges_text(&ranges)));
    // SAFETY: a shared mapping of the inherited memfd; checked below.
    let buf = unsafe { mmap(std::ptr::null_mut(), size, 0x3, 0x01, wfd, 0) };
    if buf as isize == -1 {
        step::<()>("mmap-window", Err(io::Error::last_os_error().to_string()));
    }
    // SAFETY: `size` bytes of the memfd mapped above.
    let window = unsafe { std::slice::from_raw_parts_mut(buf, size) };
    ok("mmap-window", "shared mapping of the memfd");
    // the window's IOVA is taken in that IOAS (mapped by the holder): a map there is refused
    // before anything is pinned
    match ioas_map(ifd, ioas, buf as u64, iova, size as u64) {
        Err(e) if e.raw_os_error() == Some(EEXIST) => ok("window-mapped-in-ioas", "EEXIST"),
        Ok(()) => {
            let _ = ioas_unmap(ifd, ioas, iova, size as u64);
            step::<()>("window-mapped-in-ioas", Err(format!("iova {iova:#x} was free in ioas {ioas}")));
        }
        Err(e) => step::<()>("window-mapped-in-ioas", Err(format!("expected EEXIST, got {e}"))),
    }
    // the device is bound already: binding it again is refused
    match bind(dfd, ifd) {
        Err(e) if e.raw_os_error() == Some(EINVAL) => ok("device-already-bound", "EINVAL"),
        other => step::<()>("device-already-bound", Err(format!("expected EINVAL, got {other:?}"))),
    }
    // SAFETY: the inherited device fd, owned by this process from here on.
    let dev = unsafe { File::from_raw_fd(dfd) };
    let edu = edu_on(dev, address);
    window_dma(&edu, window, iova, iova + size as u64 + 0x40_0000);
    println!("done");
}

/// The hand-over benchmark's baseline: open `/dev/iommu` and the cdev, bind, allocate an IOAS
/// and attach, `rounds` times (everything closed between rounds, untimed).
fn bench_bind(address: &str, rounds: usize) {
    let path = step("cdev", cdev_path(address));
    let mut times = Vec::new();
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let iommufd = step("open-iommufd", open_rw("/dev/iommu"));
        let dev = step("open-cdev", open_rw(&path));
        step("bind", bind(dev.as_raw_fd(), iommufd.as_raw_fd()).map_err(|e| e.to_string()));
        let ioas = step("ioas", ioas_alloc(iommufd.as_raw_fd()));
        step("attach", attach(dev.as_raw_fd(), ioas));
        times.push(t.elapsed());
        drop(dev);
        drop(iommufd);
    }
    times.sort_unstable();
    println!(
        "direct open+bind+attach of {path}: median {:?}, min {:?}, max {:?} over {} rounds",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--inherited" {
        inherited(&args[2]);
        return;
    }
    if args.len() == 3 && args[1] == "--inherited-iommufd" {
        inherited_iommufd(&args[2]);
        return;
    }
    if args.len() == 3 && args[1] == "--cdev" {
        cdev_direct(&args[2]);
        return;
    }
    if args.len() == 4 && args[1] == "--bench-bind" {
        match args[3].parse() {
            Ok(n) => bench_bind(&args[2], n),
            Err(e) => {
                eprintln!("--bench-bind ADDRESS ROUNDS: {e}");
                exit(2);
            }
        }
        return;
    }
    if args.len() != 3 || args[1].starts_with("--") {
        eprintln!(
            "usage: vfio-edu-client GROUP ADDRESS | --inherited ADDRESS | --cdev ADDRESS | \
             --inherited-iommufd ADDRESS | --bench-bind ADDRESS ROUNDS"
        );
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
