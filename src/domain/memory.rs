//! Window backing memory and the locked-memory limit.
//!
//! A window is backed by a memfd (`MFD_HUGETLB` when the config asks for huge pages and the
//! host has enough free ones, else normal pages, with the reason), sized with `ftruncate` and
//! mapped shared read/write in this process; the fd stays open so the broker can hand the
//! same memory to a client. `RLIMIT_MEMLOCK` is raised as far as the hard limit (or beyond it
//! with CAP_SYS_RESOURCE) and the shortfall reported before anything is mapped.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

use super::iommu::{Backing, IommuError, Memlock};
use super::windows::{human_bytes, Window};

/// A `/proc/meminfo` field's number (kB for sizes, a count for huge pages).
fn meminfo_field(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse::<u64>().ok()
    })
}

/// Free huge pages of the default size, from `/proc/meminfo`: (free pages, page size).
pub fn huge_pages_free(meminfo: &str) -> Option<(u64, u64)> {
    let free = meminfo_field(meminfo, "HugePages_Free")?;
    let size_kib = meminfo_field(meminfo, "Hugepagesize")?;
    Some((free, size_kib * 1024))
}

/// The host's memory in bytes (`MemTotal`), from `/proc/meminfo`.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo_field(meminfo, "MemTotal")?.checked_mul(1024)
}

/// Whether (and why not) a window of `size` bytes can go on huge pages.
pub fn huge_page_verdict(meminfo: Option<&str>, size: u64) -> Result<(), String> {
    let Some((free, page)) = meminfo.and_then(huge_pages_free) else {
        return Err("the host reports no huge pages (/proc/meminfo)".into());
    };
    if page == 0 || size % page != 0 {
        return Err(format!(
            "the size is not a multiple of the huge page size {}",
            human_bytes(page)
        ));
    }
    let need = size / page;
    if need > free {
        return Err(format!(
            "{need} huge page(s) of {} needed, {free} free (vm.nr_hugepages)",
            human_bytes(page)
        ));
    }
    Ok(())
}

/// The memory behind one window: a memfd mapped shared in this process.
#[derive(Debug)]
pub struct WindowMemory {
    fd: OwnedFd,
    ptr: NonNull<c_void>,
    len: usize,
    huge: bool,
    fallback: Option<String>,
}

// SAFETY: the mapping is plain shared memory owned by this value; nothing aliases the pointer
// in a thread-unsafe way (vfioctl never reads or writes the window itself).
unsafe impl Send for WindowMemory {}

impl WindowMemory {
    /// Allocates `window.size` bytes; huge pages when asked and available (checked against
    /// `{proc_root}/meminfo`), else normal pages with the reason in [`Backing::fallback`].
    pub fn allocate(window: &Window, proc_root: &Path) -> Result<Self, IommuError> {
        let len = usize::try_from(window.size)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| IommuError::new("memfd_create", Errno::EINVAL))?;
        let mut fallback = None;
        let mut huge = false;
        if window.hugepages {
            let meminfo = std::fs::read_to_string(proc_root.join("meminfo")).ok();
            match huge_page_verdict(meminfo.as_deref(), window.size) {
                Ok(()) => huge = true,
                Err(why) => fallback = Some(why),
            }
        }
        let name = format!("vfioctl-window-{}", window.name);
        let name = name.replace('\0', "");
        let fd = match Self::memfd(&name, huge, window.size) {
            Ok(fd) => fd,
            Err(e) if huge => {
                fallback = Some(format!("hugetlb memfd failed: {}", e.desc()));
                huge = false;
                Self::memfd(&name, false, window.size)
                    .map_err(|e| IommuError::new("memfd_create", e))?
            }
            Err(e) => return Err(IommuError::new("memfd_create", e)),
        };
        Self::map(fd, len, huge, fallback)
    }

    /// Maps a window's memfd handed back by systemd's fd store after a restart, so the
    /// window's memory is reachable again in this process. The memfd must hold at least
    /// `window.size` bytes; huge pages are read from the file (`MFD_HUGETLB` files live on
    /// hugetlbfs).
    pub fn adopt(fd: OwnedFd, window: &Window) -> Result<Self, IommuError> {
        let len = usize::try_from(window.size)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| IommuError::new("mmap", Errno::EINVAL))?;
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| IommuError::new("fstat", e))?;
        if u64::try_from(stat.st_size).unwrap_or(0) < window.size {
            return Err(IommuError::new("mmap", Errno::EINVAL).with_detail(format!(
                "the stored memfd of {window} holds {} bytes, fewer than the window",
                stat.st_size
            )));
        }
        let huge = nix::sys::statfs::fstatfs(&fd)
            .map(|s| s.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC)
            .unwrap_or(false);
        let memory = Self::map(fd, len, huge, None)?;
        // The adopted container still pins these pages, but the kernel charged them to the
        // process that mapped them, which is gone after a restart: locking the new mapping
        // makes them count again in this process (VmLck, RLIMIT_MEMLOCK), as they did before.
        // SAFETY: `ptr`/`len` are the mapping just made; mlock only changes its residency.
        if let Err(e) = unsafe { nix::sys::mman::mlock(memory.ptr, memory.len) } {
            tracing::warn!(
                "{window}: cannot lock the adopted window's memory ({e}); it stays pinned by the \
                 IOMMU but is not counted as this process's locked memory"
            );
        }
        Ok(memory)
    }

    /// Maps `len` bytes of `fd` shared and read/write; the caller made sure the file has them.
    fn map(
        fd: OwnedFd,
        len: NonZeroUsize,
        huge: bool,
        fallback: Option<String>,
    ) -> Result<Self, IommuError> {
        // SAFETY: a fresh shared mapping of `len` bytes of a file that holds them (sized by us
        // with ftruncate, or checked with fstat for a handed-back memfd).
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| IommuError::new("mmap", e))?;
        Ok(WindowMemory {
            fd,
            ptr,
            len: len.get(),
            huge,
            fallback,
        })
    }

    /// A memfd of `size` bytes, sealed against shrinking and growing (`F_SEAL_SHRINK`,
    /// `F_SEAL_GROW`): a client handed the window cannot truncate it under the pinned mapping
    /// (a SIGBUS for watch) nor grow it past what the domain accounts for.
    fn memfd(name: &str, huge: bool, size: u64) -> Result<OwnedFd, Errno> {
        let mut flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        if huge {
            flags |= MFdFlags::MFD_HUGETLB;
        }
        let fd = memfd_create(name, flags)?;
        let size = i64::try_from(size).map_err(|_| Errno::EINVAL)?;
        nix::unistd::ftruncate(&fd, size)?;
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_ADD_SEALS(
                nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW,
            ),
        )?;
        Ok(fd)
    }

    /// The mapped bytes (for tests and the VM proof; vfioctl itself never touches them).
    ///
    /// # Safety
    /// Devices may write the memory concurrently; the caller accepts torn reads.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Backing for WindowMemory {
    fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
    fn len(&self) -> u64 {
        self.len as u64
    }
    fn huge(&self) -> bool {
        self.huge
    }
    fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for WindowMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `allocate`, unmapped only here.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// The limit a process needs to pin `bytes`, given its (soft, hard) limits and whether it may
/// raise the hard one: the new (soft, hard) to set, or `None` to keep them.
pub fn memlock_target(soft: u64, hard: u64, bytes: u64, privileged: bool) -> Option<(u64, u64)> {
    if soft == RLIM_INFINITY || bytes <= soft {
        return None;
    }
    if bytes <= hard || hard == RLIM_INFINITY {
        return Some((bytes, hard));
    }
    if privileged {
        return Some((bytes, bytes));
    }
    if soft < hard {
        return Some((hard, hard));
    }
    None
}

/// Raises this process's RLIMIT_MEMLOCK so `bytes` may be pinned, as far as allowed.
pub fn ensure_memlock(bytes: u64) -> Memlock {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_MEMLOCK) else {
        return Memlock {
            limit: 0,
            shortfall: bytes,
        };
    };
    let mut limit = soft;
    // Try with the hard limit raised first (root), then within it.
    for privileged in [true, false] {
        if let Some((s, h)) = memlock_target(soft, hard, bytes, privileged) {
            if setrlimit(Resource::RLIMIT_MEMLOCK, s, h).is_ok() {
                limit = s;
                break;
            }
        } else {
            break;
        }
    }
    Memlock {
        limit,
        shortfall: if limit == RLIM_INFINITY {
            0
        } else {
            bytes.saturating_sub(limit)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       1000000 kB\nHugePages_Total:      64\nHugePages_Free:       10\nHugepagesize:       2048 kB\n";

    #[test]
    fn an_adopted_memfd_shows_the_same_memory_and_a_short_one_is_refused() {
        let w = Window {
            name: "buf".into(),
            iova: 1 << 20,
            size: 64 << 10,
            hugepages: false,
        };
        let first = WindowMemory::allocate(&w, Path::new("/nonexistent")).unwrap();
        // SAFETY: our own fresh mapping, nothing else writes it.
        unsafe { std::ptr::write_bytes(first.ptr.as_ptr().cast::<u8>().add(100), 0x5a, 8) };
        let handed_back = first.fd().try_clone_to_owned().unwrap();
        drop(first);
        let again = WindowMemory::adopt(handed_back, &w).unwrap();
        assert_eq!(again.len(), w.size);
        assert!(!again.huge());
        // SAFETY: as above.
        let bytes = unsafe { again.as_slice() };
        assert_eq!(&bytes[100..108], &[0x5a; 8]);
        assert_eq!(bytes[99], 0);
        // Adopted after a restart, the window counts as this process's locked memory again
        // (the mapping's own `Locked:` in smaps, untouched by other tests' mappings).
        assert_eq!(locked_kib(&again), Some(64), "adopted mapping not locked");
        let bigger = Window {
            size: 128 << 10,
            ..w.clone()
        };
        let fd = again.fd().try_clone_to_owned().unwrap();
        let err = WindowMemory::adopt(fd, &bigger).unwrap_err();
        assert!(err.to_string().contains("fewer than the window"), "{err}");
    }

    /// The `Locked:` kB of the mapping that starts at `memory`'s address, from /proc/self/smaps.
    fn locked_kib(memory: &WindowMemory) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let start = format!("{:x}-", memory.ptr.as_ptr() as usize);
        let entry = smaps
            .split('\n')
            .skip_while(|l| !l.starts_with(&start))
            .skip(1);
        for line in entry {
            if let Some(v) = line.strip_prefix("Locked:") {
                return v.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
        None
    }

    #[test]
    fn window_memory_is_sealed_against_shrinking_and_growing() {
        let w = Window {
            name: "sealed".into(),
            iova: 1 << 20,
            size: 64 << 10,
            hugepages: false,
        };
        let mem = WindowMemory::allocate(&w, Path::new("/nonexistent")).unwrap();
        let fd = mem.fd();
        assert_eq!(nix::unistd::ftruncate(fd, 4096), Err(Errno::EPERM));
        assert_eq!(nix::unistd::ftruncate(fd, 1 << 30), Err(Errno::EPERM));
        let seals = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
        let want = nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW;
        assert_eq!(seals & want.bits(), want.bits());
        // The memory stays writable: a client uses it for DMA.
        let mut f = std::fs::File::from(fd.try_clone_to_owned().unwrap());
        std::io::Write::write_all(&mut f, b"ok").unwrap();
        assert_eq!(mem.len(), w.size);
    }

    #[test]
    fn meminfo_huge_pages_and_total_are_read() {
        assert_eq!(mem_total(MEMINFO), Some(1_000_000 * 1024));
        assert_eq!(mem_total("HugePages_Free: 3\n"), None);
        assert_eq!(huge_pages_free(MEMINFO), Some((10, 2 << 20)));
        assert_eq!(huge_pages_free("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn huge_pages_are_used_only_when_enough_are_free_and_the_size_fits() {
        assert_eq!(huge_page_verdict(Some(MEMINFO), 20 << 20), Ok(()));
        let short = huge_page_verdict(Some(MEMINFO), 22 << 20).unwrap_err();
        assert!(
            short.contains("11 huge page(s) of 2 MiB needed, 10 free"),
            "{short}"
        );
        let odd = huge_page_verdict(Some(MEMINFO), 3 << 20).unwrap_err();
        assert!(odd.contains("not a multiple"), "{odd}");
        assert!(huge_page_verdict(None, 2 << 20).is_err());
    }

    #[test]
    fn memlock_target_raises_within_or_beyond_the_hard_limit() {
        let mib = 1 << 20;
        assert_eq!(memlock_target(8 * mib, 8 * mib, 4 * mib, false), None);
        assert_eq!(
            memlock_target(8 * mib, 64 * mib, 32 * mib, false),
            Some((32 * mib, 64 * mib))
        );
        assert_eq!(
            memlock_target(8 * mib, 8 * mib, 32 * mib, true),
            Some((32 * mib, 32 * mib))
        );
        assert_eq!(memlock_target(8 * mib, 8 * mib, 32 * mib, false), None);
        assert_eq!(
            memlock_target(4 * mib, 8 * mib, 32 * mib, false),
            Some((8 * mib, 8 * mib))
        );
        assert_eq!(
            memlock_target(RLIM_INFINITY, RLIM_INFINITY, 1 << 40, false),
            None
        );
    }

    #[test]
    fn a_window_gets_shared_memory_of_its_size() {
        let w = Window {
            name: "t".into(),
            iova: 0,
            size: 2 << 20,
            hugepages: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let m = WindowMemory::allocate(&w, dir.path()).unwrap();
        assert_eq!(m.len(), 2 << 20);
        assert!(!m.huge());
        let st = nix::sys::stat::fstat(m.fd()).unwrap();
        assert_eq!(st.st_size, 2 << 20);
        // SAFETY: nothing else writes this memory in the test.
        assert!(unsafe { m.as_slice() }.iter().all(|b| *b == 0));
    }

    #[test]
    fn asking_for_huge_pages_without_any_falls_back_and_says_why() {
        let w = Window {
            name: "h".into(),
            iova: 0,
            size: 2 << 20,
            hugepages: true,
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "HugePages_Free: 0\nHugepagesize: 2048 kB\n",
        )
        .unwrap();
        let m = WindowMemory::allocate(&w, dir.path()).unwrap();
        assert!(!m.huge());
        assert!(m.fallback().unwrap().contains("0 free"));
    }
}
