# vfioctl reconcile binds what the config claims (the NVMe alone, the multifunction edu/pci-testdev pair), gives the nodes to their user, the kernel reports the groups viable, and a re-run is a no-op with zero sysfs writes.
# vmtest: layout=default

nvme=0000:01:00.0
edu=0000:00:05.0
tdev=0000:00:05.1
cat >/tmp/vfio.toml <<TOML
version = 1

[[device]]
name = "disk"
address = "$nvme"

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]

[[user]]
name = 1000
devices = ["disk", "edu"]
TOML

first=$(vfioctl -v reconcile -c /tmp/vfio.toml 2>&1)
rc=$?
echo "$first" | sed 's/^/vmtest: first: /'
expect_eq reconcile-applies 0 "$rc"
expect_eq nvme-on-vfio-pci vfio-pci "$(linkname "$(pci $nvme)/driver")"
expect_eq nvme-override-kept vfio-pci "$(sysattr "$(pci $nvme)/driver_override")"
expect_eq edu-on-vfio-pci vfio-pci "$(linkname "$(pci $edu)/driver")"
expect_eq companion-on-vfio-pci vfio-pci "$(linkname "$(pci $tdev)/driver")"
g=$(group_of $nvme)
expect_eq nvme-node-given-to-user "crw------- 1000" "$(stat -c '%A %u' /dev/vfio/$g)"
g5=$(group_of $edu)
expect_eq edu-node-given-to-user "crw------- 1000" "$(stat -c '%A %u' /dev/vfio/$g5)"
# Success is the kernel's word: VFIO_GROUP_GET_STATUS on each group vfioctl bound.
for n in $g $g5; do
    case "$first" in *"group $n: viable (kernel)"*) pass "group-$n-viable-per-kernel" ;; *) fail "group-$n-viable-per-kernel" "$(oneline "$first")" ;; esac
done
check journal-records-original-driver grep -q '"nvme"' /var/lib/vfioctl/journal.json
check no-inflight-record-left test ! -e /run/vfioctl/inflight.json

# The re-run: nothing to do. Every change vfioctl makes is journaled first and logged as one
# action line, so no action line and an untouched journal mean no sysfs write.
before=$(stat -c '%i %Y' /var/lib/vfioctl/journal.json)
out=$(vfioctl -v reconcile -c /tmp/vfio.toml 2>&1)
echo "$out" | sed 's/^/vmtest: rerun: /'
case "$out" in *"nothing to do"*) pass rerun-nothing-to-do ;; *) fail rerun-nothing-to-do "$(oneline "$out")" ;; esac
expect_eq rerun-zero-actions 0 "$(printf '%s\n' "$out" | grep -c 'action=')"
expect_eq rerun-journal-untouched "$before" "$(stat -c '%i %Y' /var/lib/vfioctl/journal.json)"
