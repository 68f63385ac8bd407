# The planner against the real guest (issue 6): bridge group, multi-function pair, NVMe and an
# unknown address, planned with `reconcile --dry-run`; a dry run changes nothing; and a dry run
# against the live guest equals one against a snapshot of it (`--host`).
# vmtest: layout=default

bridge_nic=0000:02:01.0   # e1000 behind pcie-pci-bridge 00:04.0, with virtio-net 02:02.0
edu=0000:00:05.0          # multifunction slot with pci-testdev 00:05.1, both driverless
nvme=0000:01:00.0

dry() { # CONFIG [ARGS...]: run a dry run, print its output, return its exit status
    _c=$1; shift
    vfioctl reconcile --dry-run -c "$_c" "$@" 2>&1
}

printf 'version = 1\n\n[[device]]\nname = "old-nic"\naddress = "%s"\n' $bridge_nic >/tmp/bridge.toml
out=$(dry /tmp/bridge.toml); rc=$?
expect_eq bridge-sibling-exit 1 "$rc"
case "$out" in
    *'0000:02:02.0'*'virtio-pci'*'companions = ["0000:02:02.0"]'*) pass bridge-sibling-named ;;
    *) fail bridge-sibling-named "$(oneline "$out")" ;;
esac

printf 'version = 1\n\n[[device]]\nname = "old-nic"\naddress = "%s"\ncompanions = ["0000:02:02.0"]\n' \
    $bridge_nic >/tmp/bridge-ok.toml
out=$(dry /tmp/bridge-ok.toml --json); rc=$?
expect_eq bridge-companion-exit 0 "$rc"
case "$out" in
    *'"action": "bind"'*'"device": "0000:02:01.0"'*'"driver": "vfio-pci"'*) pass bridge-companion-binds ;;
    *) fail bridge-companion-binds "$(oneline "$out")" ;;
esac
case "$out" in
    *'"device": "0000:00:04.0"'*) fail bridge-left-alone "the bridge is touched" ;;
    *) pass bridge-left-alone ;;
esac

printf 'version = 1\n\n[[device]]\nname = "edu"\naddress = "%s"\n' $edu >/tmp/edu.toml
out=$(dry /tmp/edu.toml); rc=$?
expect_eq multifunction-driverless-sibling-exit 0 "$rc"
case "$out" in
    *'0000:00:05.1 (no driver)'*'left alone'*) pass multifunction-sibling-left-alone ;;
    *) fail multifunction-sibling-left-alone "$(oneline "$out")" ;;
esac

printf 'version = 1\n\n[[device]]\nname = "disk"\naddress = "%s"\n' $nvme >/tmp/nvme.toml
vfioctl reconcile --check -c /tmp/nvme.toml >/dev/null 2>&1
expect_eq nvme-check-pending 3 "$?"
expect_eq dry-run-changed-nothing nvme "$(linkname "$(pci $nvme)/driver")"
expect_eq dry-run-left-override "(null)" "$(sysattr "$(pci $nvme)/driver_override")"

printf 'version = 1\n\n[[device]]\nname = "ghost"\naddress = "0000:0a:00.0"\n' >/tmp/ghost.toml
out=$(dry /tmp/ghost.toml); rc=$?
expect_eq unknown-address-exit 1 "$rc"
case "$out" in
    *'0000:0a:00.0 is not present'*) pass unknown-address-named ;;
    *) fail unknown-address-named "$(oneline "$out")" ;;
esac

# Live and snapshot agree (same config covering all of the above).
cat /tmp/bridge-ok.toml >/tmp/all.toml
printf '\n[[device]]\nname = "edu"\naddress = "%s"\n\n[[device]]\nname = "disk"\naddress = "%s"\n' \
    $edu $nvme >>/tmp/all.toml
check snapshot-taken vfioctl snapshot -o /tmp/guest.json
vfioctl reconcile --dry-run --json -c /tmp/all.toml >/tmp/live.json 2>/dev/null
vfioctl reconcile --dry-run --json -c /tmp/all.toml --host /tmp/guest.json >/tmp/file.json 2>/dev/null
check live-equals-snapshot cmp /tmp/live.json /tmp/file.json
