"""Debian packages for the guest: resolve names, download them with `apt-get download` into the
cache (never installing them on the host) and unpack them with `dpkg -x`.

An optional private apt setup (its own sources list, state and cache directories) reaches a suite
the host does not use, such as bookworm-backports, without touching the host's apt configuration.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from pathlib import Path

from .errors import SetupError

APT_QUIET = ["-o", "APT::Sandbox::User=root", "-q"]


class Apt:
    """`apt-get`/`apt-cache` with the host's sources, or a private setup under `private_dir`."""

    def __init__(self, private_dir: Path | None = None, sources: str | None = None):
        self.private_dir = private_dir
        self.options: list[str] = list(APT_QUIET)
        if private_dir is not None:
            assert sources is not None
            state = private_dir / "state"
            cache = private_dir / "cache"
            for d in (state / "lists" / "partial", cache / "archives" / "partial"):
                d.mkdir(parents=True, exist_ok=True)
            src = private_dir / "sources.list"
            src.write_text(sources)
            status = state / "status"
            if not status.exists():
                status.write_text("")
            self.options += [
                "-o", f"Dir::Etc::SourceList={src}",
                "-o", "Dir::Etc::SourceParts=/nonexistent",
                "-o", f"Dir::State={state}",
                "-o", f"Dir::State::status={status}",
                "-o", f"Dir::Cache={cache}",
            ]

    def run(self, tool: str, args: list[str], cwd: Path | None = None) -> str:
        cmd = [tool, *self.options, *args]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SetupError(f"`{' '.join(cmd)}` failed:\n{proc.stderr.strip()}")
        return proc.stdout

    def update(self) -> None:
        self.run("apt-get", ["update"])

    def depends(self, package: str) -> list[str]:
        out = self.run("apt-cache", ["depends", package])
        return re.findall(r"^\s+Depends: (\S+)$", out, re.M)

    def has_candidate(self, package: str) -> bool:
        try:
            out = self.run("apt-cache", ["policy", package])
        except SetupError:
            return False
        m = re.search(r"Candidate: (\S+)", out)
        return bool(m and m.group(1) != "(none)")

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        """Download `packages` (names, or name=version) into `dest` unless a matching .deb is
        already there; return the .deb paths in the order asked."""
        dest.mkdir(parents=True, exist_ok=True)
        missing = [p for p in packages if not find_deb(dest, p)]
        if missing:
            self.run("apt-get", ["download", *missing], cwd=dest)
        debs = []
        for p in packages:
            deb = find_deb(dest, p)
            if deb is None:
                raise SetupError(f"apt-get download {p} left no .deb in {dest}")
            debs.append(deb)
        return debs


def find_deb(directory: Path, package: str) -> Path | None:
    name = package.split("=")[0]
    hits = sorted(glob.glob(str(directory / f"{glob.escape(name)}_*.deb")))
    return Path(hits[-1]) if hits else None


def unpack(deb: Path, root: Path) -> None:
    """`dpkg -x` one package into `root` (idempotent: a stamp file remembers it)."""
    stamp = root / ".unpacked" / deb.name
    if stamp.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"dpkg -x {deb} failed: {proc.stderr.strip()}")
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text("")


def resolve_kernel(apt: Apt, cache: Path, log) -> str:
    """The kernel image package to use: `VFIOCTL_VM_KERNEL` when set and still in the archive,
    else what the `linux-image-amd64` metapackage depends on, else a kernel already cached."""
    pinned = os.environ.get("VFIOCTL_VM_KERNEL")
    if pinned:
        if apt.has_candidate(pinned) or find_deb(cache, pinned):
            return pinned
        log(f"pinned kernel {pinned} is not in the archive any more; using linux-image-amd64")
    try:
        deps = [d for d in apt.depends("linux-image-amd64") if d.startswith("linux-image-")]
    except SetupError as e:
        deps = []
        log(f"apt-cache depends linux-image-amd64 failed: {e}")
    if deps:
        return deps[0]
    cached = sorted(glob.glob(str(cache / "linux-image-*-amd64_*.deb")))
    if cached:
        name = Path(cached[-1]).name.split("_")[0]
        log(f"the archive names no kernel; using the cached {name}")
        return name
    raise SetupError("no kernel package: `apt-cache depends linux-image-amd64` names none "
                     "(run `apt-get update`?) and none is cached")


def host_archive_uri() -> str:
    """The Debian archive URI the host's apt already uses (for the private backports setup)."""
    texts = []
    for f in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
        try:
            texts.append(Path(f).read_text())
        except OSError:
            continue
    for text in texts:
        # deb822 stanzas: URIs + Suites containing bookworm
        for stanza in re.split(r"\n\s*\n", text):
            uri = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uri and suites and re.search(r"\bbookworm\b", suites.group(1)):
                return uri.group(1)
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if m:
                return m.group(1)
    raise SetupError("found no Debian archive for bookworm in /etc/apt/sources.list*")
