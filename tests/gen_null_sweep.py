#!/usr/bin/env python3
"""Writes the calls of the NULL / absurd-argument sweep (tests/null_sweep.c)
from the installed headers, so that a new public function is swept the day
it is declared.

usage: gen_null_sweep.py FIXTURES_H OUT.c HEADER.h...

Every function declared in the headers gets a thunk that builds its
arguments by pattern (one character per parameter, see null_sweep.h) and a
list of patterns:
  all-NULL      every pointer NULL, the rest valid        error expected
  valid         real objects from the fixtures             anything but a crash
  taped         tensors are op results on the call's tape  anything but a crash
  empty         tensors are [0, 3]                         anything but a crash
  one NULL      each pointer NULL in turn                  error expected,
                                                           unless NULL is allowed
  zeroed        a zeroed struct (options, ops)             anything but a crash
  0, -1, MAX    each integer in turn (an array length      -1 for a length or
                MAX only with the arrays NULL)             ndim: error expected
  -1s, MAXs     int arrays filled with -1 / MAX            anything but a crash
  bad enum      (T)99                                      error expected
  bad var       id -1, id INT32_MAX                        error expected
  NaN, Inf      every double                               anything but a crash
  false         every bool                                 anything but a crash
"Error expected" means the function's error value (a status other than
AG_OK, NULL, NaN, <= 0, false, an invalid var) and ag_last_error set, and
for an op given a real tape, an error kept on the tape.

The parser reads C as the headers write it (one declaration per statement,
declarations over several lines, function pointer parameters, const,
pointers to pointers, structs by value) and stops the build on anything it
does not understand, so no declaration is skipped silently.  A parameter
type that has no way to be made (a new opaque type) also stops it, naming
the fixture to add to null_sweep.h / null_sweep.c.
"""
import re
import sys

# ---- the few special cases, each with its reason ----------------------------

# Free-like functions are found by name, so a new one is covered: every
# *_free (ag_mem_free included) must accept NULL as a no-op, and takes its
# argument (the sweep does not free it again).  See is_free_like.

# Parameters documented to accept NULL: a NULL there is no error.  Every
# `void *` parameter (user data: ctx) is nullable too, and every parameter
# of a free-like function.
NULLABLE = {
    'ag_set_allocator': {'a'},            # NULL restores the default allocator
    'ag_shape_str': {'t'},                # writes "(null)", as printf's %s does
    'ag_gradients': {'seed'},             # NULL: 1 for a one-element root
    'ag_gradcheck': {'opts', 'report'},   # opts NULL: defaults; report NULL: none
    'ag_gradgradcheck': {'opts', 'report'},
    'ag_explain': {'opts', 'items', 'out'},   # defaults, no items, no report
    'ag_linear': {'b'},                   # no bias
    'ag_conv2d': {'b'},                   # no bias
    'ag_conv1d': {'b'},
    'ag_dropout': {'rng'},                # allowed when not training (p = 0)
    'ag_cross_entropy_logits': {'opts'},  # NULL: PyTorch's defaults
    'ag_attention': {'mask'},             # no mask
    'ag_attention_qkv': {'mask'},
    'ag_topk': {'indices'},               # the values alone
    'ag_tensor_set_name': {'name'},       # clears the name
    'ag_tape_profile_totals': {'forward_ns', 'backward_ns'},   # fills those given
    'ag_tape_set_checkpoint_rng': {'rng'},  # NULL: no generator replayed
    'nn_cross_entropy_opts': {'opts'},
    'nn_params_freeze': {'prefix'},       # NULL selects every parameter
    'nn_params_unfreeze': {'prefix'},
    'nn_params_tensors': {'n'},           # the count is optional
    'nn_params_names': {'n'},
    'nn_params_load_opts': {'opts', 'report'},   # NULL: strict, no report
    'nn_params_load_from': {'opts', 'report'},
    'nn_init_fans': {'fan_in', 'fan_out'},  # fills the ones given
    'nn_linear_new': {'rng'},             # NULL: zeros
    'nn_mlp_new': {'rng'},
    'nn_embedding_new': {'rng'},
    'nn_conv2d_new': {'rng'},             # NULL: zeros
    'nn_conv1d_new': {'rng'},
    'nn_lstm_new': {'rng'},               # NULL: zeros (issue 15's layers)
    'nn_gru_new': {'rng'},
    'nn_rnn_new': {'rng'},
    'nn_multihead_attention_new': {'rng'},
    'nn_gpt_block_new': {'rng'},
    'nn_gpt_new': {'rng'},
    'nn_lstm_forward': {'h0', 'c0', 'hn', 'cn'},   # zero states; final states not wanted
    'nn_gru_forward': {'h0', 'hn'},
    'nn_rnn_forward': {'h0', 'hn'},
    'nn_multihead_attention_forward': {'attn_mask'},   # no mask
    'ag_layer_norm': {'w', 'b'},          # no scale / no shift
    'nn_dropout_forward': {'rng'},        # allowed in evaluation mode
    'nn_dataset_image_shape': {'ndim'},   # the count is optional
    'nn_dataset_pixel_stats': {'mean', 'std'},
    'nn_dataset_split': {'rng'},          # NULL: the last n_val samples
    'nn_batcher_start': {'rng'},          # NULL: dataset order
    'optim_clip_grad_norm': {'total_norm'},
    'optim_checkpoint_save': {'o', 's', 'rng'},   # that part left out
    'optim_checkpoint_load': {'o', 's', 'rng'},
}

# Parameters never set to NULL by the sweep.
NEVER_NULL = {
    # NULL reads the real Fashion-MNIST from the system folder: 47 MB,
    # seconds under ASan, and a test that depends on an installed package.
    ('nn_mnist_load', 'dir'),
}

# Functions where no call is an error by contract (only a crash fails).
NO_ERROR = {
    # Called by the ag_sites.h macros before every op, also with the NULL
    # tape of a failed step; the op that follows reports the NULL.
    'ag_tape_site',
}

# Error values other than the one of the return type (see ret_check):
# (C expression of r, whether ag_last_error must be set too).
ERROR_VALUE = {
    'ag_tape_status': ('r != AG_OK', False),   # the status is the report
    'ag_tape_error': ('r != NULL', False),     # a message for a NULL tape
    'ag_status_str': ('r != NULL', False),     # never NULL: "unknown status"
    'nn_batcher_next': ('r == -1', True),
    'nn_batcher_next_into': ('r == -1', True),
    'optim_sched_last_epoch': ('r == -1', True),
}

# Parameters that take ownership of their argument, also on failure.
CONSUMES = {
    'nn_params_add': 't',
    'nn_params_add_buffer': 't',
    'optim_sched_warmup': 'then',
}

# Caller-owned results that are not `T *` of a type with a T_free.
OWNED_RESULT = {
    'ag_mem_alloc': 'ag_mem_free',
    'ag_mem_calloc': 'ag_mem_free',
    'ag_task_start': 'ag_task_wait',
}

# Integer parameters that give the length of a caller's array: the sweep
# passes MAX for them only with every array NULL (a long array is the
# caller's duty), and -1 must be an error.
LENGTHS = {'n', 'n_in', 'n_meta', 'n_widths'}
# Dimension counts: bounded by AG_MAX_DIMS, so MAX is safe with real arrays
# (the fixtures' arrays hold 64 entries); -1 must be an error.
NDIMS = {'ndim', 'out_ndim', 'image_ndim'}

# Valid values of integer and double parameters, by name (default 1 / 0.5).
VALID_INT = {
    'ndim': 2, 'out_ndim': 2, 'image_ndim': 2, 'n': 2, 'n_in': 2, 'n_meta': 2,
    'n_widths': 2, 'size': 2, 'stop': 2, 'classes': 3, 'in': 3, 'out': 2, 'num': 4,
    'dim': 3, 'c': 3, 'axis': 0, 'total_steps': 10, 'seed': 1,
}
VALID_REAL = {'stop': 3.0, 'hi': 1.0, 'std': 1.0, 'mean': 0.0, 'norm_type': 2.0,
              'gain': 1.0, 'max_lr': 0.1, 'eta_min': 0.0}
# Valid value of enum parameters (default: the first enumerator).
VALID_ENUM = {'ag_status': 'AG_ERR_ARG'}

INT_TYPES = {   # C type: (max, signed)
    'int': ('INT_MAX', True), 'int32_t': ('INT32_MAX', True),
    'int64_t': ('INT64_MAX', True), 'long': ('LONG_MAX', True),
    'long long': ('LLONG_MAX', True), 'size_t': ('SIZE_MAX', False),
    'uint64_t': ('UINT64_MAX', False), 'uint32_t': ('UINT32_MAX', False),
    'unsigned': ('UINT_MAX', False), 'unsigned int': ('UINT_MAX', False),
}
REAL_TYPES = {'double', 'float'}
# Element types of plain-data arrays, with their harness helper.
ARRAY_HELPERS = {'int64_t': 'sw_i64s', 'int': 'sw_ints', 'double': 'sw_f64s',
                 'float': 'sw_f32s', 'uint8_t': 'sw_u8s'}
QUALS = {'const', 'volatile', 'restrict', 'struct', 'enum', 'union'}


class ParseError(Exception):
    pass


# ---- reading the headers -----------------------------------------------------

def strip_source(text):
    text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
    text = re.sub(r'//[^\n]*', ' ', text)
    text = re.sub(r'\\\n', ' ', text)
    lines, skip = [], 0
    for line in text.split('\n'):
        s = line.strip()
        if s.startswith('#'):
            if skip:
                if re.match(r'#\s*if', s):
                    skip += 1
                elif re.match(r'#\s*endif', s):
                    skip -= 1
            elif re.match(r'#\s*ifdef\s+__cplusplus', s):
                skip = 1
            continue
        if not skip:
            lines.append(line)
    text = '\n'.join(lines)
    return strip_attributes(text)


def strip_attributes(text):
    out, i = [], 0
    while True:
        j = text.find('__attribute__', i)
        if j < 0:
            out.append(text[i:])
            return ''.join(out)
        out.append(text[i:j])
        k = text.index('(', j)
        depth = 0
        while True:
            if text[k] == '(':
                depth += 1
            elif text[k] == ')':
                depth -= 1
                if depth == 0:
                    break
            k += 1
        i = k + 1


def statements(text):
    depth, cur = 0, []
    for ch in text:
        if ch in '({':
            depth += 1
        elif ch in ')}':
            depth -= 1
            if depth < 0:
                raise ParseError('unbalanced "%s"' % ''.join(cur)[-80:])
        if ch == ';' and depth == 0:
            yield ' '.join(''.join(cur).split())
            cur = []
        else:
            cur.append(ch)
    if ''.join(cur).strip():
        raise ParseError('text after the last statement: %r' % ''.join(cur).strip()[:80])


def split_top(s, sep=','):
    depth, cur, out = 0, [], []
    for ch in s:
        if ch in '({[':
            depth += 1
        elif ch in ')}]':
            depth -= 1
        if ch == sep and depth == 0:
            out.append(''.join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append(''.join(cur).strip())
    return out


def matching(s, i):
    """Index of the parenthesis closing the one at s[i]."""
    depth = 0
    for k in range(i, len(s)):
        if s[k] == '(':
            depth += 1
        elif s[k] == ')':
            depth -= 1
            if depth == 0:
                return k
    raise ParseError('unclosed "(" in %r' % s)


class Type:
    """A parameter or return type: base name, pointer depth, const pointee."""
    def __init__(self, text):
        self.text = text.strip()
        toks = re.findall(r'[A-Za-z_]\w*|\*', self.text)
        self.depth = toks.count('*')
        first_star = toks.index('*') if '*' in toks else len(toks)
        self.const = 'const' in toks[:first_star]
        names = [t for t in toks[:first_star] if t not in QUALS]
        self.base = ' '.join(names)
        if not self.base:
            raise ParseError('no type name in %r' % text)


class Param:
    def __init__(self, text, func):
        self.fnptr = False
        if '(' in text:   # a function pointer: R (*name)(args)
            m = re.match(r'^(.*?)\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)$', text)
            if not m:
                raise ParseError('%s: cannot read parameter %r' % (func, text))
            self.name, self.type = m.group(2), None
            self.fnptr, self.ctype = True, text
            return
        toks = re.findall(r'[A-Za-z_]\w*|\*', text)
        named = (len(toks) >= 2 and toks[-1] != '*' and toks[-1] not in QUALS and
                 any(t not in QUALS and t != '*' for t in toks[:-1]))
        if named:
            self.name = toks[-1]
            tt = text[:text.rstrip().rfind(self.name)]
        else:
            self.name, tt = None, text
        self.type = Type(tt)
        self.ctype = self.type.text


class Func:
    def __init__(self, ret, name, params, header):
        self.ret, self.name, self.params, self.header = ret, name, params, header
        self.variadic = False


def parse_headers(paths):
    funcs, structs, opaque, enums, fnptrs = [], {}, set(), {}, {}
    seen = {}
    for path in paths:
        text = strip_source(open(path, encoding='utf-8').read())
        hname = path.replace('\\', '/').split('/')[-1]
        for st in statements(text):
            if not st:
                continue
            st = re.sub(r'^extern\s+"C"\s*\{\s*', '', st)
            if st.startswith('typedef'):
                parse_typedef(st, structs, opaque, enums, fnptrs)
                continue
            m = re.match(r'^(struct|enum|union)\s+\w+\s*\{', st)
            if m:
                continue    # a plain struct definition: no function in it
            f = parse_function(st, hname)
            if f.name in seen:
                raise ParseError('%s declared twice (%s, %s)' % (f.name, seen[f.name], hname))
            seen[f.name] = hname
            funcs.append(f)
    return funcs, structs, opaque, enums, fnptrs


def parse_typedef(st, structs, opaque, enums, fnptrs):
    body = st[len('typedef'):].strip()
    m = re.match(r'^(struct|union)\s+(\w+)?\s*\{(.*)\}\s*(\w+)$', body, re.S)
    if m:
        structs[m.group(4)] = m.group(3)
        return
    m = re.match(r'^(struct|union)\s+(\w+)\s+(\w+)$', body)
    if m:
        opaque.add(m.group(3))
        return
    m = re.match(r'^enum\s*(\w+)?\s*\{(.*)\}\s*(\w+)$', body, re.S)
    if m:
        first = split_top(m.group(2))[0].split('=')[0].strip()
        enums[m.group(3)] = first
        return
    m = re.match(r'^(.*?)\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)$', body)
    if m:
        fnptrs[m.group(2)] = body
        return
    raise ParseError('cannot read typedef %r' % st[:100])


def parse_function(st, header):
    i = st.find('(')
    if i < 0:
        raise ParseError('%s: not a function declaration: %r' % (header, st[:100]))
    head = st[:i].rstrip()
    m = re.match(r'^(.*?)\b(\w+)$', head)
    if not m or not m.group(1).strip():
        raise ParseError('%s: cannot read %r' % (header, st[:100]))
    ret, name = m.group(1).strip(), m.group(2)
    ret = re.sub(r'^(extern|static|inline)\s+', '', ret)
    j = matching(st, i)
    if st[j + 1:].strip():
        raise ParseError('%s: %s: text after the parameters: %r' % (header, name, st[j + 1:]))
    plist = st[i + 1:j].strip()
    f = Func(Type(ret), name, [], header)
    if plist in ('', 'void'):
        return f
    for k, p in enumerate(split_top(plist)):
        if p == '...':
            f.variadic = True
            continue
        prm = Param(p, name)
        if prm.name is None:
            prm.name = 'arg%d' % k
        f.params.append(prm)
    return f


# ---- what the sweep passes ----------------------------------------------------

class Sweep:
    def __init__(self, funcs, structs, opaque, enums, fnptrs, fixtures):
        self.funcs = funcs
        self.by_name = {f.name: f for f in funcs}
        self.structs, self.opaque, self.enums = structs, opaque, enums
        self.fnptrs, self.fixtures = fnptrs, fixtures
        self.stubs = []      # functions for function-pointer parameters
        self.defaults = {}   # struct type -> a 0-argument function returning it
        for f in funcs:
            if not f.params and f.ret.depth == 0 and f.ret.base in structs:
                want = f.ret.base.replace('_opts', '_defaults')
                if f.ret.base not in self.defaults or f.name == want:
                    self.defaults[f.ret.base] = f.name

    def free_fn(self, base):
        name = base + '_free'
        return name if name in self.by_name else None

    def kind(self, f, p):
        """How parameter p of f is made: one of the kinds below."""
        if p.fnptr:
            return 'fnptr'
        t = p.type
        if t.depth == 0:
            if t.base in INT_TYPES:
                return 'int'
            if t.base in REAL_TYPES:
                return 'real'
            if t.base == 'bool':
                return 'bool'
            if t.base in self.enums:
                return 'enum'
            if t.base == 'ag_var':
                return 'var'
            if t.base in self.fnptrs:
                return 'fnptr'
            if t.base in self.structs:
                return 'struct'
            raise ParseError('%s: no way to pass %s %s' % (f.name, t.text, p.name))
        if t.depth == 1:
            if t.base == 'char':
                return 'str' if t.const else 'buffer'   # char *buf: room to write
            if t.base == 'void':
                return 'voidp'
            if t.base == 'ag_tensor':
                return 'tensor'
            if t.base == 'ag_var':
                return 'vars'
            if t.base in ARRAY_HELPERS:
                return 'array'
            if t.base in self.opaque or t.base == 'FILE' or 'fx_' + t.base in self.fixtures:
                self.need_fixture(f, p, t.base)
                return 'fixture'
            if t.base in self.structs:
                return 'structbuf'
            if t.base in INT_TYPES or t.base in REAL_TYPES or t.base == 'bool':
                return 'buffer'
        if t.depth == 2:
            if t.base == 'char':
                return 'strs'
            if t.base == 'ag_tensor':
                return 'tensors'
            if t.base in self.opaque and self.free_fn(t.base):
                return 'outslot'
            if t.base in INT_TYPES or t.base in REAL_TYPES or t.base in ARRAY_HELPERS:
                return 'outslot'
        raise ParseError('%s: no way to make %s %s: add fx_%s to null_sweep.h and '
                         'null_sweep.c' % (f.name, t.text, p.name, t.base))

    def need_fixture(self, f, p, base):
        if 'fx_' + base not in self.fixtures:
            raise ParseError('%s: parameter %s needs a %s: add fx_%s to null_sweep.h and '
                             'null_sweep.c' % (f.name, p.name, base, base))

    def nullable(self, f, p):
        if f.name in NO_ERROR or is_free_like(f):
            return True
        if p.type is not None and p.type.depth == 1 and p.type.base == 'void':
            return True
        return p.name in NULLABLE.get(f.name, ())

    # -- one argument, as C, for pattern character `ch` at index i --
    def arg_decl(self, f, i, p, k, pre, post):
        v = 'a%d' % i
        t = p.type
        ct = p.ctype
        if k == 'int':
            mx, signed = INT_TYPES[t.base]
            val = VALID_INT.get(p.name, 1)
            fn = 'sw_sint' if signed else 'sw_uint'
            pre.append('%s %s = (%s)%s(c, %d, %d, %s);' % (ct, v, ct, fn, i, val, mx))
        elif k == 'real':
            pre.append('%s %s = (%s)sw_real(c, %d, %r);' % (
                ct, v, ct, i, float(VALID_REAL.get(p.name, 0.5))))
        elif k == 'bool':
            pre.append('%s %s = sw_bool(c, %d);' % (ct, v, i))
        elif k == 'enum':
            valid = VALID_ENUM.get(t.base, self.enums[t.base])
            pre.append('%s %s = sw_pat(c, %d) == \'B\' ? (%s)99 : %s;' % (ct, v, i, ct, valid))
        elif k == 'var':
            pre.append('%s %s = sw_var(c, %d);' % (ct, v, i))
        elif k == 'fnptr' and not p.fnptr and 'fx_' + t.base in self.fixtures:
            pre.append('%s %s = sw_pat(c, %d) == \'N\' ? NULL : fx_%s(c, %d);' % (
                ct, v, i, t.base, i))
        elif k == 'fnptr':
            # no fixture: a stub of the right signature that does nothing
            stub = 'sw_stub_%s_%s' % (f.name, p.name)
            sig = p.ctype if p.fnptr else self.fnptrs[t.base]
            self.stubs.append(make_stub(stub, sig))
            if p.fnptr:
                decl = re.sub(r'\(\s*\*\s*%s\s*\)' % p.name, '(*%s)' % v, p.ctype, count=1)
            else:
                decl = '%s %s' % (ct, v)
            pre.append('%s = sw_pat(c, %d) == \'N\' ? NULL : %s;' % (decl, i, stub))
        elif k == 'struct':
            if 'fx_' + t.base in self.fixtures:
                valid = 'fx_%s(c, %d)' % (t.base, i)
            elif t.base in self.defaults:
                valid = '%s()' % self.defaults[t.base]
            else:
                valid = '(%s){0}' % ct
            pre.append('%s %s = sw_pat(c, %d) == \'Z\' ? (%s){0} : %s;' % (ct, v, i, ct, valid))
        elif k == 'str':
            pre.append('%s %s = sw_str(c, %d, "%s", "%s");' % (ct, v, i, f.name, p.name))
        elif k == 'strs':
            pre.append('%s %s = (%s)sw_strs(c, %d, "%s");' % (ct, v, ct, i, p.name))
        elif k == 'voidp':
            if f.name == 'ag_mem_free':
                pre.append('%s %s = sw_pat(c, %d) == \'N\' ? NULL : ag_mem_alloc(16);' % (
                    ct, v, i))
            else:
                pre.append('%s %s = NULL;   /* user data */' % (ct, v))
        elif k == 'tensor':
            pre.append('%s %s = sw_tensor(c, %d);' % (ct, v, i))
        elif k == 'tensors':
            pre.append('%s %s = (%s)sw_tensors(c, %d);' % (ct, v, ct, i))
        elif k == 'vars':
            pre.append('%s %s = sw_vars(c, %d);' % (ct, v, i))
        elif k == 'array':
            pre.append('%s %s = %s(c, %d, "%s", "%s");' % (
                ct, v, ARRAY_HELPERS[t.base], i, f.name, p.name))
        elif k == 'buffer':
            pre.append('%s %s = sw_pat(c, %d) == \'N\' ? NULL : sw_buf(c, 64 * sizeof *%s);' % (
                ct, v, i, v))
        elif k == 'fixture' and t.base in self.structs:   # a complete struct: also zeroed
            pre.append('%s %s = sw_pat(c, %d) == \'N\' ? NULL : sw_pat(c, %d) == \'Z\' ? '
                       'sw_buf(c, sizeof *%s) : fx_%s(c, %d);' % (ct, v, i, i, v, t.base, i))
        elif k == 'fixture':
            pre.append('%s %s = sw_pat(c, %d) == \'N\' ? NULL : fx_%s(c, %d);' % (
                ct, v, i, t.base, i))
        elif k == 'structbuf':
            fx = ('fx_%s(c, %d)' % (t.base, i) if 'fx_' + t.base in self.fixtures
                  else 'sw_buf(c, 64 * sizeof *%s)' % v)
            pre.append('%s %s = sw_pat(c, %d) == \'N\' ? NULL : sw_pat(c, %d) == \'Z\' ? '
                       'sw_buf(c, 64 * sizeof *%s) : %s;' % (ct, v, i, i, v, fx))
        elif k == 'outslot':
            inner = ct[:ct.rstrip().rfind('*')].rstrip()
            # `const int64_t **` holds a `const int64_t *`; drop a trailing const
            inner = re.sub(r'\bconst\s*$', '', inner).rstrip()
            pre.append('%s s%d = NULL;' % (inner, i))
            pre.append('%s %s = sw_pat(c, %d) == \'N\' ? NULL : &s%d;' % (ct, v, i, i))
            fr = self.free_fn(t.base)
            if fr:
                post.append('%s(s%d);' % (fr, i))
        else:
            raise AssertionError(k)
        return v

    def ret_check(self, f):
        """(C expression true when r is the error value, message needed)."""
        if f.name in ERROR_VALUE:
            return ERROR_VALUE[f.name]
        t = f.ret
        if t.depth > 0:
            return ('r == NULL', True)
        if t.base == 'ag_status':
            return ('r != AG_OK', True)
        if t.base in REAL_TYPES:
            return ('isnan(r)', True)
        if t.base == 'bool':
            return ('!r', True)
        if t.base == 'ag_var':
            return ('r.id < 0', True)
        if t.base in INT_TYPES:
            return ('r <= 0', True) if INT_TYPES[t.base][1] else ('r == 0', True)
        if t.base in self.enums:
            return ('true', True)   # no error value: the message tells
        return None                 # void, or a struct of options

    def is_op(self, f):
        """Tape first and a result an op gives: the error is kept on the tape."""
        return (f.params and f.params[0].type is not None and
                f.params[0].type.base == 'ag_tape' and f.params[0].type.depth == 1 and
                not f.params[0].type.const and
                (f.ret.base in ('ag_tensor', 'ag_var', 'bool') or f.ret.base == 'void' and
                 f.ret.depth == 1))

    def owned_free(self, f):
        if f.name in OWNED_RESULT:
            return OWNED_RESULT[f.name]
        t = f.ret
        if t.depth != 1 or t.const:
            return None
        if t.base == 'ag_tensor':
            # persistent constructors; ag_tensor_free ignores tape tensors
            return 'ag_tensor_free' if f.name.startswith('ag_tensor_') else None
        return self.free_fn(t.base)

    # -- patterns --
    def patterns(self, f, kinds):
        ps = f.params
        n = len(ps)
        check = self.ret_check(f) is not None and f.name not in NO_ERROR
        ptr_kinds = {'str', 'strs', 'voidp', 'tensor', 'tensors', 'vars', 'array', 'buffer',
                     'fixture', 'structbuf', 'outslot', 'fnptr'}
        array_kinds = {'strs', 'tensors', 'vars', 'array', 'buffer'}
        # `void *` user data is always NULL already (ag_mem_free's p excepted)
        ptrs = [i for i in range(n) if kinds[i] in ptr_kinds and
                (kinds[i] != 'voidp' or f.name == 'ag_mem_free') and
                (f.name, ps[i].name) not in NEVER_NULL]
        out = []

        def add(chars, expect, what):
            s = ''.join(chars)
            if all(s != o[0] for o in out):
                out.append((s, expect if check else 'A', what))

        base = ['V'] * n
        if ptrs:
            chars = list(base)
            for i in ptrs:
                chars[i] = 'N'
            due = any(not self.nullable(f, ps[i]) for i in ptrs)
            add(chars, 'E' if due else 'A', 'all NULL')
        add(base, 'A', 'valid')
        tens = [i for i in range(n) if kinds[i] in ('tensor', 'tensors')]
        if tens:
            for ch, what in (('T', 'taped'), ('Z', 'empty tensors')):
                chars = list(base)
                for i in tens:
                    chars[i] = ch
                add(chars, 'A', what)
        for i in ptrs:
            chars = list(base)
            chars[i] = 'N'
            add(chars, 'A' if self.nullable(f, ps[i]) else 'E', '%s NULL' % ps[i].name)
        for i in range(n):
            k, p = kinds[i], ps[i]
            if k in ('structbuf', 'struct', 'fixture') and \
                    (k != 'fixture' or p.type.base in self.structs):
                if k == 'structbuf' and p.type.const or k in ('struct', 'fixture'):
                    chars = list(base)
                    chars[i] = 'Z'
                    add(chars, 'A', '%s zeroed' % p.name)
            if k == 'int':
                signed = INT_TYPES[p.type.base][1]
                length = p.name in LENGTHS
                chars = list(base)
                chars[i] = 'Z'
                add(chars, 'A', '%s = 0' % p.name)
                if length or p.name in NDIMS:
                    for j in range(n):
                        if kinds[j] in array_kinds:
                            chars[j] = 'N'
                    add(chars, 'A', '%s = 0, arrays NULL' % p.name)
                if signed:
                    chars = list(base)
                    chars[i] = 'M'
                    due = length or p.name in NDIMS
                    add(chars, 'E' if due else 'A', '%s = -1' % p.name)
                chars = list(base)
                chars[i] = 'X'
                if length:
                    for j in range(n):
                        if kinds[j] in array_kinds:
                            chars[j] = 'N'
                    add(chars, 'A', '%s = MAX, arrays NULL' % p.name)
                else:
                    add(chars, 'A', '%s = MAX' % p.name)
            if k == 'array' and p.type.base in ('int64_t', 'int'):
                for ch, what in (('M', '-1'), ('X', 'MAX')):
                    chars = list(base)
                    chars[i] = ch
                    add(chars, 'A', '%s[] = %s' % (p.name, what))
            if k == 'enum':
                chars = list(base)
                chars[i] = 'B'
                add(chars, 'E', '%s = 99' % p.name)
            if k == 'var':
                for ch, what in (('M', 'id -1'), ('X', 'id INT32_MAX')):
                    chars = list(base)
                    chars[i] = ch
                    add(chars, 'E', '%s %s' % (p.name, what))
        reals = [i for i in range(n) if kinds[i] == 'real']
        if reals:
            for ch, what in (('I', 'NaN'), ('X', 'Inf')):
                chars = list(base)
                for i in reals:
                    chars[i] = ch
                add(chars, 'A', 'every double %s' % what)
        bools = [i for i in range(n) if kinds[i] == 'bool']
        if bools:
            chars = list(base)
            for i in bools:
                chars[i] = 'F'
            add(chars, 'A', 'every bool false')
        return out

    def thunk(self, f):
        kinds = [self.kind(f, p) for p in f.params]
        pre, post = [], []
        args = [self.arg_decl(f, i, p, kinds[i], pre, post) for i, p in enumerate(f.params)]
        body = ['static void sw_fn_%s(sw_call *c)' % f.name, '{']
        body += ['    ' + s for s in pre]
        call = '%s(%s)' % (f.name, ', '.join(args))
        body.append('    sw_begin(c);')
        rc = self.ret_check(f)
        ret_ct = f.ret.text
        if f.ret.base == 'void' and f.ret.depth == 0:
            body.append('    %s;' % call)
            body.append('    sw_end(c, true, false, NULL);')
        else:
            body.append('    %s r = %s;' % (ret_ct, call))
            body.append('    (void)r;')
            if rc is None:
                body.append('    sw_end(c, true, false, NULL);')
            else:
                tape = 'a0' if self.is_op(f) else 'NULL'
                body.append('    sw_end(c, %s, %s, %s);' % (
                    rc[0], 'true' if rc[1] else 'false', tape))
            fr = self.owned_free(f)
            if fr:
                body.append('    %s(%sr);' % (fr, '(void *)' if fr == 'ag_mem_free' else ''))
        for i, p in enumerate(f.params):
            if is_free_like(f) and i == 0 or CONSUMES.get(f.name) == p.name:
                body.append('    sw_consume(c, %s);' % args[i])
        body += ['    ' + s for s in post]
        body.append('}')
        return kinds, '\n'.join(body)


def make_stub(name, sig):
    """A function `name` with the signature of the function pointer `sig`
    (R (*x)(params)) that returns a zero R."""
    m = re.match(r'^(.*?)\(\s*\*\s*\w+\s*\)\s*\((.*)\)$', sig)
    ret, plist = m.group(1).strip(), m.group(2).strip()
    params, uses = [], []
    if plist not in ('', 'void'):
        for k, ptext in enumerate(split_top(plist)):
            prm = Param(ptext, name)
            pname = 'p%d' % k
            if prm.fnptr:
                params.append(re.sub(r'\(\s*\*\s*\w+\s*\)', '(*%s)' % pname, ptext, count=1))
            else:
                params.append('%s %s' % (prm.type.text, pname))
            uses.append('(void)%s;' % pname)
    body = ' '.join(uses)
    if ret != 'void':
        body += ' return (%s){0};' % ret
    return 'static %s %s(%s)\n{\n    %s\n}' % (ret, name, ', '.join(params) or 'void',
                                              body.strip())


def is_free_like(f):
    """*_free: NULL is a no-op, and the argument is taken."""
    return f.name.endswith('_free')


def describe(f, chars):
    shown = {'V': None, 'N': 'NULL', 'T': 'taped', 'Z': '0', 'M': '-1', 'X': 'MAX',
             'B': '99', 'I': 'NaN', 'F': 'false'}
    out = []
    for p, ch in zip(f.params, chars):
        v = shown[ch]
        if ch == 'X' and p.type is not None and p.type.base in REAL_TYPES:
            v = 'Inf'
        if ch == 'Z' and p.type is not None and p.type.base not in INT_TYPES:
            v = 'empty' if p.type.base == 'ag_tensor' else 'zeroed'
        if ch in 'MX' and p.type is not None and p.type.base == 'ag_var':
            v = 'id -1' if ch == 'M' else 'id INT32_MAX'
        if ch in 'MX' and p.type is not None and p.type.depth == 1 and \
                p.type.base in ('int64_t', 'int'):
            v = '{-1...}' if ch == 'M' else '{MAX...}'
        out.append(p.name if v is None else '%s=%s' % (p.name, v))
    return '%s(%s)' % (f.name, ', '.join(out))


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    fixtures_h, dst, headers = sys.argv[1], sys.argv[2], sys.argv[3:]
    fixtures = set(re.findall(r'\b(fx_\w+)\s*\(', open(fixtures_h, encoding='utf-8').read()))
    try:
        sweep = Sweep(*parse_headers(headers), fixtures)
        lines = ['/* null_sweep_calls.c — generated by tests/gen_null_sweep.py from %s;'
                 % ', '.join(h.split('/')[-1] for h in headers),
                 ' * do not edit.  One thunk and one pattern list per public function. */',
                 '#include "null_sweep.h"', '']
        table = []
        n_calls = 0
        for f in sweep.funcs:
            kinds, code = sweep.thunk(f)
            pats = sweep.patterns(f, kinds)
            lines.append('/* %s: %s */' % (f.header, f.name))
            lines += sweep.stubs
            sweep.stubs = []
            lines.append(code)
            lines.append('static const sw_pattern sw_pats_%s[] = {' % f.name)
            for chars, expect, what in pats:
                lines.append('    {"%s", \'%s\', "%s"},   /* %s */' % (
                    chars, expect, describe(f, chars), what))
            lines.append('};')
            lines.append('')
            table.append('    {"%s", sw_fn_%s, sw_pats_%s, %d},' % (
                f.name, f.name, f.name, len(pats)))
            n_calls += len(pats)
    except ParseError as e:
        sys.exit('gen_null_sweep.py: %s' % e)
    lines.append('const sw_function sw_functions[] = {')
    lines += table
    lines.append('};')
    lines.append('const int sw_n_functions = %d;' % len(table))
    lines.append('const int sw_n_calls = %d;' % n_calls)
    with open(dst, 'w', encoding='utf-8') as out:
        out.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
