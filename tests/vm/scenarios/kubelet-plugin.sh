# The kubelet device plugin on the real kernel: `watch --kubelet-dir` advertises the edu/pci-testdev pair (one IOMMU group) as one unit of vfioctl.io/edu, Healthy once the kernel has bound both functions, and Allocate hands out the group's real /dev/vfio node and both addresses.
# vmtest: layout=default
# vmtest: timeout=90

edu=0000:00:05.0
tdev=0000:00:05.1
cat >/tmp/vfio.toml <<TOML
version = 1

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]
TOML

mkdir -p /tmp/device-plugins
# The stand-in kubelet first (the plugin retries registration until kubelet's socket exists).
vfioctl kubelet-probe --dir /tmp/device-plugins --resource vfioctl.io/edu --timeout 60 \
    >/tmp/probe.json 2>/tmp/probe.err &
probe=$!
vfioctl watch -c /tmp/vfio.toml --resync 0 --kubelet-dir /tmp/device-plugins >/tmp/watch.log 2>&1 &
watch=$!
wait $probe
rc=$?
sed 's/^/vmtest: probe: /' /tmp/probe.json /tmp/probe.err
expect_eq probe-registered-and-allocated 0 "$rc"
g=$(group_of $edu)
expect_eq edu-on-vfio-pci vfio-pci "$(linkname "$(pci $edu)/driver")"
expect_eq companion-on-vfio-pci vfio-pci "$(linkname "$(pci $tdev)/driver")"
check group-node-exists test -c /dev/vfio/$g
json=$(tr -d ' \n' </tmp/probe.json)
case "$json" in *'"devices":[["0000:00:05.0","Healthy"]]'*) pass one-healthy-unit-for-the-pair ;; *) fail one-healthy-unit-for-the-pair "$json" ;; esac
case "$json" in *'"PCI_RESOURCE_VFIOCTL_IO_EDU":"0000:00:05.0,0000:00:05.1"'*) pass kubevirt-variable-names-both-functions ;; *) fail kubevirt-variable-names-both-functions "$json" ;; esac
case "$json" in *"[\"/dev/vfio/$g\",\"/dev/vfio/$g\",\"rw\"]"*) pass allocate-hands-out-the-real-group-node ;; *) fail allocate-hands-out-the-real-group-node "$json" ;; esac
case "$json" in *'"vfioctl.io/device=0000:00:05.0","vfioctl.io/device=0000:00:05.1"'*) pass cdi-names ;; *) fail cdi-names "$json" ;; esac
check plugin-socket-served test -S /tmp/device-plugins/vfioctl-edu.sock
kill -TERM $watch
wait $watch
check plugin-socket-removed-on-exit test ! -e /tmp/device-plugins/vfioctl-edu.sock
