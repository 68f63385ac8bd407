# Discovery matches the kernel: `vfioctl status --json` agrees with sysfs on every function (driver, override, IOMMU group, group members, /dev/vfio nodes) at boot and after the multi-function pair moves to vfio-pci; `vfioctl status` names the bridge group and the multi-function group.
# vmtest: layout=default
#
# The guest records what sysfs says next to what vfioctl says; the host judge
# (discovery.host.py) compares the two.

# truth FILE: the kernel's view, one line per fact:
#   dev ADDR DRIVER|- OVERRIDE|- GROUP|-     group N ADDR...     node N UID GID MODE
truth() {
    for d in /sys/bus/pci/devices/*; do
        a=${d##*/}
        o=$(sysattr "$d/driver_override")
        [ "$o" = "(null)" ] && o=-
        echo "dev $a $(linkname "$d/driver" || echo -) ${o:--} $(linkname "$d/iommu_group" || echo -)"
    done
    for g in /sys/kernel/iommu_groups/*; do
        echo "group ${g##*/} $(ls "$g/devices" | sort | tr '\n' ' ')"
    done
    for n in /dev/vfio/[0-9]*; do
        [ -e "$n" ] && echo "node ${n##*/} $(stat -c '%u %g %a' "$n")"
    done
}

# round NAME: record both views and hand them to the host
round() {
    truth >"/tmp/sysfs-$1.txt"
    check "status-json-$1" sh -c "vfioctl status --json >/tmp/status-$1.json"
    check "status-text-$1" sh -c "vfioctl status >/tmp/status-$1.txt"
    for f in "sysfs-$1.txt" "status-$1.json" "status-$1.txt"; do
        [ -f "/tmp/$f" ] && export_file "/tmp/$f" "$f"
    done
}

round boot
# change the kernel's state: the multi-function pair to vfio-pci (driver_override set), the
# group node given to uid 1000
check bind-edu bind_vfio 0000:00:05.0
check bind-testdev bind_vfio 0000:00:05.1
g=$(group_of 0000:00:05.0)
check group-node wait_for "/dev/vfio/$g" 5
chown 1000:1000 "/dev/vfio/$g"
round bound
