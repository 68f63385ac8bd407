# A real podman (bookworm's 4.3 with crun) injects vfioctl's CDI device: after `reconcile` the edu client inside the container opens the group, finds it viable, gets the device fd and does DMA through its own mapping, as root and as `--user 1000` when the config gives the node to uid 1000; without `--device` the container has no /dev/vfio/N; once the device is removed from the config and reconciled, podman refuses it as an unresolvable CDI device.
# vmtest: layout=default
# vmtest: bundle=podman
# vmtest: timeout=420
# vmtest: memory=1536M

. /vmtest/podman.sh
addr=0000:00:05.0
spec=/var/run/cdi/vfioctl.json
check podman-setup podman_setup
grep -E '^ *(version|ociRuntime|  name|cgroupManager|cgroupVersion)' /tmp/podman-info | head -n 8

# client_steps NAME OUTPUT: one check per step the client must have passed.
client_steps() {
    for s in container group-viable attached map-window device dma-copy unmap-window; do
        line=$(printf '%s\n' "$2" | grep "^ok $s\\b")
        [ -n "$line" ] && pass "$1-$s" "${line#ok $s }" \
            || fail "$1-$s" "$(oneline "$(printf '%s\n' "$2" | grep -E '^error|Error|error:' | head -n 2)")"
    done
}

cat >/tmp/vfio.toml <<TOML
version = 1

[[device]]
name = "edu"
address = "$addr"
companions = ["0000:00:05.1"]
TOML
check reconcile vfioctl reconcile -c /tmp/vfio.toml
g=$(group_of $addr)
check spec-written test -s $spec
export_file $spec vfioctl-root.json
check spec-names-edu grep -q '"name": "edu"' $spec
check spec-names-function grep -q "\"name\": \"$addr\"" $spec
check spec-group-node grep -q "\"path\": \"/dev/vfio/$g\"" $spec
check spec-matches-vfioctl-cdi sh -c "vfioctl cdi -c /tmp/vfio.toml | cmp - $spec"

out=$(in_container --device vfioctl.io/device=edu -- "$EDU_IN_CONTAINER" 2>&1); rc=$?
echo "$out"
expect_eq root-container-exit 0 "$rc"
client_steps root "$out"
check root-env-lists-functions sh -c "printf '%s\n' \"\$1\" | grep -q 'addresses=$addr,0000:00:05.1 group=$g uid=0'" _ "$out"

# The per-function device works the same way.
out=$(in_container --device "vfioctl.io/device=$addr" -- "$EDU_IN_CONTAINER" 2>&1); rc=$?
expect_eq function-device-exit 0 "$rc"
client_steps function "$out"

# Without --device the container has no group node.
out=$(in_container -- "ls /dev/vfio 2>&1; test -e /dev/vfio/$g && echo present-$g || echo absent-$g" 2>&1)
echo "$out"
check no-device-no-node sh -c "printf '%s\n' \"\$1\" | grep -qx 'absent-$g'" _ "$out"

# As uid 1000 without a [[user]]: the node is root's, the client is refused.
out=$(in_container --user 1000 --device vfioctl.io/device=edu -- "$EDU_IN_CONTAINER" 2>&1); rc=$?
echo "$out" | tail -n 3
check user-refused-root-node sh -c "printf '%s\n' \"\$1\" | grep -q 'open-group /dev/vfio/$g: Permission denied'" _ "$out"

# The config gives the node to uid 1000: reconcile changes the node and the spec.
cat >>/tmp/vfio.toml <<TOML

[[user]]
name = 1000
group = 1000
devices = ["edu"]
TOML
check reconcile-user vfioctl reconcile -c /tmp/vfio.toml
export_file $spec vfioctl-user.json
check spec-gives-uid-1000 sh -c "grep -A4 '\"path\": \"/dev/vfio/$g\"' $spec | grep -q '\"uid\": 1000'"
out=$(in_container --user 1000 --device vfioctl.io/device=edu -- "$EDU_IN_CONTAINER" 2>&1); rc=$?
echo "$out"
expect_eq user-container-exit 0 "$rc"
client_steps user "$out"
check user-env sh -c "printf '%s\n' \"\$1\" | grep -q 'group=$g uid=1000'" _ "$out"

# An unchanged spec is not rewritten by a pass with nothing to do.
before=$(stat -c '%i %Y' $spec)
check reconcile-again vfioctl reconcile -c /tmp/vfio.toml
expect_eq spec-untouched-when-unchanged "$before" "$(stat -c '%i %Y' $spec)"

# The device removed from the config: released, gone from the spec, refused by podman.
printf 'version = 1\n' >/tmp/vfio.toml
check reconcile-release vfioctl reconcile -c /tmp/vfio.toml
check released-from-vfio sh -c "[ \"\$(linkname $(pci $addr)/driver)\" != vfio-pci ]"
check spec-removed-when-empty test ! -e $spec
out=$(in_container --device vfioctl.io/device=edu -- "true" 2>&1); rc=$?
echo "$out" | tail -n 3
check podman-refuses-removed-device sh -c "[ $rc -ne 0 ] && printf '%s\n' \"\$1\" | grep -qi 'unresolvable CDI devices'" _ "$out"

# rollback removes the spec (taken again first, so there is one to remove).
printf 'version = 1\n[[device]]\nname = "edu"\naddress = "%s"\ncompanions = ["0000:00:05.1"]\n' $addr >/tmp/vfio.toml
check reconcile-retake vfioctl reconcile -c /tmp/vfio.toml
check spec-back test -s $spec
check rollback vfioctl rollback
check rollback-removes-spec test ! -e $spec
