# Held domains through the real VFIO ioctls (`vfioctl domain hold`, the domain layer of watch): the edu group is held (a second open is EBUSY), VmLck and the container's available mappings follow a window grown, shrunk and removed, a window in the MSI hole is refused by name, a removed domain releases the group, per-group placement gives two containers.
# vmtest: layout=default
# vmtest: timeout=150

edu=0000:00:05.0
tdev=0000:00:05.1
nic=0000:00:01.0
st=/run/domains.json

check bind-edu bind_vfio "$edu"
check bind-testdev bind_vfio "$tdev"
g=$(group_of "$edu")

# cfg PLACEMENT DEVICES WINDOW-TOML: the config, with the edu pair and the e1000e declared.
cfg() {
    cat >/tmp/d.toml <<TOML
version = 1

[[device]]
name = "edu"
address = "$edu"
companions = ["$tdev"]

[[device]]
name = "testdev"
address = "$tdev"

[[device]]
name = "nic"
address = "$nic"
TOML
    [ -n "$2" ] || return 0
    cat >>/tmp/d.toml <<TOML

[[domain]]
name = "dma"
devices = [$2]
placement = "$1"
$3
TOML
}

win() { # NAME IOVA SIZE
    printf '\n[[domain.window]]\nname = "%s"\niova = "%s"\nsize = "%s"\n' "$1" "$2" "$3"
}

# pass_n: the pass number in the status file.
pass_n() { sed -n 's/^ *"pass": \([0-9]*\).*/\1/p' "$st" 2>/dev/null; }

# reload: SIGHUP the holder and wait for the next pass.
reload() {
    _want=$(( $(pass_n) + 1 ))
    kill -HUP "$pid"
    _n=200
    while [ "$(pass_n)" != "$_want" ] && [ $_n -gt 0 ]; do usleep 50000; _n=$((_n - 1)); done
    [ "$(pass_n)" = "$_want" ] || echo "vmtest: pass $_want never came"
}

vmlck() { awk '/^VmLck:/ {print $2}' "/proc/$pid/status"; }
avail() { sed -n 's/^ *"dma_avail": \([0-9]*\).*/\1/p' "$st" | tr '\n' ' ' | sed 's/ $//'; }
errors() { grep -c '"message"' "$st" 2>/dev/null; }

cfg shared '"edu", "testdev"' "$(win buf 0x100000 16MiB)"
# Debian's 6.1 has no iommufd: the default backend (auto) is legacy, and the plan says why.
out=$(vfioctl reconcile --dry-run -c /tmp/d.toml 2>&1)
printf '%s\n' "$out" | grep -q 'domain "dma" backend legacy (auto: /dev/iommu absent)' \
    && pass plan-auto-picks-legacy || fail plan-auto-picks-legacy "$(oneline "$(printf '%s\n' "$out" | grep -A2 domain)")"
vfioctl domain hold -c /tmp/d.toml --status-file "$st" >/tmp/hold.log 2>&1 &
pid=$!
wait_for "$st" 30 && pass hold-started || fail hold-started "$(oneline "$(cat /tmp/hold.log)")"

check_fails group-busy-while-held "busy" sh -c "exec 3<>/dev/vfio/$g"
expect_eq vmlck-covers-window 16384 "$(vmlck)"
expect_eq one-mapping-used 65534 "$(avail)"
expect_eq no-errors 0 "$(errors)"
grep -q '"hugepages": false' "$st" && pass window-in-status || fail window-in-status "$(oneline "$(cat "$st")")"

# The fds the broker will hand over are open in the holder and are what they claim to be.
fd_of() { sed -n "/\"$1\": {/,/}/s/^ *\"$2\": \([0-9]*\).*/\1/p" "$st" | head -n1; }
expect_eq group-fd-is-the-node "/dev/vfio/$g" "$(readlink /proc/$pid/fd/$(fd_of groups "$g"))"
cfd=$(sed -n '/"containers": \[/{n;s/^ *\([0-9][0-9]*\),*$/\1/p}' "$st" | head -n1)
expect_eq container-fd-is-vfio /dev/vfio/vfio "$(readlink /proc/$pid/fd/$cfd)"
readlink "/proc/$pid/fd/$(fd_of windows buf)" | grep -q '^/memfd:vfioctl-window-buf' \
    && pass window-memfd-open || fail window-memfd-open "$(readlink "/proc/$pid/fd/$(fd_of windows buf)")"

cfg shared '"edu", "testdev"' "$(win buf 0x100000 32MiB)"
reload
expect_eq window-grown-vmlck 32768 "$(vmlck)"

cfg shared '"edu", "testdev"' "$(win buf 0x100000 4MiB)$(win ring 0x4000000 2MiB)"
reload
expect_eq window-shrunk-vmlck 6144 "$(vmlck)"
expect_eq two-mappings-used 65533 "$(avail)"

cfg shared '"edu", "testdev"' "$(win ring 0x4000000 2MiB)"
reload
expect_eq window-removed-vmlck 2048 "$(vmlck)"
expect_eq one-mapping-again 65534 "$(avail)"

cfg shared '"edu", "testdev"' "$(win ring 0x4000000 2MiB)$(win irq 0xfee00000 1MiB)"
reload
grep -q 'window \\"irq\\".*outside the container' "$st" \
    && pass msi-window-refused-by-name \
    || fail msi-window-refused-by-name "$(oneline "$(grep message "$st")")"
expect_eq msi-window-not-pinned 2048 "$(vmlck)"

cfg shared ""
reload
check group-released-with-domain sh -c "exec 3<>/dev/vfio/$g"
expect_eq nothing-pinned 0 "$(vmlck)"

check bind-nic bind_vfio "$nic"
cfg per-group '"edu", "testdev", "nic"' "$(win buf 0x100000 2MiB)"
reload
expect_eq per-group-two-containers 2 "$(grep -c '"role": "per-group"' "$st")"
expect_eq per-group-pins-twice 4096 "$(vmlck)"
expect_eq per-group-both-used "65534 65534" "$(avail)"

# Huge pages: used when the host has enough free ones, else normal pages and a note.
echo 4 >/proc/sys/vm/nr_hugepages
hwin() { printf '\n[[domain.window]]\nname = "%s"\niova = "%s"\nsize = "%s"\nhugepages = true\n' "$1" "$2" "$3"; }
cfg shared '"edu", "testdev"' "$(hwin huge 0x200000 4MiB)"
reload
expect_eq hugetlb-window "true" "$(sed -n 's/^ *"hugepages": \(.*\)$/\1/p' "$st" | tr -d ',')"
expect_eq hugetlb-pages-used 2 "$(( $(awk '/^HugePages_Total/ {print $2}' /proc/meminfo) - $(awk '/^HugePages_Free/ {print $2}' /proc/meminfo) ))"
expect_eq hugetlb-vmlck 4096 "$(vmlck)"
cfg shared '"edu", "testdev"' "$(hwin huge 0x200000 16MiB)"
reload
expect_eq hugetlb-fallback "false" "$(sed -n 's/^ *"hugepages": \(.*\)$/\1/p' "$st" | tr -d ',')"
grep -q 'not on huge pages' "$st" && pass hugetlb-fallback-said \
    || fail hugetlb-fallback-said "$(oneline "$(grep message "$st")")"
expect_eq fallback-vmlck 16384 "$(vmlck)"

kill -TERM "$pid"
wait "$pid"
expect_eq hold-exit 0 "$?"
check group-free-after-exit sh -c "exec 3<>/dev/vfio/$g"
sed 's/^/vmtest: hold: /' /tmp/hold.log
