/* test_nn_rnn.c — nn_rnn, nn_lstm and nn_gru: outputs, final states and
 * gradients equal torch.nn.RNN / LSTM / GRU's on the same state_dict (f64,
 * 2 layers, batch_first both ways, fixtures by
 * tests/reference/make_seq_fixtures.py), gradcheck and gradgradcheck of
 * the compositions, parameter names and init, the errors, and no system
 * allocation in an LSTM training step after the first. */
#include "test_util.h"

#include "tapegrad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/reference/seq/seq_f64.safetensors"

typedef enum { K_RNN, K_LSTM, K_GRU } kind;

/* A layer of any kind behind one forward, for the table-driven tests. */
typedef struct layer {
    kind k;
    nn_rnn *rnn;
    nn_lstm *lstm;
    nn_gru *gru;
} layer;

static layer layer_new(nn_params *p, const char *name, kind k, int64_t in, int64_t h,
                       int layers, bool bf, ag_rng *rng)
{
    layer l = {.k = k};
    if (k == K_RNN)
        l.rnn = nn_rnn_new(p, name, in, h, layers, bf, rng);
    else if (k == K_LSTM)
        l.lstm = nn_lstm_new(p, name, in, h, layers, bf, rng);
    else
        l.gru = nn_gru_new(p, name, in, h, layers, bf, rng);
    assert_true(l.rnn || l.lstm || l.gru);
    return l;
}

static ag_tensor *layer_forward(ag_tape *t, layer *l, ag_tensor *x, ag_tensor *h0,
                                ag_tensor *c0, ag_tensor **hn, ag_tensor **cn)
{
    if (l->k == K_LSTM)
        return nn_lstm_forward(t, l->lstm, x, h0, c0, hn, cn);
    if (cn)
        *cn = NULL;
    return l->k == K_RNN ? nn_rnn_forward(t, l->rnn, x, h0, hn)
                         : nn_gru_forward(t, l->gru, x, h0, hn);
}

static void layer_free(layer *l)
{
    nn_rnn_free(l->rnn);
    nn_lstm_free(l->lstm);
    nn_gru_free(l->gru);
}

/* A persistent copy of fixture tensor P.name that requires grad. */
static ag_tensor *input(const ag_safetensors *f, const char *p, const char *name)
{
    ag_tensor *x = ag_tensor_clone(tg_fixture(f, "%s.%s", p, name));
    ag_set_requires_grad(x, true);
    return x;
}

static void check(const ag_tensor *got, const ag_safetensors *f, const char *p,
                  const char *name)
{
    char label[96];
    snprintf(label, sizeof label, "%s.%s", p, name);
    assert_non_null(got);
    const ag_tensor *want = tg_fixture(f, "%s", label);
    tg_assert_shape(got, ag_ndim(want), ag_shape(want));
    assert_tensor_close(got, want, 1e-10, 1e-12);
}

/* sum(a * seed) for a fixture seed P.name. */
static ag_tensor *dot(ag_tape *t, ag_tensor *a, const ag_safetensors *f, const char *p,
                      const char *name)
{
    return ag_sum(t, ag_mul(t, a, tg_fixture(f, "%s.%s", p, name)), AG_ALL, false);
}

/* Case P of the fixture: outputs and states from given and from zero
 * states, then every gradient of sum(y gy) + sum(hn ghn) (+ sum(cn gcn)). */
static void match_torch(const char *p, kind k, int layers, bool bf, bool relu)
{
    ag_safetensors *f = tg_load_fixture(FIXTURE);
    assert_non_null(f);
    nn_params *ps = nn_params_new();
    nn_params_set_dtype(ps, AG_F64);
    layer l = layer_new(ps, p, k, 3, 4, layers, bf, NULL);
    if (relu)
        assert_int_equal(nn_rnn_set_nonlinearity(l.rnn, NN_ACT_RELU), AG_OK);
    nn_load_report r;
    assert_int_equal(nn_params_load_from(ps, f, &(nn_load_opts){.non_strict = true}, &r),
                     AG_OK);
    assert_int_equal(r.loaded, 4 * layers);
    assert_int_equal(r.missing, 0);
    ag_tensor *x = input(f, p, "x"), *h0 = input(f, p, "h0");
    ag_tensor *c0 = k == K_LSTM ? input(f, p, "c0") : NULL;
    ag_tape *t = ag_tape_new();
    ag_tensor *hn, *cn;
    check(layer_forward(t, &l, x, NULL, NULL, &hn, &cn), f, p, "y0");
    check(hn, f, p, "hn0");
    if (k == K_LSTM)
        check(cn, f, p, "cn0");
    ag_tape_reset(t);
    ag_tensor *y = layer_forward(t, &l, x, h0, c0, &hn, &cn);
    check(y, f, p, "y");
    check(hn, f, p, "hn");
    ag_tensor *loss = ag_add(t, dot(t, y, f, p, "gy"), dot(t, hn, f, p, "ghn"));
    if (k == K_LSTM) {
        check(cn, f, p, "cn");
        loss = ag_add(t, loss, dot(t, cn, f, p, "gcn"));
    }
    assert_int_equal(ag_backward(t, loss), AG_OK);
    for (int i = 0; i < nn_params_count(ps); i++) {
        char g[96];
        snprintf(g, sizeof g, "grad.%s", nn_params_name(ps, i) + strlen(p) + 1);
        check(ag_grad(nn_params_at(ps, i)), f, p, g);
    }
    check(ag_grad(x), f, p, "grad.x");
    check(ag_grad(h0), f, p, "grad.h0");
    if (c0)
        check(ag_grad(c0), f, p, "grad.c0");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(h0);
    ag_tensor_free(c0);
    layer_free(&l);
    nn_params_free(ps);
    ag_safetensors_free(f);
}

static void test_rnn_matches_torch(void **state)
{
    (void)state;
    match_torch("rnn_tm", K_RNN, 2, false, false);
    match_torch("rnn_bf", K_RNN, 2, true, false);
    match_torch("rnn_relu", K_RNN, 1, true, true);
}

static void test_lstm_matches_torch(void **state)
{
    (void)state;
    match_torch("lstm_tm", K_LSTM, 2, false, false);
    match_torch("lstm_bf", K_LSTM, 2, true, false);
}

static void test_gru_matches_torch(void **state)
{
    (void)state;
    match_torch("gru_tm", K_GRU, 2, false, false);
    match_torch("gru_bf", K_GRU, 2, true, false);
}

/* ---- gradcheck and gradgradcheck of the compositions ---- */

/* inputs: x, h0 (c0 for the LSTM); the weights are checked as inputs too
 * (they are the tensors the layer reads). */
typedef struct gc_ctx {
    layer *l;
} gc_ctx;

static ag_tensor *gc_fn(ag_tape *t, ag_tensor **in, void *ctx)
{
    layer *l = ((gc_ctx *)ctx)->l;
    ag_tensor *hn, *cn;
    ag_tensor *y = layer_forward(t, l, in[0], in[1], l->k == K_LSTM ? in[2] : NULL, &hn, &cn);
    /* every output counts: y, hn and (LSTM) cn joined into one vector */
    ag_tensor *parts[3] = {ag_reshape(t, y, 1, (const int64_t[]){-1}),
                           ag_reshape(t, hn, 1, (const int64_t[]){-1}),
                           cn ? ag_reshape(t, cn, 1, (const int64_t[]){-1}) : NULL};
    return ag_concat(t, parts, cn ? 3 : 2, 0);
}

static void gradchecks(kind k, bool bf)
{
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    nn_params *ps = nn_params_new();
    nn_params_set_dtype(ps, AG_F64);
    layer l = layer_new(ps, "r", k, 2, 3, 2, bf, &rng);
    int64_t xs[3] = {bf ? 2 : 3, bf ? 3 : 2, 2}, ss[3] = {2, 2, 3};
    ag_tensor *in[3 + 8];
    int n = 0;
    in[n++] = ag_tensor_uniform(AG_F64, 3, xs, -1, 1, &rng);
    in[n++] = ag_tensor_uniform(AG_F64, 3, ss, -1, 1, &rng);
    if (k == K_LSTM)
        in[n++] = ag_tensor_uniform(AG_F64, 3, ss, -1, 1, &rng);
    for (int i = 0; i < n; i++)
        ag_set_requires_grad(in[i], true);
    int nx = n;
    for (int i = 0; i < nn_params_count(ps); i++)
        in[n++] = nn_params_at(ps, i);
    gc_ctx ctx = {&l};
    ag_gradcheck_report rep;
    ag_status s = ag_gradcheck(gc_fn, &ctx, in, n, NULL, &rep);
    if (s != AG_OK)
        print_message("gradcheck: %s\n", rep.message);
    assert_int_equal(s, AG_OK);
    s = ag_gradgradcheck(gc_fn, &ctx, in, n, NULL, &rep);
    if (s != AG_OK)
        print_message("gradgradcheck: %s\n", rep.message);
    assert_int_equal(s, AG_OK);
    for (int i = 0; i < nx; i++)
        ag_tensor_free(in[i]);
    layer_free(&l);
    nn_params_free(ps);
}

static void test_rnn_gradcheck(void **state)
{
    (void)state;
    gradchecks(K_RNN, false);
    gradchecks(K_RNN, true);
}

static void test_lstm_gradcheck(void **state)
{
    (void)state;
    gradchecks(K_LSTM, false);
    gradchecks(K_LSTM, true);
}

static void test_gru_gradcheck(void **state)
{
    (void)state;
    gradchecks(K_GRU, false);
    gradchecks(K_GRU, true);
}

/* ---- names, init, errors ---- */

static void test_rnn_names_and_init(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    nn_params *p = nn_params_new();
    nn_lstm *l = nn_lstm_new(p, "enc.rnn", 5, 8, 2, true, &rng);
    assert_non_null(l);
    static const char *const names[] = {
        "enc.rnn.weight_ih_l0", "enc.rnn.weight_hh_l0", "enc.rnn.bias_ih_l0",
        "enc.rnn.bias_hh_l0",   "enc.rnn.weight_ih_l1", "enc.rnn.weight_hh_l1",
        "enc.rnn.bias_ih_l1",   "enc.rnn.bias_hh_l1",
    };
    static const int64_t shapes[8][2] = {{32, 5}, {32, 8}, {32, 0}, {32, 0},
                                         {32, 8}, {32, 8}, {32, 0}, {32, 0}};
    assert_int_equal(nn_params_count(p), 8);
    double bound = 1 / sqrt(8.0), lo = 1, hi = -1;
    for (int i = 0; i < 8; i++) {
        ag_tensor *w = nn_params_at(p, i);
        assert_string_equal(nn_params_name(p, i), names[i]);
        tg_assert_shape(w, shapes[i][1] ? 2 : 1, shapes[i]);
        for (int64_t j = 0; j < ag_numel(w); j++) {
            lo = fmin(lo, ag_get(w, j));
            hi = fmax(hi, ag_get(w, j));
        }
    }
    /* U(-1/sqrt(H), 1/sqrt(H)): inside the bound and spread over it */
    assert_true(lo >= -bound && hi <= bound && lo < -0.9 * bound && hi > 0.9 * bound);
    assert_ptr_equal(l->w[1].weight_hh, nn_params_get(p, "enc.rnn.weight_hh_l1"));
    nn_gru *g = nn_gru_new(p, "gru", 5, 8, 1, false, NULL);
    assert_non_null(g);
    tg_assert_shape(g->w[0].weight_ih, 2, (const int64_t[]){24, 5});
    assert_true(ag_get(g->w[0].bias_hh, 0) == 0.0);   /* rng NULL: zeros */
    nn_gru_free(g);
    nn_lstm_free(l);
    nn_params_free(p);
}

static void test_rnn_constructor_errors(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    assert_null(nn_lstm_new(NULL, "a", 2, 3, 1, false, NULL));
    assert_non_null(strstr(ag_last_error(), "nn_lstm_new"));
    assert_null(nn_gru_new(p, "a", 0, 3, 1, false, NULL));
    assert_non_null(strstr(ag_last_error(), "input and hidden"));
    assert_null(nn_rnn_new(p, "a", 2, 3, 0, false, NULL));
    assert_non_null(strstr(ag_last_error(), "layers"));
    nn_rnn *r = nn_rnn_new(p, "a", 2, 3, 1, false, NULL);
    assert_non_null(r);
    assert_null(nn_rnn_new(p, "a", 2, 3, 1, false, NULL));    /* name taken */
    assert_int_equal(nn_params_count(p), 4);                 /* nothing added */
    assert_int_equal(nn_rnn_set_nonlinearity(r, NN_ACT_GELU), AG_ERR_ARG);
    assert_int_equal(nn_rnn_set_nonlinearity(NULL, NN_ACT_RELU), AG_ERR_ARG);
    nn_rnn_free(r);
    nn_rnn_free(NULL);
    nn_lstm_free(NULL);
    nn_gru_free(NULL);
    nn_params_free(p);
}

static void test_rnn_forward_errors(void **state)
{
    (void)state;
    nn_params *p = nn_params_new();
    nn_lstm *l = nn_lstm_new(p, "l", 3, 4, 2, true, NULL);
    ag_tape *t = ag_tape_new();
    ag_tensor *x = ag_tensor_new(AG_F32, 3, (const int64_t[]){2, 5, 3});
    ag_tensor *bad = ag_tensor_new(AG_F32, 3, (const int64_t[]){2, 5, 4});
    ag_tensor *h0 = ag_tensor_new(AG_F32, 3, (const int64_t[]){1, 2, 4});
    ag_tensor *x64 = ag_tensor_new(AG_F64, 3, (const int64_t[]){2, 5, 3});
    ag_tensor *hn = x, *cn = x;
    assert_null(nn_lstm_forward(t, l, bad, NULL, NULL, &hn, &cn));
    assert_null(hn);
    assert_null(cn);
    tg_assert_tape_error(t, AG_ERR_SHAPE, "nn_lstm_forward: x is [2,5,4], expected [N, T, input]");
    ag_tape_reset(t);
    assert_null(nn_lstm_forward(t, l, x, h0, NULL, NULL, NULL));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "nn_lstm_forward: h0 is [1,2,4], expected [2, 2, 4]");
    ag_tape_reset(t);
    assert_null(nn_lstm_forward(t, l, x64, NULL, NULL, NULL, NULL));
    tg_assert_tape_error(t, AG_ERR_DTYPE, "nn_lstm_forward");
    ag_tape_reset(t);
    assert_null(nn_gru_forward(t, NULL, x, NULL, &hn));
    tg_assert_tape_error(t, AG_ERR_ARG, "nn_gru_forward: layer is NULL");
    ag_tape_reset(t);
    ag_tensor *empty = ag_tensor_new(AG_F32, 3, (const int64_t[]){2, 0, 3});
    assert_null(nn_lstm_forward(t, l, empty, NULL, NULL, NULL, NULL));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "T >= 1");
    assert_null(nn_lstm_forward(NULL, l, x, NULL, NULL, NULL, NULL));
    assert_non_null(strstr(ag_last_error(), "nn_lstm_forward: tape is NULL"));
    ag_tensor_free(empty);
    ag_tensor_free(x);
    ag_tensor_free(bad);
    ag_tensor_free(h0);
    ag_tensor_free(x64);
    ag_tape_free(t);
    nn_lstm_free(l);
    nn_params_free(p);
}

/* The fused steps' shape checks name the function and both shapes. */
static void test_cells_bad_shapes(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    ag_tensor *g = ag_tensor_new(AG_F32, 2, (const int64_t[]){2, 12});
    ag_tensor *c = ag_tensor_new(AG_F32, 2, (const int64_t[]){2, 4});
    ag_tensor *c3 = ag_tensor_new(AG_F32, 2, (const int64_t[]){2, 3});
    ag_tensor *cn = g;
    assert_null(ag_lstm_cell(t, g, c, &cn));
    assert_null(cn);
    tg_assert_tape_error(t, AG_ERR_SHAPE,
                         "ag_lstm_cell: gates is [2,12] and c is [2,4] (gates needs [.., 4H]");
    ag_tape_reset(t);
    assert_null(ag_lstm_cell(t, g, c3, NULL));
    tg_assert_tape_error(t, AG_ERR_ARG, "ag_lstm_cell: c_next is NULL");
    ag_tape_reset(t);
    assert_null(ag_gru_cell(t, g, c, c3));
    tg_assert_tape_error(t, AG_ERR_SHAPE, "ag_gru_cell: gx is [2,12] and h is [2,3]");
    ag_tape_reset(t);
    ag_tensor *hn = ag_lstm_cell(t, g, c3, &cn);   /* 4 x 3 gates for H 3: fits */
    assert_non_null(hn);
    assert_ptr_not_equal(cn, NULL);
    ag_tensor_free(g);
    ag_tensor_free(c);
    ag_tensor_free(c3);
    ag_tape_free(t);
}

/* ---- a training step allocates nothing after the first ---- */

typedef struct charlm {
    nn_embedding *emb;
    layer rnn;
    nn_linear *head;
    optim *opt;
    int n;
    ag_tensor **w;
} charlm;

/* The charlm trainer's step for the LSTM / GRU: embedding, layer, head,
 * cross-entropy, backward, clipping, Adam. */
static void lm_step(ag_tape *t, charlm *m, const int64_t *idx, const int64_t *tgt)
{
    enum { B = 4, T = 16 };
    ag_tensor *e = ag_reshape(t, nn_embedding_forward(t, m->emb, idx, B * T), 3,
                              (const int64_t[]){B, T, 8});
    ag_tensor *y = layer_forward(t, &m->rnn, e, NULL, NULL, NULL, NULL);
    ag_tensor *logits = nn_linear_forward(t, m->head, y);               /* (B, T, V) */
    ag_tensor *loss = nn_cross_entropy(t, ag_reshape(t, logits, 2, (const int64_t[]){B * T, 11}),
                                       tgt, B * T);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_true(optim_clip_grad_norm(m->w, m->n, 1.0, 2.0, NULL) == AG_OK);
    assert_int_equal(optim_step(m->opt), AG_OK);
    optim_zero_grad(m->opt);
    ag_tape_reset(t);
}

static void step_allocs(kind k, int threads)
{
    tg_count_allocs();
    ag_set_num_threads(threads);
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    nn_params *p = nn_params_new();
    charlm m = {.emb = nn_embedding_new(p, "emb", 11, 8, &rng),
                .rnn = layer_new(p, "rnn", k, 8, 32, 1, true, &rng),
                .head = nn_linear_new(p, "head", 32, 11, true, &rng)};
    m.w = nn_params_tensors(p, &m.n);
    m.opt = optim_adam(m.w, m.n, (optim_adam_opts){.lr = 2e-3});
    int64_t idx[64], tgt[64];
    for (int i = 0; i < 64; i++) {
        idx[i] = i * 7 % 11;
        tgt[i] = (i * 7 + 3) % 11;
    }
    ag_tape *t = ag_tape_new();
    lm_step(t, &m, idx, tgt);   /* warm-up: arena, gradients, optimizer state */
    lm_step(t, &m, idx, tgt);
    long before = tg_alloc_count;
    for (int i = 0; i < 5; i++)
        lm_step(t, &m, idx, tgt);
    print_message("%s, %d thread(s): %ld system allocations in 5 steps after warm-up\n",
                  k == K_LSTM ? "lstm" : "gru", threads, tg_alloc_count - before);
    assert_int_equal(tg_alloc_count - before, 0);
    ag_tape_free(t);
    optim_free(m.opt);
    nn_embedding_free(m.emb);
    layer_free(&m.rnn);
    nn_linear_free(m.head);
    nn_params_free(p);
    ag_set_allocator(NULL);
    ag_set_num_threads(0);
}

static void test_rnn_step_allocates_nothing(void **state)
{
    (void)state;
    step_allocs(K_LSTM, 1);
    step_allocs(K_GRU, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rnn_matches_torch),
        cmocka_unit_test(test_lstm_matches_torch),
        cmocka_unit_test(test_gru_matches_torch),
        cmocka_unit_test(test_rnn_gradcheck),
        cmocka_unit_test(test_lstm_gradcheck),
        cmocka_unit_test(test_gru_gradcheck),
        cmocka_unit_test(test_rnn_names_and_init),
        cmocka_unit_test(test_rnn_constructor_errors),
        cmocka_unit_test(test_rnn_forward_errors),
        cmocka_unit_test(test_cells_bad_shapes),
        cmocka_unit_test(test_rnn_step_allocates_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
