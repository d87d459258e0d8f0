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
    update_debug(tape);
}

void ag_tape_profile_reset(ag_tape *tape)
{
    if (tape && tape->prof)
        memset(tape->prof, 0, sizeof *tape->prof);
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

ag_debug_mark ag_debug_begin(const ag_tape *tape)
{
    return (ag_debug_mark){tape->prof ? now_ns() : 0, ag_tape_bytes_used(tape)};
}

/* First non-finite element of n values, or -1. */
static int64_t first_bad(const void *data, ag_dtype dt, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double v = dt == AG_F64 ? ((const double *)data)[i] : ((const float *)data)[i];
        if (!isfinite(v))
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
            isnan(v) ? "NaN" : "Inf", (long long)at, what, inputs);
}

void ag_debug_forward(ag_tape *tape, ag_entry *e, ag_debug_mark m)
{
    if (tape->prof) {
        int s = prof_slot(tape->prof, e->op);
        if (s >= 0) {
            tape->prof->fwd_ns[s] += now_ns() - m.t0;
            tape->prof->calls[s]++;
            tape->prof->bytes[s] += (int64_t)(ag_tape_bytes_used(tape) - m.bytes0);
        }
    }
    if (!tape->anomaly)
        return;
    e->site = tape->site;
    e->line = tape->line;
    int64_t at = first_bad(e->out->data, e->out->dtype, e->out->numel);
    if (at >= 0)
        report(tape, e, "forward", "the output", at, ag_get(e->out, at));
}

void ag_debug_backward(ag_tape *tape, ag_entry *e)
{
    double t0 = tape->prof ? now_ns() : 0;
    e->op->backward(tape, e);
    if (tape->prof) {
        int s = prof_slot(tape->prof, e->op);
        if (s >= 0)
            tape->prof->bwd_ns[s] += now_ns() - t0;
    }
    if (!tape->anomaly || tape->status != AG_OK)
        return;
    for (int k = 0; k < e->n_in; k++) {
        const ag_tensor *x = e->in[k];
        const ag_tensor *g = !ag_needs_grad(tape, x) ? NULL
                             : x->persistent && tape->sweep_id
                                 ? (x->sgrad_id == tape->sweep_id ? x->sgrad : NULL)
                                 : x->grad;
        int64_t at = g ? first_bad(g->data, g->dtype, g->numel) : -1;
        if (at >= 0) {
            char what[64];
            snprintf(what, sizeof what, "the gradient of input #%d", k + 1);
            report(tape, e, "backward", what, at, ag_get(g, at));
            return;
        }
    }
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
