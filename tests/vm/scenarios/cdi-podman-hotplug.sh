# `vfioctl watch` keeps the CDI spec in step with hot-plug: an edu function the config names is hot-plugged, taken and written into the spec with its group, and a new podman container uses it (DMA through its own mapping); unplugged, it leaves the spec.
# vmtest: layout=default
# vmtest: bundle=podman
# vmtest: timeout=300
# vmtest: memory=1536M

. /vmtest/podman.sh
hp=0000:03:00.0
spec=/var/run/cdi/vfioctl.json
check podman-setup podman_setup
check udev-started start_udev

cat >/tmp/vfio.toml <<TOML
version = 1

[[device]]
name = "hot"
address = "$hp"

[[user]]
name = 1000
devices = ["hot"]
TOML
VFIOCTL_LOG=info vfioctl watch -c /tmp/vfio.toml --resync 0 >/tmp/watch.log 2>&1 &
watch=$!
n=0; while ! grep -q "pass done" /tmp/watch.log && [ $n -lt 200 ]; do usleep 50000; n=$((n + 1)); done
check watch-first-pass grep -q "pass done" /tmp/watch.log
check no-spec-before-plug test ! -e $spec

check cue-device-add cue device_add '{"driver":"edu","id":"hp0","bus":"rphp"}'
check device-appears wait_for "$(pci $hp)/iommu_group" 5
g=$(group_of $hp)
n=0; while ! grep -qs "\"name\": \"$hp\"" $spec && [ $n -lt 200 ]; do usleep 50000; n=$((n + 1)); done
check spec-has-hot-plugged-function grep -q "\"name\": \"$hp\"" $spec
check spec-has-its-group grep -q "\"path\": \"/dev/vfio/$g\"" $spec
export_file $spec vfioctl-hotplug.json
expect_eq bound-to-vfio-pci vfio-pci "$(linkname "$(pci $hp)/driver")"

out=$(in_container --user 1000 --device vfioctl.io/device=hot -- "$EDU_IN_CONTAINER" 2>&1); rc=$?
echo "$out"
expect_eq container-exit 0 "$rc"
for s in group-viable attached map-window device dma-copy; do
    line=$(printf '%s\n' "$out" | grep "^ok $s\\b")
    [ -n "$line" ] && pass "hot-$s" "${line#ok $s }" \
        || fail "hot-$s" "$(oneline "$(printf '%s\n' "$out" | grep -E '^error|Error' | head -n 2)")"
done

check cue-device-del cue device_del '{"id":"hp0"}'
check device-gone wait_gone "$(pci $hp)" 5
n=0; while [ -e $spec ] && [ $n -lt 200 ]; do usleep 50000; n=$((n + 1)); done
check spec-removed-after-unplug test ! -e $spec
kill $watch 2>/dev/null
wait $watch 2>/dev/null
tail -n 5 /tmp/watch.log
