/* data.c — IDX reader, image-classification data sets and validation
 * splits (the minibatch iterator is batcher.c).  Legend: n = samples, F =
 * pixels per sample (features). */
#include "data_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define NN_PATH_MAX 4096
/* First buffer of a data read; it grows with the bytes actually read, so a
 * lying header cannot make a short file allocate up to NN_IDX_MAX_BYTES. */
#define NN_READ_FIRST ((size_t)64 << 20)
#define NN_READ_CHUNK ((unsigned)16 << 20)

void *data_alloc(size_t size) { return ag_mem_alloc(size); }
void data_free(void *p) { ag_mem_free(p); }

ag_status data_error(ag_status s, const char *fmt, ...)
{
    char msg[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ag_set_last_error("%s", msg);
    return s;
}

/* ", install it with: apt-get install ..." for paths inside the default
 * Fashion-MNIST folder, "" elsewhere. */
static const char *install_hint(const char *path)
{
    size_t n = strlen(NN_FASHION_MNIST_DIR);
    if (strncmp(path, NN_FASHION_MNIST_DIR, n) == 0 &&
        (path[n] == '\0' || path[n] == '/'))
        return "; install it with: apt-get install dataset-fashion-mnist";
    return "";
}

static const char *errno_str(int e, char *buf, size_t n)
{
    if (strerror_r(e, buf, n) != 0)
        snprintf(buf, n, "error %d", e);
    return buf;
}

/* ---- IDX ------------------------------------------------------------------ */

struct nn_idx {
    nn_idx_type type;
    int ndim;
    int64_t shape[NN_IDX_MAX_DIMS];
    int64_t numel;
    void *data; /* numel elements of type, host order */
};

size_t nn_idx_type_size(nn_idx_type t)
{
    switch (t) {
    case NN_IDX_U8: case NN_IDX_I8: return 1;
    case NN_IDX_I16: return 2;
    case NN_IDX_I32: case NN_IDX_F32: return 4;
    case NN_IDX_F64: return 8;
    }
    ag_set_last_error("nn_idx_type_size: t = %d is no IDX type code", (int)t);
    return 0;
}

void nn_idx_free(nn_idx *a)
{
    if (!a)
        return;
    data_free(a->data);
    data_free(a);
}

bool data_present(const void *obj, const char *fn, const char *arg)
{
    if (!obj)
        ag_set_last_error("%s: %s is NULL", fn, arg);
    return obj != NULL;
}

nn_idx_type nn_idx_type_of(const nn_idx *a)
{
    return data_present(a, "nn_idx_type_of", "a") ? a->type : (nn_idx_type)0;
}

int nn_idx_ndim(const nn_idx *a) { return data_present(a, "nn_idx_ndim", "a") ? a->ndim : 0; }

const int64_t *nn_idx_shape(const nn_idx *a)
{
    return data_present(a, "nn_idx_shape", "a") ? a->shape : NULL;
}

int64_t nn_idx_numel(const nn_idx *a)
{
    return data_present(a, "nn_idx_numel", "a") ? a->numel : 0;
}

const void *nn_idx_data(const nn_idx *a)
{
    return data_present(a, "nn_idx_data", "a") ? a->data : NULL;
}

double nn_idx_get(const nn_idx *a, int64_t i)
{
    if (!data_present(a, "nn_idx_get", "a"))
        return NAN;
    if (i < 0 || i >= a->numel) {
        ag_set_last_error("nn_idx_get: i = %lld is outside [0, %lld)", (long long)i,
                          (long long)a->numel);
        return NAN;
    }
    switch (a->type) {
    case NN_IDX_U8: return ((const uint8_t *)a->data)[i];
    case NN_IDX_I8: return ((const int8_t *)a->data)[i];
    case NN_IDX_I16: return ((const int16_t *)a->data)[i];
    case NN_IDX_I32: return ((const int32_t *)a->data)[i];
    case NN_IDX_F32: return ((const float *)a->data)[i];
    case NN_IDX_F64: return ((const double *)a->data)[i];
    }
    return 0.0;
}

/* An open file (gzipped or plain: zlib reads both) and what was read. */
typedef struct idx_reader {
    gzFile f;
    const char *fn;   /* the public function called, for messages */
    const char *path;
    int64_t offset; /* uncompressed bytes read so far */
} idx_reader;

/* Reads up to n bytes; *got says how many.  A short read is fine (the
 * caller judges it); a broken gzip stream is AG_ERR_FORMAT, a read error
 * AG_ERR_IO. */
static ag_status reader_read(idx_reader *r, void *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t want = n - *got;
        unsigned len = want > NN_READ_CHUNK ? NN_READ_CHUNK : (unsigned)want;
        int k = gzread(r->f, (char *)buf + *got, len);
        if (k > 0) {
            *got += (size_t)k;
            r->offset += k;
            continue;
        }
        int zerr = Z_OK;
        const char *zmsg = gzerror(r->f, &zerr);
        if (zerr == Z_ERRNO)
            return data_error(AG_ERR_IO, "%s: %s: read failed after %lld bytes",
                              r->fn, r->path, (long long)r->offset);
        if (zerr == Z_BUF_ERROR)
            return data_error(AG_ERR_FORMAT,
                              "%s: %s: gzip stream truncated after %lld bytes",
                              r->fn, r->path, (long long)r->offset);
        /* zlib says "<fd:N>: why" (gzdopen) or "path: why" */
        const char *colon = zmsg ? strstr(zmsg, ": ") : NULL;
        size_t plen = strlen(r->path);
        if (colon && (strncmp(zmsg, "<fd:", 4) == 0 ||
                      ((size_t)(colon - zmsg) == plen && strncmp(zmsg, r->path, plen) == 0)))
            zmsg = colon + 2;
        if (zerr != Z_OK || k < 0)
            return data_error(AG_ERR_FORMAT, "%s: %s: corrupt gzip data (%s)",
                              r->fn, r->path, zmsg ? zmsg : "zlib error");
        break; /* end of file */
    }
    return AG_OK;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads magic and dims into a (type, ndim, shape, numel) and checks them. */
static ag_status idx_read_header(idx_reader *r, nn_idx *a)
{
    unsigned char head[4 + 4 * NN_IDX_MAX_DIMS];
    size_t got;
    ag_status s = reader_read(r, head, 4, &got);
    if (s != AG_OK)
        return s;
    if (got < 4)
        return data_error(AG_ERR_FORMAT,
                          "%s: %s: %zu bytes, too short for the 4-byte IDX magic",
                          r->fn, r->path, got);
    if (head[0] != 0 || head[1] != 0)
        return data_error(AG_ERR_FORMAT,
                          "%s: %s: bad magic %02x %02x %02x %02x (an IDX file "
                          "starts with 00 00, a type code and the number of dims)",
                          r->fn, r->path, head[0], head[1], head[2], head[3]);
    a->type = (nn_idx_type)head[2];
    size_t esize = nn_idx_type_size(a->type);
    if (esize == 0)
        return data_error(AG_ERR_FORMAT,
                          "%s: %s: unknown type code 0x%02x (expected 08 u8, 09 i8, "
                          "0B i16, 0C i32, 0D f32 or 0E f64)", r->fn, r->path, head[2]);
    a->ndim = head[3];
    if (a->ndim < 1 || a->ndim > NN_IDX_MAX_DIMS)
        return data_error(AG_ERR_FORMAT, "%s: %s: %d dims (expected 1 to %d)",
                          r->fn, r->path, a->ndim, NN_IDX_MAX_DIMS);
    size_t dbytes = 4 * (size_t)a->ndim;
    if ((s = reader_read(r, head + 4, dbytes, &got)) != AG_OK)
        return s;
    if (got < dbytes)
        return data_error(AG_ERR_FORMAT,
                          "%s: %s: header truncated: %d dims need %zu bytes, "
                          "the file has %zu", r->fn, r->path, a->ndim, dbytes, got);
    bool zero = false;
    for (int i = 0; i < a->ndim; i++) {
        a->shape[i] = be32(head + 4 + 4 * i);
        zero = zero || a->shape[i] == 0;
    }
    /* element count, overflow-checked (a zero dim makes it 0 whatever the rest) */
    uint64_t numel = 1;
    for (int i = 0; i < a->ndim && !zero; i++) {
        if (__builtin_mul_overflow(numel, (uint64_t)a->shape[i], &numel))
            return data_error(AG_ERR_FORMAT,
                              "%s: %s: the product of the %d dims overflows 64 bits",
                              r->fn, r->path, a->ndim);
    }
    if (!zero && numel > (uint64_t)NN_IDX_MAX_BYTES / esize)
        return data_error(AG_ERR_FORMAT,
                          "%s: %s: dims promise %llu elements of %zu bytes, over "
                          "the %lld-byte limit", r->fn, r->path, (unsigned long long)numel,
                          esize, (long long)NN_IDX_MAX_BYTES);
    a->numel = zero ? 0 : (int64_t)numel;
    return AG_OK;
}

/* Reads exactly `bytes` of data into a growing buffer, then checks that the
 * file ends there.  On success a->data owns the bytes. */
static ag_status idx_read_data(idx_reader *r, nn_idx *a, size_t bytes)
{
    size_t cap = bytes < NN_READ_FIRST ? bytes : NN_READ_FIRST, have = 0;
    unsigned char *buf = bytes ? data_alloc(cap) : NULL;
    if (bytes && !buf)
        return data_error(AG_ERR_NOMEM, "%s: %s: no memory for %zu bytes",
                          r->fn, r->path, cap);
    ag_status s = AG_OK;
    while (have < bytes) {
        if (have == cap) { /* grow: double, up to what the header promised */
            size_t ncap = cap > bytes / 2 ? bytes : 2 * cap;
            unsigned char *nbuf = data_alloc(ncap);
            if (!nbuf) {
                s = data_error(AG_ERR_NOMEM, "%s: %s: no memory for %zu bytes",
                               r->fn, r->path, ncap);
                break;
            }
            memcpy(nbuf, buf, have);
            data_free(buf);
            buf = nbuf;
            cap = ncap;
        }
        size_t got;
        if ((s = reader_read(r, buf + have, cap - have, &got)) != AG_OK)
            break;
        have += got;
        if (have < cap) {
            s = data_error(AG_ERR_FORMAT,
                           "%s: %s: data truncated: the header promises %zu bytes "
                           "of data, the file has %zu", r->fn, r->path, bytes, have);
            break;
        }
    }
    unsigned char extra[64];
    size_t got = 0;
    if (s == AG_OK && (s = reader_read(r, extra, sizeof extra, &got)) == AG_OK && got > 0)
        s = data_error(AG_ERR_FORMAT,
                       "%s: %s: trailing bytes after the %zu data bytes the "
                       "header promises", r->fn, r->path, bytes);
    if (s != AG_OK) {
        data_free(buf);
        return s;
    }
    a->data = buf;
    return AG_OK;
}

/* IDX data is big-endian: swap multi-byte elements on a little-endian host. */
static void idx_to_host(nn_idx *a)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    size_t esize = nn_idx_type_size(a->type);
    if (first == 0 || esize == 1)
        return;
    unsigned char *p = a->data;
    for (int64_t i = 0; i < a->numel; i++, p += esize)
        for (size_t k = 0; k < esize / 2; k++) {
            unsigned char t = p[k];
            p[k] = p[esize - 1 - k];
            p[esize - 1 - k] = t;
        }
}

/* What a path that is not a regular file is, for the message. */
static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a folder" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character "
           "device" : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "special";
}

/* Opens path for reading if it is a regular file: AG_ERR_IO (with the
 * install hint) when missing, AG_ERR_IO for a folder, FIFO or device.
 * O_NONBLOCK keeps open() of a FIFO from waiting for a writer; it is
 * cleared once fstat has shown a regular file. */
static ag_status open_file(const char *fn, const char *path, gzFile *out)
{
    char eb[128];
    struct stat st;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return data_error(AG_ERR_IO, "%s: cannot open %s: %s%s", fn, path,
                          errno_str(errno, eb, sizeof eb), install_hint(path));
    int flags = 0;
    ag_status s = AG_OK;
    if (fstat(fd, &st) != 0)
        s = data_error(AG_ERR_IO, "%s: cannot stat %s: %s", fn, path,
                       errno_str(errno, eb, sizeof eb));
    else if (!S_ISREG(st.st_mode))
        s = data_error(AG_ERR_IO, "%s: %s is %s, not a regular file", fn, path,
                       file_kind(st.st_mode));
    else if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        s = data_error(AG_ERR_IO, "%s: %s: cannot clear O_NONBLOCK: %s", fn, path,
                       errno_str(errno, eb, sizeof eb));
    if (s == AG_OK) {
        errno = 0;
        *out = gzdopen(fd, "rb"); /* takes fd */
        if (!*out)
            s = data_error(errno && errno != ENOMEM ? AG_ERR_IO : AG_ERR_NOMEM,
                           "%s: cannot open %s: %s", fn, path,
                           errno && errno != ENOMEM ? errno_str(errno, eb, sizeof eb)
                                                    : "no memory");
    }
    if (s != AG_OK) {
        close(fd);
        return s;
    }
    gzbuffer(*out, 1u << 17);
    return AG_OK;
}

/* nn_idx_load for the public function fn, which messages name. */
static ag_status idx_load(const char *fn, const char *path, nn_idx **out)
{
    idx_reader r = {.fn = fn, .path = path};
    ag_status s = open_file(fn, path, &r.f);
    if (s != AG_OK)
        return s;
    nn_idx *a = data_alloc(sizeof *a);
    if (!a) {
        gzclose(r.f);
        return data_error(AG_ERR_NOMEM, "%s: no memory", fn);
    }
    memset(a, 0, sizeof *a);
    s = idx_read_header(&r, a);
    if (s == AG_OK)
        s = idx_read_data(&r, a, (size_t)a->numel * nn_idx_type_size(a->type));
    gzclose(r.f);
    if (s != AG_OK) {
        nn_idx_free(a);
        return s;
    }
    idx_to_host(a);
    *out = a;
    return AG_OK;
}

ag_status nn_idx_load(const char *path, nn_idx **out)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return data_error(AG_ERR_ARG, "nn_idx_load: %s is NULL", path ? "out" : "path");
    return idx_load("nn_idx_load", path, out);
}

/* ---- data sets -------------------------------------------------------------- */


void nn_dataset_free(nn_dataset *ds)
{
    if (!ds)
        return;
    data_free(ds->images);
    data_free(ds->labels);
    data_free(ds);
}

/* True when an image of these dims has a pixel count that fits
 * NN_IDX_MAX_BYTES: the product of its non-zero dims, overflow-checked (a
 * zero dim makes the count 0 but does not excuse the others). */
static bool image_dims_fit(int ndim, const int64_t *shape)
{
    int64_t f = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && f > NN_IDX_MAX_BYTES / shape[i]))
            return false;
        f *= shape[i] > 0 ? shape[i] : 1;
    }
    return true;
}

/* An empty data set with room for n samples of an image shape that has
 * already been checked (image_dims_fit, and F * n fits NN_IDX_MAX_BYTES). */
static nn_dataset *dataset_alloc(int64_t n, int image_ndim, const int64_t *image_shape,
                                 int64_t classes)
{
    nn_dataset *ds = data_alloc(sizeof *ds);
    if (!ds)
        return NULL;
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->classes = classes;
    ds->image_ndim = image_ndim;
    ds->features = 1;
    for (int i = 0; i < image_ndim; i++) {
        ds->image_shape[i] = image_shape[i];
        ds->features *= image_shape[i];
    }
    if (n > 0) {
        ds->images = data_alloc((size_t)(n * ds->features));
        ds->labels = data_alloc((size_t)n * sizeof *ds->labels);
        if (!ds->images || !ds->labels) {
            nn_dataset_free(ds);
            return NULL;
        }
    }
    return ds;
}

int64_t nn_dataset_count(const nn_dataset *ds)
{
    return data_present(ds, "nn_dataset_count", "ds") ? ds->n : 0;
}

int64_t nn_dataset_features(const nn_dataset *ds)
{
    return data_present(ds, "nn_dataset_features", "ds") ? ds->features : 0;
}

int64_t nn_dataset_classes(const nn_dataset *ds)
{
    return data_present(ds, "nn_dataset_classes", "ds") ? ds->classes : 0;
}

const uint8_t *nn_dataset_images(const nn_dataset *ds)
{
    return data_present(ds, "nn_dataset_images", "ds") ? ds->images : NULL;
}

const int64_t *nn_dataset_labels(const nn_dataset *ds)
{
    return data_present(ds, "nn_dataset_labels", "ds") ? ds->labels : NULL;
}

const int64_t *nn_dataset_image_shape(const nn_dataset *ds, int *ndim)
{
    bool ok = data_present(ds, "nn_dataset_image_shape", "ds");
    if (ndim)
        *ndim = ok ? ds->image_ndim : 0;
    return ok ? ds->image_shape : NULL;
}

void nn_dataset_pixel_stats(const nn_dataset *ds, double *mean, double *std)
{
    if (!data_present(ds, "nn_dataset_pixel_stats", "ds")) {
        if (mean)
            *mean = 0.0;
        if (std)
            *std = 0.0;
        return;
    }
    int64_t hist[256] = {0}, total = ds->n * ds->features;
    for (int64_t i = 0; i < total; i++)
        hist[ds->images[i]]++;
    double m = 0.0, var = 0.0;
    for (int v = 0; v < 256 && total > 0; v++)
        m += v / 255.0 * (double)hist[v];
    m = total > 0 ? m / (double)total : 0.0;
    for (int v = 0; v < 256 && total > 0; v++)
        var += (v / 255.0 - m) * (v / 255.0 - m) * (double)hist[v];
    var = total > 0 ? var / (double)total : 0.0;
    if (mean)
        *mean = m;
    if (std)
        *std = sqrt(var);
}

ag_status nn_dataset_from_u8(int64_t n, int image_ndim, const int64_t *image_shape,
                             const uint8_t *images, const int64_t *labels,
                             int64_t classes, nn_dataset **out)
{
    static const char *fn = "nn_dataset_from_u8";
    if (out)
        *out = NULL;
    if (!out || !image_shape || (n > 0 && (!images || !labels)))
        return data_error(AG_ERR_ARG, "%s: NULL argument", fn);
    if (n < 0 || classes <= 0 || image_ndim < 1 || image_ndim >= NN_IDX_MAX_DIMS)
        return data_error(AG_ERR_ARG, "%s: bad n %lld, classes %lld or image_ndim %d", fn,
                          (long long)n, (long long)classes, image_ndim);
    int64_t total = n;
    for (int i = 0; i < image_ndim; i++) {
        if (image_shape[i] < 0 || (image_shape[i] > 0 && total > NN_IDX_MAX_BYTES / image_shape[i]))
            return data_error(AG_ERR_ARG, "%s: bad image shape (dim %d is %lld)", fn, i,
                              (long long)image_shape[i]);
        total *= image_shape[i];
    }
    if (!image_dims_fit(image_ndim, image_shape))
        return data_error(AG_ERR_ARG, "%s: image_shape multiplies to more than %lld pixels "
                          "an image", fn, (long long)NN_IDX_MAX_BYTES);
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return data_error(AG_ERR_ARG, "%s: label %lld of sample %lld outside [0, %lld)",
                              fn, (long long)labels[i], (long long)i, (long long)classes);
    nn_dataset *ds = dataset_alloc(n, image_ndim, image_shape, classes);
    if (!ds)
        return data_error(AG_ERR_NOMEM, "%s: no memory", fn);
    if (n > 0) {
        memcpy(ds->images, images, (size_t)total);
        memcpy(ds->labels, labels, (size_t)n * sizeof *labels);
    }
    *out = ds;
    return AG_OK;
}

/* Checks loaded images and labels and builds the data set from them; the
 * data set takes over the pixel buffer of im. */
static ag_status dataset_from_idx(const char *fn, nn_idx *im, const char *im_path,
                                  const nn_idx *lb, const char *lb_path, int64_t classes,
                                  nn_dataset **out)
{
    if (im->type != NN_IDX_U8 || im->ndim < 2)
        return data_error(AG_ERR_FORMAT,
                          "%s: %s: images must be u8 with at least 2 dims, found type 0x%02x "
                          "with %d dims", fn, im_path, (unsigned)im->type, im->ndim);
    if (!image_dims_fit(im->ndim - 1, im->shape + 1))
        return data_error(AG_ERR_FORMAT,
                          "%s: %s: the image dims (all but the first) multiply to more than "
                          "%lld pixels an image", fn, im_path, (long long)NN_IDX_MAX_BYTES);
    if (lb->ndim != 1 || lb->type == NN_IDX_F32 || lb->type == NN_IDX_F64)
        return data_error(AG_ERR_FORMAT,
                          "%s: %s: labels must be 1-D integers, found type 0x%02x with %d dims",
                          fn, lb_path, (unsigned)lb->type, lb->ndim);
    int64_t n = im->shape[0];
    if (lb->shape[0] != n)
        return data_error(AG_ERR_FORMAT, "%s: %s has %lld images but %s has %lld labels", fn,
                          im_path, (long long)n, lb_path, (long long)lb->shape[0]);
    int64_t max = -1;
    for (int64_t i = 0; i < n; i++) {
        double v = nn_idx_get(lb, i);
        if (v < 0 || (classes > 0 && v >= (double)classes))
            return data_error(AG_ERR_FORMAT, "%s: %s: label %.0f of sample %lld outside "
                              "[0, %lld)", fn, lb_path, v, (long long)i, (long long)classes);
        max = (int64_t)v > max ? (int64_t)v : max;
    }
    if (classes == 0 && (classes = max + 1) == 0)
        return data_error(AG_ERR_FORMAT, "%s: %s: no labels to count the classes from", fn,
                          lb_path);
    nn_dataset *ds = dataset_alloc(n, im->ndim - 1, im->shape + 1, classes);
    if (!ds)
        return data_error(AG_ERR_NOMEM, "%s: no memory", fn);
    if (n > 0 && im->data) { /* same allocator: take it rather than copy */
        data_free(ds->images);
        ds->images = im->data;
        im->data = NULL;
    }
    for (int64_t i = 0; i < n; i++)
        ds->labels[i] = (int64_t)nn_idx_get(lb, i);
    *out = ds;
    return AG_OK;
}

/* nn_dataset_load_idx for the public function fn, which messages name. */
static ag_status dataset_load(const char *fn, const char *images_path,
                              const char *labels_path, int64_t classes, nn_dataset **out)
{
    nn_idx *im = NULL, *lb = NULL;
    ag_status s = idx_load(fn, labels_path, &lb);
    if (s == AG_OK)
        s = idx_load(fn, images_path, &im);
    if (s == AG_OK)
        s = dataset_from_idx(fn, im, images_path, lb, labels_path, classes, out);
    nn_idx_free(im);
    nn_idx_free(lb);
    return s;
}

ag_status nn_dataset_load_idx(const char *images_path, const char *labels_path,
                              int64_t classes, nn_dataset **out)
{
    if (out)
        *out = NULL;
    if (!images_path || !labels_path || !out || classes < 0)
        return data_error(AG_ERR_ARG, "nn_dataset_load_idx: %s",
                          classes < 0 ? "classes < 0" : "NULL argument");
    return dataset_load("nn_dataset_load_idx", images_path, labels_path, classes, out);
}

/* path = dir/name.gz when that exists, else dir/name (which may not exist:
 * the loader then says so).  AG_ERR_ARG when it does not fit. */
static ag_status mnist_path(const char *dir, const char *name, char *path)
{
    size_t len = strlen(dir);
    const char *sep = len > 0 && dir[len - 1] == '/' ? "" : "/";
    int k = snprintf(path, NN_PATH_MAX, "%s%s%s.gz", dir, sep, name);
    if (k < 0 || k >= NN_PATH_MAX)
        return data_error(AG_ERR_ARG, "nn_mnist_load: folder name too long");
    struct stat st;
    if (stat(path, &st) != 0)
        path[k - 3] = '\0';
    return AG_OK;
}

ag_status nn_mnist_load(const char *dir, bool train, nn_dataset **out)
{
    if (out)
        *out = NULL;
    if (!out)
        return data_error(AG_ERR_ARG, "nn_mnist_load: out is NULL");
    if (!dir)
        dir = NN_FASHION_MNIST_DIR;
    struct stat st;
    char eb[128];
    bool found = stat(dir, &st) == 0;
    if (!found || !S_ISDIR(st.st_mode)) {
        const char *why = found ? "not a folder" : errno_str(errno, eb, sizeof eb);
        if (install_hint(dir)[0])
            return data_error(AG_ERR_IO, "nn_mnist_load: folder %s not found (%s); install "
                              "Fashion-MNIST with: apt-get install dataset-fashion-mnist",
                              dir, why);
        return data_error(AG_ERR_IO, "nn_mnist_load: folder %s not found (%s)", dir, why);
    }
    const char *set = train ? "train" : "t10k";
    char name[32], im_path[NN_PATH_MAX], lb_path[NN_PATH_MAX];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", set);
    ag_status s = mnist_path(dir, name, im_path);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", set);
    if (s == AG_OK)
        s = mnist_path(dir, name, lb_path);
    if (s == AG_OK)
        s = dataset_load("nn_mnist_load", im_path, lb_path, 10, out);
    return s;
}

ag_status nn_dataset_subset(const nn_dataset *ds, int64_t start, int64_t count,
                            nn_dataset **out)
{
    if (out)
        *out = NULL;
    if (!ds || !out)
        return data_error(AG_ERR_ARG, "nn_dataset_subset: NULL argument");
    if (start < 0 || count < 0 || start > ds->n || count > ds->n - start)
        return data_error(AG_ERR_ARG, "nn_dataset_subset: start %lld, count %lld is not "
                          "a range inside [0, %lld)", (long long)start, (long long)count,
                          (long long)ds->n);
    nn_dataset *sub = dataset_alloc(count, ds->image_ndim, ds->image_shape, ds->classes);
    if (!sub)
        return data_error(AG_ERR_NOMEM, "nn_dataset_subset: no memory");
    if (count > 0) {
        memcpy(sub->images, ds->images + start * ds->features, (size_t)(count * ds->features));
        memcpy(sub->labels, ds->labels + start, (size_t)count * sizeof *ds->labels);
    }
    *out = sub;
    return AG_OK;
}

/* Appends sample i of src to dst at position *k. */
static void copy_sample(nn_dataset *dst, int64_t *k, const nn_dataset *src, int64_t i)
{
    memcpy(dst->images + *k * dst->features, src->images + i * src->features,
           (size_t)src->features);
    dst->labels[(*k)++] = src->labels[i];
}

ag_status nn_dataset_split(const nn_dataset *ds, int64_t n_val, ag_rng *rng,
                           nn_dataset **train, nn_dataset **val)
{
    static const char *fn = "nn_dataset_split";
    if (train)
        *train = NULL;
    if (val)
        *val = NULL;
    if (!ds || !train || !val)
        return data_error(AG_ERR_ARG, "%s: NULL argument", fn);
    if (n_val < 0 || n_val > ds->n)
        return data_error(AG_ERR_ARG, "%s: n_val %lld outside [0, %lld]", fn,
                          (long long)n_val, (long long)ds->n);
    /* in_val[i]: sample i goes to the validation part */
    bool *in_val = data_alloc(ds->n > 0 ? (size_t)ds->n : 1);
    int64_t *perm = rng && ds->n > 0 ? data_alloc((size_t)ds->n * sizeof *perm) : NULL;
    nn_dataset *tr = dataset_alloc(ds->n - n_val, ds->image_ndim, ds->image_shape, ds->classes);
    nn_dataset *va = dataset_alloc(n_val, ds->image_ndim, ds->image_shape, ds->classes);
    if (!in_val || (rng && ds->n > 0 && !perm) || !tr || !va) {
        data_free(in_val);
        data_free(perm);
        nn_dataset_free(tr);
        nn_dataset_free(va);
        return data_error(AG_ERR_NOMEM, "%s: no memory", fn);
    }
    for (int64_t i = 0; i < ds->n; i++)
        in_val[i] = !rng && i >= ds->n - n_val;
    if (rng) { /* the first n_val steps of a Fisher-Yates shuffle pick them */
        for (int64_t i = 0; i < ds->n; i++)
            perm[i] = i;
        for (int64_t i = 0; i < n_val; i++) {
            int64_t j = i + (int64_t)ag_rng_below(rng, (uint64_t)(ds->n - i));
            int64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
            in_val[perm[i]] = true;
        }
    }
    int64_t kt = 0, kv = 0;
    for (int64_t i = 0; i < ds->n; i++)
        copy_sample(in_val[i] ? va : tr, in_val[i] ? &kv : &kt, ds, i);
    data_free(in_val);
    data_free(perm);
    *train = tr;
    *val = va;
    return AG_OK;
}
