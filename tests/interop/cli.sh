#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Command line: bad files and options get one clear message naming the
# path and the reason, and exit 1; sockets in use are refused, stale ones
# replaced; the pid file appears once listening and goes at exit.
. "$(dirname "$0")/lib.bash"

# expect_error PATTERN ARGS...: uringnbd exits 1 with PATTERN on stderr.
expect_error() {
    local pattern=$1 rc=0; shift
    timeout 10 "$URINGNBD" "$@" >"$T/out" 2>"$T/err" || rc=$?
    cat "$T/err"
    [ "$rc" -eq 1 ] || fail "uringnbd $*: exit status $rc, expected 1"
    grep -q -- "$pattern" "$T/err" || fail "uringnbd $*: no message matching '$pattern'"
}

expect_error 'export "/nonexistent/disk.img": No such file or directory' -U "$SOCK" /nonexistent/disk.img
expect_error "export \"$T\": not a regular file or block device" -U "$SOCK" "$T"
expect_error 'export "/dev/null": not a regular file or block device' -U "$SOCK" /dev/null
expect_error 'expected one FILE to export, --export or --config' -U "$SOCK"
# ublk: an export that does not exist, and (on a kernel without ublk_drv, as here) the kernel.
truncate -s 1M "$T/u.img"
expect_error '--ublk "nope": no such export' -U "$SOCK" -e "u=$T/u.img" --ublk nope
if [ ! -e /dev/ublk-control ]; then
    expect_error 'export "u": --ublk needs a kernel with ublk_drv' -U "$SOCK" -e "u=$T/u.img,ublk"
    [ ! -e "$SOCK" ] || fail "a daemon that could not make its ublk device left its socket"
fi
expect_error '--threads "0"' -t 0 -U "$SOCK" "$T/x"
expect_error '--threads "2x"' -t 2x -U "$SOCK" "$T/x"
expect_error '--pool-size "1M"' --pool-size 1M -U "$SOCK" "$T/x"
# Sizes that would overflow are refused, not wrapped.
expect_error '--pool-size "9999999999G"' --pool-size 9999999999G -U "$SOCK" "$T/x"
expect_error '--cache-size "99999999999999999999"' --cache-size 99999999999999999999 -U "$SOCK" "$T/x"
expect_error '--cache-size "-4K"' --cache-size -4K -U "$SOCK" "$T/x"
expect_error '--threads "1K"' -t 1K -U "$SOCK" "$T/x"
expect_error '--io-timeout "-1": io-timeout: expected 0 (none) to 86400 seconds' --io-timeout -1 -U "$SOCK" "$T/x"
expect_error '--idle-timeout "1y"' --idle-timeout 1y -U "$SOCK" "$T/x"
expect_error '--busy-poll "10001": busy-poll: expected 0 (adaptive) to 10000 microseconds' --busy-poll 10001 -U "$SOCK" "$T/x"
expect_error '--busy-poll "-5"' --busy-poll -5 -U "$SOCK" "$T/x"
expect_error '--poll-max "10001": poll-max: expected 0 (no polling) to 10000 microseconds' --poll-max 10001 -U "$SOCK" "$T/x"
# TLS and access settings.
expect_error '--tls "yes": tls: expected off, on or require' --tls yes -U "$SOCK" "$T/x"
expect_error 'tls=require needs tls-certificates or tls-psk' --tls require -U "$SOCK" "$T/x"
expect_error 'tls-certificates: "/nonexistent/server-cert.pem"' --tls on \
    --tls-certificates /nonexistent -U "$SOCK" "$T/x"
expect_error '"10.0.0.0/33": expected all, anyipv4' --allow 10.0.0.0/33 -U "$SOCK" "$T/x"
expect_error '"uid:no-such-user-here": no such user' -U "$SOCK" -e "a=$T/x,deny=uid:no-such-user-here"
expect_error 'apply to FILE, and there is none' --allow 127.0.0.1 -U "$SOCK" -e "a=$T/x"
expect_error 'is TLS-only (tls = require or tls-allow), but tls is off' -U "$SOCK" \
    -e "a=$T/x,tls=require"
expect_error '--keepalive "99999"' --keepalive 99999 -U "$SOCK" "$T/x"
expect_error '--max-connections "-1"' --max-connections -1 -U "$SOCK" "$T/x"
expect_error '--max-connections "8k"' --max-connections 8k -U "$SOCK" "$T/x"
expect_error '--handshake-timeout "1.5"' --handshake-timeout 1.5 -U "$SOCK" "$T/x"
expect_error 'usage:' --no-such-option
timeout 10 "$URINGNBD" -V | grep -q '^uringnbd [0-9]' || fail "-V"
# Whole, then searched: grep -q stops reading at its match, and the help (over
# a pipe's 4 KiB of stdio buffer) would then meet a closed pipe under pipefail.
timeout 10 "$URINGNBD" --help >"$T/help" || fail "--help exited with $?"
grep -q -- '--read-only' "$T/help" || fail "--help"
grep -q -- '--throttle-group' "$T/help" || fail "--help does not name --throttle-group"
[ ! -e "$SOCK" ] || fail "a failed start left $SOCK behind"

# A filesystem that refuses O_DIRECT (ramfs; tmpfs accepts it since Linux 6.6).
if [ "$(id -u)" = 0 ] && mkdir "$T/ramfs" && mount -t ramfs ramfs "$T/ramfs" 2>/dev/null; then
    CLEANUP+=("umount '$T/ramfs'")
    truncate -s 1M "$T/ramfs/disk.img"
    expect_error "\"$T/ramfs/disk.img\": the filesystem does not support O_DIRECT" \
        -U "$SOCK" "$T/ramfs/disk.img"
else
    echo "note: not root or no ramfs: O_DIRECT refusal not checked"
    [ "${CI:-}" != true ] || fail "CI runs as root: ramfs must be mountable"
fi

# Pid file once listening; socket in use refused; stale socket replaced.
truncate -s 1M "$T/disk.img"
start_daemon "$T/disk.img"
[ "$(cat "$T/pid")" = "$DAEMON_PID" ] || fail "pid file holds $(cat "$T/pid"), not $DAEMON_PID"
expect_error "unix socket \"$SOCK\": in use by a running server" -U "$SOCK" "$T/disk.img"
timeout 10 nbdinfo --size "$URI" | grep -qx 1048576 || fail "first daemon disturbed"
stop_daemon
[ ! -e "$T/pid" ] || fail "pid file not removed at exit"
[ ! -e "$SOCK" ] || fail "socket not removed at exit"
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$SOCK"
[ -S "$SOCK" ] || fail "could not make a stale socket"
start_daemon "$T/disk.img"
timeout 10 nbdinfo --size "$URI" | grep -qx 1048576 || fail "stale socket not replaced"
stop_daemon

# Workers' rings: io_uring's task work deferred by default where the kernel
# has it (6.1 on), as it comes with --no-defer-taskrun; both serve the same
# bytes, and the start-up log says which is in use.
printf '[global]\ndefer-taskrun = sometimes\n' > "$T/bad.conf"
expect_error 'defer-taskrun: expected yes or no' -c "$T/bad.conf" -U "$SOCK"
head -c 1M /dev/urandom > "$T/data"
kver=$(uname -r | awk -F. '{ print $1 * 1000 + $2 }')
for opt in "" --no-defer-taskrun; do
    : > "$T/daemon.log"
    start_daemon "$T/disk.img" $opt
    timeout 20 nbdcopy --request-size=16384 --requests=16 "$T/data" "$URI" || fail "write ${opt:-(default)}"
    timeout 20 nbdcopy "$URI" "$T/back" || fail "read ${opt:-(default)}"
    cmp "$T/data" "$T/back" || fail "${opt:-(default)}: the bytes read back differ"
    stop_daemon
    if [ -n "$opt" ]; then
        grep -q 'task work as it comes' "$T/daemon.log" || fail "$opt: not in the start-up log"
    elif [ "$kver" -ge 6001 ]; then
        grep -q 'deferred task work' "$T/daemon.log" || fail "Linux $(uname -r): task work not deferred"
    fi
    rm -f "$T/back"
done

# TCP on a loopback port: served; the same port again is refused clearly.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$URINGNBD" -b 127.0.0.1 -p "$port" --pid-file "$T/pid" "$T/disk.img" 2>>"$T/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 1 1000); do [ -s "$T/pid" ] && break; sleep 0.01; done
timeout 10 nbdinfo --size "nbd://127.0.0.1:$port" | grep -qx 1048576 || fail "TCP export not served"
expect_error "listen on 127.0.0.1:$port" -b 127.0.0.1 -p "$port" "$T/disk.img"
stop_daemon
