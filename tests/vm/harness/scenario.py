"""A scenario: `scenarios/NAME.sh`, run by the guest's /init, plus an optional host-side judge
`scenarios/NAME.host.py` that checks what the guest exported.

Header comments declare what the scenario needs, one `# vmtest: key=value` per line:
  layout=default|sriov      the QEMU device layout (default: default)
  memory=1G                 guest memory
  smp=2                     guest CPUs
  timeout=60                seconds before the boot is killed
  qemu=ARGS                 extra QEMU arguments (may repeat)
  kernel=debian|iommufd     the guest kernel: Debian's packaged one (default), or the suite's
                            own build with iommufd and VFIO device cdevs (harness/kernel_build.py;
                            its drivers are built in, so it loads no modules)
  guest=busybox|systemd     PID 1: the busybox /init (default), or Debian's systemd with
                            vfioctl installed from its .deb (harness/systemd_guest.py)
  bundle=NAMES              extra archives appended to the base image, space-separated
                            (`podman`: podman, crun, conmon; see podman.py; `qemu10`:
                            bookworm-backports' QEMU 10 with its libraries and firmware,
                            see qemu_guest.py)
  modules=NAMES             modules /init loads before the scenario, space-separated, or
                            `none` (default: every guest module; with `none` udev loads
                            drivers itself from modules.alias, as at a real boot)
  # and a first comment line that says what it proves.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SetupError

BUNDLES = {"podman", "qemu10"}
KEYS = {"layout", "memory", "smp", "timeout", "qemu", "modules", "guest", "bundle", "kernel"}
KERNELS = ("debian", "iommufd")


@dataclass
class Scenario:
    name: str
    script: Path
    judge: Path | None
    summary: str = ""
    layout: str = "default"
    memory: str = "1G"
    smp: int = 2
    timeout: float = 60.0
    qemu_args: list[str] = field(default_factory=list)
    modules: list[str] | None = None
    kernel: str = "debian"
    guest: str = "busybox"
    bundles: list[str] = field(default_factory=list)


def load(script: Path) -> Scenario:
    judge = script.with_suffix(".host.py")
    sc = Scenario(script.stem, script, judge if judge.exists() else None)
    for line in script.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("vmtest:"):
            key, _, value = text[len("vmtest:"):].strip().partition("=")
            key = key.strip()
            if key not in KEYS:
                raise SetupError(f"{script}: unknown header key `{key}` (known: {sorted(KEYS)})")
            if key == "layout":
                sc.layout = value.strip()
            elif key == "memory":
                sc.memory = value.strip()
            elif key == "smp":
                sc.smp = int(value)
            elif key == "timeout":
                sc.timeout = float(value)
            elif key == "qemu":
                sc.qemu_args += shlex.split(value)
            elif key == "kernel":
                sc.kernel = value.strip()
                if sc.kernel not in KERNELS:
                    raise SetupError(f"{script}: kernel={sc.kernel}: expected one of {KERNELS}")
            elif key == "guest":
                sc.guest = value.strip()
                if sc.guest not in ("busybox", "systemd"):
                    raise SetupError(f"{script}: guest={sc.guest}: busybox or systemd")
            elif key == "bundle":
                unknown = set(value.split()) - BUNDLES
                if unknown:
                    raise SetupError(f"{script}: unknown bundle {sorted(unknown)} "
                                     f"(known: {sorted(BUNDLES)})")
                sc.bundles += value.split()
            elif key == "modules":
                names = value.split()
                sc.modules = [] if names == ["none"] else names
        elif text and not text.startswith("!") and not sc.summary:
            sc.summary = text
    return sc


def discover(directory: Path, names: list[str]) -> list[Scenario]:
    available = {p.stem: p for p in sorted(directory.glob("*.sh"))}
    if not names:
        return [load(p) for p in available.values()]
    out = []
    for n in names:
        n = Path(n).name.removesuffix(".sh")
        if n not in available:
            raise SetupError(f"no scenario `{n}`; there are: {', '.join(available)}")
        out.append(load(available[n]))
    return out
