# At boot the udev rule claims a configured device before its module driver: with no driver module loaded yet, udev coldplug runs 70-vfioctl.rules (driver_override) before 80-drivers.rules loads e1000e, which then leaves the NIC alone; the rule's scoped reconcile binds it to vfio-pci and gives its node to the user, while unconfigured devices get their drivers as usual.
# vmtest: layout=default
# vmtest: modules=none
# vmtest: timeout=90

nic=0000:00:01.0
cat >/etc/vfio.toml <<TOML
version = 1

[[device]]
name = "nic"
address = "$nic"

[[user]]
name = 1000
devices = ["nic"]
TOML
mkdir -p /lib/udev/rules.d
cp /vmtest/contrib/70-vfioctl.rules /lib/udev/rules.d/

expect_eq no-driver-before-udev "" "$(linkname "$(pci $nic)/driver")"
check e1000e-not-loaded-yet sh -c '! [ -d /sys/module/e1000e ]'

udevadm monitor --kernel --property --subsystem-match=pci >/tmp/uevents 2>&1 &
monitor=$!
check udev-started start_udev
usleep 300000

check udev-loaded-e1000e test -d /sys/module/e1000e
expect_eq claimed-to-vfio-pci vfio-pci "$(linkname "$(pci $nic)/driver")"
expect_eq override-set vfio-pci "$(sysattr "$(pci $nic)/driver_override")"
g=$(group_of $nic)
expect_eq node-given-to-user 1000 "$(stat -c '%u' /dev/vfio/$g 2>&1)"
# e1000e never had it: no bind uevent naming e1000e for the NIC.
if awk '/^KERNEL\[/ { action = $2; dev = $3 } /^DRIVER=e1000e/ && action == "bind" && dev ~ /'$nic'$/ { found = 1 } END { exit !found }' /tmp/uevents; then
    fail e1000e-never-bound-it "$(grep -A8 "bind.*$nic" /tmp/uevents | oneline "$(cat)")"
else
    pass e1000e-never-bound-it
fi
check early-claim-recorded test -e /run/vfioctl/early-claims/$nic
check journal-records-the-take grep -q "$nic" /var/lib/vfioctl/journal.json
# Unconfigured devices are untouched by the rule: their modules load and bind as usual.
expect_eq nvme-got-its-driver nvme "$(linkname "$(pci 0000:01:00.0)/driver")"
expect_eq e1000-got-its-driver e1000 "$(linkname "$(pci 0000:02:01.0)/driver")"
expect_eq nvme-no-override "(null)" "$(sysattr "$(pci 0000:01:00.0)/driver_override")"
kill $monitor 2>/dev/null
# What udev runs, in udev's bare environment (no PATH), again: converged, nothing to do.
check rerun-in-udev-environment-is-a-no-op env -i /usr/bin/vfioctl reconcile --config /etc/vfio.toml --device $nic

