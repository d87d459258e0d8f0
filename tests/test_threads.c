/* test_threads.c — the thread pool (ag_parallel_for, ag_task_*): every
 * chunk runs exactly once for any thread count, nested calls run inline,
 * tasks run once (on the caller when no pool thread is there), errors are
 * reported; and the kernels that use the pool — large elementwise ops,
 * reductions, softmax, cross-entropy, the optimizer update, the batcher's
 * prefetch — give the same bits on 1, 2 and 3 threads. */
#include "test_util.h"

#include "tapegrad.h"
#include "autograd_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- the pool itself ---- */

typedef struct {
    atomic_int *hits;  /* one counter per element */
    atomic_int calls;
    int64_t chunk;
    bool bad_range;    /* a chunk not of the promised boundaries */
} count_ctx;

static void count_body(void *vc, int64_t lo, int64_t hi)
{
    count_ctx *c = vc;
    atomic_fetch_add(&c->calls, 1);
    if (lo % c->chunk != 0 || hi <= lo || hi - lo > c->chunk)
        c->bad_range = true;
    for (int64_t i = lo; i < hi; i++)
        atomic_fetch_add(&c->hits[i], 1);
}

static void test_parallel_for_every_chunk_once(void **state)
{
    (void)state;
    static const int64_t ns[] = {1, 7, 64, 1000, 100003};
    static const int64_t chunks[] = {1, 3, 64, 4096, 1 << 20};
    atomic_int *hits = malloc(100003 * sizeof *hits);
    assert_non_null(hits);
    for (int threads = 1; threads <= 4; threads++) {
        ag_set_num_threads(threads);
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t b = 0; b < sizeof chunks / sizeof chunks[0]; b++) {
                int64_t n = ns[a], chunk = chunks[b];
                for (int64_t i = 0; i < n; i++)
                    atomic_init(&hits[i], 0);
                count_ctx c = {.hits = hits, .chunk = chunk};
                atomic_init(&c.calls, 0);
                assert_int_equal(ag_parallel_for(n, chunk, count_body, &c), AG_OK);
                int64_t want_calls = (n + (chunk < n ? chunk : n) - 1) / (chunk < n ? chunk : n);
                assert_int_equal(atomic_load(&c.calls), want_calls);
                assert_false(c.bad_range);
                for (int64_t i = 0; i < n; i++)
                    assert_int_equal(atomic_load(&hits[i]), 1);
            }
    }
    ag_set_num_threads(0);
    free(hits);
}

/* A call from inside a chunk runs inline: all of it before the chunk
 * returns. */
typedef struct {
    atomic_int inner_done; /* elements the inner call covered */
    atomic_int bad;        /* outer elements whose inner call was not done */
} nest_ctx;

static void inner_body(void *vc, int64_t lo, int64_t hi)
{
    nest_ctx *c = vc;
    atomic_fetch_add(&c->inner_done, (int)(hi - lo));
}

static void outer_body(void *vc, int64_t lo, int64_t hi)
{
    nest_ctx *c = vc;
    for (int64_t i = lo; i < hi; i++) {
        nest_ctx mine = {0};
        ag_parallel_for(1000, 10, inner_body, &mine);
        if (atomic_load(&mine.inner_done) != 1000)
            atomic_fetch_add(&c->bad, 1);
    }
}

static void test_parallel_for_nested_runs_inline(void **state)
{
    (void)state;
    ag_set_num_threads(2);
    nest_ctx c = {0};
    assert_int_equal(ag_parallel_for(8, 1, outer_body, &c), AG_OK);
    assert_int_equal(atomic_load(&c.bad), 0);
    ag_set_num_threads(0);
}

static void test_parallel_for_errors(void **state)
{
    (void)state;
    count_ctx c = {.chunk = 1};
    assert_int_equal(ag_parallel_for(10, 1, NULL, &c), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "ag_parallel_for: fn is NULL"));
    assert_int_equal(ag_parallel_for(-1, 1, count_body, &c), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "n is negative"));
    assert_int_equal(ag_parallel_for(INT64_MAX, 1, count_body, &c), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "2^32 chunks"));
    assert_int_equal(atomic_load(&c.calls), 0);
    assert_int_equal(ag_parallel_for(0, 1, count_body, &c), AG_OK);
    assert_int_equal(atomic_load(&c.calls), 0);
}

static void bump(void *p) { atomic_fetch_add((atomic_int *)p, 1); }

/* Queued tasks run exactly once, by a pool thread or the waiter; with
 * one thread, or past the 4 slots, ag_task_start runs nothing and says
 * so, and the caller does the work. */
static void test_tasks_run_once(void **state)
{
    (void)state;
    atomic_int n[6];
    for (int threads = 1; threads <= 2; threads++) {
        ag_set_num_threads(threads);
        ag_task *t[6];
        for (int k = 0; k < 6; k++) {
            atomic_init(&n[k], 0);
            t[k] = ag_task_start(bump, &n[k]);
            if (!t[k])
                bump(&n[k]);
        }
        for (int k = 0; k < 6; k++)
            if (threads == 1 || k >= 4)
                assert_null(t[k]);
            else
                assert_non_null(t[k]);
        assert_non_null(strstr(ag_last_error(), "ag_task_start:"));
        for (int k = 0; k < 6; k++)
            ag_task_wait(t[k]);
        for (int k = 0; k < 6; k++)
            assert_int_equal(atomic_load(&n[k]), 1);
    }
    ag_task_wait(NULL);
    assert_null(ag_task_start(NULL, NULL));
    assert_non_null(strstr(ag_last_error(), "ag_task_start: fn is NULL"));
    ag_set_num_threads(0);
}

/* ---- the kernels: same bits on 1, 2 and 3 threads ---- */

static ag_tensor *filled(int ndim, const int64_t *shape, double lo, double hi, uint64_t seed)
{
    ag_tensor *t = ag_tensor_new(AG_F32, ndim, shape);
    float *d = ag_data(t);
    for (int64_t i = 0; i < ag_numel(t); i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        d[i] = (float)(lo + (hi - lo) * (double)(seed >> 11) / (double)(1ULL << 53));
    }
    ag_tensor_mark_modified(t);
    ag_set_requires_grad(t, true);
    return t;
}

/* Everything the large kernels make, as one flat float array: forward
 * values and the gradients of both inputs. */
enum { R = 1024, C = 300 }; /* 307200 elements: the pool's size */

static float *run_ops(int threads, size_t *len)
{
    ag_set_num_threads(threads);
    int64_t shape[2] = {R, C};
    ag_tensor *a = filled(2, shape, -3, 3, 1), *b = filled(2, shape, 0.5, 2, 2);
    ag_tape *t = ag_tape_new();
    int64_t *labels = malloc(R * sizeof *labels);
    for (int i = 0; i < R; i++)
        labels[i] = (i * 7) % C;
    ag_tensor *outs[] = {
        ag_gelu(t, a), ag_exp(t, a), ag_mul(t, a, b), ag_pow(t, b, a),
        ag_sum(t, a, AG_ALL, false), ag_sum(t, a, 1, false), ag_mean(t, b, 0, false),
        ag_logsumexp(t, a, 1, false), ag_logsumexp(t, b, 0, true),
        ag_variance(t, a, 1, false, 1), ag_variance(t, b, 0, false, 0),
        ag_softmax(t, a, 1), ag_log_softmax(t, a, 1),
        ag_cross_entropy_logits(t, a, labels, R, NULL),
    };
    int n_out = (int)(sizeof outs / sizeof outs[0]);
    ag_tensor *loss = NULL;
    for (int k = 0; k < n_out; k++) {
        ag_tensor *s = ag_sum(t, ag_mul_scalar(t, outs[k], 1.0 + k), AG_ALL, false);
        loss = loss ? ag_add(t, loss, s) : s;
    }
    assert_int_equal(ag_backward(t, loss), AG_OK);
    size_t total = 2 * (size_t)(R * C);
    for (int k = 0; k < n_out; k++)
        total += (size_t)ag_numel(outs[k]);
    float *all = malloc(total * sizeof *all), *w = all;
    for (int k = 0; k < n_out; k++) {
        memcpy(w, ag_data(outs[k]), (size_t)ag_numel(outs[k]) * sizeof *w);
        w += ag_numel(outs[k]);
    }
    memcpy(w, ag_data(ag_grad(a)), (size_t)(R * C) * sizeof *w);
    memcpy(w + R * C, ag_data(ag_grad(b)), (size_t)(R * C) * sizeof *w);
    *len = total;
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(b);
    free(labels);
    ag_set_num_threads(0);
    return all;
}

static void test_kernels_same_bits_any_thread_count(void **state)
{
    (void)state;
    size_t n1, n;
    float *one = run_ops(1, &n1);
    for (int threads = 2; threads <= 3; threads++) {
        float *got = run_ops(threads, &n);
        assert_int_equal(n, n1);
        assert_memory_equal(got, one, n * sizeof *got);
        free(got);
    }
    free(one);
}

/* Large permutes and slices run on the pool in pieces of their outermost
 * dim: values and gradients against index arithmetic done here. */
static void test_walks_in_pieces_move_every_element(void **state)
{
    (void)state;
    enum { A = 6, B = 70, H = 4, D = 48 }; /* slice and permute both over AG_PAR_MIN */
    for (int threads = 1; threads <= 3; threads++) {
        ag_set_num_threads(threads);
        ag_tensor *x = filled(4, (const int64_t[]){A, B, H, D}, -1, 1, 5);
        ag_tensor *w = filled(4, (const int64_t[]){A, H, B, D}, -1, 1, 6);
        ag_tape *t = ag_tape_new();
        ag_tensor *y = ag_permute(t, x, (const int[]){0, 2, 1, 3});    /* (A, H, B, D) */
        ag_tensor *z = ag_slice(t, x, 3, 8, 48, 1);                      /* (A, B, H, 40) */
        ag_tensor *loss = ag_add(t, ag_sum(t, ag_mul(t, y, w), AG_ALL, false),
                                 ag_sum(t, ag_mul_scalar(t, z, 3.0), AG_ALL, false));
        assert_int_equal(ag_backward(t, loss), AG_OK);
        const float *xd = ag_data(x), *wd = ag_data(w), *yd = ag_data(y), *zd = ag_data(z);
        const float *gx = ag_data(ag_grad(x));
        for (int a = 0; a < A; a++)
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < D; d++) {
                        int64_t xi = ((a * B + b) * H + h) * D + d;
                        int64_t yi = ((a * H + h) * B + b) * D + d;
                        assert_true(yd[yi] == xd[xi]);
                        if (d >= 8)
                            assert_true(zd[((a * B + b) * H + h) * 40 + d - 8] == xd[xi]);
                        assert_true(gx[xi] == wd[yi] + (d >= 8 ? 3.0f : 0.0f));
                    }
        ag_tape_free(t);
        ag_tensor_free(x);
        ag_tensor_free(w);
    }
    ag_set_num_threads(0);
}

/* Five Adam steps on a parameter of 300k elements (10 pool chunks). */
static float *adam_run(int threads)
{
    ag_set_num_threads(threads);
    int64_t shape[1] = {300000};
    ag_tensor *p = filled(1, shape, -1, 1, 3);
    optim *o = optim_adam(&p, 1, optim_adam_defaults());
    for (int s = 0; s < 5; s++) {
        ag_tape *t = ag_tape_new();
        assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, p, p), AG_ALL, false)), AG_OK);
        assert_int_equal(optim_step(o), AG_OK);
        optim_zero_grad(o);
        ag_tape_free(t);
    }
    float *out = malloc(300000 * sizeof *out);
    memcpy(out, ag_data(p), 300000 * sizeof *out);
    optim_free(o);
    ag_tensor_free(p);
    ag_set_num_threads(0);
    return out;
}

static void test_adam_same_bits_any_thread_count(void **state)
{
    (void)state;
    float *one = adam_run(1), *two = adam_run(2), *three = adam_run(3);
    assert_memory_equal(one, two, 300000 * sizeof *one);
    assert_memory_equal(one, three, 300000 * sizeof *one);
    free(one);
    free(two);
    free(three);
}

/* An epoch of batches (the prefetch on, at 2 threads) equals the batches
 * filled on the caller alone, labels included, over a restart. */
static void test_batcher_prefetch_same_batches(void **state)
{
    (void)state;
    enum { N = 700, F = 784, B = 128 };
    uint8_t *px = malloc(N * F);
    int64_t lab[N];
    for (int i = 0; i < N * F; i++)
        px[i] = (uint8_t)(i * 131 % 256);
    for (int i = 0; i < N; i++)
        lab[i] = i % 10;
    nn_dataset *ds;
    assert_int_equal(nn_dataset_from_u8(N, 2, (int64_t[]){28, 28}, px, lab, 10, &ds), AG_OK);
    float *seen[2];
    int64_t *seen_lab[2];
    for (int run = 0; run < 2; run++) {
        ag_set_num_threads(run ? 2 : 1);
        nn_batcher *it;
        assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = B}, &it), AG_OK);
        seen[run] = malloc(2 * N * F * sizeof(float));
        seen_lab[run] = malloc(2 * N * sizeof(int64_t));
        ag_tape *t = ag_tape_new();
        int64_t at = 0;
        for (int epoch = 0; epoch < 2; epoch++) {
            ag_rng rng;
            ag_rng_seed(&rng, 5 + (uint64_t)epoch);
            nn_batcher_start(it, &rng);
            ag_tensor *x;
            const int64_t *y;
            int64_t r;
            while ((r = nn_batcher_next(it, t, &x, &y)) > 0) {
                memcpy(seen[run] + at * F, ag_data(x), (size_t)(r * F) * sizeof(float));
                memcpy(seen_lab[run] + at, y, (size_t)r * sizeof(int64_t));
                at += r;
                ag_tape_reset(t);
            }
        }
        assert_int_equal(at, 2 * N);
        ag_tape_free(t);
        nn_batcher_free(it);
    }
    assert_memory_equal(seen[0], seen[1], 2 * N * F * sizeof(float));
    assert_memory_equal(seen_lab[0], seen_lab[1], 2 * N * sizeof(int64_t));
    for (int run = 0; run < 2; run++) {
        free(seen[run]);
        free(seen_lab[run]);
    }
    nn_dataset_free(ds);
    free(px);
    ag_set_num_threads(0);
}

/* The pool's threads run whatever the load (no fall-back to one thread),
 * so the parallel paths are the ones tested. */
static int no_adapt(void **state)
{
    (void)state;
    ag_pool_adapt(false);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_for_every_chunk_once),
        cmocka_unit_test(test_parallel_for_nested_runs_inline),
        cmocka_unit_test(test_parallel_for_errors),
        cmocka_unit_test(test_tasks_run_once),
        cmocka_unit_test(test_kernels_same_bits_any_thread_count),
        cmocka_unit_test(test_walks_in_pieces_move_every_element),
        cmocka_unit_test(test_adam_same_bits_any_thread_count),
        cmocka_unit_test(test_batcher_prefetch_same_batches),
    };
    return cmocka_run_group_tests(tests, no_adapt, NULL);
}
