"""Host judge of capture-sysfs: rebuild the guest's tree from its manifest and compare it with
the committed fixture tests/fixtures/hosts/vm-q35 (VMTEST_REFRESH_FIXTURE=1 rewrites it)."""

import gzip
import os
import re
import shutil
import sys
from pathlib import Path

FIXTURE = Path(os.environ["VMTEST_REPO"]) / "tests" / "fixtures" / "hosts" / "vm-q35"
KEEP = {"expected.json", "README.md"}  # maintained beside the captured tree


def check(name, ok, detail=""):
    print(f"CHECK {name} {'PASS' if ok else 'FAIL'} {detail}".rstrip())
    return ok


def parse(manifest: bytes):
    """{relative path: ('L', target) | ('F', text)}; directories are implied."""
    entries = {}
    lines = manifest.decode("utf-8", "replace").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        if kind == "D":
            continue
        if kind == "L":
            path, _, target = rest.partition(" ")
            entries[path.lstrip("/")] = ("L", target)
        elif kind == "W":
            entries[rest.lstrip("/")] = ("F", "")
        elif kind == "F":
            content = []
            while i < len(lines) and lines[i] != ".":
                content.append(lines[i][1:] + "\n")
                i += 1
            i += 1
            entries[rest.lstrip("/")] = ("F", "".join(content))
        else:
            raise ValueError(f"manifest line {i}: unknown kind {kind!r}")
    return entries


def normalise(entries) -> None:
    """rootfs and devtmpfs get a size from the guest's free memory, which changes with the
    size of the freshly built vfioctl: write it as 0 so that the fixture stays put."""
    for rel in ("proc/self/mountinfo", "proc/self/mounts"):
        kind, text = entries.get(rel, ("F", ""))
        lines = [re.sub(r"size=\d+k,nr_inodes=\d+", "size=0k,nr_inodes=0", line)
                 if " rootfs " in line or " devtmpfs " in line else line
                 for line in text.split("\n")]
        entries[rel] = (kind, "\n".join(lines))


def read_tree(root: Path):
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel in KEEP:
                continue
            if p.is_symlink():
                entries[rel] = ("L", os.readlink(p))
            elif p.is_file():
                entries[rel] = ("F", p.read_text(errors="replace"))
    return entries


def write_tree(root: Path, entries) -> None:
    if root.exists():
        for child in root.iterdir():
            if child.name in KEEP:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for rel, (kind, value) in sorted(entries.items()):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "L":
            os.symlink(value, p)
        else:
            p.write_text(value)


def main() -> int:
    artifacts = Path(sys.argv[1])
    manifest = artifacts / "vm-q35.manifest.gz"
    if not check("manifest-received", manifest.exists(), str(manifest)):
        return 0
    captured = parse(gzip.decompress(manifest.read_bytes()))
    normalise(captured)
    check("manifest-parsed", len(captured) > 100, f"{len(captured)} entries")
    if os.environ.get("VMTEST_REFRESH_FIXTURE") == "1":
        write_tree(FIXTURE, captured)
        print(f"rewrote {FIXTURE}; now run `UPDATE_EXPECT=1 cargo test --test discovery_hosts` "
              "and review tests/fixtures/hosts/vm-q35/expected.json")
    if not FIXTURE.is_dir():
        check("fixture-present", False,
              f"no {FIXTURE}: run `tests/vm/run --refresh-fixture capture-sysfs`")
        return 0
    committed = read_tree(FIXTURE)
    # A newer kernel ABI from the archive (the old one is dropped) is not by itself a
    # difference: compare with the release names swapped, and say so.
    guest_rel = captured.get("proc/sys/kernel/osrelease", ("F", ""))[1].strip()
    fixture_rel = committed.get("proc/sys/kernel/osrelease", ("F", ""))[1].strip()
    if guest_rel and fixture_rel and guest_rel != fixture_rel:
        print(f"note: the fixture is from {fixture_rel}, the guest runs {guest_rel}; "
              "comparing the rest (refresh the fixture when convenient)")
        for rel in ("proc/sys/kernel/osrelease",):
            committed.pop(rel, None)
            captured.pop(rel, None)
        for rel in [r for r in committed if r.endswith("/srcversion")]:
            committed.pop(rel)
            captured.pop(rel, None)
        committed = {r: (k, v.replace(fixture_rel, guest_rel)) for r, (k, v) in committed.items()}
    diffs = []
    for rel in sorted(set(captured) | set(committed)):
        a, b = captured.get(rel), committed.get(rel)
        if a == b:
            continue
        if a is None:
            diffs.append(f"only in the fixture: {rel}")
        elif b is None:
            diffs.append(f"only in the guest: {rel}")
        else:
            diffs.append(f"differs: {rel}: guest {a[1][:60]!r}, fixture {b[1][:60]!r}")
    for d in diffs[:40]:
        print(d)
    check("fixture-matches-kernel", not diffs,
          f"{len(diffs)} differences (first: {diffs[0]}); if the kernel changed on purpose, "
          "run `tests/vm/run --refresh-fixture capture-sysfs`" if diffs else
          f"{len(committed)} files and links identical")
    return 0


sys.exit(main())
