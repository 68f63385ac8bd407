# Hot-plug cues reach QEMU over QMP: a NIC added to the empty root port gets its own IOMMU group and driver, then leaves.
# vmtest: layout=default

check udev-started start_udev
# what a udev monitor (the `udev` crate's, later) receives: events processed by systemd-udevd
udevadm monitor --udev --subsystem-match=pci --subsystem-match=vfio >/tmp/udev-events 2>&1 &
monitor=$!
usleep 300000
check cue-device-add cue device_add '{"driver":"e1000e","id":"hp0","bus":"rphp"}'
check device-appears wait_for "$(pci 0000:03:00.0)/iommu_group" 5
g=$(group_of 0000:03:00.0)
expect_eq own-group 0000:03:00.0 "$(group_members "$g")"
wait_for "$(pci 0000:03:00.0)/driver" 5
expect_eq host-driver-bound e1000e "$(linkname "$(pci 0000:03:00.0)/driver")"
# let e1000e finish bringing the new function up before pulling it (QEMU 7.2 under TCG once
# segfaulted on a device_del 5 ms after the bind)
usleep 500000
check cue-device-del cue device_del '{"id":"hp0"}'
check device-gone wait_gone "$(pci 0000:03:00.0)" 5
check group-gone wait_gone "/sys/kernel/iommu_groups/$g" 5
usleep 300000
kill "$monitor"
grep -q 'add .*/0000:03:00.0 (pci)' /tmp/udev-events && pass udev-add-event \
    || fail udev-add-event "$(oneline "$(cat /tmp/udev-events)")"
grep -q 'remove .*/0000:03:00.0 (pci)' /tmp/udev-events && pass udev-remove-event \
    || fail udev-remove-event "$(oneline "$(cat /tmp/udev-events)")"
check_fails cue-error-reported "Bus 'nosuchbus' not found|not found" cue device_add '{"driver":"e1000e","id":"hp1","bus":"nosuchbus"}'
