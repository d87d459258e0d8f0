/* ops_conv.c — 2-D convolution (torch.nn.functional.conv2d, NCHW) and its
 * two derivatives, each a row of the op table, so that derivatives of any
 * order stay convolutions:
 *   conv2d(x, w [, b])          y  = x correlated with w (+ b)
 *   conv2d_input_grad(g, w)     dx = the transposed convolution of g by w
 *   conv2d_weight_grad(x, g)    dw = the correlation of x with g
 * With B(x, w, g) = <conv2d(x, w), g>, linear in each argument, the three
 * are its partial derivatives in g, x and w:
 *   dB/dg = conv2d(x, w),  dB/dx = input_grad(g, w),  dB/dw = weight_grad(x, g)
 * so each op's vector-Jacobian product (G the gradient of its output) is
 * made of the other two:
 *   conv2d:      dx = input_grad(G, w)   dw = weight_grad(x, G)   db = sum G
 *   input_grad:  dg = conv2d(G, w)       dw = weight_grad(G, g)
 *   weight_grad: dx = input_grad(g, G)   dg = conv2d(x, G)
 * The fast backward runs the same kernels (kernels/conv.c, whose legend
 * this file uses) straight into the gradient buffers.  conv1d is conv2d on
 * [N, C, 1, L].  Options are checked once, at the public function; the
 * kernels' scratch comes from the tape's arena. */
#include "autograd_internal.h"
#include "kernels/conv_internal.h"

#include <math.h>
#include <stdint.h>

/* Every op's attributes: stride, padding, dilation (H then W), groups,
 * all resolved (no zero defaults left).  The entry's aux is its
 * forward's scratch. */
typedef struct {
    int64_t s[2], p[2], d[2], groups;
} conv_attr;

/* Largest stride, padding, dilation or groups taken. */
#define OPT_MAX INT32_MAX

/* The geometry from the shapes of x, w and y (whichever tensors play
 * them in an op) and the attributes. */
static ag_conv_geom geom_of(const conv_attr *a, const int64_t *xs, const int64_t *ws,
                            const int64_t *ys)
{
    return (ag_conv_geom){.N = xs[0], .C = xs[1], .H = xs[2], .W = xs[3], .O = ws[0],
                          .kh = ws[2], .kw = ws[3], .Ho = ys[2], .Wo = ys[3],
                          .sh = a->s[0], .sw = a->s[1], .ph = a->p[0], .pw = a->p[1],
                          .dh = a->d[0], .dw = a->d[1], .G = a->groups};
}

/* Output size along one dim (arguments already checked). */
static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* Records op def on validated inputs with output shape ys, after
 * allocating its forward's scratch (weight_grad: with chunk partials). */
static ag_tensor *conv_record(ag_tape *t, const ag_op_def *def, ag_tensor **in, int n_in,
                              const conv_attr *a, const ag_conv_geom *g, const int64_t *ys,
                              bool weight_grad)
{
    ag_dtype dt = in[0]->dtype;
    void *scratch = ag_arena_alloc(t, ag_conv_scratch_bytes(g, dt, weight_grad));
    if (!scratch)
        return NULL;
    ag_op_call c = {.def = def, .in = in, .n_in = n_in, .dtype = dt, .ndim = 4, .shape = ys,
                    .attr = a, .attr_size = sizeof *a, .aux = scratch};
    return ag_op_run(t, &c);
}

/* y = conv2d(x, w) + b */
static ag_tensor *conv2d_run(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b,
                             const conv_attr *a)
{
    int64_t ys[4] = {x->shape[0], w->shape[0],
                     out_size(x->shape[2], w->shape[2], a->s[0], a->p[0], a->d[0]),
                     out_size(x->shape[3], w->shape[3], a->s[1], a->p[1], a->d[1])};
    ag_conv_geom g = geom_of(a, x->shape, w->shape, ys);
    ag_tensor *in[3] = {x, w, b};
    return conv_record(t, &ag_op_conv2d, in, b ? 3 : 2, a, &g, ys, false);
}

/* dx [xs] = input_grad(g, w) */
static ag_tensor *input_grad_run(ag_tape *t, ag_tensor *gy, ag_tensor *w, const conv_attr *a,
                                 const int64_t *xs)
{
    ag_conv_geom g = geom_of(a, xs, w->shape, gy->shape);
    ag_tensor *in[2] = {gy, w};
    return conv_record(t, &ag_op_conv2d_input_grad, in, 2, a, &g, xs, false);
}

/* dw [ws] = weight_grad(x, g) */
static ag_tensor *weight_grad_run(ag_tape *t, ag_tensor *x, ag_tensor *gy, const conv_attr *a,
                                  const int64_t *ws)
{
    ag_conv_geom g = geom_of(a, x->shape, ws, gy->shape);
    ag_tensor *in[2] = {x, gy};
    return conv_record(t, &ag_op_conv2d_weight_grad, in, 2, a, &g, ws, true);
}

/* Scratch for a backward's kernels (both may run, one after the other);
 * NULL with AG_ERR_NOMEM kept on the tape. */
static void *backward_scratch(ag_tape *t, const ag_conv_geom *g, ag_dtype dt)
{
    return ag_arena_alloc(t, ag_conv_scratch_bytes(g, dt, true));
}

/* ---- conv2d: in x [N, C, H, W], w [O, Cg, kh, kw], b [O] ---- */

static void conv2d_forward(ag_entry *e)
{
    const conv_attr *a = AG_ATTR(e, conv_attr);
    ag_conv_geom g = geom_of(a, e->in[0]->shape, e->in[1]->shape, e->out->shape);
    ag_conv_forward(&g, e->out->dtype, e->in[0]->data, e->in[1]->data,
                    e->n_in > 2 ? e->in[2]->data : NULL, e->out->data, false, e->aux);
}

static void conv2d_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *x = e->in[0], *w = e->in[1];
    ag_conv_geom g = geom_of(AG_ATTR(e, conv_attr), x->shape, w->shape, e->out->shape);
    ag_dtype dt = e->out->dtype;
    const void *gy = e->out->grad->data;
    void *db = e->n_in > 2 ? ag_grad_data(tape, e->in[2]) : NULL;
    void *dx = ag_grad_data(tape, x), *dw = ag_grad_data(tape, w);
    if (db && !dw) /* db += sum_{n, oh, ow} g (else with dw) */
        ag_conv_bias_grad(&g, dt, gy, db);
    void *s = dx || dw ? backward_scratch(tape, &g, dt) : NULL;
    if (!s)
        return;
    if (dx) /* dx += input_grad(g, w) */
        ag_conv_input_grad(&g, dt, gy, w->data, dx, s);
    if (dw) /* dw += weight_grad(x, g) */
        ag_conv_weight_grad(&g, dt, x->data, gy, dw, true, db, s);
}

/* db = the sum of g over n, oh and ow */
static ag_tensor *bias_sum(ag_tape *t, ag_tensor *gy)
{
    int64_t s3[3] = {gy->shape[0], gy->shape[1], gy->shape[2] * gy->shape[3]};
    ag_tensor *r = ag_sum(t, ag_reshape(t, gy, 3, s3), 2, false);
    return ag_sum(t, r, 0, false);
}

static void conv2d_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const conv_attr *a = AG_ATTR(e, conv_attr);
    ag_tensor *x = e->in[0], *w = e->in[1];
    if (ag_needs_grad(tape, x)) /* dx = input_grad(G, w) */
        gin[0] = input_grad_run(tape, gout, w, a, x->shape);
    if (ag_needs_grad(tape, w)) /* dw = weight_grad(x, G) */
        gin[1] = weight_grad_run(tape, x, gout, a, w->shape);
    if (e->n_in > 2 && ag_needs_grad(tape, e->in[2])) /* db = sum G */
        gin[2] = bias_sum(tape, gout);
}

/* ---- conv2d_input_grad: in g [N, O, Ho, Wo], w; out [N, C, H, W] ---- */

static void input_grad_forward(ag_entry *e)
{
    const conv_attr *a = AG_ATTR(e, conv_attr);
    ag_tensor *y = e->out;
    ag_conv_geom g = geom_of(a, y->shape, e->in[1]->shape, e->in[0]->shape);
    memset(y->data, 0, (size_t)y->numel * ag_dtype_size(y->dtype));
    ag_conv_input_grad(&g, y->dtype, e->in[0]->data, e->in[1]->data, y->data, e->aux);
}

static void input_grad_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *gy = e->in[0], *w = e->in[1];
    ag_conv_geom g = geom_of(AG_ATTR(e, conv_attr), e->out->shape, w->shape, gy->shape);
    ag_dtype dt = e->out->dtype;
    const void *G = e->out->grad->data;
    void *dg = ag_grad_data(tape, gy), *dw = ag_grad_data(tape, w);
    void *s = dg || dw ? backward_scratch(tape, &g, dt) : NULL;
    if (!s)
        return;
    if (dg) /* dg += conv2d(G, w) */
        ag_conv_forward(&g, dt, G, w->data, NULL, dg, true, s);
    if (dw) /* dw += weight_grad(G, g) */
        ag_conv_weight_grad(&g, dt, G, gy->data, dw, true, NULL, s);
}

static void input_grad_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const conv_attr *a = AG_ATTR(e, conv_attr);
    ag_tensor *gy = e->in[0], *w = e->in[1];
    if (ag_needs_grad(tape, gy)) /* dg = conv2d(G, w) */
        gin[0] = conv2d_run(tape, gout, w, NULL, a);
    if (ag_needs_grad(tape, w)) /* dw = weight_grad(G, g) */
        gin[1] = weight_grad_run(tape, gout, gy, a, w->shape);
}

/* ---- conv2d_weight_grad: in x [N, C, H, W], g [N, O, Ho, Wo]; out w's shape ---- */

static void weight_grad_forward(ag_entry *e)
{
    const conv_attr *a = AG_ATTR(e, conv_attr);
    ag_conv_geom g = geom_of(a, e->in[0]->shape, e->out->shape, e->in[1]->shape);
    ag_conv_weight_grad(&g, e->out->dtype, e->in[0]->data, e->in[1]->data, e->out->data,
                        false, NULL, e->aux);
}

static void weight_grad_backward(ag_tape *tape, ag_entry *e)
{
    ag_tensor *x = e->in[0], *gy = e->in[1];
    ag_conv_geom g = geom_of(AG_ATTR(e, conv_attr), x->shape, e->out->shape, gy->shape);
    ag_dtype dt = e->out->dtype;
    const void *G = e->out->grad->data;
    void *dx = ag_grad_data(tape, x), *dg = ag_grad_data(tape, gy);
    void *s = dx || dg ? backward_scratch(tape, &g, dt) : NULL;
    if (!s)
        return;
    if (dx) /* dx += input_grad(g, G) */
        ag_conv_input_grad(&g, dt, gy->data, G, dx, s);
    if (dg) /* dg += conv2d(x, G) */
        ag_conv_forward(&g, dt, x->data, G, NULL, dg, true, s);
}

static void weight_grad_vjp(ag_tape *tape, const ag_entry *e, ag_tensor *gout, ag_tensor **gin)
{
    const conv_attr *a = AG_ATTR(e, conv_attr);
    ag_tensor *x = e->in[0], *gy = e->in[1];
    if (ag_needs_grad(tape, x)) /* dx = input_grad(g, G) */
        gin[0] = input_grad_run(tape, gy, gout, a, x->shape);
    if (ag_needs_grad(tape, gy)) /* dg = conv2d(x, G) */
        gin[1] = conv2d_run(tape, x, gout, NULL, a);
}

/* ---- checks and the public functions ---- */

/* The options of a convolution over sp spatial dims (1 or 2), as given. */
typedef struct {
    const int64_t *s, *p, *d;
    int64_t groups;
} conv_opts;

/* opt (0: def) into *out when in [lo, OPT_MAX]; else keeps AG_ERR_ARG. */
static bool resolve(ag_tape *t, const char *fn, const char *name, int sp, int i, int64_t v,
                    int64_t def, int64_t lo, int64_t *out)
{
    char nm[32];
    snprintf(nm, sizeof nm, sp == 2 ? "%s[%d]" : "%s", name, i);
    *out = v == 0 ? def : v;
    if (*out >= lo && *out <= OPT_MAX)
        return true;
    ag_fail(t, AG_ERR_ARG, "%s: %s is %lld (must be in [%lld, %d]%s)", fn, nm, (long long)v,
            (long long)lo, OPT_MAX, def ? "; 0 means 1" : "");
    return false;
}

static bool check_opts(ag_tape *t, const char *fn, int sp, const conv_opts *o, conv_attr *a)
{
    *a = (conv_attr){.s = {1, 1}, .d = {1, 1}};
    int off = 2 - sp; /* conv1d fills the W dim */
    for (int i = 0; i < sp; i++)
        if (!resolve(t, fn, "stride", sp, i, o->s[i], 1, 1, &a->s[off + i]) ||
            !resolve(t, fn, "padding", sp, i, o->p[i], 0, 0, &a->p[off + i]) ||
            !resolve(t, fn, "dilation", sp, i, o->d[i], 1, 1, &a->d[off + i]))
            return false;
    return resolve(t, fn, "groups", 1, 0, o->groups, 1, 1, &a->groups);
}

/* Channel counts of x, w and b against groups; false with AG_ERR_SHAPE. */
static bool check_channels(ag_tape *t, const char *fn, const ag_tensor *x, const ag_tensor *w,
                           const ag_tensor *b, int64_t groups)
{
    char s1[128], s2[128];
    ag_shape_str(x, s1, sizeof s1);
    ag_shape_str(w, s2, sizeof s2);
    int64_t C = x->shape[1], O = w->shape[0];
    if (C % groups || O % groups)
        return ag_fail(t, AG_ERR_SHAPE, "%s: groups %lld does not divide %s (x %s, w %s)", fn,
                       (long long)groups, C % groups ? "x's C_in" : "w's C_out", s1, s2), false;
    if (w->shape[1] != C / groups)
        return ag_fail(t, AG_ERR_SHAPE, "%s: w %s takes %lld input channels a group but x %s "
                       "has %lld / groups %lld = %lld", fn, s2, (long long)w->shape[1], s1,
                       (long long)C, (long long)groups, (long long)(C / groups)), false;
    if (b && (b->ndim != 1 || b->shape[0] != O)) {
        char s3[128];
        return ag_fail(t, AG_ERR_SHAPE, "%s: b %s does not match w %s (b must be [%lld])", fn,
                       ag_shape_str(b, s3, sizeof s3), s2, (long long)O), false;
    }
    return true;
}

/* Kernel against the padded input along each of the last sp dims, in
 * double so that absurd sizes cannot overflow; false with AG_ERR_SHAPE. */
static bool check_sizes(ag_tape *t, const char *fn, int sp, const ag_tensor *x,
                        const ag_tensor *w, const conv_attr *a)
{
    char s1[128], s2[128];
    ag_shape_str(x, s1, sizeof s1);
    ag_shape_str(w, s2, sizeof s2);
    double cols = 1, outs = (double)x->shape[0] * (double)w->shape[0];
    for (int i = 0; i < sp; i++) {
        int64_t in = x->shape[2 + i], k = w->shape[2 + i];
        int j = 2 - sp + i;
        double padded = (double)in + 2.0 * (double)a->p[j];
        double ek = (double)a->d[j] * (double)(k - 1) + 1;
        if (k < 1 || ek > padded)
            return ag_fail(t, AG_ERR_SHAPE, "%s: w %s's kernel, dilated by %lld, spans %.0f "
                           "but x %s padded by %lld is %.0f in dim %d", fn, s2,
                           (long long)a->d[j], ek, s1, (long long)a->p[j], padded, 2 + i),
                   false;
        double o = floor((padded - ek) / (double)a->s[j]) + 1;
        cols *= o;
        outs *= o;
    }
    cols *= (double)w->shape[1];
    for (int i = 0; i < sp; i++)
        cols *= (double)w->shape[2 + i];
    if (cols > 0x1p46 || outs > 0x1p46)
        return ag_fail(t, AG_ERR_NOMEM, "%s: x %s with w %s needs too much memory", fn, s1, s2),
               false;
    return true;
}

/* Everything about a convolution call; fills a (2-D attributes). */
static bool conv_check(ag_tape *t, const char *fn, int sp, ag_tensor *x, ag_tensor *w,
                       ag_tensor *b, const conv_opts *o, conv_attr *a)
{
    ag_tensor *in[3] = {x, w, b};
    if (!ag_check_inputs(t, fn, b ? 3 : 2, in))
        return false;
    const char *names[3] = {"x", "w", "b"};
    for (int i = 1; i < (b ? 3 : 2); i++)
        if (in[i]->dtype != x->dtype)
            return ag_fail(t, AG_ERR_DTYPE, "%s: %s is %s but x is %s", fn, names[i],
                           in[i]->dtype == AG_F64 ? "f64" : "f32",
                           x->dtype == AG_F64 ? "f64" : "f32"), false;
    char s1[128];
    if (x->ndim != sp + 2)
        return ag_fail(t, AG_ERR_SHAPE, "%s: x is %s but must be %d-D [N, C_in, %s]", fn,
                       ag_shape_str(x, s1, sizeof s1), sp + 2, sp == 2 ? "H, W" : "L"), false;
    if (w->ndim != sp + 2)
        return ag_fail(t, AG_ERR_SHAPE, "%s: w is %s but must be %d-D [C_out, C_in/groups, %s]",
                       fn, ag_shape_str(w, s1, sizeof s1), sp + 2, sp == 2 ? "kH, kW" : "k"),
               false;
    return check_opts(t, fn, sp, o, a) && check_channels(t, fn, x, w, b, a->groups) &&
           check_sizes(t, fn, sp, x, w, a);
}

ag_tensor *ag_conv2d(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b, ag_conv2d_opts o)
{
    conv_opts co = {o.stride, o.padding, o.dilation, o.groups};
    conv_attr a;
    if (!conv_check(t, "ag_conv2d", 2, x, w, b, &co, &a))
        return NULL;
    return conv2d_run(t, x, w, b, &a);
}

/* [N, C, L] as [N, C, 1, L] (a copy, on the tape) */
static ag_tensor *as_2d(ag_tape *t, ag_tensor *x)
{
    int64_t s[4] = {x->shape[0], x->shape[1], 1, x->shape[2]};
    return ag_reshape(t, x, 4, s);
}

ag_tensor *ag_conv1d(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b, ag_conv1d_opts o)
{
    conv_opts co = {&o.stride, &o.padding, &o.dilation, o.groups};
    conv_attr a;
    if (!conv_check(t, "ag_conv1d", 1, x, w, b, &co, &a))
        return NULL;
    ag_tensor *x2 = as_2d(t, x), *w2 = as_2d(t, w);
    ag_tensor *y = x2 && w2 ? conv2d_run(t, x2, w2, b, &a) : NULL;
    if (!y)
        return NULL;
    int64_t s[3] = {y->shape[0], y->shape[1], y->shape[3]};
    return ag_reshape(t, y, 3, s);
}

/* ---- samples: stride, padding, dilation, groups (depthwise too), odd
 * sizes with rows no window reaches, 1x1 kernels ---- */

static const struct {
    int64_t x[4], w[4], s[2], p[2], d[2], groups;
    bool bias;
} conv_cases[] = {
    {{2, 3, 5, 6}, {4, 3, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true},
    {{1, 2, 8, 6}, {3, 2, 3, 2}, {2, 2}, {0, 1}, {1, 1}, 1, false}, /* row 7 untouched */
    {{1, 2, 7, 7}, {2, 2, 3, 3}, {1, 2}, {2, 1}, {2, 2}, 1, true},  /* dilation 2 */
    {{2, 4, 5, 4}, {6, 2, 3, 3}, {1, 1}, {1, 0}, {1, 1}, 2, true},  /* groups */
    {{1, 3, 5, 5}, {3, 1, 3, 3}, {2, 1}, {1, 1}, {1, 1}, 3, false}, /* depthwise */
    {{2, 3, 4, 3}, {2, 3, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1, true},  /* pointwise */
    {{1, 2, 5, 4}, {2, 2, 1, 1}, {2, 2}, {1, 0}, {1, 1}, 1, false}, /* 1x1, strided, padded */
    {{2, 1, 5, 5}, {6, 1, 2, 2}, {1, 1}, {0, 0}, {1, 1}, 1, true},  /* K < C_out: dw^T */
    {{1, 8, 4, 5}, {8, 8, 3, 3}, {1, 1}, {1, 0}, {1, 1}, 1, true},  /* 8 channels, odd W_out */
};
#define N_CONV_CASES (int)(sizeof conv_cases / sizeof conv_cases[0])

static conv_attr case_attr(int k)
{
    conv_attr a = {.groups = conv_cases[k].groups};
    for (int i = 0; i < 2; i++) {
        a.s[i] = conv_cases[k].s[i];
        a.p[i] = conv_cases[k].p[i];
        a.d[i] = conv_cases[k].d[i];
    }
    return a;
}

static void case_out_shape(int k, int64_t *ys)
{
    conv_attr a = case_attr(k);
    ys[0] = conv_cases[k].x[0];
    ys[1] = conv_cases[k].w[0];
    for (int i = 0; i < 2; i++)
        ys[2 + i] = out_size(conv_cases[k].x[2 + i], conv_cases[k].w[2 + i], a.s[i], a.p[i],
                             a.d[i]);
}

/* in[0..n) drawn with the given shapes, the case number in iarg[0] */
static bool conv_sample_of(int which, ag_rng *rng, ag_op_sample *s, ag_gradcheck_fn fn,
                           const int64_t *s0, const int64_t *s1)
{
    s->in[0] = ag_sample_tensor(rng, 4, s0, AG_SAMPLE_RANGE, -1, 1);
    s->in[1] = ag_sample_tensor(rng, 4, s1, AG_SAMPLE_RANGE, -1, 1);
    s->n_in = 2;
    s->iarg[0] = which;
    s->fn = fn;
    return true;
}

static ag_tensor *conv2d_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    ag_op_sample *s = ctx;
    int k = (int)s->iarg[0];
    ag_conv2d_opts o = {.groups = conv_cases[k].groups};
    for (int i = 0; i < 2; i++) {
        o.stride[i] = conv_cases[k].s[i];
        o.padding[i] = conv_cases[k].p[i];
        o.dilation[i] = conv_cases[k].d[i];
    }
    return ag_conv2d(t, in[0], in[1], s->n_in > 2 ? in[2] : NULL, o);
}

static bool conv2d_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    if (which >= N_CONV_CASES)
        return false;
    conv_sample_of(which, rng, s, conv2d_apply, conv_cases[which].x, conv_cases[which].w);
    if (conv_cases[which].bias)
        s->in[s->n_in++] = ag_sample_tensor(rng, 1, conv_cases[which].w, AG_SAMPLE_RANGE, -1, 1);
    return true;
}

static ag_tensor *input_grad_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    int k = (int)((ag_op_sample *)ctx)->iarg[0];
    conv_attr a = case_attr(k);
    return input_grad_run(t, in[0], in[1], &a, conv_cases[k].x);
}

static bool input_grad_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    int64_t ys[4];
    if (which >= N_CONV_CASES)
        return false;
    case_out_shape(which, ys);
    return conv_sample_of(which, rng, s, input_grad_apply, ys, conv_cases[which].w);
}

static ag_tensor *weight_grad_apply(ag_tape *t, ag_tensor **in, void *ctx)
{
    int k = (int)((ag_op_sample *)ctx)->iarg[0];
    conv_attr a = case_attr(k);
    return weight_grad_run(t, in[0], in[1], &a, conv_cases[k].w);
}

static bool weight_grad_sample(int which, ag_rng *rng, ag_op_sample *s)
{
    int64_t ys[4];
    if (which >= N_CONV_CASES)
        return false;
    case_out_shape(which, ys);
    return conv_sample_of(which, rng, s, weight_grad_apply, conv_cases[which].x, ys);
}

const ag_op_def ag_op_conv2d = {.name = "conv2d", .forward = conv2d_forward,
                                .backward = conv2d_backward, .vjp = conv2d_vjp,
                                .sample = conv2d_sample};
const ag_op_def ag_op_conv2d_input_grad = {.name = "conv2d_input_grad",
                                           .forward = input_grad_forward,
                                           .backward = input_grad_backward,
                                           .vjp = input_grad_vjp,
                                           .sample = input_grad_sample};
const ag_op_def ag_op_conv2d_weight_grad = {.name = "conv2d_weight_grad",
                                            .forward = weight_grad_forward,
                                            .backward = weight_grad_backward,
                                            .vjp = weight_grad_vjp,
                                            .sample = weight_grad_sample};
