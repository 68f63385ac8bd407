# The SR-IOV layout boots (QEMU 10 from bookworm-backports): the igb PF behind its root port offers 7 VFs, and vfioctl status --json reports its SR-IOV capability.
# vmtest: layout=sriov

pf=$(grep -l '^0x10c9$' /sys/bus/pci/devices/*/device 2>/dev/null | head -n 1)
pf=${pf%/device}; pf=${pf##*/}
[ -n "$pf" ] && pass igb-pf-present "$pf" || fail igb-pf-present "no 8086:10c9 function"
expect_eq igb-driver igb "$(linkname "$(pci "$pf")/driver")"
expect_eq sriov-totalvfs 7 "$(sysattr "$(pci "$pf")/sriov_totalvfs")"
expect_eq sriov-numvfs 0 "$(sysattr "$(pci "$pf")/sriov_numvfs")"
expect_eq pf-own-group "$pf" "$(group_members "$(group_of "$pf")")"
vfioctl status --json >/tmp/status.json
# `"total_vfs": 7` inside the PF's sriov object (pretty or compact JSON)
tr -d ' \n' </tmp/status.json | grep -q '"address":"'"$pf"'"[^}]*"sriov":{[^}]*"total_vfs":7' \
    && pass vfioctl-sees-totalvfs || fail vfioctl-sees-totalvfs "$(tr -d ' \n' </tmp/status.json | grep -o '"sriov":{[^}]*}' | head -n 2)"
