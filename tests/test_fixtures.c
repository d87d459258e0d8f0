/* test_fixtures.c — every op of the table against PyTorch: values and
 * gradients from the committed fixtures tests/reference/ops/<op>.<dt>.safetensors
 * (written by tests/reference/make_fixtures.py, which documents the layout).
 * f64 must agree within 1e-10 relative, f32 within 1e-5.  An op of the table
 * without fixtures, or without a dispatch entry here, fails the test, so a
 * new op cannot hide. */
#include "test_util.h"

#include "autograd_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_IN 8

/* |ours - torch| <= atol + rtol * |torch| */
static const struct {
    double rtol, atol;
} g_tol[2] = {[AG_F32] = {1e-5, 1e-6}, [AG_F64] = {1e-10, 1e-12}};

/* Largest errors seen per dtype: relative (over |torch| >= 1e-3) and absolute. */
static double g_max_rel[2], g_max_abs[2];
static int64_t g_compared[2];

/* One case of one file: its tensors are "case<k>.<what>". */
typedef struct {
    const ag_safetensors *f;
    const char *op;
    int k;
    json_t *args;
} fx_case;

static ag_tensor *fx_get(const fx_case *c, const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "case%d.%s", c->k, what);
    return ag_safetensors_get(c->f, name);
}

static json_t *fx_arg(const fx_case *c, const char *key)
{
    json_t *v = json_object_get(c->args, key);
    if (!v)
        fail_msg("%s case %d: argument \"%s\" missing", c->op, c->k, key);
    return v;
}

/* An integer argument; "all" is AG_ALL. */
static int64_t fx_int(const fx_case *c, const char *key)
{
    json_t *v = fx_arg(c, key);
    if (json_is_string(v) && strcmp(json_string_value(v), "all") == 0)
        return AG_ALL;
    return json_integer_value(v);
}

/* A number argument; "inf" / "-inf" are infinities. */
static double fx_num(const fx_case *c, const char *key)
{
    json_t *v = fx_arg(c, key);
    if (json_is_string(v))
        return json_string_value(v)[0] == '-' ? -INFINITY : INFINITY;
    return json_number_value(v);
}

static bool fx_bool(const fx_case *c, const char *key) { return json_is_true(fx_arg(c, key)); }

/* An integer list argument into out[max]; returns its length. */
static int fx_list(const fx_case *c, const char *key, int64_t *out, int max)
{
    json_t *v = fx_arg(c, key);
    int n = (int)json_array_size(v);
    assert_true(n <= max);
    for (int i = 0; i < n; i++)
        out[i] = json_integer_value(json_array_get(v, (size_t)i));
    return n;
}

/* ---- dispatch: op name -> the tapegrad call -------------------------------- */

typedef ag_tensor *(*fx_fn)(ag_tape *t, ag_tensor **in, int n, const fx_case *c);

#define FX_BINARY(NAME)                                                       \
    static ag_tensor *fx_##NAME(ag_tape *t, ag_tensor **in, int n, const fx_case *c) \
    {                                                                         \
        (void)n, (void)c;                                                     \
        return ag_##NAME(t, in[0], in[1]);                                    \
    }
#define FX_UNARY(NAME)                                                        \
    static ag_tensor *fx_##NAME(ag_tape *t, ag_tensor **in, int n, const fx_case *c) \
    {                                                                         \
        (void)n, (void)c;                                                     \
        return ag_##NAME(t, in[0]);                                           \
    }
#define FX_UNARY_C(NAME)                                                      \
    static ag_tensor *fx_##NAME(ag_tape *t, ag_tensor **in, int n, const fx_case *c) \
    {                                                                         \
        (void)n;                                                              \
        return ag_##NAME(t, in[0], fx_num(c, "c"));                           \
    }
#define FX_REDUCE(NAME)                                                       \
    static ag_tensor *fx_##NAME(ag_tape *t, ag_tensor **in, int n, const fx_case *c) \
    {                                                                         \
        (void)n;                                                              \
        return ag_##NAME(t, in[0], (int)fx_int(c, "axis"), fx_bool(c, "keepdim")); \
    }
#define FX_AXIS(NAME)                                                         \
    static ag_tensor *fx_##NAME(ag_tape *t, ag_tensor **in, int n, const fx_case *c) \
    {                                                                         \
        (void)n;                                                              \
        return ag_##NAME(t, in[0], (int)fx_int(c, "axis"));                   \
    }

FX_BINARY(add) FX_BINARY(sub) FX_BINARY(mul) FX_BINARY(div) FX_BINARY(pow)
FX_BINARY(maximum) FX_BINARY(minimum) FX_BINARY(matmul)
FX_UNARY(neg) FX_UNARY(exp) FX_UNARY(log) FX_UNARY(sqrt) FX_UNARY(abs) FX_UNARY(sin)
FX_UNARY(cos) FX_UNARY(tanh) FX_UNARY(sigmoid) FX_UNARY(relu) FX_UNARY(gelu)
FX_UNARY(gelu_tanh) FX_UNARY(softplus) FX_UNARY(erf)
FX_UNARY_C(leaky_relu) FX_UNARY_C(add_scalar) FX_UNARY_C(mul_scalar) FX_UNARY_C(pow_scalar)
FX_REDUCE(sum) FX_REDUCE(mean) FX_REDUCE(max) FX_REDUCE(min) FX_REDUCE(logsumexp)
FX_REDUCE(argmax)
FX_AXIS(squeeze) FX_AXIS(unsqueeze) FX_AXIS(softmax) FX_AXIS(log_softmax)

static ag_tensor *fx_linear(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)c;
    return ag_linear(t, in[0], in[1], n > 2 ? in[2] : NULL);
}

static ag_tensor *fx_variance(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    return ag_variance(t, in[0], (int)fx_int(c, "axis"), fx_bool(c, "keepdim"),
                       (int)fx_int(c, "correction"));
}

static ag_tensor *fx_reshape(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    int64_t shape[AG_MAX_DIMS];
    int nd = fx_list(c, "shape", shape, AG_MAX_DIMS);
    return ag_reshape(t, in[0], nd, shape);
}

static ag_tensor *fx_expand(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    int64_t shape[AG_MAX_DIMS];
    int nd = fx_list(c, "shape", shape, AG_MAX_DIMS);
    return ag_expand(t, in[0], nd, shape);
}

static ag_tensor *fx_sum_to(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    ag_tensor like = {.dtype = in[0]->dtype};
    like.ndim = fx_list(c, "shape", like.shape, AG_MAX_DIMS);
    return ag_sum_to(t, in[0], &like);
}

static ag_tensor *fx_transpose(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    return ag_transpose(t, in[0], (int)fx_int(c, "d0"), (int)fx_int(c, "d1"));
}

static ag_tensor *fx_permute(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    int64_t p[AG_MAX_DIMS];
    int perm[AG_MAX_DIMS];
    int nd = fx_list(c, "perm", p, AG_MAX_DIMS);
    for (int i = 0; i < nd; i++)
        perm[i] = (int)p[i];
    return ag_permute(t, in[0], perm);
}

static ag_tensor *fx_slice(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    return ag_slice(t, in[0], (int)fx_int(c, "axis"), fx_int(c, "start"), fx_int(c, "stop"),
                    fx_int(c, "step"));
}

static ag_tensor *fx_unslice(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    return ag_unslice(t, in[0], (int)fx_int(c, "axis"), fx_int(c, "size"), fx_int(c, "start"),
                      fx_int(c, "step"));
}

static ag_tensor *fx_pad(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    int64_t pad[2 * AG_MAX_DIMS];
    fx_list(c, "pad", pad, 2 * AG_MAX_DIMS);
    return ag_pad(t, in[0], pad, fx_num(c, "value"));
}

static ag_tensor *fx_concat(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    return ag_concat(t, in, n, (int)fx_int(c, "axis"));
}

static ag_tensor *fx_stack(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    return ag_stack(t, in, n, (int)fx_int(c, "axis"));
}

static ag_tensor *fx_gather(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    return ag_gather(t, in[0], (int)fx_int(c, "axis"), fx_get(c, "index"));
}

static ag_tensor *fx_index_select(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    int64_t idx[64];
    int m = fx_list(c, "idx", idx, 64);
    return ag_index_select(t, in[0], (int)fx_int(c, "axis"), idx, m);
}

static ag_tensor *fx_scatter_add(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    return ag_scatter_add(t, in[0], (int)fx_int(c, "axis"), fx_get(c, "index"), in[1]);
}

static ag_tensor *fx_index_add(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    int64_t idx[64];
    int m = fx_list(c, "idx", idx, 64);
    return ag_index_add(t, in[0], (int)fx_int(c, "axis"), idx, m, in[1]);
}

static ag_tensor *fx_where(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n, (void)c;
    return ag_where(t, in[0], in[1], in[2]);
}

static ag_tensor *fx_clamp(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    return ag_clamp(t, in[0], fx_num(c, "lo"), fx_num(c, "hi"));
}

static ag_tensor *fx_cross_entropy_logits(ag_tape *t, ag_tensor **in, int n,
                                          const fx_case *c)
{
    (void)n;
    int64_t labels[64];
    int m = fx_list(c, "labels", labels, 64);
    const char *red = json_string_value(fx_arg(c, "reduction"));
    json_t *ign = fx_arg(c, "ignore");
    ag_ce_opts o = {fx_num(c, "smoothing"),
                    json_is_null(ign) ? AG_CE_NO_IGNORE : json_integer_value(ign),
                    strcmp(red, "sum") == 0    ? AG_REDUCE_SUM
                    : strcmp(red, "none") == 0 ? AG_REDUCE_NONE
                                               : AG_REDUCE_MEAN};
    return ag_cross_entropy_logits(t, in[0], labels, m, &o);
}

/* Our mask comes from our generator, not torch's: see check_dropout. */
static ag_tensor *fx_dropout(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    ag_rng rng;
    ag_rng_seed(&rng, 1234 + (uint64_t)c->k);
    return ag_dropout(t, in[0], fx_num(c, "p"), fx_bool(c, "training"), &rng);
}

static ag_tensor *fx_attention(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    return ag_attention(t, in[0], in[1], in[2], n > 3 ? in[3] : NULL, fx_bool(c, "causal"),
                        fx_num(c, "scale"));
}

static ag_tensor *fx_attention_qkv(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    return ag_attention_qkv(t, in[0], fx_int(c, "heads"), n > 1 ? in[1] : NULL,
                            fx_bool(c, "causal"), fx_num(c, "scale"));
}

static ag_tensor *fx_topk(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    return ag_topk(t, in[0], fx_int(c, "k"), (int)fx_int(c, "axis"), fx_bool(c, "largest"),
                   NULL);
}

/* The fused steps and layer norm (issue 15; fixtures by
 * tests/reference/make_seq_fixtures.py): lstm_cell_c's row is ag_lstm_cell's
 * c', lstm_cell_h's its h'. */
static ag_tensor *fx_lstm_cell_c(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n, (void)c;
    ag_tensor *cn;
    return ag_lstm_cell(t, in[0], in[1], &cn) ? cn : NULL;
}

static ag_tensor *fx_lstm_cell_h(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n, (void)c;
    ag_tensor *cn;
    return ag_lstm_cell(t, in[0], in[1], &cn);
}

static ag_tensor *fx_gru_cell(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n, (void)c;
    return ag_gru_cell(t, in[0], in[1], in[2]);
}

static ag_tensor *fx_layer_norm(ag_tape *t, ag_tensor **in, int n, const fx_case *c)
{
    (void)n;
    bool hw = fx_bool(c, "has_w"), hb = fx_bool(c, "has_b");
    return ag_layer_norm(t, in[0], hw ? in[1] : NULL, hb ? in[1 + hw] : NULL,
                         fx_num(c, "eps"));
}

#define FX(NAME) {#NAME, fx_##NAME}
static const struct {
    const char *name;
    fx_fn fn;
} g_dispatch[] = {
    FX(add), FX(sub), FX(mul), FX(div), FX(pow), FX(maximum), FX(minimum),
    FX(neg), FX(exp), FX(log), FX(sqrt), FX(abs), FX(sin), FX(cos), FX(tanh),
    FX(sigmoid), FX(relu), FX(leaky_relu), FX(gelu), FX(gelu_tanh), FX(softplus), FX(erf),
    FX(add_scalar), FX(mul_scalar), FX(pow_scalar),
    FX(sum), FX(mean), FX(max), FX(min), FX(logsumexp), FX(variance), FX(argmax),
    FX(matmul), FX(linear),
    FX(reshape), FX(squeeze), FX(unsqueeze), FX(transpose), FX(permute), FX(expand),
    FX(sum_to),
    FX(slice), FX(unslice), FX(pad), FX(concat), FX(stack),
    FX(gather), FX(scatter_add), FX(index_select), FX(index_add), FX(where), FX(clamp),
    FX(softmax), FX(log_softmax), FX(cross_entropy_logits), FX(dropout),
    FX(attention), FX(attention_qkv), FX(topk),
    FX(lstm_cell_c), FX(lstm_cell_h), FX(gru_cell), FX(layer_norm),
};

static fx_fn dispatch(const char *name)
{
    for (size_t i = 0; i < sizeof g_dispatch / sizeof g_dispatch[0]; i++)
        if (strcmp(g_dispatch[i].name, name) == 0)
            return g_dispatch[i].fn;
    return NULL;
}

/* Convolution and pooling rows: tests/test_ops_conv.c checks them against
 * tests/reference/conv/ (make_conv_fixtures.py); here their files must
 * exist, named for the op, or the op counts as unmatched. */
static bool checked_elsewhere(const char *op)
{
    static const char *const conv_ops[] = {"conv2d", "conv2d_input_grad",
                                           "conv2d_weight_grad", "max_pool2d", "avg_pool2d",
                                           "adaptive_avg_pool2d", "avg_pool2d_grad"};
    for (size_t i = 0; i < sizeof conv_ops / sizeof conv_ops[0]; i++) {
        if (strcmp(op, conv_ops[i]) != 0)
            continue;
        bool ok = true;
        for (int d = 0; d < 2; d++) {
            char rel[128];
            snprintf(rel, sizeof rel, "tests/reference/conv/%s.%s.safetensors", op,
                     d ? "f32" : "f64");
            ag_safetensors *f = tg_load_fixture(rel);
            const char *fop = f ? ag_safetensors_meta(f, "op") : NULL;
            ok &= fop && strcmp(fop, op) == 0;
            ag_safetensors_free(f);
        }
        return ok;
    }
    return false;
}

/* ---- comparison ------------------------------------------------------------ */

/* Compares ours (NULL: zeros) with torch's; prints the first mismatches. */
static bool close_to(const fx_case *c, const char *what, const ag_tensor *ours,
                     const ag_tensor *ref)
{
    char s1[96], s2[96];
    if (ours && (ag_ndim(ours) != ag_ndim(ref) ||
                 memcmp(ag_shape(ours), ag_shape(ref), sizeof(int64_t) * (size_t)ag_ndim(ref)))) {
        print_message("  %s case %d %s: shape %s, torch %s\n", c->op, c->k, what,
                      ag_shape_str(ours, s1, sizeof s1), ag_shape_str(ref, s2, sizeof s2));
        return false;
    }
    ag_dtype dt = ag_dtype_of(ref);
    int bad = 0;
    for (int64_t i = 0; i < ag_numel(ref); i++) {
        double a = ours ? ag_get(ours, i) : 0, b = ag_get(ref, i), d = fabs(a - b);
        if (a == b || (isnan(a) && isnan(b)))
            d = 0;
        if (d > g_max_abs[dt])
            g_max_abs[dt] = d;
        if (fabs(b) >= 1e-3 && d / fabs(b) > g_max_rel[dt])
            g_max_rel[dt] = d / fabs(b);
        g_compared[dt]++;
        if (!(d <= g_tol[dt].atol + g_tol[dt].rtol * fabs(b)) && bad++ < 3)
            print_message("  %s.%s case %d %s[%lld]: %.17g, torch %.17g\n", c->op,
                          dt == AG_F64 ? "f64" : "f32", c->k, what, (long long)i, a, b);
    }
    return bad == 0;
}

/* Dropout: ours and torch's masks differ, so each output must be 0 or
 * x / (1 - p) (torch's too, which checks the convention), where both kept
 * an element the values agree, and the gradient is seed / (1 - p) on kept
 * elements and 0 elsewhere.  Evaluation and p = 0 are the identity. */
static bool check_dropout(const fx_case *c, ag_tensor *x, ag_tensor *ours)
{
    const ag_tensor *ref = fx_get(c, "out"), *seed = fx_get(c, "seed"),
                    *gref = fx_get(c, "grad0");
    double p = fx_num(c, "p"), scale = 1.0 / (1.0 - p);
    ag_dtype dt = ag_dtype_of(x);
    if (!fx_bool(c, "training") || p == 0)
        return ours == x && close_to(c, "out", ours, ref) &&
               close_to(c, "grad0", ag_grad(x), gref);
    bool ok = true;
    for (int64_t i = 0; i < ag_numel(x); i++) {
        double xi = ag_get(x, i) * scale, a = ag_get(ours, i), b = ag_get(ref, i);
        double ga = ag_get(ag_grad(x), i), gb = ag_get(gref, i), gi = ag_get(seed, i) * scale;
        double tl = g_tol[dt].atol + g_tol[dt].rtol * fabs(xi);
        double tg = g_tol[dt].atol + g_tol[dt].rtol * fabs(gi);
        bool kept_a = a != 0, kept_b = b != 0;
        ok &= !kept_a || (fabs(a - xi) <= tl && fabs(ga - gi) <= tg);
        ok &= kept_a || ga == 0;
        ok &= !kept_b || (fabs(b - xi) <= tl && fabs(gb - gi) <= tg);
        ok &= !(kept_a && kept_b) || (fabs(a - b) <= tl && fabs(ga - gb) <= tg);
    }
    if (!ok)
        print_message("  dropout case %d: kept elements are not x / (1 - p)\n", c->k);
    return ok;
}

/* Runs case k of file f; true when values and gradients agree. */
static bool run_case(const ag_safetensors *f, const char *op, fx_fn fn, int k)
{
    char key[32];
    snprintf(key, sizeof key, "case%d.args", k);
    const char *js = ag_safetensors_meta(f, key);
    json_error_t jerr;
    fx_case c = {f, op, k, js ? json_loads(js, 0, &jerr) : NULL};
    if (!c.args) {
        print_message("  %s case %d: no or bad %s\n", op, k, key);
        return false;
    }
    ag_tensor *in[MAX_IN];
    int n = 0;
    for (; n < MAX_IN; n++) {
        char what[16];
        snprintf(what, sizeof what, "in%d", n);
        const ag_tensor *src = fx_get(&c, what);
        if (!src)
            break;
        in[n] = ag_tensor_clone(src);
        snprintf(what, sizeof what, "grad%d", n);
        ag_set_requires_grad(in[n], fx_get(&c, what) != NULL);
    }
    ag_tape *t = ag_tape_new();
    ag_tensor *out = fn(t, in, n, &c), *seed = fx_get(&c, "seed");
    bool ok = out != NULL;
    if (!ok)
        print_message("  %s case %d: %s\n", op, k, ag_tape_error(t));
    if (ok && seed && ag_backward_seeded(t, out, seed) != AG_OK) {
        print_message("  %s case %d: backward: %s\n", op, k, ag_tape_error(t));
        ok = false;
    }
    if (ok && strcmp(op, "dropout") == 0) {
        ok = check_dropout(&c, in[0], out);
    } else if (ok) {
        ok = close_to(&c, "out", out, fx_get(&c, "out"));
        for (int i = 0; i < n; i++) {
            char what[16];
            snprintf(what, sizeof what, "grad%d", i);
            const ag_tensor *g = fx_get(&c, what);
            if (g)
                ok &= close_to(&c, what, ag_grad(in[i]), g);
        }
    }
    ag_tape_free(t);
    for (int i = 0; i < n; i++)
        ag_tensor_free(in[i]);
    json_decref(c.args);
    return ok;
}

/* Every case of <op>.<dt>.safetensors; false when missing or any differs. */
static bool run_file(const char *op, fx_fn fn, const char *dt)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tests/reference/ops/%s.%s.safetensors", op, dt);
    ag_safetensors *f = tg_load_fixture(rel);
    if (!f)
        return false;
    const char *fop = ag_safetensors_meta(f, "op"), *ncases = ag_safetensors_meta(f, "cases");
    const char *fdt = ag_safetensors_meta(f, "dtype");
    bool ok = fop && strcmp(fop, op) == 0 && fdt && strcmp(fdt, dt) == 0 && ncases &&
              atoi(ncases) > 0;
    if (!ok)
        print_message("  %s: %s has bad metadata\n", op, rel);
    for (int k = 0; ok && k < atoi(ncases); k++)
        ok &= run_case(f, op, fn, k);
    ag_safetensors_free(f);
    return ok;
}

static void test_fixtures_every_op_matches_torch(void **state)
{
    (void)state;
    int matched = 0;
    char missing[1024] = "";
    for (int id = 0; id < AG_OP_COUNT; id++) {
        const char *op = ag_op_table[id]->name;
        if (checked_elsewhere(op)) {
            matched++;
            continue;
        }
        fx_fn fn = dispatch(op);
        bool ok = fn != NULL;
        if (!ok)
            print_message("  %s: no dispatch entry in tests/test_fixtures.c\n", op);
        ok = ok && run_file(op, fn, "f64");
        ok = ok && run_file(op, fn, "f32");
        if (ok)
            matched++;
        else if (strlen(missing) + strlen(op) + 2 < sizeof missing)
            strcat(strcat(missing, " "), op);
    }
    print_message("max error vs PyTorch: f64 rel %.3g abs %.3g (%lld values); "
                  "f32 rel %.3g abs %.3g (%lld values)\n",
                  g_max_rel[AG_F64], g_max_abs[AG_F64], (long long)g_compared[AG_F64],
                  g_max_rel[AG_F32], g_max_abs[AG_F32], (long long)g_compared[AG_F32]);
    /* test_ops gradchecks every op of the table in f64 */
    print_message("op table: %d ops, %d gradchecked, %d fixture-matched\n", AG_OP_COUNT,
                  AG_OP_COUNT, matched);
    if (matched != AG_OP_COUNT)
        fail_msg("ops without matching PyTorch fixtures:%s", missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_every_op_matches_torch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
