# Under Debian's systemd 252 as PID 1 with vfioctl installed from its .deb (dpkg -i): the udev rule claims the NVMe at coldplug (nvme never binds, node owned by the configured user, no failed rule run); vfioctl-watch is active after READY, holds a [[domain]] on edu with a window, STATUS= says so, and uid 1000's `vfioctl domain open` does DMA through it; `systemctl restart` hands the domain back from the fd store (new main PID, same group held, window memory written before the restart still there, VmLck counted); an invalid config + reload changes nothing and the journal says why; a valid edit converges and the journal finds it by ADDRESS=.
# vmtest: guest=systemd
# vmtest: memory=1536M
# vmtest: timeout=420

nvme=0000:01:00.0
edu=0000:00:05.0
tdev=0000:00:05.1

config() { # MODE-LINES: extra lines for the [[user]] entry
    cat <<TOML
version = 1

[[device]]
name = "nvme"
address = "$nvme"

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]

[[user]]
name = "user"
devices = ["nvme", "edu"]
$1

[[domain]]
name = "dma"
devices = ["edu"]

[[domain.window]]
name = "buf"
iova = "0x100000"
size = "2MiB"
TOML
}

if [ "$VMTEST_PHASE" = preboot ]; then
    config "" >"$ROOT/etc/vfio.toml"
    # udevd logs what its RUN programs print at debug level only: keep it for the dump below
    sed -i 's/^#udev_log=.*/udev_log=debug/' "$ROOT/etc/udev/udev.conf"
    return 0
fi
# On the way out (pass or fail): what the rule's runs and the service said.
dump() {
    journalctl -b -o cat -u systemd-udevd | grep -E "vfioctl.*\((out|err)\)|vfioctl.*failed" \
        | tail -n 30 | sed 's/^/vmtest: udevd: /'
    journalctl -b -o short-monotonic -u vfioctl-watch | head -n 40 | sed 's/^/vmtest: watch: /'
}
trap dump EXIT

# --- boot claim
g=$(group_of "$nvme")
n=100; while [ "$(linkname "$(pci "$nvme")/driver")" != vfio-pci ] && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
expect_eq nvme-on-vfio-pci vfio-pci "$(linkname "$(pci "$nvme")/driver")"
[ -z "$(ls /sys/class/nvme 2>/dev/null)" ] && ! journalctl -k -o cat | grep -q '^nvme nvme' \
    && pass nvme-driver-never-bound || fail nvme-driver-never-bound "$(oneline "$(journalctl -k -o cat | grep nvme | head -3)")"
n=50; while [ "$(stat -c %u "/dev/vfio/$g")" != 1000 ] && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
expect_eq nvme-node-owned 1000:600 "$(stat -c %u:%a "/dev/vfio/$g")"
udevadm settle --timeout=60
bad=$(journalctl -u systemd-udevd -o cat | grep -E "vfioctl.*failed with exit code" | head -3)
[ -z "$bad" ] && pass udev-rule-runs-clean || fail udev-rule-runs-clean "$(oneline "$bad")"

# --- the service
check watch-active wait_active vfioctl-watch 60
expect_eq watch-type-notify notify "$(unit_prop vfioctl-watch Type)"
check domain-held wait_held dma 60
# STATUS= is sent at the end of the pass that published the domain: poll briefly for it.
n=50; st=$(unit_prop vfioctl-watch StatusText)
while [ $n -gt 0 ]; do
    case "$st" in *"holding dma: group"*) break ;; esac
    sleep 0.2; n=$((n - 1)); st=$(unit_prop vfioctl-watch StatusText)
done
case "$st" in *"converged"*"holding dma: group"*"1 window 2048 KiB"*"last pass"*) pass status-text "$st" ;; *) fail status-text "$st" ;; esac
out=$(systemd-analyze verify --man=no /usr/lib/systemd/system/vfioctl-watch.service 2>&1)
expect_eq unit-verifies "" "$out"
eg=$(group_of "$edu")
pid1=$(unit_prop vfioctl-watch MainPID)
ls -l "/proc/$pid1/fd" 2>/dev/null | grep -q "vfio/$eg\$" && pass watch-holds-group "$eg" \
    || fail watch-holds-group "pid $pid1 has no /dev/vfio/$eg"
out=$(as_user vfioctl domain open dma -- vfio-edu-client --inherited "$edu" 2>&1); rc=$?
expect_eq user-open-exit 0 "$rc"
for s in inherited mmap-window dma-copy; do
    line=$(printf '%s\n' "$out" | grep "^ok $s\\b")
    [ -n "$line" ] && pass "client-$s" "${line#ok $s }" || fail "client-$s" "$(oneline "$(printf '%s\n' "$out" | tail -n 3)")"
done
# A mark in the window, through a client's own fd of its memfd (no truncation: 1<>).
as_user 'vfioctl domain open dma -- sh -c '"'"'printf VMTEST-MARK 1<>/proc/self/fd/${VFIOCTL_WINDOW_FDS%%:*}'"'"''
expect_eq mark-written VMTEST-MARK "$(as_user 'vfioctl domain open dma -- sh -c '"'"'head -c 11 /proc/self/fd/${VFIOCTL_WINDOW_FDS%%:*}'"'"'')"

# --- restart keeps domains (fd store)
systemctl restart vfioctl-watch
check watch-active-after-restart wait_active vfioctl-watch 60
pid2=$(unit_prop vfioctl-watch MainPID)
[ -n "$pid2" ] && [ "$pid2" != "$pid1" ] && pass new-main-pid "$pid1 -> $pid2" || fail new-main-pid "$pid1 -> $pid2"
check domain-held-after-restart wait_held dma 60
ls -l "/proc/$pid2/fd" 2>/dev/null | grep -q "vfio/$eg\$" && pass same-group-held "$eg" \
    || fail same-group-held "pid $pid2: $(oneline "$(ls -l /proc/$pid2/fd | grep vfio)")"
journal_unit -b | grep -qi 'adopt' && pass journal-says-adopted \
    || fail journal-says-adopted "$(oneline "$(journal_unit -b | tail -n 4)")"
expect_eq window-memory-kept VMTEST-MARK "$(as_user 'vfioctl domain open dma -- sh -c '"'"'head -c 11 /proc/self/fd/${VFIOCTL_WINDOW_FDS%%:*}'"'"'')"
lck=$(awk '/^VmLck:/ {print $2}' "/proc/$pid2/status")
[ "${lck:-0}" -ge 2048 ] && pass adopted-window-locked "${lck} kB" || fail adopted-window-locked "VmLck ${lck} kB"
out=$(as_user vfioctl domain open dma -- vfio-edu-client --inherited "$edu" 2>&1)
printf '%s\n' "$out" | grep -q '^ok dma-copy' && pass dma-after-restart || fail dma-after-restart "$(oneline "$(printf '%s\n' "$out" | tail -n 3)")"

# --- reload: an invalid config changes nothing and says why; a valid edit converges
cp /etc/vfio.toml /tmp/good.toml
printf 'version = 2\n' >/etc/vfio.toml
systemctl reload vfioctl-watch; rc=$?
sleep 2
expect_eq reload-invalid-keeps-running "0 active" "$rc $(systemctl is-active vfioctl-watch)"
journal_unit -b | grep -q 'new config rejected' && pass journal-says-rejected \
    || fail journal-says-rejected "$(oneline "$(journal_unit -b | tail -n 3)")"
case "$(unit_prop vfioctl-watch StatusText)" in *invalid*) pass status-says-invalid ;; *) fail status-says-invalid "$(unit_prop vfioctl-watch StatusText)" ;; esac
expect_eq invalid-changed-nothing "1000:600 vfio-pci" "$(stat -c %u:%a "/dev/vfio/$g") $(linkname "$(pci "$nvme")/driver")"
wait_held dma 1 && pass invalid-kept-domain || fail invalid-kept-domain ""
config 'group = "user"
mode = "0660"' >/etc/vfio.toml
systemctl reload vfioctl-watch
n=50; while [ "$(stat -c %a "/dev/vfio/$g")" != 660 ] && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
expect_eq valid-edit-converged 1000:1000:660 "$(stat -c %u:%g:%a "/dev/vfio/$g")"
entry=$(journalctl -u vfioctl-watch -b ADDRESS=$nvme ACTION=set-node-owner -o verbose | grep -E '^ +(ADDRESS|GROUP|ACTION|PRIORITY)=' | sort -u | tr -d ' ' | tr '\n' ' ')
case "$entry" in *"ACTION=set-node-owner"*"ADDRESS=$nvme"*"GROUP=$g"*"PRIORITY=6"*) pass journal-fields "$entry" ;; *) fail journal-fields "$entry" ;; esac
