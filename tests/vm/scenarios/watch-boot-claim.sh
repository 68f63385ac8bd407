# At boot the udev rule claims a configured device before its module driver: with no driver module loaded yet, udev coldplug runs 70-vfioctl.rules (driver_override) before 80-drivers.rules loads e1000e, which then leaves the NIC alone; the rule's scoped reconcile binds it to vfio-pci and gives its node to the user, while unconfigured devices get their drivers as usual. The early claim counts as taken: removed from the config, the NIC goes to the kernel's pick (e1000e, override cleared, record and journal entry forgotten). Claimed again by an `add` while e1000e has it, e1000e is its own driver, and `vfioctl rollback` puts it back there.
# vmtest: layout=default
# vmtest: modules=none
# vmtest: timeout=120

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

# The NIC never had a driver of its own (claimed before e1000e could probe it): removed from the
# config, it goes to whatever the kernel picks, with the override the claim replaced (unset).
printf 'version = 1\n' >/tmp/empty.toml
out=$(vfioctl -v reconcile -c /tmp/empty.toml 2>&1)
case "$out" in
    *probe*) pass release-plans-a-probe ;;
    *) fail release-plans-a-probe "$(oneline "$out")" ;;
esac
expect_eq released-to-the-kernels-pick e1000e "$(linkname "$(pci $nic)/driver")"
expect_eq released-override-cleared "(null)" "$(sysattr "$(pci $nic)/driver_override")"
check released-node-gone wait_gone /dev/vfio/$g 5
check release-forgets-the-journal-entry sh -c "! grep -q '$nic' /var/lib/vfioctl/journal.json"
check release-forgets-the-record test ! -e /run/vfioctl/early-claims/$nic
out=$(vfioctl reconcile -c /tmp/empty.toml 2>&1)
case "$out" in *"nothing to do"*) pass converged-after-release ;; *) fail converged-after-release "$(oneline "$out")" ;; esac
# No device is left to give back; vfio_pci, which vfioctl loaded here, goes with the rollback.
out=$(vfioctl rollback 2>&1)
case "$out" in
    *restored*) fail nothing-left-to-roll-back "$(oneline "$out")" ;;
    *"nothing to roll back"*|*"unloaded module vfio_pci"*) pass nothing-left-to-roll-back "$(oneline "$out")" ;;
    *) fail nothing-left-to-roll-back "$(oneline "$out")" ;;
esac

# An `add` claims it again through the rule (the config still names it). This time e1000e had
# it before the claim (like a hot-plug claim that loses the race with the probe): e1000e is its
# own driver, and rollback puts it back there.
udevadm trigger --action=add "$(readlink -f "$(pci $nic)")"
udevadm settle --timeout=10
expect_eq reclaimed-by-the-rule vfio-pci "$(linkname "$(pci $nic)/driver")"
check reclaim-recorded test -e /run/vfioctl/early-claims/$nic
check reclaim-journal-records-e1000e grep -q '"e1000e"' /var/lib/vfioctl/journal.json
out=$(vfioctl rollback 2>&1)
case "$out" in
    *"restored $nic to driver e1000e, override none"*) pass rollback-to-e1000e ;;
    *) fail rollback-to-e1000e "$(oneline "$out")" ;;
esac
expect_eq rolled-back-to-e1000e e1000e "$(linkname "$(pci $nic)/driver")"
expect_eq rolled-back-override-cleared "(null)" "$(sysattr "$(pci $nic)/driver_override")"
check rollback-forgets-the-record test ! -e /run/vfioctl/early-claims/$nic
check rollback-empties-the-journal sh -c "! grep -q '$nic' /var/lib/vfioctl/journal.json"
