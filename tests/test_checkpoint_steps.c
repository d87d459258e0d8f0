/* test_checkpoint_steps.c — binomial checkpointing of a recurrence
 * (ag_checkpoint_steps): a two-tensor recurrent cell with dropout, run
 * plainly and through ag_checkpoint_steps with many (steps, snapshots),
 * gives the same bits (loss, every gradient, ag_gradients); the number of
 * times the step runs is the binomial minimum, checked against a brute
 * force over all schedules; the peak tape bytes fall with the snapshots;
 * and each misuse has its message. */
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})

enum { B = 3, H = 4, I = 2, MAX_T = 64 };

/* h' = tanh(h W + x_i U + b) with dropout, c' = c + 0.5 h' */
typedef struct cell {
    ag_tensor *w, *u, *b, *x; /* x: [T * B, I], rows i*B .. i*B+B-1 for step i */
    ag_rng *rng;
    int64_t calls;
    int64_t h;                /* width (H unless set) */
} cell;

static ag_status cell_step(ag_tape *t, int64_t i, int n, ag_tensor *const *s, ag_tensor **next,
                           void *ctx)
{
    assert_int_equal(n, 2);
    cell *c = ctx;
    c->calls++;
    ag_tensor *xi = ag_slice(t, c->x, 0, i * B, (i + 1) * B, 1);
    ag_tensor *z = ag_add(t, ag_add(t, ag_matmul(t, s[0], c->w), ag_matmul(t, xi, c->u)), c->b);
    next[0] = ag_dropout(t, ag_tanh(t, z), 0.2, true, c->rng);
    next[1] = ag_add(t, s[1], ag_mul_scalar(t, next[0], 0.5));
    return ag_tape_status(t);
}

static ag_tensor *param(ag_dtype dt, int ndim, const int64_t *shape, ag_rng *rng)
{
    ag_tensor *p = ag_tensor_uniform(dt, ndim, shape, -0.8, 0.8, rng);
    ag_set_requires_grad(p, true);
    return p;
}

typedef struct run {
    unsigned char bytes[1 << 15];
    size_t n;
    int64_t calls;  /* step calls, forward and backward */
    size_t peak;
} run;

static void put(run *r, const ag_tensor *x)
{
    assert_non_null(x);
    size_t b = (size_t)ag_numel(x) * ag_dtype_size(ag_dtype_of(x));
    assert_true(r->n + b <= sizeof r->bytes);
    memcpy(r->bytes + r->n, ag_data_const(x), b);
    r->n += b;
}

typedef enum { BACKWARD, GRADIENTS } sweep;

/* T steps of the cell on fresh parameters; snapshots < 0: plainly. */
static void run_cell(ag_dtype dt, int64_t T, int snapshots, sweep how, int64_t h, run *r)
{
    ag_rng rng, drop;
    ag_rng_seed(&rng, 21);
    ag_rng_seed(&drop, 5);
    cell c = {param(dt, 2, S(h, h), &rng), param(dt, 2, S(I, h), &rng), param(dt, 1, S(h), &rng),
              param(dt, 2, S(T * B, I), &rng), &drop, 0, h};
    ag_tensor *s0[2] = {param(dt, 2, S(B, h), &rng), param(dt, 2, S(B, h), &rng)};
    ag_tape *t = ag_tape_new();
    ag_tape_set_checkpoint_rng(t, &drop);
    ag_tensor *s[2] = {s0[0], s0[1]};
    if (snapshots < 0)
        for (int64_t i = 0; i < T; i++)
            assert_int_equal(cell_step(t, i, 2, s, s, &c), AG_OK);
    else
        assert_int_equal(ag_checkpoint_steps(t, cell_step, &c, T, snapshots, 2, s, s), AG_OK);
    ag_tensor *loss = ag_sum(t, ag_mul(t, ag_add(t, s[0], s[1]), s[1]), AG_ALL, false);
    ag_tensor *all[6] = {c.w, c.u, c.b, c.x, s0[0], s0[1]}, *g[6];
    r->n = 0;
    put(r, loss);
    if (how == BACKWARD) {
        assert_int_equal(ag_backward(t, loss), AG_OK);
        for (int k = 0; k < 6; k++)
            put(r, ag_grad(all[k]));
    } else { /* two of them, by the fast sweep */
        ag_tensor *wrt[2] = {c.u, s0[1]};
        assert_int_equal(ag_gradients(t, loss, NULL, 2, wrt, g, false), AG_OK);
        put(r, g[0]);
        put(r, g[1]);
    }
    memcpy(r->bytes + r->n, &drop, sizeof drop); /* the caller's stream goes on as plainly */
    r->n += sizeof drop;
    r->calls = c.calls;
    r->peak = ag_tape_bytes_peak(t);
    ag_tape_free(t);
    for (int k = 0; k < 6; k++)
        ag_tensor_free(all[k]);
}

static void assert_same(const run *a, const run *b, const char *what, int64_t T, int s)
{
    assert_int_equal(a->n, b->n);
    if (memcmp(a->bytes, b->bytes, a->n) != 0)
        fail_msg("%s, T %lld, snapshots %d: differs from the plain recording", what,
                 (long long)T, s);
}

/* The fewest forward steps of any schedule reversing l steps from a
 * stored state with f free slots, over every split (brute force). */
static int64_t fewest(int64_t l, int f)
{
    static int64_t memo[MAX_T + 1][MAX_T + 1];
    if (l <= 1)
        return 0;
    if (f == 0)
        return l * (l - 1) / 2;
    if (memo[l][f])
        return memo[l][f] - 1;
    int64_t best = INT64_MAX;
    for (int64_t k = 1; k < l; k++) {
        int64_t c = k + fewest(l - k, f - 1) + fewest(k, f);
        best = c < best ? c : best;
    }
    memo[l][f] = best + 1;
    return best;
}

static void test_steps_bitwise_and_binomial(void **state)
{
    (void)state;
    static const struct {
        int64_t T;
        int s;
    } cases[] = {{1, 0}, {2, 0}, {7, 0}, {7, 1}, {10, 2}, {33, 3}, {40, 5}, {12, 11}, {9, 30}};
    static run plain, ckpt;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t T = cases[k].T;
        int s = cases[k].s;
        for (ag_dtype dt = AG_F32; dt <= AG_F64; dt++) {
            run_cell(dt, T, -1, BACKWARD, H, &plain);
            run_cell(dt, T, s, BACKWARD, H, &ckpt);
            assert_same(&ckpt, &plain, dt == AG_F32 ? "f32" : "f64", T, s);
            /* forward, the turns, and the fewest re-runs any schedule has */
            assert_int_equal(ckpt.calls, 2 * T + fewest(T, s < MAX_T ? s : MAX_T));
        }
        run_cell(AG_F64, T, -1, GRADIENTS, H, &plain);
        run_cell(AG_F64, T, s, GRADIENTS, H, &ckpt);
        assert_same(&ckpt, &plain, "ag_gradients", T, s);
    }
}

/* Fewer snapshots, less tape; all of them, still less than plainly. */
static void test_steps_peak(void **state)
{
    (void)state;
    static run plain, few, many;
    run_cell(AG_F32, MAX_T, -1, BACKWARD, 64, &plain);
    run_cell(AG_F32, MAX_T, 2, BACKWARD, 64, &few);
    run_cell(AG_F32, MAX_T, MAX_T, BACKWARD, 64, &many);
    print_message("peak tape bytes, 64 steps of width 64: plain %zu, 2 snapshots %zu, "
                  "64 snapshots %zu\n", plain.peak, few.peak, many.peak);
    assert_true(few.peak < plain.peak / 8);
    assert_true(few.peak < many.peak);
    assert_true(many.peak < plain.peak);
}

/* ---- misuse ---- */

typedef enum { GOOD, SHAPE, UNREGISTERED, FAILS } how;

static ag_status bad_step(ag_tape *t, int64_t i, int n, ag_tensor *const *s, ag_tensor **next,
                          void *ctx)
{
    (void)i;
    (void)n;
    static ag_rng stray = {{1, 2, 3, 4}};
    switch (*(how *)ctx) {
    case GOOD: next[0] = ag_tanh(t, s[0]); break;
    case SHAPE: next[0] = ag_sum(t, s[0], 0, false); break;
    case UNREGISTERED: next[0] = ag_dropout(t, s[0], 0.5, true, &stray); break;
    case FAILS: return AG_ERR_NUMERIC;
    }
    return ag_tape_status(t);
}

static void expect(ag_checkpoint_step_fn fn, how h, int64_t T, int snaps, int n, bool with_state,
                   ag_status st, const char *msg)
{
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tensor *x = param(AG_F64, 2, S(2, 3), &rng), *out = x;
    ag_tape *t = ag_tape_new();
    assert_int_equal(ag_checkpoint_steps(t, fn, &h, T, snaps, n, with_state ? &x : NULL, &out),
                     st);
    tg_assert_tape_error(t, st, msg);
    if (n > 0)
        assert_null(out);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_steps_errors(void **state)
{
    (void)state;
    expect(NULL, GOOD, 3, 1, 1, true, AG_ERR_ARG, "ag_checkpoint_steps: step is NULL");
    expect(bad_step, GOOD, 0, 1, 1, true, AG_ERR_ARG, "ag_checkpoint_steps: n_steps is 0");
    expect(bad_step, GOOD, 3, -1, 1, true, AG_ERR_ARG, "ag_checkpoint_steps: snapshots is -1");
    expect(bad_step, GOOD, 3, 1, 0, true, AG_ERR_ARG, "ag_checkpoint_steps: n is 0");
    expect(bad_step, GOOD, 3, 1, 1, false, AG_ERR_NULL, "ag_checkpoint_steps: state is NULL");
    expect(bad_step, SHAPE, 3, 1, 1, true, AG_ERR_SHAPE,
           "ag_checkpoint_steps: tensor #1 of the state step 0 made is [3], the first state's "
           "is [2,3]");
    expect(bad_step, FAILS, 3, 1, 1, true, AG_ERR_NUMERIC,
           "ag_checkpoint_steps: step 0 returned NaN or Inf");
    /* caught in backward: a generator not registered; create_graph */
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    ag_tensor *x = param(AG_F64, 2, S(2, 3), &rng), *y;
    for (int c = 0; c < 2; c++) {
        how h = c ? GOOD : UNREGISTERED;
        ag_tape *t = ag_tape_new();
        assert_int_equal(ag_checkpoint_steps(t, bad_step, &h, 5, 1, 1, &x, &y), AG_OK);
        ag_tensor *loss = ag_sum(t, y, AG_ALL, false), *g;
        if (c) {
            assert_int_equal(ag_gradients(t, loss, NULL, 1, &x, &g, true), AG_ERR_STATE);
            tg_assert_tape_error(t, AG_ERR_STATE, "op checkpoint_steps has no recorded");
        } else {
            assert_int_equal(ag_backward(t, loss), AG_ERR_STATE);
            tg_assert_tape_error(t, AG_ERR_STATE, "made another state when run again in "
                                 "backward");
        }
        ag_tape_free(t);
    }
    ag_tensor_free(x);
    assert_int_equal(ag_checkpoint_steps(NULL, bad_step, NULL, 1, 0, 1, &x, &y), AG_ERR_ARG);
    assert_string_equal(ag_last_error(), "ag_checkpoint_steps: tape is NULL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steps_bitwise_and_binomial),
        cmocka_unit_test(test_steps_peak),
        cmocka_unit_test(test_steps_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
