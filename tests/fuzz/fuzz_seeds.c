/* fuzz_seeds.c — writes the seed corpora of fuzz_dataset and
 * fuzz_optim_checkpoint (small valid inputs and a few malformed ones):
 *
 *   build/tests/fuzz/fuzz_seeds tests/fuzz/corpus
 *
 * fills tests/fuzz/corpus/dataset/ and tests/fuzz/corpus/optim_checkpoint/
 * (the folders must exist).  The output is deterministic, so running it
 * again reproduces the committed files as long as the checkpoint writer
 * does not change.  (The fuzz-<sha1> files beside them are inputs that
 * libFuzzer campaigns found, not written here.)  Not a test; built with
 * the replayers. */
#include "fuzz_optim.h"
#include "nn.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char *out_dir;
static int failures;

static void fail(const char *what, const char *name)
{
    fprintf(stderr, "fuzz_seeds: %s: %s (%s)\n", name, what,
            ag_last_error() ? ag_last_error() : "");
    failures++;
}

/* ---- data sets: [mode][u32 BE images length][images][labels] ---- */

typedef struct buf {
    uint8_t b[8192];
    size_t n;
} buf;

static void put(buf *o, const void *p, size_t n)
{
    if (o->n + n > sizeof o->b) {
        fprintf(stderr, "fuzz_seeds: buffer too small\n");
        exit(1);
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put_be(buf *o, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        put(o, &c, 1);
    }
}

/* An IDX file: type, dims, then values (each written in the type's size). */
static buf idx(int type, int ndim, const uint32_t *dims, int64_t count, const int64_t *vals)
{
    buf o = {.n = 0};
    put(&o, (uint8_t[]){0, 0, (uint8_t)type, (uint8_t)ndim}, 4);
    for (int d = 0; d < ndim; d++)
        put_be(&o, dims[d], 4);
    int es = (int)nn_idx_type_size((nn_idx_type)type);
    for (int64_t i = 0; i < count; i++) {
        uint64_t v = (uint64_t)vals[i];
        if (type == NN_IDX_F32) {
            float x = (float)vals[i];
            uint32_t u;
            memcpy(&u, &x, 4);
            v = u;
        }
        put_be(&o, v, es);
    }
    return o;
}

static buf gz(buf in)
{
    buf o = {.n = 0};
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 31, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        exit(1);
    z.next_in = in.b;
    z.avail_in = (uInt)in.n;
    z.next_out = o.b;
    z.avail_out = sizeof o.b;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        exit(1);
    o.n = sizeof o.b - z.avail_out;
    deflateEnd(&z);
    return o;
}

static void write_bytes(const char *sub, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void dataset_seed(const char *name, uint8_t mode, buf im, buf lb)
{
    buf o = {.n = 0};
    put(&o, &mode, 1);
    put_be(&o, im.n, 4);
    put(&o, im.b, im.n);
    put(&o, lb.b, lb.n);
    write_bytes("dataset", name, o.b, o.n);
}

static void dataset_seeds(void)
{
    const int64_t px[12] = {0, 1, 2, 127, 128, 255, 7, 9, 64, 200, 33, 250};
    const int64_t lab[4] = {3, 0, 9, 1};
    buf im = idx(NN_IDX_U8, 3, (uint32_t[]){3, 2, 2}, 12, px);
    buf im4 = idx(NN_IDX_U8, 4, (uint32_t[]){2, 1, 2, 3}, 12, px);
    buf lb = idx(NN_IDX_U8, 1, (uint32_t[]){3}, 3, lab);
    dataset_seed("u8_max_classes", 0, im, lb);
    dataset_seed("u8_10_classes", 10, im, lb);
    dataset_seed("i8_labels", 12, im, idx(NN_IDX_I8, 1, (uint32_t[]){3}, 3, lab));
    dataset_seed("i16_labels", 0, im, idx(NN_IDX_I16, 1, (uint32_t[]){3}, 3, lab));
    dataset_seed("i32_labels", 10, im, idx(NN_IDX_I32, 1, (uint32_t[]){3}, 3, lab));
    dataset_seed("image_4d", 0, im4, idx(NN_IDX_U8, 1, (uint32_t[]){2}, 2, lab));
    dataset_seed("gz_images", 10, gz(im), lb);
    dataset_seed("gz_labels", 10, im, gz(lb));
    dataset_seed("gz_both", 0, gz(im), gz(lb));
    dataset_seed("mnist_train", 0x81, im, lb);
    dataset_seed("mnist_t10k_gz", 0x80, gz(im), lb);
    dataset_seed("empty_set", 10, idx(NN_IDX_U8, 3, (uint32_t[]){0, 28, 28}, 0, NULL),
                 idx(NN_IDX_U8, 1, (uint32_t[]){0}, 0, NULL));
    /* malformed */
    dataset_seed("bad_label_range", 3, im, lb);
    dataset_seed("bad_label_negative", 0, im,
                 idx(NN_IDX_I8, 1, (uint32_t[]){3}, 3, (int64_t[]){1, -1, 2}));
    dataset_seed("bad_count", 0, im, idx(NN_IDX_U8, 1, (uint32_t[]){4}, 4, lab));
    dataset_seed("bad_images_f32", 0, idx(NN_IDX_F32, 3, (uint32_t[]){3, 2, 2}, 12, px), lb);
    dataset_seed("bad_images_1d", 0, idx(NN_IDX_U8, 1, (uint32_t[]){3}, 3, px), lb);
    dataset_seed("bad_labels_2d", 0, im, idx(NN_IDX_U8, 2, (uint32_t[]){3, 1}, 3, lab));
    dataset_seed("bad_labels_f32", 0, im, idx(NN_IDX_F32, 1, (uint32_t[]){3}, 3, lab));
    dataset_seed("bad_no_labels", 0, idx(NN_IDX_U8, 2, (uint32_t[]){0, 5}, 0, NULL),
                 idx(NN_IDX_U8, 1, (uint32_t[]){0}, 0, NULL));
    buf cut = im;
    cut.n -= 3;
    dataset_seed("bad_images_cut", 0, cut, lb);
    /* issue 13: [0, 2^32-1 x 3] overflowed int64 in the feature count */
    dataset_seed("bad_feature_overflow", 10,
                 idx(NN_IDX_U8, 4, (uint32_t[]){0, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, 0,
                     NULL),
                 idx(NN_IDX_U8, 1, (uint32_t[]){0}, 0, NULL));
}

/* ---- checkpoints ---- */

typedef struct ckpt_cfg {
    const char *name, *kind;
    int variant;
    const char *sched; /* NULL: none */
    int steps;
    bool b_grad;       /* b takes part in the steps */
    bool with_optim, with_rng;
} ckpt_cfg;

static void ckpt_path(char *path, size_t n, const char *name)
{
    snprintf(path, n, "%s/optim_checkpoint/%s.safetensors", out_dir, name);
}

static void ckpt_seed(const ckpt_cfg *c)
{
    ag_tensor *p[FZ_NPARAMS];
    if (!fz_make_params(p)) {
        fz_free_params(p);
        fail("no memory", c->name);
        return;
    }
    optim *o = fz_make_optim(c->kind, p, c->variant);
    optim_sched *s = fz_make_sched(c->sched, o);
    ag_rng rng;
    ag_rng_seed(&rng, 42);
    if (!o || (c->sched && !s)) {
        fail("cannot build", c->name);
        goto done;
    }
    if (!c->b_grad)
        ag_set_requires_grad(p[1], false);
    for (int i = 0; i < c->steps; i++) {
        optim_zero_grad(o);
        if (fz_grads(p) != AG_OK || optim_step(o) != AG_OK ||
            (s && optim_sched_step_once(s) != AG_OK)) {
            fail("step failed", c->name);
            goto done;
        }
        (void)ag_rng_next(&rng);
    }
    char path[512];
    ckpt_path(path, sizeof path, c->name);
    if (optim_checkpoint_save(path, fz_names, p, FZ_NPARAMS, c->with_optim ? o : NULL, s,
                              c->with_rng ? &rng : NULL) != AG_OK)
        fail("save failed", c->name);
done:
    optim_sched_free(s);
    optim_free(o);
    fz_free_params(p);
}

/* Copies checkpoint src to dst with element i of tensor `name` set to v
 * (drop: without that tensor), or with metadata `name` set to meta. */
static void ckpt_edit(const char *src, const char *dst, const char *name, int64_t i, double v,
                      bool drop, const char *meta)
{
    char sp[512], dp[512];
    ckpt_path(sp, sizeof sp, src);
    ckpt_path(dp, sizeof dp, dst);
    ag_safetensors *f = NULL;
    if (ag_safetensors_load(sp, &f) != AG_OK) {
        fail("cannot load", src);
        return;
    }
    int n = ag_safetensors_count(f), m = ag_safetensors_meta_count(f), k = 0;
    const char *names[64], *keys[16], *vals[16];
    const ag_tensor *ts[64];
    ag_tensor *edited = NULL;
    for (int j = 0; j < n && j < 64; j++) {
        const char *nm = ag_safetensors_name(f, j);
        ag_tensor *t = ag_safetensors_get(f, nm);
        if (!meta && strcmp(nm, name) == 0) {
            if (drop)
                continue;
            edited = ag_tensor_clone(t);
            if (!edited || i >= ag_numel(edited))
                break;
            ag_set(edited, i, v);
            t = edited;
        }
        names[k] = nm;
        ts[k++] = t;
    }
    for (int j = 0; j < m && j < 16; j++) {
        keys[j] = ag_safetensors_meta_key(f, j);
        vals[j] = meta && strcmp(keys[j], name) == 0 ? meta : ag_safetensors_meta(f, keys[j]);
    }
    if ((!meta && !drop && !edited) || ag_safetensors_save(dp, k, names, ts, m, keys, vals) != AG_OK)
        fail("cannot edit", dst);
    ag_tensor_free(edited);
    ag_safetensors_free(f);
}

static void ckpt_seeds(void)
{
    static const ckpt_cfg cfgs[] = {
        {"sgd_fresh", "sgd", 0, NULL, 0, true, true, true},
        {"sgd_momentum_step", "sgd", 1, "step", 3, true, true, true},
        {"sgd_nesterov_multistep", "sgd", 3, "multistep", 4, true, true, true},
        {"sgd_plain_wd", "sgd", 4, NULL, 2, true, true, true},
        {"adam_cosine", "adam", 0, "cosine", 2, true, true, true},
        {"adam_amsgrad_onecycle", "adam", 1, "onecycle", 3, true, true, true},
        {"adam_partial_state", "adam", 0, NULL, 2, false, true, true},
        {"adamw_warmup", "adamw", 2, "warmup", 4, true, true, true},
        {"rmsprop_exponential", "rmsprop", 0, "exponential", 2, true, true, true},
        {"rmsprop_centered_momentum_linear", "rmsprop", 3, "linear", 3, true, true, true},
        {"adagrad", "adagrad", 1, NULL, 2, true, true, true},
        {"adagrad_onecycle", "adagrad", 2, "onecycle", 2, true, true, true},
        {"bad_no_optim", "sgd", 0, NULL, 1, true, false, true},
        {"bad_no_rng", "adam", 0, NULL, 1, true, true, false},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++)
        ckpt_seed(&cfgs[i]);
    /* malformed: structure */
    ckpt_edit("adam_cosine", "bad_missing_exp_avg_sq", "optim.state.w.exp_avg_sq", 0, 0, true,
              NULL);
    ckpt_edit("adam_cosine", "bad_missing_param", "b", 0, 0, true, NULL);
    ckpt_edit("adam_cosine", "bad_format", "format", 0, 0, false, "tapegrad-checkpoint-0");
    ckpt_edit("adam_cosine", "bad_kind", "optim.kind", 0, 0, false, "adamw");
    ckpt_edit("adam_cosine", "bad_sched_kind", "sched.kind", 0, 0, false,
              "cosine(t_max=11,eta_min=0.001)");
    ckpt_edit("adam_cosine", "bad_rng_zero", "rng", 0, 0, false,
              "0000000000000000 0000000000000000 0000000000000000 0000000000000000");
    /* malformed: values (issue 13: loaded as AG_OK before) */
    ckpt_edit("adam_cosine", "bad_lr_inf", "optim.opts", 0, INFINITY, false, NULL);
    ckpt_edit("adam_cosine", "bad_lr_nan", "optim.opts", 0, NAN, false, NULL);
    ckpt_edit("adam_cosine", "bad_beta1_huge", "optim.opts", 1, 1e300, false, NULL);
    ckpt_edit("adam_cosine", "bad_exp_avg_sq_negative", "optim.state.b.exp_avg_sq", 1, -1.0,
              false, NULL);
    ckpt_edit("adam_cosine", "bad_exp_avg_sq_nan", "optim.state.w.exp_avg_sq", 2, NAN, false,
              NULL);
    ckpt_edit("adam_cosine", "bad_step_negative", "optim.state.w.step", 0, -1.0, false, NULL);
    ckpt_edit("adam_cosine", "bad_step_fraction", "optim.state.b.step", 0, 1.5, false, NULL);
    ckpt_edit("sgd_momentum_step", "bad_momentum_buffer_inf", "optim.state.w.momentum_buffer",
              3, -INFINITY, false, NULL);
    ckpt_edit("sgd_momentum_step", "bad_sched_epoch_negative", "sched.state", 0, -5.0, false,
              NULL);
    ckpt_edit("adagrad", "bad_sum_negative", "optim.state.w.sum", 0, -0.5, false, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR  (writes CORPUS_DIR/dataset/ and "
                        "CORPUS_DIR/optim_checkpoint/, which must exist)\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    dataset_seeds();
    ckpt_seeds();
    return failures != 0;
}
