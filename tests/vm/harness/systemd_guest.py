"""The second guest kind: Debian's systemd as PID 1, with vfioctl installed from the built .deb.

The root filesystem is Debian's own packages (systemd 252, udev, dpkg, perl-base for
deb-systemd-helper, util-linux, ...), resolved as apt would install them on an empty system (a
private apt state with the host's bookworm archive), fetched with `apt-get download` into the
cache, unpacked with `dpkg -x`, and given a dpkg status database so `dpkg -i` of vfioctl's
package sees its dependencies installed. It goes into the initramfs as `/sysroot` (one cpio,
cached by the package versions). The guest's /init (`guest/init-systemd`) copies it into a
tmpfs, runs the scenario's pre-boot part (its config), installs vfioctl with
`chroot /newroot dpkg -i` (the maintainer scripts enable the unit offline, as on an image build),
then `switch_root`s and execs /lib/systemd/systemd. systemd's
sandboxing cannot work on the initramfs rootfs itself, hence the tmpfs copy.
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

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# What the root needs; apt adds the dependencies. dpkg checks for sh, rm, tar, diff, ldconfig
# and start-stop-daemon before it installs anything.
ROOT_PACKAGES = [
    "systemd", "udev", "dpkg", "tar", "diffutils", "coreutils", "libc-bin", "perl-base",
    "init-system-helpers", "kmod", "util-linux", "mount", "dash", "sed", "grep", "findutils",
    "gawk", "procps",
    # init-system-helpers needs "usrmerge | usr-is-merged"; the first would pull in all of perl
    "usr-is-merged",
]
# Not needed to boot or test, and most of the size.
DROPPED = ["usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
           "usr/share/i18n", "usr/share/zoneinfo", "usr/share/lintian", "usr/share/bug",
           "usr/share/bash-completion", "usr/share/zsh", "usr/share/fish", "usr/lib/udev/hwdb.d",
           "usr/lib/x86_64-linux-gnu/gconv"]
# Units a test guest does without: no terminals, no logins, no network, no timers.
MASKED = [
    "getty@.service", "serial-getty@.service", "console-getty.service", "getty.target",
    "systemd-logind.service", "networking.service", "systemd-networkd.service",
    "systemd-timesyncd.service", "systemd-resolved.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer", "dpkg-db-backup.timer",
    "systemd-tmpfiles-clean.timer", "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service", "systemd-firstboot.service",
    "systemd-random-seed.service", "systemd-pstore.service", "systemd-journal-flush.service",
    "systemd-hwdb-update.service", "ldconfig.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "systemd-remount-fs.service", "systemd-fsck-root.service",
    "systemd-boot-system-token.service", "systemd-journald-audit.socket",
]
FORMAT = "1"


def _apt(cache: Path) -> packages.Apt:
    uri = packages.host_archive_uri()
    sources = (f"deb [signed-by={KEYRING}] {uri} bookworm main\n"
               f"deb [signed-by={KEYRING}] {uri} bookworm-updates main\n")
    return packages.Apt(cache / "apt-systemd", sources)


def resolve(apt: packages.Apt) -> list[str]:
    """name=version of every package apt would install for ROOT_PACKAGES on an empty system."""
    out = apt.run("apt-get", ["-s", "install", "--no-install-recommends", *ROOT_PACKAGES])
    found = re.findall(r"^Inst (\S+) \((\S+)", out, re.M)
    if not found:
        raise SetupError(f"apt-get -s install {' '.join(ROOT_PACKAGES)} installs nothing:\n{out}")
    return sorted(f"{name}={version}" for name, version in found)


def _dpkg_db(debs: list[Path], info: Path) -> bytes:
    """A dpkg status database saying these packages are installed, and each one's file list in
    `info` (`NAME[:ARCH].list`), as dpkg itself would leave them."""
    stanzas = []
    for deb in debs:
        proc = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SetupError(f"dpkg-deb -f {deb}: {proc.stderr.strip()}")
        lines = proc.stdout.rstrip("\n").split("\n")
        out = [lines[0], "Status: install ok installed", *lines[1:]]
        stanzas.append("\n".join(out) + "\n")
        fields = dict(l.split(": ", 1) for l in lines if ": " in l and not l.startswith(" "))
        name = fields.get("Package", "")
        if fields.get("Multi-Arch") == "same":
            name += f":{fields.get('Architecture', 'amd64')}"
        listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True)
        paths = []
        for entry in listing.stdout.splitlines():
            path = entry.split(None, 5)[-1].split(" -> ")[0]
            path = path.removeprefix(".").rstrip("/") or "/."
            paths.append(path)
        (info / f"{name}.list").write_text("\n".join(paths) + "\n")
    return "\n".join(stanzas).encode()


def sysroot(cache: Path, log) -> Path:
    """The cpio holding the systemd root under `sysroot/` (built once per package set)."""
    apt = _apt(cache)
    lists = cache / "apt-systemd" / "state" / "lists"
    if not any(lists.glob("*Packages*")):
        log("apt-get update for the systemd guest (private apt state)")
        apt.update()
    wanted = resolve(apt)
    key = hashlib.sha256("\n".join([FORMAT, *wanted, *MASKED,
                                    Path(__file__).read_text()]).encode()).hexdigest()[:16]
    out = cache / "images" / f"sysroot-{key}.cpio"
    if out.exists():
        return out
    debs_dir = cache / "debs-systemd"
    log(f"systemd guest: {len(wanted)} packages ({', '.join(w for w in wanted if w.startswith(('systemd=', 'udev=', 'dpkg=')))})")
    debs = apt.download(wanted, debs_dir)
    root = cache / f"sysroot-{key}"
    if root.exists():
        shutil.rmtree(root)
    # merged /usr, as a bookworm install has it: the packages' /bin, /lib, /sbin land in /usr
    (root / "usr").mkdir(parents=True)
    for d in ["bin", "sbin", "lib", "lib64"]:
        (root / "usr" / d).mkdir()
    stage = cache / f"sysroot-stage-{key}"
    for deb in debs:
        if stage.exists():
            shutil.rmtree(stage)
        proc = subprocess.run(["dpkg", "-x", str(deb), str(stage)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SetupError(f"dpkg -x {deb}: {proc.stderr.strip()}")
        for top in stage.iterdir():
            dest = root / "usr" / top.name if top.name in ("bin", "sbin", "lib", "lib64") \
                else root / top.name
            _merge(top, dest)
    shutil.rmtree(stage, ignore_errors=True)
    for d in DROPPED:
        shutil.rmtree(root / d, ignore_errors=True)
    for d in ["bin", "sbin", "lib", "lib64"]:
        (root / d).symlink_to(f"usr/{d}")
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "machine-id").write_text("8d2c8d3b0e8f4a4c9d1b2c3d4e5f6a7b\n")
    (etc / "hostname").write_text("vmtest\n")
    (etc / "fstab").write_text("")
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                "user:x:1000:1000:user:/home/user:/bin/sh\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nuser:x:1000:\nkvm:x:106:\nnogroup:x:65534:\n")
    (etc / "shadow").write_text("root:*:19000::::::\nuser:*:19000::::::\n")
    system = etc / "systemd" / "system"
    system.mkdir(parents=True, exist_ok=True)
    for unit in MASKED:
        link = system / unit
        if not link.exists():
            link.symlink_to("/dev/null")
    dpkg = root / "var" / "lib" / "dpkg"
    for d in ["info", "updates", "triggers", "alternatives"]:
        (dpkg / d).mkdir(parents=True, exist_ok=True)
    (dpkg / "status").write_bytes(_dpkg_db(debs, dpkg / "info"))
    (dpkg / "available").write_text("")
    for d in ["root", "home/user", "tmp", "var/log", "var/tmp", "run", "proc", "sys", "dev"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        cpio = CpioWriter(f)
        _write_tree(cpio, root, "sysroot")
        cpio.close()
    tmp.rename(out)
    shutil.rmtree(root)
    log(f"systemd guest root: {out.name} ({out.stat().st_size >> 20} MiB)")
    return out


def _merge(src: Path, dest: Path) -> None:
    """Move `src` into `dest`, merging directories (a later package adds to an earlier one)."""
    if src.is_dir() and not src.is_symlink():
        dest.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            _merge(child, dest / child.name)
        return
    if dest.is_symlink() or dest.exists():
        if dest.is_dir() and not dest.is_symlink():
            return
        dest.unlink()
    os.rename(src, dest)


def _write_tree(cpio: CpioWriter, root: Path, prefix: str) -> None:
    cpio.directory(prefix)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            rel = f"{prefix}/{rel_dir / name}" if str(rel_dir) != "." else f"{prefix}/{name}"
            st = path.lstat()
            if path.is_symlink():
                cpio.symlink(rel, os.readlink(path))
            elif path.is_dir():
                cpio.directory(rel, st.st_mode & 0o7777)
            elif path.is_file():
                cpio.file(rel, path.read_bytes(), st.st_mode & 0o7777)
        # os.walk does not descend into symlinked directories: nothing to add for them


def build_deb(repo: Path, log) -> Path:
    """`cargo deb` (cargo-deb from $CARGO_DEB, PATH, or ./test's tools cache): the package the
    guest installs."""
    tool = os.environ.get("CARGO_DEB") or shutil.which("cargo-deb")
    if not tool or not Path(tool).exists():
        base = Path("/var/cache/vfioctl-tools") if os.geteuid() == 0 else \
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vfioctl-tools"
        found = sorted(base.glob("cargo-deb-*/bin/cargo-deb"))
        if not found:
            raise SetupError("cargo-deb is missing: run ./test (it installs it) or "
                             "`cargo install cargo-deb`")
        tool = str(found[-1])
    log(f"{tool} --locked (release build of the package)")
    proc = subprocess.run([tool, "--locked"], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"cargo deb failed:\n{proc.stderr[-3000:]}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    if not path.is_absolute():
        path = repo / path
    if not path.exists():
        raise SetupError(f"cargo deb printed {path}, which does not exist")
    return path
