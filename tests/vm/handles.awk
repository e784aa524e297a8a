# SPDX-License-Identifier: BSD-3-Clause
# awk -f handles.awk TRACE DAEMON_LOG: matches the kernel's nbd tracepoints
# (nbd_header_sent / nbd_header_received, "handle 0x...") against the
# daemon's debug log ("cookie 0x..." at intake, "reply to ... cookie" when
# its reply is queued, "replies sent" when the send completes),
# each line of which starts with the time it was written. A handle is
# reused (each device numbers from 1, and a tag's cookie moves on only
# when a request is retried), so a reply answers the latest sending of its
# handle still open, and the k-th sending is the daemon's k-th intake of
# that cookie. The
# kernel of Debian 12 (6.1) puts its handle on the wire in its own
# little-endian byte order, later kernels in network order: both are looked
# up. Prints a summary and one block per request sent and never answered.
# A guest that finds a device's receive works stuck (recv-works.sh: a Linux
# nbd bug) detaches and attaches it again, writing "vmtest-attach" and
# "vmtest-detach" to the trace: a request sent between the two that the
# daemon answered and sent within a second is counted apart, as held by
# that bug, whether the kernel never read its reply or read it late (at the
# detach); one the daemon did not answer so fails as any other. It also
# writes "vmtest-detaching" just before it asks for the detach: the kernel
# may still send a request on that device after its disconnect request,
# which the daemon rightly never reads (nothing after NBD_CMD_DISC is), so
# a sending after that mark that the kernel never saw answered, of a
# handle the daemon logged fewer times than the kernel sent it, is counted
# apart too and takes no intake in the matching.
# Exits 1 if the daemon did not answer one of those in time (never logged
# it, queued its reply late, or never completed the send) or if any request
# was answered more than 5 s after the kernel sent it, 2 if it did
# answer and send each of them within a second (the reply was held on the
# way to the guest), 0 if every request was answered.
function pad(c) { sub(/^0x/, "", c); sub(/:$/, "", c); while (length(c) < 16) c = "0" c; return tolower(c) }
function swap(c,   s, i) { s = ""; for (i = 15; i >= 1; i -= 2) s = s substr(c, i, 2); return s }
function hexval(s,   v, i) { v = 0; for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return v }
FNR == NR {
    for (i = 1; i < NF; i++) {
        if ($i == "handle") h = pad($(i + 1))
        if ($i ~ /^[0-9]+\.[0-9]+:$/) at = substr($i, 1, length($i) - 1)
    }
    if (/tracing_mark_write: vmtest-attach/) { attach_at = at; detaching_at = ""; next }
    if (/tracing_mark_write: vmtest-detaching/) { detaching_at = at; next }
    if (/tracing_mark_write: vmtest-detach$/) {
        ++nwin; win_from[nwin] = attach_at; win_to[nwin] = at
        win_detaching[nwin] = detaching_at == "" ? at : detaching_at
        next
    }
    # The kernel traces a sending after its header went out, so a quick
    # reply, traced on another CPU, may come first: it answers the next
    # sending of its handle.
    if (/nbd_header_sent/) {
        k = ++nsent[h]; sent[h, k] = at; order[++n] = h SUBSEP k
        if (early[h] > 0) { early[h]--; got[h, k] = at } else open_[h, ++nopen[h]] = k
    }
    # A reply answers the latest sending of its handle still open.
    if (/nbd_header_received/) {
        if (nopen[h] > 0) got[h, open_[h, nopen[h]--]] = at
        else early[h]++
    }
    next
}
function conn_of(line,   f, i) { split(line, f, " "); for (i = 1; i < 10; i++) if (f[i] == "conn") return f[i + 1]; return "" }
# Replies go out in the order they were queued, per connection: "replies
# sent, up to cookie X" covers every reply queued on it up to X's.
/: replies sent/ {
    cn = conn_of($0); x = pad($NF); j = ++nsends[cn]
    sends[cn, j] = $1; line_sends[cn, j] = $0; upto[cn, j] = (cn, x) in qpos ? qpos[cn, x] : 0
    next
}
{
    for (i = 1; i < NF; i++) if ($i == "cookie") {
        c = pad($(i + 1))
        if (/reply to/) {
            k = ++nrep[c]; rep[c, k] = $1; line_rep[c, k] = $0
            cn = conn_of($0); qpos[cn, c] = ++nq[cn]; pos[c, k] = nq[cn]
        }
        else { k = ++nin[c]; in_[c, k] = $1; line_in[c, k] = $0 }
    }
}
# When the daemon's send of its k-th reply to cookie c completed: its
# connection's next completed send after the reply was queued (0: none).
function send_done(c, k,   cn, s) {
    if (!((c, k) in rep)) return 0
    cn = conn_of(line_in[c, k])
    for (s = 1; s <= nsends[cn]; s++) if (upto[cn, s] >= pos[c, k]) { send_line = line_sends[cn, s]; return sends[cn, s] }
    return 0
}
# The daemon answered it and its send completed, each within a second.
function prompt(c, k,   done) {
    done = send_done(c, k)
    return (c, k) in rep && done && rep[c, k] - in_[c, k] < 1 && done - rep[c, k] < 1
}
# Sent while a device's receive works were stuck, before the guest detached it.
function in_stuck_window(h, k,   w) {
    for (w = 1; w <= nwin; w++)
        if (sent[h, k] + 0 >= win_from[w] + 0 && sent[h, k] + 0 <= win_to[w] + 0) return 1
    return 0
}
# Sent after the guest asked to detach a stuck device.
function in_detaching(h, k,   w) {
    for (w = 1; w <= nwin; w++)
        if (sent[h, k] + 0 >= win_detaching[w] + 0 && sent[h, k] + 0 <= win_to[w] + 0) return 1
    return 0
}
END {
    # The byte order: whichever form the daemon logged the first handle in.
    split(order[1], first, SUBSEP)
    swapped = !((first[1], 1) in in_) && ((swap(first[1]), 1) in in_)
    logged = 0; slow = 0; slow_h = ""; missing = 0; fault = 0; held = 0; stuck = 0; lost = 0
    # The daemon's k-th intake of a cookie is the kernel's k-th sending of
    # its handle, leaving out sendings after a detach was asked for, never
    # answered, while the daemon logged fewer intakes than the kernel sent.
    for (j = 1; j <= n; j++) {
        split(order[j], hk, SUBSEP); h = hk[1]; k = hk[2]
        c = swapped ? swap(h) : h
        if (nsent[h] - gone[h] > nin[c] && !((h, k) in got) && in_detaching(h, k)) {
            gone[h]++; dropped[h, k] = 1
        } else
            idx[h, k] = ++nidx[h]
    }
    for (j = 1; j <= n; j++) {
        split(order[j], hk, SUBSEP); h = hk[1]; k0 = hk[2]
        c = swapped ? swap(h) : h
        if ((h, k0) in dropped) { lost++; continue }
        k = idx[h, k0]
        if ((c, k) in in_) {
            logged++
            if ((c, k) in rep && rep[c, k] - in_[c, k] > slow) { slow = rep[c, k] - in_[c, k]; slow_h = h }
        }
        if ((h, k0) in got) {
            # The kernel's own view: sent to answered, in guest time. More
            # than 5 s is a fault wherever it was spent (no reply was lost,
            # but one waited), unless it waited for a stuck receive work
            # (read when the guest detached the device) after the daemon
            # had answered and sent it promptly.
            if (got[h, k0] - sent[h, k0] > 5 && in_stuck_window(h, k0) && prompt(c, k)) { stuck++; continue }
            if (got[h, k0] - sent[h, k0] > rt) { rt = got[h, k0] - sent[h, k0]; rt_h = h; rt_k = k; rt_k0 = k0 }
            continue
        }
        missing++
        # The low 32 bits of the handle are blk-mq's unique tag: the hardware
        # queue (one per connection) above the tag.
        printf "handle 0x%s (connection %d) sent at guest time %s, never answered\n", h,
               hexval(substr(h, 9, 4)), sent[h, k0]
        if (!((c, k) in in_)) print "  the daemon never logged this request"
        else {
            print "  daemon: " line_in[c, k]
            print "  daemon: " ((c, k) in rep ? line_rep[c, k] : "(no reply logged)")
            if ((c, k) in rep) print "  daemon: " (send_done(c, k) ? send_line : "(no completed send logged on that connection after it)")
            # Answered and sent within a second: the reply left the daemon.
            if (prompt(c, k)) {
                print "  the daemon answered it and its send completed; the reply was held between the daemon's socket and the guest's kernel"
                if (in_stuck_window(h, k0)) {
                    print "  sent to a device whose receive works were stuck, and detached: not counted"
                    stuck++
                } else held++
                continue
            }
        }
        fault++
    }
    printf "%d requests sent, %d answered (traced); the daemon logged %d of them, its slowest reply %.3f s (handle 0x%s); the kernel's slowest round trip %.3f s (handle 0x%s)",
           n, n - missing - lost, logged, slow, slow_h, rt, rt_h
    if (nwin) printf "; %d re-attach(es), %d requests answered promptly by the daemon but read late or never by stuck receive works, %d sent after the detach was asked for and never read by the daemon", nwin, stuck, lost
    printf "\n"
    # Each sending is one intake: fewer logged means the daemon missed a
    # request (its cookie's later intakes then answer the wrong sending).
    if (logged < n - lost) {
        printf "the daemon logged %d of the %d requests the kernel sent\n", logged, n - lost
        fault++
    }
    if (rt > 5) {
        c = swapped ? swap(rt_h) : rt_h
        printf "handle 0x%s was answered %.3f s after the kernel sent it (at guest time %s), over 5 s\n", rt_h, rt, sent[rt_h, rt_k0]
        if ((c, rt_k) in in_) print "  daemon: " line_in[c, rt_k]
        if ((c, rt_k) in rep) print "  daemon: " line_rep[c, rt_k]
        fault++
    }
    exit fault ? 1 : held ? 2 : 0
}
