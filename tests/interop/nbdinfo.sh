#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdinfo reads size, block sizes and flags; --list lists the export.
. "$(dirname "$0")/lib.bash"
need nbdinfo
truncate -s 100M "$T/disk.img"
start_daemon "$T/disk.img" -n disk0 -d "test disk"
out=$(timeout 30 nbdinfo "nbd+unix:///disk0?socket=$SOCK")
echo "$out"
grep -q 'export-size: 104857600' <<<"$out" || fail "size not reported"
grep -q 'can_flush: true' <<<"$out" || fail "flush not advertised"
grep -q 'can_fua: true' <<<"$out" || fail "FUA not advertised"
grep -q 'can_multi_conn: true' <<<"$out" || fail "multi-conn not advertised"
grep -q 'block_size_minimum: 1$' <<<"$out" || fail "minimum block size (any offset is served)"
grep -q 'block_size_maximum: 33554432' <<<"$out" || fail "maximum block size"
grep -q 'description: test disk' <<<"$out" || fail "description not reported"
list=$(timeout 30 nbdinfo --list "$URI")
echo "$list"
grep -q 'export="disk0"' <<<"$list" || fail "export not listed"
grep -q 'description: test disk' <<<"$list" || fail "description not listed"
# The default name is not mapped to another export.
if timeout 30 nbdinfo "$URI" >/dev/null 2>&1; then fail "unknown export \"\" was served"; fi
stop_daemon
