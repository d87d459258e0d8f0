/* test_data.c — IDX reader, data sets, splits and the minibatch iterator.
 * Fixtures: tests/data/idx/, written by tests/data/make_idx.py (the values
 * below repeat the ones there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "autograd.h"
#include "nn_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"

/* Path of a fixture, in one of two buffers so two can be live at once. */
static const char *fixture(const char *name)
{
    static char buf[2][4096];
    static int which;
    which ^= 1;
    snprintf(buf[which], sizeof buf[which], "%s/tests/data/idx/%s", TG_SOURCE_DIR, name);
    return buf[which];
}

/* Loads a fixture that must fail with status s and a message holding
 * `what` and the file name. */
static void expect_idx_error(const char *name, ag_status s, const char *what)
{
    nn_idx *a = (nn_idx *)&a; /* must be reset to NULL */
    ag_clear_last_error();
    ag_status got = nn_idx_load(fixture(name), &a);
    const char *msg = ag_last_error();
    print_message("  %s -> %s\n", name, msg ? msg : "(no message)");
    assert_int_equal(got, s);
    assert_null(a);
    assert_non_null(msg);
    assert_non_null(strstr(msg, what));
    assert_non_null(strstr(msg, name));
}

/* ---- IDX: valid files ---------------------------------------------------- */

static void check_valid(const char *name, nn_idx_type type, const double *want)
{
    nn_idx *a = NULL;
    ag_status s = nn_idx_load(fixture(name), &a);
    if (s != AG_OK)
        print_message("%s: %s\n", name, ag_last_error());
    assert_int_equal(s, AG_OK);
    assert_int_equal(nn_idx_type_of(a), type);
    assert_int_equal(nn_idx_ndim(a), 2);
    assert_int_equal(nn_idx_shape(a)[0], 2);
    assert_int_equal(nn_idx_shape(a)[1], 3);
    assert_int_equal(nn_idx_numel(a), 6);
    for (int i = 0; i < 6; i++) {
        if (nn_idx_get(a, i) != want[i])
            print_message("%s[%d]: %.17g != %.17g\n", name, i, nn_idx_get(a, i), want[i]);
        assert_true(nn_idx_get(a, i) == want[i]);
    }
    nn_idx_free(a);
}

static void test_data_idx_u8(void **state)
{
    (void)state;
    const double v[6] = {0, 1, 127, 128, 254, 255};
    check_valid("valid_u8.idx", NN_IDX_U8, v);
    check_valid("valid_u8.idx.gz", NN_IDX_U8, v);
    nn_idx *a = NULL;
    assert_int_equal(nn_idx_load(fixture("valid_u8.idx.gz"), &a), AG_OK);
    const uint8_t *p = nn_idx_data(a);
    assert_int_equal(p[3], 128);
    assert_int_equal(nn_idx_type_size(nn_idx_type_of(a)), 1);
    nn_idx_free(a);
}

static void test_data_idx_i8(void **state)
{
    (void)state;
    const double v[6] = {-128, -1, 0, 1, 100, 127};
    check_valid("valid_i8.idx", NN_IDX_I8, v);
    check_valid("valid_i8.idx.gz", NN_IDX_I8, v);
}

static void test_data_idx_i16(void **state)
{
    (void)state;
    const double v[6] = {-32768, -1, 0, 1, 258, 32767};
    check_valid("valid_i16.idx", NN_IDX_I16, v);
    check_valid("valid_i16.idx.gz", NN_IDX_I16, v);
    nn_idx *a = NULL;
    assert_int_equal(nn_idx_load(fixture("valid_i16.idx"), &a), AG_OK);
    assert_int_equal(((const int16_t *)nn_idx_data(a))[4], 258); /* host order */
    nn_idx_free(a);
}

static void test_data_idx_i32(void **state)
{
    (void)state;
    const double v[6] = {-2147483648.0, -1, 0, 1, 16909060, 2147483647};
    check_valid("valid_i32.idx", NN_IDX_I32, v);
    check_valid("valid_i32.idx.gz", NN_IDX_I32, v);
    nn_idx *a = NULL;
    assert_int_equal(nn_idx_load(fixture("valid_i32.idx.gz"), &a), AG_OK);
    assert_int_equal(((const int32_t *)nn_idx_data(a))[4], 0x01020304);
    nn_idx_free(a);
}

static void test_data_idx_f32(void **state)
{
    (void)state;
    const double v[6] = {-1.5, 0.0, (double)0.1f, 3.25, (double)1e30f, (double)-2.5e-3f};
    check_valid("valid_f32.idx", NN_IDX_F32, v);
    check_valid("valid_f32.idx.gz", NN_IDX_F32, v);
    nn_idx *a = NULL;
    assert_int_equal(nn_idx_load(fixture("valid_f32.idx"), &a), AG_OK);
    assert_true(((const float *)nn_idx_data(a))[2] == 0.1f);
    nn_idx_free(a);
}

static void test_data_idx_f64(void **state)
{
    (void)state;
    const double v[6] = {-1.5, 0.0, 0.1, 3.25, 1e300, -2.5e-3};
    check_valid("valid_f64.idx", NN_IDX_F64, v);
    check_valid("valid_f64.idx.gz", NN_IDX_F64, v);
}

static void test_data_idx_eight_dims_and_empty(void **state)
{
    (void)state;
    nn_idx *a = NULL;
    assert_int_equal(nn_idx_load(fixture("valid_8d.idx"), &a), AG_OK);
    assert_int_equal(nn_idx_ndim(a), 8);
    assert_int_equal(nn_idx_numel(a), 4);
    assert_true(nn_idx_get(a, 3) == 4.0);
    nn_idx_free(a);
    assert_int_equal(nn_idx_load(fixture("valid_empty.idx"), &a), AG_OK);
    assert_int_equal(nn_idx_ndim(a), 2);
    assert_int_equal(nn_idx_numel(a), 0);
    assert_null(nn_idx_data(a));
    nn_idx_free(a);
    nn_idx_free(NULL);
}

/* ---- IDX: malformed files ---------------------------------------------------- */

static void test_data_idx_bad_magic(void **state)
{
    (void)state;
    expect_idx_error("bad_magic.idx", AG_ERR_FORMAT, "bad magic 01 02 08 01");
    expect_idx_error("empty.idx", AG_ERR_FORMAT, "too short");
    expect_idx_error("short_magic.idx", AG_ERR_FORMAT, "too short");
}

static void test_data_idx_unknown_type(void **state)
{
    (void)state;
    expect_idx_error("bad_type.idx", AG_ERR_FORMAT, "unknown type code 0x0a");
    assert_int_equal(nn_idx_type_size((nn_idx_type)0x0A), 0);
}

static void test_data_idx_bad_ndim(void **state)
{
    (void)state;
    expect_idx_error("zero_dims.idx", AG_ERR_FORMAT, "0 dims");
    expect_idx_error("too_many_dims.idx", AG_ERR_FORMAT, "9 dims");
}

static void test_data_idx_truncated_header(void **state)
{
    (void)state;
    expect_idx_error("truncated_header.idx", AG_ERR_FORMAT, "header truncated");
}

static void test_data_idx_truncated_data(void **state)
{
    (void)state;
    expect_idx_error("truncated_data.idx", AG_ERR_FORMAT, "promises 10 bytes");
    expect_idx_error("truncated_data.idx.gz", AG_ERR_FORMAT, "the file has 5");
    expect_idx_error("truncated_elem.idx", AG_ERR_FORMAT, "the file has 15");
    /* 1 GiB promised, 10 bytes present: fails without reading a gigabyte */
    expect_idx_error("huge_truncated.idx", AG_ERR_FORMAT, "the file has 10");
}

static void test_data_idx_trailing_bytes(void **state)
{
    (void)state;
    expect_idx_error("trailing.idx", AG_ERR_FORMAT, "trailing bytes");
    expect_idx_error("trailing.idx.gz", AG_ERR_FORMAT, "trailing bytes");
}

static void test_data_idx_dims_overflow(void **state)
{
    (void)state;
    expect_idx_error("overflow.idx", AG_ERR_FORMAT, "overflows");
    expect_idx_error("too_big.idx", AG_ERR_FORMAT, "limit");
}

static void test_data_idx_gzip_corrupt(void **state)
{
    (void)state;
    expect_idx_error("corrupt.idx.gz", AG_ERR_FORMAT, "gzip");
    expect_idx_error("bad_crc.idx.gz", AG_ERR_FORMAT, "gzip");
    expect_idx_error("cut.idx.gz", AG_ERR_FORMAT, "gzip");
    expect_idx_error("bad_gzip_header.idx.gz", AG_ERR_FORMAT, "gzip");
}

static void test_data_idx_missing_file(void **state)
{
    (void)state;
    expect_idx_error("no_such_file.idx", AG_ERR_IO, "cannot open");
    nn_idx *a = NULL;
    /* inside the default folder the message names the Debian package */
    assert_int_equal(nn_idx_load(NN_FASHION_MNIST_DIR "/no-such-file.gz", &a), AG_ERR_IO);
    assert_null(a);
    assert_non_null(strstr(ag_last_error(), "apt-get install dataset-fashion-mnist"));
    /* a folder is not a file */
    assert_int_equal(nn_idx_load(fixture("mnist_mini"), &a), AG_ERR_IO);
    assert_non_null(strstr(ag_last_error(), "folder"));
    assert_int_equal(nn_idx_load(NULL, &a), AG_ERR_ARG);
    assert_int_equal(nn_idx_load(fixture("valid_u8.idx"), NULL), AG_ERR_ARG);
}

/* ---- data sets --------------------------------------------------------------- */

static void test_data_dataset_load_idx(void **state)
{
    (void)state;
    nn_dataset *ds = NULL;
    assert_int_equal(nn_dataset_load_idx(fixture("ds_images.idx"), fixture("ds_labels.idx"),
                                         3, &ds), AG_OK);
    assert_int_equal(nn_dataset_count(ds), 5);
    assert_int_equal(nn_dataset_features(ds), 6);
    assert_int_equal(nn_dataset_classes(ds), 3);
    int nd = 0;
    const int64_t *shape = nn_dataset_image_shape(ds, &nd);
    assert_int_equal(nd, 2);
    assert_int_equal(shape[0], 2);
    assert_int_equal(shape[1], 3);
    assert_int_equal(nn_dataset_images(ds)[29], 29);
    assert_int_equal(nn_dataset_labels(ds)[2], 2);
    nn_dataset_free(ds);
    /* i32 gzipped labels; classes inferred as max + 1 */
    assert_int_equal(nn_dataset_load_idx(fixture("ds_images.idx"),
                                         fixture("ds_labels_i32.idx.gz"), 0, &ds), AG_OK);
    assert_int_equal(nn_dataset_classes(ds), 4);
    assert_int_equal(nn_dataset_labels(ds)[0], 3);
    nn_dataset_free(ds);
    nn_dataset_free(NULL);
}

static void expect_ds_error(const char *images, const char *labels, int64_t classes,
                            ag_status s, const char *what)
{
    nn_dataset *ds = (nn_dataset *)&ds;
    ag_status got = nn_dataset_load_idx(fixture(images), fixture(labels), classes, &ds);
    const char *msg = ag_last_error();
    print_message("  %s + %s -> %s\n", images, labels, msg ? msg : "(no message)");
    assert_int_equal(got, s);
    assert_null(ds);
    assert_non_null(msg);
    assert_non_null(strstr(msg, what));
}

static void test_data_dataset_count_mismatch(void **state)
{
    (void)state;
    expect_ds_error("ds_images.idx", "ds_labels_short.idx", 10, AG_ERR_FORMAT,
                    "has 5 images but");
    nn_dataset *ds = NULL;
    assert_int_equal(nn_mnist_load(fixture("mnist_badcount"), true, &ds), AG_ERR_FORMAT);
    assert_null(ds);
    assert_non_null(strstr(ag_last_error(), "3 images but"));
    assert_non_null(strstr(ag_last_error(), "4 labels"));
}

static void test_data_dataset_label_out_of_range(void **state)
{
    (void)state;
    expect_ds_error("ds_images.idx", "ds_labels_range.idx", 10, AG_ERR_FORMAT,
                    "label 10 of sample 2 outside [0, 10)");
    expect_ds_error("ds_images.idx", "ds_labels_neg.idx", 10, AG_ERR_FORMAT, "label -1");
    expect_ds_error("ds_images.idx", "ds_labels.idx", 2, AG_ERR_FORMAT, "label 2");
}

static void test_data_dataset_bad_types(void **state)
{
    (void)state;
    expect_ds_error("ds_images.idx", "ds_labels_2d.idx", 10, AG_ERR_FORMAT, "1-D integers");
    expect_ds_error("ds_images.idx", "ds_labels_f32.idx", 10, AG_ERR_FORMAT, "1-D integers");
    expect_ds_error("ds_images_1d.idx", "ds_labels.idx", 10, AG_ERR_FORMAT, "u8");
    expect_ds_error("ds_images_i16.idx", "ds_labels.idx", 10, AG_ERR_FORMAT, "u8");
    expect_ds_error("ds_images.idx", "corrupt.idx.gz", 10, AG_ERR_FORMAT, "gzip");
    expect_ds_error("nope.idx", "ds_labels.idx", 10, AG_ERR_IO, "nope.idx");
    nn_dataset *ds = NULL;
    assert_int_equal(nn_dataset_load_idx(fixture("ds_images.idx"), fixture("ds_labels.idx"),
                                         -1, &ds), AG_ERR_ARG);
}

static void test_data_mnist_folder(void **state)
{
    (void)state;
    nn_dataset *tr = NULL, *te = NULL;
    assert_int_equal(nn_mnist_load(fixture("mnist_mini"), true, &tr), AG_OK);
    /* t10k images are stored without .gz: the plain-name fallback */
    assert_int_equal(nn_mnist_load(fixture("mnist_mini/"), false, &te), AG_OK);
    assert_int_equal(nn_dataset_count(tr), 12);
    assert_int_equal(nn_dataset_count(te), 5);
    assert_int_equal(nn_dataset_features(tr), 784);
    assert_int_equal(nn_dataset_classes(te), 10);
    assert_int_equal(nn_dataset_images(tr)[3 * 784 + 5], (3 * 7 + 5) % 256);
    assert_int_equal(nn_dataset_labels(tr)[11], 1);
    nn_dataset_free(tr);
    nn_dataset_free(te);
}

static void test_data_mnist_missing_folder(void **state)
{
    (void)state;
    nn_dataset *ds = (nn_dataset *)&ds;
    assert_int_equal(nn_mnist_load("/nonexistent/tapegrad-data", true, &ds), AG_ERR_IO);
    assert_null(ds);
    assert_non_null(strstr(ag_last_error(), "/nonexistent/tapegrad-data"));
    /* a folder without the files names the missing one */
    assert_int_equal(nn_mnist_load(fixture("mnist_badcount"), false, &ds), AG_ERR_IO);
    assert_non_null(strstr(ag_last_error(), "t10k-labels-idx1-ubyte"));
    struct stat st;
    if (stat(NN_FASHION_MNIST_DIR, &st) != 0) {
        assert_int_equal(nn_mnist_load(NULL, true, &ds), AG_ERR_IO);
        assert_non_null(strstr(ag_last_error(), "apt-get install dataset-fashion-mnist"));
    }
}

/* A data set of n 2x2 images where every pixel of sample i is i and the
 * label is i % classes. */
static nn_dataset *counting_dataset(int64_t n, int64_t classes)
{
    uint8_t *im = malloc((size_t)n * 4 + 1);
    int64_t *lb = malloc((size_t)n * sizeof *lb + 1);
    for (int64_t i = 0; i < n; i++) {
        memset(im + 4 * i, (int)(i % 256), 4);
        lb[i] = i % classes;
    }
    nn_dataset *ds = NULL;
    assert_int_equal(nn_dataset_from_u8(n, 2, (int64_t[]){2, 2}, im, lb, classes, &ds), AG_OK);
    free(im);
    free(lb);
    return ds;
}

static void test_data_dataset_from_u8_checks(void **state)
{
    (void)state;
    nn_dataset *ds = NULL;
    const uint8_t im[4] = {1, 2, 3, 4};
    const int64_t bad[2] = {0, 5};
    assert_int_equal(nn_dataset_from_u8(2, 1, (int64_t[]){2}, im, bad, 5, &ds), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "label 5 of sample 1"));
    assert_int_equal(nn_dataset_from_u8(2, 1, (int64_t[]){2}, im, bad, 0, &ds), AG_ERR_ARG);
    assert_int_equal(nn_dataset_from_u8(2, 1, (int64_t[]){-2}, im, bad, 9, &ds), AG_ERR_ARG);
    assert_int_equal(nn_dataset_from_u8(2, 1, (int64_t[]){2}, NULL, bad, 9, &ds), AG_ERR_ARG);
    assert_null(ds);
    assert_int_equal(nn_dataset_from_u8(0, 1, (int64_t[]){2}, NULL, NULL, 3, &ds), AG_OK);
    assert_int_equal(nn_dataset_count(ds), 0);
    double mean = -1, std = -1;
    nn_dataset_pixel_stats(ds, &mean, &std);
    assert_true(mean == 0.0 && std == 0.0);
    nn_dataset_free(ds);
}

static void test_data_pixel_stats(void **state)
{
    (void)state;
    const uint8_t im[4] = {0, 255, 0, 255};
    const int64_t lb[2] = {0, 1};
    nn_dataset *ds = NULL;
    assert_int_equal(nn_dataset_from_u8(2, 1, (int64_t[]){2}, im, lb, 2, &ds), AG_OK);
    double mean, std;
    nn_dataset_pixel_stats(ds, &mean, &std);
    assert_float_equal(mean, 0.5, 1e-15);
    assert_float_equal(std, 0.5, 1e-15);
    nn_dataset_free(ds);
}

static void test_data_split_sizes(void **state)
{
    (void)state;
    nn_dataset *ds = counting_dataset(100, 7), *tr = NULL, *va = NULL;
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    assert_int_equal(nn_dataset_split(ds, 30, &rng, &tr, &va), AG_OK);
    assert_int_equal(nn_dataset_count(tr), 70);
    assert_int_equal(nn_dataset_count(va), 30);
    assert_int_equal(nn_dataset_classes(va), 7);
    /* every sample lands in exactly one part, order kept, labels follow */
    int seen[100] = {0};
    const nn_dataset *parts[2] = {tr, va};
    bool shuffled_out = false;
    for (int p = 0; p < 2; p++) {
        int64_t prev = -1;
        for (int64_t i = 0; i < nn_dataset_count(parts[p]); i++) {
            int64_t id = nn_dataset_images(parts[p])[4 * i];
            assert_true(id > prev);
            prev = id;
            seen[id]++;
            assert_int_equal(nn_dataset_labels(parts[p])[i], id % 7);
            shuffled_out = shuffled_out || (p == 1 && id < 70);
        }
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(seen[i], 1);
    assert_true(shuffled_out); /* drawn at random, not the tail */
    nn_dataset_free(tr);
    nn_dataset_free(va);
    /* without rng: the last n_val samples */
    assert_int_equal(nn_dataset_split(ds, 10, NULL, &tr, &va), AG_OK);
    assert_int_equal(nn_dataset_images(va)[0], 90);
    assert_int_equal(nn_dataset_count(tr), 90);
    nn_dataset_free(tr);
    nn_dataset_free(va);
    /* edges */
    assert_int_equal(nn_dataset_split(ds, 0, &rng, &tr, &va), AG_OK);
    assert_int_equal(nn_dataset_count(va), 0);
    assert_null(nn_dataset_images(va));
    nn_dataset_free(tr);
    nn_dataset_free(va);
    assert_int_equal(nn_dataset_split(ds, 100, &rng, &tr, &va), AG_OK);
    assert_int_equal(nn_dataset_count(tr), 0);
    nn_dataset_free(tr);
    nn_dataset_free(va);
    assert_int_equal(nn_dataset_split(ds, 101, &rng, &tr, &va), AG_ERR_ARG);
    assert_null(tr);
    assert_null(va);
    assert_int_equal(nn_dataset_split(ds, -1, &rng, &tr, &va), AG_ERR_ARG);
    /* same seed, same split */
    nn_dataset *a1, *b1, *a2, *b2;
    ag_rng_seed(&rng, 9);
    assert_int_equal(nn_dataset_split(ds, 20, &rng, &a1, &b1), AG_OK);
    ag_rng_seed(&rng, 9);
    assert_int_equal(nn_dataset_split(ds, 20, &rng, &a2, &b2), AG_OK);
    assert_memory_equal(nn_dataset_images(b1), nn_dataset_images(b2), 20 * 4);
    nn_dataset_free(a1);
    nn_dataset_free(b1);
    nn_dataset_free(a2);
    nn_dataset_free(b2);
    nn_dataset_free(ds);
}

static void test_data_subset(void **state)
{
    (void)state;
    nn_dataset *ds = counting_dataset(10, 3), *sub = NULL;
    assert_int_equal(nn_dataset_subset(ds, 4, 3, &sub), AG_OK);
    assert_int_equal(nn_dataset_count(sub), 3);
    assert_int_equal(nn_dataset_images(sub)[0], 4);
    assert_int_equal(nn_dataset_labels(sub)[2], 6 % 3);
    nn_dataset_free(sub);
    assert_int_equal(nn_dataset_subset(ds, 8, 3, &sub), AG_ERR_ARG);
    assert_null(sub);
    assert_int_equal(nn_dataset_subset(ds, -1, 3, &sub), AG_ERR_ARG);
    nn_dataset_free(ds);
}

/* ---- minibatches ------------------------------------------------------------- */

static void test_data_shuffle_determinism(void **state)
{
    (void)state;
    nn_dataset *ds = counting_dataset(50, 5);
    nn_batcher *b = NULL;
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 8}, &b), AG_OK);
    /* a new batcher is in dataset order */
    for (int64_t i = 0; i < 50; i++)
        assert_int_equal(nn_batcher_order(b)[i], i);
    int64_t o1[50], o2[50], o3[50];
    ag_rng r;
    ag_rng_seed(&r, 123);
    nn_batcher_start(b, &r);
    memcpy(o1, nn_batcher_order(b), sizeof o1);
    nn_batcher_start(b, &r); /* the next epoch differs */
    assert_memory_not_equal(o1, nn_batcher_order(b), sizeof o1);
    ag_rng_seed(&r, 123);
    nn_batcher_start(b, &r);
    memcpy(o2, nn_batcher_order(b), sizeof o2);
    assert_memory_equal(o1, o2, sizeof o1);
    ag_rng_seed(&r, 124);
    nn_batcher_start(b, &r);
    memcpy(o3, nn_batcher_order(b), sizeof o3);
    assert_memory_not_equal(o1, o3, sizeof o1);
    /* a permutation */
    int seen[50] = {0};
    for (int i = 0; i < 50; i++)
        seen[o3[i]]++;
    for (int i = 0; i < 50; i++)
        assert_int_equal(seen[i], 1);
    /* the batches follow the order */
    ag_tape *tape = ag_tape_new();
    ag_tensor *x;
    const int64_t *y;
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 8);
    for (int i = 0; i < 8; i++) {
        assert_float_equal(ag_get(x, i * 4), (double)(float)(o3[i] / 255.0), 0);
        assert_int_equal(y[i], o3[i] % 5);
    }
    ag_tape_free(tape);
    nn_batcher_free(b);
    nn_dataset_free(ds);
}

static void test_data_batch_normalisation(void **state)
{
    (void)state;
    const uint8_t im[6] = {0, 51, 255, 128, 1, 254};
    const int64_t lb[2] = {1, 0};
    nn_dataset *ds = NULL;
    assert_int_equal(nn_dataset_from_u8(2, 1, (int64_t[]){3}, im, lb, 2, &ds), AG_OK);
    ag_tape *tape = ag_tape_new();
    nn_batcher *b = NULL;
    ag_tensor *x;
    const int64_t *y;
    /* plain x / 255 in f32 */
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 2}, &b), AG_OK);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 2);
    assert_int_equal(ag_dtype_of(x), AG_F32);
    assert_int_equal(ag_ndim(x), 2);
    assert_int_equal(ag_shape(x)[0], 2);
    assert_int_equal(ag_shape(x)[1], 3);
    for (int i = 0; i < 6; i++)
        assert_true(((const float *)ag_data(x))[i] == (float)(im[i] / 255.0));
    assert_int_equal(y[0], 1);
    assert_int_equal(y[1], 0);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 0);
    nn_batcher_free(b);
    /* (x / 255 - mean) / std in f64 */
    nn_batch_opts o = {.batch = 2, .dtype = AG_F64, .mean = 0.25, .std = 0.5};
    assert_int_equal(nn_batcher_new(ds, &o, &b), AG_OK);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 2);
    assert_int_equal(ag_dtype_of(x), AG_F64);
    double want[6];
    for (int i = 0; i < 6; i++)
        want[i] = (im[i] / 255.0 - 0.25) / 0.5;
    assert_doubles_close((const double *)ag_data(x), want, 6, 0, 1e-15);
    assert_float_equal(((const double *)ag_data(x))[2], 1.5, 1e-15);
    nn_batcher_free(b);
    /* bad options */
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 0}, &b), AG_ERR_ARG);
    assert_null(b);
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 2, .std = -1}, &b),
                     AG_ERR_ARG);
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 2, .mean = NAN}, &b),
                     AG_ERR_ARG);
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 2, .dtype = (ag_dtype)7},
                                    &b), AG_ERR_ARG);
    ag_tape_free(tape);
    nn_dataset_free(ds);
}

static void test_data_partial_last_batch(void **state)
{
    (void)state;
    nn_dataset *ds = counting_dataset(10, 10);
    ag_tape *tape = ag_tape_new();
    nn_batcher *b = NULL;
    ag_tensor *x;
    const int64_t *y;
    /* keep: 4 + 4 + 2 */
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 4}, &b), AG_OK);
    assert_int_equal(nn_batcher_count(b), 3);
    int64_t sizes[4];
    for (int k = 0; k < 4; k++)
        sizes[k] = nn_batcher_next(b, tape, &x, &y);
    assert_int_equal(sizes[0], 4);
    assert_int_equal(sizes[1], 4);
    assert_int_equal(sizes[2], 2);
    assert_int_equal(sizes[3], 0);
    assert_null(x);
    nn_batcher_start(b, NULL);
    nn_batcher_next(b, tape, &x, &y);
    nn_batcher_next(b, tape, &x, &y);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 2);
    assert_int_equal(ag_shape(x)[0], 2);
    assert_int_equal(y[1], 9);
    nn_batcher_free(b);
    /* drop: 4 + 4 */
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 4, .drop_last = true}, &b),
                     AG_OK);
    assert_int_equal(nn_batcher_count(b), 2);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 4);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 4);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 0);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 0);
    nn_batcher_free(b);
    /* batch larger than the data set */
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 64}, &b), AG_OK);
    assert_int_equal(nn_batcher_count(b), 1);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 10);
    nn_batcher_free(b);
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 64, .drop_last = true}, &b),
                     AG_OK);
    assert_int_equal(nn_batcher_count(b), 0);
    assert_int_equal(nn_batcher_next(b, tape, &x, &y), 0);
    nn_batcher_free(b);
    nn_batcher_free(NULL);
    ag_tape_free(tape);
    nn_dataset_free(ds);
}

static void test_data_next_into_buffers(void **state)
{
    (void)state;
    nn_dataset *ds = counting_dataset(5, 5);
    nn_batcher *b = NULL;
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 3, .dtype = AG_F64}, &b),
                     AG_OK);
    ag_tensor *x = ag_tensor_full(AG_F64, 2, (int64_t[]){3, 4}, -7.0);
    int64_t y[3] = {-1, -1, -1};
    assert_int_equal(nn_batcher_next_into(b, x, y), 3);
    assert_float_equal(ag_get(x, 2 * 4 + 3), 2 / 255.0, 1e-15);
    assert_int_equal(nn_batcher_next_into(b, x, y), 2);
    assert_float_equal(ag_get(x, 1 * 4), 4 / 255.0, 1e-15);
    assert_float_equal(ag_get(x, 2 * 4), 2 / 255.0, 1e-15); /* row past r kept */
    assert_int_equal(y[1], 4);
    assert_int_equal(nn_batcher_next_into(b, x, y), 0);
    /* wrong dtype or shape */
    ag_tensor *f32 = ag_tensor_new(AG_F32, 2, (int64_t[]){3, 4});
    ag_tensor *narrow = ag_tensor_new(AG_F64, 2, (int64_t[]){3, 3});
    ag_tensor *short_ = ag_tensor_new(AG_F64, 2, (int64_t[]){2, 4});
    nn_batcher_start(b, NULL);
    assert_int_equal(nn_batcher_next_into(b, f32, y), -1);
    assert_non_null(strstr(ag_last_error(), "expected f64 [>= 3, 4]"));
    assert_int_equal(nn_batcher_next_into(b, narrow, y), -1);
    assert_int_equal(nn_batcher_next_into(b, short_, y), -1);
    assert_int_equal(nn_batcher_next_into(b, NULL, y), -1);
    ag_tensor *tx = x;
    assert_int_equal(nn_batcher_next(b, NULL, &tx, NULL), -1);
    assert_null(tx);
    ag_tensor_free(f32);
    ag_tensor_free(narrow);
    ag_tensor_free(short_);
    ag_tensor_free(x);
    nn_batcher_free(b);
    nn_dataset_free(ds);
}

/* Counts system allocations made through the library's allocator. */
static int64_t g_allocs;
static void *counting_alloc(size_t size, size_t align, void *ctx)
{
    (void)ctx;
    g_allocs++;
    size_t rounded = (size + align - 1) / align * align;
    return aligned_alloc(align, rounded ? rounded : align);
}
static void counting_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static void test_data_batches_allocate_nothing(void **state)
{
    (void)state;
    ag_set_allocator(&(ag_allocator){counting_alloc, counting_free, NULL});
    nn_dataset *ds = counting_dataset(100, 10);
    nn_batcher *b = NULL;
    assert_int_equal(nn_batcher_new(ds, &(nn_batch_opts){.batch = 16}, &b), AG_OK);
    ag_tape *tape = ag_tape_new();
    ag_tensor *x, *buf = ag_tensor_new(AG_F32, 2, (int64_t[]){16, 4});
    const int64_t *y;
    int64_t labels[16];
    ag_rng rng;
    ag_rng_seed(&rng, 5);
    /* warm-up epoch: the arena grows to a step's size */
    nn_batcher_start(b, &rng);
    while (nn_batcher_next(b, tape, &x, &y) > 0)
        ag_tape_reset(tape);
    g_allocs = 0;
    for (int epoch = 0; epoch < 3; epoch++) {
        nn_batcher_start(b, &rng);
        int64_t n;
        while ((n = nn_batcher_next(b, tape, &x, &y)) > 0)
            ag_tape_reset(tape);
        assert_int_equal(n, 0);
        nn_batcher_start(b, &rng);
        while ((n = nn_batcher_next_into(b, buf, labels)) > 0)
            ;
        assert_int_equal(n, 0);
    }
    int64_t during = g_allocs;
    ag_tensor_free(buf);
    ag_tape_free(tape);
    nn_batcher_free(b);
    nn_dataset_free(ds);
    ag_set_allocator(NULL);
    assert_int_equal(during, 0);
}

/* ---- the real Fashion-MNIST (skipped when the package is absent) ------------ */

static void test_data_fashion_mnist_real(void **state)
{
    (void)state;
    struct stat st;
    if (stat(NN_FASHION_MNIST_DIR, &st) != 0) {
        print_message("  %s absent (apt-get install dataset-fashion-mnist): skipped\n",
                      NN_FASHION_MNIST_DIR);
        skip();
    }
    nn_dataset *tr = NULL, *te = NULL;
    ag_status s = nn_mnist_load(NULL, true, &tr);
    if (s != AG_OK)
        print_message("%s\n", ag_last_error());
    assert_int_equal(s, AG_OK);
    assert_int_equal(nn_mnist_load(NN_FASHION_MNIST_DIR "/", false, &te), AG_OK);
    assert_int_equal(nn_dataset_count(tr), 60000);
    assert_int_equal(nn_dataset_count(te), 10000);
    assert_int_equal(nn_dataset_features(tr), 784);
    int nd;
    const int64_t *shape = nn_dataset_image_shape(tr, &nd);
    assert_int_equal(nd, 2);
    assert_int_equal(shape[0], 28);
    assert_int_equal(shape[1], 28);
    /* Fashion-MNIST is balanced: 6000 / 1000 per class */
    int64_t htr[10] = {0}, hte[10] = {0};
    for (int64_t i = 0; i < 60000; i++)
        htr[nn_dataset_labels(tr)[i]]++;
    for (int64_t i = 0; i < 10000; i++)
        hte[nn_dataset_labels(te)[i]]++;
    for (int c = 0; c < 10; c++) {
        assert_int_equal(htr[c], 6000);
        assert_int_equal(hte[c], 1000);
    }
    double mean, std;
    nn_dataset_pixel_stats(tr, &mean, &std);
    assert_float_equal(mean, NN_FASHION_MNIST_MEAN, 1e-12);
    assert_float_equal(std, NN_FASHION_MNIST_STD, 1e-12);
    nn_dataset_free(tr);
    nn_dataset_free(te);
}

/* The batches a two-thread batcher prefetches (image bytes gathered on a
 * pool task, converted into the tape tensor by the next call) hold the
 * bits of the ones a one-thread batcher fills in place: plain x / 255,
 * the table in f32, and f64; batch 3 over 10 samples ends short. */
static void epoch_batches(const nn_dataset *ds, const nn_batch_opts *o, int threads,
                          double *out, int64_t *labels)
{
    ag_set_num_threads(threads);
    ag_tape *tape = ag_tape_new();
    nn_batcher *b = NULL;
    assert_int_equal(nn_batcher_new(ds, o, &b), AG_OK);
    ag_rng r;
    ag_rng_seed(&r, 7);
    nn_batcher_start(b, &r);
    ag_tensor *x;
    const int64_t *y;
    int64_t n, at = 0;
    while ((n = nn_batcher_next(b, tape, &x, &y)) > 0) {
        for (int64_t i = 0; i < n * 5; i++)
            out[at * 5 + i] = ag_get(x, i);
        memcpy(labels + at, y, (size_t)n * sizeof *y);
        at += n;
        ag_tape_reset(tape);
    }
    assert_int_equal(at, 10);
    nn_batcher_free(b);
    ag_tape_free(tape);
    ag_set_num_threads(0);
}

static void test_data_prefetch_same_bits(void **state)
{
    (void)state;
    uint8_t im[50];
    int64_t lb[10];
    for (int i = 0; i < 50; i++)
        im[i] = (uint8_t)(i * 37 + 11);
    for (int i = 0; i < 10; i++)
        lb[i] = i % 4;
    nn_dataset *ds = NULL;
    assert_int_equal(nn_dataset_from_u8(10, 1, (int64_t[]){5}, im, lb, 4, &ds), AG_OK);
    const nn_batch_opts opts[] = {{.batch = 3},
                                  {.batch = 3, .mean = 0.2860, .std = 0.3530},
                                  {.batch = 3, .dtype = AG_F64, .mean = 0.5, .std = 0.25}};
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        double one[50], two[50];
        int64_t l1[10], l2[10];
        epoch_batches(ds, &opts[k], 1, one, l1);
        epoch_batches(ds, &opts[k], 2, two, l2);
        assert_memory_equal(one, two, sizeof one);
        assert_memory_equal(l1, l2, sizeof l1);
    }
    nn_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_idx_u8),
        cmocka_unit_test(test_data_idx_i8),
        cmocka_unit_test(test_data_idx_i16),
        cmocka_unit_test(test_data_idx_i32),
        cmocka_unit_test(test_data_idx_f32),
        cmocka_unit_test(test_data_idx_f64),
        cmocka_unit_test(test_data_idx_eight_dims_and_empty),
        cmocka_unit_test(test_data_idx_bad_magic),
        cmocka_unit_test(test_data_idx_unknown_type),
        cmocka_unit_test(test_data_idx_bad_ndim),
        cmocka_unit_test(test_data_idx_truncated_header),
        cmocka_unit_test(test_data_idx_truncated_data),
        cmocka_unit_test(test_data_idx_trailing_bytes),
        cmocka_unit_test(test_data_idx_dims_overflow),
        cmocka_unit_test(test_data_idx_gzip_corrupt),
        cmocka_unit_test(test_data_idx_missing_file),
        cmocka_unit_test(test_data_dataset_load_idx),
        cmocka_unit_test(test_data_dataset_count_mismatch),
        cmocka_unit_test(test_data_dataset_label_out_of_range),
        cmocka_unit_test(test_data_dataset_bad_types),
        cmocka_unit_test(test_data_mnist_folder),
        cmocka_unit_test(test_data_mnist_missing_folder),
        cmocka_unit_test(test_data_dataset_from_u8_checks),
        cmocka_unit_test(test_data_pixel_stats),
        cmocka_unit_test(test_data_split_sizes),
        cmocka_unit_test(test_data_subset),
        cmocka_unit_test(test_data_shuffle_determinism),
        cmocka_unit_test(test_data_batch_normalisation),
        cmocka_unit_test(test_data_partial_last_batch),
        cmocka_unit_test(test_data_next_into_buffers),
        cmocka_unit_test(test_data_batches_allocate_nothing),
        cmocka_unit_test(test_data_prefetch_same_bits),
        cmocka_unit_test(test_data_fashion_mnist_real),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
