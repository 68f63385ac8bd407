# A hot-plug storm with vfioctl watch running: 50 add/remove cycles of the hot-plug port as fast as QEMU takes them; watch ends converged, its journal consistent, with no leaked fds or memory growth.
# vmtest: layout=default
# vmtest: timeout=900

hp=0000:03:00.0
cycles=${STORM_CYCLES:-50}
check udev-started start_udev

cat >/tmp/vfio.toml <<TOML
version = 1

[[device]]
name = "hot"
address = "$hp"

[[user]]
name = 1000
devices = ["hot"]
TOML

VFIOCTL_LOG=${WATCH_LOG:-info} vfioctl watch -c /tmp/vfio.toml --resync 0 >/tmp/watch.log 2>&1 &
watch=$!
wait_log() { # PATTERN [SECONDS]
    _n=$(( ${2:-10} * 20 ))
    while ! grep -q -- "$1" /tmp/watch.log && [ "$_n" -gt 0 ]; do usleep 50000; _n=$((_n - 1)); done
    grep -q -- "$1" /tmp/watch.log
}
check watch-first-pass wait_log "pass done"
fds() { ls /proc/$watch/fd 2>/dev/null | wc -l; }
rss() { awk '/VmRSS/ {print $2}' /proc/$watch/status; }

# The hot-plug slot of the port (pciehp): an add that comes while the slot is still powering
# down from the last removal is lost by the guest, so the next add waits for power off; that is
# as fast as the port takes them.
slot=""
for s in /sys/bus/pci/slots/*; do
    [ "$(cat "$s/address" 2>/dev/null)" = "${hp%.*}" ] && slot=$s
done
slot_off() {
    [ -n "$slot" ] || { usleep 200000; return 0; }
    _n=100
    while [ "$(cat "$slot/power" 2>/dev/null)" = 1 ] && [ "$_n" -gt 0 ]; do usleep 20000; _n=$((_n - 1)); done
    [ "$(cat "$slot/power" 2>/dev/null)" != 1 ]
}
pass hotplug-slot "${slot:-none found}"

# One warm-up cycle, so lazily made things (the netlink socket's buffers, the first claim's
# allocations) are counted before the baseline.
storm_cycle() { # N
    slot_off || return 1
    cue device_add '{"driver":"e1000e","id":"hp'$1'","bus":"rphp"}' || return 1
    wait_for "$(pci $hp)/iommu_group" 10 || return 1
    # A driver (the claimer's vfio-pci or e1000e) bound: QEMU under TCG has crashed on a
    # device_del a few ms after a bind, so the removal waits for the bind, no longer.
    wait_for "$(pci $hp)/driver" 10 || return 1
    cue device_del '{"id":"hp'$1'"}' || return 1
    wait_gone "$(pci $hp)" 10
}
check warm-up-cycle storm_cycle 0
usleep 500000
fds0=$(fds); rss0=$(rss)

read t0 _ </proc/uptime
done_cycles=0
i=1
while [ $i -le "$cycles" ]; do
    if ! storm_cycle $i; then fail storm-cycle "cycle $i of $cycles"; break; fi
    done_cycles=$i
    i=$((i + 1))
done
read t1 _ </proc/uptime
expect_eq storm-cycles-done "$cycles" "$done_cycles"
check watch-alive-after-storm kill -0 $watch

# Converged: one last add is taken over and given to its user, as on a quiet host.
check final-add cue device_add '{"driver":"e1000e","id":"hpz","bus":"rphp"}'
check final-appears wait_for "$(pci $hp)/iommu_group" 10
n=0; while [ "$(linkname "$(pci $hp)/driver")" != vfio-pci ] && [ $n -lt 200 ]; do usleep 50000; n=$((n + 1)); done
expect_eq converged-vfio-pci vfio-pci "$(linkname "$(pci $hp)/driver")"
g=$(group_of $hp)
n=0; while [ "$(stat -c %u /dev/vfio/$g 2>/dev/null)" != 1000 ] && [ $n -lt 100 ]; do usleep 50000; n=$((n + 1)); done
expect_eq converged-node-owned 1000 "$(stat -c '%u' /dev/vfio/$g 2>&1)"
# The journal reads back and records the present function; no pass record is left behind.
check journal-records-it sh -c "vfioctl rollback --dry-run 2>&1 | grep -q $hp"
check_fails no-pass-record-left "absent" sh -c "test -e /run/vfioctl/inflight.json && echo present || { echo absent; exit 1; }"
check final-del cue device_del '{"id":"hpz"}'
check final-gone wait_gone "$(pci $hp)" 10
n=0; while grep -q "$hp" /var/lib/vfioctl/journal.json 2>/dev/null && [ $n -lt 100 ]; do usleep 50000; n=$((n + 1)); done
check_fails journal-forgets-it "no match" sh -c "grep -q '$hp' /var/lib/vfioctl/journal.json && echo still there || { echo no match; exit 1; }"

# No leaked fds, no memory growth (a page or two of slack for the allocator).
usleep 500000
fds1=$(fds); rss1=$(rss)
expect_eq no-leaked-fds "$fds0" "$fds1"
growth=$((rss1 - rss0))
if [ "$growth" -le 512 ]; then pass rss-growth "${growth} kB over $cycles cycles ($rss0 -> $rss1 kB)"
else fail rss-growth "${growth} kB over $cycles cycles ($rss0 -> $rss1 kB)"; fi
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
pass storm-rate "$cycles cycles in ${secs}s"
echo "VMTEST-METRIC watch-hotplug-storm cycles=$cycles seconds=$secs fds=$fds0->$fds1 rss-kB=$rss0->$rss1"

kill -TERM $watch; n=0; while kill -0 $watch 2>/dev/null && [ $n -lt 40 ]; do usleep 50000; n=$((n + 1)); done
sed 's/^/vmtest: watch: /' /tmp/watch.log | tail -n 40
