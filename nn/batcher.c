/* batcher.c — the minibatch iterator over a data set: shuffled or in
 * order, pixels normalised through a lookup table, the next batch filled
 * on a pool task while the caller's step runs.  Legend: n = samples, F =
 * pixels per sample (features), B = batch size, r = rows of the current
 * batch. */
#include "data_internal.h"

#include <math.h>
#include <string.h>

/* ---- minibatches ------------------------------------------------------------- */

/* With more than one thread, the images of the batch after the one just
 * returned are gathered by a pool task (ag_task_start) into `ahead` while
 * the caller's step runs: the random reads over the data set are what
 * cost; the next call converts the gathered bytes, contiguous and cache
 * hot, straight into its tape tensor (ag_tape_empty: nothing zeroed or
 * copied twice).  Prefetching whole float rows and copying them cost
 * 2.2% of a two-thread MLP epoch on the Zen 3 in that serial copy and
 * the tape tensor's zeroing (perf, bench_mlp 1 2). */
struct nn_batcher {
    const nn_dataset *ds;
    nn_batch_opts o;
    int64_t *order;  /* (n) sample order of this epoch */
    int64_t pos;     /* next position in order */
    int64_t *labels; /* (B) labels of the last batch */
    float lut32[256];  /* pixel value -> normalised value */
    double lut64[256];
    bool unit;         /* f32 and lut32[v] == v / 255.0f for every v */
    uint8_t *ahead;       /* (B, F) the prefetched batch's images */
    int64_t *ahead_labels; /* (B) */
    int64_t ahead_rows;   /* rows in ahead, from position pos; 0: none */
    ag_task *task;        /* filling ahead, or NULL */
};

ag_status nn_batcher_new(const nn_dataset *ds, const nn_batch_opts *opts, nn_batcher **out)
{
    static const char *fn = "nn_batcher_new";
    if (out)
        *out = NULL;
    if (!ds || !opts || !out)
        return data_error(AG_ERR_ARG, "%s: NULL argument", fn);
    nn_batch_opts o = *opts;
    if (o.std == 0.0)
        o.std = 1.0;
    if (o.batch <= 0 || (o.dtype != AG_F32 && o.dtype != AG_F64) || !isfinite(o.mean) ||
        !isfinite(o.std) || o.std < 0.0)
        return data_error(AG_ERR_ARG, "%s: bad options: batch %lld (> 0), dtype %d (F32 "
                          "or F64), mean %g (finite), std %g (finite, >= 0)", fn,
                          (long long)o.batch, (int)o.dtype, o.mean, o.std);
    nn_batcher *b = data_alloc(sizeof *b);
    if (!b)
        return data_error(AG_ERR_NOMEM, "%s: no memory", fn);
    memset(b, 0, sizeof *b);
    b->ds = ds;
    b->o = o;
    b->order = data_alloc((size_t)(ds->n > 0 ? ds->n : 1) * sizeof *b->order);
    size_t lab = (size_t)(o.batch < ds->n ? o.batch : (ds->n > 0 ? ds->n : 1));
    b->labels = data_alloc(lab * sizeof *b->labels);
    b->ahead_labels = data_alloc(lab * sizeof *b->ahead_labels);
    b->ahead = data_alloc(lab * (size_t)(ds->features > 0 ? ds->features : 1));
    if (!b->order || !b->labels || !b->ahead_labels || !b->ahead) {
        nn_batcher_free(b);
        return data_error(AG_ERR_NOMEM, "%s: no memory", fn);
    }
    b->unit = o.dtype == AG_F32;
    for (int v = 0; v < 256; v++) {
        b->lut64[v] = (v / 255.0 - o.mean) / o.std;
        b->lut32[v] = (float)b->lut64[v];
        b->unit = b->unit && b->lut32[v] == (float)v / 255.0f;
    }
    nn_batcher_start(b, NULL);
    *out = b;
    return AG_OK;
}

/* Waits for a prefetch in flight and forgets what it filled. */
static void drop_ahead(nn_batcher *b)
{
    ag_task_wait(b->task);
    b->task = NULL;
    b->ahead_rows = 0;
}

void nn_batcher_free(nn_batcher *b)
{
    if (!b)
        return;
    drop_ahead(b);
    data_free(b->order);
    data_free(b->labels);
    data_free(b->ahead);
    data_free(b->ahead_labels);
    data_free(b);
}

void nn_batcher_start(nn_batcher *b, ag_rng *rng)
{
    if (!data_present(b, "nn_batcher_start", "b"))
        return;
    drop_ahead(b);
    int64_t n = b->ds->n;
    for (int64_t i = 0; i < n; i++)
        b->order[i] = i;
    for (int64_t i = n - 1; rng && i > 0; i--) { /* Fisher-Yates */
        int64_t j = (int64_t)ag_rng_below(rng, (uint64_t)i + 1);
        int64_t t = b->order[i];
        b->order[i] = b->order[j];
        b->order[j] = t;
    }
    b->pos = 0;
}

int64_t nn_batcher_count(const nn_batcher *b)
{
    if (!data_present(b, "nn_batcher_count", "b"))
        return 0;
    int64_t n = b->ds->n, B = b->o.batch;
    return b->o.drop_last ? n / B : (n + B - 1) / B;
}

const int64_t *nn_batcher_order(const nn_batcher *b)
{
    return data_present(b, "nn_batcher_order", "b") ? b->order : NULL;
}

/* Rows in the next batch (0 at the end of the epoch). */
static int64_t next_rows(const nn_batcher *b)
{
    int64_t left = b->ds->n - b->pos;
    int64_t r = left < b->o.batch ? left : b->o.batch;
    return r < b->o.batch && b->o.drop_last ? 0 : r;
}

/* d = src / 255 in f32: a batch's row when the table says just that
 * (mean 0, std 1: (float)v / 255.0f rounds v / 255 once, as the table's
 * (float)(v / 255.0) does, checked for every v by nn_batcher_new), in
 * vectors instead of a table lookup per pixel (a Fashion-MNIST batch of
 * 128 on one thread: 54 -> 41 us; the rest is reading the rows). */
__attribute__((target_clones("avx2", "default")))
static void unit_f32(const uint8_t *restrict src, float *restrict d, int64_t n)
{
    for (int64_t j = 0; j < n; j++)
        d[j] = (float)src[j] / 255.0f;
}

/* n pixels src -> d, normalised, in the batcher's dtype */
static void convert(const nn_batcher *b, const uint8_t *src, void *d, int64_t n)
{
    if (b->unit) {
        unit_f32(src, d, n);
    } else if (b->o.dtype == AG_F64) {
        double *dd = d;
        for (int64_t j = 0; j < n; j++)
            dd[j] = b->lut64[src[j]];
    } else {
        float *df = d;
        for (int64_t j = 0; j < n; j++)
            df[j] = b->lut32[src[j]];
    }
}

/* Rows [lo, hi) of the batch at position `at` into dst (r, F): normalised
 * in the batcher's dtype, or (raw) the images' bytes as stored; and their
 * labels.  Each row's image is prefetched one row ahead (the order is
 * random: the hardware prefetcher cannot guess it). */
typedef struct {
    const nn_batcher *b;
    int64_t at;
    void *dst;
    int64_t *labels;
    bool raw;
} fill_ctx;

static void fill_rows(void *vc, int64_t lo, int64_t hi)
{
    const fill_ctx *c = vc;
    const nn_batcher *b = c->b;
    const int64_t F = b->ds->features;
    const size_t esz = c->raw ? 1 : ag_dtype_size(b->o.dtype);
    for (int64_t i = lo; i < hi; i++) {
        int64_t s = b->order[c->at + i];
        const uint8_t *src = b->ds->images + s * F;
        if (i + 1 < hi) {
            const uint8_t *nx = b->ds->images + b->order[c->at + i + 1] * F;
            for (int64_t j = 0; j < F; j += 64)
                __builtin_prefetch(nx + j);
        }
        void *d = (unsigned char *)c->dst + (size_t)(i * F) * esz;
        if (c->raw)
            memcpy(d, src, (size_t)F);
        else
            convert(b, src, d, F);
        c->labels[i] = b->ds->labels[s];
    }
}

/* Rows of a batch per pool chunk, and the least work worth the pool. */
#define FILL_ROWS 16
#define FILL_PAR_MIN ((int64_t)1 << 16)

/* Writes the r rows at position `at` (dst (r, F)) and their labels. */
static void fill_at(const nn_batcher *b, int64_t at, int64_t r, void *dst, int64_t *labels)
{
    fill_ctx c = {b, at, dst, labels, false};
    if (r * b->ds->features >= FILL_PAR_MIN)
        ag_parallel_for(r, FILL_ROWS, fill_rows, &c);
    else
        fill_rows(&c, 0, r);
}

/* Writes r rows and labels, and advances: from the prefetched batch when
 * there is one (it is for this position), else filled now. */
static void fill_batch(nn_batcher *b, int64_t r, void *dst, int64_t *labels)
{
    ag_task_wait(b->task);
    b->task = NULL;
    if (b->ahead_rows == r) {
        convert(b, b->ahead, dst, r * b->ds->features);
        memcpy(labels, b->ahead_labels, (size_t)r * sizeof *labels);
    } else {
        fill_at(b, b->pos, r, dst, labels);
    }
    b->ahead_rows = 0;
    b->pos += r;
}

/* The prefetch task: the batch at b->pos into b->ahead. */
static void fill_ahead(void *vb)
{
    nn_batcher *b = vb;
    fill_ctx c = {b, b->pos, b->ahead, b->ahead_labels, true};
    fill_rows(&c, 0, b->ahead_rows);
}

/* Starts filling the next batch on a pool thread, if one would take it
 * (else the next call fills it itself). */
static void prefetch(nn_batcher *b)
{
    int64_t r = next_rows(b);
    if (r == 0 || ag_get_num_threads() < 2)
        return;
    b->ahead_rows = r;
    b->task = ag_task_start(fill_ahead, b);
    if (!b->task)
        b->ahead_rows = 0;
}

int64_t nn_batcher_next(nn_batcher *b, ag_tape *tape, ag_tensor **x, const int64_t **labels)
{
    if (x)
        *x = NULL;
    if (labels)
        *labels = NULL;
    if (!b || !tape || !x || !labels) {
        data_error(AG_ERR_ARG, "nn_batcher_next: NULL argument");
        return -1;
    }
    int64_t r = next_rows(b);
    if (r == 0) {
        b->pos = b->ds->n;
        return 0;
    }
    ag_tensor *t = ag_tape_empty(tape, b->o.dtype, 2, (int64_t[]){r, b->ds->features});
    if (!t) {
        const char *why = ag_tape_error(tape);
        data_error(AG_ERR_NOMEM, "nn_batcher_next: no tape tensor: %s", why ? why : "?");
        return -1;
    }
    fill_batch(b, r, ag_data(t), b->labels);
    prefetch(b);
    *x = t;
    *labels = b->labels;
    return r;
}

int64_t nn_batcher_next_into(nn_batcher *b, ag_tensor *x, int64_t *labels)
{
    if (!b || !x || !labels) {
        data_error(AG_ERR_ARG, "nn_batcher_next_into: NULL argument");
        return -1;
    }
    int64_t r = next_rows(b);
    const int64_t *shape = ag_shape(x);
    if (ag_dtype_of(x) != b->o.dtype || ag_ndim(x) != 2 || shape[1] != b->ds->features ||
        shape[0] < b->o.batch) {
        char sb[96];
        data_error(AG_ERR_ARG, "nn_batcher_next_into: x is %s %s, expected %s [>= %lld, %lld]",
                   ag_dtype_of(x) == AG_F64 ? "f64" : "f32", ag_shape_str(x, sb, sizeof sb),
                   b->o.dtype == AG_F64 ? "f64" : "f32", (long long)b->o.batch,
                   (long long)b->ds->features);
        return -1;
    }
    if (r == 0) {
        b->pos = b->ds->n;
        return 0;
    }
    fill_batch(b, r, ag_data(x), labels);
    prefetch(b);
    ag_tensor_mark_modified(x); /* a write into the caller's tensor */
    return r;
}
