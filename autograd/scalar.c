/* scalar.c — the lean scalar path: one recorded op is a slot in six
 * parallel arrays (value, adjoint, operands, op code, branch flag), kept
 * by the tape across resets.  Backward derives each local partial from
 * the stored values, so no partials are stored; replay re-runs the same
 * arrays forward; second order adds two arrays (tangent, adjoint tangent)
 * on first use.  Notation: x = val[a0], y = val[a1], z = val[i],
 * g = adj[i]; a prime is the tangent along the direction v: x' = dot[a0],
 * z' = dot[i], g' = adot[i]. */
#include "autograd_internal.h"

#include <math.h>

enum {
    S_INPUT, S_CONST, S_ADD, S_SUB, S_MUL, S_DIV, S_POW, S_MIN, S_MAX, S_NEG, S_EXP,
    S_LOG, S_SQRT, S_SIN, S_COS, S_TANH, S_SIGMOID, S_RELU, S_ABS, S_LESS, S_TENSOR
};

typedef struct ag_scalar_tape {
    double *val, *adj;
    int32_t *a0, *a1;
    uint8_t *op, *flag;  /* flag: branch taken (min/max/relu/abs/less) */
    int64_t n, cap;
    ag_tensor **src;     /* tensors bridged in by ag_var_from_tensor */
    int64_t n_src, cap_src;
    double *dot, *adot;  /* second order: tangents, adjoint tangents (cap2) */
    int64_t cap2;
    /* The tape's generation (low 32 bits) in the high half: a live var's
     * key (gen << 32 | id) minus base is its id, below n; any other key
     * (another step or tape, id -1) lands at 2^32 or more. */
    uint64_t base;
    int64_t adj_end;     /* adj holds a sweep's adjoints for ops [0, adj_end) */
} ag_scalar_tape;

#define NO_VAR ((ag_var){-1, 0})

AG_INLINE uint64_t var_key(ag_var a) { return (uint64_t)a.gen << 32 | (uint32_t)a.id; }

/* a indexes an op recorded in this step of this tape: one compare */
AG_INLINE bool var_live(const ag_scalar_tape *s, ag_var a)
{
    return var_key(a) - s->base < (uint64_t)s->n;
}

static uint64_t base_of(const ag_tape *tape) { return (uint64_t)(uint32_t)tape->gen << 32; }

size_t ag_scalar_bytes_per_op(void)
{
    return 2 * sizeof(double) + 2 * sizeof(int32_t) + 2 * sizeof(uint8_t);
}

int64_t ag_scalar_count(const ag_tape *tape) { return tape->scalar ? tape->scalar->n : 0; }
int64_t ag_tape_scalar_ops(const ag_tape *tape)
{
    if (!tape) {
        ag_set_last_error("ag_tape_scalar_ops: tape is NULL");
        return 0;
    }
    return ag_scalar_count(tape);
}

void ag_scalar_reset(ag_tape *tape)
{
    if (tape->scalar) {
        tape->scalar->n = tape->scalar->n_src = tape->scalar->adj_end = 0;
        tape->scalar->base = base_of(tape);
    }
}

static void free_arrays(ag_scalar_tape *s)
{
    ag_mem_free(s->val);
    ag_mem_free(s->adj);
    ag_mem_free(s->a0);
    ag_mem_free(s->a1);
    ag_mem_free(s->op);
    ag_mem_free(s->flag);
}

void ag_scalar_free(ag_tape *tape)
{
    if (!tape->scalar)
        return;
    free_arrays(tape->scalar);
    ag_mem_free(tape->scalar->dot);
    ag_mem_free(tape->scalar->adot);
    ag_mem_free(tape->scalar->src);
    ag_mem_free(tape->scalar);
    tape->scalar = NULL;
}

#define GROW(field, type)                                                     \
    do {                                                                      \
        ns.field = ag_mem_alloc((size_t)cap * sizeof(type));                  \
        if (!ns.field)                                                        \
            goto fail;                                                        \
        if (s->n)                                                             \
            memcpy(ns.field, s->field, (size_t)s->n * sizeof(type));          \
    } while (0)

/* Doubles the arrays (the first call makes them). */
static bool grow(ag_tape *tape)
{
    if (!tape->scalar) {
        if (!(tape->scalar = ag_mem_calloc(sizeof *tape->scalar))) {
            ag_fail(tape, AG_ERR_NOMEM, "ag_var: out of memory");
            return false;
        }
        tape->scalar->base = base_of(tape);
    }
    ag_scalar_tape *s = tape->scalar, ns = *s;
    int64_t cap = s->cap ? s->cap * 2 : 4096;
    if (cap > INT32_MAX) {
        ag_fail(tape, AG_ERR_NOMEM, "ag_var: more than %d scalar ops", INT32_MAX);
        return false;
    }
    ns.val = ns.adj = NULL;
    ns.a0 = ns.a1 = NULL;
    ns.op = ns.flag = NULL;
    GROW(val, double);
    GROW(a0, int32_t);
    GROW(a1, int32_t);
    GROW(op, uint8_t);
    GROW(flag, uint8_t);
    ns.adj = ag_mem_alloc((size_t)cap * sizeof(double)); /* filled by backward */
    if (!ns.adj)
        goto fail;
    if (s->adj_end) /* what the last sweep left stays readable */
        memcpy(ns.adj, s->adj, (size_t)s->adj_end * sizeof(double));
    free_arrays(s);
    ns.cap = cap;
    *s = ns;
    return true;
fail:
    free_arrays(&ns);
    ag_fail(tape, AG_ERR_NOMEM, "ag_var: out of memory for %lld scalar ops", (long long)cap);
    return false;
}

static ag_var push(ag_tape *t, uint8_t op, int32_t a0, int32_t a1, double v, uint8_t flag)
{
    ag_scalar_tape *s = t->scalar;
    if (!s || s->n == s->cap) {
        if (!grow(t))
            return NO_VAR;
        s = t->scalar;
    }
    int64_t i = s->n++;
    s->val[i] = v;
    s->a0[i] = a0;
    s->a1[i] = a1;
    s->op[i] = op;
    s->flag[i] = flag;
    return (ag_var){(int32_t)i, (uint32_t)(s->base >> 32)};
}

/* Why var a (argument arg of fn) is not live: a failed op's result (or
 * no var at all) is AG_ERR_ARG, one of another step or tape AG_ERR_STATE.
 * Writes the message into buf; returns the status. */
static ag_status var_problem(const ag_tape *t, ag_var a, const char *fn, const char *arg,
                             char *buf, size_t n)
{
    const ag_scalar_tape *s = t->scalar;
    uint32_t gen = (uint32_t)t->gen;
    if (a.id >= 0 && a.gen != 0 && a.gen != gen) {
        snprintf(buf, n, "%s: %s is an ag_var from another tape or from before "
                 "ag_tape_reset (vars live one step)", fn, arg);
        return AG_ERR_STATE;
    }
    snprintf(buf, n, "%s: %s is an invalid ag_var (id %d: the result of a failed op, or "
             "not made by ag_var_*; %lld ops recorded)", fn, arg, (int)a.id,
             (long long)(s ? s->n : 0));
    return AG_ERR_ARG;
}

/* An operand is valid when it indexes an op recorded on this tape since
 * the last reset. */
static bool valid(ag_tape *t, ag_var a, const char *fn, const char *arg)
{
    if (!t) {
        ag_set_last_error("%s: tape is NULL", fn);
        return false;
    }
    if (!ag_tape_ok(t, fn))
        return false;
    if (t->scalar && var_live(t->scalar, a))
        return true;
    char msg[256];
    ag_status st = var_problem(t, a, fn, arg, msg, sizeof msg);
    ag_fail(t, st, "%s", msg);
    return false;
}

/* valid() for element k of an array argument ("x[3]"), the name written
 * only when it is needed. */
static bool valid_at(ag_tape *t, ag_var a, const char *fn, const char *arr, int64_t k)
{
    if (t && t->status == AG_OK && t->scalar && var_live(t->scalar, a))
        return true;
    char arg[48];
    snprintf(arg, sizeof arg, "%s[%lld]", arr, (long long)k);
    return valid(t, a, fn, arg);
}

/* The same for the readers that take a const tape (no error kept on it). */
static bool valid_read(const ag_tape *t, ag_var a, const char *fn)
{
    if (!t) {
        ag_set_last_error("%s: tape is NULL", fn);
        return false;
    }
    if (t->scalar && var_live(t->scalar, a))
        return true;
    char msg[256];
    var_problem(t, a, fn, "x", msg, sizeof msg);
    ag_set_last_error("%s", msg);
    return false;
}

ag_var ag_var_new(ag_tape *t, double value)
{
    if (!t) {
        ag_set_last_error("ag_var_new: tape is NULL");
        return NO_VAR;
    }
    if (!ag_tape_ok(t, "ag_var_new"))
        return NO_VAR;
    return push(t, S_INPUT, -1, -1, value, 0);
}

ag_var ag_var_const(ag_tape *t, double value)
{
    if (!t) {
        ag_set_last_error("ag_var_const: tape is NULL");
        return NO_VAR;
    }
    if (!ag_tape_ok(t, "ag_var_const"))
        return NO_VAR;
    return push(t, S_CONST, -1, -1, value, 0);
}

/* The branch a selecting op takes: which operand wins, or sign. */
AG_INLINE uint8_t branch(uint8_t op, double x, double y)
{
    switch (op) {
    case S_MIN: return x < y ? 0 : y < x ? 1 : 2;
    case S_MAX: return x > y ? 0 : y > x ? 1 : 2;
    case S_RELU: return x > 0;
    case S_ABS: return x > 0 ? 1 : x < 0 ? 2 : 0;
    case S_LESS: return x < y;
    }
    return 0;
}

AG_INLINE double eval(uint8_t op, double x, double y, uint8_t f)
{
    switch (op) {
    case S_ADD: return x + y;
    case S_SUB: return x - y;
    case S_MUL: return x * y;
    case S_DIV: return x / y;
    case S_POW: return pow(x, y);
    case S_MIN: return f == 1 ? y : x;
    case S_MAX: return f == 1 ? y : x;
    case S_NEG: return -x;
    case S_EXP: return exp(x);
    case S_LOG: return log(x);
    case S_SQRT: return sqrt(x);
    case S_SIN: return sin(x);
    case S_COS: return cos(x);
    case S_TANH: return tanh(x);
    case S_SIGMOID: return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
    case S_RELU: return f ? x : 0;
    case S_ABS: return fabs(x);
    }
    return 0;
}

/* The recording fast path is inlined into each public op with `op` a
 * constant, so branch() and eval() fold to the one case; anything unusual
 * (no arrays yet, full arrays, a bad operand, a kept error) goes the slow
 * way through valid() and grow(). */
static __attribute__((noinline, cold)) bool slow_ready(ag_tape *t, ag_var a, ag_var b,
                                                      bool two, const char *fn)
{
    if (!valid(t, a, fn, "a") || (two && !valid(t, b, fn, "b")))
        return false;
    return t->scalar->n < t->scalar->cap || grow(t);
}

AG_INLINE ag_var record2(ag_tape *t, uint8_t op, ag_var a, ag_var b, const char *fn)
{
    ag_scalar_tape *s = t ? t->scalar : NULL;
    if (!(s && s->n < s->cap && t->status == AG_OK && var_live(s, a) && var_live(s, b))) {
        if (!slow_ready(t, a, b, true, fn))
            return NO_VAR;
        s = t->scalar;
    }
    double x = s->val[a.id], y = s->val[b.id];
    uint8_t f = branch(op, x, y);
    int64_t i = s->n++;
    s->val[i] = eval(op, x, y, f);
    s->a0[i] = a.id;
    s->a1[i] = b.id;
    s->op[i] = op;
    s->flag[i] = f;
    return (ag_var){(int32_t)i, (uint32_t)(s->base >> 32)};
}

AG_INLINE ag_var record1(ag_tape *t, uint8_t op, ag_var a, const char *fn)
{
    ag_scalar_tape *s = t ? t->scalar : NULL;
    if (!(s && s->n < s->cap && t->status == AG_OK && var_live(s, a))) {
        if (!slow_ready(t, a, a, false, fn))
            return NO_VAR;
        s = t->scalar;
    }
    double x = s->val[a.id];
    uint8_t f = branch(op, x, 0);
    int64_t i = s->n++;
    s->val[i] = eval(op, x, 0, f);
    s->a0[i] = a.id;
    s->a1[i] = -1;
    s->op[i] = op;
    s->flag[i] = f;
    return (ag_var){(int32_t)i, (uint32_t)(s->base >> 32)};
}

#define VAR_BINARY(name, OP)                                                  \
    ag_var ag_var_##name(ag_tape *t, ag_var a, ag_var b)                      \
    {                                                                         \
        return record2(t, OP, a, b, "ag_var_" #name);                          \
    }
#define VAR_UNARY(name, OP)                                                   \
    ag_var ag_var_##name(ag_tape *t, ag_var a) { return record1(t, OP, a, "ag_var_" #name); }

VAR_BINARY(add, S_ADD)
VAR_BINARY(sub, S_SUB)
VAR_BINARY(mul, S_MUL)
VAR_BINARY(div, S_DIV)
VAR_BINARY(pow, S_POW)
VAR_BINARY(min, S_MIN)
VAR_BINARY(max, S_MAX)
VAR_UNARY(neg, S_NEG)
VAR_UNARY(exp, S_EXP)
VAR_UNARY(log, S_LOG)
VAR_UNARY(sqrt, S_SQRT)
VAR_UNARY(sin, S_SIN)
VAR_UNARY(cos, S_COS)
VAR_UNARY(tanh, S_TANH)
VAR_UNARY(sigmoid, S_SIGMOID)
VAR_UNARY(relu, S_RELU)
VAR_UNARY(abs, S_ABS)

bool ag_var_less(ag_tape *t, ag_var a, ag_var b)
{
    if (!valid(t, a, "ag_var_less", "a") || !valid(t, b, "ag_var_less", "b"))
        return false;
    uint8_t f = branch(S_LESS, t->scalar->val[a.id], t->scalar->val[b.id]);
    push(t, S_LESS, a.id, b.id, f, f);
    return f;
}

double ag_var_value(const ag_tape *t, ag_var x)
{
    if (!valid_read(t, x, "ag_var_value"))
        return NAN;
    return t->scalar->val[x.id];
}

double ag_var_grad(const ag_tape *t, ag_var x)
{
    if (!valid_read(t, x, "ag_var_grad"))
        return NAN;
    if (t->status != AG_OK) {
        ag_set_last_error("ag_var_grad: the tape holds an error, so no gradient is "
                          "complete: %s", t->msg);
        return NAN;
    }
    if (x.id >= t->scalar->adj_end) {
        ag_set_last_error("ag_var_grad: no backward has reached x (var %d) since it was "
                          "recorded; call ag_var_backward first", (int)x.id);
        return NAN;
    }
    return t->scalar->adj[x.id];
}

/* ---- reverse sweep ---- */

bool ag_scalar_adjoints_clear(ag_tape *tape, int64_t n)
{
    if (n > 0) {
        memset(tape->scalar->adj, 0, (size_t)n * sizeof(double));
        tape->scalar->adj_end = n;
    }
    return true;
}

static void deposit_tensor(ag_tape *tape, ag_scalar_tape *s, int64_t i, double g)
{
    ag_tensor *x = s->src[s->a1[i]];
    void *dx = ag_grad_data(tape, x);
    if (!dx)
        return;
    if (x->dtype == AG_F64)
        ((double *)dx)[0] += g;
    else
        ((float *)dx)[0] += (float)g;
}

void ag_scalar_reverse(ag_tape *tape, int64_t lo, int64_t hi)
{
    ag_scalar_tape *s = tape->scalar;
    const double *v = s->val;
    double *adj = s->adj;
    for (int64_t i = hi - 1; i >= lo; i--) {
        double g = adj[i];
        int32_t a = s->a0[i], b = s->a1[i];
        switch (s->op[i]) {
        case S_INPUT: case S_CONST: case S_LESS: break;
        case S_ADD: adj[a] += g; adj[b] += g; break;                /* dx += g; dy += g */
        case S_SUB: adj[a] += g; adj[b] -= g; break;
        case S_MUL: adj[a] += g * v[b]; adj[b] += g * v[a]; break;  /* dx += g y; dy += g x */
        case S_DIV: adj[a] += g / v[b]; adj[b] -= g * v[i] / v[b]; break; /* dy -= g z / y */
        case S_POW: /* dx += g y x^(y-1); dy += g z log x (only when it matters) */
            adj[a] += g * v[b] * pow(v[a], v[b] - 1);
            if (g != 0 && v[a] > 0)
                adj[b] += g * v[i] * log(v[a]);
            break;
        case S_MIN: case S_MAX: /* the chosen operand takes g; a tie splits it */
            if (s->flag[i] == 2) {
                adj[a] += 0.5 * g;
                adj[b] += 0.5 * g;
            } else {
                adj[s->flag[i] ? b : a] += g;
            }
            break;
        case S_NEG: adj[a] -= g; break;
        case S_EXP: adj[a] += g * v[i]; break;                      /* dx += g e^x */
        case S_LOG: adj[a] += g / v[a]; break;
        case S_SQRT: adj[a] += g * 0.5 / v[i]; break;               /* dx += g / (2 z) */
        case S_SIN: adj[a] += g * cos(v[a]); break;
        case S_COS: adj[a] -= g * sin(v[a]); break;
        case S_TANH: adj[a] += g * (1 - v[i] * v[i]); break;         /* dx += g (1 - z^2) */
        case S_SIGMOID: adj[a] += g * v[i] * (1 - v[i]); break;     /* dx += g z (1 - z) */
        case S_RELU: adj[a] += s->flag[i] ? g : 0; break;
        case S_ABS: adj[a] += s->flag[i] == 1 ? g : s->flag[i] == 2 ? -g : 0; break;
        case S_TENSOR: deposit_tensor(tape, s, i, g); break;
        }
    }
}

ag_status ag_var_backward(ag_tape *t, ag_var y)
{
    if (!valid(t, y, "ag_var_backward", "y"))
        return t ? t->status : AG_ERR_ARG;
    /* tensor entries recorded before y may feed it through ag_var_from_tensor */
    int64_t e_end = t->n_entries;
    while (e_end > 0 && t->entries[e_end - 1].smark > y.id)
        e_end--;
    for (int64_t i = 0; i < e_end; i++)
        t->entries[i].out->grad = NULL;
    ag_scalar_adjoints_clear(t, y.id + 1);
    t->scalar->adj[y.id] = 1.0;
    ag_sweep(t, e_end, y.id + 1, "ag_var_backward");
    return t->status;
}

/* ---- second order: forward over reverse ----
 * One forward sweep carries the tangents z' of every op along v; one
 * reverse sweep carries the adjoints g and the adjoint tangents g'
 * (ADOL-C's fos_forward + hos_reverse, as hess_vec).  An op z = f(x, y)
 * with partial p = dz/dx adds dx += g p and dx' += g' p + g p', where
 * p' = f_xx x' + f_xy y' is the tangent of the partial. */

/* z' = f_x x' + f_y y' for ops [0, end).  An input's z' is its seed, which
 * the caller parks in the zeroed adot (so dot needs no clearing pass); the
 * sweep moves it out and leaves adot zero for the reverse sweep. */
static void tangent_forward(ag_scalar_tape *s, int64_t end)
{
    const double *v = s->val;
    const int32_t *a0 = s->a0, *a1 = s->a1;
    const uint8_t *op = s->op, *flag = s->flag;
    double *dot = s->dot, *adot = s->adot;
    for (int64_t i = 0; i < end; i++) {
        int32_t a = a0[i], b = a1[i];
        double d = 0;
        switch (op[i]) {
        case S_INPUT: d = adot[i]; adot[i] = 0; break; /* the seed, parked in adot */
        case S_CONST: case S_LESS: case S_TENSOR: break;
        case S_ADD: d = dot[a] + dot[b]; break;
        case S_SUB: d = dot[a] - dot[b]; break;
        case S_MUL: d = dot[a] * v[b] + v[a] * dot[b]; break;       /* x' y + x y' */
        case S_DIV: d = (dot[a] - v[i] * dot[b]) / v[b]; break;     /* (x' - z y') / y */
        case S_POW: /* y x^(y-1) x' + z log(x) y'; a zero x' stays 0 at x^(y-1) = inf */
            d = dot[a] != 0 ? v[b] * pow(v[a], v[b] - 1) * dot[a] : 0;
            if (dot[b] != 0 && v[a] > 0)
                d += v[i] * log(v[a]) * dot[b];
            break;
        case S_MIN: case S_MAX: /* the chosen operand's x'; a tie averages */
            d = flag[i] == 2 ? 0.5 * (dot[a] + dot[b]) : flag[i] ? dot[b] : dot[a];
            break;
        case S_NEG: d = -dot[a]; break;
        case S_EXP: d = v[i] * dot[a]; break;
        case S_LOG: d = dot[a] / v[a]; break;
        case S_SQRT: d = 0.5 * dot[a] / v[i]; break;
        case S_SIN: d = cos(v[a]) * dot[a]; break;
        case S_COS: d = -sin(v[a]) * dot[a]; break;
        case S_TANH: d = (1 - v[i] * v[i]) * dot[a]; break;
        case S_SIGMOID: d = v[i] * (1 - v[i]) * dot[a]; break;
        case S_RELU: d = flag[i] ? dot[a] : 0; break;
        case S_ABS: d = flag[i] == 1 ? dot[a] : flag[i] == 2 ? -dot[a] : 0; break;
        }
        dot[i] = d;
    }
}

/* z = x^y: both partials and their tangents (d/dy needs x > 0, as in backward) */
static void pow_second(ag_scalar_tape *s, int64_t i, double g, double gd)
{
    const double *v = s->val, *dot = s->dot;
    int32_t a = s->a0[i], b = s->a1[i];
    double x = v[a], y = v[b], q = pow(x, y - 1), lx = x > 0 ? log(x) : 0;
    double fxx = y * (y - 1) == 0 ? 0 : y * (y - 1) * pow(x, y - 2); /* y (y-1) x^(y-2) */
    double fxy = x > 0 ? q * (1 + y * lx) : 0;                       /* x^(y-1) (1 + y ln x) */
    s->adj[a] += g * y * q;                                          /* dx += g y x^(y-1) */
    s->adot[a] += gd * y * q + g * (fxx * dot[a] + fxy * dot[b]);
    if (x > 0) { /* dy += g z ln x; p' = z' ln x + z x' / x */
        if (g != 0)
            s->adj[b] += g * v[i] * lx;
        s->adot[b] += gd * v[i] * lx + g * (dot[i] * lx + v[i] * dot[a] / x);
    }
}

/* Adjoints and adjoint tangents of ops [0, end), seeded at end - 1. */
static void second_reverse(ag_scalar_tape *s, int64_t end)
{
    const double *v = s->val, *dot = s->dot;
    double *adj = s->adj, *adot = s->adot;
    for (int64_t i = end - 1; i >= 0; i--) {
        double g = adj[i], gd = adot[i], p, pd; /* p = dz/dx, pd = p' */
        int32_t a = s->a0[i], b = s->a1[i];
        switch (s->op[i]) {
        case S_INPUT: case S_CONST: case S_LESS: case S_TENSOR: continue;
        case S_ADD: adj[a] += g; adj[b] += g; adot[a] += gd; adot[b] += gd; continue;
        case S_SUB: adj[a] += g; adj[b] -= g; adot[a] += gd; adot[b] -= gd; continue;
        case S_MUL: /* dx' += g' y + g y'; dy' += g' x + g x' */
            adj[a] += g * v[b];
            adj[b] += g * v[a];
            adot[a] += gd * v[b] + g * dot[b];
            adot[b] += gd * v[a] + g * dot[a];
            continue;
        case S_DIV: /* dx' += (g' - g y' / y) / y; dy' -= (g' z + g z' - g z y' / y) / y */
            adj[a] += g / v[b];
            adj[b] -= g * v[i] / v[b];
            adot[a] += (gd - g * dot[b] / v[b]) / v[b];
            adot[b] -= (gd * v[i] + g * (dot[i] - v[i] * dot[b] / v[b])) / v[b];
            continue;
        case S_POW: pow_second(s, i, g, gd); continue;
        case S_MIN: case S_MAX: /* selection: linear, no second derivative */
            if (s->flag[i] == 2) {
                adj[a] += 0.5 * g;
                adj[b] += 0.5 * g;
                adot[a] += 0.5 * gd;
                adot[b] += 0.5 * gd;
            } else {
                adj[s->flag[i] ? b : a] += g;
                adot[s->flag[i] ? b : a] += gd;
            }
            continue;
        case S_NEG: p = -1; pd = 0; break;
        case S_EXP: p = v[i]; pd = dot[i]; break;                          /* p' = z' */
        case S_LOG: p = 1 / v[a]; pd = -p * p * dot[a]; break;             /* p' = -x' / x^2 */
        case S_SQRT: p = 0.5 / v[i]; pd = -p * dot[i] / v[i]; break;       /* p' = -p z' / z */
        case S_SIN: p = cos(v[a]); pd = -v[i] * dot[a]; break;             /* p' = -sin(x) x' */
        case S_COS: p = -sin(v[a]); pd = -v[i] * dot[a]; break;            /* p' = -cos(x) x' */
        case S_TANH: p = 1 - v[i] * v[i]; pd = -2 * v[i] * dot[i]; break;  /* p' = -2 z z' */
        case S_SIGMOID: p = v[i] * (1 - v[i]); pd = (1 - 2 * v[i]) * dot[i]; break;
        case S_RELU: p = s->flag[i] ? 1 : 0; pd = 0; break;                /* kinks: p' = 0 */
        case S_ABS: p = s->flag[i] == 1 ? 1 : s->flag[i] == 2 ? -1 : 0; pd = 0; break;
        default: continue;
        }
        adj[a] += g * p;
        adot[a] += gd * p + g * pd;
    }
}

/* The checks both entry points share; makes the tangent arrays hold y. */
static bool second_ready(ag_tape *t, ag_var y, int n, const ag_var *x, const void *in,
                         const char *in_name, const void *out, const char *out_name,
                         const char *fn)
{
    if (!valid(t, y, fn, "y"))
        return false;
    ag_scalar_tape *s = t->scalar;
    if (t->n_entries > 0 || s->n_src > 0) {
        ag_fail(t, AG_ERR_STATE, "%s: the tape holds tensor ops; second order on the "
                "scalar path needs a scalar-only tape (ag_hvp for tensors)", fn);
        return false;
    }
    if (n < 0) {
        ag_fail(t, AG_ERR_ARG, "%s: n is %d (must be >= 0)", fn, n);
        return false;
    }
    const void *arr[] = {x, in, out};
    const char *names[] = {"x", in_name, out_name};
    for (int k = 0; k < 3 && n > 0; k++)
        if (!arr[k] && names[k]) {
            ag_fail(t, AG_ERR_ARG, "%s: %s is NULL (n is %d)", fn, names[k], n);
            return false;
        }
    for (int k = 0; k < n; k++) {
        if (!valid_at(t, x[k], fn, "x", k))
            return false;
        if (s->op[x[k].id] != S_INPUT) {
            ag_fail(t, AG_ERR_ARG, "%s: x[%d] (var %d) is not an input (ag_var_new)", fn, k,
                    (int)x[k].id);
            return false;
        }
    }
    if (s->cap2 < s->cap) {
        ag_mem_free(s->dot);
        ag_mem_free(s->adot);
        s->dot = ag_mem_alloc((size_t)s->cap * sizeof(double));
        s->adot = ag_mem_alloc((size_t)s->cap * sizeof(double));
        s->cap2 = s->dot && s->adot ? s->cap : 0;
        if (!s->cap2) {
            ag_fail(t, AG_ERR_NOMEM, "%s: out of memory for %lld tangents", fn,
                    (long long)s->cap);
            return false;
        }
    }
    return true;
}

/* One product: tangents seeded with v (or with the unit vector e_unit when
 * unit >= 0), both sweeps, hv[k] = adot[x[k]].  Repeated vars in x add
 * their seeds, as the same variable moved twice. */
static void hvp_sweeps(ag_scalar_tape *s, ag_var y, int n, const ag_var *x, const double *v,
                       int unit, double *hv)
{
    int64_t end = (int64_t)y.id + 1;
    memset(s->adj, 0, (size_t)end * sizeof(double));
    memset(s->adot, 0, (size_t)end * sizeof(double));
    if (unit >= 0)
        s->adot[x[unit].id] = 1;
    else
        for (int k = 0; k < n; k++)
            s->adot[x[k].id] += v[k];
    tangent_forward(s, end);
    s->adj[y.id] = 1;
    second_reverse(s, end);
    s->adj_end = end;
    for (int k = 0; k < n; k++)
        hv[k] = s->adot[x[k].id];
}

ag_status ag_var_hvp(ag_tape *t, ag_var y, int n, const ag_var *x, const double *v,
                     double *hv)
{
    if (!second_ready(t, y, n, x, v, "v", hv, "hv", "ag_var_hvp"))
        return t ? t->status : AG_ERR_ARG;
    hvp_sweeps(t->scalar, y, n, x, v, -1, hv);
    return AG_OK;
}

ag_status ag_var_hessian(ag_tape *t, ag_var y, int n, const ag_var *x, double *h)
{
    if (!second_ready(t, y, n, x, NULL, NULL, h, "h", "ag_var_hessian"))
        return t ? t->status : AG_ERR_ARG;
    /* H e_j is column j, stored as row j: H is symmetric; n = 0 still
     * sweeps once for the gradient */
    if (n == 0)
        hvp_sweeps(t->scalar, y, 0, x, NULL, -1, h);
    for (int j = 0; j < n; j++)
        hvp_sweeps(t->scalar, y, n, x, NULL, j, h + (size_t)j * (size_t)n);
    return AG_OK;
}

/* ---- bridges between scalars and tensors ---- */

ag_var ag_var_from_tensor(ag_tape *t, ag_tensor *x)
{
    if (!ag_check_inputs(t, "ag_var_from_tensor", 1, &x))
        return NO_VAR;
    if (x->numel != 1) {
        char b[128];
        ag_fail(t, AG_ERR_SHAPE, "ag_var_from_tensor: tensor %s has %lld elements, not 1",
                ag_shape_str(x, b, sizeof b), (long long)x->numel);
        return NO_VAR;
    }
    if (!t->scalar && !grow(t))
        return NO_VAR;
    ag_scalar_tape *s = t->scalar;
    if (s->n_src == s->cap_src) {
        int64_t cap = s->cap_src ? 2 * s->cap_src : 16;
        ag_tensor **src = ag_mem_alloc((size_t)cap * sizeof *src);
        if (!src) {
            ag_fail(t, AG_ERR_NOMEM, "ag_var_from_tensor: out of memory");
            return NO_VAR;
        }
        if (s->n_src)
            memcpy(src, s->src, (size_t)s->n_src * sizeof *src);
        ag_mem_free(s->src);
        s->src = src;
        s->cap_src = cap;
    }
    s->src[s->n_src] = x;
    return push(t, S_TENSOR, -1, (int32_t)s->n_src++, ag_get(x, 0), 0);
}

static void from_vars_forward(ag_entry *e)
{
    const int32_t *ids = e->aux;
    const double *v = e->out->tape->scalar->val;
    for (int64_t i = 0; i < e->out->numel; i++)
        ag_set(e->out, i, v[ids[i]]);
}

/* adj[var_i] += g_i */
static void from_vars_backward(ag_tape *tape, ag_entry *e)
{
    const int32_t *ids = e->aux;
    for (int64_t i = 0; i < e->out->numel; i++)
        tape->scalar->adj[ids[i]] += ag_get(e->out->grad, i);
}

/* A bridge, not a primitive tensor op: it lives outside the op table. */
static const ag_op_def op_from_vars = {.name = "from_vars", .forward = from_vars_forward,
                                       .backward = from_vars_backward};

ag_tensor *ag_tensor_from_vars(ag_tape *t, ag_dtype dt, int ndim, const int64_t *shape,
                               const ag_var *vars)
{
    int64_t numel;
    if (!ag_check_inputs(t, "ag_tensor_from_vars", 0, NULL))
        return NULL;
    if (!ag_shape_valid(ndim, shape, &numel) || (dt != AG_F32 && dt != AG_F64))
        return ag_fail(t, AG_ERR_ARG, "ag_tensor_from_vars: bad shape or dtype");
    if (numel > 0 && !vars)
        return ag_fail(t, AG_ERR_NULL, "ag_tensor_from_vars: vars is NULL (%lld elements)",
                       (long long)numel);
    if (numel > INT32_MAX)
        return ag_fail(t, AG_ERR_ARG, "ag_tensor_from_vars: %lld elements is more vars "
                       "than a tape holds", (long long)numel);
    for (int64_t i = 0; i < numel; i++)
        if (!valid_at(t, vars[i], "ag_tensor_from_vars", "vars", i))
            return NULL;
    int32_t *ids = ag_arena_alloc(t, (size_t)(numel ? numel : 1) * sizeof *ids);
    if (!ids)
        return NULL;
    for (int64_t i = 0; i < numel; i++)
        ids[i] = vars[i].id;
    /* any var may lead to an input, so the result always records */
    ag_tensor *dummy = ag_tensor_tape(t, dt, 0, NULL);
    if (!dummy)
        return NULL;
    dummy->requires_grad = true;
    ag_op_call c = {.def = &op_from_vars, .in = &dummy, .n_in = 1, .dtype = dt,
                    .ndim = ndim, .shape = shape, .aux = ids};
    return ag_op_run(t, &c);
}

/* ---- replay ---- */

ag_status ag_tape_replay(ag_tape *t, int n, const ag_var *inputs, const double *values)
{
    if (!t) {
        ag_set_last_error("ag_tape_replay: t is NULL");
        return AG_ERR_ARG;
    }
    if (!ag_tape_ok(t, "ag_tape_replay"))
        return t->status;
    if (t->n_entries > 0 || (t->scalar && t->scalar->n_src > 0)) {
        ag_fail(t, AG_ERR_STATE, "ag_tape_replay: the tape holds tensor ops; only scalar "
                "programs replay");
        return t->status;
    }
    if (n < 0)
        return ag_fail(t, AG_ERR_ARG, "ag_tape_replay: n is %d (must be >= 0)", n), t->status;
    if (n > 0 && (!inputs || !values))
        return ag_fail(t, AG_ERR_ARG, "ag_tape_replay: %s is NULL (n is %d)",
                       !inputs ? "inputs" : "values", n), t->status;
    ag_scalar_tape *s = t->scalar;
    for (int k = 0; k < n; k++) {
        if (!valid_at(t, inputs[k], "ag_tape_replay", "inputs", k))
            return t->status;
        if (s->op[inputs[k].id] != S_INPUT) {
            ag_fail(t, AG_ERR_ARG, "ag_tape_replay: var %d is not an input", (int)inputs[k].id);
            return t->status;
        }
        s->val[inputs[k].id] = values[k];
    }
    if (!s) /* nothing recorded: nothing to replay */
        return AG_OK;
    s->adj_end = 0; /* the adjoints were for the old values */
    double *v = s->val;
    const int32_t *a0 = s->a0, *a1 = s->a1;
    for (int64_t i = 0; i < s->n; i++) {
        double x = a0[i] >= 0 ? v[a0[i]] : 0, y;
        switch (s->op[i]) {
        case S_INPUT: case S_CONST: case S_TENSOR: continue;
        case S_ADD: v[i] = x + v[a1[i]]; continue;
        case S_SUB: v[i] = x - v[a1[i]]; continue;
        case S_MUL: v[i] = x * v[a1[i]]; continue;
        case S_MIN: case S_MAX: case S_LESS: case S_RELU: case S_ABS:
            y = a1[i] >= 0 ? v[a1[i]] : 0;
            if (branch(s->op[i], x, y) != s->flag[i]) {
                ag_fail(t, AG_ERR_RETAPE, "ag_tape_replay: op %lld takes another branch "
                        "at the new inputs; record the program again", (long long)i);
                return t->status;
            }
            v[i] = s->op[i] == S_LESS ? s->flag[i] : eval(s->op[i], x, y, s->flag[i]);
            continue;
        default:
            v[i] = eval(s->op[i], x, a1[i] >= 0 ? v[a1[i]] : 0, s->flag[i]);
        }
    }
    return AG_OK;
}
