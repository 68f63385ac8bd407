"""QEMU 10 for the guest (`# vmtest: bundle=qemu10`): bookworm-backports' qemu-system-x86_64
(the same package the SR-IOV layout runs on the host, see sriov.py) with the libraries `ldd`
lists on the host (it runs with the host's bookworm libraries) and the firmware it loads even
when started with `-S` (SeaBIOS' bios-256k.bin from the host's seabios, kvmvapic.bin from
qemu-system-data), at the paths Debian's build searches (/usr/share/qemu, /usr/share/seabios),
in a cpio archive appended after the base image. Built once and cached under a key of its
inputs; scenarios without the bundle boot the same base image as before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import image, sriov
from .cpio import CpioWriter
from .errors import SetupError

HERE = Path(__file__).resolve().parent

# guest path -> (where it comes from: "qemu" = the unpacked backports tree, "host" = /)
FIRMWARE = {
    "usr/share/seabios/bios-256k.bin": ("host", "usr/share/seabios/bios-256k.bin"),
    "usr/share/qemu/kvmvapic.bin": ("qemu", "usr/share/qemu/kvmvapic.bin"),
}


def build(cache: Path, log) -> Path:
    """The QEMU 10 archive (cached); returns its path."""
    qemu, _firmware = sriov.backports_qemu(cache, log)
    root = cache / "qemu-backports"
    sources = {}
    for dest, (origin, rel) in FIRMWARE.items():
        src = (root if origin == "qemu" else Path("/")) / rel
        if not src.exists():
            raise SetupError(f"{src} missing (the guest's QEMU loads it)")
        sources[dest] = src
    libs = image.ldd(qemu)
    key_parts = [image.file_digest(qemu), *(str(p) for p in libs),
                 *(image.file_digest(p.resolve()) for p in libs),
                 *(f"{d}={image.file_digest(s)}" for d, s in sources.items()),
                 (HERE / "qemu_guest.py").read_text()]
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:16]
    out = cache / "images" / f"qemu10-{key}.cpio"
    if out.exists():
        return out
    log(f"building the guest QEMU archive {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        cpio = CpioWriter(f)
        for d in ["usr/share/qemu", "usr/share/seabios"]:
            cpio.directory(d)
        image.add_binary(cpio, qemu, "usr/bin/qemu-system-x86_64", set())
        for dest, src in sources.items():
            cpio.file(dest, src.read_bytes())
        cpio.close()
    tmp.rename(out)
    return out
