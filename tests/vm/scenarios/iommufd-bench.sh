# Benchmarks (issue 19) on the iommufd backend (the suite's 6.12 kernel): mapping a 512 MiB window through vfioctl's domain layer (bind, IOAS, IOMMU_IOAS_MAP) against a minimal open/bind/attach/IOAS_MAP sequence on the same kind of memory (target: within 1.1x); the broker's hand-over of an iommufd domain (request to bound device fd received) against the same user opening /dev/iommu and the cdev, binding and attaching directly (target: within 2x).
# vmtest: layout=default
# vmtest: kernel=iommufd
# vmtest: memory=2G
# vmtest: timeout=420

edu=0000:00:05.0
tdev=0000:00:05.1
check bind-edu bind_vfio "$edu"
check bind-testdev bind_vfio "$tdev"

# the map: vfioctl's domain reconcile on the iommufd backend vs the minimal sequence, alternately
out=$(vfioctl-bench-domain map --device "$edu" --backend iommufd --mib 512 --rounds 7 2>&1)
printf '%s\n' "$out" | sed 's/^/vmtest: /'
ratio=$(printf '%s\n' "$out" | sed -n 's/.*ratio \([0-9.]*\)$/\1/p')
[ -n "$ratio" ] && pass bench-map-ran "ratio $ratio" || fail bench-map-ran "$(oneline "$out")"
printf '%s\n' "$out" | grep -q 'backend iommufd' && pass bench-map-iommufd \
    || fail bench-map-iommufd "$(oneline "$out")"

# the hand-over: watch holds a domain over edu for uid 1000; the broker's hand-over, timed
mkdir -p /etc/vfioctl-test
cat >/etc/vfioctl-test/vfio.toml <<TOML
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
vfioctl watch -c /etc/vfioctl-test/vfio.toml --state-dir /tmp/state --run-dir /tmp/run \
    --debounce-ms 100 >/tmp/watch.log 2>&1 &
pid=$!
n=100
while ! grep -q '"buf"' /tmp/run/domains.json 2>/dev/null && [ $n -gt 0 ]; do usleep 200000; n=$((n - 1)); done
check domain-held grep -q '"buf"' /tmp/run/domains.json
out=$(as_user vfioctl domain open --run-dir /tmp/run dma -- vfio-edu-client --inherited-iommufd "$edu" 2>&1)
printf '%s\n' "$out" | grep -q '^ok dma-copy' && pass handover-is-usable \
    || fail handover-is-usable "$(oneline "$out")"
broker=$(as_user vfioctl-bench-domain open dma --run-dir /tmp/run --rounds 200 2>&1) \
    && pass bench-broker "$broker" || fail bench-broker "$(oneline "$broker")"
kill -TERM "$pid"
wait "$pid"
expect_eq watch-exit 0 "$?"

# the direct baseline, as the same user: /dev/iommu and the cdev opened to it
cdev=/dev/vfio/devices/$(ls "$(pci "$edu")/vfio-dev" | head -n 1)
chown 1000:1000 /dev/iommu "$cdev"
direct=$(as_user vfio-edu-client --bench-bind "$edu" 200 2>&1) \
    && pass bench-direct "$direct" || fail bench-direct "$(oneline "$direct")"
ms() { # "median 1.234567ms" / "median 812.5µs" -> milliseconds
    printf '%s\n' "$1" | sed -n 's/.*median \([0-9.]*\)\(m\?s\|µs\).*/\1 \2/p' \
        | awk '{v=$1; if ($2=="µs") v/=1000; else if ($2=="s") v*=1000; printf "%.3f", v}'
}
b=$(ms "$broker"); d=$(ms "$direct")
[ -n "$b" ] && [ -n "$d" ] \
    && pass handover-ratio "broker $b ms / direct $d ms = $(awk -v b="$b" -v d="$d" 'BEGIN {printf "%.2f", b/d}')" \
    || fail handover-ratio "broker '$broker' direct '$direct'"
# The figures are reported, not asserted: timings under TCG on a shared host are noisy.
