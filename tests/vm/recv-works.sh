#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# recv-works DEV N: in a test guest, waits up to 10 s for N receive works
# of nbd device DEV to run. Prints how many run and exits 0 if all do; if
# not, prints "K of DEV's N receive works run after 10 s" with the
# workqueue's threads and exits 1.
#
# Each connection's replies are read by a receive work on the device's
# workqueue (DEV-recv, WQ_MEM_RECLAIM). If making a worker thread takes
# the kernel too long (a loaded host under TCG), the rescuer thread takes
# the queued works and runs them one after another; a receive work never
# returns while its connection lives, so the others never start, and the
# replies on their connections sit unread in the guest's sockets until the
# kernel times the requests out (a Linux nbd bug: "nbd: Don't use
# workqueue to handle recv work", Xie Yongji, 2021, not merged). A busy
# worker's comm ends in +DEV-recv, the rescuer's too: once N run, none is
# stuck, and none can be later (works are queued only at attach).
dev=$1 want=$2 n=0
for i in $(seq 1 100); do
    n=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c "+$dev-recv\$")
    [ "$n" -ge "$want" ] && { echo "$n"; exit 0; }
    sleep 0.1
done
echo "$n of $dev's $want receive works run after 10 s (its workqueue's threads:" \
    "$(grep -l "$dev-recv" /proc/[0-9]*/comm 2>/dev/null | while read -r f; do printf '%s ' "$(cat "$f")"; done))"
exit 1
