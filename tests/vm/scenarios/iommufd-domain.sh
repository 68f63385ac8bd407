# Held domains on the iommufd backend (the suite's 6.12 kernel): `vfioctl watch` holds /dev/iommu and the bound edu cdev (an IOAS with the window mapped), the kernel's pin count grows by the window's pages, a second bind of the device and an open of its group are refused; uid 1000 gets the domain through `vfioctl domain open` and the edu device copies through the window, uid 1001 is refused; watch killed and restarted rebuilds the domain (and, while a client still holds it, says the device is bound already, then holds it again once the client closed); window grow/shrink/remove and domain removal converge in status and in the pin count; `auto` picks iommufd here and the plan says why.
# vmtest: layout=default
# vmtest: kernel=iommufd
# vmtest: timeout=240

edu=0000:00:05.0
tdev=0000:00:05.1
nic=0000:00:01.0
mkdir -p /etc/vfioctl-test
cfgfile=/etc/vfioctl-test/vfio.toml

# cfg DMA-WINDOWS [NIC-DOMAIN]: the config; DMA-WINDOWS are the edu domain's windows
# (`none`: no edu domain at all), NIC-DOMAIN non-empty adds the `auto` domain over the e1000e.
cfg() {
    cat >"$cfgfile.new" <<TOML
version = 1

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]

[[device]]
name = "nic"
address = "$nic"

[[user]]
name = "user"
devices = ["edu"]
TOML
    if [ "$1" != none ]; then
        printf '\n[[domain]]\nname = "dma"\ndevices = ["edu"]\nbackend = "iommufd"\n%s\n' "$1" >>"$cfgfile.new"
    fi
    if [ -n "$2" ]; then
        printf '\n[[domain]]\nname = "nicdma"\ndevices = ["nic"]\nbackend = "auto"\n%s\n' \
            "$(win ring 0x200000 2MiB)" >>"$cfgfile.new"
    fi
    mv "$cfgfile.new" "$cfgfile"
}
win() { # NAME IOVA SIZE
    printf '\n[[domain.window]]\nname = "%s"\niova = "%s"\nsize = "%s"\n' "$1" "$2" "$3"
}

# uid 1001: an account the config does not name.
grep -q '^other:' /etc/passwd || {
    echo "other:x:1001:1001:other:/tmp:/bin/sh" >>/etc/passwd
    echo "other:x:1001:" >>/etc/group
}
as_other() { su -s /bin/sh other -c "$*"; }

# pins: pages pinned with FOLL_PIN right now, by the kernel's own count (IOMMU_IOAS_MAP pins
# the window's pages with pin_user_pages); relative to the boot's baseline.
pins_now() { awk '/^nr_foll_pin_acquired/ {a=$2} /^nr_foll_pin_released/ {r=$2} END {print a-r}' /proc/vmstat; }
pins() { echo $(( $(pins_now) - pins0 )); }
vmpin() { awk '/^VmPin:/ {print $2}' "/proc/$pid/status"; }
cdev_name() { ls "$(pci "$1")/vfio-dev" 2>/dev/null | head -n 1; }
# fds_of PATTERN: how many of watch's fds point at PATH matching PATTERN.
fds_of() { for f in /proc/$pid/fd/*; do readlink "$f"; done 2>/dev/null | grep -c -- "$1"; }

# until_eq EXPECTED CMD...: wait up to 20 s for CMD's output to be EXPECTED; prints the last.
until_eq() {
    _want=$1; shift
    _n=100
    while [ "$("$@")" != "$_want" ] && [ $_n -gt 0 ]; do usleep 200000; _n=$((_n - 1)); done
    "$@"
}
status_json() { vfioctl status --json --run-dir /tmp/run 2>/dev/null | tr -d ' \n'; }
# backend_of NAME: the "backend" of held domain NAME in `status --json` (keys are sorted:
# each domain object starts with its "backend", its "name" follows).
backend_of() {
    status_json | sed 's/"backend":"/\n/g' | grep "\"name\":\"$1\"" | head -n 1 | cut -d'"' -f1
}

check kernel-has-iommufd test -c /dev/iommu
pins0=$(pins_now)

# the plan, before anything is bound: the backend per domain, and for auto why
cfg "$(win buf 0x100000 8MiB)" nic
out=$(vfioctl reconcile --dry-run -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run 2>&1)
printf '%s\n' "$out" | sed 's/^/vmtest: plan: /'
printf '%s\n' "$out" | grep -q 'dma.*backend iommufd' && pass plan-backend-iommufd \
    || fail plan-backend-iommufd "$(oneline "$(printf '%s\n' "$out" | grep -i -A3 domain)")"
printf '%s\n' "$out" | grep -q 'nicdma.*backend iommufd (auto: ' && pass plan-auto-picks-iommufd \
    || fail plan-auto-picks-iommufd "$(oneline "$(printf '%s\n' "$out" | grep -i -A3 nicdma)")"

start_watch() {
    vfioctl -v watch -c "$cfgfile" --state-dir /tmp/state --run-dir /tmp/run --debounce-ms 100 \
        >>/tmp/watch.log 2>&1 &
    pid=$!
}
start_watch
# 8 MiB + 2 MiB of windows: 2560 pages of 4 KiB
expect_eq watch-pins-windows 10240 "$(until_eq 10240 vmpin)"
expect_eq kernel-pin-count 2560 "$(until_eq 2560 pins)"
n=$(cdev_name $edu)
check edu-has-cdev test -n "$n"
expect_eq watch-holds-iommufd 1 "$([ "$(fds_of '^/dev/iommu$')" -ge 1 ] && echo 1 || echo 0)"
# (the held device fd, and the broker's duplicate of it for hand-overs)
c=$(fds_of "^/dev/vfio/devices/$n\$")
[ "$c" -ge 1 ] && pass watch-holds-edu-cdev "$c fd(s)" || fail watch-holds-edu-cdev "none of watch's fds is /dev/vfio/devices/$n"
expect_eq backend-in-status-json iommufd "$(until_eq iommufd backend_of dma)"
expect_eq auto-backend-in-status-json iommufd "$(backend_of nicdma)"
vfioctl status --run-dir /tmp/run >/tmp/status.txt 2>&1
grep -A1 '^ *dma (shared, iommufd)' /tmp/status.txt | grep -q 'backend iommufd (set in the config)' \
    && pass status-text-backend || fail status-text-backend "$(oneline "$(grep -A4 ' dma ' /tmp/status.txt)")"
grep -A1 '^ *nicdma (shared, iommufd)' /tmp/status.txt | grep -q 'backend iommufd (auto: /dev/iommu present' \
    && pass status-text-auto-why || fail status-text-auto-why "$(oneline "$(grep -A4 nicdma /tmp/status.txt)")"

# nobody else gets the device while watch holds it
check_fails second-bind-refused 'error bind .*Invalid argument' vfio-edu-client --cdev "$edu"
g=$(group_of "$edu")
check_fails group-open-refused 'busy' sh -c "exec 3<>/dev/vfio/$g"

# uid 1000, named in [[user]], gets iommufd, IOAS, bound device and window; edu copies through it
dmesg -c >/dev/null
out=$(as_user vfioctl domain open --run-dir /tmp/run dma -- vfio-edu-client --inherited-iommufd "$edu" 2>&1); rc=$?
echo "$out"
expect_eq user-open-exit 0 "$rc"
for s in inherited ioas mmap-window window-mapped-in-ioas device-already-bound device dma-copy \
         dma-outside-blocked; do
    line=$(printf '%s\n' "$out" | grep "^ok $s ")
    [ -n "$line" ] && pass "client-$s" "${line#ok $s }" || fail "client-$s" "$(oneline "$(printf '%s\n' "$out" | grep -E '^error|vfioctl' | head -n 2)")"
done
fault=$(dmesg | grep -m1 -E 'DMAR: \[DMA Write')
[ -n "$fault" ] && pass outside-dma-faulted "$(echo "$fault" | cut -c1-120)" \
    || fail outside-dma-faulted "no DMAR write fault in dmesg: $(oneline "$(dmesg | tail -n 3)")"
expect_eq pins-unchanged-by-client 2560 "$(pins)"

# uid 1001 is refused and changes nothing
out=$(as_other vfioctl domain open --run-dir /tmp/run dma -- true 2>&1); rc=$?
expect_eq stranger-refused-exit 1 "$rc"
printf '%s\n' "$out" | grep -q 'refused: uid 1001 may not open domain "dma"' \
    && pass stranger-refused-reason || fail stranger-refused-reason "$(oneline "$out")"
expect_eq stranger-changed-nothing 2560 "$(pins)"

# watch killed (no cleanup at all): the kernel releases binding, IOAS and pins with its fds; a
# new watch builds the domains again
kill -KILL "$pid"
wait "$pid" 2>/dev/null
expect_eq killed-watch-unpinned 0 "$(until_eq 0 pins)"
rm -f /tmp/run/domains.json
start_watch
expect_eq restarted-watch-pins 2560 "$(until_eq 2560 pins)"
out=$(as_user vfioctl domain open --run-dir /tmp/run dma -- vfio-edu-client --inherited-iommufd "$edu" 2>&1)
printf '%s\n' "$out" | grep -q '^ok dma-copy' && pass restarted-handover-dma-copy \
    || fail restarted-handover-dma-copy "$(oneline "$out")"

# a client still holding the domain when watch dies keeps it alive (its fds hold the iommufd,
# the bound device and the IOAS's pins); a new watch cannot bind the device and says why, and
# holds the domain again once the client has closed
as_user vfioctl domain open --run-dir /tmp/run dma -- sleep 8 &
holder=$!
n=50
while ! vfioctl status --run-dir /tmp/run | grep -q 'dma: uid 1000 pid' && [ $n -gt 0 ]; do usleep 100000; n=$((n - 1)); done
kill -KILL "$pid"
wait "$pid" 2>/dev/null
expect_eq client-keeps-pins 2048 "$(until_eq 2048 pins)"
rm -f /tmp/run/domains.json
start_watch
n=100
while ! grep -q 'bound already' /tmp/watch.log && [ $n -gt 0 ]; do usleep 100000; n=$((n - 1)); done
line=$(grep -m1 'bound already' /tmp/watch.log)
[ -n "$line" ] && pass busy-device-explained "$(echo "$line" | cut -c1-200)" \
    || fail busy-device-explained "$(oneline "$(tail -n 5 /tmp/watch.log)")"
expect_eq other-domain-rebuilt 2560 "$(until_eq 2560 pins)"
wait "$holder"
expect_eq client-closed-unpinned 512 "$(until_eq 512 pins)"
kill -HUP "$pid"
expect_eq held-again-after-client 2560 "$(until_eq 2560 pins)"
expect_eq held-again-vmpin 10240 "$(until_eq 10240 vmpin)"

# windows: grow, shrink and add, remove; the kernel's pin count follows
cfg "$(win buf 0x100000 16MiB)" nic
expect_eq window-grown-pins 4608 "$(until_eq 4608 pins)"
expect_eq window-grown-vmpin 18432 "$(vmpin)"
cfg "$(win buf 0x100000 4MiB)$(win ring2 0x4000000 2MiB)" nic
expect_eq window-shrunk-added-pins 2048 "$(until_eq 2048 pins)"
cfg "$(win ring2 0x4000000 2MiB)" nic
expect_eq window-removed-pins 1024 "$(until_eq 1024 pins)"
status_json | grep -q '"buf"' && fail window-removed-in-status "buf still listed" \
    || pass window-removed-in-status

# the domain removed: pins back to the baseline (the auto domain's), the device free again
cfg none nic
expect_eq domain-removed-pins 512 "$(until_eq 512 pins)"
expect_eq domain-removed-no-cdev-fd 0 "$(until_eq 0 fds_of "^/dev/vfio/devices/$n\$")"
status_json | grep -q '{"name":"dma"' && fail domain-removed-in-status "dma still held" \
    || pass domain-removed-in-status
out=$(vfio-edu-client --cdev "$edu" 2>&1); rc=$?
expect_eq direct-bind-after-release 0 "$rc"
printf '%s\n' "$out" | grep -q '^ok dma-copy' && pass direct-client-dma-copy \
    || fail direct-client-dma-copy "$(oneline "$out")"
cfg none
expect_eq all-unpinned 0 "$(until_eq 0 pins)"

kill -TERM "$pid"
wait "$pid"
expect_eq watch-exit 0 "$?"
sed 's/^/vmtest: watch: /' /tmp/watch.log | grep -E -i 'domain|broker|error|warn' | tail -30
