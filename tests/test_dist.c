/* test_dist.c — dist/ under mpirun (meson runs it with 2 and with 4 ranks,
 * each over shared memory and over messages; argv[1] is the rank count it
 * expects, argv[2] "messages" for the second).  Every rank runs every test; each
 * can compute every other rank's inputs (they are seeded by rank), so it
 * checks its results against a one-process emulation bit for bit: sums in
 * rank order whatever the bucket size and whether buckets left during
 * backward, broadcasts, and mismatches between ranks turned into errors on
 * every rank instead of hangs. */
#include "test_util.h"

#include "dist.h"
#include "tapegrad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int g_expect_size = -1;
static bool g_messages; /* argv[2] "messages": every reducer with opts.no_shared_memory */

/* A reducer over the transport under test (both are byte for byte the same). */
static dist_reducer *reducer_new(ag_tensor *const *p, int n, dist_reducer_opts o)
{
    o.no_shared_memory = g_messages;
    return dist_reducer_new(p, n, &o);
}

/* ---- before dist_init ---- */

static void test_dist_before_init_is_one_process(void **state)
{
    (void)state;
    assert_int_equal(dist_rank(), 0);
    assert_int_equal(dist_size(), 1);
    double v = 1;
    assert_int_equal(dist_sum_f64(&v, 1), AG_ERR_STATE);
    assert_non_null(strstr(ag_last_error(), "dist_init"));
    assert_null(dist_reducer_new(NULL, 0, NULL));
    assert_int_equal(dist_finalize(), AG_OK);
    assert_int_equal(dist_init(&(int){0}, NULL), AG_ERR_ARG);
}

/* ---- the process group ---- */

static void test_dist_rank_and_size(void **state)
{
    (void)state;
    assert_int_equal(dist_size(), g_expect_size);
    assert_true(dist_rank() >= 0 && dist_rank() < dist_size());
    assert_int_equal(dist_init(NULL, NULL), AG_ERR_STATE); /* twice */
}

/* Data of rank q's copy of tensor k, element i: spread over many binades
 * so that the order of a sum shows in its bits. */
static double value(int q, int k, int64_t i)
{
    ag_rng r;
    ag_rng_seed(&r, (uint64_t)(q * 1000 + k) * 1000003u + (uint64_t)i);
    return ag_rng_normal(&r) * ldexp(1.0, (int)ag_rng_below(&r, 40) - 20);
}

static ag_tensor *filled(ag_dtype dt, int64_t n, int q, int k, bool grad)
{
    ag_tensor *t = ag_tensor_new(dt, 1, (int64_t[]){n});
    for (int64_t i = 0; i < n; i++)
        ag_set(t, i, value(q, k, i));
    ag_set_requires_grad(t, grad);
    return t;
}

static void test_dist_broadcast_copies_root(void **state)
{
    (void)state;
    const int me = dist_rank(), root = dist_size() - 1;
    ag_tensor *t[2] = {filled(AG_F32, 1000, me, 0, true), filled(AG_F64, 3, me, 1, true)};
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = ag_sum(tape, ag_mul(tape, t[0], t[0]), AG_ALL, false); /* before the write */
    assert_int_equal(dist_broadcast(t, 2, root), AG_OK);
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < ag_numel(t[k]); i++) {
            double want = value(root, k, i);
            assert_true(ag_get(t[k], i) == (k == 0 ? (double)(float)want : want));
        }
    /* the tensors changed hands on every rank but root: versions bumped */
    assert_int_equal(ag_backward(tape, y), me == root ? AG_OK : AG_ERR_STATE);
    ag_tape_free(tape);
    ag_tensor_free(t[0]);
    ag_tensor_free(t[1]);
}

static void test_dist_broadcast_mismatch_fails_everywhere(void **state)
{
    (void)state;
    const int me = dist_rank();
    ag_tensor *t = ag_tensor_new(AG_F32, 1, (int64_t[]){me == 1 ? 5 : 4});
    assert_int_equal(dist_broadcast(&t, 1, 0), AG_ERR_SHAPE);
    assert_non_null(strstr(ag_last_error(), "dist_broadcast: the ranks'"));
    /* a rank that refuses its own arguments takes the others with it */
    ag_tensor *arg = me == 0 ? NULL : t;
    assert_int_equal(dist_broadcast(&arg, 1, 0), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), me == 0 ? "t[0] is NULL" : "another rank"));
    assert_int_equal(dist_broadcast(&t, 1, dist_size()), AG_ERR_ARG);
    ag_tensor_free(t);
}

static void test_dist_sum_f64_in_rank_order(void **state)
{
    (void)state;
    const int me = dist_rank(), R = dist_size();
    /* 1e16, then halves, then -1e16: only rank order gives this sum */
    double v[2] = {me == 0 ? 1e16 : me == R - 1 ? -1e16 : 1.5, me};
    double want = 1e16, ranks = 0;
    for (int q = 1; q < R; q++) {
        want += q == R - 1 ? -1e16 : 1.5;
        ranks += q;
    }
    assert_int_equal(dist_sum_f64(v, 2), AG_OK);
    assert_true(v[0] == want);
    if (R > 2)
        assert_true(want != 1.5 * (R - 2)); /* another order differs */
    assert_true(v[1] == ranks);
    double w[3] = {0};
    assert_int_equal(dist_sum_f64(w, me == 0 ? 3 : 2), AG_ERR_SHAPE);
    assert_int_equal(dist_sum_f64(NULL, 1), AG_ERR_ARG);
}

/* ---- the reducer ---- */

enum { NP = 5 };
static const int64_t sizes[NP] = {1000, 7, 33333, 1, 4099};

typedef struct model {
    ag_dtype dt[NP];
    ag_tensor *p[NP];   /* parameters, the same on every rank */
    ag_tensor *g[NP];   /* this rank's gradients: backward of sum(p * g) */
} model;

/* All f32, all f64, or mixed (the last two f64). */
typedef enum { M_F32, M_F64, M_MIXED } model_kind;

static model model_new(model_kind kind)
{
    model m;
    for (int k = 0; k < NP; k++) {
        m.dt[k] = kind == M_F64 || (kind == M_MIXED && k >= 3) ? AG_F64 : AG_F32;
        m.p[k] = filled(m.dt[k], sizes[k], 99, k, true);
        m.g[k] = filled(m.dt[k], sizes[k], dist_rank(), k, false);
    }
    return m;
}

static void model_free(model *m)
{
    for (int k = 0; k < NP; k++) {
        ag_tensor_free(m->p[k]);
        ag_tensor_free(m->g[k]);
    }
}

/* Every parameter's gradient becomes this rank's g: one backward of
 * sum_k sum(p_k * g_k) per dtype (one root each: ops do not mix dtypes). */
static void backward(ag_tape *t, model *m)
{
    for (int d = 0; d < 2; d++) {
        ag_tensor *loss = NULL;
        for (int k = 0; k < NP; k++) {
            if (m->dt[k] != (d ? AG_F64 : AG_F32))
                continue;
            ag_zero_grad(m->p[k]);
            ag_tensor *s = ag_sum(t, ag_mul(t, m->p[k], m->g[k]), AG_ALL, false);
            loss = loss ? ag_add(t, loss, s) : s;
        }
        if (loss)
            assert_int_equal(ag_backward(t, loss), AG_OK);
    }
}

/* The one-process emulation: the ranks' gradients added in rank order in
 * the parameter's dtype (then divided by R). */
static void assert_rank_order_sum(const model *m, bool average)
{
    const int R = dist_size();
    for (int k = 0; k < NP; k++) {
        const ag_tensor *got = ag_grad(m->p[k]);
        for (int64_t i = 0; i < sizes[k]; i++) {
            if (m->dt[k] == AG_F32) {
                float s = (float)value(0, k, i);
                for (int q = 1; q < R; q++)
                    s += (float)value(q, k, i);
                if (average)
                    s /= (float)R;
                assert_true(((const float *)ag_data_const(got))[i] == s);
            } else {
                double s = value(0, k, i);
                for (int q = 1; q < R; q++)
                    s += value(q, k, i);
                if (average)
                    s /= R;
                assert_true(((const double *)ag_data_const(got))[i] == s);
            }
        }
    }
}

/* Two steps; hooked: buckets start from backward (one dtype, one backward). */
static void run_reducer(model_kind kind, size_t bucket_bytes, bool average, bool hooked)
{
    model m = model_new(kind);
    dist_reducer_opts o = {.bucket_bytes = bucket_bytes, .average = average};
    dist_reducer *r = reducer_new(m.p, NP, o);
    assert_non_null(r);
    ag_tape *t = ag_tape_new();
    for (int step = 0; step < 2; step++) {
        if (hooked)
            assert_int_equal(dist_reducer_begin(r, t), AG_OK);
        backward(t, &m);
        assert_int_equal(dist_reducer_wait(r), AG_OK);
        assert_rank_order_sum(&m, average);
        ag_tape_reset(t);
    }
    dist_reducer_stats st = dist_reducer_stats_get(r);
    assert_int_equal(st.steps, hooked ? 2 : 0);
    assert_int_equal(st.probe_steps, hooked ? 0 : 2);
    int64_t bytes = 0;
    for (int k = 0; k < NP; k++)
        bytes += sizes[k] * (int64_t)ag_dtype_size(m.dt[k]);
    assert_int_equal(st.bytes, bytes);
    if (hooked) /* every bucket is final before backward returns */
        assert_int_equal(st.early, 2 * st.buckets);
    ag_tape_free(t);
    dist_reducer_free(r);
    model_free(&m);
}

static void test_reducer_sums_in_rank_order_one_param_a_bucket(void **state)
{
    (void)state;
    run_reducer(M_F32, 1, false, true);
}

static void test_reducer_sums_in_rank_order_small_buckets(void **state)
{
    (void)state;
    run_reducer(M_F64, 4096, false, true);
}

static void test_reducer_sums_in_rank_order_one_bucket(void **state)
{
    (void)state;
    run_reducer(M_F32, (size_t)1 << 30, false, true);
}

static void test_reducer_without_hook_mixed_dtypes(void **state)
{
    (void)state;
    run_reducer(M_MIXED, 0, false, false);
}

static void test_reducer_average(void **state)
{
    (void)state;
    run_reducer(M_F32, 0, true, true);
    run_reducer(M_MIXED, 0, true, false);
}

static void test_reducer_buckets_from_the_last_parameter(void **state)
{
    (void)state;
    model m = model_new(M_MIXED);
    /* 4096 bytes: 4099 (f64) | 1 (f64) | 33333 | 7 + 1000 (f32) */
    dist_reducer *r = reducer_new(m.p, NP, (dist_reducer_opts){.bucket_bytes = 4096});
    assert_non_null(r);
    assert_int_equal(dist_reducer_stats_get(r).buckets, 4);
    dist_reducer_free(r);
    model_free(&m);
}

static void test_reducer_probe_steps(void **state)
{
    (void)state;
    model m = model_new(M_F32);
    dist_reducer *r = reducer_new(m.p, NP, (dist_reducer_opts){.probe_every = 3});
    ag_tape *t = ag_tape_new();
    for (int step = 0; step < 6; step++) {
        assert_int_equal(dist_reducer_begin(r, t), AG_OK);
        backward(t, &m);
        assert_int_equal(dist_reducer_wait(r), AG_OK);
        assert_rank_order_sum(&m, false);
        ag_tape_reset(t);
    }
    dist_reducer_stats st = dist_reducer_stats_get(r);
    assert_int_equal(st.steps, 4);
    assert_int_equal(st.probe_steps, 2);
    assert_true(st.wait_s >= 0 && st.probe_wait_s >= 0 && st.flight_s >= 0);
    ag_tape_free(t);
    dist_reducer_free(r);
    model_free(&m);
}

static void test_reducer_mismatch_fails_everywhere(void **state)
{
    (void)state;
    model m = model_new(M_F32);
    assert_null(dist_reducer_new(m.p, dist_rank() == 1 ? NP - 1 : NP, NULL));
    assert_non_null(strstr(ag_last_error(), "dist_reducer_new: the ranks'"));
    dist_reducer_opts o = {.bucket_bytes = dist_rank() == 0 ? 64 : 128};
    assert_null(dist_reducer_new(m.p, NP, &o));
    ag_tensor *twice[2] = {m.p[0], m.p[0]};
    assert_null(dist_reducer_new(twice, 2, NULL));
    assert_non_null(strstr(ag_last_error(), "the same tensor"));
    ag_tensor *nograd[1] = {m.g[0]};
    assert_null(dist_reducer_new(nograd, 1, NULL));
    assert_non_null(strstr(ag_last_error(), "params[0] does not require grad"));
    assert_null(dist_reducer_new(m.p, -1, NULL));
    model_free(&m);
}

static void test_reducer_misuse(void **state)
{
    (void)state;
    model m = model_new(M_F32);
    dist_reducer *r = reducer_new(m.p, NP, (dist_reducer_opts){0});
    ag_tape *t = ag_tape_new();
    assert_int_equal(dist_reducer_begin(NULL, t), AG_ERR_ARG);
    assert_int_equal(dist_reducer_begin(r, NULL), AG_ERR_ARG);
    assert_int_equal(dist_reducer_wait(NULL), AG_ERR_ARG);
    dist_reducer_stats st = dist_reducer_stats_get(NULL);
    assert_int_equal(st.buckets, 0);
    /* no gradient buffer anywhere yet: every rank says so */
    assert_int_equal(dist_reducer_wait(r), AG_ERR_STATE);
    assert_non_null(strstr(ag_last_error(), "no gradient buffer"));
    assert_int_equal(dist_reducer_begin(r, t), AG_OK);
    assert_int_equal(dist_reducer_begin(r, t), AG_ERR_STATE);
    backward(t, &m);
    assert_int_equal(dist_reducer_wait(r), AG_OK);
    assert_rank_order_sum(&m, false);
    ag_tape_free(t);
    dist_reducer_free(r);
    dist_reducer_free(NULL);
    model_free(&m);
}

/* ---- the sharded optimizer step (opts.update) ---- */

static ag_status adam_part(void *ctx, const int64_t *lo, const int64_t *hi)
{
    return optim_step_parts(ctx, lo, hi);
}

/* rank 0 refuses its part: the others must still finish the step */
static ag_status refuse_on_rank0(void *ctx, const int64_t *lo, const int64_t *hi)
{
    if (dist_rank() == 0) {
        ag_set_last_error("refused");
        return AG_ERR_NOMEM;
    }
    return adam_part(ctx, lo, hi);
}

/* ref's gradients := the rank-order sum of every rank's g (backward of
 * sum(ref * sum), whose gradient is 1 * sum, exact). */
static void reference_backward(ag_tape *t, ag_tensor **ref, const model *m)
{
    const int R = dist_size();
    for (int k = 0; k < NP; k++) {
        ag_tensor *sum = ag_tensor_new(m->dt[k], 1, (int64_t[]){sizes[k]});
        for (int64_t i = 0; i < sizes[k]; i++) {
            double s = m->dt[k] == AG_F32 ? (double)(float)value(0, k, i) : value(0, k, i);
            for (int q = 1; q < R; q++)
                s = m->dt[k] == AG_F32 ? (double)((float)s + (float)value(q, k, i))
                                       : s + value(q, k, i);
            ag_set(sum, i, s);
        }
        ag_zero_grad(ref[k]);
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, ref[k], sum), AG_ALL, false)),
                         AG_OK);
        ag_tape_reset(t);
        ag_tensor_free(sum);
    }
}

/* Three steps of Adam sharded over the ranks against three whole steps in
 * one process on the rank-order sums: the same parameters, and after
 * dist_reducer_gather the same state, bit for bit. */
static void run_sharded(model_kind kind, size_t bucket_bytes, bool hooked)
{
    model m = model_new(kind);
    ag_tensor *ref[NP];
    for (int k = 0; k < NP; k++)
        ref[k] = filled(m.dt[k], sizes[k], 99, k, true);
    optim_adam_opts ao = {.lr = 0.01, .weight_decay = 0.1};
    optim *opt = optim_adam(m.p, NP, ao), *ref_opt = optim_adam(ref, NP, ao);
    dist_reducer_opts o = {.bucket_bytes = bucket_bytes, .update = adam_part, .update_ctx = opt};
    dist_reducer *r = reducer_new(m.p, NP, o);
    assert_non_null(r);
    ag_tape *t = ag_tape_new();
    for (int step = 0; step < 3; step++) {
        if (hooked)
            assert_int_equal(dist_reducer_begin(r, t), AG_OK);
        backward(t, &m);
        assert_int_equal(dist_reducer_wait(r), AG_OK);
        ag_tape_reset(t);
        reference_backward(t, ref, &m);
        assert_int_equal(optim_step(ref_opt), AG_OK);
        for (int k = 0; k < NP; k++)
            tg_assert_same_bits(m.p[k], ref[k]);
    }
    assert_true(dist_reducer_stats_get(r).update_s > 0);
    const char *names[] = {"exp_avg", "exp_avg_sq"};
    for (int s = 0; s < 2; s++) {
        ag_tensor *buf[NP];
        for (int k = 0; k < NP; k++)
            buf[k] = optim_state_buffer(opt, m.p[k], names[s]);
        assert_int_equal(dist_reducer_gather(r, buf), AG_OK);
        for (int k = 0; k < NP; k++)
            tg_assert_same_bits(buf[k], optim_state(ref_opt, ref[k], names[s]));
    }
    ag_tape_free(t);
    dist_reducer_free(r);
    optim_free(opt);
    optim_free(ref_opt);
    for (int k = 0; k < NP; k++)
        ag_tensor_free(ref[k]);
    model_free(&m);
}

static void test_reducer_sharded_update_one_param_a_bucket(void **state)
{
    (void)state;
    run_sharded(M_F32, 1, true);
}

static void test_reducer_sharded_update_buckets_mixed(void **state)
{
    (void)state;
    run_sharded(M_MIXED, 4096, true);
    run_sharded(M_F64, 0, false);
    run_sharded(M_F32, (size_t)1 << 30, true);
}

static void test_reducer_sharded_update_errors(void **state)
{
    (void)state;
    model m = model_new(M_F32);
    optim *opt = optim_adam(m.p, NP, (optim_adam_opts){0});
    dist_reducer *plain = reducer_new(m.p, NP, (dist_reducer_opts){0});
    ag_tensor *other[NP];
    for (int k = 0; k < NP; k++)
        other[k] = filled(AG_F32, sizes[k], 1, k, false);
    assert_int_equal(dist_reducer_gather(plain, other), AG_ERR_STATE);
    assert_non_null(strstr(ag_last_error(), "no opts.update"));
    dist_reducer_free(plain);
    dist_reducer *r = reducer_new(
        m.p, NP, (dist_reducer_opts){.update = refuse_on_rank0, .update_ctx = opt});
    assert_int_equal(dist_reducer_gather(r, NULL), AG_ERR_ARG);
    /* one rank's wrong shape: an error on every rank, no hang */
    ag_tensor *wrong = filled(AG_F32, 3, 1, 0, false), *keep = other[1];
    if (dist_rank() == 1)
        other[1] = wrong;
    assert_int_equal(dist_reducer_gather(r, other), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), dist_rank() == 1 ? "t[1] differs" : "another rank"));
    other[1] = keep;
    ag_tape *t = ag_tape_new();
    assert_int_equal(dist_reducer_begin(r, t), AG_OK);
    assert_int_equal(dist_reducer_gather(r, other), AG_ERR_STATE);
    backward(t, &m);
    assert_int_equal(dist_reducer_wait(r), dist_rank() == 0 ? AG_ERR_NOMEM : AG_OK);
    assert_int_equal(optim_step_parts(opt, NULL, (int64_t[NP]){0}), AG_ERR_ARG);
    int64_t lo[NP] = {0}, hi[NP] = {0};
    hi[2] = sizes[2] + 1;
    assert_int_equal(optim_step_parts(opt, lo, hi), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "parameter #3"));
    ag_tape_free(t);
    dist_reducer_free(r);
    optim_free(opt);
    ag_tensor_free(wrong);
    for (int k = 0; k < NP; k++)
        ag_tensor_free(other[k]);
    model_free(&m);
}

/* Two reducers over the same parameters, in turns: with shared memory the
 * gradients move into whichever reducer runs (and, with update, the
 * parameters live in that reducer's memory); freeing one puts them back
 * into memory of their own, values kept. */
static void test_reducer_transport_and_storage(void **state)
{
    (void)state;
    model m = model_new(M_F32);
    optim *opt = optim_adam(m.p, NP, (optim_adam_opts){.lr = 0.01});
    dist_reducer *a = reducer_new(m.p, NP, (dist_reducer_opts){.bucket_bytes = 4096});
    dist_reducer *b = reducer_new(m.p, NP, (dist_reducer_opts){.bucket_bytes = 1, .average = 1});
    dist_reducer *z = reducer_new(
        m.p, NP, (dist_reducer_opts){.update = adam_part, .update_ctx = opt});
    assert_true(a && b && z);
    assert_true(dist_reducer_stats_get(a).shared_memory == !g_messages);
    assert_true(dist_reducer_stats_get(z).shared_memory == !g_messages);
    ag_tape *t = ag_tape_new();
    for (int step = 0; step < 3; step++) {
        dist_reducer *r = step == 1 ? b : a;
        assert_int_equal(dist_reducer_begin(r, t), AG_OK);
        backward(t, &m);
        assert_int_equal(dist_reducer_wait(r), AG_OK);
        assert_rank_order_sum(&m, step == 1);
        ag_tape_reset(t);
    }
    dist_reducer_free(a); /* the gradients were in a's memory */
    backward(t, &m);
    assert_int_equal(dist_reducer_wait(b), AG_OK);
    assert_rank_order_sum(&m, true);
    ag_tape_reset(t);
    dist_reducer_free(b);
    backward(t, &m);
    assert_int_equal(dist_reducer_wait(z), AG_OK);
    ag_tape_reset(t);
    ag_tensor *kept[NP];
    for (int k = 0; k < NP; k++)
        kept[k] = ag_tensor_clone(m.p[k]);
    dist_reducer_free(z); /* the parameters were in z's memory */
    for (int k = 0; k < NP; k++) {
        tg_assert_same_bits(m.p[k], kept[k]);
        ((float *)ag_data(m.p[k]))[0] = 1; /* writable, this rank's alone */
        ((float *)ag_data(ag_grad(m.p[k])))[0] = 2;
        ag_tensor_free(kept[k]);
    }
    ag_tape_free(t);
    optim_free(opt);
    model_free(&m);
}

static void test_reducer_step_allocates_nothing(void **state)
{
    (void)state;
    tg_count_allocs();
    model m = model_new(M_F32);
    dist_reducer *r = reducer_new(m.p, NP, (dist_reducer_opts){.bucket_bytes = 4096});
    ag_tape *t = ag_tape_new();
    for (int step = 0; step < 4; step++) {
        if (step == 2)
            tg_alloc_count = 0;
        assert_int_equal(dist_reducer_begin(r, t), AG_OK);
        backward(t, &m);
        assert_int_equal(dist_reducer_wait(r), AG_OK);
        double loss = 1;
        assert_int_equal(dist_sum_f64(&loss, 1), AG_OK);
        ag_tape_reset(t);
    }
    assert_int_equal(tg_alloc_count, 0);
    ag_tape_free(t);
    dist_reducer_free(r);
    model_free(&m);
    ag_set_allocator(NULL);
}

int main(int argc, char **argv)
{
    g_expect_size = argc > 1 ? atoi(argv[1]) : 2;
    g_messages = argc > 2 && strcmp(argv[2], "messages") == 0;
    const struct CMUnitTest before[] = {
        cmocka_unit_test(test_dist_before_init_is_one_process),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dist_rank_and_size),
        cmocka_unit_test(test_dist_broadcast_copies_root),
        cmocka_unit_test(test_dist_broadcast_mismatch_fails_everywhere),
        cmocka_unit_test(test_dist_sum_f64_in_rank_order),
        cmocka_unit_test(test_reducer_sums_in_rank_order_one_param_a_bucket),
        cmocka_unit_test(test_reducer_sums_in_rank_order_small_buckets),
        cmocka_unit_test(test_reducer_sums_in_rank_order_one_bucket),
        cmocka_unit_test(test_reducer_without_hook_mixed_dtypes),
        cmocka_unit_test(test_reducer_average),
        cmocka_unit_test(test_reducer_buckets_from_the_last_parameter),
        cmocka_unit_test(test_reducer_probe_steps),
        cmocka_unit_test(test_reducer_mismatch_fails_everywhere),
        cmocka_unit_test(test_reducer_misuse),
        cmocka_unit_test(test_reducer_sharded_update_one_param_a_bucket),
        cmocka_unit_test(test_reducer_sharded_update_buckets_mixed),
        cmocka_unit_test(test_reducer_sharded_update_errors),
        cmocka_unit_test(test_reducer_transport_and_storage),
        cmocka_unit_test(test_reducer_step_allocates_nothing),
    };
    int failed = cmocka_run_group_tests_name("before dist_init", before, NULL, NULL);
    if (dist_init(&argc, &argv) != AG_OK) {
        fprintf(stderr, "dist_init: %s\n", ag_last_error());
        return 1;
    }
    failed += cmocka_run_group_tests_name("dist", tests, NULL, NULL);
    if (dist_finalize() != AG_OK) {
        fprintf(stderr, "dist_finalize: %s\n", ag_last_error());
        return 1;
    }
    return failed ? 1 : 0;
}
