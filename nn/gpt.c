/* gpt.c — a decoder-only transformer: pre-LN blocks (causal multi-head
 * self-attention and a GELU MLP, each in a residual branch) over token and
 * position embeddings, a final layer norm and a linear head.
 * Dimension legend: n = sequences, T = positions, d = width, V = vocab. */
#include "nn_internal.h"

#include <math.h>

#define LN_EPS 1e-5
#define INIT_STD 0.02
/* Sizes beyond this are refused before 4 d * d could overflow. */
#define MAX_WIDTH ((int64_t)1 << 30)

/* The layer norms (over d) as the fused ag_layer_norm, which took the
 * charlm GPT step from 70.1 to 61.6 ms of CPU on one thread (measured back
 * to back against nn_layer_norm_forward, a composition of nine ops with
 * broadcast reductions in backward). */
static ag_tensor *norm(ag_tape *t, const nn_layer_norm *l, ag_tensor *x)
{
    return ag_layer_norm(t, x, l->weight, l->bias, l->eps);
}

/* ---- block ---- */

nn_gpt_block *nn_gpt_block_new(nn_params *p, const char *name, int64_t dim, int64_t heads,
                               ag_rng *rng)
{
    const char *fn = "nn_gpt_block_new";
    if (!p || !name || dim < 1 || dim > MAX_WIDTH || heads < 1 || dim % heads) {
        ag_set_last_error("%s: %s", fn, !p || !name ? "params or name is NULL"
                                        : "dim must be in [1, 2^30], heads >= 1 dividing it");
        return NULL;
    }
    nn_gpt_block *b = ag_mem_calloc(sizeof *b);
    if (!b) {
        ag_set_last_error("%s: out of memory", fn);
        return NULL;
    }
    int n0 = nn_params_count(p);
    char s[5][NN_NAME_MAX];
    static const char *const part[5] = {"ln1", "attn", "ln2", "fc", "proj"};
    bool ok = true;
    for (int i = 0; i < 5 && ok; i++)
        ok = nn_join_name(s[i], fn, name, part[i]);
    ok = ok && (b->ln1 = nn_layer_norm_new(p, s[0], 1, &dim, LN_EPS, true)) &&
         (b->attn = nn_multihead_attention_new(p, s[1], dim, heads, true, rng)) &&
         (b->ln2 = nn_layer_norm_new(p, s[2], 1, &dim, LN_EPS, true)) &&
         (b->fc = nn_linear_new(p, s[3], dim, 4 * dim, true, rng)) &&
         (b->proj = nn_linear_new(p, s[4], 4 * dim, dim, true, rng));
    if (!ok) {
        nn_gpt_block_free(b);
        nn_params_truncate(p, n0);
        return NULL;
    }
    return b;
}

void nn_gpt_block_free(nn_gpt_block *b)
{
    if (!b)
        return;
    nn_layer_norm_free(b->ln1);
    nn_multihead_attention_free(b->attn);
    nn_layer_norm_free(b->ln2);
    nn_linear_free(b->fc);
    nn_linear_free(b->proj);
    ag_mem_free(b);
}

/* The block; keep: the NN_GPT_KEEP_* outputs a checkpoint around it
 * keeps (ag_checkpoint_save) instead of computing them again. */
static ag_tensor *block_run(ag_tape *t, nn_gpt_block *b, ag_tensor *x, unsigned keep)
{
    if (!b || !b->ln1 || !b->attn || !b->ln2 || !b->fc || !b->proj)
        return ag_tape_fail(t, AG_ERR_ARG, "nn_gpt_block_forward: block is %s",
                            b ? "not one nn_gpt_block_new made (a layer is NULL)" : "NULL");
    if (!nn_check_input(t, "nn_gpt_block_forward", x))
        return NULL;
    ag_tensor *h = norm(t, b->ln1, x);                                     /* (n, T, d) */
    x = ag_add(t, x, nn_multihead_attention_forward(t, b->attn, h, h, h, NULL, true));
    h = nn_linear_forward(t, b->fc, norm(t, b->ln2, x));                   /* (n, T, 4d) */
    if (h && keep & NN_GPT_KEEP_FC && ag_checkpoint_save(t, h) != AG_OK)
        return NULL;
    ag_tensor *p = nn_linear_forward(t, b->proj, ag_gelu(t, h));          /* (n, T, d) */
    if (p && keep & NN_GPT_KEEP_PROJ && ag_checkpoint_save(t, p) != AG_OK)
        return NULL;
    return ag_add(t, x, p);
}

ag_tensor *nn_gpt_block_forward(ag_tape *t, nn_gpt_block *b, ag_tensor *x)
{
    return block_run(t, b, x, 0);
}

/* ---- model ---- */

static bool config_ok(const nn_gpt_config *c)
{
    const char *bad = !c ? "cfg is NULL"
                      : c->vocab < 1 || c->vocab > MAX_WIDTH ? "cfg->vocab must be in [1, 2^30]"
                      : c->block < 1 || c->block > MAX_WIDTH ? "cfg->block must be in [1, 2^30]"
                      : c->layers < 1 || c->layers > 1024 ? "cfg->layers must be in [1, 1024]"
                      : c->heads < 1 ? "cfg->heads must be >= 1"
                      : c->dim < 1 || c->dim > MAX_WIDTH || c->dim % c->heads
                          ? "cfg->dim must be in [1, 2^30] and divisible by cfg->heads"
                          : NULL;
    if (bad)
        ag_set_last_error("nn_gpt_new: %s", bad);
    return !bad;
}

/* nanoGPT's _init_weights and its scaled residual projections. */
static void gpt_init(nn_gpt *g, ag_rng *rng)
{
    double resid = INIT_STD / sqrt(2.0 * (double)g->cfg.layers);
    nn_init_normal(g->tok_emb->weight, 0, INIT_STD, rng);
    nn_init_normal(g->pos_emb->weight, 0, INIT_STD, rng);
    for (int64_t i = 0; i < g->cfg.layers; i++) {
        nn_gpt_block *b = g->blocks[i];
        nn_init_normal(b->attn->in_proj_weight, 0, INIT_STD, rng);
        nn_init_normal(b->attn->out_proj->weight, 0, resid, rng);
        nn_init_normal(b->fc->weight, 0, INIT_STD, rng);
        nn_init_zeros(b->fc->bias);
        nn_init_normal(b->proj->weight, 0, resid, rng);
        nn_init_zeros(b->proj->bias);
    }
    nn_init_normal(g->head->weight, 0, INIT_STD, rng);
}

/* The layers of g in registration order; false on failure. */
static bool gpt_layers(nn_params *p, const char *name, nn_gpt *g, ag_rng *rng)
{
    const char *fn = "nn_gpt_new";
    const nn_gpt_config *c = &g->cfg;
    char s[NN_NAME_MAX], idx[40];
    if (!nn_join_name(s, fn, name, "tok_emb") ||
        !(g->tok_emb = nn_embedding_new(p, s, c->vocab, c->dim, rng)) ||
        !nn_join_name(s, fn, name, "pos_emb") ||
        !(g->pos_emb = nn_embedding_new(p, s, c->block, c->dim, rng)))
        return false;
    for (int64_t i = 0; i < c->layers; i++) {
        snprintf(idx, sizeof idx, "blocks.%lld", (long long)i);
        if (!nn_join_name(s, fn, name, idx) ||
            !(g->blocks[i] = nn_gpt_block_new(p, s, c->dim, c->heads, rng)))
            return false;
    }
    return nn_join_name(s, fn, name, "ln_f") &&
           (g->ln_f = nn_layer_norm_new(p, s, 1, &c->dim, LN_EPS, true)) &&
           nn_join_name(s, fn, name, "head") &&
           (g->head = nn_linear_new(p, s, c->dim, c->vocab, false, rng));
}

nn_gpt *nn_gpt_new(nn_params *p, const char *name, const nn_gpt_config *cfg, ag_rng *rng)
{
    if (!p || !name) {
        ag_set_last_error("nn_gpt_new: params or name is NULL");
        return NULL;
    }
    if (!config_ok(cfg))
        return NULL;
    nn_gpt *g = ag_mem_calloc(sizeof *g);
    nn_gpt_block **blocks = g ? ag_mem_calloc((size_t)cfg->layers * sizeof *blocks) : NULL;
    if (!blocks) {
        ag_mem_free(g);
        ag_set_last_error("nn_gpt_new: out of memory");
        return NULL;
    }
    g->cfg = *cfg;
    g->blocks = blocks;
    int n0 = nn_params_count(p);
    if (!gpt_layers(p, name, g, rng)) {
        nn_gpt_free(g);
        nn_params_truncate(p, n0);
        return NULL;
    }
    if (rng)
        gpt_init(g, rng);
    return g;
}

void nn_gpt_free(nn_gpt *g)
{
    if (!g)
        return;
    nn_embedding_free(g->tok_emb);
    nn_embedding_free(g->pos_emb);
    for (int64_t i = 0; i < g->cfg.layers; i++)
        nn_gpt_block_free(g->blocks[i]);
    ag_mem_free(g->blocks);
    nn_layer_norm_free(g->ln_f);
    nn_linear_free(g->head);
    ag_mem_free(g->segments);
    ag_mem_free(g);
}

/* One checkpoint's ctx (blocks [lo, hi)): it must live until backward, so
 * the model owns it. */
struct nn_gpt_segment {
    nn_gpt *g;
    int64_t lo, hi;
};

static ag_status gpt_segment(ag_tape *t, int n_in, ag_tensor *const *in, int n_out,
                             ag_tensor **out, void *ctx)
{
    (void)n_in;
    (void)n_out;
    const struct nn_gpt_segment *s = ctx;
    ag_tensor *x = in[0];
    for (int64_t i = s->lo; i < s->hi; i++)
        x = block_run(t, s->g->blocks[i], x, s->g->checkpoint_keep);
    out[0] = x;
    return ag_tape_status(t);
}

/* The blocks over x, each run of g->checkpoint of them one checkpoint: a
 * block is a function of x alone. */
static ag_tensor *gpt_blocks(ag_tape *t, nn_gpt *g, ag_tensor *x)
{
    if (!g->checkpoint) {
        for (int64_t i = 0; i < g->cfg.layers; i++)
            x = nn_gpt_block_forward(t, g->blocks[i], x);
        return x;
    }
    for (int64_t s = 0; s * g->checkpoint < g->cfg.layers; s++)
        if (ag_checkpoint(t, gpt_segment, &g->segments[s], 1, &x, 1, &x) != AG_OK)
            return NULL;
    return x;
}

ag_status nn_gpt_set_checkpoint(nn_gpt *g, int every, unsigned keep)
{
    const char *bad = !g                                  ? "model is NULL"
                      : g->cfg.layers < 1 || !g->blocks     ? "model is not one nn_gpt_new made"
                      : every < 0                           ? "every is negative"
                      : keep & ~(unsigned)(NN_GPT_KEEP_FC | NN_GPT_KEEP_PROJ)
                          ? "keep has unknown bits"
                          : NULL;
    if (bad) {
        ag_set_last_error("nn_gpt_set_checkpoint: %s", bad);
        return AG_ERR_ARG;
    }
    int64_t n = every ? (g->cfg.layers - 1) / every + 1 : 0; /* layers >= 1 */
    struct nn_gpt_segment *s = n ? ag_mem_alloc((size_t)n * sizeof *s) : NULL;
    if (n && !s) {
        ag_set_last_error("nn_gpt_set_checkpoint: out of memory");
        return AG_ERR_NOMEM;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t lo = i * every;
        s[i] = (struct nn_gpt_segment){g, lo, g->cfg.layers - lo > every ? lo + every
                                                                         : g->cfg.layers};
    }
    ag_mem_free(g->segments);
    g->segments = s;
    g->checkpoint = every;
    g->checkpoint_keep = keep;
    return AG_OK;
}

ag_tensor *nn_gpt_forward(ag_tape *t, nn_gpt *g, const int64_t *idx, int64_t n, int64_t T)
{
    const char *fn = "nn_gpt_forward";
    if (!t) {
        ag_set_last_error("%s: tape is NULL", fn);
        return NULL;
    }
    if (!g)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: model is NULL", fn);
    if (n < 1 || T < 1 || T > g->cfg.block || !idx || n > INT64_MAX / T)
        return ag_tape_fail(t, AG_ERR_ARG, "%s: %s (n = %lld, T = %lld, block %lld)", fn,
                            !idx ? "idx is NULL" : "needs n >= 1 and 1 <= T <= block",
                            (long long)n, (long long)T, (long long)g->cfg.block);
    for (int64_t i = 0; i < n * T; i++)
        if (idx[i] < 0 || idx[i] >= g->cfg.vocab)
            return ag_tape_fail(t, AG_ERR_ARG, "%s: idx[%lld] = %lld is outside [0, %lld)", fn,
                                (long long)i, (long long)idx[i], (long long)g->cfg.vocab);
    int64_t d = g->cfg.dim;
    ag_tensor *tok = nn_embedding_forward(t, g->tok_emb, idx, n * T);      /* (n T, d) */
    ag_tensor *pos = ag_slice(t, g->pos_emb->weight, 0, 0, T, 1);          /* (T, d) */
    ag_tensor *x = ag_add(t, ag_reshape(t, tok, 3, (const int64_t[]){n, T, d}), pos);
    x = gpt_blocks(t, g, x);                                              /* (n, T, d) */
    return nn_linear_forward(t, g->head, norm(t, g->ln_f, x));             /* (n, T, V) */
}
