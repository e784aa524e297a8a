#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""The layer order of daemon/, checked: no include and no call goes up.

Each folder of daemon/ is a layer; a file may include the headers of its
own layer and of those below it, and reference (call, read) only the
symbols defined there. daemon/main.c sits above every layer and wires them
together. proto/, lock/ and cache/ are libraries under them all.

Includes are read from the sources; references from the objects' symbol
tables (nm), so a call made through a macro or an inline function counts
where it lands. Every reference that goes up is printed with its file and
symbol, and the check fails.

  tests/layers.py [--self-test] [--objects DIR] [--root DIR]
  (--objects: where the daemon/... objects are, default build; --root: the
  tree, default .; --self-test: first the checker on a made-up tree that
  goes up, which it must fail)
"""
import argparse
import collections
import os
import re
import subprocess
import sys

ORDER = ['base', 'engine', 'storage', 'conn', 'service', 'ops']
TOP = len(ORDER)  # daemon/main.c (and any header at daemon/'s root)
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(rel):
    """rel: a path under daemon/ ('engine/worker.c'). None: not daemon/'s."""
    parts = rel.split('/')
    if len(parts) == 1:
        return TOP
    return ORDER.index(parts[0]) if parts[0] in ORDER else None


def name(level):
    return ORDER[level] if level < TOP else 'main'


def sources(root):
    d = os.path.join(root, 'daemon')
    for dirpath, _, files in os.walk(d):
        for f in sorted(files):
            if f.endswith(('.c', '.h')):
                yield os.path.relpath(os.path.join(dirpath, f), d)


def check_includes(root, bad, edges):
    for rel in sources(root):
        me = layer_of(rel)
        if me is None:
            bad.append(f'daemon/{rel}: in no layer ({", ".join(ORDER)}, or main.c)')
            continue
        text = open(os.path.join(root, 'daemon', rel), encoding='utf-8').read()
        for inc in INCLUDE.findall(text):
            target = os.path.normpath(os.path.join(os.path.dirname(rel), inc))
            if target.startswith('..'):
                continue  # proto/, lock/, cache/: below every layer
            them = layer_of(target)
            if them is None:
                continue
            edges[(me, them)] += 1
            if them > me:
                bad.append(f'daemon/{rel}: includes daemon/{target} ({name(them)}, above {name(me)})')


def check_symbols(root, objdir, bad, edges):
    base = os.path.join(objdir, 'daemon')
    objs = []
    for dirpath, _, files in os.walk(base):
        for f in files:
            if f.endswith('.o'):
                objs.append(os.path.relpath(os.path.join(dirpath, f), base))
    if not objs:
        sys.exit(f'layers: no objects under {base}: build first')
    defined, undefined = {}, collections.defaultdict(set)
    for rel in objs:
        src = rel[:-2] + '.c'
        if not os.path.exists(os.path.join(root, 'daemon', src)):
            continue  # a stale object of a file moved away
        out = subprocess.run(['nm', os.path.join(base, rel)], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            p = line.split()
            if len(p) == 3 and p[1] in 'TDBRCGS':
                defined[p[2]] = src
            elif len(p) == 2 and p[0] == 'U':
                undefined[src].add(p[1])
    for src, syms in sorted(undefined.items()):
        me = layer_of(src)
        for sym in sorted(syms):
            where = defined.get(sym)
            if not where or where == src:
                continue
            them = layer_of(where)
            edges[(me, them)] += 1
            if them > me:
                bad.append(f'daemon/{src}: uses {sym} of daemon/{where} ({name(them)}, above {name(me)})')


def check(root, objdir, say=print):
    """Prints the order and what goes up; returns the list of what goes up."""
    bad = []
    inc_edges, sym_edges = collections.Counter(), collections.Counter()
    check_includes(root, bad, inc_edges)
    check_symbols(root, objdir, bad, sym_edges)
    say('layers: ' + ' <- '.join(ORDER + ['main.c']) + '  (each uses only those left of it)')
    for lv in range(TOP, -1, -1):
        below = [f'{name(t)} {sym_edges[(lv, t)]}' for t in range(TOP + 1)
                 if t != lv and sym_edges[(lv, t)]]
        say(f'  {name(lv):8} uses symbols of: {", ".join(below) or "(none)"}')
    for line in bad:
        say('layers: UP: ' + line)
    if bad:
        say(f'layers: {len(bad)} references go up the order')
    else:
        say('layers: no include and no reference goes up')
    return bad


def self_test():
    """The check itself: a made-up tree that goes up twice fails, naming both; fixed, it passes."""
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        def put(rel, text):
            os.makedirs(os.path.dirname(os.path.join(t, rel)), exist_ok=True)
            with open(os.path.join(t, rel), 'w') as f:
                f.write(text)

        def build():
            for rel in ('daemon/base/low.c', 'daemon/engine/high.c'):
                obj = os.path.join(t, 'build', rel[:-2] + '.o')
                os.makedirs(os.path.dirname(obj), exist_ok=True)
                subprocess.run(['cc', '-c', '-o', obj, os.path.join(t, rel)], check=True)

        put('daemon/engine/engine.h', 'int high(void);\n')
        put('daemon/engine/high.c', '#include "engine.h"\nint low(void);\n'
            'int high(void) { return low() + 1; }\n')
        put('daemon/base/low.c', '#include "../engine/engine.h"\n'
            'int low(void) { return high() - 1; }\n')
        build()
        bad = check(t, os.path.join(t, 'build'), say=lambda *_: None)
        want = ['daemon/base/low.c: includes daemon/engine/engine.h',
                'daemon/base/low.c: uses high of daemon/engine/high.c']
        for w in want:
            if not any(b.startswith(w) for b in bad):
                sys.exit(f'layers: self-test: "{w}" was not found in {bad}')
        put('daemon/base/low.c', 'int low(void) { return 1; }\n')
        build()
        if check(t, os.path.join(t, 'build'), say=lambda *_: None):
            sys.exit('layers: self-test: a tree that only goes down failed')
    print('layers: self-test passed (an include and a call up are caught; down is fine)')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--root', default='.')
    ap.add_argument('--objects', default='build')
    ap.add_argument('--self-test', action='store_true',
                    help='check the checker on a made-up tree first')
    a = ap.parse_args()
    if a.self_test:
        self_test()
    return 1 if check(a.root, a.objects) else 0


if __name__ == '__main__':
    sys.exit(main())
