#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# handles.awk on hand-made traces and daemon logs, for the cases the VM
# tests cannot bring about on demand: a request sent while a device's
# receive works were stuck (a Linux nbd bug, see recv-works.sh) and read
# late or never, with and without the guest's marks; a reply held on the
# way; the daemon answering late; the daemon missing an intake; a request
# the kernel sends after the detach was asked for. Handles are
# in Linux 6.1's little-endian order, as the daemon logs them swapped.
. "$(dirname "$0")/../interop/lib.bash"
AWK="$(cd "$(dirname "$0")" && pwd)/handles.awk"
need awk
cd "$T"
mark() { echo " sh-200 [001] ..... $1: tracing_mark_write: vmtest-$2"; }
ev() { echo " udevd-100 [000] ..... $1: nbd_header_$2: nbd transport event: request 0000000$3, handle $4"; }
# A request answered at once; one sent to the device being attached (with
# MARKS=marks, between the guest's marks of a stuck attach; =before, after
# them), its reply read at
# the detach (READ=late) or never; the same handle again after the
# re-attach, answered at once. LOST: another handle sent on the stuck
# device, after the detach was asked for (=detaching), before
# (=stuck), or after it and answered (=answered), and again after the
# re-attach.
trace() {
    ev 10.000000 sent 1 0x0000000100000001
    ev 10.001000 received 1 0x0000000100000001
    [ "$1" = marks ] && mark 11.000000 attach
    [ "$1" = before ] && mark 11.000000 attach && mark 11.200000 detach
    ev 11.500000 sent 2 0x0000000200010001
    [ "$3" = stuck ] && ev 15.000000 sent 4 0x0000000300010001
    [ "$1" = marks ] && mark 21.500000 detaching
    case $3 in detaching|answered) ev 21.600000 sent 4 0x0000000300010001 ;; esac
    [ "$3" = answered ] && ev 21.700000 received 4 0x0000000300010001
    [ "$2" = late ] && ev 21.900000 received 2 0x0000000200010001
    [ "$1" = marks ] && mark 22.000000 detach && mark 22.100000 attach
    ev 23.000000 sent 3 0x0000000200010001
    ev 23.001000 received 3 0x0000000200010001
    if [ -n "$3" ]; then
        ev 23.500000 sent 5 0x0000000300010001
        ev 23.501000 received 5 0x0000000300010001
    fi
}
d() { echo "$1 uringnbd-vm uringnbd[1]: uringnbd: debug: conn $2: $3"; }
# The daemon's side: intake, reply queued, send completed, for each.
daemon() {
    d 1000.000000 1 "READ cookie 0x100000001000000 flags 0x0 offset 0 length 4096"
    d 1000.000100 1 "reply to READ cookie 0x100000001000000: 0"
    d 1000.000200 1 "replies sent, up to cookie 0x100000001000000"
    if [ "$1" != missed ]; then
        d 1001.500000 3 "READ cookie 0x100010002000000 flags 0x0 offset 0 length 4096"
        d "$([ "$1" = slow ] && echo 1003.000000 || echo 1001.500100)" 3 "reply to READ cookie 0x100010002000000: 0"
        d "$([ "$1" = slow ] && echo 1003.000100 || echo 1001.500200)" 3 "replies sent, up to cookie 0x100010002000000"
    fi
    d 1013.000000 7 "READ cookie 0x100010002000000 flags 0x0 offset 0 length 4096"
    d 1013.000100 7 "reply to READ cookie 0x100010002000000: 0"
    d 1013.000200 7 "replies sent, up to cookie 0x100010002000000"
    if [ -n "$2" ]; then  # only the sending after the re-attach reached it
        d 1013.500000 7 "READ cookie 0x100010003000000 flags 0x0 offset 0 length 4096"
        d 1013.500100 7 "reply to READ cookie 0x100010003000000: 0"
        d 1013.500200 7 "replies sent, up to cookie 0x100010003000000"
    fi
}
# expect RC MARKS READ DAEMON WHAT [LOST]
expect() {
    trace "$2" "$3" "${6:-}" >trace.txt
    daemon "$4" "${6:-}" >daemon.txt
    rc=0
    awk -f "$AWK" trace.txt daemon.txt >out.txt || rc=$?
    [ "$rc" = "$1" ] || { cat out.txt; fail "$5: exit $rc, expected $1"; }
    echo "ok: $5 (exit $rc): $(tail -n 1 out.txt | cut -c 1-160)"
}
expect 0 marks never prompt "stuck and never read, the daemon prompt: counted apart"
expect 0 marks late prompt "stuck and read at the detach, the daemon prompt: counted apart"
expect 2 none never prompt "never read, no marks: held on the way"
expect 1 none late prompt "read 10.4 s late, no marks: over 5 s"
expect 2 before never prompt "never read, sent after a stuck attach's marks: held on the way"
expect 1 marks late slow "stuck, but the daemon answered 1.5 s late: over 5 s"
expect 1 marks never slow "stuck, but the daemon answered 1.5 s late: not excused"
expect 1 marks never missed "the daemon missed an intake"
grep -q 'the daemon logged 2 of the 3' out.txt || fail "the missed intake is not reported"
expect 0 marks never prompt "sent after the detach was asked for, never read by the daemon: counted apart" detaching
grep -q '1 sent after the detach was asked for' out.txt || fail "the request sent at the detach is not reported"
expect 1 marks never prompt "sent to the stuck device before the detach, never read by the daemon" stuck
expect 1 marks never prompt "sent after the detach was asked for and answered, never read by the daemon" answered
