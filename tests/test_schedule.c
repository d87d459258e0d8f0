/* test_schedule.c — optim/'s learning-rate schedules and gradient clipping
 * against torch.optim.lr_scheduler and torch.nn.utils fixtures
 * (tests/reference/make_optim_fixtures.py), and their error paths. */
#include "test_util.h"

#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCHED_RTOL 1e-12

static ag_safetensors *g_sched, *g_clip;

static int fixtures_setup(void **state)
{
    (void)state;
    g_sched = tg_load_fixture("tests/reference/optim/schedules.safetensors");
    g_clip = tg_load_fixture("tests/reference/optim/clip.safetensors");
    return g_sched && g_clip ? 0 : -1;
}

static int fixtures_teardown(void **state)
{
    (void)state;
    ag_safetensors_free(g_sched);
    ag_safetensors_free(g_clip);
    return 0;
}

/* ---- schedules ------------------------------------------------------------- */

static optim *sched_optimizer(const char *name, ag_tensor *p)
{
    if (strstr(name, "nomom")) {
        optim_adagrad_opts a = optim_adagrad_defaults();
        a.lr = 0.05;
        return optim_adagrad(&p, 1, a);
    }
    if (strcmp(name, "step_gamma") == 0 || strcmp(name, "cosine_long") == 0 ||
        strcmp(name, "linear_down") == 0 || strcmp(name, "warmup_step") == 0 ||
        strcmp(name, "onecycle_adam") == 0) {
        optim_adam_opts a = optim_adam_defaults();
        a.lr = 0.01;
        return optim_adam(&p, 1, a);
    }
    optim_sgd_opts s = optim_sgd_defaults();
    s.lr = strcmp(name, "cosine_odd") == 0 ? 0.3 : 0.1;
    s.momentum = 0.9;
    return optim_sgd(&p, 1, s);
}

/* The schedules of make_optim_fixtures.py's SCHEDULES table. */
static optim_sched *sched_make(const char *name, optim *o)
{
#define IS(s) (strcmp(name, s) == 0)
    if (IS("step"))
        return optim_sched_step(o, 30, 0.1);
    if (IS("step_gamma"))
        return optim_sched_step(o, 7, 0.9);
    if (IS("multistep"))
        return optim_sched_multistep(o, (const int64_t[]){30, 80, 80, 150}, 4, 0.5);
    if (IS("exponential"))
        return optim_sched_exponential(o, 0.97);
    if (IS("cosine"))
        return optim_sched_cosine(o, 50, 0.001);
    if (IS("cosine_long"))
        return optim_sched_cosine(o, 200, 0);
    if (IS("cosine_odd"))
        return optim_sched_cosine(o, 7, 0.01);
    if (IS("linear"))
        return optim_sched_linear(o, 0.25, 1.0, 40);
    if (IS("linear_down"))
        return optim_sched_linear(o, 1.0, 0.1, 150);
    if (IS("warmup_cosine"))
        return optim_sched_warmup(o, 0.1, 10, optim_sched_cosine(o, 190, 1e-4));
    if (IS("warmup_step"))
        return optim_sched_warmup(o, 0.01, 20, optim_sched_step(o, 50, 0.5));
    if (IS("warmup_exponential"))
        return optim_sched_warmup(o, 0.5, 5, optim_sched_exponential(o, 0.98));
    if (IS("warmup_multistep"))
        return optim_sched_warmup(o, 0.2, 15,
                                  optim_sched_multistep(o, (const int64_t[]){0, 40, 100}, 3, 0.3));
    if (IS("warmup_onecycle"))
        return optim_sched_warmup(o, 0.5, 5,
                                  optim_sched_onecycle(o, optim_onecycle_defaults(0.2, 195)));
    if (IS("onecycle"))
        return optim_sched_onecycle(o, optim_onecycle_defaults(0.1, 200));
    if (IS("onecycle_adam")) {
        optim_onecycle_opts oc = optim_onecycle_defaults(0.01, 250);
        oc.pct_start = 0.25;
        oc.anneal = OPTIM_ANNEAL_LINEAR;
        oc.three_phase = true;
        oc.div_factor = 10;
        oc.final_div_factor = 100;
        oc.base_momentum = 0.8;
        oc.max_momentum = 0.9;
        return optim_sched_onecycle(o, oc);
    }
    if (IS("onecycle_nomom")) {
        optim_onecycle_opts oc = optim_onecycle_defaults(0.5, 200);
        oc.cycle_momentum = false;
        return optim_sched_onecycle(o, oc);
    }
#undef IS
    return NULL;
}

static void test_sched_matches_torch(void **state)
{
    (void)state;
    char buf[1024], *names[32];
    int n = tg_split_list(ag_safetensors_meta(g_sched, "schedules"), buf, sizeof buf, names, 32);
    assert_true(n >= 15);
    double worst = 0;
    int exact = 0, total = 0;
    for (int k = 0; k < n; k++) {
        ag_tensor *p = ag_tensor_new(AG_F64, 1, (const int64_t[]){2});
        optim *o = sched_optimizer(names[k], p);
        assert_non_null(o);
        optim_sched *s = sched_make(names[k], o);
        if (!s)
            print_message("%s: %s\n", names[k], ag_last_error());
        assert_non_null(s);
        const ag_tensor *want = tg_fixture(g_sched, "sched.%s.lr", names[k]);
        const ag_tensor *want_m = tg_fixture(g_sched, "sched.%s.momentum", names[k]);
        assert_int_equal(ag_numel(want), 201);
        for (int i = 0; i <= 200; i++) {
            if (i > 0) {
                assert_int_equal(optim_step(o), AG_OK); /* no gradient: skips */
                assert_int_equal(optim_sched_step_once(s), AG_OK);
            }
            double got = optim_sched_get_last_lr(s), w = ag_get(want, i);
            assert_true(got == optim_get_lr(o));
            double m = optim_get_momentum(o), wm = ag_get(want_m, i);
            if (!(m == wm || (isnan(m) && wm == 0)))
                print_message("%s step %d: momentum %.17g, torch %.17g\n", names[k], i, m, wm);
            assert_true(fabs(m - wm) <= SCHED_RTOL * fabs(wm) || (isnan(m) && wm == 0));
            double e = got == w ? 0 : fabs(got - w) / fabs(w);
            exact += got == w;
            total++;
            if (!(e <= SCHED_RTOL))
                print_message("%s step %d: lr %.17g, torch %.17g\n", names[k], i, got, w);
            assert_true(e <= SCHED_RTOL);
            if (e > worst)
                worst = e;
        }
        assert_int_equal(optim_sched_last_epoch(s), 200);
        optim_sched_free(s);
        optim_free(o);
        ag_tensor_free(p);
    }
    print_message("  %d schedules x 201 lrs: %d of %d bit-identical, max relative error %.3g\n",
                  n, exact, total, worst);
}

static void test_sched_onecycle_past_end_is_error(void **state)
{
    (void)state;
    ag_tensor *p = ag_tensor_new(AG_F64, 1, (const int64_t[]){1});
    optim *o = optim_sgd(&p, 1, optim_sgd_defaults());
    optim_sched *s = optim_sched_onecycle(o, optim_onecycle_defaults(0.1, 10));
    assert_non_null(s);
    /* SGD without momentum gets PyTorch's max_momentum at construction */
    assert_true(optim_get_momentum(o) > 0.9);
    for (int i = 0; i < 10; i++)
        assert_int_equal(optim_sched_step_once(s), AG_OK);
    double lr = optim_get_lr(o);
    assert_int_equal(optim_sched_step_once(s), AG_ERR_STATE);
    assert_non_null(strstr(ag_last_error(), "total_steps"));
    assert_true(optim_get_lr(o) == lr);
    assert_int_equal(optim_sched_last_epoch(s), 10);
    optim_sched_free(s);
    optim_free(o);
    ag_tensor_free(p);
}

static void test_sched_bad_arguments(void **state)
{
    (void)state;
    ag_tensor *p = ag_tensor_new(AG_F64, 1, (const int64_t[]){1});
    optim *o = optim_adagrad(&p, 1, optim_adagrad_defaults());
    assert_null(optim_sched_step(o, 0, 0.1));
    assert_non_null(strstr(ag_last_error(), "step_size"));
    assert_null(optim_sched_step(NULL, 1, 0.1));
    assert_null(optim_sched_cosine(o, 0, 0));
    assert_null(optim_sched_exponential(o, NAN));
    assert_null(optim_sched_multistep(o, NULL, 0, 0.1));
    assert_null(optim_sched_linear(o, 0, 1, 5));
    assert_null(optim_sched_warmup(o, 0.1, 5, NULL));
    assert_non_null(strstr(ag_last_error(), "NULL"));
    /* a failing warm-up frees the schedule it was given */
    assert_null(optim_sched_warmup(o, 2.0, 5, optim_sched_exponential(o, 0.9)));
    assert_non_null(strstr(ag_last_error(), "start_factor"));
    assert_null(optim_sched_onecycle(o, optim_onecycle_defaults(0.1, 10)));
    assert_non_null(strstr(ag_last_error(), "adagrad"));
    optim_onecycle_opts oc = optim_onecycle_defaults(0.1, 10);
    oc.pct_start = 1.5;
    oc.cycle_momentum = false;
    assert_null(optim_sched_onecycle(o, oc));
    assert_non_null(strstr(ag_last_error(), "pct_start"));
    assert_int_equal(optim_sched_step_once(NULL), AG_ERR_ARG);
    /* pct_start * total_steps == 1: a first phase without length, where
     * PyTorch divides by zero; the optimizer keeps its lr and momentum */
    optim_sgd_opts so = optim_sgd_defaults();
    so.lr = 0.5;
    optim *sgd = optim_sgd(&p, 1, so);
    oc = optim_onecycle_defaults(0.1, 10);
    oc.pct_start = 0.1;
    assert_null(optim_sched_onecycle(sgd, oc));
    assert_non_null(strstr(ag_last_error(), "phase"));
    assert_true(optim_get_lr(sgd) == 0.5 && optim_get_momentum(sgd) == 0);
    optim_free(sgd);
    optim_sched_free(NULL);
    optim_free(o);
    ag_tensor_free(p);
}

/* ---- clipping -------------------------------------------------------------- */

static int clip_params(ag_tensor **p)
{
    int n = atoi(ag_safetensors_meta(g_clip, "count"));
    for (int i = 0; i < n; i++) {
        const ag_tensor *g = tg_fixture(g_clip, "clip.grad%d", i);
        p[i] = ag_tensor_new(AG_F64, ag_ndim(g), ag_shape(g));
        tg_set_grad(p[i], g);
    }
    return n;
}

static void test_clip_grad_norm_matches_torch(void **state)
{
    (void)state;
    char buf[256], *cases[16];
    int nc = tg_split_list(ag_safetensors_meta(g_clip, "norm_cases"), buf, sizeof buf, cases, 16);
    assert_true(nc >= 5);
    double worst = 0;
    for (int c = 0; c < nc; c++) {
        ag_tensor *p[8];
        int n = clip_params(p);
        const ag_tensor *args = tg_fixture(g_clip, "clip.%s.args", cases[c]);
        double total = 0;
        assert_int_equal(optim_clip_grad_norm(p, n, ag_get(args, 0), ag_get(args, 1), &total),
                         AG_OK);
        double want = ag_get(tg_fixture(g_clip, "clip.%s.total", cases[c]), 0);
        double e = total == want ? 0 : fabs(total - want) / want;
        if (e > worst)
            worst = e;
        assert_true(e <= 1e-12);
        for (int i = 0; i < n; i++) {
            tg_check_rel(ag_grad(p[i]), tg_fixture(g_clip, "clip.%s.out%d", cases[c], i), 1e-12, &worst,
                        cases[c]);
            ag_tensor_free(p[i]);
        }
    }
    print_message("  clip_grad_norm: %d cases, max relative error %.3g\n", nc, worst);
}

static void test_clip_grad_value_matches_torch(void **state)
{
    (void)state;
    ag_tensor *p[8];
    int n = clip_params(p);
    assert_int_equal(optim_clip_grad_value(p, n, atof(ag_safetensors_meta(g_clip, "clip_value"))),
                     AG_OK);
    for (int i = 0; i < n; i++) {
        assert_tensor_close(ag_grad(p[i]), tg_fixture(g_clip, "clip.value.out%d", i), 0, 0);
        ag_tensor_free(p[i]);
    }
    assert_int_equal(optim_clip_grad_value(p, n, -1), AG_ERR_ARG);
}

static void test_clip_grad_norm_nonfinite_leaves_grads(void **state)
{
    (void)state;
    ag_tensor *p[2];
    p[0] = ag_tensor_new(AG_F32, 1, (const int64_t[]){3});
    p[1] = ag_tensor_new(AG_F64, 1, (const int64_t[]){2});
    ag_tensor *g0 = ag_tensor_from_f32(1, (const int64_t[]){3}, (const float[]){1, 2, 3});
    ag_tensor *g1 = ag_tensor_from_f64(1, (const int64_t[]){2}, (const double[]){4, 5});
    tg_set_grad(p[0], g0);
    tg_set_grad(p[1], g1);
    ag_set(ag_grad(p[1]), 1, INFINITY);
    double total = 0;
    assert_int_equal(optim_clip_grad_norm(p, 2, 1.0, 2.0, &total), AG_ERR_NUMERIC);
    assert_true(isinf(total));
    assert_non_null(strstr(ag_last_error(), "inf"));
    assert_tensor_close(ag_grad(p[0]), g0, 0, 0);
    assert_true(ag_get(ag_grad(p[1]), 0) == 4);
    ag_set(ag_grad(p[1]), 1, NAN);
    assert_int_equal(optim_clip_grad_norm(p, 2, 1.0, INFINITY, &total), AG_ERR_NUMERIC);
    assert_true(isnan(total));
    /* finite, mixed dtypes: norm sqrt(1+4+9+16+25) */
    ag_set(ag_grad(p[1]), 1, 5);
    assert_int_equal(optim_clip_grad_norm(p, 2, 1.0, 2.0, &total), AG_OK);
    assert_true(fabs(total - sqrt(55.0)) < 1e-12);
    assert_true(fabs(ag_get(ag_grad(p[1]), 0) - 4 / (sqrt(55.0) + 1e-6)) < 1e-12);
    /* no gradients at all: norm 0 */
    ag_tensor *q = ag_tensor_new(AG_F64, 1, (const int64_t[]){2});
    assert_int_equal(optim_clip_grad_norm(&q, 1, 1.0, 2.0, &total), AG_OK);
    assert_true(total == 0);
    assert_int_equal(optim_clip_grad_norm(p, 2, -1.0, 2.0, &total), AG_ERR_ARG);
    assert_int_equal(optim_clip_grad_norm(p, 2, 1.0, 0.0, &total), AG_ERR_ARG);
    assert_int_equal(optim_clip_grad_norm(NULL, 2, 1.0, 2.0, NULL), AG_ERR_ARG);
    ag_tensor_free(q);
    ag_tensor_free(g0);
    ag_tensor_free(g1);
    ag_tensor_free(p[0]);
    ag_tensor_free(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sched_onecycle_past_end_is_error),
        cmocka_unit_test(test_sched_bad_arguments),
        cmocka_unit_test(test_clip_grad_norm_nonfinite_leaves_grads),
    };
    const struct CMUnitTest fixture_tests[] = {
        cmocka_unit_test(test_sched_matches_torch),
        cmocka_unit_test(test_clip_grad_norm_matches_torch),
        cmocka_unit_test(test_clip_grad_value_matches_torch),
    };
    int failed = cmocka_run_group_tests_name("schedule", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("schedule_fixtures", fixture_tests, fixtures_setup,
                                          fixtures_teardown);
    return failed;
}
