# vfioctl watch keeps a host converged: a hot-plugged NIC whose host driver is already loaded is taken over (bound to vfio-pci, node given to its user), unplug makes the journal forget it, a config edit is applied, an invalid config changes nothing; with timings against the kernel's own probe.
# vmtest: layout=default
# vmtest: timeout=90

hp=0000:03:00.0
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

# Kernel uevents with their CLOCK_MONOTONIC stamps, the reference for every timing below.
udevadm monitor --kernel --property --subsystem-match=pci >/tmp/uevents 2>&1 &
monitor=$!
VFIOCTL_LOG=${WATCH_LOG:-info} vfioctl watch -c /tmp/vfio.toml --resync 0 >/tmp/watch.log 2>&1 &
watch=$!
wait_log() { # PATTERN [SECONDS]
    _n=$(( ${2:-10} * 20 ))
    while ! grep -q -- "$1" /tmp/watch.log && [ "$_n" -gt 0 ]; do usleep 50000; _n=$((_n - 1)); done
    grep -q -- "$1" /tmp/watch.log
}
check watch-first-pass wait_log "pass done"
check absent-device-is-waited-for grep -q "is not present on this host" /tmp/watch.log
check watch-alive kill -0 $watch

# As uid 1000: note the moment the hot-plugged function's group node becomes ours.
rm -f /tmp/owned_at
su -s /bin/sh user -c '
    while [ ! -e /sys/bus/pci/devices/'$hp'/iommu_group ]; do usleep 1000; done
    g=$(basename "$(readlink /sys/bus/pci/devices/'$hp'/iommu_group)")
    while ! [ -O /dev/vfio/$g ]; do usleep 2000; done
    read up _ </proc/uptime; echo "$up" >/tmp/owned_at' &

check cue-device-add cue device_add '{"driver":"e1000e","id":"hp0","bus":"rphp"}'
check device-appears wait_for "$(pci $hp)/iommu_group" 5
n=0; while [ "$(linkname "$(pci $hp)/driver")" != vfio-pci ] && [ $n -lt 200 ]; do usleep 50000; n=$((n + 1)); done
expect_eq taken-over-to-vfio-pci vfio-pci "$(linkname "$(pci $hp)/driver")"
g=$(group_of $hp)
n=0; while [ ! -s /tmp/owned_at ] && [ $n -lt 100 ]; do usleep 50000; n=$((n + 1)); done
expect_eq node-given-to-user "1000" "$(stat -c '%u' /dev/vfio/$g 2>&1)"

# Timings from the kernel's add uevent: the host driver's probe, vfio-pci bound, node owned.
usleep 300000
awk -v owned="$(cat /tmp/owned_at 2>/dev/null)" '
    /^KERNEL\[/ { t = substr($1, 8); sub(/\]/, "", t); action = $2; dev = $3; next }
    /^DRIVER=/ && dev ~ /'$hp'$/ && action == "bind" { d = substr($0, 8); if (!(d in bound)) bound[d] = t }
    /^SEQNUM=/ && dev ~ /'$hp'$/ && action == "add" && add == "" { add = t }
    END {
        if (add == "" || bound["vfio-pci"] == "" || owned == "") { print "incomplete"; exit 1 }
        probe = bound["e1000e"] == "" ? "none" : sprintf("%.0fms", (bound["e1000e"] - add) * 1000)
        printf "kernel-probe(e1000e)=%s vfio-pci-bound=%.0fms node-owned=%.0fms\n",
            probe, (bound["vfio-pci"] - add) * 1000, (owned - add) * 1000
    }' /tmp/uevents >/tmp/timing
if [ $? = 0 ]; then pass hotplug-timing "$(cat /tmp/timing)"; else fail hotplug-timing "$(oneline "$(cat /tmp/uevents | tail -n 40)")"; fi
echo "VMTEST-METRIC watch-hotplug $(cat /tmp/timing)"
# What the journal must say depends on who bound first: the claimer writes driver_override
# within the few ms before the kernel's probe, and then e1000e never binds and the original is
# "whatever the kernel picks" (given back by a probe); when it loses that race, e1000e bound
# first and is the original.
if grep -q 'kernel-probe(e1000e)=none' /tmp/timing; then
    check journal-records-kernel-pick grep -q '"unprobed"' /var/lib/vfioctl/journal.json
    check claimed-before-the-probe grep -q "claimed on add" /tmp/watch.log
else
    check journal-records-e1000e grep -q '"e1000e"' /var/lib/vfioctl/journal.json
fi

# Unplug: the device is gone and the journal forgets it.
check cue-device-del cue device_del '{"id":"hp0"}'
check device-gone wait_gone "$(pci $hp)" 5
n=0; while grep -q "$hp" /var/lib/vfioctl/journal.json 2>/dev/null && [ $n -lt 60 ]; do usleep 50000; n=$((n + 1)); done
check_fails journal-forgets-unplugged "no match" sh -c "grep -q '$hp' /var/lib/vfioctl/journal.json && echo still there || { echo no match; exit 1; }"

# Edit the config (an editor's save: write elsewhere, rename over): the NVMe is claimed too.
cat >/tmp/vfio.toml.new <<TOML
version = 1

[[device]]
name = "hot"
address = "$hp"

[[device]]
name = "disk"
address = "0000:01:00.0"

[[user]]
name = 1000
devices = ["hot", "disk"]
TOML
mv /tmp/vfio.toml.new /tmp/vfio.toml
n=0; while [ "$(linkname "$(pci 0000:01:00.0)/driver")" != vfio-pci ] && [ $n -lt 100 ]; do usleep 50000; n=$((n + 1)); done
expect_eq edit-applied-nvme-on-vfio-pci vfio-pci "$(linkname "$(pci 0000:01:00.0)/driver")"
gd=$(group_of 0000:01:00.0)
n=0; while [ "$(stat -c %u /dev/vfio/$gd 2>/dev/null)" != 1000 ] && [ $n -lt 60 ]; do usleep 50000; n=$((n + 1)); done
expect_eq edit-applied-node-owned 1000 "$(stat -c '%u' /dev/vfio/$gd 2>&1)"

# An invalid config: logged, ignored, nothing on the host changes (the NVMe stays claimed).
before=$(ls -l /sys/bus/pci/devices/*/driver 2>/dev/null | sed 's/.*-> //' | sort | md5sum)
printf 'version = 1\n[[devcie]]\nname = "x"\n' >/tmp/vfio.toml.new
mv /tmp/vfio.toml.new /tmp/vfio.toml
check invalid-config-logged wait_log "new config rejected" 5
usleep 500000
after=$(ls -l /sys/bus/pci/devices/*/driver 2>/dev/null | sed 's/.*-> //' | sort | md5sum)
expect_eq invalid-config-changes-nothing "$before" "$after"
expect_eq invalid-config-nvme-stays vfio-pci "$(linkname "$(pci 0000:01:00.0)/driver")"
check watch-still-alive kill -0 $watch

# Idle: no CPU while nothing happens; memory.
t1=$(awk '{print $14 + $15}' /proc/$watch/stat)
sleep 2
t2=$(awk '{print $14 + $15}' /proc/$watch/stat)
expect_eq idle-cpu-zero-ticks 0 "$((t2 - t1))"
rss=$(awk '/VmRSS/ {print $2 " " $3}' /proc/$watch/status)
pass idle-rss "$rss"
echo "VMTEST-METRIC watch-idle-rss $rss"

kill -TERM $watch; n=0; while kill -0 $watch 2>/dev/null && [ $n -lt 40 ]; do usleep 50000; n=$((n + 1)); done
check_fails watch-stops-on-sigterm "gone" sh -c "kill -0 $watch 2>/dev/null && echo alive || { echo gone; exit 1; }"
kill $monitor 2>/dev/null
sed 's/^/vmtest: watch: /' /tmp/watch.log | tail -n 80
