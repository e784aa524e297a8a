# SPDX-License-Identifier: BSD-3-Clause
# Shared by the interop tests: a daemon per test on a private unix socket,
# an image on a filesystem that does O_DIRECT, cleanup on any exit, and
# fail/skip that say why. Exit 0 pass, 1 fail, 77 skip.
set -euo pipefail

URINGNBD=${URINGNBD:-build/uringnbd}
: "${TEST_TMPDIR:=build/tmp}"
mkdir -p "$TEST_TMPDIR"
T=$(mktemp -d "$TEST_TMPDIR/$(basename "$0" .sh).XXXXXX")
SOCKDIR=$(mktemp -d /tmp/uringnbd-test.XXXXXX)
SOCK=$SOCKDIR/sock
URI="nbd+unix:///?socket=$SOCK"
DAEMON_PID=
CLEANUP=()

cleanup() {
    local i
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" || true; done
    if [ -n "$DAEMON_PID" ]; then kill -9 "$DAEMON_PID" 2>/dev/null || true; fi
    rm -rf "$SOCKDIR"
}
trap cleanup EXIT

fail() {
    echo "FAIL $(basename "$0"): $*" >&2
    if [ -f "$T/daemon.log" ]; then echo "---- daemon log ----" >&2; tail -n 50 "$T/daemon.log" >&2; fi
    exit 1
}
skip() { echo "SKIP $(basename "$0"): $*" >&2; exit 77; }
need() { for c in "$@"; do command -v "$c" >/dev/null || skip "$c is not installed"; done; }

# log_time: each line of stdin with the wall-clock time it was read at.
log_time() {
    local line
    if perl -MTime::HiRes -e 1 2>/dev/null; then
        exec perl -MTime::HiRes=time -pe 'BEGIN { $| = 1 } $_ = sprintf("%.6f ", time) . $_'
    fi
    while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done
}

# start_daemon IMAGE [OPTIONS...]: serves IMAGE on $SOCK, returns once listening.
# With DAEMON_LOG_TIME set, daemon.log's lines carry the time they were written.
start_daemon() {
    local img=$1; shift
    rm -f "$T/pid"
    if [ -n "${DAEMON_LOG_TIME:-}" ]; then
        "$URINGNBD" -U "$SOCK" --pid-file "$T/pid" "$@" "$img" 2> >(log_time >>"$T/daemon.log") &
    else
        "$URINGNBD" -U "$SOCK" --pid-file "$T/pid" "$@" "$img" 2>>"$T/daemon.log" &
    fi
    DAEMON_PID=$!
    for _ in $(seq 1 1000); do
        [ -s "$T/pid" ] && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "daemon exited during start-up"
        sleep 0.01
    done
    fail "daemon did not start within 10 s"
}

# stop_daemon: SIGTERM; the daemon must exit 0 within 10 s.
stop_daemon() {
    local rc=0
    kill -TERM "$DAEMON_PID"
    timeout 10 tail --pid="$DAEMON_PID" -f /dev/null || fail "daemon did not exit after SIGTERM"
    wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=
    [ "$rc" -eq 0 ] || fail "daemon exited with status $rc"
}
