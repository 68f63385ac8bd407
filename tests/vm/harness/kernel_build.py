"""The guest kernel with iommufd: no Debian kernel enables `CONFIG_IOMMUFD`, so the suite builds
one from Debian's `linux-source-6.12` (bookworm-backports, fetched through a private apt setup
like the SR-IOV layout's QEMU) with a small config: x86_64_defconfig trimmed of what the guest
never uses, VFIO with both the legacy container and the iommufd device cdevs, the Intel IOMMU
with interrupt remapping, and the drivers of the VM layouts built in (no modules to load).

The result is cached in the suite's cache (`kernels/iommufd-KEY/vmlinux`), keyed by the hash of
the config fragment and the source package, so CI on one machine builds it once.
Run by hand: `python3 -m harness.kernel_build` from tests/vm (prints where the vmlinux is).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import packages
from .errors import SetupError

SUITE = "bookworm-backports"
SOURCE_PACKAGE = "linux-source-6.12"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Host tools the kernel build needs, with the Debian package that has each (tests/install-deps
# installs them; perl and tar are essential packages on Debian).
BUILD_TOOLS = {"flex": "flex", "bison": "bison", "bc": "bc", "gcc": "gcc", "make": "make",
               "ld": "binutils", "strip": "binutils", "xz": "xz-utils", "tar": "tar",
               "perl": "perl-base"}
BUILD_HEADERS = {"/usr/include/libelf.h": "libelf-dev", "/usr/include/openssl/ssl.h": "libssl-dev",
                 "/usr/include/stdio.h": "libc6-dev"}
# The unpacked source (~1.6 GB) and the objects (~0.5 GB), with some room.
BUILD_SPACE = 3 << 30

# Applied with scripts/config over x86_64_defconfig, then `make olddefconfig`.
ENABLE = [
    # what the suite is for
    "IOMMUFD", "VFIO_DEVICE_CDEV", "VFIO", "VFIO_GROUP", "VFIO_CONTAINER", "VFIO_IOMMU_TYPE1",
    "VFIO_PCI", "VFIO_PCI_CORE", "IOMMU_SUPPORT", "INTEL_IOMMU", "IRQ_REMAP", "PCI_IOV",
    "MEMFD_CREATE",
    # boot: PVH entry (QEMU boots the ELF vmlinux), initramfs, devtmpfs
    "PVH", "BLK_DEV_INITRD", "RD_GZIP", "DEVTMPFS", "DEVTMPFS_MOUNT", "TMPFS", "SHMEM",
    # the layouts' devices and hot-plug, built in
    "PCI", "PCIEPORTBUS", "HOTPLUG_PCI", "HOTPLUG_PCI_PCIE", "HOTPLUG_PCI_ACPI",
    "HOTPLUG_PCI_SHPC", "NET", "NETDEVICES", "ETHERNET", "NET_VENDOR_INTEL", "E1000", "E1000E",
    "IGB", "VIRTIO_MENU", "VIRTIO", "VIRTIO_PCI", "VIRTIO_NET", "BLK_DEV", "BLK_DEV_NVME",
    "SERIAL_8250", "SERIAL_8250_CONSOLE", "UNIX", "INOTIFY_USER", "SIGNALFD", "EPOLL",
    "FHANDLE", "CGROUPS",
    # systemd's DevicePolicy=/DeviceAllow= (the packaged unit's device sandbox) is a cgroup BPF
    # program: without these the systemd guest would not enforce it and could not catch a node
    # the unit forgets to allow
    "BPF_SYSCALL", "CGROUP_BPF",
]
DISABLE = [
    "DRM", "SOUND", "USB_SUPPORT", "WLAN", "WIRELESS", "CFG80211", "NETFILTER", "ATA", "SCSI",
    "INPUT_MOUSE", "INPUT_JOYSTICK", "INPUT_TOUCHSCREEN", "FB", "AGP", "HID", "WATCHDOG",
    "HAMRADIO", "BT", "NFS_FS", "ISO9660_FS", "EXT4_FS", "MODULE_SIG", "DEBUG_INFO",
    "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT", "KVM", "XEN", "HYPERVISOR_GUEST_XEN",
    "SECURITY_SELINUX", "AUDIT", "FTRACE", "KPROBES", "PROFILING", "NET_9P", "MACINTOSH_DRIVERS",
    "PCCARD", "CPU_FREQ", "HIBERNATION", "SUSPEND", "X86_MCE", "MICROCODE",
]
# Values the build must end with (checked in .config after olddefconfig).
REQUIRED = ["IOMMUFD", "VFIO_DEVICE_CDEV", "VFIO_CONTAINER", "VFIO_PCI", "INTEL_IOMMU",
            "IRQ_REMAP", "PVH", "E1000E", "VIRTIO_NET", "BLK_DEV_NVME", "CGROUP_BPF"]
FORMAT = "1"


def fragment() -> str:
    lines = [f"CONFIG_{o}=y" for o in ENABLE] + [f"# CONFIG_{o} is not set" for o in DISABLE]
    return "\n".join(lines) + "\n"


def config_key(source_deb: str) -> str:
    """The cache key: the source package, the config fragment and FORMAT (bump it when the
    build steps change in a way the fragment does not show)."""
    return hashlib.sha256("\n".join([FORMAT, source_deb, fragment()]).encode()).hexdigest()[:16]


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None}
                     | {pkg for path, pkg in BUILD_HEADERS.items() if not Path(path).exists()})
    if missing:
        raise SetupError("building the iommufd guest kernel needs "
                         f"`apt-get install --no-install-recommends {' '.join(missing)}` "
                         "(tests/install-deps installs them)")


def check_space(directory: Path) -> None:
    """Refuse to start a build that would fill the disk half-way (it happened: the partial
    tree then sits in the cache and every later step fails with ENOSPC)."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < BUILD_SPACE:
        raise SetupError(f"building the iommufd guest kernel needs {BUILD_SPACE >> 30} GiB free "
                         f"in {directory}, it has {free / (1 << 30):.1f} GiB (set "
                         "VFIOCTL_VM_CACHE to a roomier place)")


def make(tree: Path, *args: str, nice: bool = False, log_file: Path | None = None) -> None:
    """Run make in `tree`; its output goes to `log_file` when given (a long build), and a
    failure names the compiler's error lines and where the whole log is."""
    cmd = (["nice", "-n", "19"] if nice else []) + ["make", "-C", str(tree), *args]
    if log_file is None:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out = proc.stdout + proc.stderr
    else:
        with open(log_file, "a") as f:
            f.write(f"# {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
        out = log_file.read_text(errors="replace")[-200_000:]
    if proc.returncode != 0:
        errors = [line for line in out.splitlines()
                  if "error" in line.lower() or "No such file" in line or "not found" in line]
        where = f"\nthe whole output: {log_file}" if log_file is not None else ""
        raise SetupError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); its errors:\n"
                         + "\n".join(errors[-20:] or out.splitlines()[-30:]) + where)


def source_tree(work: Path) -> Path:
    trees = [p for p in work.iterdir() if p.is_dir()]
    if len(trees) != 1:
        raise SetupError(f"{work} should hold one source tree, it holds {len(trees)}")
    return trees[0]


def configure(tree: Path) -> None:
    """x86_64_defconfig with ENABLE and DISABLE applied, checked against REQUIRED."""
    (tree / "vfioctl.config").write_text(fragment())
    make(tree, "x86_64_defconfig")
    args = []
    for o in ENABLE:
        args += ["--enable", o]
    for o in DISABLE:
        args += ["--disable", o]
    proc = subprocess.run([str(tree / "scripts" / "config"), "--file", str(tree / ".config"),
                           *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"scripts/config failed: {proc.stderr}")
    make(tree, "olddefconfig")
    config = (tree / ".config").read_text()
    lacking = [o for o in REQUIRED if f"CONFIG_{o}=y\n" not in config]
    if lacking:
        raise SetupError(f"the kernel config lost {', '.join(lacking)} in olddefconfig "
                         "(a dependency is off; see tests/vm/harness/kernel_build.py)")


def default_jobs() -> int:
    """`VFIOCTL_VM_KERNEL_JOBS`, else one job per CPU."""
    given = os.environ.get("VFIOCTL_VM_KERNEL_JOBS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return os.cpu_count() or 2


def iommufd_kernel(cache: Path, log, jobs: int | None = None) -> tuple[Path, str]:
    """The vmlinux (PVH ELF) of the iommufd guest kernel and its release, built when missing."""
    jobs = jobs or default_jobs()
    uri = packages.host_archive_uri()
    private = cache / "apt-backports"
    apt = packages.Apt(private, f"deb [signed-by={KEYRING}] {uri} {SUITE} main\n")
    debs_dir = cache / "debs-backports"
    if not packages.find_deb(debs_dir, SOURCE_PACKAGE):
        log(f"fetching {SOURCE_PACKAGE} from {uri} {SUITE} (private apt state in {private})")
        apt.update()
    (deb,) = apt.download([SOURCE_PACKAGE], debs_dir)
    key = config_key(deb.name)
    out = cache / "kernels" / f"iommufd-{key}"
    vmlinux = out / "vmlinux"
    info = out / "build.json"
    if vmlinux.exists() and info.exists():
        release = json.loads(info.read_text())["release"]
        return vmlinux, release
    check_tools()
    check_space(cache)
    src_root = cache / "linux-source"
    packages.unpack(deb, src_root)
    tarballs = sorted((src_root / "usr" / "src").glob("linux-source-6.12*.tar.*"))
    if not tarballs:
        raise SetupError(f"{deb.name} holds no /usr/src/linux-source-6.12*.tar.*")
    work = cache / "kernels" / f"build-{key}"
    configured = work / ".configured"
    resumed = configured.exists()
    if resumed:
        # an earlier build of this very config stopped half-way (a full disk, a kill): make
        # picks up where it stopped
        log(f"resuming the build in {work}")
        unpack_s = float(configured.read_text() or 0)
    else:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        t0 = time.monotonic()
        log(f"unpacking {tarballs[-1].name} into {work}")
        proc = subprocess.run(["tar", "-xf", str(tarballs[-1]), "-C", str(work)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SetupError(f"unpacking {tarballs[-1]} failed: {proc.stderr.strip()}")
        unpack_s = time.monotonic() - t0
        configure(source_tree(work))
        configured.write_text(f"{unpack_s:.1f}")
    tree = source_tree(work)
    build_log = work / "build.log"
    log(f"building the iommufd guest kernel (nice -n 19, -j{jobs}; output in {build_log}); "
        "the first build takes minutes, later runs reuse it")
    load_before = os.getloadavg()[0]
    t1 = time.monotonic()
    try:
        make(tree, f"-j{jobs}", "vmlinux", nice=True, log_file=build_log)
    except SetupError as e:
        raise SetupError(f"building the iommufd guest kernel failed: {e}\nthe partial tree "
                         f"stays in {work} so the next run resumes it; delete it to free its "
                         "~2 GB") from e
    build_s = time.monotonic() - t1
    load_after = os.getloadavg()[0]
    release = (tree / "include" / "config" / "kernel.release").read_text().strip()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tree / ".config", out / "config")
    tmp = out / "vmlinux.tmp"
    shutil.copy2(tree / "vmlinux", tmp)
    subprocess.run(["strip", "--strip-debug", str(tmp)], check=False)
    tmp.rename(vmlinux)
    # `resumed`: build_seconds covers only what was left of an interrupted build, not a cold
    # one; the load averages say how busy the machine was (a cold figure wants a quiet one)
    info.write_text(json.dumps({"release": release, "package": deb.name,
                                "unpack_seconds": round(unpack_s, 1),
                                "build_seconds": round(build_s, 1), "jobs": jobs,
                                "resumed": resumed, "cpus": os.cpu_count(),
                                "load_before": round(load_before, 2),
                                "load_after": round(load_after, 2)}) + "\n")
    log(f"built {release} in {build_s:.0f} s (+ {unpack_s:.0f} s unpacking): {vmlinux}")
    shutil.rmtree(work)  # 1.6 GB of source and 0.5 GB of objects
    return vmlinux, release


if __name__ == "__main__":
    cache = Path(os.environ.get("VFIOCTL_VM_CACHE") or "/var/cache/vfioctl-vm")
    try:
        path, rel = iommufd_kernel(cache, lambda m: print(f"vmtest: {m}", flush=True))
    except SetupError as e:
        print(f"vmtest: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{path} {rel}")
