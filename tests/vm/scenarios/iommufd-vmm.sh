# A VMM's way to iommufd (issue 19): `vfioctl watch` with a config whose [[user]] (uid 1000) owns the edu function and no [[domain]]; uid 1000 cannot open /dev/iommu itself (EACCES), gets a fresh iommufd from watch's broker through `vfioctl iommufd open`, and the edu client, as QEMU does with `-object iommufd,fd=N -device vfio-pci,host=ADDRESS,iommufd=...`, opens its own cdev by path, binds it to the handed iommufd, allocates an IOAS, attaches, maps a memfd window and does DMA with edu; the pins go back when it exits; uid 1001 (not named) is refused; without watch the command exits 4.
# vmtest: layout=default
# vmtest: kernel=iommufd
# vmtest: timeout=180

edu=0000:00:05.0
tdev=0000:00:05.1
mkdir -p /etc/vfioctl-test
cfgfile=/etc/vfioctl-test/vfio.toml
cat >"$cfgfile" <<TOML
version = 1

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]

[[user]]
name = "user"
devices = ["edu"]
TOML

# uid 1001: an account the config does not name.
grep -q '^other:' /etc/passwd || {
    echo "other:x:1001:1001:other:/tmp:/bin/sh" >>/etc/passwd
    echo "other:x:1001:" >>/etc/group
}
as_other() { su -s /bin/sh other -c "$*"; }
pins_now() { awk '/^nr_foll_pin_acquired/ {a=$2} /^nr_foll_pin_released/ {r=$2} END {print a-r}' /proc/vmstat; }
fds_of() { for f in /proc/$pid/fd/*; do readlink "$f"; done 2>/dev/null | grep -c -- "$1"; }
cdev_name() { ls "$(pci "$1")/vfio-dev" 2>/dev/null | head -n 1; }
until_eq() {
    _want=$1; shift
    _n=100
    while [ "$("$@")" != "$_want" ] && [ $_n -gt 0 ]; do usleep 200000; _n=$((_n - 1)); done
    "$@"
}

check kernel-has-iommufd test -c /dev/iommu
ls -l /dev/iommu | sed 's/^/vmtest: /'

vfioctl -v watch -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run --debounce-ms 100 \
    >/tmp/watch.log 2>&1 &
pid=$!
# the pass binds edu to vfio-pci and gives uid 1000 its cdev
_n=100
while [ -z "$(cdev_name $edu)" ] && [ $_n -gt 0 ]; do usleep 200000; _n=$((_n - 1)); done
n=$(cdev_name $edu)
check edu-has-cdev test -n "$n"
owner() { stat -c %u "/dev/vfio/devices/$n" 2>/dev/null; }
expect_eq cdev-owned-by-user 1000 "$(until_eq 1000 owner)"
until_eq yes sh -c 'test -S /tmp/run/broker.sock && echo yes' >/dev/null
# no [[domain]]: watch holds no iommufd and no cdev
expect_eq watch-holds-no-iommufd 0 "$(fds_of '^/dev/iommu$')"

# the user cannot open /dev/iommu itself (vfioctl never loosens it) ...
check_fails user-cannot-open-dev-iommu 'Permission denied' as_user 'exec 3<>/dev/iommu'
check_fails user-direct-client-refused 'error open-iommufd .*Permission denied' as_user vfio-edu-client --cdev "$edu"

# ... but gets a fresh one from the broker: the client opens its own cdev by path (QEMU's host=),
# binds it to the handed iommufd, allocates an IOAS, attaches, maps a memfd window, DMA
pins0=$(pins_now)
dmesg -c >/dev/null
out=$(as_user vfioctl iommufd open --run-dir /tmp/run -- vfio-edu-client --cdev "$edu" 2>&1); rc=$?
echo "$out"
expect_eq user-iommufd-open-exit 0 "$rc"
for s in open-iommufd open-cdev bind attach iova-ranges map-window map-twice-refused \
         map-msi-window-refused second-bind-refused device dma-copy dma-outside-blocked unmap-window; do
    line=$(printf '%s\n' "$out" | grep "^ok $s ")
    [ -n "$line" ] && pass "client-$s" "${line#ok $s }" || fail "client-$s" "$(oneline "$(printf '%s\n' "$out" | grep -E '^error|vfioctl' | head -n 2)")"
done
printf '%s\n' "$out" | grep -q '^ok open-iommufd VFIOCTL_IOMMUFD_FD' && pass client-used-handed-iommufd \
    || fail client-used-handed-iommufd "$(oneline "$(printf '%s\n' "$out" | grep open-iommufd)")"
printf '%s\n' "$out" | grep -q '^done$' && pass client-done || fail client-done "$(oneline "$out" | tail -c 200)"
fault=$(dmesg | grep -m1 -E 'DMAR: \[DMA Write')
[ -n "$fault" ] && pass outside-dma-faulted "$(echo "$fault" | cut -c1-120)" \
    || fail outside-dma-faulted "no DMAR write fault in dmesg: $(oneline "$(dmesg | tail -n 3)")"
# the client's pins went with it; watch kept no copy of the iommufd
expect_eq pins-released "$pins0" "$(until_eq "$pins0" pins_now)"
expect_eq watch-kept-no-iommufd 0 "$(fds_of '^/dev/iommu$')"
grep -q 'uid 1000: handed a fresh iommufd (1 fd)' /tmp/watch.log && pass broker-logged-grant \
    || fail broker-logged-grant "$(oneline "$(grep broker /tmp/watch.log | tail -n 3)")"
vfioctl status --run-dir /tmp/run 2>&1 | grep -i -A2 broker | sed 's/^/vmtest: status: /'

# the env the command gets: the fd is an open /dev/iommu
out=$(as_user vfioctl iommufd open --run-dir /tmp/run -- sh -c '"readlink /proc/self/fd/\$VFIOCTL_IOMMUFD_FD"' 2>&1)
expect_eq env-fd-is-dev-iommu /dev/iommu "$out"

# uid 1001 is not named: refused with the reason, exit 1
out=$(as_other vfioctl iommufd open --run-dir /tmp/run -- true 2>&1); rc=$?
expect_eq stranger-refused-exit 1 "$rc"
printf '%s\n' "$out" | grep -q 'refused: uid 1001 may not have an iommufd' \
    && pass stranger-refused-reason || fail stranger-refused-reason "$(oneline "$out")"
grep -q 'uid 1001: refused an iommufd' /tmp/watch.log && pass broker-logged-refusal \
    || fail broker-logged-refusal "$(oneline "$(grep broker /tmp/watch.log | tail -n 3)")"

kill -TERM "$pid"
wait "$pid"
expect_eq watch-exit 0 "$?"
# no watch: exit 4
out=$(as_user vfioctl iommufd open --run-dir /tmp/run -- true 2>&1); rc=$?
expect_eq no-watch-exit 4 "$rc"
printf '%s\n' "$out" | grep -q 'no vfioctl watch is serving' && pass no-watch-reason \
    || fail no-watch-reason "$(oneline "$out")"
sed 's/^/vmtest: watch: /' /tmp/watch.log | grep -E -i 'broker|error|warn' | tail -20
