/* tensor.c — persistent tensors (caller-owned, heap) and tape tensors
 * (arena-owned), their accessors and gradient buffers. */
#include "autograd_internal.h"

#include <math.h>

size_t ag_dtype_size(ag_dtype dt)
{
    if (dt != AG_F32 && dt != AG_F64 && dt != AG_I64) {
        ag_set_last_error("ag_dtype_size: unknown dtype %d", (int)dt);
        return 0;
    }
    return dt == AG_F32 ? sizeof(float) : sizeof(double); /* int64_t: 8 too */
}

/* For the accessors: false, with ag_last_error naming fn, for a NULL t. */
static bool present(const ag_tensor *t, const char *fn)
{
    if (!t)
        ag_set_last_error("%s: t is NULL", fn);
    return t != NULL;
}

char *ag_fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t used = 0;
    if (n == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ",%lld" : "%lld",
                                 (long long)shape[i]);
    if (used < n)
        snprintf(buf + used, n - used, "]");
    return buf;
}

char *ag_shape_str(const ag_tensor *t, char *buf, size_t n)
{
    if (!buf) {
        ag_set_last_error("ag_shape_str: buf is NULL");
        return NULL;
    }
    if (!t) {
        snprintf(buf, n, "(null)");
        return buf;
    }
    return ag_fmt_shape(buf, n, t->ndim, t->shape);
}

bool ag_shape_valid(int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > AG_MAX_DIMS || (ndim > 0 && !shape))
        return false;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return false;
        if (shape[i] && n > INT64_MAX / 8 / shape[i])
            return false;
        n *= shape[i];
    }
    *numel = n;
    return true;
}

bool ag_same_shape(const ag_tensor *a, const ag_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

static void init_header(ag_tensor *t, ag_dtype dt, int ndim, const int64_t *shape,
                        int64_t numel)
{
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    t->numel = numel;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
}

static ag_tensor *persistent_alloc(ag_dtype dt, int ndim, const int64_t *shape)
{
    int64_t numel;
    if (dt != AG_F32 && dt != AG_F64) { /* AG_I64: only ops' index results */
        ag_set_last_error("ag_tensor_new: dtype %d is not AG_F32 or AG_F64", (int)dt);
        return NULL;
    }
    if (!ag_shape_valid(ndim, shape, &numel)) {
        ag_set_last_error("ag_tensor_new: bad shape (ndim %d; dims must be >= 0, "
                          "at most %d of them, product in range)", ndim, AG_MAX_DIMS);
        return NULL;
    }
    ag_tensor *t = ag_mem_alloc(sizeof *t);
    size_t bytes = (size_t)numel * ag_dtype_size(dt);
    void *data = ag_mem_calloc(bytes ? bytes : 1);
    if (!t || !data) {
        ag_mem_free(t);
        ag_mem_free(data);
        ag_set_last_error("ag_tensor_new: out of memory for %lld elements",
                          (long long)numel);
        return NULL;
    }
    init_header(t, dt, ndim, shape, numel);
    t->data = data;
    t->persistent = true;
    return t;
}

ag_tensor *ag_tensor_new(ag_dtype dt, int ndim, const int64_t *shape)
{
    return persistent_alloc(dt, ndim, shape);
}

ag_tensor *ag_tensor_full(ag_dtype dt, int ndim, const int64_t *shape, double value)
{
    ag_tensor *t = persistent_alloc(dt, ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++)
        ag_set(t, i, value);
    return t;
}

ag_tensor *ag_tensor_ones(ag_dtype dt, int ndim, const int64_t *shape)
{
    return ag_tensor_full(dt, ndim, shape, 1.0);
}

ag_tensor *ag_tensor_from_f32(int ndim, const int64_t *shape, const float *data)
{
    ag_tensor *t = persistent_alloc(AG_F32, ndim, shape);
    if (t && t->numel && !data) {
        ag_tensor_free(t);
        ag_set_last_error("ag_tensor_from_f32: data is NULL");
        return NULL;
    }
    if (t && t->numel)
        memcpy(t->data, data, (size_t)t->numel * sizeof(float));
    return t;
}

ag_tensor *ag_tensor_from_f64(int ndim, const int64_t *shape, const double *data)
{
    ag_tensor *t = persistent_alloc(AG_F64, ndim, shape);
    if (t && t->numel && !data) {
        ag_tensor_free(t);
        ag_set_last_error("ag_tensor_from_f64: data is NULL");
        return NULL;
    }
    if (t && t->numel)
        memcpy(t->data, data, (size_t)t->numel * sizeof(double));
    return t;
}

ag_tensor *ag_tensor_arange(ag_dtype dt, double start, double stop, double step)
{
    if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step)) {
        ag_set_last_error("ag_tensor_arange: step must be non-zero and bounds finite");
        return NULL;
    }
    double count = ceil((stop - start) / step);
    if (count > 1e12) {
        ag_set_last_error("ag_tensor_arange: %g elements is too many", count);
        return NULL;
    }
    int64_t n = count > 0 ? (int64_t)count : 0;
    ag_tensor *t = persistent_alloc(dt, 1, &n);
    for (int64_t i = 0; t && i < n; i++)
        ag_set(t, i, start + (double)i * step);
    return t;
}

ag_tensor *ag_tensor_uniform(ag_dtype dt, int ndim, const int64_t *shape,
                             double lo, double hi, ag_rng *rng)
{
    if (!rng) {
        ag_set_last_error("ag_tensor_uniform: rng is NULL");
        return NULL;
    }
    ag_tensor *t = persistent_alloc(dt, ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++)
        ag_set(t, i, lo + (hi - lo) * ag_rng_uniform(rng));
    return t;
}

ag_tensor *ag_tensor_normal(ag_dtype dt, int ndim, const int64_t *shape,
                            double mean, double std, ag_rng *rng)
{
    if (!rng) {
        ag_set_last_error("ag_tensor_normal: rng is NULL");
        return NULL;
    }
    ag_tensor *t = persistent_alloc(dt, ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++)
        ag_set(t, i, mean + std * ag_rng_normal(rng));
    return t;
}

ag_tensor *ag_tensor_clone(const ag_tensor *src)
{
    if (!src) {
        ag_set_last_error("ag_tensor_clone: tensor is NULL");
        return NULL;
    }
    ag_tensor *t = persistent_alloc(src->dtype, src->ndim, src->shape);
    if (t)
        memcpy(t->data, src->data, (size_t)t->numel * ag_dtype_size(t->dtype));
    return t;
}

void ag_tensor_free(ag_tensor *t)
{
    if (!t || !t->persistent)
        return;
    ag_tensor_free(t->grad);
    ag_mem_free(t->name);
    if (!t->foreign)
        ag_mem_free(t->data);
    ag_mem_free(t);
}

ag_status ag_tensor_set_storage(ag_tensor *t, void *data)
{
    const char *fn = "ag_tensor_set_storage";
    if (!t || !t->persistent) {
        ag_set_last_error("%s: %s", fn, !t ? "t is NULL" : "t is a tape tensor (the tape owns "
                                                           "its memory)");
        return AG_ERR_ARG;
    }
    if ((uintptr_t)data % AG_ALIGN) {
        ag_set_last_error("%s: data %p is not aligned to %d bytes", fn, data, AG_ALIGN);
        return AG_ERR_ARG;
    }
    if (!data && !t->foreign)
        return AG_OK; /* in memory of its own already */
    size_t bytes = (size_t)t->numel * ag_dtype_size(t->dtype);
    void *to = data ? data : ag_mem_alloc(bytes ? bytes : 1);
    if (!to) {
        ag_set_last_error("%s: out of memory for %zu bytes", fn, bytes);
        return AG_ERR_NOMEM;
    }
    if (to != t->data)
        memmove(to, t->data, bytes);
    if (!t->foreign && to != t->data)
        ag_mem_free(t->data);
    t->data = to;
    t->foreign = data != NULL;
    return AG_OK;
}

void ag_tensor_set_name(ag_tensor *t, const char *name)
{
    if (!t || !t->persistent)
        return;
    ag_mem_free(t->name);
    t->name = NULL;
    if (!name)
        return;
    size_t n = strlen(name) + 1;
    if ((t->name = ag_mem_alloc(n)))
        memcpy(t->name, name, n);
}

const char *ag_tensor_name(const ag_tensor *t)
{
    return present(t, "ag_tensor_name") ? t->name : NULL;
}

/* The header in this step's header slot (see ag_tape), the data in the
 * arena, AG_ALIGN-aligned. */
ag_tensor *ag_tensor_tape(ag_tape *tape, ag_dtype dt, int ndim, const int64_t *shape)
{
    int64_t numel = 1;
    if (ndim < 0 || ndim > AG_MAX_DIMS)
        return ag_fail(tape, AG_ERR_SHAPE, "tape tensor: bad ndim %d", ndim);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] && numel > INT64_MAX / 8 / shape[i]))
            return ag_fail(tape, AG_ERR_SHAPE, "tape tensor: bad shape");
        numel *= shape[i];
    }
    size_t bytes = (size_t)numel * (dt == AG_F32 ? sizeof(float) : sizeof(double));
    ag_tensor *t = ag_arena_header(tape);
    void *data = t ? ag_arena_take(tape, &tape->arena, bytes ? bytes : 1, AG_ALIGN) : NULL;
    if (!data)
        return NULL;
    t->data = data;
    t->grad = NULL;
    t->tape = tape;
    t->numel = numel;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->ndim = ndim;
    t->dtype = dt;
    t->requires_grad = false;
    t->persistent = false;
    t->name = NULL;
    t->mark = t->sgrad_id = 0;
    t->sgrad = NULL;
    t->version = 0;
    t->gen = tape->gen;
    t->base = NULL;
    return t;
}

ag_tensor *ag_tensor_view(ag_tape *tape, ag_tensor *of, int ndim, const int64_t *shape)
{
    ag_tensor *t = ag_arena_header(tape);
    if (!t)
        return NULL;
    *t = (ag_tensor){.data = of->data, .tape = tape, .numel = of->numel, .ndim = ndim,
                     .dtype = of->dtype, .gen = tape->gen,
                     .base = of->persistent ? of : of->base};
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    return t;
}

/* A tape tensor for ag_tape_tensor / ag_tape_empty (fn), its data unset */
static ag_tensor *tape_tensor_unset(const char *fn, ag_tape *tape, ag_dtype dt, int ndim,
                                    const int64_t *shape)
{
    if (!tape) {
        ag_set_last_error("%s: tape is NULL", fn);
        return NULL;
    }
    if (dt != AG_F32 && dt != AG_F64)
        return ag_fail(tape, AG_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)dt);
    if (ndim > 0 && !shape)
        return ag_fail(tape, AG_ERR_ARG, "%s: shape is NULL (ndim %d)", fn, ndim);
    return ag_tensor_tape(tape, dt, ndim, shape);
}

ag_tensor *ag_tape_tensor(ag_tape *tape, ag_dtype dt, int ndim, const int64_t *shape)
{
    ag_tensor *t = tape_tensor_unset("ag_tape_tensor", tape, dt, ndim, shape);
    if (t)
        memset(t->data, 0, (size_t)t->numel * ag_dtype_size(dt));
    return t;
}

ag_tensor *ag_tape_empty(ag_tape *tape, ag_dtype dt, int ndim, const int64_t *shape)
{
    ag_tensor *t = tape_tensor_unset("ag_tape_empty", tape, dt, ndim, shape);
    if (t && tape->anomaly) /* as ag_tensor_full does, with NaN */
        for (int64_t i = 0; i < t->numel; i++)
            ag_set(t, i, NAN);
    return t;
}

/* ---- accessors ---- */

void ag_set_requires_grad(ag_tensor *t, bool on)
{
    if (t && t->persistent)
        t->requires_grad = on;
}

bool ag_requires_grad(const ag_tensor *t)
{
    return present(t, "ag_requires_grad") && t->requires_grad;
}
bool ag_tensor_is_persistent(const ag_tensor *t)
{
    return present(t, "ag_tensor_is_persistent") && t->persistent;
}
int ag_ndim(const ag_tensor *t) { return present(t, "ag_ndim") ? t->ndim : 0; }
const int64_t *ag_shape(const ag_tensor *t) { return present(t, "ag_shape") ? t->shape : NULL; }
int64_t ag_numel(const ag_tensor *t) { return present(t, "ag_numel") ? t->numel : 0; }
ag_dtype ag_dtype_of(const ag_tensor *t) { return present(t, "ag_dtype_of") ? t->dtype : AG_F32; }
void *ag_data(ag_tensor *t) { return present(t, "ag_data") ? t->data : NULL; }
const void *ag_data_const(const ag_tensor *t)
{
    return present(t, "ag_data_const") ? t->data : NULL;
}
ag_tensor *ag_grad(const ag_tensor *t) { return present(t, "ag_grad") ? t->grad : NULL; }

/* For ag_get / ag_set: t present and i inside it. */
static bool element(const ag_tensor *t, int64_t i, const char *fn)
{
    if (!present(t, fn))
        return false;
    if (i < 0 || i >= t->numel) {
        ag_set_last_error("%s: i = %lld is outside [0, %lld)", fn, (long long)i,
                          (long long)t->numel);
        return false;
    }
    return true;
}

double ag_get(const ag_tensor *t, int64_t i)
{
    if (!element(t, i, "ag_get"))
        return NAN;
    if (t->dtype == AG_I64)
        return (double)((const int64_t *)t->data)[i];
    return t->dtype == AG_F64 ? ((const double *)t->data)[i]
                              : (double)((const float *)t->data)[i];
}

void ag_tensor_mark_modified(ag_tensor *t)
{
    if (t && t->base) /* a write through a view is a write of its base */
        t = t->base;
    if (t && t->persistent)
        t->version++;
}

void ag_set(ag_tensor *t, int64_t i, double v)
{
    if (!element(t, i, "ag_set"))
        return;
    if (t->dtype == AG_I64 && !(fabs(v) < 0x1p63)) { /* the cast would be undefined */
        ag_set_last_error("ag_set: %g does not fit an int64 tensor", v);
        return;
    }
    ag_tensor_mark_modified(t); /* a write (of the base, through a view) */
    if (t->dtype == AG_F64)
        ((double *)t->data)[i] = v;
    else if (t->dtype == AG_I64)
        ((int64_t *)t->data)[i] = (int64_t)v;
    else
        ((float *)t->data)[i] = (float)v;
}

void ag_zero_grad(ag_tensor *t)
{
    if (t && t->grad)
        memset(t->grad->data, 0, (size_t)t->numel * ag_dtype_size(t->dtype));
}

double ag_item(const ag_tensor *t)
{
    if (!t) {
        ag_set_last_error("ag_item: t is NULL");
        return NAN;
    }
    if (t->numel != 1) {
        ag_set_last_error("ag_item: t has %lld elements, not 1", (long long)t->numel);
        return NAN;
    }
    return ag_get(t, 0);
}
