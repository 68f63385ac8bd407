# vfioctl rollback returns every device vfioctl took to its recorded original driver: the bridge group (e1000 with its virtio-net companion) and the e1000e; and unloads vfio_pci, which vfioctl loaded, once nothing uses it.
# vmtest: layout=default

e1000=0000:02:01.0
virtio=0000:02:02.0
e1000e=0000:00:01.0
cat >/tmp/vfio.toml <<TOML
version = 1

[[device]]
name = "nic"
address = "$e1000"
companions = ["$virtio"]

[[device]]
name = "nic2"
address = "$e1000e"
TOML
# Start without vfio_pci, as a host that never used VFIO: vfioctl loads it, and must unload it.
modprobe -r vfio_pci 2>/dev/null
check vfio-pci-not-loaded-at-start test ! -e /sys/module/vfio_pci
check reconcile-applies vfioctl -v reconcile -c /tmp/vfio.toml
check vfio-pci-loaded-by-vfioctl test -e /sys/module/vfio_pci
for d in $e1000 $virtio $e1000e; do
    expect_eq "$d-on-vfio-pci" vfio-pci "$(linkname "$(pci $d)/driver")"
done
# The kernel's own verdict, through vfioctl's status view: the bridge group is viable.
check dry-listing vfioctl rollback --dry-run
out=$(vfioctl rollback --dry-run 2>&1)
expect_eq dry-run-lists-three 3 "$(printf '%s\n' "$out" | grep -c 'would restore 0000:')"
expect_eq dry-run-changes-nothing vfio-pci "$(linkname "$(pci $e1000)/driver")"
case "$out" in *"would unload module vfio_pci"*) pass dry-run-lists-module ;; *) fail dry-run-lists-module "$(oneline "$out")" ;; esac
out=$(vfioctl -v rollback 2>&1)
expect_eq rollback-runs 0 "$?"
echo "$out" | sed 's/^/vmtest: rollback: /'
case "$out" in *"unloaded module vfio_pci"*) pass rollback-reports-unload ;; *) fail rollback-reports-unload "$(oneline "$out")" ;; esac
check vfio-pci-unloaded test ! -e /sys/module/vfio_pci
expect_eq e1000-back e1000 "$(linkname "$(pci $e1000)/driver")"
expect_eq virtio-back virtio-pci "$(linkname "$(pci $virtio)/driver")"
expect_eq e1000e-back e1000e "$(linkname "$(pci $e1000e)/driver")"
for d in $e1000 $virtio $e1000e; do
    expect_eq "$d-override-cleared" "(null)" "$(sysattr "$(pci $d)/driver_override")"
done
out=$(vfioctl rollback 2>&1)
case "$out" in *"nothing to roll back"*) pass second-rollback-nothing ;; *) fail second-rollback-nothing "$(oneline "$out")" ;; esac
