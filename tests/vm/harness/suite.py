"""The suite: check the host has what it needs, build vfioctl and the guest image, boot each
scenario once (serially), run its host-side judge, and print `vmtest: N passed, N failed`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import (boot, image, kernel_build, layouts, packages, podman, qemu_guest, scenario,
               sriov, systemd_guest)
from .errors import SetupError

VM_DIR = Path(__file__).resolve().parent.parent
REPO = VM_DIR.parent.parent
INSTALL_DEPS = REPO / "tests" / "install-deps"


def log(msg: str) -> None:
    print(f"vmtest: {msg}", flush=True)


def ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def ensure_host_tools() -> None:
    """QEMU and qemu-img must be there. Under CI they are installed when missing; elsewhere
    the error says what to install."""
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "dpkg", "apt-get")
               if shutil.which(t) is None]
    if not missing:
        return
    if ci() and shutil.which("apt-get") and os.geteuid() == 0:
        log(f"running {INSTALL_DEPS} (missing: {', '.join(missing)})")
        subprocess.run([str(INSTALL_DEPS)], check=False)
        missing = [t for t in ("qemu-system-x86_64", "qemu-img") if shutil.which(t) is None]
        if not missing:
            return
    raise SetupError(f"missing {', '.join(missing)}: sudo {INSTALL_DEPS}")


def choose_accel() -> str:
    """KVM only when it really works: a usable /dev/kvm, vmx/svm in the CPU flags, and not the
    kvm_pvm module (which cannot run a stock kernel). Otherwise TCG."""
    forced = os.environ.get("VFIOCTL_VM_ACCEL")
    if forced:
        return forced
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "tcg"
    if (os.access("/dev/kvm", os.R_OK | os.W_OK) and (" vmx" in flags or " svm" in flags)
            and not Path("/sys/module/kvm_pvm").exists()):
        return "kvm"
    return "tcg"


def build_vfioctl() -> Path:
    given = os.environ.get("VFIOCTL_BIN")
    if given:
        log(f"using VFIOCTL_BIN={given}")
        return Path(given).resolve()
    profile = os.environ.get("VFIOCTL_VM_PROFILE", "dev")
    cmd = ["cargo", "build", "--quiet", "--bin", "vfioctl", "--profile", profile]
    log(" ".join(cmd))
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        raise SetupError("cargo build failed")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / ("debug" if profile == "dev" else profile) / "vfioctl"


def build_bench() -> Path:
    """benches/domain.rs (`vfioctl-bench-domain` in the guest): the domain benchmarks, which
    need a real VFIO device. Bench binaries are named by hash, so cargo says where it is."""
    given = os.environ.get("VFIOCTL_BENCH_BIN")
    if given:
        return Path(given).resolve()
    profile = os.environ.get("VFIOCTL_VM_PROFILE", "dev")
    cmd = ["cargo", "build", "--quiet", "--bench", "domain", "--profile", profile,
           "--message-format=json"]
    log(" ".join(cmd))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"cargo build --bench domain failed:\n{proc.stderr}")
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg.get("target", {}).get("name") == "domain":
            return Path(msg["executable"])
    raise SetupError("cargo build --bench domain named no executable")


def build_client(cache: Path) -> Path:
    """The suite's own small VFIO client (std-only Rust, compiled with plain rustc), cached by
    the hash of its source."""
    src = VM_DIR / "client" / "vfio_edu_client.rs"
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = cache / "client" / f"vfio-edu-client-{key}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    rustc = shutil.which("rustc")
    if rustc is None:
        raise SetupError("rustc is missing (it builds tests/vm/client/vfio_edu_client.rs)")
    log(f"rustc {src.relative_to(REPO)}")
    proc = subprocess.run([rustc, "-O", "--edition", "2021", "-o", str(out), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"rustc {src} failed:\n{proc.stderr}")
    return out


def ensure_apt_lists(apt: packages.Apt) -> None:
    """A fresh machine has no package lists: `apt-cache depends` would find nothing."""
    if apt.has_candidate("busybox-static"):
        return
    log("apt-get update (no package lists yet)")
    apt.update()


# QEMU exit codes that mean QEMU itself crashed (SIGSEGV, SIGABRT, SIGBUS), not the guest.
QEMU_CRASH_CODES = (-11, -6, -7)


@dataclass
class Outcome:
    name: str
    ok: bool
    seconds: float
    init_seconds: float | None
    reasons: list[str]


def judge(sc: scenario.Scenario, res: boot.BootResult, artifacts: Path,
          refresh_fixture: bool) -> list[str]:
    """Why the scenario failed; empty when it passed."""
    reasons = []
    if res.problem:
        reasons.append(res.problem)
    checks = list(res.checks)
    if sc.judge is not None and res.problem is None:
        env = dict(os.environ, VMTEST_REPO=str(REPO),
                   VMTEST_REFRESH_FIXTURE="1" if refresh_fixture else "0")
        proc = subprocess.run([sys.executable, str(sc.judge), str(artifacts)], env=env,
                              capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            m = boot.CHECK_RE.match(line)
            if m:
                c = boot.Check(m.group(1), m.group(2) == "PASS", m.group(3) or "")
                checks.append(c)
                print(f"    host  {'PASS' if c.ok else 'FAIL'} {c.name} {c.detail}".rstrip())
            else:
                print(f"    host  {line}")
        if proc.returncode != 0:
            reasons.append(f"host judge exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    failed = [c for c in checks if not c.ok]
    for c in failed:
        reasons.append(f"check {c.name} failed: {c.detail}")
    if not checks:
        reasons.append("no check ran")
    if res.problem is None and res.verdict != "PASS":
        reasons.append(f"guest verdict {res.verdict} {res.verdict_detail}".strip())
    return reasons



def default_cache() -> Path:
    """Downloads and built images live outside the checkout, so a fresh clone (CI) reuses them.
    Every entry in it is keyed by content (package version, config hash), never by checkout."""
    if os.geteuid() == 0:
        return Path("/var/cache/vfioctl-vm")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vfioctl-vm"

def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tests/vm/run", description=__doc__)
    ap.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--refresh-fixture", action="store_true",
                    help="let capture-sysfs rewrite tests/fixtures/hosts/vm-q35")
    args = ap.parse_args(argv)
    scenarios_dir = VM_DIR / "scenarios"
    try:
        chosen = scenario.discover(scenarios_dir, args.scenarios)
    except SetupError as e:
        print(f"vmtest: {e}", file=sys.stderr)
        return 2
    if args.list:
        for sc in chosen:
            print(f"{sc.name:24} layout={sc.layout:8} {sc.summary}")
        return 0

    cache = Path(os.environ.get("VFIOCTL_VM_CACHE") or default_cache()).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = Path(os.environ.get("VFIOCTL_VM_LOGS", VM_DIR / ".logs")).resolve() / stamp
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        ensure_host_tools()
        apt = packages.Apt()
        ensure_apt_lists(apt)
        img = image.ImageBuilder(cache, log, ci()).build(apt)
        vfioctl = build_vfioctl()
        bench = build_bench()
        client = build_client(cache)
        bundles = {}
        if any("podman" in sc.bundles for sc in chosen):
            bundles["podman"] = podman.build(cache, apt, log)
        if any("qemu10" in sc.bundles for sc in chosen):
            bundles["qemu10"] = qemu_guest.build(cache, log)
        qemus = {"default": (Path(shutil.which("qemu-system-x86_64") or ""), [])}
        if any(sc.layout == "sriov" for sc in chosen):
            qemus["sriov"] = sriov.backports_qemu(cache, log)
        # the iommufd kernel, built once per config (cached), for the scenarios that ask for it
        kernels = {"debian": img.kernel.image}
        releases = [img.kernel.release]
        if any(sc.kernel == "iommufd" for sc in chosen):
            vmlinux, release = kernel_build.iommufd_kernel(cache, log)
            kernels["iommufd"] = vmlinux
            releases.append(f"{release} (iommufd build)")
            log(f"iommufd kernel: {release} ({vmlinux})")
        sysroot = deb = None
        if any(sc.guest == "systemd" for sc in chosen):
            sysroot = systemd_guest.sysroot(cache, log)
            deb = systemd_guest.build_deb(REPO, log)
    except SetupError as e:
        print(f"vmtest: setup failed: {e}", file=sys.stderr)
        print("vmtest: 0 passed, 1 failed")
        return 1
    accel = choose_accel()
    setup_s = time.monotonic() - t0
    version = subprocess.run([str(qemus["default"][0]), "--version"], capture_output=True,
                             text=True).stdout.split("\n")[0]
    log(f"setup {setup_s:.1f} s; {version}; accel {accel}; kernel {img.kernel.package} "
        f"({'vmlinux PVH' if img.kernel.pvh else 'bzImage'}); logs in {logs}")

    # debug info makes the binary ~10x bigger; the guest needs none of it
    guest_vfioctl = logs / "vfioctl"
    shutil.copy2(vfioctl, guest_vfioctl)
    guest_bench = logs / "vfioctl-bench-domain"
    shutil.copy2(bench, guest_bench)
    if shutil.which("strip"):
        for binary in (guest_vfioctl, guest_bench):
            subprocess.run(["strip", "--strip-debug", str(binary)], check=False)

    outcomes: list[Outcome] = []
    for i, sc in enumerate(chosen):
        # a scenario named more than once (benchmarks) gets one log directory per run
        run_dir = logs / (sc.name if not (logs / sc.name).exists()
                          else f"{sc.name}.{i + 1}")
        run_dir.mkdir()
        artifacts = run_dir / "files"
        artifacts.mkdir()
        overlay = run_dir / "overlay.cpio"
        files: dict[str, Path | bytes] = {
            "init": VM_DIR / "guest" / "init",
            "vmtest/lib.sh": VM_DIR / "guest" / "lib.sh",
            "vmtest/scenario.sh": sc.script,
            "vmtest/name": sc.name.encode() + b"\n",
            # the iommufd kernel has its drivers built in: nothing to load
            "vmtest/modules": (" ".join(sc.modules if sc.modules is not None
                                        else [] if sc.kernel == "iommufd"
                                        else image.GUEST_MODULES) + "\n").encode(),
        }
        for rules in sorted((REPO / "contrib" / "udev").glob("*.rules")):
            files[f"vmtest/contrib/{rules.name}"] = rules
        for ex in sorted((REPO / "examples").glob("*")) if (REPO / "examples").is_dir() else []:
            if ex.is_file():
                files[f"vmtest/examples/{ex.name}"] = ex
        binaries = {"usr/bin/vfioctl": guest_vfioctl, "usr/bin/vfio-edu-client": client,
                    "usr/bin/vfioctl-bench-domain": guest_bench}
        parts = [img.base, *(bundles[b] for b in sc.bundles), overlay]
        executable = {"init"}
        if sc.guest == "systemd":
            files["init"] = VM_DIR / "guest" / "init-systemd"
            files["vmtest/run-systemd"] = VM_DIR / "guest" / "run-systemd"
            files["vmtest/lib-systemd.sh"] = VM_DIR / "guest" / "lib-systemd.sh"
            files["vmtest/vfioctl.deb"] = deb
            executable.add("vmtest/run-systemd")
            # vfioctl comes from the package; the root sits between base and overlay
            binaries.pop("usr/bin/vfioctl")
            parts = [img.base, *(bundles[b] for b in sc.bundles), sysroot, overlay]
        image.write_overlay(overlay, files, binaries, executable)
        initrd = run_dir / "initrd.cpio"
        with open(initrd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        overlay.unlink()
        qemu, firmware = qemus[sc.layout]
        qmp = run_dir / "qmp.sock"
        cmd = layouts.qemu_command(qemu, firmware, accel, kernels[sc.kernel], initrd, qmp,
                                   sc.layout, sc.memory, sc.smp, sc.qemu_args)
        print(f"vmtest: --- {sc.name} ({sc.layout}, {sc.kernel} kernel) {sc.summary}",
              flush=True)
        res = boot.boot(cmd, qmp, run_dir / "serial.log", artifacts, sc.timeout)
        if res.verdict is None and res.exit_code in QEMU_CRASH_CODES:
            # QEMU itself crashed (seen: QEMU 7.2 under TCG segfaulting on a device_del right
            # after a hot-plugged e1000e came up). That is no verdict on vfioctl: boot once
            # more, keeping the crashed boot's log beside the new one.
            crashed = run_dir / "serial-qemu-crash.log"
            (run_dir / "serial.log").rename(crashed)
            print(f"vmtest: qemu crashed (signal {-res.exit_code}) in {sc.name}; "
                  f"booting once more (log: {crashed})", flush=True)
            res = boot.boot(cmd, qmp, run_dir / "serial.log", artifacts, sc.timeout)
        if res.problem == "kernel panic" and res.init_seconds is None and not res.checks:
            # A panic before /init ran (seen under TCG on a loaded host: "timer doesn't work
            # through Interrupt-remapped IO-APIC" at 0.01-0.04 s) is the emulated machine's
            # timing, before any of vfioctl's code: boot once more, keeping the log. A panic
            # after /init is a verdict and is never retried.
            early = run_dir / "serial-early-panic.log"
            (run_dir / "serial.log").rename(early)
            print(f"vmtest: kernel panicked before /init in {sc.name}; booting once more "
                  f"(log: {early})", flush=True)
            res = boot.boot(cmd, qmp, run_dir / "serial.log", artifacts, sc.timeout)
        initrd.unlink()
        for c in res.checks:
            print(f"    guest {'PASS' if c.ok else 'FAIL'} {c.name} {c.detail}".rstrip())
        reasons = judge(sc, res, artifacts, args.refresh_fixture)
        ok = not reasons
        init = f", /init at {res.init_seconds:.1f} s" if res.init_seconds is not None else ""
        print(f"vmtest: {'ok  ' if ok else 'FAIL'} {sc.name} in {res.seconds:.1f} s{init}",
              flush=True)
        if not ok:
            for r in reasons:
                print(f"    reason: {r}")
            print(f"    serial log: {run_dir / 'serial.log'}")
        outcomes.append(Outcome(sc.name, ok, res.seconds, res.init_seconds, reasons))

    passed = sum(o.ok for o in outcomes)
    failed = len(outcomes) - passed
    total = time.monotonic() - t0
    log(f"total {total:.1f} s (setup {setup_s:.1f} s); kernels {', '.join(releases)}")
    print(f"vmtest: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1
