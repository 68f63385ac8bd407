# A fixture from a real kernel: the guest's PCI, IOMMU and VFIO parts of /sys, and the bits of /proc and /dev the scanner reads, go to the host, which compares them with tests/fixtures/hosts/vm-q35 (or rewrites it with --refresh-fixture).
# vmtest: layout=default
# vmtest: timeout=90
#
# The guest writes a manifest, not an archive: sysfs files report a size of 4096, so tar would pad
# them, and a fork per file is slow under TCG. Lines: `D path`, `L path target` (the kernel's
# relative target), `W path` (a write-only attribute, kept as an empty file), `F path` followed by
# the content lines prefixed with `|` and a closing `.`. The host rebuilds the tree from it.
# Left out: directories of counters and power state (they change from boot to boot), binary
# windows (config, resource*, rom, vpd), module section addresses, and the few attributes whose
# read fails on these devices. rootfs and devtmpfs sizes are written as 0 by the host judge.

roots="/sys/bus/pci /sys/devices/pci0000:00 /sys/devices/virtual/iommu /sys/devices/virtual/net
/sys/devices/virtual/vfio /sys/kernel/iommu_groups /sys/class/iommu /sys/class/net /sys/class/block
/sys/class/nvme /sys/class/vfio $(ls -d /sys/module/vfio*)"

# find ROOTS EXPR...: walk the roots (links never followed), skipping noisy directories
walk() {
    # shellcheck disable=SC2086
    find $roots \( -type d \( -name power -o -name msi_irqs -o -name statistics -o -name queues \
        -o -name mq -o -name trace -o -name integrity -o -name hwmon -o -name ptp \
        -o -name 'wakeup*' -o -name slaves -o -name sections -o -name notes \) -prune \) -o "$@" 2>/dev/null
}

skipped() { # NAME: attributes left out
    case "$1" in
        config|resource|resource[0-9]*|rom|vpd|uevent_seqnum|inflight|stat|diskseq) return 0 ;;
        carrier|carrier_changes|carrier_up_count|carrier_down_count|speed|duplex) return 0 ;;
        phys_port_id|phys_port_name|phys_switch_id|testing|dormant|threaded) return 0 ;;
    esac
    return 1
}

manifest() {
    walk -type d -print | while read -r p; do echo "D $p"; done
    walk -type l -exec ls -ld {} + | while read -r _m _n _u _g _s _mo _d _t p _arrow target; do
        echo "L $p $target"
    done
    walk -type f ! -perm -0400 -print | while read -r p; do echo "W $p"; done
    walk -type f -perm -0400 -print | while read -r p; do
        skipped "${p##*/}" && continue
        echo "F $p"
        while IFS= read -r l || [ -n "$l" ]; do echo "|$l"; done <"$p"
        echo "."
    done
    for n in /dev/vfio/*; do echo "W $n"; done
    for f in cmdline sys/kernel/osrelease net/route net/if_inet6 net/ipv6_route net/fib_trie \
             self/mountinfo self/mounts; do
        echo "F /proc/$f"
        while IFS= read -r l || [ -n "$l" ]; do echo "|$l"; done <"/proc/$f"
        echo "."
    done
    echo "L /proc/mounts self/mounts"
}

manifest >/tmp/manifest
expect_eq manifest-has-groups "yes" "$(grep -q '^L /sys/kernel/iommu_groups/4/devices/0000:02:01.0 ' /tmp/manifest && echo yes)"
files=$(grep -c '^F ' /tmp/manifest); links=$(grep -c '^L ' /tmp/manifest)
[ "$files" -gt 100 ] && [ "$links" -gt 50 ] && pass captured "$files files, $links links" \
    || fail captured "only $files files, $links links"
gzip -9 /tmp/manifest
export_file /tmp/manifest.gz vm-q35.manifest.gz
