"""QEMU for the SR-IOV layout: QEMU 10 from bookworm-backports (Debian 12's QEMU 7.2 has no
`igb`), fetched through a private apt setup so the host's sources stay as they are, and run
unpacked from the cache with its own firmware directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import packages
from .errors import SetupError

SUITE = "bookworm-backports"
PACKAGES = ["qemu-system-x86", "qemu-system-data"]
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def backports_qemu(cache: Path, log) -> tuple[Path, list[Path]]:
    uri = packages.host_archive_uri()
    private = cache / "apt-backports"
    apt = packages.Apt(private, f"deb [signed-by={KEYRING}] {uri} {SUITE} main\n")
    root = cache / "qemu-backports"
    debs_dir = cache / "debs-backports"
    if not all(packages.find_deb(debs_dir, p) for p in PACKAGES):
        log(f"fetching {', '.join(PACKAGES)} from {uri} {SUITE} (private apt state in {private})")
        apt.update()
    debs = apt.download(PACKAGES, debs_dir)
    for deb in debs:
        packages.unpack(deb, root)
    qemu = root / "usr" / "bin" / "qemu-system-x86_64"
    proc = subprocess.run([str(qemu), "--version"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"the backports QEMU does not run: {proc.stderr.strip() or proc.stdout}")
    log(f"SR-IOV layout QEMU: {proc.stdout.splitlines()[0]}")
    # the host's seabios (a dependency of the host's qemu-system-x86) provides bios-256k.bin
    return qemu, [root / "usr" / "share" / "qemu", Path("/usr/share/seabios")]
