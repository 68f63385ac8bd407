"""The guest image: the kernel (as an uncompressed PVH vmlinux when it can be extracted), a base
initramfs built once and cached by its inputs (busybox, kernel modules, systemd-udevd, qemu-img),
and a small per-run overlay with the freshly built vfioctl, the guest scripts and one scenario.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from . import packages
from .cpio import CpioWriter
from .errors import SetupError

HERE = Path(__file__).resolve().parent

# Modules the guest loads at boot: the host drivers of the layouts' devices, and VFIO.
GUEST_MODULES = [
    "e1000e", "e1000", "virtio_pci", "virtio_net", "nvme", "igb",
    "vfio", "vfio_iommu_type1", "vfio_pci",
]
UDEV_RULES = ["50-udev-default.rules", "80-drivers.rules"]
# Tools for scenarios that compare vfioctl with driverctl (a bash script, with its udev rule).
EXTRA_PACKAGES = ["kmod", "driverctl", "bash-static"]
# Bump when the base image's layout changes in a way the inputs below do not show.
BASE_FORMAT = "2"


@dataclass
class Kernel:
    package: str
    release: str
    image: Path  # what QEMU boots: vmlinux (PVH ELF) or the bzImage
    pvh: bool


@dataclass
class Image:
    kernel: Kernel
    base: Path
    modules: list[str]


def extract_vmlinux(bzimage: Path, out: Path) -> bool:
    """Write the ELF vmlinux inside a bzImage to `out`. Returns False when the payload's
    compression is one Python cannot undo (the bzImage is booted instead)."""
    data = bzimage.read_bytes()
    if data[0x202:0x206] != b"HdrS":
        return False
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = data[start:start + length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        elif payload.startswith(b"BZh"):
            elf = bz2.BZ2Decompressor().decompress(payload)
        elif payload.startswith(b"\x5d\x00\x00"):
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)
        else:
            return False
    except (lzma.LZMAError, zlib.error, OSError, EOFError):
        return False
    if not elf.startswith(b"\x7fELF"):
        return False
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(elf)
    tmp.rename(out)
    return True


def ldd(binary: Path) -> list[Path]:
    """The shared libraries (and loader) `binary` needs, as absolute host paths."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return []
        raise SetupError(f"ldd {binary} failed: {proc.stderr.strip()}")
    libs = []
    for line in proc.stdout.splitlines():
        if "not found" in line:
            raise SetupError(f"{binary} needs a library the host lacks: {line.strip()}")
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def add_binary(cpio: CpioWriter, src: Path, dest: str, done: set[str]) -> None:
    """Add a dynamic binary and every library `ldd` lists, at the paths the loader expects."""
    cpio.file(dest, src.read_bytes(), 0o755)
    for lib in ldd(src):
        if str(lib) in done:
            continue
        done.add(str(lib))
        cpio.file(str(lib), lib.resolve().read_bytes(), 0o755)


def module_closure(dep_file: Path, wanted: list[str]) -> list[str]:
    """Relative paths of `wanted` modules and everything they depend on, from modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in dep_file.read_text().splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod] = rest.split()
        name = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", Path(mod).name).replace("-", "_")
        by_name[name] = mod
    out: list[str] = []
    todo = []
    for w in wanted:
        key = w.replace("-", "_")
        if key not in by_name:
            raise SetupError(f"kernel module {w} is not in {dep_file}")
        todo.append(by_name[key])
    while todo:
        m = todo.pop()
        if m in out:
            continue
        out.append(m)
        todo.extend(deps.get(m, []))
    return sorted(out)


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if path.name.endswith(".zst"):
        raise SetupError(f"{path}: zstd-compressed modules are not supported")
    return data


def plain_module_name(rel: str) -> str:
    return re.sub(r"\.(xz|gz)$", "", rel)


class ImageBuilder:
    def __init__(self, cache: Path, log, ci: bool):
        self.cache = cache
        self.log = log
        self.ci = ci
        self.debs = cache / "debs"
        self.root = cache / "root"  # every guest package unpacked here

    def build(self, apt: packages.Apt) -> Image:
        kernel_pkg = packages.resolve_kernel(apt, self.debs, self.log)
        wanted = [kernel_pkg, "busybox-static", "udev", *EXTRA_PACKAGES]
        debs = apt.download(wanted, self.debs)
        for deb in debs:
            packages.unpack(deb, self.root)
        release = kernel_pkg.removeprefix("linux-image-")
        self.log(f"kernel: {kernel_pkg} ({debs[0].name})")
        kernel = self._kernel(kernel_pkg, release)
        busybox = self.root / "bin" / "busybox"
        moddir = self.root / "lib" / "modules" / release
        dep = moddir / "modules.dep"
        if not dep.exists():
            run([str(busybox), "depmod", "-b", str(self.root), release])
        modules = module_closure(dep, GUEST_MODULES)
        qemu_img = shutil.which("qemu-img")
        key_parts = [BASE_FORMAT, *(d.name for d in debs), *modules,
                     (HERE / "image.py").read_text()]
        if qemu_img:
            key_parts += [qemu_img, file_digest(Path(qemu_img)),
                          *(str(p) for p in ldd(Path(qemu_img)))]
        elif self.ci:
            raise SetupError("qemu-img is missing (apt-get install qemu-utils)")
        else:
            self.log("warning: qemu-img is missing (qemu-utils); the NVMe client scenario will fail")
        key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:16]
        base = self.cache / "images" / f"base-{key}.cpio"
        if not base.exists():
            self.log(f"building base initramfs {base.name}")
            base.parent.mkdir(parents=True, exist_ok=True)
            tmp = base.with_suffix(".tmp")
            with open(tmp, "wb") as out:
                self._write_base(CpioWriter(out), busybox, release, modules,
                                 Path(qemu_img) if qemu_img else None)
            tmp.rename(base)
        return Image(kernel, base, modules)

    def _kernel(self, package: str, release: str) -> Kernel:
        bz = self.root / "boot" / f"vmlinuz-{release}"
        if not bz.exists():
            raise SetupError(f"{package} has no /boot/vmlinuz-{release}")
        vmlinux = self.cache / "images" / f"vmlinux-{release}"
        vmlinux.parent.mkdir(parents=True, exist_ok=True)
        if vmlinux.exists() or extract_vmlinux(bz, vmlinux):
            return Kernel(package, release, vmlinux, True)
        self.log("could not extract vmlinux; booting the compressed bzImage (slower)")
        return Kernel(package, release, bz, False)

    def _write_base(self, cpio: CpioWriter, busybox: Path, release: str, modules: list[str],
                    qemu_img: Path | None) -> None:
        for d in ["proc", "sys", "dev", "run", "tmp", "etc", "root", "home/user", "bin", "sbin",
                  "usr/bin", "usr/sbin", "var/tmp"]:
            cpio.directory(d)
        cpio.chardev("dev/console", 5, 1)
        cpio.chardev("dev/null", 1, 3, 0o666)
        cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
        cpio.symlink("bin/sh", "busybox")
        cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                  b"user:x:1000:1000:user:/home/user:/bin/sh\n")
        cpio.file("etc/group", b"root:x:0:\nuser:x:1000:\n")
        # kernel modules (decompressed: busybox insmod cannot read .ko.xz) and their modules.dep
        kdir = f"lib/modules/{release}"
        src = self.root / kdir
        dep_lines = []
        full = {}
        for line in (src / "modules.dep").read_text().splitlines():
            mod, _, rest = line.partition(":")
            full[mod] = rest.split()
        for rel in modules:
            cpio.file(f"{kdir}/{plain_module_name(rel)}", read_module(src / rel))
            deps = " ".join(plain_module_name(d) for d in full.get(rel, []))
            dep_lines.append(f"{plain_module_name(rel)}: {deps}".rstrip())
        cpio.file(f"{kdir}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
        # kmod's depmod over exactly these modules: the binary indexes (modules.alias.bin) that
        # udev's kmod builtin needs to load drivers by modalias, as at a real boot
        for name, data in kmod_indexes(self.root, release, modules).items():
            cpio.file(f"{kdir}/{name}", data)
        # systemd-udevd (it is udevadm under another name) with its libraries and default rules
        done: set[str] = set()
        udevadm = self.root / "bin" / "udevadm"
        add_binary(cpio, udevadm, "bin/udevadm", done)
        cpio.symlink("lib/systemd/systemd-udevd", "/bin/udevadm")
        # driverctl (a bash script) with bash-static as its bash; its udev rule starts a systemd
        # unit, which this guest lacks: scenarios install an equivalent RUN rule
        cpio.file("usr/sbin/driverctl", (self.root / "usr" / "sbin" / "driverctl").read_bytes(), 0o755)
        cpio.file("bin/bash", (self.root / "bin" / "bash-static").read_bytes(), 0o755)
        cpio.directory("etc/driverctl.d")
        for rule in UDEV_RULES:
            cpio.file(f"lib/udev/rules.d/{rule}",
                      (self.root / "lib" / "udev" / "rules.d" / rule).read_bytes())
        # QEMU's user-space NVMe driver, the real VFIO client of the unprivileged scenario
        if qemu_img is not None:
            add_binary(cpio, qemu_img, "usr/bin/qemu-img", done)
        cpio.close()

def write_overlay(out: Path, files: dict[str, Path | bytes], binaries: dict[str, Path],
                  executable: set[str]) -> None:
    """The per-run archive: `binaries` (with their libraries) and plain `files`."""
    with open(out, "wb") as f:
        cpio = CpioWriter(f)
        done: set[str] = set()
        for dest, src in binaries.items():
            add_binary(cpio, src, dest, done)
        for dest, src in files.items():
            data = src if isinstance(src, bytes) else src.read_bytes()
            cpio.file(dest, data, 0o755 if dest in executable else 0o644)
        cpio.close()


def kmod_indexes(root: Path, release: str, modules: list[str]) -> dict[str, bytes]:
    """The modules.* files kmod's depmod makes for just `modules` (decompressed, plain names)."""
    import tempfile
    src = root / "lib" / "modules" / release
    kmod = root / "bin" / "kmod"
    if not kmod.exists():
        raise SetupError(f"{kmod} missing (the kmod package)")
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "lib" / "modules" / release
        stage.mkdir(parents=True)
        for rel in modules:
            dest = stage / plain_module_name(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(read_module(src / rel))
        for name in ["modules.builtin", "modules.builtin.modinfo", "modules.order"]:
            if (src / name).exists():
                shutil.copy(src / name, stage / name)
        depmod = Path(tmp) / "depmod"
        depmod.symlink_to(kmod)
        run([str(depmod), "-b", tmp, release])
        return {p.name: p.read_bytes() for p in sorted(stage.glob("modules.*"))
                if p.name not in ("modules.dep", "modules.order", "modules.builtin",
                                  "modules.builtin.modinfo")}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
