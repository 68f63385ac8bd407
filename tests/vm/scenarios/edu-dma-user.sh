# Our own VFIO client, unprivileged, with real DMA: as uid 1000 it is refused the root-owned group node, and once the node is chowned it attaches the edu device (type1v2), maps a window, and edu's DMA copies through it verified, while DMA to an unmapped IOVA is blocked by the vIOMMU (DMAR fault).
# vmtest: layout=default
#
# Deterministic counterpart of nvme-user: edu completes its DMA from a timer and the client polls,
# so no interrupt is involved.

addr=0000:00:05.0
check client-present test -x /usr/bin/vfio-edu-client
check bind-vfio-pci bind_vfio "$addr"
g=$(group_of "$addr")
check group-node-created wait_for "/dev/vfio/$g" 5
check_fails user-denied-on-root-node "open-group /dev/vfio/$g: Permission denied" \
    as_user vfio-edu-client "$g" "$addr"
chown 1000:1000 "/dev/vfio/$g"
dmesg -c >/dev/null
out=$(as_user vfio-edu-client "$g" "$addr" 2>&1); rc=$?
echo "$out"
expect_eq user-client-exit 0 "$rc"
for s in container group-viable attached map-window map-twice-refused map-msi-window-refused \
         device dma-copy dma-unmapped-blocked unmap-window; do
    line=$(printf '%s\n' "$out" | grep "^ok $s\\b")
    [ -n "$line" ] && pass "client-$s" "${line#ok $s }" || fail "client-$s" "$(printf '%s\n' "$out" | grep '^error' | head -n 1)"
done
fault=$(dmesg | grep -m1 -E 'DMAR: \[DMA Write')
[ -n "$fault" ] && pass iommu-fault-logged "$(echo "$fault" | cut -c1-120)" \
    || fail iommu-fault-logged "no DMAR write fault in dmesg: $(oneline "$(dmesg | tail -n 3)")"
