# SPDX-License-Identifier: BSD-3-Clause
# uringnbd: one non-recursive Makefile.
#   make            build build/uringnbd (never changes the host)
#   make deps       install the missing Debian packages to build (as root)
#   make run        deps, build, create build/uringnbd.img (1 GiB, sparse) and serve it
#   make check      deps, then unit, fuzz, integration, interop and VM tests
#   make check-unit fast unit tests, no sockets
#   make check-layers the layer order of daemon/: no include or call goes up
#   make check-vm   the kernel NBD client in a qemu guest (also part of check)
#   make bench      side-by-side benchmark against nbd-server, nbdkit, qemu-nbd
#                   (bench-lock: the lock manager; bench-idle: memory per idle connection;
#                   bench-overlay: copy-on-write overlays against nbdkit's cow and qemu-nbd -s;
#                   bench-bitmap: dirty bitmaps' cost to writes; bench-rbd: Ceph RBD exports
#                   against qemu-nbd rbd: and fio's rbd engine; bench-ublk: ublk against
#                   the kernel's NBD client and loop, in a guest)
#   make analyze    gcc -fanalyzer over every module, daemon/ included
#   make install    PREFIX=/usr/local DESTDIR=
#   make deb        Debian packages from this tree (dpkg-buildpackage), into build/deb/
#   SANITIZE=1      ASan+UBSan build and tests    WERROR=1  -Werror    V=1  full commands
# Only deps, run, check*, bench, fuzz and analyze install packages (as root).

SHELL   := /bin/bash
# The version is debian/changelog's (make deb and uringnbd --version agree).
VERSION ?= $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
PREFIX  ?= /usr/local
DESTDIR ?=
B       := build
CC      ?= cc

BUILD_PKGS := gcc make pkg-config liburing-dev libev-dev libnbd-dev check libgnutls28-dev libjson-c-dev \
              libmicrohttpd-dev librbd-dev
TEST_PKGS  := libnbd-bin qemu-utils nbdkit nbd-server nbd-client fio python3-libnbd \
              fuse3 libfuse3-dev e2fsprogs xfsprogs btrfs-progs util-linux procps iproute2 bc clang \
              libclang-rt-14-dev \
              qemu-system-x86 busybox-static socat cpio mandoc systemd gnutls-bin mmdebstrap \
              prometheus gnuplot-nox curl
# A throw-away Ceph cluster for the rbd: tests (tests/ceph.py); its recommends are not needed.
CEPH_PKGS  := ceph-mon ceph-osd ceph-common qemu-block-extra

WARN   := -Wall -Wextra -Wshadow -Wvla -Wstrict-prototypes -Wmissing-prototypes \
          -Wformat=2 -Wundef -fno-common
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 $(WARN) -pthread -MMD -MP
CPPFLAGS += -DURINGNBD_VERSION='"$(VERSION)"'
ifeq ($(WERROR),1)
CFLAGS += -Werror
endif
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
B       := build/sanitize
endif
LDFLAGS += -pthread

ifeq ($(V),1)
Q :=
quiet = @true
else
Q := @
quiet = @printf '  %-7s %s\n'
endif

# ---- sources ----
PROTO_SRC  := proto/negotiate.c proto/request.c
LOCK_SRC   := lock/rangelock.c
CACHE_SRC  := cache/cache.c
DAEMON_SRC := daemon/base/log.c daemon/base/hist.c daemon/base/access.c \
              daemon/engine/pool.c daemon/engine/plan.c daemon/engine/timer.c daemon/engine/throttle.c daemon/engine/worker.c daemon/engine/offload.c \
              daemon/storage/backing.c daemon/storage/export.c daemon/storage/limits.c daemon/storage/overlay.c daemon/storage/backend.c daemon/storage/backend_overlay.c daemon/storage/backend_rbd.c daemon/storage/backend_rbd_checkpoint.c daemon/storage/bitmap.c daemon/storage/bitmap_commit.c daemon/storage/bitmap_checkpoint.c \
              daemon/conn/conn.c daemon/conn/handshake.c daemon/conn/rx.c daemon/conn/request.c daemon/conn/fileio.c daemon/conn/cached.c daemon/conn/reply.c daemon/conn/watch.c daemon/conn/tls.c daemon/conn/tls_creds.c daemon/conn/ublk.c \
              daemon/service/cli.c daemon/service/listen.c daemon/service/config.c daemon/service/notify.c daemon/service/server.c daemon/service/handover.c daemon/service/ublks.c \
              daemon/ops/ctlproto.c daemon/ops/control.c daemon/ops/command.c daemon/ops/command_limits.c daemon/ops/metrics.c daemon/ops/http.c \
              daemon/main.c
HOOKS_OBJ  := $(DAEMON_SRC:%.c=$(B)/hooks/%.o)
UNIT_TESTS := $(patsubst tests/unit/%.c,$(B)/tests/unit/%,$(wildcard tests/unit/test_*.c))
INTEG_TESTS := $(patsubst tests/integration/%.c,$(B)/tests/integration/%,\
                 $(filter-out tests/integration/harness.c,$(wildcard tests/integration/*.c)))

PROTO_OBJ  := $(PROTO_SRC:%.c=$(B)/%.o)
LOCK_OBJ   := $(LOCK_SRC:%.c=$(B)/%.o)
CACHE_OBJ  := $(CACHE_SRC:%.c=$(B)/%.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(B)/%.o)
DAEMON_LIBS := -luring -lev $$(pkg-config --libs gnutls json-c libmicrohttpd)
CTL_OBJ    := $(B)/ctl/uringnbdctl.o $(B)/daemon/ops/ctlproto.o $(B)/daemon/engine/throttle.o

INTEROP_TESTS := $(wildcard tests/interop/*.sh tests/interop/*.py)
FAULT_TESTS   := $(filter-out tests/faults/faultlib.py,$(wildcard tests/faults/*.py))
RBD_TESTS     := $(wildcard tests/rbd/*.py)
VM_TESTS      := tests/vm/handles-selftest.sh tests/vm/kernel-client.sh tests/vm/systemd.sh tests/vm/vsock.sh tests/vm/ublk.sh

.SECONDARY:
.PHONY: check-rbd bench-rbd bench-limits bench-ublk check-layers bench-base probe-taskrun deb analyze check-vm bench bench-idle bench-overlay bench-bitmap fuzz check-fuzz bench-lock all run check check-unit check-integration check-interop check-faults check-tests install clean deps deps-test
all: $(B)/uringnbd $(B)/uringnbdctl

# Goals that may install packages build after them; plain `make` never does.
INSTALLING_GOALS := deps deps-test run check check-% bench bench-% fuzz analyze deb
DEPS_FIRST := $(if $(NO_DEPS),,$(if $(filter $(INSTALLING_GOALS),$(MAKECMDGOALS)),$(B)/.deps-build))

# ---- Debian packages: installed when missing (as root), else the command is printed ----
define ensure_pkgs
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        echo "  APT     $$(echo $$missing)"; \
	        export DEBIAN_FRONTEND=noninteractive; \
	        apt-get install -y -q $(2) $$missing >/dev/null 2>&1 || \
	        { apt-get update -q >/dev/null && apt-get install -y -q $(2) $$missing >/dev/null; } || exit 1; \
	    else \
	        echo "uringnbd: missing packages; run: sudo apt-get install -y $$(echo $$missing)" >&2; \
	        exit 1; \
	    fi; \
	fi
	@mkdir -p $(dir $@) && touch $@
endef
deps: $(B)/.deps-build
deps-test: $(B)/.deps-test
$(B)/.deps-build:
	$(call ensure_pkgs,$(BUILD_PKGS))
$(B)/.deps-test: | $(B)/.deps-build
	$(call ensure_pkgs,$(TEST_PKGS))
	$(call ensure_pkgs,$(CEPH_PKGS),--no-install-recommends)
DEB_PKGS := debhelper dpkg-dev fakeroot lintian
$(B)/.deps-deb: | $(B)/.deps-build
	$(call ensure_pkgs,$(DEB_PKGS))

# ---- build ----
$(B)/hooks/%.o: %.c | $(DEPS_FIRST)
	@mkdir -p $(dir $@)
	$(quiet) CC $@
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -DURINGNBD_TEST_HOOKS -c -o $@ $<

$(B)/%.o: %.c | $(DEPS_FIRST)
	@mkdir -p $(dir $@)
	$(quiet) CC $@
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(if $(findstring tests/unit,$@),$$(pkg-config --cflags check)) -c -o $@ $<

$(B)/uringnbd: $(DAEMON_OBJ) $(PROTO_OBJ) $(LOCK_OBJ) $(CACHE_OBJ)
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS)

$(B)/uringnbdctl: $(CTL_OBJ)
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs json-c)

# The same daemon with test-only hooks (URINGNBD_TEST_HOOKS); never installed.
$(B)/uringnbd-test-hooks: $(HOOKS_OBJ) $(PROTO_OBJ) $(LOCK_OBJ) $(CACHE_OBJ)
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS)

$(B)/tests/unit/test_proto: $(B)/tests/unit/test_proto.o $(PROTO_OBJ)
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check)

$(B)/tests/unit/test_rangelock: $(B)/tests/unit/test_rangelock.o $(LOCK_OBJ)
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check)

$(B)/tests/unit/test_cache: $(B)/tests/unit/test_cache.o $(CACHE_OBJ)
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check)

$(B)/tests/unit/test_plan: $(B)/tests/unit/test_plan.o $(B)/daemon/engine/plan.o
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check)

$(B)/tests/unit/test_access: $(B)/tests/unit/test_access.o $(B)/daemon/base/access.o
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check)

$(B)/tests/unit/test_pool: $(B)/tests/unit/test_pool.o $(B)/daemon/engine/pool.o
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check)

$(B)/tests/unit/test_timer: $(B)/tests/unit/test_timer.o $(B)/daemon/engine/timer.o
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check)

$(B)/tests/unit/test_throttle: $(B)/tests/unit/test_throttle.o $(B)/daemon/engine/throttle.o
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check) -lpthread

$(B)/tests/unit/test_ublk: $(B)/tests/unit/test_ublk.o
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $$(pkg-config --libs check)

$(B)/tests/integration/%: $(B)/tests/integration/%.o $(B)/tests/integration/harness.o $(PROTO_OBJ)
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lnbd

# A FUSE filesystem that fails flushes and writes on demand (tests/faults).
$(B)/tests/faults/faultfs: tests/faults/faultfs.c | $(B)/.deps-test
	@mkdir -p $(dir $@)
	$(quiet) LD $@
	$(Q)$(CC) $(CFLAGS) $$(pkg-config --cflags fuse3) -o $@ $< $$(pkg-config --libs fuse3)

$(B)/tests/bench/rl_bench: $(B)/tests/bench/rl_bench.o $(LOCK_OBJ)
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^

# ---- benchmarks (measure; never part of check) ----
# The other half of a before/after pair: BENCH_BASE (a commit; by default
# HEAD's parent, or HEAD itself while the tree has changes; BENCH_BASE= none)
# built from git archive in build/bench/base, run as "uringnbd-base".
BENCH_BASE ?= $(shell git diff --quiet HEAD -- 2>/dev/null && echo HEAD~1 || echo HEAD)
bench: $(B)/uringnbd $(if $(BENCH_BASE),bench-base) bench-lock bench-idle bench-overlay bench-bitmap bench-rbd bench-limits bench-ublk | $(B)/.deps-test
	$(Q)URINGNBD=$(CURDIR)/$(B)/uringnbd BENCH_DIR=$(CURDIR)/build/bench \
	    URINGNBD_BASE=$(if $(BENCH_BASE),$(CURDIR)/build/bench/base/build/uringnbd) \
	    URINGNBD_BASE_NAME="$(BENCH_BASE) ($$(git rev-parse --short $(BENCH_BASE) 2>/dev/null))" \
	    python3 tests/bench/bench.py

bench-base:
	$(Q)rm -rf build/bench/base && mkdir -p build/bench/base
	$(Q)git archive $(BENCH_BASE) | tar -x -C build/bench/base
	$(quiet) BASE "$(BENCH_BASE) ($$(git rev-parse --short $(BENCH_BASE)))"
	$(Q)$(MAKE) -s -C build/bench/base NO_DEPS=1 build/uringnbd >/dev/null

# Exports on Ceph RBD against qemu-nbd rbd: and fio's rbd engine, one throw-away cluster.
bench-rbd: $(B)/uringnbd | $(B)/.deps-test
	$(Q)URINGNBD=$(CURDIR)/$(B)/uringnbd BENCH_DIR=$(CURDIR)/build/bench /usr/bin/python3 \
	    tests/bench/rbd_bench.py

# ublk against the kernel's NBD client and loop, in a 6.12 guest under TCG (ratios only).
bench-ublk: $(B)/uringnbd | $(B)/.deps-test
	$(Q)URINGNBD=$(CURDIR)/$(B)/uringnbd TEST_TMPDIR=$(CURDIR)/build/tmp bash tests/bench/ublk_bench.sh

# Rate limits: accuracy against qemu-nbd's throttle and nbdkit's rate filter, their cost, isolation.
bench-limits: $(B)/uringnbd | $(B)/.deps-test
	$(Q)URINGNBD=$(CURDIR)/$(B)/uringnbd BENCH_DIR=$(CURDIR)/build/bench /usr/bin/python3 \
	    tests/bench/limits_bench.py

# What a dirty bitmap costs writes to fresh and to dirty granules.
bench-bitmap: $(B)/uringnbd $(B)/uringnbdctl | $(B)/.deps-test
	$(Q)URINGNBD=$(CURDIR)/$(B)/uringnbd BENCH_DIR=$(CURDIR)/build/bench /usr/bin/python3 \
	    tests/bench/bitmap_bench.py

# Memory per idle connection (10,000 of them) against nbdkit and qemu-nbd.
bench-overlay: $(B)/uringnbd | $(B)/.deps-test
	$(Q)URINGNBD=$(CURDIR)/$(B)/uringnbd BENCH_DIR=$(CURDIR)/build/bench /usr/bin/python3 \
	    tests/bench/overlay_bench.py

bench-idle: $(B)/uringnbd | $(B)/.deps-test
	$(Q)URINGNBD=$(CURDIR)/$(B)/uringnbd BENCH_DIR=$(CURDIR)/build/bench python3 tests/bench/idle_rss.py \
	    | tee $(B)/bench-idle.txt

# What one io_uring_enter does with deferred task work it cannot run all of.
probe-taskrun: $(B)/tests/bench/taskrun_probe
	$(Q)$(B)/tests/bench/taskrun_probe

$(B)/tests/bench/taskrun_probe: $(B)/tests/bench/taskrun_probe.o
	$(quiet) LD $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -luring

bench-lock: $(B)/tests/bench/rl_bench
	$(Q)$(B)/tests/bench/rl_bench | tee $(B)/bench-lock.txt

# ---- fuzzing: libFuzzer (clang) over proto/, and the whole server over a
# socketpair (tests/fuzz/fuzz_server.c runs uringnbd --single, under ASan with
# SANITIZE=1); a short bounded run of each is part of check ----
FUZZ_FLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_SECONDS ?= 20
build/fuzz/fuzz_proto: tests/fuzz/fuzz_proto.c $(PROTO_SRC) proto/proto.h | $(B)/.deps-test
	@mkdir -p $(dir $@)
	$(quiet) FUZZ $@
	$(Q)clang $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_proto.c $(PROTO_SRC)

build/fuzz/fuzz_ctl: tests/fuzz/fuzz_ctl.c daemon/ops/ctlproto.c daemon/ops/ctlproto.h daemon/engine/throttle.c | $(B)/.deps-test
	@mkdir -p $(dir $@)
	$(quiet) FUZZ $@
	$(Q)clang $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_ctl.c daemon/ops/ctlproto.c daemon/engine/throttle.c $$(pkg-config --libs json-c)

$(B)/fuzz/fuzz_server: tests/fuzz/fuzz_server.c proto/proto.h
	@mkdir -p $(dir $@)
	$(quiet) LD $@
	$(Q)$(CC) -std=gnu11 -O2 -g $(WARN) $(if $(filter 1,$(WERROR)),-Werror) -o $@ $<

fuzz: build/fuzz/fuzz_proto build/fuzz/fuzz_ctl $(B)/fuzz/fuzz_server $(B)/uringnbd

# Runs each fuzzer for FUZZ_SECONDS: the proto one on a copy of the seed corpus.
check-fuzz: build/fuzz/fuzz_proto build/fuzz/fuzz_ctl $(B)/fuzz/fuzz_server $(B)/uringnbd
	$(Q)rm -rf build/fuzz/corpus && mkdir -p build/fuzz/corpus && cp tests/fuzz/corpus/* build/fuzz/corpus/
	$(Q)build/fuzz/fuzz_proto -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
	    -artifact_prefix=build/fuzz/ build/fuzz/corpus 2>build/fuzz/log || \
	    { tail -n 40 build/fuzz/log; echo "fuzz: crash saved under build/fuzz/"; exit 1; }
	$(Q)grep -E '^#[0-9]+.*DONE' build/fuzz/log | sed 's/^/  FUZZ    /' || tail -n 3 build/fuzz/log
	$(Q)rm -rf build/fuzz/corpus-ctl && mkdir -p build/fuzz/corpus-ctl && \
	    cp tests/fuzz/corpus-ctl/* build/fuzz/corpus-ctl/
	$(Q)build/fuzz/fuzz_ctl -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=70000 \
	    -artifact_prefix=build/fuzz/ctl- build/fuzz/corpus-ctl 2>build/fuzz/log-ctl || \
	    { tail -n 40 build/fuzz/log-ctl; echo "fuzz: crash saved under build/fuzz/"; exit 1; }
	$(Q)grep -E '^#[0-9]+.*DONE' build/fuzz/log-ctl | sed 's/^/  FUZZ    ctl /' || tail -n 3 build/fuzz/log-ctl
	$(Q)rm -f $(B)/fuzz/server.img && truncate -s 64M $(B)/fuzz/server.img
	$(Q)d=$(B)/fuzz/tls && mkdir -p $$d && [ -s $$d/server-cert.pem ] || { \
	    printf 'cn = fuzz CA\nca\ncert_signing_key\n' >$$d/ca.info && \
	    printf 'cn = localhost\ntls_www_server\nencryption_key\nsigning_key\n' >$$d/server.info && \
	    certtool --generate-privkey --outfile $$d/ca-key.pem 2>/dev/null && \
	    certtool --generate-self-signed --load-privkey $$d/ca-key.pem --template $$d/ca.info \
	        --outfile $$d/ca-cert.pem 2>/dev/null && \
	    certtool --generate-privkey --outfile $$d/server-key.pem 2>/dev/null && \
	    certtool --generate-certificate --load-ca-certificate $$d/ca-cert.pem \
	        --load-ca-privkey $$d/ca-key.pem --load-privkey $$d/server-key.pem \
	        --template $$d/server.info --outfile $$d/server-cert.pem 2>/dev/null; }
	$(Q)FUZZ_TLS_DIR=$(CURDIR)/$(B)/fuzz/tls \
	    $(B)/fuzz/fuzz_server $(CURDIR)/$(B)/uringnbd $(B)/fuzz/server.img $(FUZZ_SECONDS) \
	    | sed 's/^/  FUZZ    /'; exit $${PIPESTATUS[0]}

# ---- static analysis: gcc -fanalyzer, warnings are errors, every module ----
analyze: | $(B)/.deps-build
	$(Q)bad=; for f in $(PROTO_SRC) $(LOCK_SRC) $(CACHE_SRC) $(DAEMON_SRC); do \
	    echo "  ANALYZE $$f"; \
	    $(CC) -std=gnu11 -O1 -fanalyzer $(WARN) -Werror -pthread -c $$f -o /dev/null || bad="$$bad $$f"; \
	done; [ -z "$$bad" ] || { echo "analyze: findings in$$bad" >&2; exit 1; }

# ---- run ----
IMG := build/uringnbd.img
$(IMG):
	@mkdir -p $(dir $@)
	truncate -s 1G $@

run: $(B)/uringnbd $(B)/uringnbdctl $(IMG) | $(B)/.deps-build
	@echo "serving $(IMG) on 127.0.0.1:10809 and $(CURDIR)/build/uringnbd.sock (Ctrl-C stops)"
	@echo "  nbdinfo nbd://127.0.0.1                      # size, block sizes, flags"
	@echo "  nbdinfo 'nbd+unix:///?socket=$(CURDIR)/build/uringnbd.sock'"
	@echo "  nbd-client 127.0.0.1 10809 /dev/nbd0 -N ''   # kernel block device (needs the nbd module)"
	@echo "  mkdir -p /tmp/nbd && nbdfuse /tmp/nbd/disk nbd://127.0.0.1 &   # a file you can losetup"
	@echo "  $(B)/uringnbdctl -c $(CURDIR)/build/uringnbd.ctl exports   # the control socket"
	$(B)/uringnbd -b 127.0.0.1 -U $(CURDIR)/build/uringnbd.sock --control $(CURDIR)/build/uringnbd.ctl $(IMG)

# ---- tests ----
TEST_ENV := URINGNBD=$(CURDIR)/$(B)/uringnbd URINGNBDCTL=$(CURDIR)/$(B)/uringnbdctl \
            URINGNBD_TEST_HOOKS_BIN=$(CURDIR)/$(B)/uringnbd-test-hooks \
            FAULTFS=$(CURDIR)/$(B)/tests/faults/faultfs TEST_TMPDIR=$(CURDIR)/$(B)/tmp \
            VM_DIR=$(CURDIR)/build/vm
RUN_TESTS := $(TEST_ENV) tests/run-tests.sh
TEST_BINS := $(B)/uringnbd $(B)/uringnbdctl $(B)/uringnbd-test-hooks $(B)/tests/faults/faultfs $(INTEG_TESTS)

check-unit: $(UNIT_TESTS)
	$(Q)for t in $(UNIT_TESTS); do CK_DEFAULT_TIMEOUT=10 $$t || exit 1; done

check-integration: $(TEST_BINS) | $(B)/.deps-test
	$(Q)$(RUN_TESTS) $(INTEG_TESTS)

check-interop: $(TEST_BINS) | $(B)/.deps-test
	$(Q)$(RUN_TESTS) $(INTEROP_TESTS)

# Storage faults with real parts: faultfs (FUSE), loop devices.
check-faults: $(TEST_BINS) | $(B)/.deps-test
	$(Q)$(RUN_TESTS) $(FAULT_TESTS)

# Exports on Ceph RBD, each test with a throw-away cluster of its own (tests/ceph.py).
check-rbd: $(TEST_BINS) | $(B)/.deps-test
	$(Q)$(RUN_TESTS) $(RBD_TESTS)

# The kernel's NBD client, in a qemu guest (the kernel package is cached in build/vm).
check-vm: $(TEST_BINS) | $(B)/.deps-test
	$(Q)$(RUN_TESTS) $(VM_TESTS)

# Every test program and script in one run, so one closing line counts them all.
check-tests: $(TEST_BINS) | $(B)/.deps-test
	$(Q)$(RUN_TESTS) $(INTEG_TESTS) $(INTEROP_TESTS) $(FAULT_TESTS) $(RBD_TESTS) $(VM_TESTS)

# The layer order of daemon/ (tests/layers.py): no include and no reference goes up.
check-layers: $(DAEMON_OBJ)
	$(Q)python3 tests/layers.py --self-test --objects $(B)

check: check-layers check-unit check-fuzz check-tests

# ---- install ----
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/uringnbd
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
SYSCONFDIR ?= /etc
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
UNITS      := uringnbd.service uringnbd.socket uringnbd@.service

install: $(B)/uringnbd $(B)/uringnbdctl
	install -D -m 0755 $(B)/uringnbd $(DESTDIR)$(SBINDIR)/uringnbd
	install -D -m 0755 $(B)/uringnbdctl $(DESTDIR)$(SBINDIR)/uringnbdctl
	install -D -m 0644 man/uringnbd.8 $(DESTDIR)$(MANDIR)/man8/uringnbd.8
	install -D -m 0644 man/uringnbdctl.8 $(DESTDIR)$(MANDIR)/man8/uringnbdctl.8
	install -D -m 0644 ctl/uringnbdctl.bash-completion \
	    $(DESTDIR)$(COMPLETIONDIR)/uringnbdctl
	ln -sf uringnbdctl $(DESTDIR)$(COMPLETIONDIR)/uringnbd
	install -D -m 0644 man/uringnbd.conf.5 $(DESTDIR)$(MANDIR)/man5/uringnbd.conf.5
	install -d $(DESTDIR)$(UNITDIR)
	for u in $(UNITS); do \
	    sed -e 's|/usr/sbin/uringnbd|$(SBINDIR)/uringnbd|' -e 's|/etc/uringnbd|$(SYSCONFDIR)/uringnbd|' \
	        systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; done
	install -D -m 0644 systemd/uringnbd.sysusers $(DESTDIR)$(SYSUSERSDIR)/uringnbd.conf
	@# The socket's group, now where systemd runs here (at boot elsewhere).
	[ -n "$(DESTDIR)" ] || ! command -v systemd-sysusers >/dev/null || \
	    systemd-sysusers $(SYSUSERSDIR)/uringnbd.conf || true
	install -D -m 0644 systemd/uringnbd.conf.example $(DESTDIR)$(DOCDIR)/uringnbd.conf.example
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@# The example becomes the configuration only where there is none yet.
	[ -e $(DESTDIR)$(SYSCONFDIR)/uringnbd/uringnbd.conf ] || \
	    install -D -m 0644 systemd/uringnbd.conf.example $(DESTDIR)$(SYSCONFDIR)/uringnbd/uringnbd.conf

# ---- Debian packages: built from a copy of the tree, results in build/deb ----
deb: | $(B)/.deps-deb
	$(Q)rm -rf build/deb && mkdir -p build/deb/src/uringnbd
	$(Q)tar --exclude=./build --exclude=./.git -cf - . | tar -xf - -C build/deb/src/uringnbd
	$(quiet) DEB     build/deb
	$(Q)cd build/deb/src/uringnbd && dpkg-buildpackage -us -uc -b >../build.log 2>&1 || \
	    { tail -n 40 ../build.log; exit 1; }
	$(Q)mv build/deb/src/*.deb build/deb/src/*.changes build/deb/src/*.buildinfo build/deb/
	$(Q)ls build/deb/*.deb

clean:
	rm -rf build

-include $(shell find build \( -path build/tmp -o -path build/sanitize/tmp -o -path build/vm -o -path build/bench \) -prune -o -name '*.d' -type f -print 2>/dev/null)
