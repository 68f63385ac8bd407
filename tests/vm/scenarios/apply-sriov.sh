# vfioctl creates SR-IOV VFs on the igb PF and claims one: the VF appears at the PF's offset/stride address in its own group and goes to vfio-pci; a re-run is a no-op; rollback returns the PF to 0 VFs.
# vmtest: layout=sriov

pf=$(grep -l '^0x10c9$' /sys/bus/pci/devices/*/device 2>/dev/null | head -n 1)
pf=${pf%/device}; pf=${pf##*/}
[ -n "$pf" ] && pass igb-pf-present "$pf" || fail igb-pf-present "no 8086:10c9 function"
# VF 0's address: routing id = PF's + sriov_offset (the kernel's arithmetic, done here by hand).
off=$(sysattr "$(pci "$pf")/sriov_offset")
dom=${pf%%:*}
rest=${pf#*:}
bus=$((0x${rest%%:*}))
slotfn=${rest#*:}
slot=$((0x${slotfn%.*}))
fn=${slotfn#*.}
rid=$(( (bus << 8) + (slot << 3) + fn + off ))
vf0=$(printf '%s:%02x:%02x.%x' "$dom" $((rid >> 8)) $(((rid >> 3) & 31)) $((rid & 7)))
echo "vmtest: pf $pf offset $off -> vf0 $vf0"
cat >/tmp/vfio.toml <<TOML
version = 1

[[sriov]]
pf = "$pf"
num_vfs = 2

[[device]]
name = "vf0"
address = "$vf0"
TOML
out=$(vfioctl -v reconcile -c /tmp/vfio.toml 2>&1)
rc=$?
echo "$out" | sed 's/^/vmtest: apply: /'
expect_eq reconcile-applies 0 "$rc"
expect_eq two-vfs 2 "$(sysattr "$(pci "$pf")/sriov_numvfs")"
expect_eq vf0-link "$vf0" "$(linkname "$(pci "$pf")/virtfn0")"
expect_eq vf0-on-vfio-pci vfio-pci "$(linkname "$(pci "$vf0")/driver")"
g=$(group_of "$vf0")
[ -n "$g" ] && [ "$g" != "$(group_of "$pf")" ] && pass vf0-own-group "$g" || fail vf0-own-group "vf0 group '$g'"
case "$out" in *"group $g: viable (kernel)"*) pass vf0-group-viable-per-kernel ;; *) fail vf0-group-viable-per-kernel "$(oneline "$out")" ;; esac
out=$(vfioctl -v reconcile -c /tmp/vfio.toml 2>&1)
case "$out" in *"nothing to do"*) pass rerun-nothing-to-do ;; *) fail rerun-nothing-to-do "$(oneline "$out")" ;; esac
check rollback vfioctl -v rollback
expect_eq pf-back-to-zero 0 "$(sysattr "$(pci "$pf")/sriov_numvfs")"
check vf0-gone test ! -e "$(pci "$vf0")"
expect_eq pf-still-on-igb igb "$(linkname "$(pci "$pf")/driver")"

# Again, then drop the PF and VF 0 from the config: the next reconcile (not a rollback) gives
# the VF back and puts the PF back to the VF count vfioctl found (0), and the journal empties.
check reapply vfioctl reconcile -c /tmp/vfio.toml
expect_eq two-vfs-again 2 "$(sysattr "$(pci "$pf")/sriov_numvfs")"
printf 'version = 1\n' >/tmp/empty.toml
out=$(vfioctl reconcile --dry-run -c /tmp/empty.toml 2>&1)
case "$out" in *"no longer in [[sriov]]"*) pass dry-run-shows-vf-count-release ;; *) fail dry-run-shows-vf-count-release "$(oneline "$out")" ;; esac
out=$(vfioctl -v reconcile -c /tmp/empty.toml 2>&1)
rc=$?
echo "$out" | sed 's/^/vmtest: release: /'
expect_eq release-applies 0 "$rc"
expect_eq pf-back-to-zero-on-reconcile 0 "$(sysattr "$(pci "$pf")/sriov_numvfs")"
check vf0-gone-on-reconcile test ! -e "$(pci "$vf0")"
expect_eq pf-still-on-igb-after-release igb "$(linkname "$(pci "$pf")/driver")"
# Nothing left to restore (a module vfioctl loaded may still be listed for unloading).
out=$(vfioctl rollback --dry-run 2>&1)
case "$out" in *"would restore"*) fail journal-empty-after-release "$(oneline "$out")" ;; *) pass journal-empty-after-release "$(oneline "$out")" ;; esac
