"""A writer for the `newc` cpio format the kernel unpacks into its initramfs.

Entries are written in the order given; the kernel unpacks concatenated archives one after the
other, so a later archive's file replaces an earlier one's.
"""

from __future__ import annotations

import stat
from pathlib import PurePosixPath


class CpioWriter:
    def __init__(self, out):
        self.out = out
        self.ino = 1
        self.dirs: set[str] = set()

    def _header(self, name: str, mode: int, size: int, rdev: tuple[int, int] = (0, 0),
                nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08x" % f for f in fields))
        self.out.write(encoded)
        self._pad(110 + len(encoded))

    def _pad(self, n: int) -> None:
        self.out.write(b"\0" * ((4 - n % 4) % 4))

    def _parents(self, name: str) -> None:
        for parent in reversed(PurePosixPath(name).parents):
            p = str(parent)
            if p in (".", "/", "") or p in self.dirs:
                continue
            self.directory(p)

    def directory(self, name: str, mode: int = 0o755) -> None:
        name = name.lstrip("/")
        if name in self.dirs:
            return
        self._parents(name)
        self.dirs.add(name)
        self._header(name, stat.S_IFDIR | mode, 0, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.lstrip("/")
        self._parents(name)
        self._header(name, stat.S_IFREG | mode, len(data))
        self.out.write(data)
        self._pad(len(data))

    def symlink(self, name: str, target: str) -> None:
        name = name.lstrip("/")
        self._parents(name)
        data = target.encode()
        self._header(name, stat.S_IFLNK | 0o777, len(data))
        self.out.write(data)
        self._pad(len(data))

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = name.lstrip("/")
        self._parents(name)
        self._header(name, stat.S_IFCHR | mode, 0, rdev=(major, minor))

    def close(self) -> None:
        self.ino = 0
        self._header("TRAILER!!!", 0, 0, nlink=1)
        pos = self.out.tell()
        self.out.write(b"\0" * ((512 - pos % 512) % 512))
