/* fuzz_dataset.c — libFuzzer target for the data-set layer
 * (nn_dataset_load_idx and nn_mnist_load over nn_idx_load).
 *
 * The data-set loaders read an images file and a labels file, so one input
 * holds both:
 *   byte 0      mode: < 0x80 is nn_dataset_load_idx with classes = byte 0
 *               (0: max label + 1); >= 0x80 is nn_mnist_load of a folder,
 *               train set when bit 0 is set, else the t10k set (10 classes)
 *   bytes 1..4  L, big-endian u32: the length of the images part (cut to
 *               what is left)
 *   then        L bytes of images file, the rest is the labels file
 * (missing header bytes count as 0).  Each part is written to its own file
 * in a temporary folder, under the names nn_mnist_load looks for; either
 * may be gzipped.  When the set loads, the target checks what a data set
 * promises: features is the product of the image dims (no overflow) and
 * n * features fits NN_IDX_MAX_BYTES, classes is the one asked for (or max
 * label + 1), labels lie in [0, classes), pixels and labels are those of
 * the files (compared byte for byte for a plain file), pixel statistics
 * are in range; then it takes a subset, a seeded split and one shuffled
 * epoch of batches of it, checking counts.  A failure must leave *out NULL
 * with a message.  A crash, sanitizer report, leak or abort() is a finding.
 *
 * Build (clang; the library gets coverage through fuzzer-no-link):
 *   CC=clang meson setup build-fuzz -Db_sanitize=address,undefined \
 *       -Db_lundef=false -Dc_args='-fsanitize=fuzzer-no-link -fno-sanitize-recover=all'
 *   ninja -C build-fuzz tests/fuzz/fuzz_dataset
 * Run (the committed corpus as seeds; new finds go to the first folder):
 *   mkdir -p /tmp/dataset-corpus
 *   build-fuzz/tests/fuzz/fuzz_dataset -dict=tests/fuzz/idx.dict \
 *       -max_len=4096 -max_total_time=900 /tmp/dataset-corpus tests/fuzz/corpus/dataset
 * Replay a crash:  build-fuzz/tests/fuzz/fuzz_dataset crash-<hash>
 * The seeds come from tests/fuzz/fuzz_seeds.c (see there).
 *
 * Linked with tests/fuzz/replay.c instead (any compiler), it runs as a test
 * over tests/fuzz/corpus/dataset. */
#include "nn.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(x)                                                                  \
    do {                                                                          \
        if (!(x)) {                                                               \
            fprintf(stderr, "fuzz_dataset: %s:%d: %s\n", __FILE__, __LINE__, #x); \
            abort();                                                              \
        }                                                                         \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[4] = {
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
};
static char dir[64];
static char paths[4][128];

static void remove_tmp(void)
{
    for (int i = 0; i < 4; i++)
        unlink(paths[i]);
    rmdir(dir);
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);
}

/* A plain IDX file's element i (a loaded file is well-formed). */
static int64_t be_int(const uint8_t *p, int type, int64_t i)
{
    switch (type) {
    case NN_IDX_U8:
        return p[i];
    case NN_IDX_I8:
        return (int8_t)p[i];
    case NN_IDX_I16:
        return (int16_t)(uint16_t)(p[2 * i] << 8 | p[2 * i + 1]);
    default:
        p += 4 * i;
        return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                         p[3]);
    }
}

static bool gzipped(const uint8_t *p, size_t n)
{
    return n >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

static void check_set(const nn_dataset *ds, int64_t want_classes, const uint8_t *im,
                      size_t im_n, const uint8_t *lb, size_t lb_n)
{
    int64_t n = nn_dataset_count(ds), F = nn_dataset_features(ds);
    int64_t classes = nn_dataset_classes(ds);
    int nd = -1;
    const int64_t *shape = nn_dataset_image_shape(ds, &nd);
    CHECK(n >= 0 && shape != NULL && nd >= 1 && nd < NN_IDX_MAX_DIMS);
    int64_t prod = 1;
    bool overflow = false;
    for (int d = 0; d < nd; d++) {
        CHECK(shape[d] >= 0);
        overflow |= __builtin_mul_overflow(prod, shape[d], &prod);
    }
    CHECK(!overflow && prod == F);
    int64_t total;
    CHECK(!__builtin_mul_overflow(n, F, &total) && total <= NN_IDX_MAX_BYTES);
    const uint8_t *px = nn_dataset_images(ds);
    const int64_t *labels = nn_dataset_labels(ds);
    CHECK(n == 0 || labels != NULL);
    CHECK(total == 0 || px != NULL);
    int64_t max = -1;
    for (int64_t i = 0; i < n; i++) {
        CHECK(labels[i] >= 0 && labels[i] < classes);
        max = labels[i] > max ? labels[i] : max;
    }
    CHECK(classes == (want_classes > 0 ? want_classes : max + 1));
    if (!gzipped(im, im_n)) { /* the header, then exactly the pixels */
        CHECK(im_n == 4 + 4 * (size_t)(nd + 1) + (size_t)total);
        CHECK(total == 0 || memcmp(px, im + 4 + 4 * (nd + 1), (size_t)total) == 0);
    }
    if (!gzipped(lb, lb_n)) {
        CHECK(lb_n >= 8 && lb[3] == 1);
        for (int64_t i = 0; i < n; i++)
            CHECK(labels[i] == be_int(lb + 8, lb[2], i));
    }
    double mean = -1, sd = -1;
    nn_dataset_pixel_stats(ds, &mean, &sd);
    CHECK(mean >= 0 && mean <= 1 && sd >= 0 && sd <= 0.5 + 1e-12);

    nn_dataset *sub = NULL, *tr = NULL, *va = NULL;
    int64_t start = n / 3;
    CHECK(nn_dataset_subset(ds, start, n - start, &sub) == AG_OK);
    CHECK(nn_dataset_count(sub) == n - start && nn_dataset_features(sub) == F);
    CHECK(n - start == 0 || F == 0 ||
          memcmp(nn_dataset_images(sub), px + start * F, (size_t)((n - start) * F)) == 0);
    nn_dataset_free(sub);
    CHECK(nn_dataset_subset(ds, n, 1, &sub) == AG_ERR_ARG && sub == NULL);
    ag_rng rng;
    ag_rng_seed(&rng, (uint64_t)n);
    CHECK(nn_dataset_split(ds, n / 2, &rng, &tr, &va) == AG_OK);
    CHECK(nn_dataset_count(tr) == n - n / 2 && nn_dataset_count(va) == n / 2);
    CHECK(nn_dataset_classes(tr) == classes && nn_dataset_classes(va) == classes);
    nn_dataset_free(tr);
    nn_dataset_free(va);

    if (F > ((int64_t)1 << 20))
        return; /* no 16 MB batch for an input of a few KB */
    nn_batch_opts bo = {.batch = 3, .dtype = n & 1 ? AG_F64 : AG_F32, .mean = 0.5,
                        .std = 0.25};
    nn_batcher *b = NULL;
    CHECK(nn_batcher_new(ds, &bo, &b) == AG_OK && b != NULL);
    nn_batcher_start(b, &rng);
    ag_tensor *x = ag_tensor_new(bo.dtype, 2, (int64_t[]){bo.batch, F});
    CHECK(x != NULL);
    int64_t y[3], seen = 0, r;
    while ((r = nn_batcher_next_into(b, x, y)) > 0) {
        for (int64_t i = 0; i < r; i++)
            CHECK(y[i] >= 0 && y[i] < classes);
        seen += r;
    }
    CHECK(r == 0 && seen == n);
    CHECK(nn_batcher_count(b) == (n + bo.batch - 1) / bo.batch);
    ag_tensor_free(x);
    nn_batcher_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fuzz_dataset_XXXXXX");
        CHECK(mkdtemp(dir) != NULL);
        for (int i = 0; i < 4; i++)
            snprintf(paths[i], sizeof paths[i], "%s/%s", dir, names[i]);
        atexit(remove_tmp);
    }
    uint8_t head[5] = {0};
    memcpy(head, data, size < 5 ? size : 5);
    size_t rest = size < 5 ? 0 : size - 5;
    size_t im_n = (size_t)head[1] << 24 | (size_t)head[2] << 16 | (size_t)head[3] << 8 | head[4];
    im_n = im_n < rest ? im_n : rest;
    const uint8_t *im = data + (size - rest), *lb = im + im_n;
    size_t lb_n = rest - im_n;
    bool mnist = head[0] >= 0x80, train = mnist && (head[0] & 1);
    int64_t classes = mnist ? 10 : head[0];
    write_file(paths[2 * train], im, im_n);
    write_file(paths[2 * train + 1], lb, lb_n);

    nn_dataset *ds = (nn_dataset *)&ds;
    ag_status st = mnist ? nn_mnist_load(dir, train, &ds)
                         : nn_dataset_load_idx(paths[2 * train], paths[2 * train + 1],
                                               classes, &ds);
    if (st != AG_OK) {
        CHECK(ds == NULL);
        CHECK(st == AG_ERR_FORMAT || st == AG_ERR_NOMEM);
        CHECK(ag_last_error() != NULL && ag_last_error()[0] != '\0');
        return 0;
    }
    CHECK(ds != NULL);
    check_set(ds, classes, im, im_n, lb, lb_n);
    nn_dataset_free(ds);
    return 0;
}
