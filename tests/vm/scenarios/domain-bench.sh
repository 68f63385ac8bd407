# Benchmark (issue 9): mapping a 512 MiB window through vfioctl's domain layer against a minimal open/attach/MAP_DMA sequence on the same kind of memory; target: within 1.1x.
# vmtest: layout=default
# vmtest: memory=2G
# vmtest: timeout=300

edu=0000:00:05.0
check bind-edu bind_vfio "$edu"
check bind-testdev bind_vfio 0000:00:05.1
out=$(vfioctl-bench-domain map --device "$edu" --mib 512 --rounds 5 2>&1)
printf '%s\n' "$out" | sed 's/^/vmtest: /'
ratio=$(printf '%s\n' "$out" | sed -n 's/.*ratio \([0-9.]*\)$/\1/p')
[ -n "$ratio" ] && pass bench-ran "ratio $ratio" || fail bench-ran "$(oneline "$out")"
# The figure is reported, not asserted: timings under TCG on a shared host are noisy.
