# An unbind that blocks in the kernel (vfio-pci waits for a process holding the device: QEMU's user-space NVMe driver) is abandoned after the write timeout: vfioctl returns, says so, and converges once the holder lets go.
# vmtest: layout=default
# vmtest: timeout=90

nvme=0000:01:00.0
printf 'version = 1\n\n[[device]]\nname = "disk"\naddress = "%s"\n' $nvme >/tmp/claim.toml
printf 'version = 1\n' >/tmp/empty.toml
check reconcile-claims vfioctl reconcile -c /tmp/claim.toml
g=$(group_of $nvme)
check qemu-img-present test -x /usr/bin/qemu-img
# Hold the device open, as a VM would: a group fd alone does not block an unbind, an open
# device fd does (vfio-pci's remove waits for the user to release it).
qemu-img bench -f raw -c 1000000000 -s 4096 "nvme://$nvme/1" >/tmp/holder.log 2>&1 &
holder=$!
# Wait for its device fd (anon_inode:[vfio-device]), not just the group.
n=0
while [ $n -lt 100 ] && ! ls -l /proc/$holder/fd 2>/dev/null | grep -q vfio-device; do
    usleep 100000; n=$((n + 1))
done
if ls -l /proc/$holder/fd 2>/dev/null | grep -q vfio-device; then
    pass holder-has-the-device
else
    fail holder-has-the-device "$(oneline "$(cat /tmp/holder.log)")"
fi
t0=$(cut -d' ' -f1 /proc/uptime)
out=$(vfioctl reconcile -c /tmp/empty.toml 2>&1)
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "$out" | sed 's/^/vmtest: blocked: /'
expect_eq blocked-release-fails 1 "$rc"
case "$out" in *"did not return within"*) pass timeout-reported ;; *) fail timeout-reported "$(oneline "$out")" ;; esac
secs=$(echo "$t0 $t1" | awk '{printf "%d", $2 - $1}')
if [ "$secs" -lt 30 ]; then pass returned-in-bounded-time "${secs}s"; else fail returned-in-bounded-time "${secs}s"; fi
# While the abandoned writer is still blocked, the next run says so at once instead of
# blocking on the same device.
t0=$(cut -d' ' -f1 /proc/uptime)
out=$(vfioctl reconcile -c /tmp/empty.toml 2>&1)
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "$out" | sed 's/^/vmtest: second: /'
expect_eq second-run-refuses 1 "$rc"
case "$out" in *"still blocked in the kernel"*) pass second-run-names-the-writer ;; *) fail second-run-names-the-writer "$(oneline "$out")" ;; esac
secs=$(echo "$t0 $t1" | awk '{printf "%d", $2 - $1}')
if [ "$secs" -lt 5 ]; then pass second-run-returns-at-once "${secs}s"; else fail second-run-returns-at-once "${secs}s"; fi
kill -9 $holder 2>/dev/null
wait $holder 2>/dev/null
# The abandoned unbind completes in the kernel once the holder is gone; the next pass converges.
usleep 500000
check reconcile-after-release vfioctl -v reconcile -c /tmp/empty.toml
expect_eq nvme-back-on-nvme nvme "$(linkname "$(pci $nvme)/driver")"
