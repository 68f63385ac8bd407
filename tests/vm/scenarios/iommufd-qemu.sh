# A real VMM on what vfioctl hands over (issue 19): QEMU 10.0.2 (bookworm-backports) inside the guest, as uid 1000 under `vfioctl watch` with a [[user]] owning edu and no [[domain]], takes the broker's fresh iommufd through `vfioctl iommufd open` (`-object iommufd,fd=$VFIOCTL_IOMMUFD_FD`) and realizes edu with `-device vfio-pci,host=...,iommufd=...` and with the user's own cdev fd (`fd=N,sysfsdev=...`): QMP lists 1234:11e8, the cdev is bound (a second bind is refused, the group is busy), guest RAM is pinned, and `quit` gives the pins back; without the broker QEMU cannot open /dev/iommu (EACCES).
# vmtest: layout=default
# vmtest: kernel=iommufd
# vmtest: bundle=qemu10
# vmtest: timeout=240

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

pins_now() { awk '/^nr_foll_pin_acquired/ {a=$2} /^nr_foll_pin_released/ {r=$2} END {print a-r}' /proc/vmstat; }
fds_of() { for f in /proc/$1/fd/*; do readlink "$f"; done 2>/dev/null | grep -c -- "$2"; }
cdev_name() { ls "$(pci "$1")/vfio-dev" 2>/dev/null | head -n 1; }
until_eq() {
    _want=$1; shift
    _n=100
    while [ "$("$@")" != "$_want" ] && [ $_n -gt 0 ]; do usleep 200000; _n=$((_n - 1)); done
    "$@"
}

check kernel-has-iommufd test -c /dev/iommu
check guest-has-qemu10 sh -c 'qemu-system-x86_64 --version | grep -q "version 10\."'
qemu-system-x86_64 --version | head -n 1 | sed 's/^/vmtest: /'

vfioctl -v watch -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run --debounce-ms 100 \
    >/tmp/watch.log 2>&1 &
wpid=$!
_n=100
while [ -z "$(cdev_name $edu)" ] && [ $_n -gt 0 ]; do usleep 200000; _n=$((_n - 1)); done
n=$(cdev_name $edu)
check edu-has-cdev test -n "$n"
owner() { stat -c %u "/dev/vfio/devices/$n" 2>/dev/null; }
expect_eq cdev-owned-by-user 1000 "$(until_eq 1000 owner)"
until_eq yes sh -c 'test -S /tmp/run/broker.sock && echo yes' >/dev/null
g=$(group_of $edu)

# QEMU as uid 1000: machine q35 under TCG, stopped (-S: the nested guest never runs), QMP on
# stdio. $1 = how the edu device is given; the rest of the line is the same for every run.
# -accel tcg,tb-size=64: TCG's default 1 GiB code buffer is more than this guest's memory.
cat >/tmp/qemu.sh <<'SH'
#!/bin/sh
mode=$1
case "$mode" in
    host) obj="iommufd,id=i0,fd=$VFIOCTL_IOMMUFD_FD"
          dev="vfio-pci,id=hostdev0,host=0000:00:05.0,iommufd=i0,rombar=0" ;;
    fd)   exec 5<>"/dev/vfio/devices/$2" || exit 98
          obj="iommufd,id=i0,fd=$VFIOCTL_IOMMUFD_FD"
          dev="vfio-pci,id=hostdev0,iommufd=i0,fd=5,sysfsdev=/sys/bus/pci/devices/0000:00:05.0,rombar=0" ;;
    fdonly) exec 5<>"/dev/vfio/devices/$2" || exit 98
          obj="iommufd,id=i0,fd=$VFIOCTL_IOMMUFD_FD"
          dev="vfio-pci,id=hostdev0,iommufd=i0,fd=5,rombar=0" ;;
    own)  obj="iommufd,id=i0"
          dev="vfio-pci,id=hostdev0,host=0000:00:05.0,iommufd=i0,rombar=0" ;;
esac
set -x
exec qemu-system-x86_64 -machine q35 -accel tcg,tb-size=64 -nodefaults -display none -S -m 64 \
    -qmp stdio -object "$obj" -device "$dev"
SH
chmod 755 /tmp/qemu.sh

# what uid 1000 pins is charged to its RLIMIT_MEMLOCK (8 MiB by default): QEMU maps all 64 MiB
# of its guest's RAM, so the user gets 256 MiB (what libvirt sets for a VM with host devices)
ulimit -H -l 262144
ulimit -l 262144
expect_eq memlock-limit 262144 "$(as_user 'ulimit -l')"

# run_qemu NAME MODE [ARG]: start QEMU in the background under `vfioctl iommufd open` (or
# without it for MODE own), its QMP on the fifo /tmp/qin (fd 7 here) and /tmp/NAME.out
qpid=
run_qemu() {
    _name=$1; shift
    rm -f /tmp/qin; mkfifo /tmp/qin; chown 1000:1000 /tmp/qin
    : >/tmp/$_name.out; chown 1000:1000 /tmp/$_name.out
    if [ "$1" = own ]; then
        as_user "/tmp/qemu.sh $* </tmp/qin >/tmp/$_name.out 2>/tmp/$_name.err" &
    else
        as_user "vfioctl iommufd open --run-dir /tmp/run -- /tmp/qemu.sh $* </tmp/qin >/tmp/$_name.out 2>/tmp/$_name.err" &
    fi
    qpid=$!
    exec 7>/tmp/qin
}
# qmp NAME JSON: send one command, wait (up to 240 s) for one more reply line in /tmp/NAME.out
qmp() {
    _before=$(grep -c -E '"(return|error)"' /tmp/$1.out)
    echo "$2" >&7
    _n=1200
    while [ "$(grep -c -E '"(return|error)"' /tmp/$1.out)" = "$_before" ] && [ $_n -gt 0 ] \
            && kill -0 $qpid 2>/dev/null; do
        usleep 200000; _n=$((_n - 1))
    done
    grep -E '"(return|error)"' /tmp/$1.out | tail -n 1 | tr -d '\r'
}
# greeting NAME: wait (up to 300 s) for QMP's greeting; empty when QEMU exited first
greeting() {
    _n=1500
    while ! grep -q '"QMP"' /tmp/$1.out && [ $_n -gt 0 ] && kill -0 $qpid 2>/dev/null; do
        usleep 200000; _n=$((_n - 1))
    done
    grep -o '"qemu": {[^}]*}' /tmp/$1.out
}
stop_qemu() { # NAME: QMP quit, wait for the exit, return QEMU's status
    qmp "$1" '{"execute":"quit"}' >/dev/null
    exec 7>&-
    wait $qpid
}
edu_in() { # NAME: query-pci's entry for edu (vendor 0x1234 = 4660, device 0x11e8 = 4584)
    qmp "$1" '{"execute":"query-pci"}' | grep -o '"qdev_id": "hostdev0"[^]]*"id": {"device": 4584[^}]*"vendor": 4660[^}]*}'
}

# --- without the broker: QEMU opens /dev/iommu itself and is refused
run_qemu own own
wait $qpid; rc=$?
exec 7>&-
[ $rc -ne 0 ] && grep -q -i 'iommu.*Permission denied' /tmp/own.err \
    && pass qemu-alone-refused-dev-iommu "exit $rc: $(grep -i 'permission denied' /tmp/own.err | head -n 1 | cut -c1-160)" \
    || fail qemu-alone-refused-dev-iommu "exit $rc: $(oneline "$(tail -n 3 /tmp/own.err)")"

# --- host=: QEMU opens the cdev of 0000:00:05.0 itself (sysfs vfio-dev/), binds it to the
# broker's iommufd, allocates its IOAS, attaches and maps its guest's RAM
pins0=$(pins_now)
run_qemu host host
ver=$(greeting host)
[ -n "$ver" ] && pass host-qemu-up "$ver" \
    || fail host-qemu-up "$(oneline "$(tail -n 4 /tmp/host.err)")"
expect_eq host-qmp-capabilities '{"return": {}}' "$(qmp host '{"execute":"qmp_capabilities"}')"
e=$(edu_in host)
[ -n "$e" ] && pass host-device-realized "$e" \
    || fail host-device-realized "$(oneline "$(tail -c 300 /tmp/host.out) $(tail -n 3 /tmp/host.err)")"
qemu=$(pidof qemu-system-x86_64)
expect_eq host-qemu-runs-as-user 1000 "$(stat -c %u /proc/$qemu 2>/dev/null)"
expect_eq host-qemu-holds-iommufd 1 "$(fds_of "$qemu" '^/dev/iommu$')"
expect_eq host-qemu-holds-cdev 1 "$(fds_of "$qemu" "^/dev/vfio/devices/$n\$")"
grew=$(( $(pins_now) - pins0 ))
[ "$grew" -ge 16384 ] && pass host-guest-ram-pinned "$grew pages (64 MiB = 16384)" \
    || fail host-guest-ram-pinned "$grew pages pinned, expected >= 16384"
# the kernel has the cdev bound: a second bind is refused, the group cannot be opened
out=$(as_user vfioctl iommufd open --run-dir /tmp/run -- vfio-edu-client --cdev "$edu" 2>&1)
line=$(printf '%s\n' "$out" | grep '^error bind ')
printf '%s\n' "$line" | grep -q 'os error 22' && pass host-second-bind-refused "$line" \
    || fail host-second-bind-refused "$(oneline "$(printf '%s\n' "$out" | tail -n 3)")"
check_fails host-group-busy 'busy' sh -c "exec 3<>/dev/vfio/$g"
grep -q 'uid 1000: handed a fresh iommufd (1 fd)' /tmp/watch.log && pass broker-logged-grant \
    || fail broker-logged-grant "$(oneline "$(grep broker /tmp/watch.log | tail -n 3)")"
stop_qemu host; rc=$?
expect_eq host-qemu-quit-exit 0 "$rc"
expect_eq host-pins-released "$pins0" "$(until_eq "$pins0" pins_now)"
sed 's/^/vmtest: qemu host: /' /tmp/host.err | head -n 8

# --- fd=: uid 1000 opens its own cdev and passes it (libvirt's way), sysfsdev= names it
pins0=$(pins_now)
run_qemu fd fd "$n"
ver=$(greeting fd)
[ -n "$ver" ] && pass fd-qemu-up "$ver" \
    || fail fd-qemu-up "$(oneline "$(tail -n 4 /tmp/fd.err)")"
qmp fd '{"execute":"qmp_capabilities"}' >/dev/null
e=$(edu_in fd)
[ -n "$e" ] && pass fd-device-realized "$e" \
    || fail fd-device-realized "$(oneline "$(tail -c 300 /tmp/fd.out) $(tail -n 3 /tmp/fd.err)")"
qemu=$(pidof qemu-system-x86_64)
expect_eq fd-qemu-holds-cdev-once 1 "$(fds_of "$qemu" "^/dev/vfio/devices/$n\$")"
grew=$(( $(pins_now) - pins0 ))
[ "$grew" -ge 16384 ] && pass fd-guest-ram-pinned "$grew pages" \
    || fail fd-guest-ram-pinned "$grew pages pinned, expected >= 16384"
out=$(as_user vfioctl iommufd open --run-dir /tmp/run -- vfio-edu-client --cdev "$edu" 2>&1)
line=$(printf '%s\n' "$out" | grep '^error bind ')
printf '%s\n' "$line" | grep -q 'os error 22' && pass fd-second-bind-refused "$line" \
    || fail fd-second-bind-refused "$(oneline "$(printf '%s\n' "$out" | tail -n 3)")"
stop_qemu fd; rc=$?
expect_eq fd-qemu-quit-exit 0 "$rc"
expect_eq fd-pins-released "$pins0" "$(until_eq "$pins0" pins_now)"
sed 's/^/vmtest: qemu fd: /' /tmp/fd.err | head -n 8

# --- fd= alone (QEMU accepts a cdev fd without host= or sysfsdev=; it names it VFIO_FD5)
pins0=$(pins_now)
run_qemu fdonly fdonly "$n"
ver=$(greeting fdonly)
[ -n "$ver" ] && pass fdonly-qemu-up "$ver" \
    || fail fdonly-qemu-up "$(oneline "$(tail -n 4 /tmp/fdonly.err)")"
qmp fdonly '{"execute":"qmp_capabilities"}' >/dev/null
e=$(edu_in fdonly)
[ -n "$e" ] && pass fdonly-device-realized "$e" \
    || fail fdonly-device-realized "$(oneline "$(tail -c 300 /tmp/fdonly.out) $(tail -n 3 /tmp/fdonly.err)")"
grew=$(( $(pins_now) - pins0 ))
[ "$grew" -ge 16384 ] && pass fdonly-guest-ram-pinned "$grew pages" \
    || fail fdonly-guest-ram-pinned "$grew pages pinned, expected >= 16384"
stop_qemu fdonly; rc=$?
expect_eq fdonly-qemu-quit-exit 0 "$rc"
expect_eq fdonly-pins-released "$pins0" "$(until_eq "$pins0" pins_now)"
sed 's/^/vmtest: qemu fdonly: /' /tmp/fdonly.err | head -n 8

# --- the pins are the user's: at the default 8 MiB RLIMIT_MEMLOCK QEMU cannot map 64 MiB
ulimit -l 8192
run_qemu memlock host
wait $qpid; rc=$?
exec 7>&-
err=$(grep -v '^+' /tmp/memlock.err)
[ $rc -ne 0 ] && printf '%s\n' "$err" | grep -q 'Cannot allocate memory' \
    && pass memlock-default-refused "exit $rc: $(printf '%s\n' "$err" | grep -m1 'Cannot allocate memory' | cut -c1-200)" \
    || fail memlock-default-refused "exit $rc: $(oneline "$(printf '%s\n' "$err" | tail -n 3)")"
sed 's/^/vmtest: qemu memlock: /' /tmp/memlock.err | head -n 8
ulimit -l 262144

expect_eq watch-holds-no-iommufd 0 "$(fds_of "$wpid" '^/dev/iommu$')"
kill -TERM "$wpid"
wait "$wpid"
expect_eq watch-exit 0 "$?"
sed 's/^/vmtest: watch: /' /tmp/watch.log | grep -E -i 'broker|error|warn' | tail -20
