#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# make install into a DESTDIR: binaries, man pages (mandoc -Tlint clean),
# bash completion (uringnbdctl's commands and uringnbd's options complete),
# systemd units (systemd-analyze verify clean, security exposure <= 1.5,
# Type=notify) and the example configuration, which uringnbd accepts.
. "$(dirname "$0")/lib.bash"
need mandoc systemd-analyze make
D="$(cd "$T" && pwd)/root"
make -s install DESTDIR="$D" PREFIX=/usr B="$(dirname "$URINGNBD")" >"$T/install.log" 2>&1 ||
    { cat "$T/install.log"; fail "make install"; }
for f in usr/sbin/uringnbd usr/sbin/uringnbdctl usr/share/man/man8/uringnbdctl.8 \
         usr/share/bash-completion/completions/uringnbdctl \
         usr/share/bash-completion/completions/uringnbd \
         usr/share/man/man8/uringnbd.8 usr/share/man/man5/uringnbd.conf.5 \
         usr/lib/systemd/system/uringnbd.service usr/lib/systemd/system/uringnbd.socket \
         usr/lib/systemd/system/uringnbd@.service etc/uringnbd/uringnbd.conf \
         usr/share/doc/uringnbd/uringnbd.conf.example; do
    [ -e "$D/$f" ] || fail "make install did not install /$f"
done
"$D/usr/sbin/uringnbd" -V | grep -q '^uringnbd ' || fail "installed binary"
"$D/usr/sbin/uringnbdctl" --help >"$T/ctl-help" || fail "installed uringnbdctl --help"
grep -q '^  export-add name path' "$T/ctl-help" || fail "installed uringnbdctl"
mandoc -Tlint -W warning "$D"/usr/share/man/man8/uringnbd.8 "$D"/usr/share/man/man5/uringnbd.conf.5 \
    "$D"/usr/share/man/man8/uringnbdctl.8 || fail "mandoc -Tlint"
# Completion, as bash runs it: the commands of uringnbdctl, the options of uringnbd.
complete_words() {
    PATH="$D/usr/sbin:$PATH" bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        _${1}; echo "${COMPREPLY[*]}"' _ "$D/usr/share/bash-completion/completions/$1" "$@"
}
[ "$(complete_words uringnbdctl export-r)" = export-remove ] || fail "completion of export-r"
[ "$(complete_words uringnbdctl log-level de)" = debug ] || fail "completion of log-level"
complete_words uringnbd --cont | grep -qw -- --control || fail "completion of uringnbd --cont"
[ "$(complete_words uringnbdctl ublk-r)" = ublk-remove ] || fail "completion of ublk-r"
complete_words uringnbd --ubl | grep -qw -- --ublk || fail "completion of uringnbd --ubl"

# Verify the units as installed; their ExecStart must exist, so point it at DESTDIR.
U="$T/units"
mkdir -p "$U"
for u in uringnbd.service uringnbd.socket uringnbd@.service; do
    sed "s|/usr/sbin/uringnbd|$D/usr/sbin/uringnbd|" "$D/usr/lib/systemd/system/$u" >"$U/$u"
done
cp "$U/uringnbd@.service" "$U/uringnbd@disk0.service"
(cd "$U" && MANPATH="$D/usr/share/man" systemd-analyze verify uringnbd.service uringnbd.socket \
    uringnbd@disk0.service) >"$T/verify.log" 2>&1 || { cat "$T/verify.log"; fail "systemd-analyze verify"; }
[ ! -s "$T/verify.log" ] || { cat "$T/verify.log"; fail "systemd-analyze verify printed warnings"; }
for u in uringnbd.service uringnbd@disk0.service; do
    level=$(cd "$U" && systemd-analyze security --offline=true "$u" 2>/dev/null |
            sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    echo "$u: exposure $level"
    [ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 1.5) }' || fail "$u exposure $level > 1.5"
    grep -q '^Type=notify' "$U/$u" || fail "$u is not Type=notify"
done

# Shipped defaults expose nothing to a user who is not root or in group uringnbd:
# no TCP listener unless TLS is configured.
! grep -q '^ListenStream=.*[0-9]$' "$U/uringnbd.socket" || fail "the socket unit listens on TCP"
grep -q '^SocketMode=0660' "$U/uringnbd.socket" && grep -q '^SocketGroup=uringnbd' "$U/uringnbd.socket" ||
    fail "the unix socket is not 0660 with group uringnbd"
grep -q '^g uringnbd' "$D/usr/lib/sysusers.d/uringnbd.conf" || fail "no sysusers file for the group"
! grep -Eq '^(bind|port) *=' "$D/etc/uringnbd/uringnbd.conf" || fail "the example listens on TCP"

# The example configuration is valid: uringnbd reads it (and reports its missing images).
"$D/usr/sbin/uringnbd" --config "$D/etc/uringnbd/uringnbd.conf" -U "$SOCKDIR/x" 2>"$T/ex.log" &&
    fail "the example configuration started without its images"
grep -q 'export "/srv/nbd/disk0.img": No such file or directory' "$T/ex.log" ||
    { cat "$T/ex.log"; fail "the example configuration was not parsed"; }
