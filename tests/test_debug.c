/* test_debug.c — graph export, text listing, anomaly mode, profiler. */
#include "test_util.h"

#include "ag_sites.h" /* every op below records its call site */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(FILE *f)
{
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_debug_dot_lists_every_entry(void **state)
{
    (void)state;
    int64_t sx[] = {4, 3}, sw[] = {3};
    ag_tensor *x = ag_tensor_ones(AG_F64, 2, sx), *w = ag_tensor_ones(AG_F64, 1, sw);
    ag_set_requires_grad(w, true);
    ag_tensor_set_name(w, "layer.weight");
    ag_tape *t = ag_tape_new();
    ag_tensor *loss = ag_mean(t, ag_tanh(t, ag_mul(t, x, w)), AG_ALL, false);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    FILE *f = tmpfile();
    assert_int_equal(ag_tape_dot(t, loss, f), AG_OK);
    char *dot = slurp(f);
    assert_int_equal(count(dot, "shape=ellipse"), (int)ag_tape_entries(t));
    assert_non_null(strstr(dot, "digraph"));
    assert_non_null(strstr(dot, "layer.weight"));
    assert_non_null(strstr(dot, "|grad|"));
    assert_non_null(strstr(dot, "tanh"));
    fclose(f);
    /* parse it with dot when graphviz is installed */
    if (system("command -v dot >/dev/null 2>&1") == 0) {
        char path[] = "/tmp/tg_dot_XXXXXX";
        int fd = mkstemp(path);
        FILE *g = fdopen(fd, "w");
        fputs(dot, g);
        fclose(g);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "dot -Tsvg %s -o /dev/null", path);
        assert_int_equal(system(cmd), 0);
        remove(path);
    }
    free(dot);
    f = tmpfile();
    assert_int_equal(ag_tape_print(t, f), AG_OK);
    char *txt = slurp(f);
    assert_non_null(strstr(txt, "3 entries"));
    assert_non_null(strstr(txt, "mul"));
    fclose(f);
    free(txt);
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(w);
}

static void test_debug_anomaly_forward_nan(void **state)
{
    (void)state;
    int64_t s[] = {3};
    double v[] = {1, -2, 3};
    ag_tensor *x = tg_f64(1, s, v);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    int line = __LINE__ + 1;
    ag_tensor *y = ag_log(t, x); /* log(-2) is NaN */
    assert_null(y);
    assert_int_equal(ag_tape_status(t), AG_ERR_NUMERIC);
    const char *msg = ag_tape_error(t);
    char where[64];
    snprintf(where, sizeof where, "test_debug.c:%d", line);
    assert_non_null(strstr(msg, "ag_log"));
    assert_non_null(strstr(msg, where));
    assert_non_null(strstr(msg, "forward"));
    assert_non_null(strstr(msg, "NaN"));
    assert_non_null(strstr(msg, "[-2, 3]"));
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_debug_anomaly_backward_inf(void **state)
{
    (void)state;
    int64_t s[] = {2};
    double v[] = {0, 4};
    ag_tensor *x = tg_f64(1, s, v);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    int line = __LINE__ + 1;
    ag_tensor *r = ag_sqrt(t, x); /* forward is fine: sqrt(0) = 0 */
    ag_tensor *loss = ag_sum(t, r, AG_ALL, false);
    assert_non_null(loss);
    assert_int_equal(ag_backward(t, loss), AG_ERR_NUMERIC); /* d sqrt at 0 is Inf */
    char where[64];
    snprintf(where, sizeof where, "test_debug.c:%d", line);
    assert_non_null(strstr(ag_tape_error(t), "ag_sqrt"));
    assert_non_null(strstr(ag_tape_error(t), where));
    assert_non_null(strstr(ag_tape_error(t), "backward"));
    assert_non_null(strstr(ag_tape_error(t), "Inf"));
    /* off by default: the same program records no error */
    ag_tape *plain = ag_tape_new();
    ag_tensor *l2 = ag_sum(plain, ag_sqrt(plain, x), AG_ALL, false);
    assert_int_equal(ag_backward(plain, l2), AG_OK);
    ag_tape_free(plain);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_debug_label_names_site(void **state)
{
    (void)state;
    ag_tensor *x = ag_tensor_full(AG_F32, 0, NULL, -1);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    ag_tape_label(t, "my sqrt");
    assert_null((ag_sqrt)(t, x)); /* the function itself: no macro */
    assert_non_null(strstr(ag_tape_error(t), "my sqrt"));
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_debug_profile_counts_calls(void **state)
{
    (void)state;
    int64_t s[] = {64, 64};
    ag_tensor *x = ag_tensor_ones(AG_F32, 2, s);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tape_set_profile(t, true);
    for (int i = 0; i < 3; i++) {
        ag_tensor *loss = ag_sum(t, ag_tanh(t, ag_mul(t, x, x)), AG_ALL, false);
        assert_int_equal(ag_backward(t, loss), AG_OK);
        ag_tape_reset(t);
    }
    FILE *f = tmpfile();
    assert_int_equal(ag_tape_profile(t, f), AG_OK);
    char *txt = slurp(f);
    assert_non_null(strstr(txt, "tanh"));
    assert_non_null(strstr(txt, "backward/forward"));
    double fw, bw;
    ag_tape_profile_totals(t, &fw, &bw);
    assert_true(fw > 0 && bw > 0);
    fclose(f);
    free(txt);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* loss = mean((x w - y)^2): a linear model */
static ag_tensor *linear_loss(ag_tape *t, ag_tensor **p, void *ctx)
{
    ag_tensor **data = ctx;
    ag_tensor *err = ag_sub(t, ag_sum(t, ag_mul(t, data[0], p[0]), 1, false), data[1]);
    return ag_mean(t, ag_mul(t, err, err), AG_ALL, false);
}

static void test_debug_explain_linear_model_predicts(void **state)
{
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 2);
    int64_t sx[] = {16, 4}, sw[] = {4}, sy[] = {16};
    ag_tensor *data[2] = {ag_tensor_normal(AG_F64, 2, sx, 0, 1, &r),
                          ag_tensor_normal(AG_F64, 1, sy, 0, 1, &r)};
    ag_tensor *w = ag_tensor_normal(AG_F64, 1, sw, 0, 1, &r);
    ag_set_requires_grad(w, true);
    ag_tensor_set_name(w, "w");
    ag_explain_item items[3];
    ag_explain_opts o = {.top = 3};
    FILE *f = tmpfile();
    assert_int_equal(ag_explain(linear_loss, data, &w, 1, &o, items, f), AG_OK);
    for (int i = 0; i < 3; i++) {
        assert_true(items[i].step[0] == 1e-4);
        assert_true(items[i].rel_err[0] < 0.01); /* within 1% at p = 1e-4 */
        if (i)
            assert_true(fabs(items[i].grad) <= fabs(items[i - 1].grad));
    }
    assert_null(ag_grad(w)); /* the caller's gradient is left alone */
    char *txt = slurp(f);
    assert_non_null(strstr(txt, "should"));
    assert_non_null(strstr(txt, "w["));
    assert_non_null(strstr(txt, "exactly zero"));
    free(txt);
    fclose(f);
    ag_tensor_free(data[0]);
    ag_tensor_free(data[1]);
    ag_tensor_free(w);
}

/* loss = tanh(3 w) near w = 1: saturated, so the linear picture breaks */
static ag_tensor *tanh_loss(ag_tape *t, ag_tensor **p, void *ctx)
{
    (void)ctx;
    return ag_sum(t, ag_tanh(t, ag_mul_scalar(t, p[0], 3.0)), AG_ALL, false);
}

static void test_debug_explain_saturated_tanh_breaks(void **state)
{
    (void)state;
    ag_tensor *w = ag_tensor_full(AG_F64, 0, NULL, 1.0);
    ag_set_requires_grad(w, true);
    ag_explain_item it;
    ag_explain_opts o = {.top = 1};
    assert_int_equal(ag_explain(tanh_loss, NULL, &w, 1, &o, &it, NULL), AG_OK);
    assert_true(it.rel_err[0] < 0.01);
    assert_true(it.breaks_at > 0 && it.breaks_at <= 0.1);
    assert_true(ag_get(w, 0) == 1.0); /* restored exactly */
    ag_tensor_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_debug_dot_lists_every_entry),
        cmocka_unit_test(test_debug_anomaly_forward_nan),
        cmocka_unit_test(test_debug_anomaly_backward_inf),
        cmocka_unit_test(test_debug_label_names_site),
        cmocka_unit_test(test_debug_profile_counts_calls),
        cmocka_unit_test(test_debug_explain_linear_model_predicts),
        cmocka_unit_test(test_debug_explain_saturated_tanh_breaks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
