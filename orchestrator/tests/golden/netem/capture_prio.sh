#!/usr/bin/env bash
# Capture the whole netlink requests iproute2's `tc` sends for the qdisc tree the netem
# engine builds below netem on a rated link (orchestrator/src/link/netem_prio.rs): the tbf
# at netem's class 1:1, the prio qdisc under it and the u32 filter that sends DSCP >= 48 to
# band 20:1. Golden files
# for orchestrator/tests/netem_golden.rs (`tree_*`).
#
# Same method as capture.sh: a throwaway namespace with a veth pair, each command under
# `strace -e write=all`; the request is dumped before the kernel answers, so kernels
# without sch_prio (this machine) still give the bytes ("Specified qdisc kind is unknown"
# and "Parent Qdisc doesn't exists" are expected). NAME.msg.hex holds the whole request,
# nlmsg_seq/pid zeroed.
#
# Needs root, iproute2 (tc, ip), strace, python3. Leaves nothing behind (trap).
# Usage: capture_prio.sh [OUTDIR]   (default: the directory of this script)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
ns=lcgoldp$$
for t in ip tc strace python3; do command -v "$t" >/dev/null || { echo "capture_prio.sh: need $t" >&2; exit 1; }; done

cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link add lcg0 type veth peer name lcg1
ip -n "$ns" link set lcg0 up

capture() {
    local name=$1; shift
    local raw
    raw=$(mktemp)
    ip netns exec "$ns" strace -f -e trace=sendmsg -e write=all -o "$raw" tc "$@" >/dev/null 2>&1 || true
    python3 - "$raw" "$out/$name.msg.hex" "tc $*" "$(tc -V)" <<'PY'
import re, struct, sys
raw, dst, cmd, ver = sys.argv[1:5]
msgs, cur = [], None
for line in open(raw):
    if 'sendmsg(' in line:
        cur = bytearray(); msgs.append(cur); continue
    m = re.match(r'\s*\|\s*([0-9a-f]{5})\s+((?:[0-9a-f]{2}\s+)+)', line)
    if m and cur is not None:
        cur += bytes(int(b, 16) for b in m.group(2).split())
RTM_NEWQDISC, RTM_NEWTFILTER = 36, 44
for msg in msgs:
    if len(msg) < 16: continue
    nlen, ntype = struct.unpack_from('<IH', msg, 0)
    if ntype not in (RTM_NEWQDISC, RTM_NEWTFILTER): continue
    whole = bytearray(msg[:nlen])
    whole[8:16] = bytes(8)
    with open(dst, 'w') as f:
        f.write('# lightcone netem golden: whole request, nlmsg_seq/pid zeroed\n')
        f.write('# command: %s\n' % cmd.replace('lcg0', 'DEV'))
        f.write('# tool: %s; captured by capture_prio.sh\n' % ver)
        f.write('# length: %d bytes\n' % len(whole))
        for i in range(0, len(whole), 32):
            f.write(bytes(whole[i:i + 32]).hex() + '\n')
    print('%s: %d bytes' % (dst, len(whole)))
    sys.exit(0)
sys.exit('no RTM_NEWQDISC/RTM_NEWTFILTER captured for: ' + cmd)
PY
    rm -f "$raw"
}

# 200 Mbit/s = 25,000,000 bytes/s, a bucket of two full frames (2 x 1,514 bytes).
# (tc needs a limit; the engine sends 0, the test accounts for it.)
capture tree_tbf qdisc replace dev lcg0 parent 1:1 handle 10: tbf rate 200mbit burst 3028 limit 1514000
capture tree_prio qdisc replace dev lcg0 parent 10:1 handle 20: prio bands 2 priomap 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1
capture tree_pfifo qdisc replace dev lcg0 parent 20:1 handle 21: pfifo limit 1000
capture tree_filter filter add dev lcg0 parent 20: protocol ip pref 1 u32 match ip dsfield 0xc0 0xc0 flowid 20:1
