"""Podman for the guest (`# vmtest: bundle=podman`): Debian bookworm's podman 4.3, crun and
conmon, fetched with `apt-get download` into the cache and unpacked with `dpkg -x` (nothing is
installed on the host), put with the libraries `ldd` lists into a cpio archive that is appended
after the base image, with configs that work on an initramfs root (no pivot_root, cgroupfs,
vfs storage on tmpfs, file events) and a static build of the suite's edu client for the
container's root filesystem. Built once and cached under a key of its inputs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from . import packages
from .cpio import CpioWriter
from .errors import SetupError

HERE = Path(__file__).resolve().parent
VM_DIR = HERE.parent

# podman's, crun's and conmon's Depends (the library packages), and the configs' package.
PACKAGES = [
    "podman", "crun", "conmon", "golang-github-containers-common",
    "libdevmapper1.02.1", "libgpgme11", "libassuan0", "libgpg-error0", "libseccomp2",
    "libsubid4", "libcap2", "libsystemd0", "libyajl2", "libglib2.0-0",
]
BINARIES = ["usr/bin/podman", "usr/bin/crun", "usr/bin/conmon"]
LIBDIRS = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]

CONTAINERS_CONF = b"""\
# vfioctl VM suite: podman on an initramfs root
[containers]
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
no_pivot_root = true
runtime = "crun"
conmon_path = ["/usr/bin/conmon"]
tmp_dir = "/run/libpod"
[engine.runtimes]
crun = ["/usr/bin/crun"]
"""

STORAGE_CONF = b"""\
[storage]
driver = "vfs"
graphroot = "/run/containers/storage"
runroot = "/run/containers/runroot"
"""


def ldd_in(binary: Path, root: Path) -> list[Path]:
    """The libraries `binary` needs, looked up in the unpacked `root` first, then the host."""
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(str(root / d) for d in LIBDIRS))
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SetupError(f"ldd {binary} failed: {proc.stderr.strip()}")
    libs = []
    for line in proc.stdout.splitlines():
        if "not found" in line:
            raise SetupError(f"{binary} needs a library neither the packages nor the host "
                             f"have: {line.strip()}")
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def static_client(cache: Path, log) -> Path:
    """The suite's edu client linked statically, for a container root with no libc."""
    src = VM_DIR / "client" / "vfio_edu_client.rs"
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = cache / "client" / f"vfio-edu-client-static-{key}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    rustc = shutil.which("rustc")
    if rustc is None:
        raise SetupError("rustc is missing (it builds tests/vm/client/vfio_edu_client.rs)")
    log("rustc -C target-feature=+crt-static vfio_edu_client.rs")
    proc = subprocess.run([rustc, "-O", "--edition", "2021", "-C", "target-feature=+crt-static",
                           "-o", str(out), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"rustc (static) {src} failed:\n{proc.stderr}")
    return out


def build(cache: Path, apt: packages.Apt, log) -> Path:
    """The podman archive (cached); returns its path."""
    debs = apt.download(PACKAGES, cache / "debs")
    root = cache / "podman-root"
    for deb in debs:
        packages.unpack(deb, root)
    client = static_client(cache, log)
    helper = VM_DIR / "guest" / "podman.sh"
    key_parts = [*(d.name for d in debs), (HERE / "podman.py").read_text(),
                 helper.read_text(), client.name]
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:16]
    out = cache / "images" / f"podman-{key}.cpio"
    if out.exists():
        return out
    log(f"building podman archive {out.name} ({', '.join(d.name for d in debs[:3])})")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        cpio = CpioWriter(f)
        done: set[str] = set()
        for b in BINARIES:
            src = root / b
            if not src.exists():
                raise SetupError(f"{src} missing after unpacking {', '.join(PACKAGES[:3])}")
            cpio.file(b, src.read_bytes(), 0o755)
            for lib in ldd_in(src, root):
                # Every library in one directory the loader searches without a cache.
                dest = (f"lib64/{lib.name}" if lib.parent.name == "lib64"
                        else f"lib/x86_64-linux-gnu/{lib.name}")
                if dest in done:
                    continue
                done.add(dest)
                cpio.file(dest, lib.resolve().read_bytes(), 0o755)
        cpio.file("etc/containers/containers.conf", CONTAINERS_CONF)
        cpio.file("etc/containers/storage.conf", STORAGE_CONF)
        cpio.file("etc/containers/policy.json",
                  (root / "etc" / "containers" / "policy.json").read_bytes())
        seccomp = root / "usr" / "share" / "containers" / "seccomp.json"
        if seccomp.exists():
            cpio.file("usr/share/containers/seccomp.json", seccomp.read_bytes())
        cpio.file("usr/bin/vfio-edu-client-static", client.read_bytes(), 0o755)
        cpio.file("vmtest/podman.sh", helper.read_bytes())
        cpio.close()
    tmp.rename(out)
    return out
