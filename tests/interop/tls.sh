#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# TLS with real clients, keys made at test time with certtool and psktool:
# X.509 with --tls-verify-peer over TCP (nbdinfo, nbdcopy, qemu-img,
# nbd-client's own TLS listing the exports), then PSK over a unix socket
# (nbdinfo, nbdcopy, qemu-img). Refused cleanly, the daemon serving the
# next client: a client trusting another CA, a client certificate from an
# unknown CA, an expired client certificate, a wrong PSK key, an unknown
# PSK user, a plaintext client. A SIGHUP reloads the certificates.
. "$(dirname "$0")/lib.bash"
need certtool psktool nbdinfo nbdcopy qemu-img nbd-client

K=$T/keys
mkdir -p "$K/server" "$K/ca2" "$K/alice" "$K/other-ca" "$K/stranger" "$K/expired"

# ca_new DIR CN: a CA's key and self-signed certificate in DIR.
ca_new() {
    printf 'cn = %s\nca\ncert_signing_key\nexpiration_days = 30\n' "$2" >"$1/ca.info"
    certtool --generate-privkey --outfile "$1/ca-key.pem" 2>/dev/null
    certtool --generate-self-signed --load-privkey "$1/ca-key.pem" --template "$1/ca.info" \
        --outfile "$1/ca-cert.pem" 2>/dev/null
}
# cert_new CADIR OUT_PREFIX TEMPLATE_LINES: a key and a certificate CADIR's CA signed.
cert_new() {
    printf '%b' "$3" >"$2.info"
    certtool --generate-privkey --outfile "$2-key.pem" 2>/dev/null
    certtool --generate-certificate --load-ca-certificate "$1/ca-cert.pem" \
        --load-ca-privkey "$1/ca-key.pem" --load-privkey "$2-key.pem" --template "$2.info" \
        --outfile "$2-cert.pem" 2>/dev/null
}
ca_new "$K" "uringnbd test CA"
ca_new "$K/ca2" "some other CA"
cert_new "$K" "$K/server/server" \
    'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n'
cp "$K/ca-cert.pem" "$K/server/"
# Clients: libnbd and qemu read ca-cert.pem, client-cert.pem, client-key.pem from a directory.
client_dir() { # DIR CADIR_FOR_TRUST SIGNING_CADIR CN [EXTRA]
    cert_new "$3" "$1/client" "cn = $4\norganization = uringnbd tests\ntls_www_client\nencryption_key\nsigning_key\n$5"
    cp "$2/ca-cert.pem" "$1/ca-cert.pem"
}
client_dir "$K/alice" "$K" "$K" alice 'expiration_days = 30\n'
client_dir "$K/other-ca" "$K/ca2" "$K" alice 'expiration_days = 30\n'
client_dir "$K/stranger" "$K" "$K/ca2" mallory 'expiration_days = 30\n'
client_dir "$K/expired" "$K" "$K" alice \
    'activation_date = "2020-01-01 00:00:00 UTC"\nexpiration_date = "2020-02-01 00:00:00 UTC"\n'
[ -s "$K/expired/client-cert.pem" ] || fail "certtool made no expired certificate"
chmod -R go-rwx "$K"

head -c $((8 << 20)) /dev/urandom >"$T/data"
truncate -s $((16 << 20)) "$T/disk.img"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -f "$T/pid"
"$URINGNBD" -b 127.0.0.1 -p "$PORT" --pid-file "$T/pid" --tls require \
    --tls-certificates "$K/server" --tls-verify-peer "$T/disk.img" 2>>"$T/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 1 1000); do [ -s "$T/pid" ] && break; sleep 0.01; done
[ -s "$T/pid" ] || fail "daemon did not start"
X509="nbds://127.0.0.1:$PORT/?tls-certificates=$K/alice"

# X.509: read, write, compare through three clients.
[ "$(nbdinfo --size "$X509")" = $((16 << 20)) ] || fail "nbdinfo over X.509 TLS"
nbdinfo "$X509" | grep -q "with TLS" || fail "nbdinfo did not report TLS"
nbdcopy "$T/data" "$X509" || fail "nbdcopy in over TLS"
nbdcopy --connections=4 --requests=32 "$X509" "$T/back" || fail "nbdcopy out over TLS"
cmp -n $((8 << 20)) "$T/data" "$T/back" || fail "data read back over TLS differs"
QTLS=(--object "tls-creds-x509,id=tls0,endpoint=client,dir=$K/alice")
QIMG="driver=nbd,host=127.0.0.1,port=$PORT,tls-creds=tls0"
qemu-img compare "${QTLS[@]}" --image-opts "driver=file,filename=$T/data" "$QIMG" >"$T/qcmp" 2>&1 ||
    fail "qemu-img compare over TLS: $(cat "$T/qcmp")"
qemu-io "${QTLS[@]}" --image-opts "$QIMG" -c "write -P 0xa5 $((12 << 20)) 1M" \
    -c "read -P 0xa5 $((12 << 20)) 1M" >"$T/qio" 2>&1 || fail "qemu-io over TLS: $(cat "$T/qio")"
grep -q "read 1048576/1048576" "$T/qio" || fail "qemu-io read back: $(cat "$T/qio")"
timeout 20 nbd-client -l 127.0.0.1 "$PORT" -cacertfile "$K/ca-cert.pem" \
    -certfile "$K/alice/client-cert.pem" -keyfile "$K/alice/client-key.pem" \
    -tlshostname localhost >"$T/nbdclient" 2>&1 || fail "nbd-client -l over TLS: $(cat "$T/nbdclient")"
grep -q "identity CN=alice" "$T/daemon.log" || fail "the client's certificate DN was not logged"

# Refused cleanly; the daemon serves the next client.
refused() { # WHAT URI
    if timeout 20 nbdinfo --size "$2" >"$T/refused" 2>&1; then fail "$1: served"; fi
    [ "$(nbdinfo --size "$X509")" = $((16 << 20)) ] || fail "not serving after: $1"
}
refused "a client trusting another CA" "nbds://127.0.0.1:$PORT/?tls-certificates=$K/other-ca"
refused "a client certificate from an unknown CA" "nbds://127.0.0.1:$PORT/?tls-certificates=$K/stranger"
refused "an expired client certificate" "nbds://127.0.0.1:$PORT/?tls-certificates=$K/expired"
refused "a plaintext client" "nbd://127.0.0.1:$PORT/"
grep -q "TLS handshake failed\|TLS handshake.*: " "$T/daemon.log" || fail "handshake failures not logged"
grep -qi "expired" "$T/daemon.log" || fail "the expired certificate's refusal does not say so"

# SIGHUP reloads the certificates: a new server certificate from another CA.
cp "$K/server/server-cert.pem" "$K/server-cert.old"
cp "$K/server/server-key.pem" "$K/server-key.old"
cert_new "$K/ca2" "$K/server/server" \
    'cn = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n'
kill -HUP "$DAEMON_PID"
for _ in $(seq 1 100); do grep -q "TLS credentials reloaded" "$T/daemon.log" && break; sleep 0.05; done
grep -q "TLS credentials reloaded" "$T/daemon.log" || fail "SIGHUP did not reload the certificates"
# Now the server proves itself with the other CA's certificate.
[ "$(nbdinfo --size "nbds://127.0.0.1:$PORT/?tls-certificates=$K/other-ca")" = $((16 << 20)) ] ||
    fail "the reloaded server certificate is not used"
X509="nbds://127.0.0.1:$PORT/?tls-certificates=$K/other-ca"
refused "a client trusting the replaced certificate's CA" "nbds://127.0.0.1:$PORT/?tls-certificates=$K/alice"
stop_daemon

# PSK over a unix socket, with a config file that a SIGHUP re-reads.
psktool -u alice -p "$K/keys.psk" >/dev/null 2>&1
psktool -u alice -p "$K/wrong.psk" >/dev/null 2>&1
psktool -u bob -p "$K/bob.psk" >/dev/null 2>&1
cat >"$T/conf" <<EOF
[global]
tls = require
tls-psk = $K/keys.psk
[export ""]
path = $T/disk.img
EOF
rm -f "$T/pid"
"$URINGNBD" -U "$SOCK" --pid-file "$T/pid" -c "$T/conf" 2>>"$T/daemon.log" &
DAEMON_PID=$!
for _ in $(seq 1 1000); do [ -s "$T/pid" ] && break; sleep 0.01; done
PSK="nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$K/keys.psk"
[ "$(nbdinfo --size "$PSK")" = $((16 << 20)) ] || fail "nbdinfo over PSK"
nbdcopy "$PSK" "$T/back2" || fail "nbdcopy over PSK"
cmp -n $((8 << 20)) "$T/data" "$T/back2" || fail "data over PSK differs"
mkdir -p "$K/qpsk" && cp "$K/keys.psk" "$K/qpsk/keys.psk"
qemu-img compare --object "tls-creds-psk,id=tls0,endpoint=client,dir=$K/qpsk,username=alice" \
    --image-opts "driver=file,filename=$T/back2" "driver=nbd,path=$SOCK,tls-creds=tls0" >/dev/null 2>&1 ||
    fail "qemu-img over PSK"
X509=$PSK
refused "a wrong PSK key" "nbds+unix://alice@/?socket=$SOCK&tls-psk-file=$K/wrong.psk"
refused "an unknown PSK user" "nbds+unix://bob@/?socket=$SOCK&tls-psk-file=$K/bob.psk"
grep -q "identity alice" "$T/daemon.log" || fail "the PSK identity was not logged"
# A reload takes a new key file for new connections.
sed -i "s|tls-psk = .*|tls-psk = $K/bob.psk|" "$T/conf"
kill -HUP "$DAEMON_PID"
for _ in $(seq 1 100); do grep -q "TLS credentials reloaded" "$T/daemon.log" && break; sleep 0.05; done
grep -q "TLS credentials reloaded" "$T/daemon.log" || fail "SIGHUP did not reload the credentials"
[ "$(nbdinfo --size "nbds+unix://bob@/?socket=$SOCK&tls-psk-file=$K/bob.psk")" = \
    $((16 << 20)) ] || fail "the reloaded PSK file is not used"
X509="nbds+unix://bob@/?socket=$SOCK&tls-psk-file=$K/bob.psk"
refused "a PSK user removed by the reload" "$PSK"
stop_daemon
echo "TLS: X.509 (verify-peer) and PSK with nbdinfo, nbdcopy, qemu-img, qemu-io, nbd-client; bad keys refused"
