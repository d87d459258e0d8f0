/*
 * nn_data.h — data for training: IDX files (the MNIST family), image
 * classification data sets, validation splits and a minibatch iterator.
 * (This section will be folded into nn/nn.h.)
 *
 *   nn_dataset *train, *test;
 *   if (nn_mnist_load(NULL, true, &train) != AG_OK ||      (NULL: the default
 *       nn_mnist_load(NULL, false, &test) != AG_OK)         Debian folder)
 *       { fprintf(stderr, "%s\n", ag_last_error()); return 1; }
 *   nn_batch_opts bo = {.batch = 128, .mean = NN_FASHION_MNIST_MEAN,
 *                       .std = NN_FASHION_MNIST_STD};
 *   nn_batcher *it;
 *   nn_batcher_new(train, &bo, &it);
 *   ag_rng rng;  ag_rng_seed(&rng, 42);
 *   for (int epoch = 0; epoch < 5; epoch++) {
 *       nn_batcher_start(it, &rng);                         (a fresh shuffle)
 *       ag_tensor *x;  const int64_t *y;  int64_t n;
 *       while ((n = nn_batcher_next(it, tape, &x, &y)) > 0) {
 *           ... x is a tape tensor [n, 784], y holds n labels ...
 *           ag_tape_reset(tape);
 *       }
 *       if (n < 0) { fprintf(stderr, "%s\n", ag_last_error()); break; }
 *   }
 *   nn_batcher_free(it);  nn_dataset_free(train);  nn_dataset_free(test);
 *
 * Errors.  Every function here that can fail returns an ag_status (or -1
 * for the batch calls) and sets the per-thread message read by
 * ag_last_error(), which names the function called.  A missing file or
 * folder is AG_ERR_IO, and so is a path that is not a regular file (a
 * folder, FIFO or device: refused at once, never waited on); a malformed
 * file is AG_ERR_FORMAT with a message naming the file and what is wrong;
 * no input file can crash the process, leak, or make it allocate more than
 * the file's header promises (capped at NN_IDX_MAX_BYTES).  The accessors
 * take NULL: they return 0 (NULL, NaN for nn_idx_get; a void one does
 * nothing) and set the message ("nn_dataset_count: ds is NULL").
 *
 * Ownership.  Every object returned through an `out` pointer belongs to the
 * caller and is freed by its _free function (_free(NULL) is a no-op).
 * On failure *out is set to NULL.
 */
#ifndef TAPEGRAD_NN_DATA_H
#define TAPEGRAD_NN_DATA_H

#include "autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- IDX files ------------------------------------------------------------
 * The format of MNIST and its relatives: two zero bytes, a type code, the
 * number of dimensions (1..8), that many big-endian u32 dims, then the
 * elements, row-major and big-endian.  The file may be gzipped. */

typedef enum nn_idx_type {
    NN_IDX_U8  = 0x08,
    NN_IDX_I8  = 0x09,
    NN_IDX_I16 = 0x0B,
    NN_IDX_I32 = 0x0C,
    NN_IDX_F32 = 0x0D,
    NN_IDX_F64 = 0x0E
} nn_idx_type;

#define NN_IDX_MAX_DIMS 8
/* Largest data part nn_idx_load accepts (1 GiB). */
#define NN_IDX_MAX_BYTES ((int64_t)1 << 30)

/* A loaded IDX array: the elements in their file type, in host byte order. */
typedef struct nn_idx nn_idx;

/* Reads an IDX file, gzipped (detected by its magic 1f 8b) or plain.
 * Validates the magic, the type code, ndim in 1..NN_IDX_MAX_DIMS, the dims
 * (their product must not overflow and the data must fit NN_IDX_MAX_BYTES),
 * that the data is complete, and that nothing follows it (in a gzipped
 * file: in the decompressed stream; like gzip, zlib ignores non-gzip bytes
 * after the last gzip member).  Only a regular file (or a link to one) is
 * opened.
 * Returns AG_OK and a caller-owned *out, or:
 *   AG_ERR_ARG    path or out is NULL;
 *   AG_ERR_IO     the file cannot be opened or read (for a path in the
 *                 default Fashion-MNIST folder the message says which
 *                 Debian package to install);
 *   AG_ERR_FORMAT the content is malformed (bad gzip stream included);
 *   AG_ERR_NOMEM  no memory. */
ag_status nn_idx_load(const char *path, nn_idx **out);
void      nn_idx_free(nn_idx *a);                       /* NULL is a no-op */

nn_idx_type    nn_idx_type_of(const nn_idx *a);
/* Bytes per element of a type (1, 2, 4 or 8), 0 (and the message) for an
 * unknown code. */
size_t         nn_idx_type_size(nn_idx_type t);
int            nn_idx_ndim(const nn_idx *a);
const int64_t *nn_idx_shape(const nn_idx *a);          /* ndim dims, owned by a */
int64_t        nn_idx_numel(const nn_idx *a);          /* product of the dims */
/* The elements (uint8_t*, int8_t*, int16_t*, int32_t*, float* or double*
 * by type), row-major, host order; owned by a.  NULL when numel is 0. */
const void    *nn_idx_data(const nn_idx *a);
/* Element i (flat index) as a double; NaN with the message when a is NULL
 * or i lies outside [0, numel). */
double         nn_idx_get(const nn_idx *a, int64_t i);

/* ---- data sets -------------------------------------------------------------
 * n samples, each an image of u8 pixels (any shape: [28, 28] for MNIST,
 * flattened to `features` values per sample) and an int64 class label in
 * [0, classes).  Images stay u8 in memory; batches convert them. */

typedef struct nn_dataset nn_dataset;

/* Debian's dataset-fashion-mnist puts its files here. */
#define NN_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
/* Pixel mean and standard deviation of the Fashion-MNIST training images,
 * in units of x/255 (for nn_batch_opts). */
#define NN_FASHION_MNIST_MEAN 0.2860405969887955
#define NN_FASHION_MNIST_STD  0.3530242445149225

/* Loads the MNIST file set from folder dir (NULL: NN_FASHION_MNIST_DIR):
 * train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz] when train,
 * else t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz]
 * (the gzipped name is tried first), with 10 classes.  Errors as in
 * nn_dataset_load_idx; a missing folder is AG_ERR_IO whose message, for
 * the default folder, says `apt-get install dataset-fashion-mnist`. */
ag_status nn_mnist_load(const char *dir, bool train, nn_dataset **out);

/* Loads images (a u8 IDX file, ndim >= 2: [n, ...image dims]) and labels
 * (an integer IDX file of shape [n]) into a data set.  classes > 0 is the
 * number of classes; 0 takes max label + 1.  AG_ERR_FORMAT (naming the
 * file) when the images are not u8 or have ndim < 2, the labels are not
 * 1-D integers, the counts differ, a label lies outside [0, classes), or
 * the image dims (all but the first) multiply to more than NN_IDX_MAX_BYTES
 * pixels, whatever n is; AG_ERR_ARG for a NULL argument or classes < 0;
 * else as nn_idx_load (the messages naming nn_dataset_load_idx). */
ag_status nn_dataset_load_idx(const char *images_path, const char *labels_path,
                              int64_t classes, nn_dataset **out);

/* A data set from memory (copied): n samples of images, row-major
 * [n, image_shape...] u8, and labels [n] in [0, classes), classes > 0.
 * image_ndim in 1..NN_IDX_MAX_DIMS-1; n may be 0, but the images must
 * fit NN_IDX_MAX_BYTES pixels each even then.  AG_ERR_ARG on a bad argument
 * or label, AG_ERR_NOMEM. */
ag_status nn_dataset_from_u8(int64_t n, int image_ndim, const int64_t *image_shape,
                             const uint8_t *images, const int64_t *labels,
                             int64_t classes, nn_dataset **out);
void nn_dataset_free(nn_dataset *ds);                 /* NULL is a no-op */

int64_t        nn_dataset_count(const nn_dataset *ds);      /* n */
int64_t        nn_dataset_features(const nn_dataset *ds);   /* pixels per image */
int64_t        nn_dataset_classes(const nn_dataset *ds);
/* Image shape without the sample axis ([28, 28]); owned by ds. */
const int64_t *nn_dataset_image_shape(const nn_dataset *ds, int *ndim);
/* Pixels [n, features] and labels [n]; owned by ds, NULL when n is 0. */
const uint8_t *nn_dataset_images(const nn_dataset *ds);
const int64_t *nn_dataset_labels(const nn_dataset *ds);
/* Mean and standard deviation (population) of all pixels in units of
 * x/255; 0 and 0 for an empty data set.  Either pointer may be NULL. */
void nn_dataset_pixel_stats(const nn_dataset *ds, double *mean, double *std);

/* Splits ds into *train (n - n_val samples) and *val (n_val samples), both
 * new copies; ds is unchanged.  The validation samples are drawn by rng
 * (the last n_val samples when rng is NULL); both parts keep the original
 * order of their samples.  AG_ERR_ARG unless 0 <= n_val <= n; AG_ERR_NOMEM.
 * On failure both outputs are NULL. */
ag_status nn_dataset_split(const nn_dataset *ds, int64_t n_val, ag_rng *rng,
                           nn_dataset **train, nn_dataset **val);
/* A copy of samples [start, start + count).  AG_ERR_ARG when that range
 * is not inside ds. */
ag_status nn_dataset_subset(const nn_dataset *ds, int64_t start, int64_t count,
                            nn_dataset **out);

/* ---- minibatches -----------------------------------------------------------
 * An epoch visits every sample once, in dataset order or a seeded shuffle
 * (Fisher-Yates drawn with ag_rng_below), B at a time.  Pixels become
 * (x / 255 - mean) / std in f32 or f64.  After nn_batcher_new, filling a
 * batch makes no system allocation (tape tensors come from the arena).
 * With more than one thread (ag_get_num_threads), each call also starts
 * filling the batch after it on a pool thread (ag_task_start, when one
 * would take it), which the next call copies out: the data set and the
 * batcher are read meanwhile, so leave both alone between calls (as
 * always) and use one batcher from one thread. */

typedef struct nn_batch_opts {
    int64_t  batch;     /* B > 0 */
    bool     drop_last; /* skip a last batch smaller than B */
    ag_dtype dtype;     /* AG_F32 (0, the default) or AG_F64 */
    double   mean;      /* subtracted after x / 255; 0 by default */
    double   std;       /* divides after that; 0 means 1 */
} nn_batch_opts;

typedef struct nn_batcher nn_batcher;

/* An iterator over ds, which must outlive it (it is read, not copied).
 * AG_ERR_ARG for NULL arguments, batch <= 0, an unknown dtype, a negative
 * or non-finite std or a non-finite mean; AG_ERR_NOMEM.  A new batcher
 * stands at the start of an epoch in dataset order. */
ag_status nn_batcher_new(const nn_dataset *ds, const nn_batch_opts *opts,
                         nn_batcher **out);
void      nn_batcher_free(nn_batcher *b);             /* NULL is a no-op */

/* Begins an epoch.  rng NULL: dataset order.  Otherwise the order is a
 * shuffle of 0..n-1 drawn from rng (advancing it), so it depends only on
 * rng's state: the same seed gives the same epochs. */
void    nn_batcher_start(nn_batcher *b, ag_rng *rng);
/* Batches per epoch: ceil(n / B), or floor(n / B) with drop_last. */
int64_t nn_batcher_count(const nn_batcher *b);
/* Sample order of the current epoch: n dataset indices, owned by b. */
const int64_t *nn_batcher_order(const nn_batcher *b);

/* Fills the next batch of the epoch.  Returns its row count r (B, or
 * fewer for a last partial batch), 0 when the epoch is over, -1 on error
 * (ag_last_error; a tape allocation failure is also kept on the tape).
 * *x: a new tape tensor [r, features] of opts.dtype on tape;
 * *labels: r labels, owned by b, valid until the next call. */
int64_t nn_batcher_next(nn_batcher *b, ag_tape *tape, ag_tensor **x,
                        const int64_t **labels);
/* The same into caller buffers: x is a 2-D tensor (persistent or tape) of
 * opts.dtype and shape [R, features] with R >= B; rows past r are left
 * as they were.  labels receives r values (room for B).  -1 (message in
 * ag_last_error) for a NULL argument or a dtype or shape mismatch. */
int64_t nn_batcher_next_into(nn_batcher *b, ag_tensor *x, int64_t *labels);

#ifdef __cplusplus
}
#endif
#endif
