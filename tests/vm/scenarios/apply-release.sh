# A device removed from the config is released on the next reconcile: back on its original driver with the override cleared, its group node gone, the journal empty.
# vmtest: layout=default

nvme=0000:01:00.0
printf 'version = 1\n\n[[device]]\nname = "disk"\naddress = "%s"\n' $nvme >/tmp/claim.toml
printf 'version = 1\n' >/tmp/empty.toml
expect_eq nvme-starts-on-nvme nvme "$(linkname "$(pci $nvme)/driver")"
check reconcile-claims vfioctl -v reconcile -c /tmp/claim.toml
expect_eq nvme-on-vfio-pci vfio-pci "$(linkname "$(pci $nvme)/driver")"
g=$(group_of $nvme)
check node-exists test -c /dev/vfio/$g
check reconcile-releases vfioctl -v reconcile -c /tmp/empty.toml
expect_eq nvme-back-on-nvme nvme "$(linkname "$(pci $nvme)/driver")"
expect_eq override-cleared "(null)" "$(sysattr "$(pci $nvme)/driver_override")"
check node-gone wait_gone /dev/vfio/$g 5
check journal-empty sh -c '! grep -q "0000:01:00.0" /var/lib/vfioctl/journal.json'
out=$(vfioctl reconcile -c /tmp/empty.toml 2>&1)
case "$out" in *"nothing to do"*) pass converged-after-release ;; *) fail converged-after-release "$(oneline "$out")" ;; esac
