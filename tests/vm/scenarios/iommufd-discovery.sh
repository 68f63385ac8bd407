# On a kernel with iommufd (the suite's own 6.12 build): `vfioctl status` (text and JSON) and a snapshot show /dev/iommu and each vfio function's device cdev exactly as sysfs and devtmpfs have them; a [[user]] gets its devices' cdevs with their group node, and again after a rebind gives them new numbers; /dev/iommu is left as the kernel made it.
# vmtest: layout=default
# vmtest: kernel=iommufd
# vmtest: timeout=120

edu=0000:00:05.0
tdev=0000:00:05.1

# cdev_name ADDR: vfioN from sysfs, empty when the function has none.
cdev_name() { ls "$(pci "$1")/vfio-dev" 2>/dev/null | head -n 1; }

check kernel-has-iommufd test -c /dev/iommu
iommu_before=$(stat -c '%u %g %a' /dev/iommu)
check status-before vfioctl status
vfioctl status --json >/tmp/status-boot.json
check json-iommufd-present grep -q '"iommufd": true' /tmp/status-boot.json
check text-iommufd-line sh -c "vfioctl status | grep -q 'iommufd /dev/iommu present (owner uid 0 gid 0, mode $(stat -c '%04a' /dev/iommu))'"

# by hand: the pair to vfio-pci; sysfs and devtmpfs are the truth
check bind-edu bind_vfio $edu
check bind-tdev bind_vfio $tdev
for a in $edu $tdev; do
    n=$(cdev_name $a)
    check "sysfs-cdev-$a" test -n "$n"
    check "dev-node-$a" wait_for "/dev/vfio/devices/$n" 5
    num=$(cat "$(pci $a)/vfio-dev/$n/dev")
    set -- $(stat -c '%t %T' "/dev/vfio/devices/$n")
    expect_eq "devtmpfs-number-$a" "$num" "$(printf '%d:%d' "0x$1" "0x$2")"
    own=$(stat -c 'owner uid %u gid %g, mode %a' "/dev/vfio/devices/$n" | sed 's/mode \([0-7]\{3\}\)$/mode 0\1/')
    line="cdev /dev/vfio/devices/$n ($num): $own"
    check "status-shows-$a" sh -c "vfioctl status | grep -qF '$line'"
    check "json-shows-$a" sh -c "vfioctl status --json | tr -d ' \n' | grep -qF '\"vfio_cdev\":{\"name\":\"$n\",\"path\":\"/dev/vfio/devices/$n\",\"major\":${num%%:*},\"minor\":${num##*:}'"
done
vfioctl status >/tmp/status-bound.txt
check snapshot-written vfioctl snapshot -o /tmp/host.json
check snapshot-status-same sh -c "vfioctl status --host /tmp/host.json | cmp -s - /tmp/status-bound.txt"
export_file /tmp/status-bound.txt status-bound.txt

# a [[user]]: its devices' cdevs follow the group node
cat >/tmp/vfio.toml <<TOML
version = 1

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]

[[user]]
name = "user"
devices = ["edu"]
TOML
out=$(vfioctl reconcile --dry-run -c /tmp/vfio.toml 2>&1)
echo "$out" | sed 's/^/vmtest: plan: /'
case "$out" in *"cdevs"*) pass plan-names-cdevs ;; *) fail plan-names-cdevs "$(oneline "$out")" ;; esac
check reconcile vfioctl reconcile -c /tmp/vfio.toml
g=$(group_of $edu)
expect_eq group-node-user "1000 600" "$(stat -c '%u %a' /dev/vfio/$g)"
for a in $edu $tdev; do
    expect_eq "cdev-user-$a" "1000 600" "$(stat -c '%u %a' "/dev/vfio/devices/$(cdev_name $a)")"
done
expect_eq dev-iommu-unchanged "$iommu_before" "$(stat -c '%u %g %a' /dev/iommu)"

# a rebind in the other order: new numbers, root-owned; the next pass owns them again
old_edu=$(cdev_name $edu)
echo $edu >/sys/bus/pci/drivers/vfio-pci/unbind
echo $tdev >/sys/bus/pci/drivers/vfio-pci/unbind
echo $tdev >/sys/bus/pci/drivers_probe
echo $edu >/sys/bus/pci/drivers_probe
new_edu=$(cdev_name $edu)
check rebound-edu test -n "$new_edu"
check wait-new-node wait_for "/dev/vfio/devices/$new_edu" 5
if [ "$new_edu" != "$old_edu" ]; then pass cdev-number-changed "$old_edu -> $new_edu"; else fail cdev-number-changed "still $new_edu"; fi
expect_eq new-cdev-root "0 600" "$(stat -c '%u %a' "/dev/vfio/devices/$new_edu")"
check reconcile-again vfioctl reconcile -c /tmp/vfio.toml
for a in $edu $tdev; do
    expect_eq "cdev-user-again-$a" "1000 600" "$(stat -c '%u %a' "/dev/vfio/devices/$(cdev_name $a)")"
done
check rerun-no-op sh -c "vfioctl reconcile --dry-run --check -c /tmp/vfio.toml"
expect_eq dev-iommu-still-unchanged "$iommu_before" "$(stat -c '%u %g %a' /dev/iommu)"
