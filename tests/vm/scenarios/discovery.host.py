"""Host judge of the discovery scenario: `vfioctl status --json` against the kernel's own view
(sysfs and /dev/vfio as the guest recorded them), and the human `status` view's group blocks."""

import json
import re
import sys
from pathlib import Path

BRIDGE_GROUP = ["0000:00:04.0", "0000:02:01.0", "0000:02:02.0"]
MULTIFUNCTION = ["0000:00:05.0", "0000:00:05.1"]


def check(name, ok, detail=""):
    print(f"CHECK {name} {'PASS' if ok else 'FAIL'} {detail}".rstrip())


def kernel_view(text):
    devs, groups, nodes = {}, {}, {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "dev":
            _, addr, drv, override, group = parts
            devs[addr] = {
                "driver": None if drv == "-" else drv,
                "driver_override": None if override == "-" else override,
                "iommu_group": None if group == "-" else int(group),
            }
        elif parts[0] == "group":
            groups[int(parts[1])] = sorted(parts[2:])
        elif parts[0] == "node":
            nodes[int(parts[1])] = (int(parts[2]), int(parts[3]), int(parts[4], 8))
    return devs, groups, nodes


def text_groups(text):
    """{group id: [member addresses]} from the human view's `IOMMU group N` blocks."""
    groups, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^IOMMU group (\d+)\b", line)
        if m:
            current = int(m.group(1))
            groups[current] = []
            continue
        m = re.match(r"^\s+([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s", line)
        if m and current is not None:
            groups[current].append(m.group(1))
        elif not line.strip():
            current = None
    return {k: sorted(v) for k, v in groups.items()}


def judge(art: Path, rnd: str) -> None:
    paths = {k: art / f"{k}-{rnd}.{ext}" for k, ext in
             (("sysfs", "txt"), ("status", "json"))}
    text_path = art / f"status-{rnd}.txt"
    missing = [str(p.name) for p in [*paths.values(), text_path] if not p.exists()]
    if missing:
        check(f"{rnd}-exported", False, f"missing {', '.join(missing)}")
        return
    devs, groups, nodes = kernel_view(paths["sysfs"].read_text())
    try:
        snap = json.loads(paths["status"].read_text())
    except json.JSONDecodeError as e:
        check(f"{rnd}-json-parses", False, str(e))
        return
    by_addr = {d["address"]: d for d in snap.get("devices", [])}
    check(f"{rnd}-same-functions", sorted(by_addr) == sorted(devs),
          f"vfioctl {sorted(set(by_addr) ^ set(devs)) or len(devs)}")
    wrong = []
    for addr, k in sorted(devs.items()):
        d = by_addr.get(addr)
        if d is None:
            continue
        for field in ("driver", "driver_override", "iommu_group"):
            if d.get(field) != k[field]:
                wrong.append(f"{addr} {field}: vfioctl {d.get(field)!r}, kernel {k[field]!r}")
    check(f"{rnd}-functions-match-sysfs", not wrong,
          "; ".join(wrong[:6]) if wrong else f"{len(devs)} functions: driver, override, group")
    sgroups = {g["id"]: sorted(g["devices"]) for g in snap.get("groups", [])}
    diff = [f"group {g}: vfioctl {sgroups.get(g)}, kernel {groups.get(g)}"
            for g in sorted(set(sgroups) | set(groups)) if sgroups.get(g) != groups.get(g)]
    check(f"{rnd}-groups-match-sysfs", not diff,
          "; ".join(diff[:4]) if diff else f"{len(groups)} groups")
    bridge = [g for g, m in sgroups.items() if m == BRIDGE_GROUP]
    check(f"{rnd}-bridge-group-of-three", len(bridge) == 1,
          f"group {bridge[0]}" if bridge else f"no group is {BRIDGE_GROUP}")
    multi = [g for g, m in sgroups.items() if m == MULTIFUNCTION]
    check(f"{rnd}-multifunction-group", len(multi) == 1,
          f"group {multi[0]}" if multi else f"no group is {MULTIFUNCTION}")
    snodes = {}
    for g in snap.get("groups", []):
        node = g.get("node")
        if node:
            snodes[g["id"]] = (node.get("uid"), node.get("gid"), node.get("mode", 0) & 0o7777)
    check(f"{rnd}-nodes-match-dev", snodes == nodes, f"vfioctl {snodes}, kernel {nodes}")
    tgroups = text_groups(text_path.read_text())
    check(f"{rnd}-text-names-groups", tgroups == groups,
          "every group block lists its members" if tgroups == groups else
          f"text {tgroups}, kernel {groups}")
    tb = [g for g, m in tgroups.items() if m == BRIDGE_GROUP]
    tm = [g for g, m in tgroups.items() if m == MULTIFUNCTION]
    check(f"{rnd}-text-bridge-and-multifunction", len(tb) == 1 and len(tm) == 1,
          f"bridge group {tb}, multi-function group {tm}")


def main() -> int:
    art = Path(sys.argv[1])
    for rnd in ("boot", "bound"):
        judge(art, rnd)
    # the second round must show the state change, or it proves nothing new
    try:
        bound = {d["address"]: d for d in json.loads((art / "status-bound.json").read_text())["devices"]}
        edu = bound["0000:00:05.0"]
        check("bound-state-visible", edu["driver"] == "vfio-pci"
              and edu["driver_override"] == "vfio-pci", f"edu: {edu['driver']}, {edu['driver_override']}")
    except (OSError, KeyError, ValueError) as e:
        check("bound-state-visible", False, repr(e))
    return 0


sys.exit(main())
