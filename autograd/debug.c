/* debug.c — anomaly mode (call sites, NaN/Inf checks in forward and
 * backward) and the per-op profiler.  Both hook into ag_op_run and the
 * reverse sweep only when tape->debug is set. */
#include "autograd_internal.h"

#include <math.h>
#include <time.h>

#define PROF_MAX 128

typedef struct ag_profile {
    const ag_op_def *def[PROF_MAX];
    double fwd_ns[PROF_MAX], bwd_ns[PROF_MAX];
    int64_t calls[PROF_MAX], bytes[PROF_MAX];
    int n;
    /* all the time charged to rows, so that an entry whose backward runs
     * others (a checkpoint) is charged only with its own share */
    double charged_ns;
    /* tape bytes in use when the last op finished recording: the next op
     * is charged with what the tape gained since (what an op allocates
     * before its entry is made, a mask or saved probabilities, included) */
    size_t last_end;
} ag_profile;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void update_debug(ag_tape *t) { t->debug = t->anomaly || t->prof; }

void ag_tape_set_anomaly(ag_tape *tape, bool on)
{
    if (!tape)
        return;
    tape->anomaly = on;
    update_debug(tape);
}

int ag_tape_site(ag_tape *tape, const char *file, int line)
{
    if (tape) {
        tape->site = file;
        tape->line = line;
    }
    return 0;
}

void ag_tape_label(ag_tape *tape, const char *label) { ag_tape_site(tape, label, 0); }

void ag_tape_set_profile(ag_tape *tape, bool on)
{
    if (!tape)
        return;
    if (on && !tape->prof && !(tape->prof = ag_mem_calloc(sizeof *tape->prof))) {
        ag_set_last_error("ag_tape_set_profile: out of memory");
        return;
    }
    if (!on) {
        ag_mem_free(tape->prof);
        tape->prof = NULL;
    }
    if (tape->prof)
        tape->prof->last_end = ag_tape_bytes_used(tape);
    update_debug(tape);
}

void ag_tape_profile_reset(ag_tape *tape)
{
    if (tape && tape->prof) {
        memset(tape->prof, 0, sizeof *tape->prof);
        tape->prof->last_end = ag_tape_bytes_used(tape);
    }
}

struct ag_profile *ag_debug_profile_hold(ag_tape *tape)
{
    ag_profile *p = tape->prof;
    tape->prof = NULL;
    update_debug(tape);
    return p;
}

void ag_debug_profile_release(ag_tape *tape, struct ag_profile *p)
{
    tape->prof = p;
    if (p) /* what the re-run took was given back or is gradient: no op's */
        p->last_end = ag_tape_bytes_used(tape);
    update_debug(tape);
}

/* Saved as [n, bytes[0..n)] in the tape's scratch arena. */
int64_t *ag_debug_bytes_save(ag_tape *tape)
{
    ag_profile *p = tape->prof;
    if (!p)
        return NULL;
    int64_t *s = ag_arena_take(tape, &tape->scratch, (size_t)(p->n + 1) * sizeof *s, 8);
    if (!s)
        return NULL;
    s[0] = p->n;
    memcpy(s + 1, p->bytes, (size_t)p->n * sizeof *s);
    return s;
}

void ag_debug_bytes_restore(ag_tape *tape, const int64_t *saved)
{
    ag_profile *p = tape->prof;
    if (!p || !saved)
        return;
    memcpy(p->bytes, saved + 1, (size_t)saved[0] * sizeof *saved);
    for (int i = (int)saved[0]; i < p->n; i++) /* ops first seen inside */
        p->bytes[i] = 0;
    p->last_end = ag_tape_bytes_used(tape);
}

static int prof_slot(ag_profile *p, const ag_op_def *def)
{
    for (int i = 0; i < p->n; i++)
        if (p->def[i] == def)
            return i;
    if (p->n == PROF_MAX)
        return -1;
    p->def[p->n] = def;
    return p->n++;
}

/* The profiler's mark: the time, and the tape bytes the op's charge
 * starts from.  ag_op_run takes it before it allocates the op's output,
 * so the time covers the op's whole recording; the bytes start where the
 * op before it ended (or lower, where the tape gave memory back since: a
 * reset, a checkpoint), so the bytes an op is charged with
 * (ag_debug_forward) are all it put on the tape: what its function
 * allocated before recording (a mask, saved probabilities, scratch), the
 * output, the entry's input array and saved values, and what its forward
 * allocates. */
ag_debug_mark ag_debug_begin(const ag_tape *tape)
{
    size_t now = ag_tape_bytes_used(tape);
    if (!tape->prof)
        return (ag_debug_mark){0, now};
    size_t from = tape->prof->last_end < now ? tape->prof->last_end : now;
    return (ag_debug_mark){now_ns(), from};
}

/* ---- anomaly mode: which non-finite values are anomalies ----
 * The rule is the one documented at ag_tape_set_anomaly in autograd.h:
 * a NaN is always one; an Inf is one only when the op made it from finite
 * values.  "The values it came from" are, for the elementwise ops below,
 * the input elements aligned with it under broadcasting (and the op's
 * scalar constant); for every other op, conservatively, anything in any
 * input (an Inf anywhere in an input excuses an Inf anywhere in the
 * output).  Either sign counts: neg, sub, mul by a negative, matmul flip
 * signs while passing an Inf through. */

static double elem(const ag_tensor *x, int64_t i)
{
    return x->dtype == AG_F64 ? ((const double *)x->data)[i]
                              : (double)((const float *)x->data)[i];
}

static bool has_inf(const ag_tensor *x)
{
    for (int64_t i = 0; x && i < x->numel; i++)
        if (isinf(elem(x, i)))
            return true;
    return false;
}

/* The ops whose output element i is computed from the input elements
 * aligned with i under broadcasting, and nothing else of theirs. */
static bool is_elementwise(const ag_op_def *d)
{
    static const ag_op_def *const ops[] = {
        &ag_op_add, &ag_op_sub, &ag_op_mul, &ag_op_div, &ag_op_pow, &ag_op_maximum,
        &ag_op_minimum, &ag_op_where, &ag_op_neg, &ag_op_exp, &ag_op_log, &ag_op_sqrt,
        &ag_op_abs, &ag_op_sin, &ag_op_cos, &ag_op_tanh, &ag_op_sigmoid, &ag_op_relu,
        &ag_op_leaky_relu, &ag_op_erf, &ag_op_gelu, &ag_op_gelu_tanh, &ag_op_softplus,
        &ag_op_add_scalar, &ag_op_mul_scalar, &ag_op_pow_scalar, &ag_op_clamp,
        &ag_op_dropout,
    };
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        if (ops[k] == d)
            return true;
    return false;
}

/* An infinite scalar constant of the op (x + c, x * c, x ^ c): an operand
 * every output element is computed from. */
static bool const_is_inf(const ag_entry *e)
{
    if (e->op != &ag_op_add_scalar && e->op != &ag_op_mul_scalar &&
        e->op != &ag_op_pow_scalar)
        return false;
    double c;
    memcpy(&c, e->attr.bytes, sizeof c); /* their attribute struct is one double */
    return isinf(c);
}

/* Whether x broadcasts to out's shape (so ag_broadcast_strides applies). */
static bool broadcasts_to(const ag_tensor *x, const ag_tensor *out)
{
    if (x->ndim > out->ndim)
        return false;
    for (int d = 0; d < x->ndim; d++) {
        int64_t xd = x->shape[d], od = out->shape[out->ndim - x->ndim + d];
        if (xd != od && xd != 1)
            return false;
    }
    return true;
}

/* What an Inf of entry e may have come from, for the checks of its output
 * (forward) and of its inputs' gradients (backward). */
typedef struct {
    const ag_entry *e;
    bool aligned;                            /* elementwise: per-element check */
    bool any_inf;                            /* excused everywhere */
    int64_t stride[4][AG_MAX_DIMS];          /* aligned: each input in out's shape */
    bool any_known;                          /* not aligned: any_inf computed */
} inf_source;

static void source_init(inf_source *src, const ag_entry *e)
{
    memset(src, 0, sizeof *src);
    src->e = e;
    src->any_inf = const_is_inf(e);
    src->aligned = is_elementwise(e->op) && e->n_in <= 4;
    for (int k = 0; src->aligned && k < e->n_in; k++)
        src->aligned = broadcasts_to(e->in[k], e->out);
    for (int k = 0; src->aligned && k < e->n_in; k++)
        ag_broadcast_strides(e->in[k], e->out->ndim, e->out->shape, src->stride[k]);
}

/* Whether some value that output element i is computed from is infinite:
 * an input's, or those of extra and extra2 (backward: the output and its
 * gradient, of the output's shape; NULL in forward). */
static bool fed_by_inf(inf_source *src, int64_t i, const ag_tensor *extra,
                       const ag_tensor *extra2)
{
    const ag_entry *e = src->e;
    if (src->any_inf)
        return true;
    if (!src->aligned) {
        if (!src->any_known) {
            src->any_known = true;
            for (int k = 0; k < e->n_in && !src->any_inf; k++)
                src->any_inf = has_inf(e->in[k]);
            src->any_inf = src->any_inf || has_inf(extra) || has_inf(extra2);
        }
        return src->any_inf;
    }
    if ((extra && isinf(elem(extra, i))) || (extra2 && isinf(elem(extra2, i))))
        return true;
    int64_t off[4] = {0}, rest = i;
    for (int d = e->out->ndim - 1; d >= 0; d--) {
        int64_t n = e->out->shape[d], at = n ? rest % n : 0;
        rest = n ? rest / n : 0;
        for (int k = 0; k < e->n_in; k++)
            off[k] += at * src->stride[k][d];
    }
    for (int k = 0; k < e->n_in; k++)
        if (isinf(elem(e->in[k], off[k])))
            return true;
    return false;
}

/* The first anomaly among x's values (of the output's shape when src is
 * aligned), or -1: a NaN, or an Inf that fed_by_inf does not excuse (every
 * Inf is excused when inf_was_there).  Finite data costs one quick pass. */
static int64_t first_anomaly(const ag_tensor *x, inf_source *src, const ag_tensor *extra,
                             const ag_tensor *extra2, bool inf_was_there)
{
    int64_t i = 0;
    if (x->dtype == AG_F64) {
        const double *v = x->data;
        while (i < x->numel && isfinite(v[i]))
            i++;
    } else {
        const float *v = x->data;
        while (i < x->numel && isfinite(v[i]))
            i++;
    }
    for (; i < x->numel; i++) {
        double v = elem(x, i);
        if (isnan(v))
            return i;
        if (isinf(v) && !inf_was_there && !fed_by_inf(src, i, extra, extra2))
            return i;
    }
    return -1;
}

static void range_of(const ag_tensor *x, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int64_t i = 0; i < x->numel; i++) {
        double v = ag_get(x, i);
        *lo = fmin(*lo, v);
        *hi = fmax(*hi, v);
    }
}

/* "input #1 [2,3] in [-1, 4]; input #2 ..." */
static void describe_inputs(const ag_entry *e, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < e->n_in && used < n; k++) {
        char shape[96];
        double lo, hi;
        range_of(e->in[k], &lo, &hi);
        used += (size_t)snprintf(buf + used, n - used, "%sinput #%d %s in [%g, %g]",
                                 k ? "; " : "", k + 1, ag_shape_str(e->in[k], shape, sizeof shape),
                                 lo, hi);
    }
}

static void report(ag_tape *tape, const ag_entry *e, const char *pass, const char *what,
                   int64_t at, double v)
{
    char inputs[320];
    describe_inputs(e, inputs, sizeof inputs);
    ag_fail(tape, AG_ERR_NUMERIC, "anomaly: ag_%s at %s:%d: %s produced %s (element %lld "
            "of %s); %s", e->op->name, e->site ? e->site : "(unknown site)", e->line, pass,
            isnan(v) ? "NaN" : "Inf from finite values", (long long)at, what, inputs);
}

void ag_debug_forward(ag_tape *tape, ag_entry *e, ag_debug_mark m)
{
    if (tape->prof) {
        int s = prof_slot(tape->prof, e->op);
        size_t end = ag_tape_bytes_used(tape);
        if (s >= 0) {
            double dt = now_ns() - m.t0;
            tape->prof->fwd_ns[s] += dt;
            tape->prof->charged_ns += dt;
            tape->prof->calls[s]++;
            tape->prof->bytes[s] += end > m.bytes0 ? (int64_t)(end - m.bytes0) : 0;
        }
        tape->prof->last_end = end;
    }
    if (!tape->anomaly || ag_is_checkpoint_op(e->op))
        return;
    e->site = tape->site;
    e->line = tape->line;
    if (e->out->dtype == AG_I64) /* indices are never NaN or Inf */
        return;
    inf_source src;
    source_init(&src, e);
    int64_t at = first_anomaly(e->out, &src, NULL, NULL, false);
    if (at >= 0)
        report(tape, e, "forward", "the output", at, ag_get(e->out, at));
}

void ag_debug_backward(ag_tape *tape, ag_entry *live)
{
    /* read from a copy after the backward: a checkpoint's records its
     * segment again, which may move the entry array */
    ag_entry copy = *live, *e = &copy;
    bool check = tape->anomaly && !ag_is_checkpoint_op(e->op);
    /* an Inf already accumulated into an input's gradient (by an entry
     * checked before, or by an earlier backward into a persistent
     * gradient) is not this entry's doing; without memory for the flags,
     * every input counts as having had one (no false anomaly) */
    bool stack[64], *had = NULL;
    if (check) {
        had = e->n_in <= 64 ? stack : ag_mem_alloc((size_t)e->n_in * sizeof *had);
        for (int k = 0; had && k < e->n_in; k++)
            had[k] = has_inf(ag_grad_peek(tape, e->in[k]));
    }
    ag_profile *p = tape->prof;
    double t0 = p ? now_ns() : 0, inner0 = p ? p->charged_ns : 0;
    e->op->backward(tape, live);
    if (p) {
        /* less what the entries it ran itself were charged with */
        double dt = now_ns() - t0 - (p->charged_ns - inner0);
        int s = prof_slot(p, e->op);
        if (s >= 0)
            p->bwd_ns[s] += dt;
        p->charged_ns += dt;
        p->last_end = ag_tape_bytes_used(tape); /* gradients: no op's forward bytes */
    }
    for (int k = 0; check && tape->status == AG_OK && k < e->n_in; k++) {
        const ag_tensor *x = e->in[k], *g = ag_grad_peek(tape, x);
        if (!g)
            continue;
        /* gradient element i of an input of the output's shape comes from
         * output element i (elementwise ops); otherwise from anything of
         * the entry: its inputs, its output and the output's gradient */
        inf_source src;
        source_init(&src, e);
        if (src.aligned && !ag_same_shape(x, e->out))
            src.aligned = false;
        int64_t at = first_anomaly(g, &src, e->out, e->out->grad, !had || had[k]);
        if (at >= 0) {
            char what[64];
            snprintf(what, sizeof what, "the gradient of input #%d", k + 1);
            report(tape, e, "backward", what, at, ag_get(g, at));
            break;
        }
    }
    if (had != stack)
        ag_mem_free(had);
}

void ag_tape_profile_totals(const ag_tape *tape, double *forward_ns, double *backward_ns)
{
    double f = 0, b = 0;
    for (int i = 0; tape && tape->prof && i < tape->prof->n; i++) {
        f += tape->prof->fwd_ns[i];
        b += tape->prof->bwd_ns[i];
    }
    if (forward_ns)
        *forward_ns = f;
    if (backward_ns)
        *backward_ns = b;
}

ag_status ag_tape_profile(const ag_tape *tape, FILE *out)
{
    if (!tape || !out || !tape->prof) {
        ag_set_last_error("ag_tape_profile: %s", !tape || !out ? "tape or FILE is NULL"
                                                               : "profiling is off");
        return AG_ERR_ARG;
    }
    const ag_profile *p = tape->prof;
    int order[PROF_MAX];
    for (int i = 0; i < p->n; i++)
        order[i] = i;
    for (int i = 1; i < p->n; i++) /* insertion sort by total time, descending */
        for (int j = i; j > 0 && p->fwd_ns[order[j]] + p->bwd_ns[order[j]] >
                                     p->fwd_ns[order[j - 1]] + p->bwd_ns[order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    fprintf(out, "%-18s %10s %12s %12s %12s %8s\n", "op", "calls", "forward ms", "backward ms",
            "tape bytes", "bwd/fwd");
    for (int k = 0; k < p->n; k++) {
        int i = order[k];
        fprintf(out, "%-18s %10lld %12.3f %12.3f %12lld %8.2f\n", p->def[i]->name,
                (long long)p->calls[i], p->fwd_ns[i] / 1e6, p->bwd_ns[i] / 1e6,
                (long long)p->bytes[i], p->fwd_ns[i] > 0 ? p->bwd_ns[i] / p->fwd_ns[i] : 0.0);
    }
    double f, b;
    ag_tape_profile_totals(tape, &f, &b);
    fprintf(out, "total: forward %.3f ms, backward %.3f ms, backward/forward %.2f "
            "(cheap-gradient bound: about 3) %s\n", f / 1e6, b / 1e6, f > 0 ? b / f : 0.0,
            f > 0 && b / f <= 3.0 ? "within" : "ABOVE");
    return ferror(out) ? AG_ERR_IO : AG_OK;
}
