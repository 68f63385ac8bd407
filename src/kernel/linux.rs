//! The real Linux host behind the [`Host`] seam: sysfs writes, chown/chmod of group nodes,
//! `modprobe`, and the VFIO status ioctl, all under [`Roots`].
//!
//! Every write is checked by reading back: a bind counts only when the `driver` link names
//! the driver. Writes the kernel may block inside (unbind waits for a driver's remove, probe
//! and `sriov_numvfs` run driver code) are done by a forked child, so a timeout can abandon
//! them: the parent reports "did not return within Ns; the kernel may still complete it" and
//! never hangs. The real host is proven in the VM suite, not on fake trees.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, ForkResult};

use super::{DeviceState, Host, KernelError, NodeOwner};
use crate::host::{PciDevice, Roots, Snapshot};
use crate::pci::PciAddress;
use crate::vfio::{self, GroupStatus, VfioError};

/// Timeouts for the real host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a blocking sysfs write may take before it is abandoned.
    pub write: Duration,
    /// How long to wait for the `driver` link after a probe or bind.
    pub settle: Duration,
    /// How long `modprobe` may take.
    pub modprobe: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            write: Duration::from_secs(10),
            settle: Duration::from_millis(500),
            modprobe: Duration::from_secs(30),
        }
    }
}

/// The live host under `roots`.
///
/// After a write to a function is abandoned, the kernel still holds that function's device
/// lock, and reading or writing its `driver_override` would block too; so the function is
/// marked stuck and every later call on it fails at once instead of hanging.
#[derive(Debug, Clone)]
pub struct LinuxHost {
    roots: Roots,
    timeouts: Timeouts,
    stuck: Arc<Mutex<BTreeMap<PciAddress, String>>>,
}

impl LinuxHost {
    pub fn new(roots: Roots, timeouts: Timeouts) -> Self {
        LinuxHost {
            roots,
            timeouts,
            stuck: Arc::default(),
        }
    }

    /// Fails when an abandoned write on `dev` may still hold its device lock.
    fn not_stuck(&self, dev: PciAddress) -> Result<(), KernelError> {
        let stuck = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
        match stuck.get(&dev) {
            Some(what) => Err(KernelError::Stuck {
                device: dev,
                what: what.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Runs a blocking write for `dev`; a timeout marks the function stuck.
    fn write_for(
        &self,
        dev: PciAddress,
        what: &str,
        path: &Path,
        data: &[u8],
    ) -> Result<(), KernelError> {
        self.not_stuck(dev)?;
        let r = write_abandonable(what, path, data, self.timeouts.write);
        if let Err(KernelError::Timeout { .. }) = &r {
            self.stuck
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(dev, what.to_string());
        }
        r
    }

    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    fn dev_path(&self, dev: PciAddress, file: &str) -> PathBuf {
        self.roots.pci_device(&dev).join(file)
    }

    fn driver_link(&self, dev: PciAddress) -> Result<Option<String>, KernelError> {
        let dir = self.roots.pci_device(&dev);
        if !dir.exists() {
            return Err(KernelError::NoSuchDevice(dev));
        }
        let link = dir.join("driver");
        match fs::read_link(&link) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KernelError::io("read driver link", link.display(), &e)),
        }
    }

    fn read_trimmed(&self, what: &str, path: &Path) -> Result<String, KernelError> {
        fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| KernelError::io(what, path.display(), &e))
    }

    /// Polls the `driver` link until it is not `None` or `settle` passes.
    fn settled_driver(&self, dev: PciAddress) -> Result<Option<String>, KernelError> {
        let deadline = Instant::now() + self.timeouts.settle;
        loop {
            let d = self.driver_link(dev)?;
            if d.is_some() || Instant::now() >= deadline {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Writes `data` to `path` in a forked child, waiting at most `timeout` for it to return.
///
/// The child does only async-signal-safe work (dup2, close, open, write, `_exit`) with buffers
/// prepared before the fork, so this is sound in a multi-threaded process. It closes every
/// inherited descriptor but its result pipe first. On a timeout the child is left to finish in
/// the kernel and reaped by a detached thread.
pub fn write_abandonable(
    what: &str,
    path: &Path,
    data: &[u8],
    timeout: Duration,
) -> Result<(), KernelError> {
    let io_err = |e: Errno| KernelError::Io {
        what: what.to_string(),
        path: path.display().to_string(),
        errno: Some(e as i32),
        message: e.desc().to_string(),
    };
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| KernelError::Io {
        what: what.to_string(),
        path: path.display().to_string(),
        errno: None,
        message: "path contains a NUL byte".to_string(),
    })?;
    let (rd, wr) = pipe().map_err(io_err)?;
    // SAFETY: the child only calls async-signal-safe functions on memory prepared before the
    // fork (`cpath`, `data`, the pipe fd) and leaves with `_exit`.
    match unsafe { fork() }.map_err(io_err)? {
        ForkResult::Child => {
            use nix::libc;
            // SAFETY: raw syscalls on valid pointers; see above.
            unsafe {
                // Keep only the result pipe (as fd 3): a child left blocked in the kernel must
                // not hold our stdout (a caller reading it would wait for EOF) or the pass lock.
                let report = 3;
                if wr.as_raw_fd() != report && libc::dup2(wr.as_raw_fd(), report) < 0 {
                    libc::_exit(1);
                }
                for fd in 0..report {
                    libc::close(fd);
                }
                if libc::syscall(libc::SYS_close_range, report + 1, libc::c_uint::MAX, 0) != 0 {
                    for fd in report + 1..4096 {
                        libc::close(fd);
                    }
                }
                let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                let code: i32 = if fd < 0 {
                    Errno::last_raw()
                } else {
                    let n = libc::write(fd, data.as_ptr().cast(), data.len());
                    let code = if n < 0 {
                        Errno::last_raw()
                    } else if n as usize != data.len() {
                        libc::EIO
                    } else {
                        0
                    };
                    libc::close(fd);
                    code
                };
                let bytes = code.to_ne_bytes();
                libc::write(report, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = PollTimeout::try_from(left.as_millis().min(60_000) as u32)
                    .unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(rd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, ms) {
                    Ok(0) => {
                        if Instant::now() >= deadline {
                            std::thread::spawn(move || {
                                let _ = waitpid(child, None);
                            });
                            return Err(KernelError::Timeout {
                                what: what.to_string(),
                                secs: timeout.as_secs_f64(),
                                writer: u32::try_from(child.as_raw()).ok(),
                            });
                        }
                    }
                    Ok(_) => break,
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
            let mut buf = [0u8; 4];
            let n = nix::unistd::read(&rd, &mut buf).map_err(io_err)?;
            let _ = waitpid(child, None);
            if n != 4 {
                return Err(KernelError::Io {
                    what: what.to_string(),
                    path: path.display().to_string(),
                    errno: None,
                    message: "the writer process died without a result".to_string(),
                });
            }
            match i32::from_ne_bytes(buf) {
                0 => Ok(()),
                e => Err(io_err(Errno::from_raw(e))),
            }
        }
    }
}

/// Writes a small attribute directly (for writes that never block, like `driver_override`).
fn write_direct(what: &str, path: &Path, data: &[u8]) -> Result<(), KernelError> {
    fs::write(path, data).map_err(|e| KernelError::io(what, path.display(), &e))
}

impl LinuxHost {
    /// `/dev/vfio/devices/vfioN` of every member of `group` that has a device cdev now (its
    /// `vfio-dev/vfioN` in sysfs), resolved afresh: the number changes on every rebind.
    fn member_cdevs(&self, group: u32) -> Result<Vec<std::path::PathBuf>, KernelError> {
        let members = self
            .roots
            .iommu_groups()
            .join(group.to_string())
            .join("devices");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&members) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(KernelError::io("list group members", members.display(), &e)),
        };
        for entry in entries {
            let entry =
                entry.map_err(|e| KernelError::io("list group members", members.display(), &e))?;
            let vfio_dev = entry.path().join("vfio-dev");
            let Ok(names) = fs::read_dir(&vfio_dev) else {
                continue; // no cdev: not on vfio, or a kernel without device cdevs
            };
            for n in names.flatten() {
                let name = n.file_name().to_string_lossy().into_owned();
                // Without a `dev` file the class entry has no character device (6.1-6.5, or
                // CONFIG_VFIO_DEVICE_CDEV=n): nothing for devtmpfs to create.
                if name
                    .strip_prefix("vfio")
                    .is_some_and(|k| k.parse::<u32>().is_ok())
                    && n.path().join("dev").exists()
                {
                    out.push(self.roots.device_cdev(&name));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Host for LinuxHost {
    // Without the account table (`/etc/passwd`, `/etc/group`, memlock limits): what reads the
    // live host through the seam (passes, verification, `watch`) resolves the accounts a
    // config names through the system instead; only a captured snapshot file needs them.
    fn snapshot(&self) -> Result<Snapshot, KernelError> {
        crate::host::scan::scan_without_accounts(&self.roots)
            .map_err(|e| KernelError::Scan(e.to_string()))
    }

    fn snapshot_of(&self, seeds: &[PciAddress]) -> Result<Snapshot, KernelError> {
        crate::host::scan::scan_closure_without_accounts(&self.roots, seeds)
            .map_err(|e| KernelError::Scan(e.to_string()))
    }

    fn device_state(&self, dev: PciAddress) -> Result<DeviceState, KernelError> {
        self.not_stuck(dev)?;
        let driver = self.driver_link(dev)?;
        let p = self.dev_path(dev, "driver_override");
        let driver_override = match fs::read_to_string(&p) {
            Ok(s) => crate::pci::parse_driver_override(&s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(KernelError::io("read driver_override", p.display(), &e)),
        };
        Ok(DeviceState {
            driver,
            driver_override,
        })
    }

    fn function(&self, dev: PciAddress) -> Result<PciDevice, KernelError> {
        self.not_stuck(dev)?;
        match crate::host::scan::scan_function(&self.roots, dev) {
            Some(d) => Ok(d),
            None if !self.roots.pci_device(&dev).exists() => Err(KernelError::NoSuchDevice(dev)),
            None => Err(KernelError::Scan(format!(
                "{}: the function's vendor, device or class cannot be read",
                self.roots.pci_device(&dev).display()
            ))),
        }
    }

    fn function_identity(&self, dev: PciAddress) -> Result<PciDevice, KernelError> {
        self.not_stuck(dev)?;
        match crate::host::scan::identify_function(&self.roots, dev) {
            Some(d) => Ok(d),
            None if !self.roots.pci_device(&dev).exists() => Err(KernelError::NoSuchDevice(dev)),
            None => Err(KernelError::Scan(format!(
                "{}: the function's vendor, device or class cannot be read",
                self.roots.pci_device(&dev).display()
            ))),
        }
    }

    fn num_vfs(&self, pf: PciAddress) -> Result<u32, KernelError> {
        self.not_stuck(pf)?;
        let p = self.dev_path(pf, "sriov_numvfs");
        let s = self.read_trimmed("read sriov_numvfs", &p)?;
        s.parse().map_err(|_| KernelError::Io {
            what: "read sriov_numvfs".to_string(),
            path: p.display().to_string(),
            errno: None,
            message: format!("`{s}` is not a number"),
        })
    }

    fn virtfns(&self, pf: PciAddress) -> Result<Vec<PciAddress>, KernelError> {
        let dir = self.roots.pci_device(&pf);
        let entries = fs::read_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KernelError::NoSuchDevice(pf),
            _ => KernelError::io("list virtfn links", dir.display(), &e),
        })?;
        let mut vfs: Vec<(u32, PciAddress)> = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(idx) = name
                .to_str()
                .and_then(|n| n.strip_prefix("virtfn"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let target = fs::read_link(e.path())
                .map_err(|err| KernelError::io("read virtfn link", e.path().display(), &err))?;
            if let Some(addr) = target
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
            {
                vfs.push((idx, addr));
            }
        }
        vfs.sort();
        Ok(vfs.into_iter().map(|(_, a)| a).collect())
    }

    fn node_owner(&self, group: u32) -> Result<Option<NodeOwner>, KernelError> {
        let p = self.roots.group_node(group);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(NodeOwner {
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o7777,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KernelError::io("stat group node", p.display(), &e)),
        }
    }

    fn iommu_group(&self, dev: PciAddress) -> Result<Option<u32>, KernelError> {
        let link = self.dev_path(dev, "iommu_group");
        match fs::read_link(&link) {
            Ok(t) => Ok(t
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.roots.pci_device(&dev).exists() {
                    Ok(None)
                } else {
                    Err(KernelError::NoSuchDevice(dev))
                }
            }
            Err(e) => Err(KernelError::io("read iommu_group link", link.display(), &e)),
        }
    }

    fn set_driver_override(
        &self,
        dev: PciAddress,
        driver: Option<&str>,
    ) -> Result<(), KernelError> {
        self.not_stuck(dev)?;
        let p = self.dev_path(dev, "driver_override");
        // An empty write (a lone newline) clears the override.
        let data = format!("{}\n", driver.unwrap_or(""));
        write_direct("write driver_override", &p, data.as_bytes())?;
        let now = self.device_state(dev)?.driver_override;
        if now.as_deref() != driver {
            return Err(KernelError::NotConverged {
                what: format!("driver_override of {dev}"),
                expected: driver.unwrap_or("(null)").to_string(),
                found: now.unwrap_or_else(|| "(null)".to_string()),
            });
        }
        Ok(())
    }

    fn unbind(&self, dev: PciAddress) -> Result<(), KernelError> {
        let Some(drv) = self.driver_link(dev)? else {
            return Ok(());
        };
        let p = self.dev_path(dev, "driver/unbind");
        self.write_for(
            dev,
            &format!("unbind of {dev} from {drv}"),
            &p,
            dev.to_string().as_bytes(),
        )?;
        if let Some(now) = self.driver_link(dev)? {
            return Err(KernelError::NotConverged {
                what: format!("unbind of {dev}"),
                expected: "no driver".to_string(),
                found: now,
            });
        }
        Ok(())
    }

    fn probe(&self, dev: PciAddress) -> Result<Option<String>, KernelError> {
        if !self.roots.pci_device(&dev).exists() {
            return Err(KernelError::NoSuchDevice(dev));
        }
        let p = self.roots.sysfs.join("bus/pci/drivers_probe");
        self.write_for(
            dev,
            &format!("probe of {dev}"),
            &p,
            dev.to_string().as_bytes(),
        )?;
        self.settled_driver(dev)
    }

    fn bind(&self, dev: PciAddress, driver: &str) -> Result<(), KernelError> {
        let p = self.roots.pci_drivers().join(driver).join("bind");
        self.write_for(
            dev,
            &format!("bind of {dev} to {driver}"),
            &p,
            dev.to_string().as_bytes(),
        )?;
        let now = self.settled_driver(dev)?;
        if now.as_deref() != Some(driver) {
            return Err(KernelError::NotConverged {
                what: format!("bind of {dev}"),
                expected: driver.to_string(),
                found: now.unwrap_or_else(|| "no driver".to_string()),
            });
        }
        Ok(())
    }

    fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<(), KernelError> {
        let current = self.num_vfs(pf)?;
        if current == count {
            return Ok(());
        }
        if current != 0 && count != 0 {
            return Err(KernelError::SriovBusy {
                what: format!("write {count} to sriov_numvfs of {pf}"),
                pf,
                current,
            });
        }
        let p = self.dev_path(pf, "sriov_numvfs");
        self.write_for(
            pf,
            &format!("write {count} to sriov_numvfs of {pf}"),
            &p,
            format!("{count}\n").as_bytes(),
        )?;
        let now = self.num_vfs(pf)?;
        if now != count {
            return Err(KernelError::NotConverged {
                what: format!("sriov_numvfs of {pf}"),
                expected: count.to_string(),
                found: now.to_string(),
            });
        }
        Ok(())
    }

    fn set_node_owner(
        &self,
        group: u32,
        owner: NodeOwner,
        wait: Duration,
    ) -> Result<(), KernelError> {
        let p = self.roots.group_node(group);
        let deadline = Instant::now() + wait;
        while !p.exists() {
            if Instant::now() >= deadline {
                return Err(KernelError::NodeMissing {
                    group,
                    secs: wait.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::os::unix::fs::chown(&p, Some(owner.uid), Some(owner.gid))
            .map_err(|e| KernelError::io("chown group node", p.display(), &e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(owner.mode))
            .map_err(|e| KernelError::io("chmod group node", p.display(), &e))?;
        let now = self.node_owner(group)?;
        if now != Some(owner) {
            return Err(KernelError::NotConverged {
                what: format!("owner of {}", p.display()),
                expected: owner.to_string(),
                found: now.map_or("no node".to_string(), |n| n.to_string()),
            });
        }
        for cdev in self.member_cdevs(group)? {
            while !cdev.exists() {
                if Instant::now() >= deadline {
                    return Err(KernelError::NotConverged {
                        what: format!("device cdev {}", cdev.display()),
                        expected: "the node devtmpfs creates".to_string(),
                        found: format!("no node after {:.1} s", wait.as_secs_f64()),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            std::os::unix::fs::chown(&cdev, Some(owner.uid), Some(owner.gid))
                .map_err(|e| KernelError::io("chown device cdev", cdev.display(), &e))?;
            fs::set_permissions(&cdev, fs::Permissions::from_mode(owner.mode))
                .map_err(|e| KernelError::io("chmod device cdev", cdev.display(), &e))?;
            let m = fs::metadata(&cdev)
                .map_err(|e| KernelError::io("stat device cdev", cdev.display(), &e))?;
            let found = NodeOwner {
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o7777,
            };
            if found != owner {
                return Err(KernelError::NotConverged {
                    what: format!("owner of {}", cdev.display()),
                    expected: owner.to_string(),
                    found: found.to_string(),
                });
            }
        }
        Ok(())
    }

    fn load_module(&self, name: &str) -> Result<(), KernelError> {
        if self.module_loaded(name)? {
            return Ok(());
        }
        self.modprobe(name, &[])?;
        if !self.module_loaded(name)? {
            return Err(KernelError::Module {
                name: name.to_string(),
                message: format!(
                    "modprobe succeeded but {} does not exist",
                    self.module_dir(name).display()
                ),
            });
        }
        Ok(())
    }

    fn module_loaded(&self, name: &str) -> Result<bool, KernelError> {
        Ok(self.module_dir(name).exists())
    }

    fn unload_module(&self, name: &str) -> Result<(), KernelError> {
        if !self.module_loaded(name)? {
            return Ok(());
        }
        // modprobe -r also tries the dependencies it leaves unused and fails when one is in
        // use elsewhere (vfio for a held container): only the module itself counts.
        let ran = self.modprobe(name, &["-r"]);
        if !self.module_loaded(name)? {
            return Ok(());
        }
        ran?;
        Err(KernelError::Module {
            name: name.to_string(),
            message: "modprobe -r succeeded but the module is still loaded".to_string(),
        })
    }

    fn driver_devices(&self, driver: &str) -> Result<Vec<PciAddress>, KernelError> {
        let dir = self.roots.pci_drivers().join(driver);
        match fs::read_dir(&dir) {
            Ok(rd) => Ok(rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(KernelError::io("listing", dir.display(), &e)),
        }
    }

    fn writer_blocked(&self, pid: u32) -> bool {
        // Alive, not a zombie, and still one of ours (a fork keeps the name `vfioctl`).
        let stat = match fs::read_to_string(self.roots.proc.join(pid.to_string()).join("stat")) {
            Ok(s) => s,
            Err(_) => return false,
        };
        let Some((head, tail)) = stat.rsplit_once(')') else {
            return false;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let state = tail.split_whitespace().next().unwrap_or("Z");
        comm == "vfioctl" && state != "Z" && state != "X"
    }

    fn group_status(&self, group: u32) -> Result<GroupStatus, KernelError> {
        let p = self.roots.group_node(group);
        vfio::group_status(&p).map_err(|e| match e {
            VfioError::InUse { .. } => KernelError::GroupInUse { group },
            other => KernelError::Io {
                what: "VFIO_GROUP_GET_STATUS".to_string(),
                path: p.display().to_string(),
                errno: None,
                message: other.to_string(),
            },
        })
    }
}

/// `modprobe` by its usual absolute paths first: programs run from udev rules get no `PATH`
/// (and a default search path lacks the sbin directories).
fn modprobe_program() -> &'static str {
    ["/sbin/modprobe", "/usr/sbin/modprobe"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("modprobe")
}

impl LinuxHost {
    /// `/sys/module/NAME` (module names use `_` where people write `-`).
    fn module_dir(&self, name: &str) -> std::path::PathBuf {
        self.roots.sysfs.join("module").join(name.replace('-', "_"))
    }

    /// Runs `modprobe ARGS -- NAME` within the modprobe timeout.
    fn modprobe(&self, name: &str, args: &[&str]) -> Result<(), KernelError> {
        let err = |message: String| KernelError::Module {
            name: name.to_string(),
            message,
        };
        let mut child = Command::new(modprobe_program())
            .args(args)
            .arg("--")
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run modprobe: {e}")))?;
        let deadline = Instant::now() + self.timeouts.modprobe;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(format!(
                        "modprobe did not return within {:.0}s",
                        self.timeouts.modprobe.as_secs_f64()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(err(format!("waiting for modprobe: {e}"))),
            }
        };
        if !status.success() {
            let mut msg = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut msg);
            }
            return Err(err(format!(
                "modprobe exited with {status}: {}",
                msg.trim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The mechanism that makes blocking writes abandonable, exercised on a FIFO: opening a
    // FIFO for writing blocks until a reader appears, like an unbind waiting for a driver.
    #[test]
    fn a_blocking_write_is_abandoned_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("unbind");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t0 = Instant::now();
        let r = write_abandonable("unbind of X", &fifo, b"x", Duration::from_millis(200));
        assert!(t0.elapsed() < Duration::from_secs(5));
        match r {
            Err(e @ KernelError::Timeout { .. }) => assert!(e
                .to_string()
                .contains("unbind of X did not return within 0.2s")),
            other => panic!("expected a timeout, got {other:?}"),
        }
        // Let the abandoned child finish so it does not linger.
        let _ = fs::read(&fifo);
    }

    // An abandoned child must not keep the caller's pipes open: a shell reading vfioctl's
    // output would otherwise wait for the blocked write too.
    #[test]
    fn an_abandoned_child_holds_none_of_our_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("unbind");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (rd, wr) = pipe().unwrap();
        let r = write_abandonable("unbind of X", &fifo, b"x", Duration::from_millis(100));
        assert!(matches!(r, Err(KernelError::Timeout { .. })));
        drop(wr);
        // With our write end closed and the child holding no copy, the read sees EOF at once.
        let mut fds = [PollFd::new(rd.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(500u16)).unwrap(), 1);
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&rd, &mut buf).unwrap(), 0);
        let _ = fs::read(&fifo);
    }

    #[test]
    fn a_write_that_returns_reports_its_errno() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("attr");
        fs::write(&f, b"").unwrap();
        write_abandonable("w", &f, b"0000:01:00.0", Duration::from_secs(5)).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"0000:01:00.0");
        let missing = dir.path().join("nope/attr");
        match write_abandonable("w", &missing, b"1", Duration::from_secs(5)) {
            Err(KernelError::Io { errno, .. }) => assert_eq!(errno, Some(Errno::ENOENT as i32)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_abandoned_writer_counts_as_blocked_only_while_it_is_a_live_vfioctl() {
        let dir = tempfile::tempdir().unwrap();
        let host = LinuxHost::new(Roots::under(dir.path()), Timeouts::default());
        let stat = |pid: u32, text: &str| {
            let d = dir.path().join("proc").join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("stat"), text).unwrap();
        };
        stat(10, "10 (vfioctl) D 1 10 10 0 -1");
        stat(11, "11 (vfioctl) Z 1 11 11 0 -1");
        stat(12, "12 (sshd) D 1 12 12 0 -1");
        stat(13, "13 (odd) name) D 1");
        assert!(host.writer_blocked(10));
        assert!(!host.writer_blocked(11));
        assert!(!host.writer_blocked(12));
        assert!(!host.writer_blocked(13));
        assert!(!host.writer_blocked(14));
    }
}
