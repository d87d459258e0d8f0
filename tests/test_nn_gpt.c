/* test_nn_gpt.c — nn_multihead_attention and nn_gpt: outputs and gradients
 * equal torch.nn.MultiheadAttention's (self-attention with a causal mask,
 * batch_first; cross-attention with an additive mask, time-major) and the
 * charlm PyTorch peer's GPT on the same state_dict (f64, fixtures by
 * tests/reference/make_seq_fixtures.py), ag_layer_norm equal to
 * F.layer_norm; gradcheck of attention; names, errors; no system
 * allocation in a GPT training step after the first. */
#include "test_util.h"

#include "tapegrad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/reference/seq/seq_f64.safetensors"

static ag_tensor *input(const ag_safetensors *f, const char *p, const char *name)
{
    ag_tensor *x = ag_tensor_clone(tg_fixture(f, "%s.%s", p, name));
    ag_set_requires_grad(x, true);
    return x;
}

static void check(const ag_tensor *got, const ag_safetensors *f, const char *p,
                  const char *name)
{
    char label[128];
    snprintf(label, sizeof label, "%s.%s", p, name);
    if (!got)
        print_message("%s: NULL\n", label);
    assert_non_null(got);
    const ag_tensor *want = tg_fixture(f, "%s", label);
    tg_assert_shape(got, ag_ndim(want), ag_shape(want));
    assert_tensor_close(got, want, 1e-10, 1e-12);
}

static nn_params *load_params(const ag_safetensors *f, nn_params *p, int expect)
{
    nn_load_report r;
    assert_int_equal(nn_params_load_from(p, f, &(nn_load_opts){.non_strict = true}, &r), AG_OK);
    assert_int_equal(r.loaded, expect);
    assert_int_equal(r.missing, 0);
    return p;
}

static void check_param_grads(nn_params *ps, const ag_safetensors *f, const char *p)
{
    size_t skip = strlen(p) + 1;
    for (int i = 0; i < nn_params_count(ps); i++) {
        char g[160];
        snprintf(g, sizeof g, "grad.%s", nn_params_name(ps, i) + skip);
        check(ag_grad(nn_params_at(ps, i)), f, p, g);
    }
}

static void mha_case(const char *p, bool bf, bool self)
{
    ag_safetensors *f = tg_load_fixture(FIXTURE);
    assert_non_null(f);
    nn_params *ps = nn_params_new();
    nn_params_set_dtype(ps, AG_F64);
    nn_multihead_attention *m = nn_multihead_attention_new(ps, p, 8, 2, bf, NULL);
    assert_non_null(m);
    load_params(f, ps, 4);
    ag_tensor *q = input(f, p, "q");
    ag_tensor *k = self ? q : input(f, p, "k"), *v = self ? q : input(f, p, "v");
    ag_tape *t = ag_tape_new();
    ag_tensor *y = self ? nn_multihead_attention_forward(t, m, q, q, q, NULL, true)
                        : nn_multihead_attention_forward(t, m, q, k, v,
                                                         tg_fixture(f, "%s.mask", p), false);
    check(y, f, p, "y");
    ag_tensor *loss = ag_sum(t, ag_mul(t, y, tg_fixture(f, "%s.gy", p)), AG_ALL, false);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    check_param_grads(ps, f, p);
    check(ag_grad(q), f, p, "grad.q");
    if (!self) {
        check(ag_grad(k), f, p, "grad.k");
        check(ag_grad(v), f, p, "grad.v");
        ag_tensor_free(k);
        ag_tensor_free(v);
    }
    ag_tensor_free(q);
    ag_tape_free(t);
    nn_multihead_attention_free(m);
    nn_params_free(ps);
    ag_safetensors_free(f);
}

static void test_mha_matches_torch(void **state)
{
    (void)state;
    mha_case("mha_self", true, true);
    mha_case("mha_cross", false, false);
}

static int64_t *ints(const ag_safetensors *f, const char *name, int64_t *n)
{
    const ag_tensor *x = tg_fixture(f, "%s", name);
    *n = ag_numel(x);
    int64_t *v = malloc((size_t)*n * sizeof *v);
    for (int64_t i = 0; i < *n; i++)
        v[i] = (int64_t)ag_get(x, i);
    return v;
}

static void test_gpt_matches_torch(void **state)
{
    (void)state;
    ag_safetensors *f = tg_load_fixture(FIXTURE);
    assert_non_null(f);
    nn_params *ps = nn_params_new();
    nn_params_set_dtype(ps, AG_F64);
    nn_gpt_config cfg = {.vocab = 11, .block = 8, .layers = 2, .heads = 2, .dim = 8};
    nn_gpt *g = nn_gpt_new(ps, "gpt", &cfg, NULL);
    assert_non_null(g);
    load_params(f, ps, nn_params_count(ps));
    int64_t n, nt;
    int64_t *idx = ints(f, "gpt.idx", &n), *tgt = ints(f, "gpt.target", &nt);
    ag_tape *t = ag_tape_new();
    ag_tensor *logits = nn_gpt_forward(t, g, idx, 2, 6);
    check(logits, f, "gpt", "y");
    ag_tensor *loss = nn_cross_entropy(t, ag_reshape(t, logits, 2, (const int64_t[]){12, 11}),
                                       tgt, 12);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    check_param_grads(ps, f, "gpt");
    free(idx);
    free(tgt);
    ag_tape_free(t);
    nn_gpt_free(g);
    nn_params_free(ps);
    ag_safetensors_free(f);
}

/* ag_layer_norm (the GPT's norms) against F.layer_norm, with and without
 * the affine part, and its errors. */
static void test_layer_norm_matches_torch(void **state)
{
    (void)state;
    ag_safetensors *f = tg_load_fixture(FIXTURE);
    assert_non_null(f);
    ag_tensor *x = input(f, "ln", "x"), *w = input(f, "ln", "w"), *b = input(f, "ln", "b");
    ag_tape *t = ag_tape_new();
    check(ag_layer_norm(t, x, NULL, NULL, 1e-5), f, "ln", "y_plain");
    ag_tensor *y = ag_layer_norm(t, x, w, b, 1e-5);
    check(y, f, "ln", "y");
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, y, tg_fixture(f, "ln.gy")), AG_ALL,
                                           false)), AG_OK);
    check(ag_grad(x), f, "ln", "grad.x");
    check(ag_grad(w), f, "ln", "grad.w");
    check(ag_grad(b), f, "ln", "grad.b");
    ag_tape_reset(t);
    ag_tensor *w4 = ag_tensor_new(AG_F64, 1, (const int64_t[]){4});
    assert_null(ag_layer_norm(t, x, w4, NULL, 1e-5));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_layer_norm: w is [4] but x is [3,2,5] (needs [5])");
    ag_tape_reset(t);
    assert_null(ag_layer_norm(t, x, w, b, -1));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_layer_norm: eps = -1");
    ag_tensor_free(w4);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_tape_free(t);
    ag_safetensors_free(f);
}

/* y and every gradient of ag_layer_norm on x [640, 128] (large enough for
 * the pool) with the given thread count, joined into out. */
static void ln_run_threads(int threads, nn_layer_norm *l, ag_tensor *x, bool fused, double *out)
{
    ag_set_num_threads(threads);
    ag_tape *t = ag_tape_new();
    ag_zero_grad(x);
    ag_zero_grad(l->weight);
    ag_zero_grad(l->bias);
    ag_tensor *y = fused ? ag_layer_norm(t, x, l->weight, l->bias, l->eps)
                         : nn_layer_norm_forward(t, l, x);
    ag_tensor *seed = ag_tensor_clone(x);
    assert_int_equal(ag_backward_seeded(t, y, seed), AG_OK);
    const ag_tensor *parts[4] = {y, ag_grad(x), ag_grad(l->weight), ag_grad(l->bias)};
    int64_t k = 0;
    for (int i = 0; i < 4; i++)
        for (int64_t j = 0; j < ag_numel(parts[i]); j++)
            out[k++] = ag_get(parts[i], j);
    ag_tensor_free(seed);
    ag_tape_free(t);
    ag_set_num_threads(0);
}

static void test_layer_norm_threads(void **state)
{
    (void)state;
    enum { R = 640, D = 128, N = 2 * R * D + 2 * D };
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    nn_params *p = nn_params_new();
    nn_layer_norm *l = nn_layer_norm_new(p, "ln", 1, (const int64_t[]){D}, 1e-5, true);
    nn_init_uniform(l->weight, 0.5, 1.5, &rng);
    nn_init_uniform(l->bias, -0.5, 0.5, &rng);
    ag_tensor *x = ag_tensor_normal(AG_F32, 2, (const int64_t[]){R, D}, 0.3, 2, &rng);
    ag_set_requires_grad(x, true);
    double *one = malloc(3 * N * sizeof *one), *two = one + N, *comp = two + N;
    ln_run_threads(1, l, x, true, one);
    ln_run_threads(2, l, x, true, two);
    ln_run_threads(1, l, x, false, comp);
    assert_memory_equal(one, two, N * sizeof *one);   /* bit for bit */
    assert_doubles_close(one, comp, N, 1e-4, 1e-4);   /* the composition, f32 */
    free(one);
    ag_tensor_free(x);
    nn_layer_norm_free(l);
    nn_params_free(p);
}

/* ---- gradcheck and gradgradcheck of the attention composition ---- */

static ag_tensor *mha_fn(ag_tape *t, ag_tensor **in, void *ctx)
{
    nn_multihead_attention *m = ctx;
    return nn_multihead_attention_forward(t, m, in[0], in[1], in[1], NULL, false);
}

static void test_mha_gradcheck(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 11);
    nn_params *ps = nn_params_new();
    nn_params_set_dtype(ps, AG_F64);
    nn_multihead_attention *m = nn_multihead_attention_new(ps, "a", 4, 2, true, &rng);
    nn_init_uniform(m->in_proj_bias, -0.5, 0.5, &rng);
    ag_tensor *in[2 + 4] = {ag_tensor_uniform(AG_F64, 3, (const int64_t[]){2, 3, 4}, -1, 1, &rng),
                            ag_tensor_uniform(AG_F64, 3, (const int64_t[]){2, 2, 4}, -1, 1, &rng)};
    ag_set_requires_grad(in[0], true);
    ag_set_requires_grad(in[1], true);
    for (int i = 0; i < 4; i++)
        in[2 + i] = nn_params_at(ps, i);
    ag_gradcheck_report r;
    ag_status s = ag_gradcheck(mha_fn, m, in, 6, NULL, &r);
    if (s != AG_OK)
        print_message("%s\n", r.message);
    assert_int_equal(s, AG_OK);
    s = ag_gradgradcheck(mha_fn, m, in, 6, NULL, &r);
    if (s != AG_OK)
        print_message("%s\n", r.message);
    assert_int_equal(s, AG_OK);
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
    nn_multihead_attention_free(m);
    nn_params_free(ps);
}

/* ---- names, init, errors ---- */

static void test_gpt_names_and_init(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    nn_params *p = nn_params_new();
    nn_gpt_config cfg = {.vocab = 13, .block = 16, .layers = 2, .heads = 4, .dim = 32};
    nn_gpt *g = nn_gpt_new(p, "", &cfg, &rng);
    assert_non_null(g);
    static const char *const first[] = {
        "tok_emb.weight", "pos_emb.weight", "blocks.0.ln1.weight", "blocks.0.ln1.bias",
        "blocks.0.attn.in_proj_weight", "blocks.0.attn.in_proj_bias",
        "blocks.0.attn.out_proj.weight", "blocks.0.attn.out_proj.bias", "blocks.0.ln2.weight",
        "blocks.0.ln2.bias", "blocks.0.fc.weight", "blocks.0.fc.bias", "blocks.0.proj.weight",
        "blocks.0.proj.bias",
    };
    for (int i = 0; i < 14; i++)
        assert_string_equal(nn_params_name(p, i), first[i]);
    assert_int_equal(nn_params_count(p), 2 + 2 * 12 + 3);
    assert_string_equal(nn_params_name(p, nn_params_count(p) - 1), "head.weight");
    /* 12 d^2 per block, embeddings, final norm, head */
    assert_int_equal(nn_params_numel(p, false),
                     2 * (12 * 32 * 32 + 13 * 32) + 13 * 32 + 16 * 32 + 2 * 32 + 13 * 32);
    /* nanoGPT's init: std 0.02, and 0.02 / sqrt(2 layers) on residual projections */
    double s = 0, s2 = 0;
    ag_tensor *w = g->blocks[1]->proj->weight;
    for (int64_t i = 0; i < ag_numel(w); i++) {
        s += ag_get(w, i);
        s2 += ag_get(w, i) * ag_get(w, i);
    }
    double sd = sqrt(s2 / (double)ag_numel(w));
    assert_true(fabs(sd - 0.01) < 0.001);
    assert_true(ag_get(g->blocks[0]->attn->in_proj_bias, 3) == 0.0);
    assert_true(ag_get(g->blocks[0]->ln1->weight, 3) == 1.0);
    nn_gpt_free(g);
    assert_null(nn_gpt_new(p, "x", &(nn_gpt_config){0}, &rng));
    assert_non_null(strstr(ag_last_error(), "cfg->vocab"));
    assert_null(nn_gpt_new(p, "x", &(nn_gpt_config){.vocab = 3, .block = 4, .layers = 1,
                                                    .heads = 3, .dim = 8}, &rng));
    assert_non_null(strstr(ag_last_error(), "divisible"));
    assert_null(nn_multihead_attention_new(p, "m", 6, 4, true, NULL));
    assert_non_null(strstr(ag_last_error(), "nn_multihead_attention_new"));
    nn_params_free(p);
}

static void test_gpt_errors(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    nn_gpt_config cfg = {.vocab = 5, .block = 4, .layers = 1, .heads = 2, .dim = 4};
    nn_gpt *g = nn_gpt_new(p, "", &cfg, NULL);
    ag_tape *t = ag_tape_new();
    int64_t idx[8] = {0, 1, 2, 3, 4, 5, 0, 0};
    assert_null(nn_gpt_forward(t, g, idx, 2, 4));
    tg_assert_tape_error(t, AG_ERR_ARG, "nn_gpt_forward: idx[5] = 5 is outside [0, 5)");
    ag_tape_reset(t);
    assert_null(nn_gpt_forward(t, g, idx, 1, 5));
    tg_assert_tape_error(t, AG_ERR_ARG, "1 <= T <= block");
    ag_tape_reset(t);
    nn_multihead_attention *m = g->blocks[0]->attn;
    ag_tensor *q = ag_tensor_new(AG_F32, 3, (const int64_t[]){2, 3, 4});
    ag_tensor *k = ag_tensor_new(AG_F32, 3, (const int64_t[]){3, 3, 4});
    assert_null(nn_multihead_attention_forward(t, m, q, k, k, NULL, false));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "nn_multihead_attention_forward: key does not fit");
    ag_tape_reset(t);
    assert_null(nn_gpt_block_forward(t, NULL, q));
    tg_assert_tape_error(t, AG_ERR_ARG, "nn_gpt_block_forward: block is NULL");
    ag_tensor_free(q);
    ag_tensor_free(k);
    ag_tape_free(t);
    nn_gpt_free(g);
    nn_gpt_free(NULL);
    nn_multihead_attention_free(NULL);
    nn_params_free(p);
}

/* ---- a training step allocates nothing after the first ---- */

/* The charlm trainer's GPT step: forward, cross-entropy, backward,
 * clipping, AdamW. */
static void gpt_step(ag_tape *t, nn_gpt *g, optim *opt, ag_tensor **w, int n,
                     const int64_t *idx, const int64_t *tgt)
{
    ag_tensor *logits = nn_gpt_forward(t, g, idx, 3, 16);
    ag_tensor *loss = nn_cross_entropy(t, ag_reshape(t, logits, 2, (const int64_t[]){48, 17}),
                                       tgt, 48);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_int_equal(optim_clip_grad_norm(w, n, 1.0, 2.0, NULL), AG_OK);
    assert_int_equal(optim_step(opt), AG_OK);
    optim_zero_grad(opt);
    ag_tape_reset(t);
}

static void gpt_allocs(int threads)
{
    tg_count_allocs();
    ag_set_num_threads(threads);
    ag_rng rng;
    ag_rng_seed(&rng, 2);
    nn_params *p = nn_params_new();
    nn_gpt_config cfg = {.vocab = 17, .block = 16, .layers = 2, .heads = 2, .dim = 32};
    nn_gpt *g = nn_gpt_new(p, "", &cfg, &rng);
    int n;
    ag_tensor **w = nn_params_tensors(p, &n);
    optim *opt = optim_adamw(w, n, (optim_adam_opts){.lr = 1e-3});
    int64_t idx[48], tgt[48];
    for (int i = 0; i < 48; i++) {
        idx[i] = i * 5 % 17;
        tgt[i] = (i * 5 + 1) % 17;
    }
    ag_tape *t = ag_tape_new();
    gpt_step(t, g, opt, w, n, idx, tgt);   /* warm-up */
    gpt_step(t, g, opt, w, n, idx, tgt);
    long before = tg_alloc_count;
    for (int i = 0; i < 5; i++)
        gpt_step(t, g, opt, w, n, idx, tgt);
    print_message("gpt, %d thread(s): %ld system allocations in 5 steps after warm-up\n",
                  threads, tg_alloc_count - before);
    assert_int_equal(tg_alloc_count - before, 0);
    ag_tape_free(t);
    optim_free(opt);
    nn_gpt_free(g);
    nn_params_free(p);
    ag_set_allocator(NULL);
    ag_set_num_threads(0);
}

static void test_gpt_step_allocates_nothing(void **state)
{
    (void)state;
    gpt_allocs(1);
    gpt_allocs(2);
}

/* ---- gradient checkpointing of blocks ---- */

static size_t nbytes(const ag_tensor *x)
{
    return (size_t)ag_numel(x) * ag_dtype_size(ag_dtype_of(x));
}

/* The parameter gradients of one forward + backward, copied into a new
 * buffer; the peak tape bytes into *peak. */
static unsigned char *gpt_grads(nn_params *p, nn_gpt *g, const int64_t *idx,
                                const int64_t *tgt, size_t *bytes, size_t *peak)
{
    int n;
    ag_tensor **w = nn_params_tensors(p, &n);
    for (int i = 0; i < n; i++)
        ag_zero_grad(w[i]);
    ag_tape *t = ag_tape_new();
    ag_tensor *logits = nn_gpt_forward(t, g, idx, 2, 8);
    ag_tensor *loss = nn_cross_entropy(t, ag_reshape(t, logits, 2, (const int64_t[]){16, 7}),
                                       tgt, 16);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    *peak = ag_tape_bytes_peak(t);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += nbytes(ag_grad(w[i]));
    unsigned char *out = malloc(total), *at = out;
    for (int i = 0; i < n; i++) {
        memcpy(at, ag_data(ag_grad(w[i])), nbytes(ag_grad(w[i])));
        at += nbytes(ag_grad(w[i]));
    }
    *bytes = total;
    ag_tape_free(t);
    return out;
}

static void gpt_checkpoint_case(ag_dtype dt)
{
    ag_rng rng;
    ag_rng_seed(&rng, 9);
    nn_params *p = nn_params_new();
    nn_params_set_dtype(p, dt);
    nn_gpt_config cfg = {.vocab = 7, .block = 8, .layers = 3, .heads = 2, .dim = 16};
    nn_gpt *g = nn_gpt_new(p, "", &cfg, &rng);
    assert_non_null(g);
    int64_t idx[16], tgt[16];
    for (int i = 0; i < 16; i++) {
        idx[i] = (i * 3 + 1) % 7;
        tgt[i] = (i * 3 + 2) % 7;
    }
    size_t n0, peak0;
    unsigned char *plain = gpt_grads(p, g, idx, tgt, &n0, &peak0);
    static const unsigned keeps[4] = {0, NN_GPT_KEEP_FC, NN_GPT_KEEP_PROJ,
                                      NN_GPT_KEEP_FC | NN_GPT_KEEP_PROJ};
    for (int c = 0; c < 16; c++) {
        int every = c % 4 + 1;
        unsigned keep = keeps[c / 4];
        assert_int_equal(nn_gpt_set_checkpoint(g, every, keep), AG_OK);
        size_t n1, peak1;
        unsigned char *ck = gpt_grads(p, g, idx, tgt, &n1, &peak1);
        assert_int_equal(n0, n1);
        assert_memory_equal(plain, ck, n0);
        print_message("gpt %s, a checkpoint every %d of 3 blocks%s: peak tape %zu vs %zu "
                      "bytes\n", dt == AG_F64 ? "f64" : "f32", every,
                      keep == 3 ? ", fc and proj kept" : keep ? ", fc or proj kept" : "", peak1, peak0);
        if (every == 1)
            assert_true(peak1 < peak0);
        free(ck);
    }
    assert_int_equal(nn_gpt_set_checkpoint(g, 0, 0), AG_OK);
    size_t n2, peak2;
    unsigned char *again = gpt_grads(p, g, idx, tgt, &n2, &peak2);
    assert_memory_equal(plain, again, n0);
    assert_int_equal(peak2, peak0);
    free(again);
    free(plain);
    nn_gpt_free(g);
    nn_params_free(p);
}

/* Gradients are the same bits with a checkpoint per 1, 2, 3 or 4 blocks
 * as without, in f32 and f64; 0 turns it off; bad arguments say why. */
static void test_gpt_checkpoint_same_gradients(void **state)
{
    (void)state;
    gpt_checkpoint_case(AG_F32);
    gpt_checkpoint_case(AG_F64);
    assert_int_equal(nn_gpt_set_checkpoint(NULL, 1, 0), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "nn_gpt_set_checkpoint: model is NULL"));
    nn_params *p = nn_params_new();
    nn_gpt *g = nn_gpt_new(p, "", &(nn_gpt_config){.vocab = 3, .block = 2, .layers = 1,
                                                   .heads = 1, .dim = 2}, NULL);
    assert_int_equal(nn_gpt_set_checkpoint(g, -1, 0), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "every is negative"));
    assert_int_equal(nn_gpt_set_checkpoint(g, 1, 1u << 7), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "keep has unknown bits"));
    nn_gpt_free(g);
    nn_params_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mha_matches_torch),
        cmocka_unit_test(test_gpt_matches_torch),
        cmocka_unit_test(test_layer_norm_matches_torch),
        cmocka_unit_test(test_layer_norm_threads),
        cmocka_unit_test(test_mha_gradcheck),
        cmocka_unit_test(test_gpt_names_and_init),
        cmocka_unit_test(test_gpt_errors),
        cmocka_unit_test(test_gpt_step_allocates_nothing),
        cmocka_unit_test(test_gpt_checkpoint_same_gradients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
