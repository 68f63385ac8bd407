# Taking over a hot-plugged NIC whose host driver is loaded: time from the kernel's add uevent to vfio-pci bound (and the node owned), for driverctl (its override file, run from udev on add), the vfioctl udev rule alone, and vfioctl watch; three hot-plug cycles each.
# vmtest: layout=default
# vmtest: timeout=150

hp=0000:03:00.0
check udev-started start_udev
udevadm monitor --kernel --property --subsystem-match=pci >/tmp/uevents 2>&1 &
monitor=$!
cat >/tmp/vfio.toml <<TOML
version = 1

[[device]]
name = "hot"
address = "$hp"

[[user]]
name = 1000
devices = ["hot"]
TOML

# round NAME OWNED(yes|no): one hot-plug cycle; prints and records the timings.
round() {
    start=$(wc -l </tmp/uevents)
    rm -f /tmp/owned_at
    if [ "$2" = yes ]; then
        su -s /bin/sh user -c '
            while [ ! -e /sys/bus/pci/devices/'$hp'/iommu_group ]; do usleep 1000; done
            g=$(basename "$(readlink /sys/bus/pci/devices/'$hp'/iommu_group)")
            while ! [ -O /dev/vfio/$g ]; do usleep 2000; done
            read up _ </proc/uptime; echo "$up" >/tmp/owned_at' >/dev/null 2>&1 &
    fi
    cue device_add '{"driver":"e1000e","id":"hp0","bus":"rphp"}' || return 1
    n=0; while [ "$(linkname "$(pci $hp)/driver")" != vfio-pci ] && [ $n -lt 200 ]; do usleep 20000; n=$((n + 1)); done
    if [ "$(linkname "$(pci $hp)/driver")" != vfio-pci ]; then
        echo "not taken over: driver $(linkname "$(pci $hp)/driver")"
        cue device_del '{"id":"hp0"}'; wait_gone "$(pci $hp)" 5
        return 1
    fi
    if [ "$2" = yes ]; then
        n=0; while [ ! -s /tmp/owned_at ] && [ $n -lt 100 ]; do usleep 50000; n=$((n + 1)); done
    fi
    usleep 300000
    tail -n +$((start + 1)) /tmp/uevents | awk -v owned="$(cat /tmp/owned_at 2>/dev/null)" -v name="$1" '
        /^KERNEL\[/ { t = substr($1, 8); sub(/\]/, "", t); action = $2; dev = $3; next }
        /^DRIVER=/ && dev ~ /'$hp'$/ && action == "bind" { d = substr($0, 8); if (!(d in bound)) bound[d] = t }
        /^SEQNUM=/ && dev ~ /'$hp'$/ && action == "add" && add == "" { add = t }
        END {
            if (add == "" || bound["vfio-pci"] == "") { print "incomplete"; exit 1 }
            probe = bound["e1000e"] == "" ? "none" : sprintf("%.0fms", (bound["e1000e"] - add) * 1000)
            line = sprintf("%s probe(e1000e)=%s vfio-pci-bound=%.0fms", name, probe,
                (bound["vfio-pci"] - add) * 1000)
            if (owned != "") line = line sprintf(" node-owned=%.0fms", (owned - add) * 1000)
            print line
        }' >/tmp/timing || { cat /tmp/timing; return 1; }
    echo "VMTEST-METRIC $(cat /tmp/timing)" >/dev/console
    cue device_del '{"id":"hp0"}' || return 1
    wait_gone "$(pci $hp)" 5 || return 1
    usleep 300000
}

# 1. driverctl: the persisted override, applied on add as its systemd unit would (no systemd here,
#    so the equivalent RUN rule, which is if anything quicker than starting a unit; the unit's
#    %I turns the instance's `-` into the `/` driverctl expects).
echo vfio-pci >/etc/driverctl.d/pci-$hp
cat >/lib/udev/rules.d/05-driverctl-run.rules <<'RULES'
ACTION=="add", TEST=="/etc/driverctl.d/$env{SUBSYSTEM}-$kernel", RUN+="/usr/sbin/driverctl load-override $env{SUBSYSTEM}/$kernel"
RULES
udevadm control --reload
for i in 1 2 3; do check "driverctl-round-$i" round driverctl no; done
rm -f /etc/driverctl.d/pci-$hp /lib/udev/rules.d/05-driverctl-run.rules

# 2. The vfioctl udev rule alone (no watch): udev-claim, then reconcile --device from RUN.
sed 's|/etc/vfio.toml|/tmp/vfio.toml|g' /vmtest/contrib/70-vfioctl.rules >/lib/udev/rules.d/70-vfioctl.rules
udevadm control --reload
for i in 1 2 3; do check "vfioctl-rule-round-$i" round vfioctl-rule yes; done
rm -f /lib/udev/rules.d/70-vfioctl.rules
udevadm control --reload

# 3. vfioctl watch alone: the urgent scoped pass on the kernel's add uevent.
VFIOCTL_LOG=info vfioctl watch -c /tmp/vfio.toml --resync 0 >/tmp/watch.log 2>&1 &
watch=$!
n=0; while ! grep -q "pass done" /tmp/watch.log && [ $n -lt 100 ]; do usleep 50000; n=$((n + 1)); done
for i in 1 2 3; do check "vfioctl-watch-round-$i" round vfioctl-watch yes; done
kill -TERM $watch
grep -E "claimed on add|pass done" /tmp/watch.log | sed 's/^/vmtest: watch: /' >/dev/console
kill $monitor 2>/dev/null
