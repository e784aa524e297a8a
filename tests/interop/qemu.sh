#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qemu-io patterns and qemu-img compare/convert against the export.
. "$(dirname "$0")/lib.bash"
need qemu-io qemu-img
truncate -s 64M "$T/disk.img"
start_daemon "$T/disk.img"
Q="nbd+unix:///?socket=$SOCK"
timeout 60 qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 4M 64k' \
    -c 'write -P 0xef 63M 1M' "$Q" | tee "$T/w.log" || fail "qemu-io write"
timeout 60 qemu-io -f raw -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 4M 64k' \
    -c 'read -P 0 1M 3M' -c 'read -P 0xef 63M 1M' "$Q" | tee "$T/r.log" || fail "qemu-io read"
grep -q 'Pattern verification failed' "$T/r.log" && fail "pattern verification failed"
timeout 60 qemu-img compare -f raw -F raw "$T/disk.img" "$Q" || fail "qemu-img compare: image differs"
# Copy a qcow2 of known content in through the export, compare it back.
timeout 60 qemu-img create -q -f qcow2 "$T/src.qcow2" 64M
timeout 60 qemu-io -f qcow2 -c 'write -P 0x5a 8M 2M' "$T/src.qcow2" >/dev/null
timeout 60 qemu-img convert -n -f qcow2 -O raw "$T/src.qcow2" "$Q" || fail "qemu-img convert"
timeout 60 qemu-img compare -f qcow2 -F raw "$T/src.qcow2" "$Q" || fail "converted image differs"
stop_daemon
