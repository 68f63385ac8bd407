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

vfioctl status --json --run-dir /tmp/run >/tmp/status.json
grep -q '"name": "dma"' /tmp/status.json && pass status-json-domains \
    || fail status-json-domains "$(oneline "$(grep -A3 domains /tmp/status.json)")"
expect_eq status-dma-avail 65534 "$(sed -n 's/^ *"dma_avail": \([0-9]*\).*/\1/p' /tmp/status.json)"
vfioctl status --run-dir /tmp/run | grep -q 'dma (shared): 1 container(s), 1 window(s), 8 MiB pinned' \
    && pass status-text-domains || fail status-text-domains "$(oneline "$(vfioctl status --run-dir /tmp/run | tail -4)")"

cfg 16MiB
expect_eq window-grown-by-edit 16384 "$(until_eq 16384 vmlck)"

vfioctl reconcile -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run >/tmp/rec.out 2>&1
expect_eq oneshot-reconcile-asks-watch "0 1" "$? $(grep -c 'asked the running vfioctl watch' /tmp/rec.out)"

# watch picks this edit up too; the dry run may see it before or after, so only its section
# header is checked here.
cfg 4MiB
vfioctl reconcile --dry-run -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run >/tmp/dry.out 2>&1
grep -q 'domains (held by vfioctl watch' /tmp/dry.out && pass dry-run-domain-section \
    || fail dry-run-domain-section "$(oneline "$(tail -4 /tmp/dry.out)")"
expect_eq window-shrunk-by-edit 4096 "$(until_eq 4096 vmlck)"

cfg ""
expect_eq domain-removed-unpinned 0 "$(until_eq 0 vmlck)"
n=100
while busy "$g" && [ $n -gt 0 ]; do usleep 200000; n=$((n - 1)); done
busy "$g" && fail group-released "still busy" || pass group-released

kill -TERM "$pid"
wait "$pid"
expect_eq watch-exit 0 "$?"
cfg 2MiB
vfioctl reconcile -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run >/tmp/rec.out 2>&1
expect_eq oneshot-reconcile-without-watch "4 1" "$? $(grep -c 'no vfioctl watch is running' /tmp/rec.out)"
# The udev rule's scoped run leaves domains to the service: converged, no watch, still 0.
vfioctl reconcile -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run --device 0000:00:05.0 \
    --no-domains >/tmp/rec.out 2>&1
expect_eq scoped-reconcile-no-domains "0 0" "$? $(grep -c 'watch' /tmp/rec.out)"
sed 's/^/vmtest: watch: /' /tmp/watch.log | tail -40
