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

/* ---- anomaly mode: passed-through Inf is not an anomaly (issue 13) ---- */

/* The standard causal attention: scores masked with a -inf constant by
 * ag_where, then a softmax along the last axis.  Forward and backward in
 * anomaly mode must pass and give the same gradients as without it. */
static ag_status causal_attention(bool anomaly, ag_tensor *q, ag_tensor *k, ag_tensor *v,
                                  ag_tensor *mask, ag_tensor *neg_inf, double *gq)
{
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, anomaly);
    ag_zero_grad(q);
    ag_tensor *scores = ag_matmul(t, q, ag_transpose(t, k, 0, 1));
    ag_tensor *att = ag_softmax(t, ag_where(t, mask, scores, neg_inf), -1);
    ag_tensor *y = ag_matmul(t, att, v);
    ag_tensor *loss = ag_sum(t, ag_mul(t, y, y), AG_ALL, false);
    ag_status st = loss ? ag_backward(t, loss) : ag_tape_status(t);
    if (st != AG_OK)
        print_message("%s\n", ag_tape_error(t));
    for (int64_t i = 0; st == AG_OK && i < ag_numel(q); i++)
        gq[i] = ag_get(ag_grad(q), i);
    ag_tape_free(t);
    return st;
}

static void test_debug_anomaly_causal_mask_passes(void **state)
{
    (void)state;
    enum { T = 5, D = 3 };
    ag_rng r;
    ag_rng_seed(&r, 7);
    int64_t sq[] = {T, D}, sm[] = {T, T};
    ag_tensor *q = ag_tensor_normal(AG_F32, 2, sq, 0, 1, &r);
    ag_tensor *k = ag_tensor_normal(AG_F32, 2, sq, 0, 1, &r);
    ag_tensor *v = ag_tensor_normal(AG_F32, 2, sq, 0, 1, &r);
    ag_tensor *mask = ag_tensor_new(AG_F32, 2, sm);
    for (int i = 0; i < T; i++)
        for (int j = 0; j <= i; j++)
            ag_set(mask, i * T + j, 1.0);
    ag_tensor *neg_inf = ag_tensor_full(AG_F32, 0, NULL, -INFINITY);
    ag_set_requires_grad(q, true);
    ag_set_requires_grad(k, true);
    double g_plain[T * D], g_anomaly[T * D];
    assert_int_equal(causal_attention(false, q, k, v, mask, neg_inf, g_plain), AG_OK);
    assert_int_equal(causal_attention(true, q, k, v, mask, neg_inf, g_anomaly), AG_OK);
    for (int i = 0; i < T * D; i++) {
        assert_true(isfinite(g_anomaly[i]));
        assert_true(g_anomaly[i] == g_plain[i]);
    }
    ag_tensor *all[] = {q, k, v, mask, neg_inf};
    for (int i = 0; i < 5; i++)
        ag_tensor_free(all[i]);
}

/* Each op passes a ±inf of its inputs through (or absorbs it) without an
 * anomaly, whatever sign it comes out with. */
static void test_debug_anomaly_passthrough_inf_ops(void **state)
{
    (void)state;
    int64_t s[] = {2, 3}, sb[] = {3}, sp[] = {2};
    double xv[] = {1, -INFINITY, 2, -INFINITY, 0.5, -INFINITY}, bv[] = {1, 2, -3};
    double pv[] = {INFINITY, 4};
    ag_tensor *x = tg_f64(2, s, xv), *bias = tg_f64(1, sb, bv), *p = tg_f64(1, sp, pv);
    ag_tensor *neg_inf = ag_tensor_full(AG_F64, 0, NULL, -INFINITY);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    assert_non_null(ag_add(t, x, bias));               /* -inf + finite, broadcast */
    assert_non_null(ag_sub(t, bias, x));               /* comes out +inf */
    assert_non_null(ag_neg(t, x));
    assert_non_null(ag_mul_scalar(t, x, -2.0));
    assert_non_null(ag_maximum(t, x, neg_inf));
    assert_non_null(ag_minimum(t, bias, neg_inf));     /* the Inf is the constant's */
    assert_non_null(ag_max(t, ag_transpose(t, x, 0, 1), 1, false)); /* a row of -inf */
    assert_non_null(ag_sum(t, x, 0, false));            /* reduction: any input Inf */
    assert_non_null(ag_exp(t, p));                      /* exp(inf) = inf */
    assert_non_null(ag_sqrt(t, p));
    assert_non_null(ag_log(t, p));
    assert_non_null(ag_log_softmax(t, ag_where(t, ag_abs(t, x), x, neg_inf), -1));
    assert_non_null(ag_softmax(t, x, -1));              /* absorbed: exp(-inf) = 0 */
    assert_non_null(ag_add_scalar(t, bias, -INFINITY)); /* the scalar is the Inf */
    assert_non_null(ag_clamp(t, x, -1, INFINITY));
    if (ag_tape_status(t) != AG_OK)
        fail_msg("%s", ag_tape_error(t));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(bias);
    ag_tensor_free(p);
    ag_tensor_free(neg_inf);
}

static void expect_forward_anomaly(ag_tape *t, ag_tensor *y, const char *op, const char *what)
{
    assert_null(y);
    assert_int_equal(ag_tape_status(t), AG_ERR_NUMERIC);
    const char *msg = ag_tape_error(t);
    if (!strstr(msg, op) || !strstr(msg, what) || !strstr(msg, "forward"))
        fail_msg("expected %s and \"%s\" in: %s", op, what, msg);
    ag_tape_reset(t);
}

/* An Inf an op makes from finite values is still an anomaly, also next to
 * an Inf it passes through, and so is a NaN, even one passed through. */
static void test_debug_anomaly_created_inf_and_nan_caught(void **state)
{
    (void)state;
    int64_t s2[] = {2}, s23[] = {2, 3}, s3[] = {3};
    double big[] = {INFINITY, 1000}, zero[] = {0, 1}, huge[] = {1e308, 1e308};
    double m[] = {1, 2, 3, 4, 1e308, 6}, col[] = {INFINITY, 1e308, 0};
    ag_tensor *xb = tg_f64(1, s2, big), *xz = tg_f64(1, s2, zero), *xh = tg_f64(1, s2, huge);
    ag_tensor *xm = tg_f64(2, s23, m), *xc = tg_f64(1, s3, col);
    ag_tensor *nan = ag_tensor_full(AG_F64, 0, NULL, NAN);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    /* exp(inf) passes, exp(1000) overflows: element 1 is named */
    expect_forward_anomaly(t, ag_exp(t, xb), "ag_exp", "Inf from finite values (element 1 ");
    expect_forward_anomaly(t, ag_log(t, xz), "ag_log", "element 0 ");   /* log(0) */
    expect_forward_anomaly(t, ag_div(t, xz, xz), "ag_div", "NaN");      /* 0/0 */
    expect_forward_anomaly(t, ag_div(t, xh, xz), "ag_div", "element 0 "); /* 1e308/0 */
    expect_forward_anomaly(t, ag_sum(t, xh, AG_ALL, false), "ag_sum", "Inf");
    /* broadcast: column 0 passes the inf of xc, 1e308 + 1e308 overflows */
    expect_forward_anomaly(t, ag_add(t, xm, xc), "ag_add", "element 4 ");
    /* a NaN passed through is still one */
    expect_forward_anomaly(t, ag_where(t, xz, xz, nan), "ag_where", "NaN (element 0 ");
    ag_tape_free(t);
    ag_tensor *all[] = {xb, xz, xh, xm, xc, nan};
    for (int i = 0; i < 6; i++)
        ag_tensor_free(all[i]);
}

/* Backward: a gradient Inf that comes from an infinite input is passed
 * through (also when a later entry adds a finite gradient to it); a NaN
 * made from it (0 * inf, PyTorch's where trap) is caught. */
static void test_debug_anomaly_backward_passthrough_and_nan(void **state)
{
    (void)state;
    int64_t s[] = {3};
    double xv[] = {1, 2, 3}, keep[] = {1, 0, 1};
    ag_tensor *x = tg_f64(1, s, xv), *mask = tg_f64(1, s, keep);
    ag_tensor *c = ag_tensor_full(AG_F64, 0, NULL, -INFINITY);
    ag_tensor *zero = ag_tensor_full(AG_F64, 0, NULL, 0);
    ag_set_requires_grad(x, true);
    ag_tape *t = ag_tape_new();
    ag_tape_set_anomaly(t, true);
    /* loss = sum(x) + sum(x * -inf): d/dx = 1 - inf = -inf, passed through;
     * sum(x) is recorded first, so its finite gradient lands on the -inf */
    ag_tensor *l1 = ag_sum(t, x, AG_ALL, false);
    ag_tensor *l2 = ag_sum(t, ag_mul(t, x, c), AG_ALL, false);
    ag_tensor *loss = ag_add(t, l1, l2);
    assert_non_null(loss);
    assert_int_equal(ag_backward(t, loss), AG_OK);
    for (int i = 0; i < 3; i++)
        assert_true(ag_get(ag_grad(x), i) == -INFINITY);
    /* where(mask, x * -inf, 0): the masked-out gradient is 0 * -inf = NaN */
    ag_tape_reset(t);
    ag_zero_grad(x);
    loss = ag_sum(t, ag_where(t, mask, ag_mul(t, x, c), zero), AG_ALL, false);
    assert_non_null(loss);
    assert_int_equal(ag_backward(t, loss), AG_ERR_NUMERIC);
    const char *msg = ag_tape_error(t);
    assert_non_null(strstr(msg, "ag_mul"));
    assert_non_null(strstr(msg, "backward produced NaN"));
    assert_non_null(strstr(msg, "the gradient of input #1"));
    ag_tape_free(t);
    ag_tensor *all[] = {x, mask, c, zero};
    for (int i = 0; i < 4; i++)
        ag_tensor_free(all[i]);
}

/* The "tape bytes" of an op row, read back from the printed table. */
static long long profile_bytes(const char *txt, const char *op)
{
    char want[32];
    snprintf(want, sizeof want, "\n%s ", op);
    const char *row = strstr(txt, want);
    assert_non_null(row);
    char name[32];
    long long calls, bytes;
    double fw, bw;
    assert_int_equal(sscanf(row + 1, "%31s %lld %lf %lf %lld", name, &calls, &fw, &bw, &bytes),
                     5);
    return bytes;
}

/* Each op counts what it puts on the tape: at least its output's data. */
static void test_debug_profile_counts_tape_bytes(void **state)
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
    long long out = 64 * 64 * 4; /* one f32 output */
    long long tanh_b = profile_bytes(txt, "tanh"), mul_b = profile_bytes(txt, "mul");
    long long sum_b = profile_bytes(txt, "sum");
    if (!(tanh_b >= 3 * out && tanh_b <= 3 * (out + 1024)) ||
        !(mul_b >= 3 * out && mul_b <= 3 * (out + 1024)) || !(sum_b > 0 && sum_b <= 3 * 1024))
        fail_msg("tape bytes: tanh %lld, mul %lld, sum %lld\n%s", tanh_b, mul_b, sum_b, txt);
    fclose(f);
    free(txt);
    ag_tape_free(t);
    ag_tensor_free(x);
}

/* ---- gradcheck's report ---- */

/* z = c x (elementwise) with a backward off by a known relative amount
 * per element, all within gradcheck's tolerance (atol 1e-5 + rtol 1e-3
 * |n|): element 1 (4e-4 off where the tolerance is 5.1e-4) is the least
 * accurate.  With ctx non-NULL the backward also leaks 2e-5 of dL/dz_1
 * into dL/dx_0: an off-diagonal pair, numeric 0, that fails (tolerance
 * 1e-5) with a smaller error than element 1's.  The differences of a
 * linear function are exact to ~1e-10. */
static const double scale_c[4] = {2, 0.5, 2, 2}, off_by[4] = {1e-5, 8e-4, 2e-5, 4e-5};

static void scale_fwd(ag_tensor *const *in, int n, ag_tensor *out, void *ctx)
{
    (void)n, (void)ctx;
    for (int64_t i = 0; i < ag_numel(out); i++)
        ag_set(out, i, scale_c[i] * ag_get(in[0], i));
}

static void scale_bwd(ag_tensor *const *in, int n, const ag_tensor *out, const ag_tensor *gout,
                      ag_tensor *const *gin, void *ctx)
{
    (void)in, (void)n;
    for (int64_t i = 0; gin[0] && i < ag_numel(out); i++) {
        double d = ag_get(gout, i) * scale_c[i] * (1 + off_by[i]);
        if (ctx && i == 0)
            d += 2e-5 * ag_get(gout, 1);
        ag_set(gin[0], i, ag_get(gin[0], i) + d);
    }
}

static const ag_custom_op scale_op = {.name = "scale", .forward = scale_fwd,
                                      .backward = scale_bwd};

static ag_tensor *scale_fn(ag_tape *t, ag_tensor **in, void *ctx)
{
    return ag_custom(t, &scale_op, in, 1, ag_ndim(in[0]), ag_shape(in[0]), ctx);
}

/* The Jacobian is diagonal, so 12 of the 16 pairs are exact zeros; the
 * worst entry of the passing report is still the largest error, not an
 * exact-zero pair (which the old ranking, by excess over the tolerance,
 * named: its tolerance is the smallest).  When a pair fails, the worst
 * entry is the failing pair, not the passing one of larger error. */
static void test_debug_gradcheck_worst_is_largest_error(void **state)
{
    (void)state;
    int64_t s[] = {4};
    double v[] = {0.3, -1.7, 2.9, 0.8};
    ag_tensor *x = tg_f64(1, s, v);
    ag_set_requires_grad(x, true);
    ag_gradcheck_report r;
    ag_gradcheck_opts o = {.mode = AG_GRADCHECK_FULL};
    assert_int_equal(ag_gradcheck(scale_fn, NULL, &x, 1, &o, &r), AG_OK);
    assert_true(r.passed);
    assert_true(r.worst_excess <= 0);
    assert_int_equal(r.compared, 16);
    assert_int_equal(r.worst_input, 0);
    assert_int_equal(r.worst_element, 1);
    assert_int_equal(r.worst_output, 1);
    assert_true(fabs(r.analytic - 0.5 * (1 + 8e-4)) < 1e-12);
    assert_true(fabs(r.numeric - 0.5) < 1e-8);
    if (!strstr(r.message, "gradcheck passed") || !strstr(r.message, "input #1 element 1 "))
        fail_msg("%s", r.message);
    int leak = 1;
    assert_int_equal(ag_gradcheck(scale_fn, &leak, &x, 1, &o, &r), AG_ERR_GRADIENT);
    assert_false(r.passed);
    assert_int_equal(r.worst_element, 0);
    assert_int_equal(r.worst_output, 1);
    assert_true(r.numeric == 0 && fabs(r.analytic - 2e-5) < 1e-12);
    if (!strstr(r.message, "FAILED") || !strstr(r.message, "input #1 element 0 output 1"))
        fail_msg("%s", r.message);
    ag_tensor_free(x);
}

static ag_tensor *scaled_fn(ag_tape *t, ag_tensor **in, void *ctx)
{
    /* the analytic gradient of in[1] is right; the function evaluated on the
     * differences' tape (grad disabled) scales in[1] differently */
    (void)ctx;
    double k = ag_tape_grad_enabled(t) ? 1.0 : 1.01;
    return ag_add(t, in[0], ag_mul_scalar(t, in[1], k));
}

/* Inputs are numbered from 1 in messages, as the ops number them;
 * worst_input stays a 0-based index. */
static void test_debug_gradcheck_numbers_inputs_from_one(void **state)
{
    (void)state;
    int64_t s[] = {3};
    ag_tensor *a = ag_tensor_ones(AG_F64, 1, s), *b = ag_tensor_ones(AG_F64, 1, s);
    ag_tensor *f = ag_tensor_ones(AG_F32, 1, s);
    ag_set_requires_grad(a, true);
    ag_set_requires_grad(b, true);
    ag_gradcheck_report r;
    ag_tensor *in[2] = {a, b};
    assert_int_equal(ag_gradcheck(scaled_fn, NULL, in, 2, NULL, &r), AG_ERR_GRADIENT);
    assert_int_equal(r.worst_input, 1);
    if (!strstr(r.message, "input #2 element"))
        fail_msg("%s", r.message);
    in[0] = f; /* not f64: the first input */
    assert_int_equal(ag_gradcheck(scaled_fn, NULL, in, 2, NULL, &r), AG_ERR_ARG);
    assert_non_null(strstr(r.message, "input #1 must be"));
    assert_non_null(strstr(ag_last_error(), "input #1 must be"));
    /* fast mode compares projections: no input is named */
    in[0] = a;
    ag_gradcheck_opts o = {.mode = AG_GRADCHECK_FAST};
    assert_int_equal(ag_gradcheck(scaled_fn, NULL, in, 2, &o, &r), AG_ERR_GRADIENT);
    assert_int_equal(r.worst_input, -1);
    assert_null(strstr(r.message, "input #"));
    assert_non_null(strstr(r.message, "projection"));
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(f);
}

static void test_debug_explain_numbers_params_from_one(void **state)
{
    (void)state;
    ag_tensor *w = ag_tensor_full(AG_F64, 0, NULL, 1.0);
    ag_tensor *tp[2] = {w, NULL};
    assert_int_equal(ag_explain(tanh_loss, NULL, tp, 2, NULL, NULL, NULL), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "parameter #2"));
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
        cmocka_unit_test(test_debug_anomaly_causal_mask_passes),
        cmocka_unit_test(test_debug_anomaly_passthrough_inf_ops),
        cmocka_unit_test(test_debug_anomaly_created_inf_and_nan_caught),
        cmocka_unit_test(test_debug_anomaly_backward_passthrough_and_nan),
        cmocka_unit_test(test_debug_profile_counts_tape_bytes),
        cmocka_unit_test(test_debug_gradcheck_worst_is_largest_error),
        cmocka_unit_test(test_debug_gradcheck_numbers_inputs_from_one),
        cmocka_unit_test(test_debug_explain_numbers_params_from_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
