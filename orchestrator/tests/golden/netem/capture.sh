#!/usr/bin/env bash
# Capture the TCA_OPTIONS payload that iproute2's `tc` sends for a netem qdisc, once per
# configuration below, into golden files for orchestrator/tests/netem_golden.rs.
#
# How: a throwaway namespace with a veth pair; `tc qdisc replace dev lcg0 root netem ARGS`
# runs under `strace -e write=all`, which hex-dumps the RTM_NEWQDISC request. The request is
# sent (and dumped) before the kernel answers, so this works on kernels without sch_netem
# (tc then fails with "Specified qdisc kind is unknown", which we expect and ignore).
# From the request we keep the TCA_OPTIONS attribute's payload (tc_netem_qopt followed by
# the TCA_NETEM_* attributes) and write it as hex, 32 bytes a line, to NAME.hex, with the
# exact command and tc version in a header; NAME.msg.hex holds the whole request (seq/pid
# zeroed).
#
# Needs root, iproute2 (tc, ip), strace, python3. Leaves nothing behind (trap).
# Usage: capture.sh [OUTDIR]   (default: the directory of this script)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
ns=lcgold$$
for t in ip tc strace python3; do command -v "$t" >/dev/null || { echo "capture.sh: need $t" >&2; exit 1; }; done

cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link add lcg0 type veth peer name lcg1
ip -n "$ns" link set lcg0 up

capture() {
    local name=$1; shift
    local args="$*"
    local raw
    raw=$(mktemp)
    # tc exits non-zero without sch_netem; the dump is what we want.
    ip netns exec "$ns" strace -f -e trace=sendmsg -e write=all -o "$raw" \
        tc qdisc replace dev lcg0 root netem $args >/dev/null 2>&1 || true
    python3 - "$raw" "$out/$name.hex" "tc qdisc replace dev DEV root netem $args" "$(tc -V)" <<'PY'
import re, struct, sys
raw, dst, cmd, ver = sys.argv[1:5]
# strace -e write=all prints " | 00000  xx xx .. |ascii|" lines after each sendmsg.
msgs, cur = [], None
for line in open(raw):
    if 'sendmsg(' in line:
        cur = bytearray(); msgs.append(cur); continue
    m = re.match(r'\s*\|\s*([0-9a-f]{5})\s+((?:[0-9a-f]{2}\s+)+)', line)
    if m and cur is not None:
        cur += bytes(int(b, 16) for b in m.group(2).split())
RTM_NEWQDISC, TCA_OPTIONS = 36, 2
for msg in msgs:
    if len(msg) < 16: continue
    nlen, ntype = struct.unpack_from('<IH', msg, 0)
    if ntype != RTM_NEWQDISC: continue
    off = 16 + 20  # nlmsghdr + struct tcmsg
    while off + 4 <= nlen:
        alen, atype = struct.unpack_from('<HH', msg, off)
        if atype & 0x3fff == TCA_OPTIONS:
            payload = bytes(msg[off + 4: off + alen])
            with open(dst, 'w') as f:
                f.write('# lightcone netem golden: TCA_OPTIONS payload (netlink attribute header stripped)\n')
                f.write('# command: %s\n' % cmd)
                f.write('# tool: %s; nlmsg_flags=0x%04x; captured by capture.sh\n'
                        % (ver, struct.unpack_from('<H', msg, 6)[0]))
                f.write('# length: %d bytes\n' % len(payload))
                for i in range(0, len(payload), 32):
                    f.write(payload[i:i + 32].hex() + '\n')
            # The whole request too, for the message framing (header, flags, tcmsg, TCA_KIND);
            # nlmsg_seq and nlmsg_pid zeroed (tc puts the time in seq).
            whole = bytearray(msg[:nlen])
            whole[8:16] = bytes(8)
            with open(dst[:-len('.hex')] + '.msg.hex', 'w') as f:
                f.write('# lightcone netem golden: whole RTM_NEWQDISC request, nlmsg_seq/pid zeroed\n')
                f.write('# command: %s\n' % cmd)
                f.write('# tool: %s; captured by capture.sh\n' % ver)
                f.write('# length: %d bytes\n' % len(whole))
                for i in range(0, len(whole), 32):
                    f.write(bytes(whole[i:i + 32]).hex() + '\n')
            print('%s: %d bytes' % (dst, len(payload)))
            sys.exit(0)
        off += (alen + 3) & ~3
sys.exit('no RTM_NEWQDISC with TCA_OPTIONS captured for: ' + cmd)
PY
    rm -f "$raw"
}

# Each line: golden name, then the netem arguments exactly as given to tc.
capture basic       delay 50ms 5ms loss 1%
capture full_normal delay 20ms 2ms 25% distribution normal loss 1% 25% duplicate 0.5% corrupt 0.1% reorder 25% 50% gap 5 rate 100mbit limit 1000
capture ge_pareto   delay 100ms 10ms distribution pareto loss gemodel 1% 10% 70% 0.1% limit 5000
capture long_paretonormal delay 10s 1s 10% distribution paretonormal rate 40gbit 20 limit 100000
capture loss_only   loss random 2% 10% limit 200
capture duplicate_corrupt_corr delay 1ms duplicate 3% 20% corrupt 2% 30% rate 1500kbit -10
