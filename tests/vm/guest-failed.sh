# SPDX-License-Identifier: BSD-3-Clause
# Sourced by the VM tests (after tests/interop/lib.bash): guest_failed N
# fails the test for a guest that did not print GUEST PASS, showing the last
# N lines of its console ($T/console.log) and qemu's output, then its steps
# and its GUEST FAIL line last, where the test log's shortened tail (the
# last 60 lines, tests/run-tests.sh) still shows them.
guest_failed() {
    echo "---- guest console ----" >&2
    tail -n "$1" "$T/console.log" >&2
    cat "$T/qemu.log" >&2
    echo "---- guest steps ----" >&2
    grep '^guest:\|^GUEST' "$T/console.log" | tr -d '\r' | tail -n 25 >&2
    fail "the guest did not pass: $(grep -m 1 '^GUEST FAIL\|^GUEST STUCK' "$T/console.log" | tr -d '\r' | cut -c 1-600)"
}
