/* ops_util.c — what sequence models need around the ops, each a
 * composition or no op at all: detach (a copy off the graph), split and
 * chunk (slices along an axis), masked_fill (where against a constant),
 * the no-grad scope, and sampling a class from logits.  No table row
 * here: the derivatives are those of slice and where. */
#include "autograd_internal.h"

#include <math.h>

ag_tensor *ag_detach(ag_tape *t, ag_tensor *a)
{
    if (!ag_check_inputs(t, "ag_detach", 1, &a))
        return NULL;
    ag_tensor *d = ag_tensor_tape(t, a->dtype, a->ndim, a->shape);
    if (d) /* a fresh tape tensor: requires_grad is false */
        memcpy(d->data, a->data, (size_t)a->numel * ag_dtype_size(a->dtype));
    return d;
}

/* ---- split and chunk: one recorded slice per piece ---- */

/* The pieces of the given sizes along (normalised) axis ax; every out[i]
 * NULL on failure. */
static ag_status split_run(ag_tape *t, ag_tensor *a, int n, const int64_t *sizes, int ax,
                           ag_tensor **out)
{
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        out[i] = ag_slice(t, a, ax, start, start + sizes[i], 1);
        start += sizes[i];
        if (!out[i]) {
            for (int j = 0; j < n; j++)
                out[j] = NULL;
            return t->status;
        }
    }
    return AG_OK;
}

ag_status ag_split(ag_tape *t, ag_tensor *a, int n, const int64_t *sizes, int axis,
                   ag_tensor **out)
{
    static const char *fn = "ag_split";
    if (!out) {
        ag_fail(t, AG_ERR_ARG, "%s: out is NULL", fn);
        return t ? t->status : AG_ERR_ARG;
    }
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    int ax = axis;
    if (!ag_check_inputs(t, fn, 1, &a) || !ag_check_axis(t, fn, a->ndim, &ax))
        return t ? t->status : AG_ERR_ARG;
    if (n < 1 || !sizes) {
        ag_fail(t, AG_ERR_ARG, "%s: %s", fn, n < 1 ? "n must be >= 1" : "sizes is NULL");
        return t->status;
    }
    int64_t total = 0, k = a->shape[ax];
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0 || sizes[i] > k - total) {
            char sb[128];
            ag_fail(t, AG_ERR_ARG, "%s: sizes[%d] = %lld %s (axis %d of %s has %lld)", fn, i,
                    (long long)sizes[i], sizes[i] < 0 ? "is negative" : "runs past the end",
                    axis, ag_shape_str(a, sb, sizeof sb), (long long)k);
            return t->status;
        }
        total += sizes[i];
    }
    if (total != k) {
        char sb[128];
        ag_fail(t, AG_ERR_ARG, "%s: sizes add up to %lld, but axis %d of %s has %lld", fn,
                (long long)total, axis, ag_shape_str(a, sb, sizeof sb), (long long)k);
        return t->status;
    }
    return split_run(t, a, n, sizes, ax, out);
}

int ag_chunk(ag_tape *t, ag_tensor *a, int chunks, int axis, ag_tensor **out)
{
    static const char *fn = "ag_chunk";
    int ax = axis;
    if (!out) {
        ag_fail(t, AG_ERR_ARG, "%s: out is NULL", fn);
        return -1;
    }
    if (!ag_check_inputs(t, fn, 1, &a) || !ag_check_axis(t, fn, a->ndim, &ax))
        return -1;
    if (chunks < 1) {
        ag_fail(t, AG_ERR_ARG, "%s: chunks = %d must be >= 1", fn, chunks);
        return -1;
    }
    /* PyTorch's rule: pieces of ceil(k / chunks), as many as that takes
     * (chunks empty ones for k = 0) */
    int64_t k = a->shape[ax], each = (k + chunks - 1) / chunks;
    int n = each ? (int)((k + each - 1) / each) : chunks;
    int64_t sizes[64], *sz = n <= 64 ? sizes : ag_arena_alloc(t, (size_t)n * sizeof *sz);
    if (!sz)
        return -1;
    for (int i = 0; i < n; i++)
        sz[i] = each * (i + 1) <= k ? each : k - each * i;
    return split_run(t, a, n, sz, ax, out) == AG_OK ? n : -1;
}

/* ---- masked_fill ---- */

ag_tensor *ag_masked_fill(ag_tape *t, ag_tensor *a, const ag_tensor *mask, double value)
{
    ag_tensor *in[2] = {a, (ag_tensor *)mask}; /* mask is only read */
    if (!ag_check_inputs(t, "ag_masked_fill", 2, in))
        return NULL;
    int nd;
    int64_t shape[AG_MAX_DIMS];
    if (!ag_broadcast_shape(t, "ag_masked_fill", a, mask, &nd, shape))
        return NULL;
    if (nd != a->ndim || memcmp(shape, a->shape, (size_t)nd * sizeof *shape) != 0) {
        char s1[128], s2[128];
        return ag_fail(t, AG_ERR_SHAPE, "ag_masked_fill: mask %s does not broadcast to a %s "
                       "(the result keeps a's shape)", ag_shape_str(mask, s1, sizeof s1),
                       ag_shape_str(a, s2, sizeof s2));
    }
    /* where(mask, value, a) with value a 0-d constant: anomaly mode counts
     * where as elementwise, so an infinite value is an infinite operand
     * aligned with every element it fills, passed through, not made */
    static const int64_t no_dims[1] = {0};
    ag_tensor *fill = ag_tensor_tape(t, a->dtype, 0, no_dims);
    if (!fill)
        return NULL;
    if (a->dtype == AG_F64)
        *(double *)fill->data = value;
    else
        *(float *)fill->data = (float)value;
    return ag_where(t, (ag_tensor *)mask, fill, a);
}

/* ---- the no-grad scope ---- */

bool ag_no_grad_begin(ag_tape *t)
{
    if (!t) {
        ag_set_last_error("ag_no_grad_begin: tape is NULL");
        return false;
    }
    bool was = t->grad_enabled;
    t->grad_enabled = false;
    return was;
}

void ag_no_grad_end(ag_tape *t, bool saved)
{
    if (!t) {
        ag_set_last_error("ag_no_grad_end: tape is NULL");
        return;
    }
    t->grad_enabled = saved;
}

/* ---- sampling from logits ---- */

static double logit_at(const ag_tensor *x, int64_t i)
{
    return x->dtype == AG_F64 ? ((const double *)x->data)[i]
                              : (double)((const float *)x->data)[i];
}

/* The row's largest logit and its first index; NaN when the row holds one. */
static double row_max(const ag_tensor *x, int64_t base, int64_t c, int64_t *at)
{
    double m = -INFINITY;
    *at = 0;
    for (int64_t j = 0; j < c; j++) {
        double v = logit_at(x, base + j);
        if (isnan(v))
            return v;
        if (v > m) {
            m = v;
            *at = j;
        }
    }
    return m;
}

/* One draw from softmax(row / temp): the first class whose cumulative
 * weight exp((x - m) / temp) passes u * total; the last class of positive
 * weight when rounding leaves u * total at the very end. */
static int64_t row_draw(const ag_tensor *x, int64_t base, int64_t c, double m, double temp,
                        double u)
{
    double total = 0;
    for (int64_t j = 0; j < c; j++)
        total += exp((logit_at(x, base + j) - m) / temp);
    double target = u * total, cum = 0;
    int64_t last = 0;
    for (int64_t j = 0; j < c; j++) {
        double w = exp((logit_at(x, base + j) - m) / temp);
        if (w > 0)
            last = j;
        cum += w;
        if (cum > target && w > 0)
            return j;
    }
    return last;
}

ag_status ag_sample_logits(const ag_tensor *logits, double temperature, ag_rng *rng,
                           int64_t *out)
{
    static const char *fn = "ag_sample_logits";
    const ag_tensor *x = logits;
    if (!x || !out) {
        ag_set_last_error("%s: %s is NULL", fn, x ? "out" : "logits");
        return AG_ERR_ARG;
    }
    if (x->dtype == AG_I64 || x->ndim == 0 || x->shape[x->ndim - 1] == 0) {
        char sb[128];
        ag_set_last_error("%s: logits %s%s need a class dim of at least 1 (f32 or f64)", fn,
                          ag_shape_str(x, sb, sizeof sb), x->dtype == AG_I64 ? " int64" : "");
        return AG_ERR_ARG;
    }
    if (!(temperature >= 0) || (temperature > 0 && !rng)) {
        ag_set_last_error("%s: %s", fn, temperature > 0 ? "rng is NULL"
                                                        : "temperature must be >= 0");
        return AG_ERR_ARG;
    }
    int64_t c = x->shape[x->ndim - 1], rows = x->numel / c, at;
    for (int64_t r = 0; r < rows; r++) /* all rows first: nothing written on failure */
        if (!isfinite(row_max(x, r * c, c, &at))) {
            ag_set_last_error("%s: row %lld of the logits holds a NaN or has no finite "
                              "largest logit", fn, (long long)r);
            return AG_ERR_NUMERIC;
        }
    for (int64_t r = 0; r < rows; r++) {
        double m = row_max(x, r * c, c, &at);
        out[r] = temperature == 0 ? at
                                  : row_draw(x, r * c, c, m, temperature, ag_rng_uniform(rng));
    }
    return AG_OK;
}
