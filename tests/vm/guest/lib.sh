# Helpers for guest-side scenarios (sourced; busybox sh). Every check prints one line
# `CHECK NAME PASS|FAIL [detail]` on the console; the host collects them.

pass() { # NAME [DETAIL]
    echo "$1" >>/run/vmtest/passes
    echo "CHECK $1 PASS${2:+ $2}"
}

fail() { # NAME DETAIL
    echo "$1" >>/run/vmtest/fails
    echo "CHECK $1 FAIL${2:+ $2}"
}

# check NAME CMD...: PASS when CMD exits 0; on failure the detail is CMD's last output line.
check() {
    _name=$1; shift
    if _out=$("$@" 2>&1); then
        pass "$_name"
    else
        fail "$_name" "exit $?: $(printf '%s\n' "$_out" | tail -n 3 | tr '\n' ' ')"
    fi
}

# check_fails NAME PATTERN CMD...: PASS when CMD fails and its output matches PATTERN (grep -E).
check_fails() {
    _name=$1; _pat=$2; shift 2
    if _out=$("$@" 2>&1); then
        fail "$_name" "succeeded but should have failed: $(printf '%s\n' "$_out" | tail -n 2 | tr '\n' ' ')"
    elif printf '%s\n' "$_out" | grep -Eq -- "$_pat"; then
        pass "$_name"
    else
        fail "$_name" "failed without /$_pat/: $(printf '%s\n' "$_out" | tail -n 3 | tr '\n' ' ')"
    fi
}

# expect_eq NAME EXPECTED ACTUAL
expect_eq() {
    if [ "$2" = "$3" ]; then
        pass "$1" "$(oneline "$3")"
    else
        fail "$1" "expected '$(oneline "$2")', got '$(oneline "$3")'"
    fi
}

# oneline TEXT: TEXT with newlines turned into ' | ' (a check's detail is one console line).
oneline() { printf '%s' "$1" | sed ':a;N;$!ba;s/\n/ | /g'; }

# sysattr PATH: a sysfs attribute without its newline, empty when absent.
sysattr() { cat "$1" 2>/dev/null; }

# linkname PATH: the last component of a symlink's target, empty when there is no link.
linkname() { [ -L "$1" ] && basename "$(readlink "$1")"; }

pci() { echo "/sys/bus/pci/devices/$1"; }

# group_of ADDR: the IOMMU group number of a PCI function.
group_of() { linkname "$(pci "$1")/iommu_group"; }

# group_members N: the functions in group N, sorted, space-separated.
group_members() { ls "/sys/kernel/iommu_groups/$1/devices" | sort | tr '\n' ' ' | sed 's/ $//'; }

# wait_for PATH [SECONDS]: wait until PATH exists.
wait_for() {
    _n=$(( ${2:-5} * 20 ))
    while [ ! -e "$1" ] && [ "$_n" -gt 0 ]; do usleep 50000; _n=$((_n - 1)); done
    [ -e "$1" ]
}

# wait_gone PATH [SECONDS]
wait_gone() {
    _n=$(( ${2:-5} * 20 ))
    while [ -e "$1" ] && [ "$_n" -gt 0 ]; do usleep 50000; _n=$((_n - 1)); done
    [ ! -e "$1" ]
}

# bind_vfio ADDR: move a function to vfio-pci with plain sysfs writes.
bind_vfio() {
    echo vfio-pci >"$(pci "$1")/driver_override" || return 1
    if [ -e "$(pci "$1")/driver" ]; then echo "$1" >"$(pci "$1")/driver/unbind" || return 1; fi
    echo "$1" >/sys/bus/pci/drivers_probe || return 1
    [ "$(linkname "$(pci "$1")/driver")" = vfio-pci ]
}

# start_udev: systemd-udevd with the default rules, every device triggered, queue settled.
start_udev() {
    mkdir -p /run/udev
    /lib/systemd/systemd-udevd --daemon --resolve-names=never || return 1
    udevadm trigger --type=subsystems --action=add
    udevadm trigger --type=devices --action=add
    udevadm settle --timeout=10
}

# cue COMMAND [JSON]: ask the host to run a QMP command; waits for its answer.
cue() {
    stty -echo </dev/console 2>/dev/null
    echo "VMTEST-CUE $*" >/dev/console
    if ! read -r -t 20 _ack _res _msg </dev/console; then
        echo "vmtest: no answer to cue $1" >&2; return 1
    fi
    [ "$_ack $_res" = "VMTEST-ACK ok" ] || { echo "vmtest: cue $1: $_res $_msg" >&2; return 1; }
}

# export_file PATH NAME: hand a file to the host (base64 on the console).
export_file() {
    echo "VMTEST-FILE $2"
    base64 "$1"
    echo "VMTEST-FILE-END $2 $(sha256sum "$1" | cut -d' ' -f1)"
}

# as_user 'COMMAND LINE': run it with sh as the unprivileged `user` (uid/gid 1000, no capabilities).
as_user() { su -s /bin/sh user -c "$*"; }
