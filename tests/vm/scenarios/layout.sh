# The guest has the device layout the suite is built on (sysfs only, no vfioctl).
# vmtest: layout=default

expect_eq kernel-iommu-on "1" "$(grep -c intel_iommu=on /proc/cmdline)"
[ -e /sys/class/iommu/dmar0 ] && pass dmar-unit || fail dmar-unit "no /sys/class/iommu/dmar0"
expect_eq e1000e-driver e1000e "$(linkname "$(pci 0000:00:01.0)/driver")"
expect_eq virtio-net-driver virtio-pci "$(linkname "$(pci 0000:00:02.0)/driver")"
expect_eq nvme-driver nvme "$(linkname "$(pci 0000:01:00.0)/driver")"
expect_eq e1000-driver e1000 "$(linkname "$(pci 0000:02:01.0)/driver")"
expect_eq edu-driverless "" "$(linkname "$(pci 0000:00:05.0)/driver")"
g=$(group_of 0000:00:04.0)
expect_eq bridge-group-of-three "0000:00:04.0 0000:02:01.0 0000:02:02.0" "$(group_members "$g")"
g=$(group_of 0000:00:05.0)
expect_eq multifunction-group "0000:00:05.0 0000:00:05.1" "$(group_members "$g")"
g=$(group_of 0000:01:00.0)
expect_eq nvme-own-group "0000:01:00.0" "$(group_members "$g")"
expect_eq vfio-container-node "crw-rw-rw-" "$(ls -l /dev/vfio/vfio | cut -c1-10)"
expect_eq hotplug-port-empty "" "$(ls "$(pci 0000:00:06.0)" | grep -E '^0000:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$')"
