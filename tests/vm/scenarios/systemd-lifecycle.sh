# Under Debian's systemd 252 with vfioctl from its .deb: a watch that stops answering (SIGSTOP) is killed and restarted by systemd within the drop-in's WatchdogSec, and adopts its domain again from the fd store; `systemctl stop` releases every held group and leaves the devices as configured; `dpkg -r vfioctl` leaves the devices as they are and the service gone.
# vmtest: guest=systemd
# vmtest: memory=1536M
# vmtest: timeout=420

edu=0000:00:05.0
tdev=0000:00:05.1

if [ "$VMTEST_PHASE" = preboot ]; then
    cat >"$ROOT/etc/vfio.toml" <<TOML
version = 1

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]

[[user]]
name = "user"
devices = ["edu"]

[[domain]]
name = "dma"
devices = ["edu"]

[[domain.window]]
name = "buf"
iova = "0x100000"
size = "2MiB"
TOML
    # a short watchdog for the test (the unit's own is 2 min); a stopped process ignores
    # SIGABRT, so the abort timeout decides when systemd kills it
    mkdir -p "$ROOT/etc/systemd/system/vfioctl-watch.service.d"
    cat >"$ROOT/etc/systemd/system/vfioctl-watch.service.d/vmtest-watchdog.conf" <<UNIT
[Service]
WatchdogSec=6s
TimeoutAbortSec=2s
UNIT
    return 0
fi

dump() { journalctl -b -o short-monotonic -u vfioctl-watch | tail -n 40 | sed 's/^/vmtest: watch: /'; }
trap dump EXIT
eg=$(group_of "$edu")
holds() { ls -l "/proc/$1/fd" 2>/dev/null | grep -q "vfio/$eg\$"; }
check watch-active wait_active vfioctl-watch 60
check domain-held wait_held dma 60
pid1=$(unit_prop vfioctl-watch MainPID)
holds "$pid1" && pass watch-holds-group "$eg" || fail watch-holds-group "pid $pid1"

# --- watchdog
kill -STOP "$pid1"
t0=$(date +%s)
n=150
while [ "$(unit_prop vfioctl-watch MainPID)" = "$pid1" ] && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
check restarted-active wait_active vfioctl-watch 60
t1=$(date +%s)
pid2=$(unit_prop vfioctl-watch MainPID)
[ "$pid2" != "$pid1" ] && [ $((t1 - t0)) -le 20 ] && pass watchdog-restarted "$pid1 -> $pid2 in $((t1 - t0)) s" \
    || fail watchdog-restarted "$pid1 -> $pid2 in $((t1 - t0)) s"
journalctl -u vfioctl-watch -b -o cat | grep -qi 'watchdog timeout' && pass journal-watchdog \
    || fail journal-watchdog "$(oneline "$(journalctl -u vfioctl-watch -b -o cat | tail -n 4)")"
check domain-held-again wait_held dma 60
holds "$pid2" && pass group-held-again "$eg" || fail group-held-again "pid $pid2: $(oneline "$(ls -l /proc/$pid2/fd | grep vfio)")"
journalctl -u vfioctl-watch -b _PID="$pid2" -o cat | grep -qi 'adopt' && pass adopted-after-watchdog \
    || fail adopted-after-watchdog "$(oneline "$(journalctl -u vfioctl-watch -b _PID="$pid2" -o cat | head -n 4)")"
out=$(as_user vfioctl domain open dma -- vfio-edu-client --inherited "$edu" 2>&1)
printf '%s\n' "$out" | grep -q '^ok dma-copy' && pass dma-after-watchdog || fail dma-after-watchdog "$(oneline "$(printf '%s\n' "$out" | tail -n 3)")"

# --- stop: every group released, devices stay configured
systemctl stop vfioctl-watch
expect_eq stopped inactive "$(systemctl is-active vfioctl-watch)"
held=$(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c "vfio/$eg\$")
expect_eq no-group-held 0 "$held"
# (a domain's group node stays root's: the daemon holds it and hands it out)
expect_eq devices-stay "vfio-pci vfio-pci 0" "$(linkname "$(pci "$edu")/driver") $(linkname "$(pci "$tdev")/driver") $(stat -c %u "/dev/vfio/$eg")"
# the group is free: a plain client opens it directly
out=$(vfio-edu-client "$eg" "$edu" 2>&1)
printf '%s\n' "$out" | grep -q '^ok dma-copy' && pass group-free-after-stop || fail group-free-after-stop "$(oneline "$(printf '%s\n' "$out" | tail -n 3)")"

# --- remove: the service goes, the devices stay
systemctl start vfioctl-watch
check started-again wait_active vfioctl-watch 60
dpkg -r vfioctl >/tmp/dpkg-r.log 2>&1; rc=$?
sed 's/^/vmtest: dpkg -r: /' /tmp/dpkg-r.log
expect_eq dpkg-remove 0 "$rc"
# the unit file is gone; deb-systemd-helper masks a removed (not purged) package's unit
state="$(systemctl is-active vfioctl-watch) $(unit_prop vfioctl-watch LoadState)"
case "$state" in "inactive not-found"|"inactive masked") pass service-gone "$state" ;; *) fail service-gone "$state" ;; esac
[ ! -e /usr/lib/systemd/system/vfioctl-watch.service ] && pass unit-file-gone || fail unit-file-gone ""
[ ! -e /usr/bin/vfioctl ] && [ ! -e /usr/lib/udev/rules.d/70-vfioctl.rules ] && pass files-gone || fail files-gone "$(ls /usr/bin/vfioctl /usr/lib/udev/rules.d/70-vfioctl.rules 2>&1)"
expect_eq devices-stay-after-remove "vfio-pci vfio-pci 0" "$(linkname "$(pci "$edu")/driver") $(linkname "$(pci "$tdev")/driver") $(stat -c %u "/dev/vfio/$eg")"
held=$(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c "vfio/$eg\$")
expect_eq no-group-held-after-remove 0 "$held"
