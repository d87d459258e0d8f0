/* linear.c — linear layers, the MLP helper and embeddings.
 * Dimension legend: N = rows of x (any leading dims), I = in, O = out. */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>

/* ---- linear ---- */

/* torch.nn.Linear.reset_parameters: kaiming_uniform(a = sqrt(5)) gives
 * U(-1/sqrt(in), 1/sqrt(in)) for the weight; the bias uses the same bound. */
static void linear_init(nn_linear *l, ag_rng *rng)
{
    if (ag_numel(l->weight) > 0)
        nn_init_kaiming_uniform(l->weight, sqrt(5.0), NN_FAN_IN, "leaky_relu", rng);
    if (l->bias) {
        double bound = l->in > 0 ? 1.0 / sqrt((double)l->in) : 0.0;
        nn_init_uniform(l->bias, -bound, bound, rng);
    }
}

nn_linear *nn_linear_new(nn_params *p, const char *name, int64_t in, int64_t out, bool bias,
                         ag_rng *rng)
{
    const char *fn = "nn_linear_new";
    if (!p || !name || in < 0 || out < 0) {
        ag_set_last_error("%s: %s", fn, !p      ? "params is NULL"
                                        : !name ? "name is NULL"
                                                : "in and out must be >= 0");
        return NULL;
    }
    nn_linear *l = ag_mem_calloc(sizeof *l);
    if (!l) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    int n0 = nn_params_count(p);
    l->in = in;
    l->out = out;
    l->weight = nn_new_param(p, fn, name, "weight", 2, (const int64_t[]){out, in}, false);
    if (l->weight && bias)
        l->bias = nn_new_param(p, fn, name, "bias", 1, &out, false);
    if (!l->weight || (bias && !l->bias)) {
        nn_params_truncate(p, n0);
        ag_mem_free(l);
        return NULL;
    }
    if (rng)
        linear_init(l, rng);
    return l;
}

ag_tensor *nn_linear_forward(ag_tape *t, nn_linear *l, ag_tensor *x)
{
    const char *fn = "nn_linear_forward";
    if (!l)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: layer is NULL", fn);
    if (!nn_check_input(t, fn, x))
        return NULL;
    int nd = ag_ndim(x);
    if (nd < 1 || ag_shape(x)[nd - 1] != l->in) {
        char b[96];
        return ag_tape_fail(t, AG_ERR_SHAPE, "%s: x is %s, the layer expects [..., %lld]", fn,
                       ag_shape_str(x, b, sizeof b), (long long)l->in);
    }
    if (!nn_check_dtype(t, fn, x, ag_dtype_of(l->weight)))
        return NULL;
    return ag_linear(t, x, l->weight, l->bias);   /* (N, O): W read transposed */
}

void nn_linear_free(nn_linear *l) { ag_mem_free(l); }

/* ---- MLP ---- */

nn_mlp *nn_mlp_new(nn_params *p, const char *name, int n_widths, const int64_t *widths,
                   bool bias, nn_activation act, ag_rng *rng)
{
    const char *fn = "nn_mlp_new";
    if (!p || !name || !widths || n_widths < 2 || act < NN_ACT_NONE || act > NN_ACT_SOFTPLUS) {
        ag_set_last_error("%s: %s", fn, !p || !name || !widths
                                            ? "params, name or widths is NULL"
                                        : n_widths < 2 ? "needs at least 2 widths"
                                                       : "unknown activation");
        return NULL;
    }
    nn_mlp *m = ag_mem_calloc(sizeof *m);
    nn_linear **layers = m ? ag_mem_calloc((size_t)(n_widths - 1) * sizeof *layers) : NULL;
    if (!layers) {
        ag_mem_free(m);
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    m->layers = layers;
    m->act = act;
    int n0 = nn_params_count(p);
    for (int i = 0; i < n_widths - 1; i++) {
        char idx[16], sub[NN_NAME_MAX];
        snprintf(idx, sizeof idx, "%d", 2 * i);   /* torch.nn.Sequential's index */
        if (!nn_join_name(sub, fn, name, idx) ||
            !(m->layers[i] = nn_linear_new(p, sub, widths[i], widths[i + 1], bias, rng))) {
            m->n_layers = i;
            nn_mlp_free(m);
            nn_params_truncate(p, n0);
            return NULL;
        }
    }
    m->n_layers = n_widths - 1;
    return m;
}

/* Layers [lo, hi), each followed by the activation but the last one. */
static ag_tensor *mlp_layers(ag_tape *t, const nn_mlp *m, int lo, int hi, ag_tensor *x)
{
    for (int i = lo; i < hi; i++) {
        x = nn_linear_forward(t, m->layers[i], x);
        if (i + 1 < m->n_layers)
            x = nn_activate(t, m->act, x);
    }
    return x;
}

/* One checkpoint's ctx: it must live until backward, so the mlp owns it. */
struct nn_mlp_segment {
    const nn_mlp *m;
    int lo, hi;
};

static ag_status mlp_segment(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                             ag_tensor **out, void *ctx)
{
    (void)n_in;
    (void)n_out;
    const struct nn_mlp_segment *s = ctx;
    out[0] = mlp_layers(t, s->m, s->lo, s->hi, in[0]);
    return ag_tape_status(t);
}

ag_tensor *nn_mlp_forward(ag_tape *t, nn_mlp *m, ag_tensor *x)
{
    if (!m)
        return ag_tape_fail(t, AG_ERR_ARG, "nn_mlp_forward: mlp is NULL");
    if (!m->checkpoint)
        return mlp_layers(t, m, 0, m->n_layers, x);
    for (int64_t s = 0; s * m->checkpoint < m->n_layers; s++)
        if (ag_checkpoint(t, mlp_segment, &m->segments[s], 1, &x, 1, &x) != AG_OK)
            return NULL;
    return x;
}

ag_status nn_mlp_set_checkpoint(nn_mlp *m, int every)
{
    if (!m || every < 0) {
        ag_set_last_error("nn_mlp_set_checkpoint: %s", !m ? "mlp is NULL" : "every is negative");
        return AG_ERR_ARG;
    }
    int n = every ? (m->n_layers - 1) / every + 1 : 0; /* n_layers >= 1 */
    struct nn_mlp_segment *s = n ? ag_mem_alloc((size_t)n * sizeof *s) : NULL;
    if (n && !s) {
        ag_set_last_error("nn_mlp_set_checkpoint: out of memory");
        return AG_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        int lo = i * every; /* < n_layers: no overflow */
        s[i] = (struct nn_mlp_segment){m, lo, m->n_layers - lo > every ? lo + every
                                                                       : m->n_layers};
    }
    ag_mem_free(m->segments);
    m->segments = s;
    m->checkpoint = every;
    return AG_OK;
}

void nn_mlp_free(nn_mlp *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_layers; i++)
        nn_linear_free(m->layers[i]);
    ag_mem_free(m->layers);
    ag_mem_free(m->segments);
    ag_mem_free(m);
}

/* ---- embedding ---- */

nn_embedding *nn_embedding_new(nn_params *p, const char *name, int64_t num, int64_t dim,
                               ag_rng *rng)
{
    const char *fn = "nn_embedding_new";
    if (!p || !name || num < 0 || dim < 0) {
        ag_set_last_error("%s: %s", fn, !p || !name ? "params or name is NULL"
                                                    : "num and dim must be >= 0");
        return NULL;
    }
    nn_embedding *e = ag_mem_calloc(sizeof *e);
    if (!e) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    e->num = num;
    e->dim = dim;
    e->weight = nn_new_param(p, fn, name, "weight", 2, (const int64_t[]){num, dim}, false);
    if (!e->weight) {
        ag_mem_free(e);
        return NULL;
    }
    if (rng)
        nn_init_normal(e->weight, 0.0, 1.0, rng);   /* torch.nn.Embedding: N(0, 1) */
    return e;
}

ag_tensor *nn_embedding_forward(ag_tape *t, nn_embedding *e, const int64_t *idx, int64_t n)
{
    if (!e)
        return ag_tape_fail(t, AG_ERR_ARG, "nn_embedding_forward: layer is NULL");
    if (n < 0 || (n > 0 && !idx))
        return ag_tape_fail(t, AG_ERR_ARG, "nn_embedding_forward: bad index list (n = %lld)",
                       (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= e->num)
            return ag_tape_fail(t, AG_ERR_ARG,
                           "nn_embedding_forward: idx[%lld] = %lld is outside [0, %lld)",
                           (long long)i, (long long)idx[i], (long long)e->num);
    return ag_index_select(t, e->weight, 0, idx, n);   /* (n, dim) */
}

void nn_embedding_free(nn_embedding *e) { ag_mem_free(e); }
