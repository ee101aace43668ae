#!/usr/bin/env bash
# netem engine, for real: boot a Debian kernel that has sch_netem under qemu (TCG, no KVM
# needed) and run orchestrator/examples/netem_vm_check.rs inside it. That example builds two
# namespaces + veth with lightcone::kernel, shapes them with lightcone's netem netlink encoder
# (delay 50 ms ± 5 ms, loss 1 %), measures UDP RTT and loss, checks the kernel takes every
# encoding, and on a rated link (netem → tbf → prio, issue 15) that DSCP-CS6 probes keep
# their idle RTT while unmarked data saturates the link (and lose it without the filter),
# and prints
# "netem-vm: PASS …" or "netem-vm: FAIL …". This script exits 0 only on PASS.
#
# Cached under ${LIGHTCONE_VM_CACHE:-/var/cache/lightcone-vm} (never in the repo):
#   rootfs/         debootstrap --variant=minbase bookworm (+ linux-image-amd64, iproute2, kmod,
#                   iputils-ping), built once, from the Debian mirror apt is configured with
#   base-<hash>.img ext4 image of rootfs + /lc-init (mkfs.ext4 -d), rebuilt when /lc-init changes
# Each run copies the base image, writes the freshly built test binary into it (debugfs, no
# loop mount), boots it and reads the serial console.
#
# Needs root (debootstrap, namespaces in the guest are the guest's own). Installs debootstrap,
# qemu-system-x86 and e2fsprogs with apt-get if missing. Overall timeout:
# LIGHTCONE_VM_TIMEOUT seconds (default 900, first run included); no qemu is left behind.
# Env: LIGHTCONE_VM_MIRROR overrides the mirror read from apt's sources;
# LIGHTCONE_VM_CHECK_BIN runs that executable instead of building the example.
set -euo pipefail

timeout_s=${LIGHTCONE_VM_TIMEOUT:-900}
if [[ -z ${LC_NETEM_VM_INNER:-} ]]; then
    # One watchdog for everything (apt, debootstrap, cargo, qemu); timeout signals the whole
    # process group, qemu included.
    export LC_NETEM_VM_INNER=1
    exec timeout --kill-after=15 "$timeout_s" "$0" "$@"
fi

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${LIGHTCONE_VM_CACHE:-/var/cache/lightcone-vm}
suite=bookworm
t0=$(date +%s)
log() { printf 'netem-vm.sh [%3ss] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { echo "netem-vm.sh: needs root (debootstrap)" >&2; exit 2; }

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
{ command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null; } || need+=(e2fsprogs)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# shellcheck source=tests/vm/apt-mirror.sh
. "$here/apt-mirror.sh"

rootfs=$cache/rootfs
mkdir -p "$cache"
if [[ ! -f $cache/rootfs.ok ]]; then
    mirror=${LIGHTCONE_VM_MIRROR:-$(apt_mirror | head -n1)}
    [[ -n $mirror ]] || { echo "netem-vm.sh: no '$suite' mirror in apt sources; set LIGHTCONE_VM_MIRROR" >&2; exit 2; }
    log "debootstrap $suite from $mirror into $rootfs (once; cached)"
    rm -rf "$rootfs" "$rootfs.partial"
    debootstrap --variant=minbase --include=linux-image-amd64,iproute2,kmod,iputils-ping \
        "$suite" "$rootfs.partial" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
    mv "$rootfs.partial" "$rootfs"
    touch "$cache/rootfs.ok"
fi
kernel=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -n1)

# /lc-init: PID 1 of the guest. Prints everything to the serial console, powers off.
read -r -d '' lc_init <<'INIT' || true
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
ip link set lo up
echo "lc-init: kernel $(uname -r), clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null) (of: $(cat /sys/devices/system/clocksource/clocksource0/available_clocksource 2>/dev/null))"
if modprobe sch_netem; then echo "lc-init: sch_netem loaded"; else echo "lc-init: modprobe sch_netem failed"; fi
modprobe veth || echo "lc-init: modprobe veth failed"
echo "lc-init: running netem_vm_check"
/lc-netem-check
echo "lc-init: check exit=$?"
echo "lc-init: leftover namespaces: $(ls /run/netns 2>/dev/null | tr '\n' ' ')"
sync
echo o > /proc/sysrq-trigger
sleep 30
INIT
init_hash=$(printf '%s' "$lc_init" | sha256sum | cut -c1-12)
base=$cache/base-$init_hash.img
if [[ ! -f $base ]]; then
    log "building base image $base"
    printf '%s\n' "$lc_init" >"$rootfs/lc-init"
    chmod 755 "$rootfs/lc-init"
    size_mb=$(($(du -sm "$rootfs" | cut -f1) + 256))
    rm -f "$base.partial" "$cache"/base-*.img
    truncate -s "${size_mb}M" "$base.partial"
    mkfs.ext4 -q -F -L lcroot -d "$rootfs" "$base.partial"
    mv "$base.partial" "$base"
fi

bin=${LIGHTCONE_VM_CHECK_BIN:-}
if [[ -z $bin ]]; then
    log "building orchestrator/examples/netem_vm_check.rs"
    (cd "$repo" && cargo build -q -p lightcone --example netem_vm_check)
    bin=$repo/target/debug/examples/netem_vm_check
fi
[[ -x $bin ]] || { echo "netem-vm.sh: $bin not built" >&2; exit 1; }

work=$(mktemp -d "$cache/run.XXXXXX")
qemu_pid=
cleanup() {
    if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        sleep 1
        kill -9 "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 124' TERM INT

cp --sparse=always "$base" "$work/disk.img"
debugfs -w -R "write $bin /lc-netem-check" "$work/disk.img" >/dev/null 2>&1
debugfs -w -R "sif /lc-netem-check mode 0100755" "$work/disk.img" >/dev/null 2>&1
debugfs -R "stat /lc-netem-check" "$work/disk.img" 2>/dev/null | grep -q 'Mode:  *0755' \
    || { echo "netem-vm.sh: could not put the test binary into the image" >&2; exit 1; }

log "booting $(basename "$kernel") under qemu (tcg)"
console=$work/console.log
qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$initrd" \
    -drive "file=$work/disk.img,if=virtio,format=raw" \
    -append "root=/dev/vda rw console=ttyS0 init=/lc-init panic=1 loglevel=4" \
    </dev/null >"$console" 2>&1 &
qemu_pid=$!
wait "$qemu_pid" || true
qemu_pid=

# The guest's own lines (lc-init and the check), without kernel noise.
grep -aE '^(lc-init|netem-vm):' "$console" | tr -d '\r' || true
log "guest done"
if grep -aq '^netem-vm: PASS' "$console"; then
    exit 0
fi
echo "netem-vm.sh: no PASS line; last console lines:" >&2
tail -n 30 "$console" | tr -d '\r' >&2
exit 1
