# Guest helpers for podman scenarios (`# vmtest: bundle=podman`); sourced after lib.sh.
#
# podman_setup: what bookworm's podman needs on an initramfs root: cgroup2, a /dev/log listener
# (conmon waits for one otherwise), the storage and tmp dirs on tmpfs, and a container root
# filesystem with busybox and the static edu client (no image pull).
ROOTFS=/srv/rootfs

podman_setup() {
    mkdir -p /sys/fs/cgroup /dev/shm
    grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup || return 1
    # podman's locks are POSIX shared memory
    grep -q ' /dev/shm ' /proc/mounts || mount -t tmpfs -o mode=1777 tmpfs /dev/shm || return 1
    # Let the root cgroup hand its controllers down (crun puts the container in a child).
    for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
        echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
    done
    syslogd -O /run/syslog 2>/dev/null
    mkdir -p /run/containers /run/libpod /var/run
    mkdir -p $ROOTFS/bin $ROOTFS/usr/bin $ROOTFS/dev $ROOTFS/proc $ROOTFS/sys $ROOTFS/etc \
        $ROOTFS/tmp $ROOTFS/run
    cp /bin/busybox $ROOTFS/bin/busybox || return 1
    ln -sf busybox $ROOTFS/bin/sh
    for t in ls cat grep cut stat id test echo; do ln -sf busybox $ROOTFS/bin/$t; done
    cp /usr/bin/vfio-edu-client-static $ROOTFS/usr/bin/vfio-edu-client || return 1
    printf 'root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000:user:/:/bin/sh\n' >$ROOTFS/etc/passwd
    printf 'root:x:0:\nuser:x:1000:\n' >$ROOTFS/etc/group
    podman info >/tmp/podman-info 2>&1
}

# in_container [PODMAN RUN OPTIONS] -- SCRIPT: run SCRIPT with sh in a fresh container on the
# prepared root, without network; podman's own messages go to stderr.
in_container() {
    _opts=""
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do _opts="$_opts $1"; shift; done
    shift
    # shellcheck disable=SC2086
    podman run --rm --network none $_opts --rootfs "$ROOTFS" /bin/sh -c "$*"
}

# The edu client inside a container, on the group node and the first address the CDI device
# gave it (VFIOCTL_PCI_ADDRESSES).
EDU_IN_CONTAINER='a=${VFIOCTL_PCI_ADDRESSES%%,*}; g=""; for n in /dev/vfio/*; do case $n in */vfio) ;; *) g=${n##*/};; esac; done; echo "addresses=$VFIOCTL_PCI_ADDRESSES group=$g uid=$(id -u)"; vfio-edu-client "$g" "$a"'
