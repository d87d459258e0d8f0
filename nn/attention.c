/* attention.c — nn_multihead_attention: torch.nn.MultiheadAttention as a
 * composition (in-projection GEMM, heads split by one permute, the fused
 * ag_attention, heads merged, out-projection).
 * Dimension legend: N = batch, L = query length, S = key length, E =
 * embed dim, nh = heads, hd = E / nh, c = projections made by one GEMM
 * (3 for self-attention: q, k, v; 1 otherwise).  A and B are the two
 * leading dims as given: (N, L) with batch_first, (L, N) without. */
#include "nn_internal.h"

#include <math.h>

nn_multihead_attention *nn_multihead_attention_new(nn_params *p, const char *name,
                                                   int64_t embed_dim, int64_t num_heads,
                                                   bool batch_first, ag_rng *rng)
{
    const char *fn = "nn_multihead_attention_new";
    bool sizes_ok = embed_dim >= 1 && num_heads >= 1 && embed_dim <= ((int64_t)1 << 30);
    if (!p || !name || !sizes_ok || embed_dim % num_heads) {
        ag_set_last_error("%s: %s", fn, !p || !name ? "params or name is NULL"
                                        : !sizes_ok ? "embed_dim must be in [1, 2^30] and "
                                                      "num_heads >= 1"
                                                    : "embed_dim must be divisible by num_heads");
        return NULL;
    }
    nn_multihead_attention *m = ag_mem_calloc(sizeof *m);
    if (!m) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    int n0 = nn_params_count(p);
    int64_t e3 = 3 * embed_dim;
    char sub[NN_NAME_MAX];
    m->in_proj_weight = nn_new_param(p, fn, name, "in_proj_weight", 2,
                                     (const int64_t[]){e3, embed_dim}, false);
    m->in_proj_bias = m->in_proj_weight ? nn_new_param(p, fn, name, "in_proj_bias", 1, &e3,
                                                       false) : NULL;
    if (m->in_proj_bias && nn_join_name(sub, fn, name, "out_proj"))
        m->out_proj = nn_linear_new(p, sub, embed_dim, embed_dim, true, rng);
    if (!m->out_proj) {
        nn_params_truncate(p, n0);
        ag_mem_free(m);
        return NULL;
    }
    m->embed_dim = embed_dim;
    m->num_heads = num_heads;
    m->batch_first = batch_first;
    /* torch's _reset_parameters: xavier_uniform in_proj_weight, zero
     * biases; out_proj.weight keeps its Linear init */
    if (rng)
        nn_init_xavier_uniform(m->in_proj_weight, 1.0, rng);
    nn_init_zeros(m->out_proj->bias);
    return m;
}

void nn_multihead_attention_free(nn_multihead_attention *m)
{
    if (m)
        nn_linear_free(m->out_proj);
    ag_mem_free(m);
}

/* x [A, B, c*E] -> [c, N, nh, len, hd]: the heads of c projections. */
static ag_tensor *heads_split(ag_tape *t, const nn_multihead_attention *m, ag_tensor *x,
                              int64_t c)
{
    const int64_t *s = ag_shape(x), nh = m->num_heads;
    ag_tensor *r = ag_reshape(t, x, 5, (const int64_t[]){s[0], s[1], c, nh, m->embed_dim / nh});
    return ag_permute(t, r, m->batch_first ? (const int[]){2, 0, 3, 1, 4}
                                           : (const int[]){2, 1, 3, 0, 4});
}

/* o [1, N, nh, L, hd] -> [A, B, E]. */
static ag_tensor *heads_merge(ag_tape *t, const nn_multihead_attention *m, ag_tensor *o,
                              int64_t a, int64_t b)
{
    ag_tensor *r = ag_permute(t, o, m->batch_first ? (const int[]){0, 1, 3, 2, 4}
                                                   : (const int[]){0, 3, 1, 2, 4});
    return ag_reshape(t, r, 3, (const int64_t[]){a, b, m->embed_dim});
}

/* Projection j (0 q, 1 k, 2 v) of x alone: x W_j^T + b_j with W_j, b_j
 * rows j*E..(j+1)*E of the in-projection. */
static ag_tensor *project(ag_tape *t, const nn_multihead_attention *m, ag_tensor *x, int j)
{
    int64_t e = m->embed_dim;
    return ag_linear(t, x, ag_slice(t, m->in_proj_weight, 0, j * e, (j + 1) * e, 1),
                     ag_slice(t, m->in_proj_bias, 0, j * e, (j + 1) * e, 1));
}

/* query [A, B, E], key and value [A', B', E] with the same batch, key and
 * value of one length, and the layer's dtype. */
static bool shapes_ok(ag_tape *t, const nn_multihead_attention *m, const ag_tensor *q,
                      const ag_tensor *k, const ag_tensor *v)
{
    const char *fn = "nn_multihead_attention_forward";
    const ag_tensor *x[3] = {q, k, v};
    static const char *const names[3] = {"query", "key", "value"};
    int bd = m->batch_first ? 0 : 1, ld = 1 - bd;
    for (int i = 0; i < 3; i++) {
        const int64_t *s = ag_shape(x[i]);
        bool ok = ag_ndim(x[i]) == 3 && s[2] == m->embed_dim && s[bd] == ag_shape(q)[bd] &&
                  (i < 2 || s[ld] == ag_shape(k)[ld]);
        if (!ok) {
            char b[3][64];
            ag_tape_fail(t, AG_ERR_SHAPE, "%s: %s does not fit: query %s, key %s, value %s "
                         "with embed_dim %lld (%s; key and value of one length)", fn,
                         names[i], ag_shape_str(q, b[0], 64), ag_shape_str(k, b[1], 64),
                         ag_shape_str(v, b[2], 64), (long long)m->embed_dim,
                         m->batch_first ? "[N, L, E]" : "[L, N, E]");
            return false;
        }
        if (!nn_check_dtype(t, fn, x[i], ag_dtype_of(m->in_proj_weight)))
            return false;
    }
    return true;
}

ag_tensor *nn_multihead_attention_forward(ag_tape *t, nn_multihead_attention *m,
                                          ag_tensor *query, ag_tensor *key, ag_tensor *value,
                                          const ag_tensor *attn_mask, bool causal)
{
    const char *fn = "nn_multihead_attention_forward";
    if (!m)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: layer is NULL", fn);
    if (!nn_check_input(t, fn, query) || !nn_check_input(t, fn, key) ||
        !nn_check_input(t, fn, value) || !shapes_ok(t, m, query, key, value))
        return NULL;
    const int64_t *s = ag_shape(query);
    if (query == key && key == value && m->batch_first &&
        (!attn_mask || ag_ndim(attn_mask) <= 4)) {
        /* self-attention, [N, L, E]: the heads read in place from one GEMM */
        ag_tensor *qkv = ag_linear(t, query, m->in_proj_weight, m->in_proj_bias);
        ag_tensor *o = ag_attention_qkv(t, qkv, m->num_heads, attn_mask, causal, 0.0);
        return nn_linear_forward(t, m->out_proj, o);
    }
    ag_tensor *q, *k, *v;
    if (query == key && key == value) {   /* self-attention: one GEMM, one permute */
        ag_tensor *qkv[3];
        ag_tensor *h = heads_split(t, m, ag_linear(t, query, m->in_proj_weight,
                                                   m->in_proj_bias), 3);
        if (ag_split(t, h, 3, (const int64_t[]){1, 1, 1}, 0, qkv) != AG_OK)
            return NULL;
        q = qkv[0], k = qkv[1], v = qkv[2];                          /* (1, N, nh, len, hd) */
    } else {
        q = heads_split(t, m, project(t, m, query, 0), 1);
        k = heads_split(t, m, project(t, m, key, 1), 1);
        v = heads_split(t, m, project(t, m, value, 2), 1);
    }
    ag_tensor *o = ag_attention(t, q, k, v, attn_mask, causal, 0.0);   /* (1, N, nh, L, hd) */
    return nn_linear_forward(t, m->out_proj, heads_merge(t, m, o, s[0], s[1]));
}
