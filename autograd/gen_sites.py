#!/usr/bin/env python3
"""Writes ag_sites.h: a macro over every tape op declared in autograd.h that
records the call site (__FILE__, __LINE__) before the call, for anomaly
mode.  Run by the build, so the macros never fall behind the header.

usage: gen_sites.py autograd.h ag_sites.h
"""
import re
import sys

src, dst = sys.argv[1], sys.argv[2]
text = open(src, encoding='utf-8').read()
ops = re.findall(r'^ag_tensor \*(ag_\w+)\(ag_tape \*t,', text, re.M)
ops = [o for o in ops if o != 'ag_tape_tensor']
lines = [
    '/* ag_sites.h — generated from autograd.h by gen_sites.py; do not edit.',
    ' * Include after autograd.h (or tapegrad.h) to record the call site of',
    ' * every op for anomaly mode.  Each op becomes',
    ' *   (ag_tape_site(t, __FILE__, __LINE__), ag_op)(t, ...)',
    ' * so the tape argument is evaluated twice: pass a plain variable. */',
    '#ifndef TAPEGRAD_AG_SITES_H',
    '#define TAPEGRAD_AG_SITES_H',
    '#include "autograd.h"',
]
for op in ops:
    lines.append('#define %s(t, ...) (ag_tape_site((t), __FILE__, __LINE__), %s)'
                 '((t), __VA_ARGS__)' % (op, op))
lines.append('#endif')
open(dst, 'w', encoding='utf-8').write('\n'.join(lines) + '\n')
