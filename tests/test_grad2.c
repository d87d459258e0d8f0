/* test_grad2.c — derivatives of derivatives: ag_gradients, ag_hvp, ag_jvp,
 * ag_hessian, ag_jacobian.  Values against PyTorch (tests/reference/hvp/,
 * written by make_hvp_fixtures.py): the Hessian-vector product of a
 * 784-256-128-10 MLP's cross-entropy (tanh and gelu), the extended
 * Rosenbrock function, third derivatives of tanh and of a 1-16-16-1 MLP;
 * then the API's contract: persistent gradients untouched, zeros for
 * unrelated wrt, seeds, bad arguments, repeated calls, a gradient penalty
 * and JVPs against finite differences, dense Hessians and Jacobians
 * against their formulas, and custom ops with and without a vjp. */
#include "test_util.h"

#include <math.h>
#include <string.h>

#define S(...) ((const int64_t[]){__VA_ARGS__})
#define D(...) ((const double[]){__VA_ARGS__})

/* ---- helpers ---- */

/* ||a - b|| / ||b|| over all elements */
static double norm_rel(const ag_tensor *a, const ag_tensor *b)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < ag_numel(b); i++) {
        double d = ag_get(a, i) - ag_get(b, i);
        num += d * d;
        den += ag_get(b, i) * ag_get(b, i);
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double max_abs(const ag_tensor *t)
{
    double m = 0;
    for (int64_t i = 0; i < ag_numel(t); i++)
        m = fmax(m, fabs(ag_get(t, i)));
    return m;
}

/* got against want: norm-wise within tol, and element-wise within
 * tol * |want| + tol * max|want|; prints the norm-wise error */
static void check_close(const ag_tensor *got, const ag_tensor *want, double tol,
                        const char *label)
{
    assert_non_null(got);
    assert_non_null(want);
    assert_int_equal(ag_numel(got), ag_numel(want));
    double e = norm_rel(got, want);
    print_message("  %-28s ||a-b||/||b|| = %.2e\n", label, e);
    if (!(e <= tol))
        fail_msg("%s: norm-wise relative error %.3g > %.3g", label, e, tol);
    assert_tensor_close(got, want, tol, tol * max_abs(want));
}

static ag_tensor *param(ag_tensor *t)
{
    ag_set_requires_grad(t, true);
    return t;
}

static ag_tensor *vec(int64_t n, const double *v)
{
    return tg_f64(1, (const int64_t[]){n}, v);
}

/* ---- the generator shared with make_hvp_fixtures.py (GEN there) ---- */

static uint64_t gen_bits(uint64_t stream, uint64_t i)
{
    uint64_t z = stream * 0xD1B54A32D192ED03u + (i + 1) * 0x9E3779B97F4A7C15u;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* scale * (2u - 1), u uniform in [0, 1) with 53 bits */
static ag_tensor *gen_uniform(uint64_t stream, int ndim, const int64_t *shape, double scale)
{
    ag_tensor *t = ag_tensor_new(AG_F64, ndim, shape);
    double *d = ag_data(t);
    for (int64_t i = 0; i < ag_numel(t); i++) {
        double u = (double)(gen_bits(stream, (uint64_t)i) >> 11) * 0x1p-53;
        d[i] = scale * (2.0 * u - 1.0);
    }
    return t;
}

/* ---- (a) the MLP's cross-entropy ---- */

enum { BATCH = 16, NP = 6 };
static const int64_t sizes[4] = {784, 256, 128, 10};
static const char *const pnames[NP] = {"fc1.weight", "fc1.bias", "fc2.weight",
                                       "fc2.bias", "fc3.weight", "fc3.bias"};

typedef struct mlp {
    ag_tensor *p[NP], *v[NP], *x;
    int64_t labels[BATCH];
} mlp;

static void mlp_draw(mlp *m)
{
    for (int l = 0; l < 3; l++) {
        int64_t fin = sizes[l], fout = sizes[l + 1];
        m->p[2 * l] = param(gen_uniform(1 + 2 * l, 2, S(fout, fin), 2.0 / sqrt((double)fin)));
        m->p[2 * l + 1] = param(gen_uniform(2 + 2 * l, 1, S(fout), 0.5));
    }
    for (int k = 0; k < NP; k++)
        m->v[k] = gen_uniform(9 + k, ag_ndim(m->p[k]), ag_shape(m->p[k]), 1.0);
    m->x = gen_uniform(7, 2, S(BATCH, sizes[0]), 1.0);
    for (int i = 0; i < BATCH; i++)
        m->labels[i] = (int64_t)(gen_bits(8, (uint64_t)i) % 10);
}

static void mlp_free(mlp *m)
{
    for (int k = 0; k < NP; k++) {
        ag_tensor_free(m->p[k]);
        ag_tensor_free(m->v[k]);
    }
    ag_tensor_free(m->x);
}

static ag_tensor *mlp_loss(ag_tape *t, const mlp *m, ag_tensor *(*act)(ag_tape *, ag_tensor *))
{
    ag_tensor *h = m->x;
    for (int l = 0; l < 3; l++) {
        h = ag_linear(t, h, m->p[2 * l], m->p[2 * l + 1]);
        if (l < 2)
            h = act(t, h);
    }
    return ag_cross_entropy_logits(t, h, m->labels, BATCH, NULL);
}

/* The fixture's first drawn values and labels match ours exactly: a
 * generator that drifts is named here, before any derivative is compared. */
static void mlp_check_draw(const ag_safetensors *f, const mlp *m)
{
    for (int k = 0; k < NP; k++) {
        ag_tensor *hp = tg_fixture(f, "head.%s", pnames[k]);
        ag_tensor *hv = tg_fixture(f, "head.v.%s", pnames[k]);
        for (int64_t i = 0; i < 4; i++) {
            assert_true(ag_get(hp, i) == ag_get(m->p[k], i));
            assert_true(ag_get(hv, i) == ag_get(m->v[k], i));
        }
    }
    ag_tensor *hx = tg_fixture(f, "head.x"), *lab = tg_fixture(f, "labels");
    for (int64_t i = 0; i < 4; i++)
        assert_true(ag_get(hx, i) == ag_get(m->x, i));
    for (int64_t i = 0; i < BATCH; i++)
        assert_int_equal((int64_t)ag_get(lab, i), m->labels[i]);
}

static void check_mlp_hvp(const char *file, ag_tensor *(*act)(ag_tape *, ag_tensor *))
{
    ag_safetensors *f = tg_load_fixture(file);
    assert_non_null(f);
    mlp m;
    mlp_draw(&m);
    mlp_check_draw(f, &m);
    ag_tape *t = ag_tape_new();
    ag_tensor *loss = mlp_loss(t, &m, act);
    assert_non_null(loss);
    assert_true(fabs(ag_item(loss) - ag_item(tg_fixture(f, "loss"))) <= 1e-13);

    /* first order, fast: the gradient norms and <grad, v> */
    ag_tensor *g[NP], *hv[NP];
    assert_int_equal(ag_gradients(t, loss, NULL, NP, m.p, g, false), AG_OK);
    double gv = 0;
    for (int k = 0; k < NP; k++) {
        double n2 = 0;
        for (int64_t i = 0; i < ag_numel(g[k]); i++) {
            n2 += ag_get(g[k], i) * ag_get(g[k], i);
            gv += ag_get(g[k], i) * ag_get(m.v[k], i);
        }
        double want = ag_item(tg_fixture(f, "grad_norm.%s", pnames[k]));
        assert_true(fabs(sqrt(n2) - want) <= 1e-12 * want);
    }
    double want_gv = ag_item(tg_fixture(f, "gv"));
    assert_true(fabs(gv - want_gv) <= 1e-12 * fabs(want_gv));

    ag_status st = ag_hvp(t, loss, NP, m.p, m.v, hv, false);
    if (st != AG_OK)
        fail_msg("ag_hvp: %s", ag_tape_error(t));
    double vhv = 0;
    for (int k = 0; k < NP; k++) {
        char label[64];
        snprintf(label, sizeof label, "%s hv.%s", strstr(file, "gelu") ? "gelu" : "tanh",
                 pnames[k]);
        check_close(hv[k], tg_fixture(f, "hv.%s", pnames[k]), 1e-10, label);
        assert_false(ag_requires_grad(hv[k]));
        assert_null(ag_grad(m.p[k])); /* no persistent gradient was touched */
        for (int64_t i = 0; i < ag_numel(hv[k]); i++)
            vhv += ag_get(hv[k], i) * ag_get(m.v[k], i);
    }
    double want_vhv = ag_item(tg_fixture(f, "vhv"));
    assert_true(fabs(vhv - want_vhv) <= 1e-10 * fabs(want_vhv));
    ag_tape_free(t);
    mlp_free(&m);
    ag_safetensors_free(f);
}

static void test_hvp_mlp_tanh_matches_torch(void **state)
{
    (void)state;
    check_mlp_hvp("tests/reference/hvp/mlp_tanh.safetensors", ag_tanh);
}

static void test_hvp_mlp_gelu_matches_torch(void **state)
{
    (void)state;
    check_mlp_hvp("tests/reference/hvp/mlp_gelu.safetensors", ag_gelu);
}

/* ---- (b) extended Rosenbrock ---- */

/* sum_i 100 (x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2 */
static ag_tensor *rosenbrock(ag_tape *t, ag_tensor *x)
{
    int64_t n = ag_numel(x);
    ag_tensor *a = ag_slice(t, x, 0, 0, n, 2), *b = ag_slice(t, x, 0, 1, n, 2);
    ag_tensor *d = ag_sub(t, b, ag_mul(t, a, a));
    ag_tensor *e = ag_add_scalar(t, ag_neg(t, a), 1.0);
    ag_tensor *terms = ag_add(t, ag_mul_scalar(t, ag_mul(t, d, d), 100.0),
                              ag_pow_scalar(t, e, 2.0));
    return ag_sum(t, terms, AG_ALL, false);
}

static void test_hvp_rosenbrock_matches_torch(void **state)
{
    (void)state;
    ag_safetensors *f = tg_load_fixture("tests/reference/hvp/rosenbrock.safetensors");
    assert_non_null(f);
    ag_tensor *x = param(ag_tensor_clone(tg_fixture(f, "x")));
    ag_tensor *v = tg_fixture(f, "v");
    ag_tape *t = ag_tape_new();
    ag_tensor *y = rosenbrock(t, x), *g, *hv;
    assert_non_null(y);
    double fy = ag_item(tg_fixture(f, "f"));
    assert_true(fabs(ag_item(y) - fy) <= 1e-13 * fy);
    assert_int_equal(ag_gradients(t, y, NULL, 1, &x, &g, false), AG_OK);
    check_close(g, tg_fixture(f, "grad"), 1e-12, "rosenbrock grad");
    ag_status st = ag_hvp(t, y, 1, &x, &v, &hv, false);
    if (st != AG_OK)
        fail_msg("ag_hvp: %s", ag_tape_error(t));
    check_close(hv, tg_fixture(f, "hv"), 1e-10, "rosenbrock hv");
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_safetensors_free(f);
}

/* ---- (c) third order ---- */

/* d[k] = d^(k+1) (sum y) / dx^(k+1), k < 3, each recorded for the next */
static void three_derivatives(ag_tape *t, ag_tensor *y, ag_tensor *x, ag_tensor **d)
{
    ag_tensor *u = y;
    for (int k = 0; k < 3; k++) {
        ag_status st = ag_gradients(t, ag_sum(t, u, AG_ALL, false), NULL, 1, &x, &d[k], true);
        if (st != AG_OK)
            fail_msg("order %d: %s", k + 1, ag_tape_error(t));
        u = d[k];
    }
}

static void test_third_order_tanh_matches_torch(void **state)
{
    (void)state;
    ag_safetensors *f = tg_load_fixture("tests/reference/hvp/third_order.safetensors");
    assert_non_null(f);
    ag_tensor *x = param(ag_tensor_clone(tg_fixture(f, "tanh.x")));
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_tanh(t, x), *d[3];
    check_close(y, tg_fixture(f, "tanh.y"), 1e-14, "tanh");
    three_derivatives(t, y, x, d);
    check_close(d[0], tg_fixture(f, "tanh.d1"), 1e-12, "d tanh");
    check_close(d[1], tg_fixture(f, "tanh.d2"), 1e-11, "d2 tanh");
    check_close(d[2], tg_fixture(f, "tanh.d3"), 1e-10, "d3 tanh");
    assert_null(ag_grad(x));
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_safetensors_free(f);
}

static void test_third_order_mlp_matches_torch(void **state)
{
    (void)state;
    ag_safetensors *f = tg_load_fixture("tests/reference/hvp/third_order.safetensors");
    assert_non_null(f);
    ag_tensor *p[NP];
    for (int k = 0; k < NP; k++)
        p[k] = param(ag_tensor_clone(tg_fixture(f, "mlp3.%s", pnames[k])));
    ag_tensor *x = param(ag_tensor_clone(tg_fixture(f, "mlp3.x")));
    ag_tape *t = ag_tape_new();
    ag_tensor *h = ag_tanh(t, ag_linear(t, x, p[0], p[1]));
    h = ag_tanh(t, ag_linear(t, h, p[2], p[3]));
    ag_tensor *y = ag_linear(t, h, p[4], p[5]), *d[3];
    check_close(y, tg_fixture(f, "mlp3.y"), 1e-13, "mlp3 y");
    three_derivatives(t, y, x, d);
    check_close(d[0], tg_fixture(f, "mlp3.d1"), 1e-12, "mlp3 dy/dx");
    check_close(d[1], tg_fixture(f, "mlp3.d2"), 1e-11, "mlp3 d2y/dx2");
    check_close(d[2], tg_fixture(f, "mlp3.d3"), 1e-10, "mlp3 d3y/dx3");
    /* the PINN pattern: a loss on d2y/dx2, differentiated w.r.t. the
     * parameters (fc3.bias is not on its path: zeros) */
    ag_tensor *dw[NP];
    assert_int_equal(ag_gradients(t, ag_sum(t, d[1], AG_ALL, false), NULL, NP, p, dw, false),
                     AG_OK);
    for (int k = 0; k < NP; k++) {
        char label[64];
        snprintf(label, sizeof label, "mlp3 d(sum d2)/d %s", pnames[k]);
        check_close(dw[k], tg_fixture(f, "mlp3.d2_dw.%s", pnames[k]), 1e-10, label);
        assert_null(ag_grad(p[k]));
    }
    ag_tape_free(t);
    for (int k = 0; k < NP; k++)
        ag_tensor_free(p[k]);
    ag_tensor_free(x);
    ag_safetensors_free(f);
}

/* ---- the contract ---- */

/* A small recording: x [3] requires grad, y = tanh(x) * x, s = sum(y). */
typedef struct small {
    ag_tape *t;
    ag_tensor *x, *y, *s;
} small;

static small small_new(void)
{
    small m = {ag_tape_new(), param(vec(3, D(0.3, -0.8, 1.4))), NULL, NULL};
    m.y = ag_mul(m.t, ag_tanh(m.t, m.x), m.x);
    m.s = ag_sum(m.t, m.y, AG_ALL, false);
    assert_non_null(m.s);
    return m;
}

static void small_free(small *m)
{
    ag_tape_free(m->t);
    ag_tensor_free(m->x);
}

/* d/dx (tanh(x) x) = tanh(x) + x (1 - tanh(x)^2) */
static double small_dy(double x) { return tanh(x) + x * (1 - tanh(x) * tanh(x)); }

static void test_gradients_leave_persistent_grads_alone(void **state)
{
    (void)state;
    small m = small_new();
    ag_tensor *g;
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g, false), AG_OK);
    assert_null(ag_grad(m.x));
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g, true), AG_OK);
    assert_null(ag_grad(m.x));
    /* after a backward, the persistent gradient keeps its values */
    assert_int_equal(ag_backward(m.t, m.s), AG_OK);
    ag_tensor *pg = ag_grad(m.x), *before = ag_tensor_clone(pg);
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g, false), AG_OK);
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g, true), AG_OK);
    assert_ptr_equal(ag_grad(m.x), pg);
    assert_tensor_close(pg, before, 0, 0);
    assert_tensor_close(g, before, 1e-15, 1e-15);
    ag_tensor_free(before);
    small_free(&m);
}

static void test_gradients_unrelated_wrt_get_zeros(void **state)
{
    (void)state;
    for (int cg = 0; cg < 2; cg++) {
        small m = small_new();
        ag_tensor *b = param(ag_tensor_full(AG_F64, 2, S(2, 2), 3.0)); /* not used */
        ag_tensor *c = vec(3, D(1, 2, 3));                            /* needs no grad */
        ag_tensor *w[3] = {b, m.x, c}, *g[3];
        assert_int_equal(ag_gradients(m.t, m.s, NULL, 3, w, g, cg), AG_OK);
        tg_assert_shape(g[0], 2, S(2, 2));
        tg_assert_shape(g[2], 1, S(3));
        for (int64_t i = 0; i < 4; i++)
            assert_true(ag_get(g[0], i) == 0.0);
        for (int64_t i = 0; i < 3; i++) {
            assert_true(ag_get(g[2], i) == 0.0);
            assert_true(fabs(ag_get(g[1], i) - small_dy(ag_get(m.x, i))) <= 1e-15);
        }
        assert_null(ag_grad(b));
        ag_tensor_free(b);
        ag_tensor_free(c);
        small_free(&m);
    }
}

static void test_gradients_seed(void **state)
{
    (void)state;
    small m = small_new();
    ag_tensor *g = NULL, *seed = vec(3, D(2, -1, 0.5));
    /* a seed weights each output: g_i = seed_i * dy_i/dx_i */
    for (int cg = 0; cg < 2; cg++) {
        assert_int_equal(ag_gradients(m.t, m.y, seed, 1, &m.x, &g, cg), AG_OK);
        for (int64_t i = 0; i < 3; i++)
            assert_true(fabs(ag_get(g, i) - ag_get(seed, i) * small_dy(ag_get(m.x, i))) <=
                        1e-15);
    }
    /* no seed for a 3-element root */
    g = NULL;
    assert_int_equal(ag_gradients(m.t, m.y, NULL, 1, &m.x, &g, false), AG_ERR_SHAPE);
    tg_assert_tape_error(m.t, AG_ERR_SHAPE, "ag_gradients: root [3] has 3 elements");
    assert_null(g);
    small_free(&m);
    /* a seed of the wrong shape, or dtype */
    ag_tensor *bad[2] = {vec(2, D(1, 2)), ag_tensor_ones(AG_F32, 1, S(3))};
    for (int k = 0; k < 2; k++) {
        m = small_new();
        assert_int_equal(ag_gradients(m.t, m.y, bad[k], 1, &m.x, &g, false), AG_ERR_SHAPE);
        tg_assert_tape_error(m.t, AG_ERR_SHAPE, "ag_gradients: seed[0] is");
        small_free(&m);
        ag_tensor_free(bad[k]);
    }
    ag_tensor_free(seed);
}

/* Bad calls, each on a fresh recording (errors stick): the status and the
 * start of the message.  v2 is [2], where [3] is wanted. */
enum { BAD_CALLS = 18 };
static const struct {
    ag_status st;
    const char *msg;
} bad[BAD_CALLS] = {
    {AG_ERR_NULL, "ag_gradients: root is NULL"},
    {AG_ERR_NULL, "ag_gradients: wrt is NULL"},
    {AG_ERR_NULL, "ag_gradients: grads is NULL"},
    {AG_ERR_ARG, "ag_gradients: n is -1"},
    {AG_ERR_NULL, "ag_gradients: wrt[0] is NULL"},
    {AG_ERR_STATE, "ag_gradients: wrt[0] belongs to another tape"},
    {AG_ERR_SHAPE, "ag_matmul"}, /* a kept error is returned, nothing computed */
    {AG_ERR_NULL, "ag_hvp: v is NULL"},
    {AG_ERR_NULL, "ag_hvp: v[0] is NULL"},
    {AG_ERR_SHAPE, "ag_hvp: v[0] is [2]"},
    {AG_ERR_SHAPE, "ag_hvp: root [3] has 3 elements"},
    {AG_ERR_NULL, "ag_jvp: u is NULL"},
    {AG_ERR_SHAPE, "ag_jvp: u[0] is [2]"},
    {AG_ERR_NULL, "ag_jvp: jv is NULL"},
    {AG_ERR_NULL, "ag_hessian: h is NULL"},
    {AG_ERR_NULL, "ag_hessian: x is NULL"},
    {AG_ERR_SHAPE, "ag_hessian: root [3] has 3 elements"},
    {AG_ERR_NULL, "ag_jacobian: jac is NULL"},
};

static ag_status bad_call(small *m, int which, ag_tensor *v2, ag_tape *other)
{
    ag_tensor *g[2], *nul = NULL, *z;
    switch (which) {
    case 0: return ag_gradients(m->t, NULL, NULL, 1, &m->x, g, true);
    case 1: return ag_gradients(m->t, m->s, NULL, 1, NULL, g, true);
    case 2: return ag_gradients(m->t, m->s, NULL, 1, &m->x, NULL, true);
    case 3: return ag_gradients(m->t, m->s, NULL, -1, &m->x, g, true);
    case 4: return ag_gradients(m->t, m->s, NULL, 1, &nul, g, false);
    case 5: z = ag_tanh(other, m->x); return ag_gradients(m->t, m->s, NULL, 1, &z, g, false);
    case 6: ag_matmul(m->t, m->x, v2); return ag_gradients(m->t, m->s, NULL, 1, &m->x, g, false);
    case 7: return ag_hvp(m->t, m->s, 1, &m->x, NULL, g, false);
    case 8: return ag_hvp(m->t, m->s, 1, &m->x, &nul, g, false);
    case 9: return ag_hvp(m->t, m->s, 1, &m->x, &v2, g, false);
    case 10: return ag_hvp(m->t, m->y, 1, &m->x, &m->x, g, false);
    case 11: return ag_jvp(m->t, m->y, 1, &m->x, NULL, g, false);
    case 12: return ag_jvp(m->t, m->y, 1, &m->x, &v2, g, false);
    case 13: return ag_jvp(m->t, m->y, 1, &m->x, &m->x, NULL, false);
    case 14: return ag_hessian(m->t, m->s, m->x, NULL);
    case 15: return ag_hessian(m->t, m->s, NULL, g);
    case 16: return ag_hessian(m->t, m->y, m->x, g);
    default: return ag_jacobian(m->t, m->y, m->x, NULL);
    }
}

static void test_gradients_bad_arguments(void **state)
{
    (void)state;
    ag_tensor *g, *v2 = vec(2, D(1, 2));
    small m = small_new();
    assert_int_equal(ag_gradients(NULL, m.s, NULL, 1, &m.x, &g, false), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "ag_gradients: tape is NULL"));
    assert_int_equal(ag_jacobian(m.t, NULL, m.x, &g), AG_ERR_NULL);
    small_free(&m);
    ag_tape *other = ag_tape_new();
    for (int k = 0; k < BAD_CALLS; k++) {
        m = small_new();
        ag_status st = bad_call(&m, k, v2, other);
        if (st != bad[k].st)
            fail_msg("bad call %d: status %s, want %s (%s)", k, ag_status_str(st),
                     ag_status_str(bad[k].st), ag_tape_error(m.t));
        tg_assert_tape_error(m.t, bad[k].st, bad[k].msg);
        small_free(&m);
    }
    ag_tape_free(other);
    ag_tensor_free(v2);
}

static void test_gradients_create_graph_decides_requires_grad(void **state)
{
    (void)state;
    small m = small_new();
    ag_tensor *g, *gg;
    int64_t n0 = ag_tape_entries(m.t);
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g, false), AG_OK);
    assert_false(ag_requires_grad(g));
    assert_int_equal(ag_tape_entries(m.t), n0); /* the fast sweep records nothing */
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g, true), AG_OK);
    assert_true(ag_requires_grad(g));
    assert_true(ag_tape_entries(m.t) > n0);
    assert_int_equal(ag_hvp(m.t, m.s, 1, &m.x, &m.x, &gg, false), AG_OK);
    assert_false(ag_requires_grad(gg));
    assert_int_equal(ag_hvp(m.t, m.s, 1, &m.x, &m.x, &gg, true), AG_OK);
    assert_true(ag_requires_grad(gg));
    small_free(&m);
}

static void test_gradients_twice_on_one_recording(void **state)
{
    (void)state;
    small m = small_new();
    ag_tensor *g[4];
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g[0], false), AG_OK);
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g[1], false), AG_OK);
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g[2], true), AG_OK);
    assert_int_equal(ag_gradients(m.t, m.s, NULL, 1, &m.x, &g[3], true), AG_OK);
    for (int k = 1; k < 4; k++)
        assert_tensor_close(g[k], g[0], 1e-15, 1e-15);
    /* the two recorded gradients are both differentiable: d2 (sum g) / dx2
     * from either is the same */
    ag_tensor *h[2];
    for (int k = 0; k < 2; k++)
        assert_int_equal(ag_gradients(m.t, ag_sum(m.t, g[2 + k], AG_ALL, false), NULL, 1,
                                      &m.x, &h[k], false),
                         AG_OK);
    assert_tensor_close(h[0], h[1], 0, 0);
    /* and a backward afterwards still fills the persistent gradient */
    assert_int_equal(ag_backward(m.t, m.s), AG_OK);
    assert_tensor_close(ag_grad(m.x), g[0], 1e-15, 1e-15);
    small_free(&m);
}

static void test_gradients_wrt_tape_tensor(void **state)
{
    (void)state;
    ag_tensor *x = param(tg_f64(2, S(2, 3), D(0.1, -0.4, 0.9, 1.2, -0.3, 0.5)));
    ag_tensor *w = param(tg_f64(2, S(2, 3), D(0.7, -0.2, 0.4, -0.5, 0.3, 0.8)));
    ag_tensor *v = tg_f64(2, S(2, 2), D(1, -2, 0.5, 3));
    for (int cg = 0; cg < 2; cg++) {
        ag_tape *t = ag_tape_new();
        ag_tensor *h = ag_tanh(t, ag_linear(t, x, w, NULL)); /* [2,2], a tape tensor */
        ag_tensor *root = ag_sum(t, ag_mul(t, ag_mul(t, h, h), h), AG_ALL, false), *g, *hv;
        assert_int_equal(ag_gradients(t, root, NULL, 1, &h, &g, cg), AG_OK);
        assert_int_equal(ag_hvp(t, root, 1, &h, &v, &hv, cg), AG_OK);
        for (int64_t i = 0; i < 4; i++) {
            double hi = ag_get(h, i);
            assert_true(fabs(ag_get(g, i) - 3 * hi * hi) <= 1e-15); /* d/dh sum h^3 */
            assert_true(fabs(ag_get(hv, i) - 6 * hi * ag_get(v, i)) <= 1e-14);
        }
        ag_tape_free(t);
    }
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(v);
}

/* A GAN critic's gradient penalty: P = ||dD/dx||^2 with
 * D = sum(tanh(x W1^T + b1) W2^T) over the batch. */
typedef struct critic {
    ag_tensor *x, *p[3]; /* x [4,3]; W1 [5,3], b1 [5], W2 [1,5] */
} critic;

static ag_tensor *penalty(ag_tape *t, const critic *c, bool create_graph)
{
    ag_tensor *h = ag_tanh(t, ag_linear(t, c->x, c->p[0], c->p[1]));
    ag_tensor *d = ag_sum(t, ag_linear(t, h, c->p[2], NULL), AG_ALL, false), *gx;
    if (ag_gradients(t, d, NULL, 1, &c->x, &gx, create_graph) != AG_OK)
        return NULL;
    return ag_sum(t, ag_mul(t, gx, gx), AG_ALL, false);
}

static void test_gradient_penalty_matches_finite_differences(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    critic c = {param(ag_tensor_uniform(AG_F64, 2, S(4, 3), -1, 1, &rng)),
                {param(ag_tensor_uniform(AG_F64, 2, S(5, 3), -1, 1, &rng)),
                 param(ag_tensor_uniform(AG_F64, 1, S(5), -1, 1, &rng)),
                 param(ag_tensor_uniform(AG_F64, 2, S(1, 5), -1, 1, &rng))}};
    ag_tape *t = ag_tape_new();
    ag_tensor *pen = penalty(t, &c, true), *g[3];
    if (!pen)
        fail_msg("penalty: %s", ag_tape_error(t));
    assert_int_equal(ag_gradients(t, pen, NULL, 3, c.p, g, false), AG_OK);
    /* a backward through the recorded penalty gives the same (before the
     * differences below write the parameters: after, it is refused) */
    assert_int_equal(ag_backward(t, pen), AG_OK);
    for (int k = 0; k < 3; k++)
        assert_tensor_close(ag_grad(c.p[k]), g[k], 1e-14, 1e-14);
    /* central differences of P, each evaluated by a first-order sweep */
    ag_tape *ft = ag_tape_new();
    const double eps = 1e-5;
    for (int k = 0; k < 3; k++) {
        for (int64_t i = 0; i < ag_numel(c.p[k]); i++) {
            double x0 = ag_get(c.p[k], i), fp, fm;
            ag_set(c.p[k], i, x0 + eps);
            fp = ag_item(penalty(ft, &c, false));
            ag_tape_reset(ft);
            ag_set(c.p[k], i, x0 - eps);
            fm = ag_item(penalty(ft, &c, false));
            ag_tape_reset(ft);
            ag_set(c.p[k], i, x0);
            double num = (fp - fm) / (2 * eps), an = ag_get(g[k], i);
            if (!(fabs(an - num) <= 1e-7 + 1e-6 * fabs(num)))
                fail_msg("dP/dp%d[%lld]: analytic %.12g, numeric %.12g", k, (long long)i, an,
                         num);
        }
    }
    ag_tape_free(ft);
    ag_tape_free(t);
    ag_tensor_free(c.x);
    for (int k = 0; k < 3; k++)
        ag_tensor_free(c.p[k]);
}

/* y = tanh(W x) * x, x [3], W [3,3] */
static ag_tensor *jvp_fn(ag_tape *t, ag_tensor *x, ag_tensor *w)
{
    return ag_mul(t, ag_tanh(t, ag_matmul(t, w, x)), x);
}

static void test_jvp_matches_finite_differences(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 11);
    ag_tensor *in[2] = {param(ag_tensor_uniform(AG_F64, 1, S(3), -1, 1, &rng)),
                        param(ag_tensor_uniform(AG_F64, 2, S(3, 3), -1, 1, &rng))};
    ag_tensor *u[2] = {ag_tensor_uniform(AG_F64, 1, S(3), -1, 1, &rng),
                       ag_tensor_uniform(AG_F64, 2, S(3, 3), -1, 1, &rng)};
    ag_tensor *unused = param(ag_tensor_ones(AG_F64, 1, S(2)));
    ag_tensor *w3[3] = {in[0], in[1], unused}, *u3[3] = {u[0], u[1], unused};
    ag_tape *t = ag_tape_new();
    ag_tensor *y = jvp_fn(t, in[0], in[1]), *jv[2];
    for (int cg = 0; cg < 2; cg++) {
        ag_status st = ag_jvp(t, y, 3, w3, u3, &jv[cg], cg);
        if (st != AG_OK)
            fail_msg("ag_jvp: %s", ag_tape_error(t));
        tg_assert_shape(jv[cg], 1, S(3));
    }
    /* (f(p + eps u) - f(p - eps u)) / 2 eps */
    const double eps = 1e-5;
    double yp[3], ym[3], num[3];
    ag_tensor *save[2] = {ag_tensor_clone(in[0]), ag_tensor_clone(in[1])};
    ag_tape *ft = ag_tape_new();
    for (int sgn = 0; sgn < 2; sgn++) {
        for (int k = 0; k < 2; k++)
            for (int64_t i = 0; i < ag_numel(in[k]); i++)
                ag_set(in[k], i, ag_get(save[k], i) + (sgn ? -eps : eps) * ag_get(u[k], i));
        ag_tensor *yf = jvp_fn(ft, in[0], in[1]);
        for (int64_t i = 0; i < 3; i++)
            (sgn ? ym : yp)[i] = ag_get(yf, i);
        ag_tape_reset(ft);
    }
    for (int i = 0; i < 3; i++)
        num[i] = (yp[i] - ym[i]) / (2 * eps);
    for (int cg = 0; cg < 2; cg++) {
        double got[3];
        for (int64_t i = 0; i < 3; i++)
            got[i] = ag_get(jv[cg], i);
        assert_doubles_close(got, num, 3, 1e-8, 1e-9);
    }
    assert_false(ag_requires_grad(jv[0]));
    ag_tape_free(ft);
    ag_tape_free(t);
    for (int k = 0; k < 2; k++) {
        ag_tensor_free(in[k]);
        ag_tensor_free(u[k]);
        ag_tensor_free(save[k]);
    }
    ag_tensor_free(unused);
}

static void test_hessian_matches_formula(void **state)
{
    (void)state;
    /* f = sum(x^3) + (sum x)^2: H = diag(6 x) + 2 */
    ag_tensor *x = param(vec(4, D(0.3, -0.7, 1.1, 0.5)));
    ag_tape *t = ag_tape_new();
    ag_tensor *sx = ag_sum(t, x, AG_ALL, false);
    ag_tensor *f = ag_add(t, ag_sum(t, ag_pow_scalar(t, x, 3.0), AG_ALL, false),
                          ag_mul(t, sx, sx)), *h;
    ag_status st = ag_hessian(t, f, x, &h);
    if (st != AG_OK)
        fail_msg("ag_hessian: %s", ag_tape_error(t));
    tg_assert_shape(h, 2, S(4, 4));
    double want[16];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            want[i * 4 + j] = 2.0 + (i == j ? 6.0 * ag_get(x, i) : 0.0);
    ag_tensor *w = tg_f64(2, S(4, 4), want);
    assert_tensor_close(h, w, 1e-14, 1e-14);
    assert_null(ag_grad(x));
    ag_tensor_free(w);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_jacobian_matches_formula(void **state)
{
    (void)state;
    /* y = tanh(A x): J = diag(1 - y^2) A, [3, 4] */
    ag_tensor *a = tg_f64(2, S(3, 4), D(0.5, -1, 0.2, 0.3, 1.1, 0.4, -0.6, 0.9, -0.2, 0.7, 0.1,
                                        -0.8));
    ag_tensor *x = param(vec(4, D(0.3, -0.7, 1.1, 0.5)));
    ag_tape *t = ag_tape_new();
    ag_tensor *y = ag_tanh(t, ag_matmul(t, a, x)), *j;
    ag_status st = ag_jacobian(t, y, x, &j);
    if (st != AG_OK)
        fail_msg("ag_jacobian: %s", ag_tape_error(t));
    tg_assert_shape(j, 2, S(3, 4));
    double want[12];
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            want[r * 4 + c] = (1 - ag_get(y, r) * ag_get(y, r)) * ag_get(a, r * 4 + c);
    ag_tensor *w = tg_f64(2, S(3, 4), want);
    assert_tensor_close(j, w, 1e-15, 1e-15);
    /* the Jacobian of a [2,2] square: diag(2 x), [4, 4] */
    ag_tensor *x2 = param(tg_f64(2, S(2, 2), D(1, -2, 0.5, 3)));
    assert_int_equal(ag_jacobian(t, ag_mul(t, x2, x2), x2, &j), AG_OK);
    tg_assert_shape(j, 2, S(4, 4));
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            assert_true(ag_get(j, r * 4 + c) == (r == c ? 2 * ag_get(x2, r) : 0.0));
    ag_tensor_free(x2);
    ag_tensor_free(w);
    ag_tape_free(t);
    ag_tensor_free(a);
    ag_tensor_free(x);
}

/* ---- custom ops ---- */

static void cube_fwd(ag_tensor *const *in, int n, ag_tensor *out, void *ctx)
{
    (void)n, (void)ctx;
    for (int64_t i = 0; i < ag_numel(out); i++)
        ag_set(out, i, pow(ag_get(in[0], i), 3));
}

/* dx += dy * 3 x^2 */
static void cube_bwd(ag_tensor *const *in, int n, const ag_tensor *out, const ag_tensor *gout,
                     ag_tensor *const *gin, void *ctx)
{
    (void)n, (void)out, (void)ctx;
    if (gin[0])
        for (int64_t i = 0; i < ag_numel(out); i++) {
            double x = ag_get(in[0], i);
            ag_set(gin[0], i, ag_get(gin[0], i) + ag_get(gout, i) * 3 * x * x);
        }
}

/* the same in ops: gin = gout * 3 x^2 */
static void cube_vjp(ag_tape *t, ag_tensor *const *in, int n, ag_tensor *out, ag_tensor *gout,
                     const bool *need, ag_tensor **gin, void *ctx)
{
    (void)n, (void)out, (void)ctx;
    if (need[0])
        gin[0] = ag_mul(t, gout, ag_mul_scalar(t, ag_mul(t, in[0], in[0]), 3.0));
}

static const ag_custom_op cube_plain = {"cube_plain", cube_fwd, cube_bwd, NULL};
static const ag_custom_op cube_twice = {"cube_twice", cube_fwd, cube_bwd, cube_vjp};

static void test_custom_op_without_vjp_refuses_create_graph(void **state)
{
    (void)state;
    ag_tensor *x = param(vec(3, D(0.5, -1.5, 2)));
    ag_tape *t = ag_tape_new();
    ag_tensor *s = ag_sum(t, ag_custom(t, &cube_plain, &x, 1, 1, S(3), NULL), AG_ALL, false);
    ag_tensor *g = NULL;
    assert_int_equal(ag_gradients(t, s, NULL, 1, &x, &g, false), AG_OK); /* first order: fine */
    for (int64_t i = 0; i < 3; i++)
        if (ag_get(g, i) != 3 * ag_get(x, i) * ag_get(x, i))
            fail_msg("d/dx cube at %g: %g, want %g", ag_get(x, i), ag_get(g, i),
                     3 * ag_get(x, i) * ag_get(x, i));
    /* and, after a backward, the sweep still leaves x's own gradient alone */
    assert_int_equal(ag_backward(t, s), AG_OK);
    ag_tensor *before = ag_tensor_clone(ag_grad(x));
    assert_int_equal(ag_gradients(t, s, NULL, 1, &x, &g, false), AG_OK);
    assert_tensor_close(ag_grad(x), before, 0, 0);
    assert_tensor_close(g, before, 0, 0);
    ag_tensor_free(before);
    g = NULL;
    assert_int_equal(ag_gradients(t, s, NULL, 1, &x, &g, true), AG_ERR_STATE);
    tg_assert_tape_error(t, AG_ERR_STATE, "cube_plain");
    assert_null(g);
    ag_tape_free(t);
    t = ag_tape_new(); /* ag_hvp the same */
    s = ag_sum(t, ag_custom(t, &cube_plain, &x, 1, 1, S(3), NULL), AG_ALL, false);
    assert_int_equal(ag_hvp(t, s, 1, &x, &x, &g, false), AG_ERR_STATE);
    ag_tape_free(t);
    ag_tensor_free(x);
}

static void test_custom_op_with_vjp_differentiates_twice(void **state)
{
    (void)state;
    ag_tensor *x = param(vec(3, D(0.5, -1.5, 2))), *v = vec(3, D(1, 2, -1));
    ag_tape *t = ag_tape_new();
    ag_tensor *s = ag_sum(t, ag_custom(t, &cube_twice, &x, 1, 1, S(3), NULL), AG_ALL, false);
    ag_tensor *g, *gg, *ggg, *hv;
    assert_int_equal(ag_gradients(t, s, NULL, 1, &x, &g, true), AG_OK);
    assert_int_equal(ag_gradients(t, ag_sum(t, g, AG_ALL, false), NULL, 1, &x, &gg, true), AG_OK);
    assert_int_equal(ag_gradients(t, ag_sum(t, gg, AG_ALL, false), NULL, 1, &x, &ggg, false),
                     AG_OK);
    assert_int_equal(ag_hvp(t, s, 1, &x, &v, &hv, false), AG_OK);
    for (int64_t i = 0; i < 3; i++) {
        double xi = ag_get(x, i);
        assert_true(fabs(ag_get(g, i) - 3 * xi * xi) <= 1e-15);
        assert_true(fabs(ag_get(gg, i) - 6 * xi) <= 1e-15);
        assert_true(fabs(ag_get(ggg, i) - 6) <= 1e-15);
        assert_true(fabs(ag_get(hv, i) - 6 * xi * ag_get(v, i)) <= 1e-15);
    }
    ag_tape_free(t);
    ag_tensor_free(x);
    ag_tensor_free(v);
}

/* f32, as training runs: the HVP of a small MLP against the f64 one */
static void test_hvp_f32_follows_f64(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    ag_tensor *p64[4] = {ag_tensor_uniform(AG_F64, 2, S(8, 6), -0.6, 0.6, &rng),
                         ag_tensor_uniform(AG_F64, 1, S(8), -0.5, 0.5, &rng),
                         ag_tensor_uniform(AG_F64, 2, S(4, 8), -0.6, 0.6, &rng),
                         ag_tensor_uniform(AG_F64, 1, S(4), -0.5, 0.5, &rng)};
    ag_tensor *x64 = ag_tensor_uniform(AG_F64, 2, S(5, 6), -1, 1, &rng);
    const int64_t labels[5] = {0, 3, 1, 1, 2};
    ag_tensor *hv[2][4], *p[2][4], *v[2][4], *x[2];
    ag_tape *tp[2];
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_F64 : AG_F32;
        x[d] = tg_convert(x64, dt);
        for (int k = 0; k < 4; k++) {
            p[d][k] = param(tg_convert(p64[k], dt));
            v[d][k] = tg_convert(p64[k], dt); /* v = p: any direction will do */
        }
        ag_tape *t = tp[d] = ag_tape_new();
        ag_tensor *h = ag_tanh(t, ag_linear(t, x[d], p[d][0], p[d][1]));
        ag_tensor *loss =
            ag_cross_entropy_logits(t, ag_linear(t, h, p[d][2], p[d][3]), labels, 5, NULL);
        ag_status st = ag_hvp(t, loss, 4, p[d], v[d], hv[d], false);
        if (st != AG_OK)
            fail_msg("ag_hvp (%s): %s", d ? "f64" : "f32", ag_tape_error(t));
        for (int k = 0; k < 4; k++)
            assert_int_equal(ag_dtype_of(hv[d][k]), dt);
    }
    for (int k = 0; k < 4; k++)
        assert_true(norm_rel(hv[0][k], hv[1][k]) <= 1e-5);
    for (int d = 0; d < 2; d++) {
        ag_tape_free(tp[d]);
        for (int k = 0; k < 4; k++) {
            ag_tensor_free(p[d][k]);
            ag_tensor_free(v[d][k]);
        }
        ag_tensor_free(x[d]);
    }
    for (int k = 0; k < 4; k++)
        ag_tensor_free(p64[k]);
    ag_tensor_free(x64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hvp_mlp_tanh_matches_torch),
        cmocka_unit_test(test_hvp_mlp_gelu_matches_torch),
        cmocka_unit_test(test_hvp_rosenbrock_matches_torch),
        cmocka_unit_test(test_third_order_tanh_matches_torch),
        cmocka_unit_test(test_third_order_mlp_matches_torch),
        cmocka_unit_test(test_gradients_leave_persistent_grads_alone),
        cmocka_unit_test(test_gradients_unrelated_wrt_get_zeros),
        cmocka_unit_test(test_gradients_seed),
        cmocka_unit_test(test_gradients_bad_arguments),
        cmocka_unit_test(test_gradients_create_graph_decides_requires_grad),
        cmocka_unit_test(test_gradients_twice_on_one_recording),
        cmocka_unit_test(test_gradients_wrt_tape_tensor),
        cmocka_unit_test(test_gradient_penalty_matches_finite_differences),
        cmocka_unit_test(test_jvp_matches_finite_differences),
        cmocka_unit_test(test_hessian_matches_formula),
        cmocka_unit_test(test_jacobian_matches_formula),
        cmocka_unit_test(test_custom_op_without_vjp_refuses_create_graph),
        cmocka_unit_test(test_custom_op_with_vjp_differentiates_twice),
        cmocka_unit_test(test_hvp_f32_follows_f64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
