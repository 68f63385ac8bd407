# `vfioctl watch` holds a [[domain]]: it binds the edu pair to vfio-pci, then holds group and window (a second open is EBUSY, VmLck of watch covers the window); a config edit grows the window, removing the domain releases the group.
# vmtest: layout=default
# vmtest: timeout=150

edu=0000:00:05.0
tdev=0000:00:05.1
mkdir -p /etc/vfioctl-test
cfgfile=/etc/vfioctl-test/vfio.toml

cfg() { # WINDOW-SIZE or empty for no domain
    cat >"$cfgfile.new" <<TOML
version = 1

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]
TOML
    if [ -n "$1" ]; then
        cat >>"$cfgfile.new" <<TOML

[[domain]]
name = "dma"
devices = ["edu"]

[[domain.window]]
name = "buf"
iova = "0x100000"
size = "$1"
TOML
    fi
    mv "$cfgfile.new" "$cfgfile"
}

vmlck() { awk '/^VmLck:/ {print $2}' "/proc/$pid/status"; }
busy() { ! sh -c "exec 3<>/dev/vfio/$1" 2>/dev/null; }

# until_eq EXPECTED CMD...: wait up to 20 s for CMD's output to be EXPECTED; prints the last.
until_eq() {
    _want=$1; shift
    _n=100
    while [ "$("$@")" != "$_want" ] && [ $_n -gt 0 ]; do usleep 200000; _n=$((_n - 1)); done
    "$@"
}

cfg 8MiB
vfioctl watch -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run --debounce-ms 100 \
    >/tmp/watch.log 2>&1 &
pid=$!
wait_for /dev/vfio/5 20 || true
g=$(group_of "$edu")
expect_eq edu-on-vfio vfio-pci "$(linkname "$(pci "$edu")/driver")"
expect_eq watch-pins-window 8192 "$(until_eq 8192 vmlck)"
busy "$g" && pass group-held-by-watch || fail group-held-by-watch "/dev/vfio/$g opened"

cfg 16MiB
expect_eq window-grown-by-edit 16384 "$(until_eq 16384 vmlck)"

cfg ""
expect_eq domain-removed-unpinned 0 "$(until_eq 0 vmlck)"
n=100
while busy "$g" && [ $n -gt 0 ]; do usleep 200000; n=$((n - 1)); done
busy "$g" && fail group-released "still busy" || pass group-released

kill -TERM "$pid"
wait "$pid"
expect_eq watch-exit 0 "$?"
sed 's/^/vmtest: watch: /' /tmp/watch.log | tail -40
