"""The QEMU machines scenarios boot: q35 with an emulated Intel IOMMU and a device layout that
holds the cases VFIO cares about (see docs/vm-suite.md for the groups the kernel makes of it)."""

from __future__ import annotations

from pathlib import Path

KERNEL_CMDLINE = "console=ttyS0 intel_iommu=on iommu=pt panic=-1 loglevel=4"

# intel-iommu must come before every PCI device.
DEFAULT_DEVICES = [
    "-device", "intel-iommu,intremap=on,caching-mode=on",
    "-device", "e1000e,bus=pcie.0,addr=0x1",
    "-device", "virtio-net-pci,bus=pcie.0,addr=0x2,disable-legacy=on",
    "-device", "pcie-root-port,id=rpnvme,bus=pcie.0,chassis=1,addr=0x3",
    "-blockdev", "driver=null-co,node-name=nvmeblk,size=16777216",
    "-device", "nvme,drive=nvmeblk,serial=vm0001,bus=rpnvme",
    "-device", "pcie-pci-bridge,id=br0,bus=pcie.0,addr=0x4",
    "-device", "e1000,bus=br0,addr=0x1",
    "-device", "virtio-net-pci,bus=br0,addr=0x2",
    "-device", "edu,bus=pcie.0,addr=0x5.0,multifunction=on",
    "-device", "pci-testdev,bus=pcie.0,addr=0x5.1",
    "-device", "pcie-root-port,id=rphp,bus=pcie.0,chassis=2,addr=0x6",
]

# The SR-IOV layout: the default one plus an igb PF (QEMU >= 8.0) behind its own root port.
SRIOV_DEVICES = DEFAULT_DEVICES + [
    "-device", "pcie-root-port,id=rpigb,bus=pcie.0,chassis=3,addr=0x7",
    "-device", "igb,bus=rpigb",
]

LAYOUTS = {"default": DEFAULT_DEVICES, "sriov": SRIOV_DEVICES}


def qemu_command(qemu: Path, firmware: list[Path], accel: str, kernel: Path, initrd: Path,
                 qmp: Path, layout: str, memory: str, smp: int, extra: list[str],
                 cmdline_extra: str = "") -> list[str]:
    cmd = [str(qemu)]
    for fw in firmware:
        cmd += ["-L", str(fw)]
    machine = "q35"
    if accel == "kvm":
        machine += ",kernel-irqchip=split"
    cmd += [
        "-machine", machine, "-accel", accel, "-m", memory, "-smp", str(smp),
        "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
        "-qmp", f"unix:{qmp},server=on,wait=off",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", f"{KERNEL_CMDLINE} {cmdline_extra}".strip(),
    ]
    return cmd + LAYOUTS[layout] + extra
