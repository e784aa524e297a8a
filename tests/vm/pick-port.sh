#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Claims the next free virtio-serial port (mkdir is atomic) and joins this
# connection to it.
for p in $(cat /tmp/ports); do
    if mkdir /tmp/claim.$p 2>/dev/null; then
        exec /usr/bin/socat STDIO /dev/$p
    fi
done
exit 1
