#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# make deb: the package builds from this tree, lintian has no error or
# warning, its files are where the FHS and systemd expect them, the
# configuration is a conffile, the maintainer scripts create the group and
# enable the socket, Depends names only run-time libraries (not Ceph's,
# which are loaded when an rbd: export opens: Suggests), and the
# packaged binary's version is the changelog's. (tests/vm/systemd.sh
# installs, upgrades and purges it under a real systemd.)
. "$(dirname "$0")/lib.bash"
[ "$(id -u)" = 0 ] || skip "make deb installs its build dependencies: needs root"
env -u MAKEFLAGS -u MAKELEVEL make -s deb SANITIZE= >"$T/deb.log" 2>&1 || { cat "$T/deb.log"; fail "make deb"; }
need lintian dpkg-deb dpkg-parsechangelog
deb=$(ls build/deb/uringnbd_*_*.deb)
[ -f "$deb" ] || fail "no package in build/deb"
lintian --fail-on error,warning "$deb" build/deb/*.changes >"$T/lintian.log" 2>&1 ||
    { cat "$T/lintian.log"; fail "lintian"; }
grep -E '^[EW]:' "$T/lintian.log" && fail "lintian errors or warnings"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$T/files"
for f in /usr/sbin/uringnbd /usr/sbin/uringnbdctl /lib/systemd/system/uringnbd.service \
         /lib/systemd/system/uringnbd.socket /lib/systemd/system/uringnbd@.service \
         /usr/lib/sysusers.d/uringnbd.conf /etc/uringnbd/uringnbd.conf \
         /usr/share/man/man8/uringnbd.8.gz /usr/share/man/man8/uringnbdctl.8.gz \
         /usr/share/man/man5/uringnbd.conf.5.gz /usr/share/doc/uringnbd/copyright \
         /usr/share/doc/uringnbd/changelog.gz /usr/share/bash-completion/completions/uringnbdctl \
         /usr/share/bash-completion/completions/uringnbd; do
    grep -qx "$f" "$T/files" || fail "the package lacks $f"
done
grep -E '^/(usr/local|opt|home|srv|var/lib/uringnbd)' "$T/files" && fail "files outside the FHS places"
dpkg-deb -f "$deb" Depends >"$T/depends"
for lib in libev4 liburing2 libgnutls30 libjson-c5 libmicrohttpd12; do
    grep -q "$lib" "$T/depends" || fail "Depends lacks $lib: $(cat "$T/depends")"
done
grep -Eq 'libnbd|qemu|fio|nbdkit|prometheus|check' "$T/depends" && fail "test packages in Depends: $(cat "$T/depends")"
# Ceph only where an rbd: export is served: loaded then, never a dependency.
grep -Eq 'librbd|librados|ceph' "$T/depends" && fail "Ceph in Depends: $(cat "$T/depends")"
dpkg-deb -f "$deb" Suggests | grep -q librbd1 || fail "Suggests lacks librbd1"
dpkg-deb -e "$deb" "$T/control"
grep -qx /etc/uringnbd/uringnbd.conf "$T/control/conffiles" || fail "the configuration is not a conffile"
grep -q systemd-sysusers "$T/control/postinst" || fail "postinst does not create the group"
grep -q 'uringnbd.socket' "$T/control/postinst" || fail "postinst does not enable the socket"
dpkg-deb -x "$deb" "$T/root"
want=$(dpkg-parsechangelog -l debian/changelog -S Version)
[ "$("$T/root/usr/sbin/uringnbd" --version)" = "uringnbd $want" ] ||
    fail "packaged binary says $("$T/root/usr/sbin/uringnbd" --version), the changelog $want"
[ "$("$URINGNBD" --version)" = "uringnbd $want" ] || fail "make's binary says $("$URINGNBD" --version)"
objdump -p "$T/root/usr/sbin/uringnbd" | grep NEEDED | grep -Eq 'rbd|rados' &&
    fail "the packaged binary links Ceph's libraries"
echo "deb: $(basename "$deb"), lintian clean, $(wc -l <"$T/files") paths"
