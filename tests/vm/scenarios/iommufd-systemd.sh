# Under Debian's systemd 252 with vfioctl from its .deb, on the suite's iommufd kernel (cgroup BPF on, so the unit's DevicePolicy=closed is enforced): vfioctl-watch holds a [[domain]] on the iommufd backend (/dev/iommu and the bound edu cdev, the window's pages pinned); `systemctl restart` hands the iommufd, the bound device and the window back from systemd's fd store: the new main PID holds them, nothing was unpinned or pinned again (the kernel's FOLL_PIN counters did not move), the window memory written before the restart is still there, and uid 1000 does DMA through the adopted domain; `systemctl stop` releases binding and pins.
# vmtest: guest=systemd
# vmtest: kernel=iommufd
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
backend = "iommufd"

[[domain.window]]
name = "buf"
iova = "0x100000"
size = "2MiB"
TOML
    return 0
fi
dump() { journalctl -b -o short-monotonic -u vfioctl-watch | head -n 40 | sed 's/^/vmtest: watch: /'; }
trap dump EXIT

vmstat() { awk -v k="$1" '$1 == k {print $2}' /proc/vmstat; }
pins() { echo $(( $(vmstat nr_foll_pin_acquired) - $(vmstat nr_foll_pin_released) )); }
# holds PID NODE: 1 when one of PID's fds is the character device NODE, else 0. Compared by
# device number: an fd handed back from the fd store names the old service's mount namespace.
holds() {
    _want="character special file $(stat -c '%t:%T' "$2")"
    for _f in /proc/$1/fd/*; do
        [ "$(stat -L -c '%F %t:%T' "$_f" 2>/dev/null)" = "$_want" ] && { echo 1; return; }
    done
    echo 0
}
fds() { for _f in /proc/$1/fd/*; do readlink "$_f"; done 2>/dev/null | tr '\n' ' '; }
cdev_name() { ls "$(pci "$1")/vfio-dev" 2>/dev/null | head -n 1; }
window_head() {
    as_user 'vfioctl domain open dma -- sh -c '"'"'head -c 11 /proc/self/fd/${VFIOCTL_WINDOW_FDS%%:*}'"'"''
}

check kernel-has-iommufd test -c /dev/iommu
check watch-active wait_active vfioctl-watch 60
check domain-held wait_held dma 60
pid1=$(unit_prop vfioctl-watch MainPID)
n=$(cdev_name "$edu")
check edu-has-cdev test -n "$n"
expect_eq watch-holds-iommufd 1 "$(holds "$pid1" /dev/iommu)"
expect_eq watch-holds-cdev 1 "$(holds "$pid1" "/dev/vfio/devices/$n")"
vfioctl status --json | tr -d ' \n' | grep -q '"backend":"iommufd"' && pass status-json-backend \
    || fail status-json-backend "$(oneline "$(vfioctl status | tail -n 6)")"
expect_eq window-pinned 512 "$(pins)"
out=$(as_user vfioctl domain open dma -- vfio-edu-client --inherited-iommufd "$edu" 2>&1); rc=$?
expect_eq user-open-exit 0 "$rc"
printf '%s\n' "$out" | grep -q '^ok dma-copy ' && pass user-dma-copy "$(printf '%s\n' "$out" | grep '^ok dma-copy ')" \
    || fail user-dma-copy "$(oneline "$(printf '%s\n' "$out" | tail -n 3)")"
# a mark in the window, through a client's own fd of its memfd (no truncation: 1<>)
as_user 'vfioctl domain open dma -- sh -c '"'"'printf VMTEST-MARK 1<>/proc/self/fd/${VFIOCTL_WINDOW_FDS%%:*}'"'"''
expect_eq mark-written VMTEST-MARK "$(window_head)"

# --- restart: the domain comes back from the fd store as the kernel kept it
acq=$(vmstat nr_foll_pin_acquired); rel=$(vmstat nr_foll_pin_released)
systemctl restart vfioctl-watch
check watch-active-after-restart wait_active vfioctl-watch 60
pid2=$(unit_prop vfioctl-watch MainPID)
[ -n "$pid2" ] && [ "$pid2" != "$pid1" ] && pass new-main-pid "$pid1 -> $pid2" || fail new-main-pid "$pid1 -> $pid2"
check domain-held-after-restart wait_held dma 60
journal_unit -b _PID="$pid2" | grep -qi 'adopt' && pass journal-says-adopted \
    || fail journal-says-adopted "$(oneline "$(journal_unit -b _PID="$pid2" | head -n 6)")"
expect_eq new-watch-holds-cdev 1 "$(holds "$pid2" "/dev/vfio/devices/$n")"
expect_eq new-watch-holds-iommufd 1 "$(holds "$pid2" /dev/iommu)"
echo "vmtest: fds of the new watch: $(fds "$pid2")"
expect_eq no-repin "$acq $rel" "$(vmstat nr_foll_pin_acquired) $(vmstat nr_foll_pin_released)"
expect_eq window-memory-kept VMTEST-MARK "$(window_head)"
out=$(as_user vfioctl domain open dma -- vfio-edu-client --inherited-iommufd "$edu" 2>&1)
printf '%s\n' "$out" | grep -q '^ok dma-copy ' && pass dma-after-restart \
    || fail dma-after-restart "$(oneline "$(printf '%s\n' "$out" | tail -n 3)")"

# --- stop: binding and pins released, the device free for a direct client
systemctl stop vfioctl-watch
n=50; while [ "$(pins)" != 0 ] && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
expect_eq stop-unpins 0 "$(pins)"
out=$(vfio-edu-client --cdev "$edu" 2>&1); rc=$?
expect_eq device-free-after-stop 0 "$rc"
