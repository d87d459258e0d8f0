/* test_dist_hook.c — backward's gradient-ready hook (ag_tape_set_grad_ready),
 * which dist/ starts its buckets from; no MPI needed.  Each leaf must be
 * reported once per sweep, and only when its gradient is final: the copy a
 * hook takes at that moment equals the gradient after the sweep, bit for
 * bit, also for a weight read by two layers. */
#include "test_util.h"

#include "tapegrad.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_SEEN = 16 };

/* What the hook saw: leaves in report order, the call each came in, and a
 * copy of each gradient at that moment (NULL: none yet). */
typedef struct seen {
    int n, calls;
    ag_tensor *leaf[MAX_SEEN];
    int call_of[MAX_SEEN];
    ag_tensor *copy[MAX_SEEN];
} seen;

static void record(ag_tensor *const *leaves, int n, void *ctx)
{
    seen *s = ctx;
    for (int i = 0; i < n; i++) {
        assert_true(s->n < MAX_SEEN);
        ag_tensor *g = ag_grad(leaves[i]);
        s->leaf[s->n] = leaves[i];
        s->call_of[s->n] = s->calls;
        s->copy[s->n++] = g ? ag_tensor_clone(g) : NULL;
    }
    s->calls++;
}

static void seen_clear(seen *s)
{
    for (int i = 0; i < s->n; i++)
        ag_tensor_free(s->copy[i]);
    memset(s, 0, sizeof *s);
}

static int index_of(const seen *s, const ag_tensor *x)
{
    int at = -1;
    for (int i = 0; i < s->n; i++)
        if (s->leaf[i] == x) {
            assert_int_equal(at, -1); /* reported once */
            at = i;
        }
    return at;
}

/* [r, c], or [r] when c is 0 */
static ag_tensor *param(ag_rng *rng, int64_t r, int64_t c)
{
    ag_tensor *p = ag_tensor_normal(AG_F32, c ? 2 : 1, (int64_t[]){r, c}, 0, 0.5, rng);
    ag_set_requires_grad(p, true);
    return p;
}

typedef struct net {
    ag_tensor *x, *w1, *b1, *w2, *b2;
} net;

static net net_new(void)
{
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    net m = {.x = ag_tensor_normal(AG_F32, 2, (int64_t[]){5, 4}, 0, 1, &rng)};
    m.w1 = param(&rng, 3, 4);
    m.b1 = param(&rng, 3, 0);
    m.w2 = param(&rng, 2, 3);
    m.b2 = param(&rng, 2, 0);
    return m;
}

static void net_free(net *m)
{
    ag_tensor *all[] = {m->x, m->w1, m->b1, m->w2, m->b2};
    for (int i = 0; i < 5; i++)
        ag_tensor_free(all[i]);
}

/* loss = sum(linear(relu(linear(x, w1, b1)), w2, b2)) + sum(w1 * w1): w1 is
 * read first by layer 1 and last by the penalty, so its gradient is final
 * only at layer 1. */
static ag_tensor *net_loss(ag_tape *t, const net *m)
{
    ag_tensor *h = ag_relu(t, ag_linear(t, m->x, m->w1, m->b1));
    ag_tensor *y = ag_linear(t, h, m->w2, m->b2);
    return ag_add(t, ag_sum(t, y, AG_ALL, false),
                  ag_sum(t, ag_mul(t, m->w1, m->w1), AG_ALL, false));
}

static void test_hook_reports_each_leaf_once_when_final(void **state)
{
    (void)state;
    net m = net_new();
    ag_tape *t = ag_tape_new();
    seen s = {0};
    ag_tape_set_grad_ready(t, record, &s);
    assert_int_equal(ag_backward(t, net_loss(t, &m)), AG_OK);
    assert_int_equal(s.n, 4);
    ag_tensor *p[] = {m.w1, m.b1, m.w2, m.b2};
    for (int i = 0; i < 4; i++) {
        int k = index_of(&s, p[i]);
        assert_true(k >= 0);
        tg_assert_same_bits(s.copy[k], ag_grad(p[i]));
    }
    /* layer 2 is final before layer 1, each layer's two in one call */
    assert_true(index_of(&s, m.w2) < index_of(&s, m.w1));
    assert_int_equal(s.call_of[index_of(&s, m.w1)], s.call_of[index_of(&s, m.b1)]);
    assert_int_equal(s.call_of[index_of(&s, m.w2)], s.call_of[index_of(&s, m.b2)]);
    assert_int_not_equal(s.call_of[index_of(&s, m.w1)], s.call_of[index_of(&s, m.w2)]);
    seen_clear(&s);
    ag_tape_free(t);
    net_free(&m);
}

static void test_hook_leaves_results_unchanged(void **state)
{
    (void)state;
    net a = net_new(), b = net_new();
    ag_tape *t = ag_tape_new();
    seen s = {0};
    assert_int_equal(ag_backward(t, net_loss(t, &a)), AG_OK);
    ag_tape_reset(t);
    ag_tape_set_grad_ready(t, record, &s);
    assert_int_equal(ag_backward(t, net_loss(t, &b)), AG_OK);
    tg_assert_same_bits(ag_grad(a.w1), ag_grad(b.w1));
    tg_assert_same_bits(ag_grad(a.b2), ag_grad(b.b2));
    seen_clear(&s);
    ag_tape_free(t);
    net_free(&a);
    net_free(&b);
}

static void test_hook_kept_across_reset_and_removed(void **state)
{
    (void)state;
    net m = net_new();
    ag_tape *t = ag_tape_new();
    seen s = {0};
    ag_tape_set_grad_ready(t, record, &s);
    for (int step = 0; step < 3; step++) {
        assert_int_equal(ag_backward(t, net_loss(t, &m)), AG_OK);
        ag_tape_reset(t);
        assert_int_equal(s.n, 4);
        seen_clear(&s);
    }
    ag_tape_set_grad_ready(t, NULL, &s);
    assert_int_equal(ag_backward(t, net_loss(t, &m)), AG_OK);
    assert_int_equal(s.calls, 0);
    ag_tape_free(t);
    net_free(&m);
}

static void test_hook_reports_unreached_leaf(void **state)
{
    (void)state;
    net m = net_new();
    ag_tape *t = ag_tape_new();
    seen s = {0};
    ag_tape_set_grad_ready(t, record, &s);
    ag_tensor *unused = ag_mul_scalar(t, m.w2, 2.0); /* recorded, off the root's path */
    assert_non_null(unused);
    ag_tensor *loss = ag_sum(t, ag_linear(t, m.x, m.w1, NULL), AG_ALL, false);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    assert_int_equal(s.n, 2);
    int k = index_of(&s, m.w2);
    assert_true(k >= 0);
    assert_null(s.copy[k]);
    assert_null(ag_grad(m.w2));
    seen_clear(&s);
    ag_tape_free(t);
    net_free(&m);
}

static void test_hook_not_called_by_gradients(void **state)
{
    (void)state;
    net m = net_new();
    ag_tape *t = ag_tape_new();
    seen s = {0};
    ag_tape_set_grad_ready(t, record, &s);
    ag_tensor *g[2], *wrt[2] = {m.w1, m.w2};
    assert_int_equal(ag_gradients(t, net_loss(t, &m), NULL, 2, wrt, g, false), AG_OK);
    assert_int_equal(ag_gradients(t, net_loss(t, &m), NULL, 2, wrt, g, true), AG_OK);
    assert_int_equal(s.calls, 0);
    ag_tape_free(t);
    net_free(&m);
}

/* A leaf that scalar ops recorded before a tensor entry also feed: its
 * scalar part arrives after that entry, so the report waits for the end. */
static void test_hook_scalar_tape_reports_at_end(void **state)
{
    (void)state;
    net m = net_new();
    ag_tensor *sc = ag_tensor_full(AG_F32, 0, NULL, 1.5);
    ag_set_requires_grad(sc, true);
    ag_tape *t = ag_tape_new();
    seen s = {0};
    ag_tape_set_grad_ready(t, record, &s);
    ag_var v = ag_var_from_tensor(t, sc);
    ag_var u = ag_var_mul(t, v, v);
    ag_tensor *ut = ag_tensor_from_vars(t, AG_F32, 0, NULL, &u);
    ag_tensor *loss = ag_add(t, ut, ag_sum(t, ag_mul(t, m.w2, sc), AG_ALL, false));
    assert_int_equal(ag_backward(t, loss), AG_OK);
    int k = index_of(&s, sc);
    assert_true(k >= 0);
    tg_assert_same_bits(s.copy[k], ag_grad(sc));
    seen_clear(&s);
    ag_tape_free(t);
    ag_tensor_free(sc);
    net_free(&m);
}

/* Layers rebuilt by ag_checkpoint add into their weights during backward;
 * the first weight is also read after the segment (a penalty), so only
 * the checkpoint entry's listing of its weights keeps the report late
 * enough. */
static void test_hook_checkpointed_layers_report_after_rebuild(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    nn_params *p = nn_params_new();
    nn_mlp *mlp = nn_mlp_new(p, "mlp", 4, (int64_t[]){4, 8, 8, 2}, true, NN_ACT_TANH, &rng);
    assert_non_null(mlp);
    assert_int_equal(nn_mlp_set_checkpoint(mlp, 1), AG_OK);
    ag_tensor *x = ag_tensor_normal(AG_F32, 2, (int64_t[]){5, 4}, 0, 1, &rng);
    ag_tensor *w0 = mlp->layers[0]->weight;
    ag_tape *t = ag_tape_new();
    seen s = {0};
    ag_tape_set_grad_ready(t, record, &s);
    ag_tensor *loss = ag_add(t, ag_sum(t, nn_mlp_forward(t, mlp, x), AG_ALL, false),
                             ag_sum(t, ag_mul(t, w0, w0), AG_ALL, false));
    assert_int_equal(ag_backward(t, loss), AG_OK);
    int n;
    ag_tensor **w = nn_params_tensors(p, &n);
    assert_int_equal(s.n, n);
    for (int i = 0; i < n; i++)
        tg_assert_same_bits(s.copy[index_of(&s, w[i])], ag_grad(w[i]));
    seen_clear(&s);
    ag_tape_free(t);
    ag_tensor_free(x);
    nn_mlp_free(mlp);
    nn_params_free(p);
}

static void test_hook_null_tape(void **state)
{
    (void)state;
    ag_clear_last_error();
    ag_tape_set_grad_ready(NULL, record, NULL);
    assert_non_null(ag_last_error());
    assert_non_null(strstr(ag_last_error(), "ag_tape_set_grad_ready"));
}

static void count_calls(ag_tensor *const *leaves, int n, void *ctx)
{
    (void)leaves;
    *(int *)ctx += n;
}

/* The plan lives in the tape's arena: a step with the hook allocates
 * nothing once the first has run. */
static void test_hook_step_allocates_nothing(void **state)
{
    (void)state;
    tg_count_allocs();
    net m = net_new();
    ag_tape *t = ag_tape_new();
    int calls = 0;
    ag_tape_set_grad_ready(t, count_calls, &calls);
    for (int step = 0; step < 4; step++) {
        if (step == 2)
            tg_alloc_count = 0;
        assert_int_equal(ag_backward(t, net_loss(t, &m)), AG_OK);
        ag_tape_reset(t);
    }
    assert_int_equal(tg_alloc_count, 0);
    assert_int_equal(calls, 16);
    ag_tape_free(t);
    net_free(&m);
    ag_set_allocator(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_reports_each_leaf_once_when_final),
        cmocka_unit_test(test_hook_leaves_results_unchanged),
        cmocka_unit_test(test_hook_kept_across_reset_and_removed),
        cmocka_unit_test(test_hook_reports_unreached_leaf),
        cmocka_unit_test(test_hook_not_called_by_gradients),
        cmocka_unit_test(test_hook_scalar_tape_reports_at_end),
        cmocka_unit_test(test_hook_checkpointed_layers_report_after_rebuild),
        cmocka_unit_test(test_hook_null_tape),
        cmocka_unit_test(test_hook_step_allocates_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
