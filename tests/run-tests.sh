#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Runs test programs and scripts, each bounded by a timeout, and prints one
# line per test and a closing "N passed, N failed, N skipped" line.
# Exit status: 0 if none failed. A test exits 0 (pass), 77 (skip) or else fails.
# Each runs for at most TEST_TIMEOUT seconds (300), or what its own
# "# test-timeout: N" line asks for; TEST_DEADLINE tells it when that ends,
# in seconds of /proc/uptime (the wall clock may be stepped meanwhile).
set -u
: "${TEST_TMPDIR:=build/tmp}"
: "${TEST_TIMEOUT:=300}"
mkdir -p "$TEST_TMPDIR/logs"
pass=0 fail=0 skip=0 failed=()
for t in "$@"; do
    name=$(basename "$t"); name=${name%.sh}
    log="$TEST_TMPDIR/logs/$name.log"
    # A script may need longer (the VM tests, under TCG): "# test-timeout: N".
    limit=$TEST_TIMEOUT
    if [ "$(head -c 2 "$t")" = "#!" ]; then
        n=$(sed -n 's/^# test-timeout: \([0-9][0-9]*\)$/\1/p' "$t" | head -n 1)
        [ -n "$n" ] && [ "$n" -gt "$limit" ] && limit=$n
    fi
    # When the test will be stopped, so it can stop a part of its own first and say why.
    export TEST_DEADLINE=$(($(cut -d. -f1 /proc/uptime) + limit))
    start=$(date +%s.%N)
    timeout -k 10 "$limit" "$t" >"$log" 2>&1
    rc=$?
    secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
    case $rc in
    0)  pass=$((pass + 1)); printf '  PASS    %-28s %5ss\n' "$name" "$secs" ;;
    77) skip=$((skip + 1)); printf '  SKIP    %-28s %s\n' "$name" "$(grep -m1 -i skip "$log")" ;;
    *)  fail=$((fail + 1)); failed+=("$name")
        printf '  FAIL    %-28s %5ss (exit %d)\n' "$name" "$secs" "$rc"
        sed 's/^/    | /' "$log" | tail -n 60 ;;
    esac
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
