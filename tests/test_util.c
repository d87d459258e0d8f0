#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

const char *tg_path(const char *rel)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", TG_SOURCE_DIR, rel);
    return buf;
}

void tg_assert_doubles_close(const double *a, const double *b, int64_t n, double rtol,
                             double atol, const char *file, int line)
{
    int64_t bad = 0, worst = -1;
    double maxdiff = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        bool ok = d <= atol + rtol * fabs(b[i]) || (isnan(a[i]) && isnan(b[i])) ||
                  (a[i] == b[i]);
        if (d > maxdiff || (isnan(d) && !ok)) {
            maxdiff = d;
            worst = i;
        }
        if (!ok && bad++ < 5)
            print_message("  mismatch at [%lld]: %.17g vs %.17g (diff %.3g)\n",
                          (long long)i, a[i], b[i], d);
    }
    if (bad) {
        print_message("%s:%d: %lld of %lld elements differ; max diff %.3g at [%lld]\n",
                      file, line, (long long)bad, (long long)n, maxdiff, (long long)worst);
        _fail(file, line);
    }
}

void tg_assert_tensor_close(const ag_tensor *a, const ag_tensor *b, double rtol,
                            double atol, const char *file, int line)
{
    if (!a || !b) {
        print_message("%s:%d: tensor is NULL (%s)\n", file, line,
                      ag_last_error() ? ag_last_error() : "");
        _fail(file, line);
        return;
    }
    char s1[128], s2[128];
    if (ag_ndim(a) != ag_ndim(b) ||
        memcmp(ag_shape(a), ag_shape(b), (size_t)ag_ndim(a) * sizeof(int64_t)) != 0) {
        print_message("%s:%d: shapes differ: %s vs %s\n", file, line,
                      ag_shape_str(a, s1, sizeof s1), ag_shape_str(b, s2, sizeof s2));
        _fail(file, line);
        return;
    }
    int64_t n = ag_numel(a);
    double *x = malloc((size_t)(2 * n + 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        x[i] = ag_get(a, i);
        x[n + i] = ag_get(b, i);
    }
    tg_assert_doubles_close(x, x + n, n, rtol, atol, file, line);
    free(x);
}

void tg_assert_gradcheck(ag_gradcheck_fn fn, void *ctx, ag_tensor **in, int n,
                         double rtol, double atol, const char *file, int line)
{
    ag_gradcheck_opts o = {.rtol = rtol, .atol = atol};
    ag_gradcheck_report r;
    ag_status st = ag_gradcheck(fn, ctx, in, n, &o, &r);
    if (st != AG_OK) {
        print_message("%s:%d: %s (%s)\n", file, line, r.message, ag_status_str(st));
        _fail(file, line);
    }
}

ag_tensor *tg_f64(int ndim, const int64_t *shape, const double *data)
{
    return ag_tensor_from_f64(ndim, shape, data);
}

ag_tensor *tg_convert(const ag_tensor *t, ag_dtype dt)
{
    ag_tensor *c = ag_tensor_new(dt, ag_ndim(t), ag_shape(t));
    for (int64_t i = 0; c && i < ag_numel(t); i++)
        ag_set(c, i, ag_get(t, i));
    return c;
}

void tg_assert_same_bits(const ag_tensor *a, const ag_tensor *b)
{
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(ag_dtype_of(a), ag_dtype_of(b));
    assert_int_equal(ag_numel(a), ag_numel(b));
    assert_memory_equal(ag_data_const(a), ag_data_const(b),
                        (size_t)ag_numel(a) * ag_dtype_size(ag_dtype_of(a)));
}

void tg_assert_shape(const ag_tensor *t, int ndim, const int64_t *shape)
{
    assert_non_null(t);
    assert_int_equal(ag_ndim(t), ndim);
    for (int i = 0; i < ndim; i++)
        assert_int_equal(ag_shape(t)[i], shape[i]);
}

void tg_assert_tape_error(const ag_tape *t, ag_status st, const char *substr)
{
    assert_int_equal(ag_tape_status(t), st);
    const char *msg = ag_tape_error(t);
    assert_non_null(msg);
    if (!strstr(msg, substr))
        fail_msg("message \"%s\" lacks \"%s\"", msg, substr);
}

ag_safetensors *tg_load_fixture(const char *rel)
{
    ag_safetensors *f = NULL;
    if (ag_safetensors_load(tg_path(rel), &f) != AG_OK)
        print_message("cannot load %s: %s\n", rel, ag_last_error());
    return f;
}

ag_tensor *tg_fixture(const ag_safetensors *f, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    ag_tensor *t = ag_safetensors_get(f, name);
    if (!t)
        print_message("fixture tensor %s is missing\n", name);
    assert_non_null(t);
    return t;
}

int tg_split_list(const char *text, char *buf, size_t n, char **items, int max)
{
    assert_non_null(text);
    snprintf(buf, n, "%s", text);
    int k = 0;
    char *save = NULL;
    for (char *s = strtok_r(buf, ",", &save); s && k < max; s = strtok_r(NULL, ",", &save))
        items[k++] = s;
    return k;
}

double tg_rel_err(const ag_tensor *a, const ag_tensor *b)
{
    double worst = 0;
    for (int64_t i = 0; i < ag_numel(b); i++) {
        double x = ag_get(a, i), y = ag_get(b, i);
        double e = fabs(x - y) / (fabs(y) < 1e-3 ? 1e-3 : fabs(y));
        if (!(e <= worst))
            worst = e; /* NaN wins */
    }
    return worst;
}

void tg_check_rel(const ag_tensor *got, const ag_tensor *want, double rtol, double *maxrel,
                  const char *label)
{
    assert_int_equal(ag_numel(got), ag_numel(want));
    double e = tg_rel_err(got, want);
    if (!(e <= rtol))
        print_message("%s: relative error %.3g > %.3g\n", label, e, rtol);
    assert_true(e <= rtol);
    if (e > *maxrel)
        *maxrel = e;
}

void tg_set_grad(ag_tensor *p, const ag_tensor *g)
{
    ag_tape *t = ag_tape_new();
    ag_tensor *c = ag_tensor_clone(g);
    ag_set_requires_grad(p, true);
    ag_zero_grad(p);
    assert_int_equal(ag_backward(t, ag_sum(t, ag_mul(t, p, c), AG_ALL, false)), AG_OK);
    ag_tensor_free(c);
    ag_tape_free(t);
}

/* ---- counting system allocations ---- */

long tg_alloc_count;

static void *count_alloc(size_t size, size_t align, void *ctx)
{
    (void)ctx;
    tg_alloc_count++;
    return aligned_alloc(align, (size + align - 1) / align * align);
}

static void count_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

void tg_count_allocs(void)
{
    ag_set_allocator(&(ag_allocator){count_alloc, count_free, NULL});
}
