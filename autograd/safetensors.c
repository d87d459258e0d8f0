/* safetensors.c — the checkpoint format: a loader that trusts nothing and a
 * saver that never leaves a half-written file in place.
 *
 * Layout: H (u64, little-endian) | H bytes of JSON header | data section.
 * The header is {name: {"dtype": "F32", "shape": [2,3],
 * "data_offsets": [begin, end]}, ..., "__metadata__": {key: "value"}};
 * offsets are byte offsets into the data section, where tensors lie back to
 * back, row-major, little-endian.  We pad the header with spaces to a
 * multiple of 8 so the data section starts aligned.
 *
 * Loading: H is checked against a cap and the real file size before a byte
 * is allocated for it; the JSON (duplicate keys rejected) is checked entry
 * by entry, then the offsets are proven to tile the data section exactly,
 * and only then is data read, front to back.
 *
 * Saving: the file is written under a temporary name in the target's
 * folder, flushed, fsynced and renamed over the target, then the folder is
 * fsynced.  Any failure before the rename removes the temporary file. */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#include "autograd_internal.h"
#include "safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_KEY "__metadata__"
#define CHUNK ((size_t)1 << 20) /* bytes per fwrite/fread of tensor data */

int64_t ag_safetensors_fail_after_bytes = -1;
void (*ag_safetensors_write_hook)(uint64_t written) = NULL;

struct ag_safetensors {
    int n, n_meta;
    ag_tensor **tensors;      /* (n) in file order */
    const char **names;       /* (n) into pool */
    struct st_name_ix *by_name; /* (n) sorted by name, for get */
    const char **meta_keys;   /* (n_meta) into pool, header order */
    const char **meta_values; /* (n_meta) into pool */
    char *pool;               /* every string, NUL-terminated */
};

typedef struct st_name_ix {
    const char *name;
    int ix;
} st_name_ix;

static bool host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Reverses each `size`-byte element of buf (n bytes) in place. */
static void swap_elems(unsigned char *buf, size_t n, size_t size)
{
    for (size_t i = 0; i + size <= n; i += size)
        for (size_t a = i, b = i + size - 1; a < b; a++, b--) {
            unsigned char t = buf[a];
            buf[a] = buf[b];
            buf[b] = t;
        }
}

static const char *err_text(int e, char *buf, size_t n)
{
    if (strerror_r(e, buf, n) != 0)
        snprintf(buf, n, "error %d", e);
    return buf;
}

/* ======================================================================
 * Loading
 * ====================================================================== */

/* Where the bytes come from: a file or a memory buffer. */
typedef struct st_src {
    FILE *f;                  /* NULL: read from mem */
    const unsigned char *mem;
    uint64_t size, pos;
    const char *label;        /* path, for messages */
} st_src;

/* One validated header entry. */
typedef struct st_entry {
    const char *name;         /* borrowed from the JSON */
    ag_dtype dtype;
    int ndim;
    int64_t shape[AG_MAX_DIMS];
    int64_t numel;
    int64_t begin, end;       /* in the data section */
    int order;                /* position in the header, breaks ties */
} st_entry;

static ag_status load_fail(const st_src *s, ag_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static ag_status load_fail(const st_src *s, ag_status st, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    ag_set_last_error("ag_safetensors_load: '%.160s': %s", s->label, why);
    return st;
}

static bool src_read(st_src *s, void *dst, size_t n)
{
    if (n > s->size - s->pos)
        return false;
    if (s->f) {
        if (n && fread(dst, 1, n, s->f) != n)
            return false;
    } else if (n) {
        memcpy(dst, s->mem + s->pos, n);
    }
    s->pos += n;
    return true;
}

/* Valid safetensors dtypes we do not load, so the message can say so. */
static const char *const other_dtypes[] = {
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16",
    "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
};

static ag_status parse_dtype(const st_src *s, const char *name, json_t *v,
                             ag_dtype *dt)
{
    const char *str = json_string_value(v);
    if (!str)
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': dtype is missing or "
                         "not a string", name);
    if (!strcmp(str, "F32") || !strcmp(str, "F64")) {
        *dt = str[1] == '3' ? AG_F32 : AG_F64;
        return AG_OK;
    }
    for (size_t i = 0; i < sizeof other_dtypes / sizeof *other_dtypes; i++)
        if (!strcmp(str, other_dtypes[i]))
            return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': dtype %s is not "
                             "supported (only F32 and F64)", name, str);
    return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': unknown dtype '%.40s'",
                     name, str);
}

static ag_status parse_shape(const st_src *s, const char *name, json_t *v,
                             st_entry *e)
{
    if (!json_is_array(v))
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': shape is missing or "
                         "not an array", name);
    size_t nd = json_array_size(v);
    if (nd > AG_MAX_DIMS)
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': shape has %zu dims "
                         "(at most %d)", name, nd, AG_MAX_DIMS);
    size_t dsize = ag_dtype_size(e->dtype);
    int64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(v, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': shape[%zu] is not "
                             "a non-negative integer", name, i);
        e->shape[i] = (int64_t)json_integer_value(d);
    }
    e->ndim = (int)nd;
    /* the byte count must fit in int64: numel * dsize <= INT64_MAX */
    for (int i = 0; i < e->ndim; i++) {
        int64_t d = e->shape[i];
        if (d && numel > INT64_MAX / (int64_t)dsize / d) {
            char sh[200];
            return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': shape %s "
                             "overflows (too many elements)", name,
                             ag_fmt_shape(sh, sizeof sh, e->ndim, e->shape));
        }
        numel *= d;
    }
    e->numel = numel;
    return AG_OK;
}

static ag_status parse_offsets(const st_src *s, const char *name, json_t *v,
                               uint64_t data_len, st_entry *e)
{
    json_t *b = json_array_get(v, 0), *en = json_array_get(v, 1);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(b) ||
        !json_is_integer(en))
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': data_offsets is "
                         "missing or not an array of two integers", name);
    json_int_t begin = json_integer_value(b), end = json_integer_value(en);
    if (begin < 0 || end < 0)
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': data_offsets [%lld,%lld] "
                         "are negative", name, (long long)begin, (long long)end);
    if (begin > end)
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': data_offsets [%lld,%lld] "
                         "are reversed (begin > end)", name, (long long)begin,
                         (long long)end);
    if ((uint64_t)end > data_len)
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': data_offsets [%lld,%lld] "
                         "are out of range: the data section has %llu bytes "
                         "(truncated file?)", name, (long long)begin, (long long)end,
                         (unsigned long long)data_len);
    int64_t need = e->numel * (int64_t)ag_dtype_size(e->dtype);
    if (end - begin != need) {
        char sh[200];
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': data_offsets span %lld "
                         "bytes but shape %s of %s needs %lld", name,
                         (long long)(end - begin),
                         ag_fmt_shape(sh, sizeof sh, e->ndim, e->shape),
                         e->dtype == AG_F32 ? "F32" : "F64", (long long)need);
    }
    e->begin = begin;
    e->end = end;
    return AG_OK;
}

static ag_status parse_entry(const st_src *s, const char *name, json_t *v,
                             uint64_t data_len, st_entry *e)
{
    if (!json_is_object(v))
        return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': entry is not a JSON "
                         "object", name);
    e->name = name;
    ag_status st = parse_dtype(s, name, json_object_get(v, "dtype"), &e->dtype);
    if (st == AG_OK)
        st = parse_shape(s, name, json_object_get(v, "shape"), e);
    if (st == AG_OK)
        st = parse_offsets(s, name, json_object_get(v, "data_offsets"), data_len, e);
    return st;
}

static ag_status check_metadata(const st_src *s, json_t *meta)
{
    if (!json_is_object(meta))
        return load_fail(s, AG_ERR_FORMAT, META_KEY " is not a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v) {
        if (!json_is_string(v))
            return load_fail(s, AG_ERR_FORMAT, META_KEY " value of key '%.100s' is "
                             "not a string", key);
    }
    return AG_OK;
}

static int entry_cmp(const void *pa, const void *pb)
{
    const st_entry *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return (a->order > b->order) - (a->order < b->order);
}

/* Sorted entries must tile [0, data_len) exactly: no gap, no overlap. */
static ag_status check_tiling(const st_src *s, const st_entry *e, int n,
                              uint64_t data_len)
{
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        if (e[i].begin < at)
            return load_fail(s, AG_ERR_FORMAT, "tensor '%.100s': data_offsets "
                             "[%lld,%lld] overlap tensor '%.100s' (which ends at %lld)",
                             e[i].name, (long long)e[i].begin, (long long)e[i].end,
                             e[i - 1].name, (long long)at);
        if (e[i].begin > at)
            return load_fail(s, AG_ERR_FORMAT, "gap in the data section: bytes "
                             "[%lld,%lld) before tensor '%.100s' belong to no tensor",
                             (long long)at, (long long)e[i].begin, e[i].name);
        at = e[i].end;
    }
    if ((uint64_t)at != data_len)
        return load_fail(s, AG_ERR_FORMAT, "the data section has %llu bytes but the "
                         "tensors cover %lld (trailing bytes belong to no tensor)",
                         (unsigned long long)data_len, (long long)at);
    return AG_OK;
}

static int name_cmp(const void *pa, const void *pb)
{
    return strcmp(((const st_name_ix *)pa)->name, ((const st_name_ix *)pb)->name);
}

static char *pool_put(char **at, const char *str)
{
    size_t n = strlen(str) + 1;
    char *p = *at;
    memcpy(p, str, n);
    *at += n;
    return p;
}

/* Allocates f with its arrays and strings; tensors still NULL. */
static ag_status build_result(const st_src *s, const st_entry *e, int n,
                              json_t *meta, ag_safetensors **out)
{
    int n_meta = meta ? (int)json_object_size(meta) : 0;
    size_t pool_bytes = 1;
    for (int i = 0; i < n; i++)
        pool_bytes += strlen(e[i].name) + 1;
    const char *key;
    json_t *v;
    if (meta)
        json_object_foreach(meta, key, v)
            pool_bytes += strlen(key) + strlen(json_string_value(v)) + 2;

    ag_safetensors *f = ag_mem_calloc(sizeof *f);
    if (f) {
        f->tensors = ag_mem_calloc(sizeof *f->tensors * (size_t)(n + 1));
        f->names = ag_mem_calloc(sizeof *f->names * (size_t)(n + 1));
        f->by_name = ag_mem_calloc(sizeof *f->by_name * (size_t)(n + 1));
        f->meta_keys = ag_mem_calloc(sizeof *f->meta_keys * (size_t)(n_meta + 1));
        f->meta_values = ag_mem_calloc(sizeof *f->meta_values * (size_t)(n_meta + 1));
        f->pool = ag_mem_alloc(pool_bytes);
    }
    if (!f || !f->tensors || !f->names || !f->by_name || !f->meta_keys ||
        !f->meta_values || !f->pool) {
        ag_safetensors_free(f);
        return load_fail(s, AG_ERR_NOMEM, "out of memory for the index of %d "
                         "tensors", n);
    }
    char *at = f->pool;
    for (int i = 0; i < n; i++) {
        f->names[i] = pool_put(&at, e[i].name);
        f->by_name[i] = (st_name_ix){f->names[i], i};
    }
    if (n > 1)
        qsort(f->by_name, (size_t)n, sizeof *f->by_name, name_cmp);
    int m = 0;
    if (meta)
        json_object_foreach(meta, key, v) {
            f->meta_keys[m] = pool_put(&at, key);
            f->meta_values[m++] = pool_put(&at, json_string_value(v));
        }
    f->n = n;
    f->n_meta = n_meta;
    *out = f;
    return AG_OK;
}

/* Reads the data section (positioned at its start) into new tensors. */
static ag_status read_data(st_src *s, const st_entry *e, ag_safetensors *f)
{
    for (int i = 0; i < f->n; i++) {
        ag_tensor *t = ag_tensor_new(e[i].dtype, e[i].ndim, e[i].shape);
        if (!t)
            return load_fail(s, AG_ERR_NOMEM, "tensor '%.100s': out of memory for "
                             "%lld elements", e[i].name, (long long)e[i].numel);
        f->tensors[i] = t;
        size_t bytes = (size_t)(e[i].end - e[i].begin);
        unsigned char *p = t->data;
        for (size_t done = 0; done < bytes;) {
            size_t k = bytes - done < CHUNK ? bytes - done : CHUNK;
            if (!src_read(s, p + done, k))
                return load_fail(s, AG_ERR_IO, "tensor '%.100s': read failed at byte "
                                 "%llu of the file (did it change while loading?)",
                                 e[i].name, (unsigned long long)s->pos);
            done += k;
        }
        if (!host_is_le())
            swap_elems(p, bytes, ag_dtype_size(e[i].dtype));
    }
    return AG_OK;
}

/* Validates the parsed header; fills e (sorted by offset) and *meta. */
static ag_status check_header(const st_src *s, json_t *root, uint64_t data_len,
                              st_entry *e, int *n, json_t **meta)
{
    if (!json_is_object(root))
        return load_fail(s, AG_ERR_FORMAT, "header is not a JSON object");
    const char *key;
    json_t *v;
    int k = 0;
    *meta = NULL;
    json_object_foreach(root, key, v) {
        ag_status st;
        if (!strcmp(key, META_KEY)) {
            st = check_metadata(s, v);
            *meta = v;
        } else {
            st = parse_entry(s, key, v, data_len, &e[k]);
            e[k].order = k;
            k++;
        }
        if (st != AG_OK)
            return st;
    }
    *n = k;
    if (k > 1)
        qsort(e, (size_t)k, sizeof *e, entry_cmp);
    return check_tiling(s, e, k, data_len);
}

/* Header length and JSON; on AG_OK *root is the parsed header. */
static ag_status read_header(st_src *s, json_t **root, uint64_t *data_len)
{
    unsigned char len8[8];
    if (s->size == 0)
        return load_fail(s, AG_ERR_FORMAT, "empty file (no 8-byte header length)");
    if (s->size < 8 || !src_read(s, len8, 8))
        return load_fail(s, AG_ERR_FORMAT, "file is %llu bytes, too short for the "
                         "8-byte header length", (unsigned long long)s->size);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | len8[i];
    if (h > AG_SAFETENSORS_MAX_HEADER)
        return load_fail(s, AG_ERR_FORMAT, "header length %llu is too large "
                         "(the limit is %u bytes)", (unsigned long long)h,
                         AG_SAFETENSORS_MAX_HEADER);
    if (h > s->size - 8)
        return load_fail(s, AG_ERR_FORMAT, "header length %llu runs past the end "
                         "of the file (%llu bytes)", (unsigned long long)h,
                         (unsigned long long)s->size);
    char *buf = ag_mem_alloc((size_t)h + 1);
    if (!buf)
        return load_fail(s, AG_ERR_NOMEM, "out of memory for a %llu-byte header",
                         (unsigned long long)h);
    if (!src_read(s, buf, (size_t)h)) {
        ag_mem_free(buf);
        return load_fail(s, AG_ERR_IO, "cannot read the %llu-byte header",
                         (unsigned long long)h);
    }
    json_error_t jerr;
    *root = json_loadb(buf, (size_t)h, JSON_REJECT_DUPLICATES, &jerr);
    ag_mem_free(buf);
    if (!*root)
        return load_fail(s, AG_ERR_FORMAT, "header is not valid JSON: %s (line %d, "
                         "column %d)", jerr.text, jerr.line, jerr.column);
    *data_len = s->size - 8 - h;
    return AG_OK;
}

static ag_status load_src(st_src *s, ag_safetensors **out)
{
    json_t *root = NULL, *meta = NULL;
    uint64_t data_len = 0;
    st_entry *e = NULL;
    int n = 0;
    ag_safetensors *f = NULL;
    ag_status st = read_header(s, &root, &data_len);
    if (st == AG_OK && json_object_size(root) > (size_t)INT_MAX / 2)
        st = load_fail(s, AG_ERR_FORMAT, "header has too many entries");
    if (st == AG_OK) {
        e = ag_mem_calloc(sizeof *e * (json_object_size(root) + 1));
        if (!e)
            st = load_fail(s, AG_ERR_NOMEM, "out of memory for %zu header entries",
                           json_object_size(root));
    }
    if (st == AG_OK)
        st = check_header(s, root, data_len, e, &n, &meta);
    if (st == AG_OK)
        st = build_result(s, e, n, meta, &f);
    if (st == AG_OK)
        st = read_data(s, e, f);
    ag_mem_free(e);
    json_decref(root);
    if (st != AG_OK) {
        ag_safetensors_free(f);
        f = NULL;
    }
    *out = f;
    return st;
}

ag_status ag_safetensors_load(const char *path, ag_safetensors **out)
{
    if (out)
        *out = NULL;
    if (!path || !out) {
        ag_set_last_error("ag_safetensors_load: %s is NULL", path ? "out" : "path");
        return AG_ERR_ARG;
    }
    st_src s = {.label = path};
    char eb[128];
    s.f = fopen(path, "rb");
    if (!s.f)
        return load_fail(&s, AG_ERR_IO, "cannot open: %s", err_text(errno, eb, sizeof eb));
    struct stat sb;
    ag_status st = AG_OK;
    if (fstat(fileno(s.f), &sb) != 0)
        st = load_fail(&s, AG_ERR_IO, "cannot stat: %s", err_text(errno, eb, sizeof eb));
    else if (!S_ISREG(sb.st_mode))
        st = load_fail(&s, AG_ERR_IO, "not a regular file");
    if (st == AG_OK) {
        s.size = (uint64_t)sb.st_size;
        st = load_src(&s, out);
    }
    fclose(s.f);
    return st;
}

ag_status ag_safetensors_load_mem(const void *data, size_t size, const char *label,
                                  ag_safetensors **out)
{
    if (out)
        *out = NULL;
    if ((!data && size) || !out) {
        ag_set_last_error("ag_safetensors_load_mem: %s is NULL", out ? "data" : "out");
        return AG_ERR_ARG;
    }
    st_src s = {.mem = data, .size = size, .label = label ? label : "<memory>"};
    return load_src(&s, out);
}

void ag_safetensors_free(ag_safetensors *f)
{
    if (!f)
        return;
    for (int i = 0; f->tensors && i < f->n; i++)
        ag_tensor_free(f->tensors[i]);
    ag_mem_free(f->tensors);
    ag_mem_free(f->names);
    ag_mem_free(f->by_name);
    ag_mem_free(f->meta_keys);
    ag_mem_free(f->meta_values);
    ag_mem_free(f->pool);
    ag_mem_free(f);
}

int ag_safetensors_count(const ag_safetensors *f)
{
    return f ? f->n : 0;
}

const char *ag_safetensors_name(const ag_safetensors *f, int i)
{
    return f && i >= 0 && i < f->n ? f->names[i] : NULL;
}

ag_tensor *ag_safetensors_get(const ag_safetensors *f, const char *name)
{
    if (!f || !name || f->n == 0)
        return NULL;
    st_name_ix key = {name, 0};
    const st_name_ix *hit = bsearch(&key, f->by_name, (size_t)f->n,
                                    sizeof *f->by_name, name_cmp);
    return hit ? f->tensors[hit->ix] : NULL;
}

const char *ag_safetensors_meta(const ag_safetensors *f, const char *key)
{
    for (int i = 0; f && key && i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key))
            return f->meta_values[i];
    return NULL;
}

int ag_safetensors_meta_count(const ag_safetensors *f)
{
    return f ? f->n_meta : 0;
}

const char *ag_safetensors_meta_key(const ag_safetensors *f, int i)
{
    return f && i >= 0 && i < f->n_meta ? f->meta_keys[i] : NULL;
}

/* ======================================================================
 * Saving
 * ====================================================================== */

static ag_status save_fail(const char *path, ag_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static ag_status save_fail(const char *path, ag_status st, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    ag_set_last_error("ag_safetensors_save: '%.160s': %s", path, why);
    return st;
}

static ag_status add_metadata(const char *path, json_t *root, int n_meta,
                              const char *const *keys, const char *const *values)
{
    if (n_meta == 0)
        return AG_OK;
    json_t *m = json_object();
    if (!m || json_object_set_new(root, META_KEY, m) != 0)
        return save_fail(path, AG_ERR_NOMEM, "out of memory for the header");
    for (int i = 0; i < n_meta; i++) {
        if (!keys[i] || !values[i])
            return save_fail(path, AG_ERR_ARG, "metadata %s #%d is NULL",
                             keys[i] ? "value" : "key", i);
        if (json_object_get(m, keys[i]))
            return save_fail(path, AG_ERR_ARG, "duplicate metadata key '%.100s'",
                             keys[i]);
        json_t *v = json_string(values[i]);
        if (!v || json_object_set_new(m, keys[i], v) != 0)
            return save_fail(path, AG_ERR_ARG, "metadata entry '%.100s' is not "
                             "valid UTF-8", keys[i]);
    }
    return AG_OK;
}

static ag_status add_tensor(const char *path, json_t *root, const char *name,
                            const ag_tensor *t, int i, int64_t *off)
{
    if (!name)
        return save_fail(path, AG_ERR_ARG, "name #%d is NULL", i);
    if (!strcmp(name, META_KEY))
        return save_fail(path, AG_ERR_ARG, "tensor #%d may not be named "
                         META_KEY, i);
    if (json_object_get(root, name))
        return save_fail(path, AG_ERR_ARG, "duplicate tensor name '%.100s'", name);
    if (!t || !t->data || (t->dtype != AG_F32 && t->dtype != AG_F64))
        return save_fail(path, AG_ERR_ARG, "tensor '%.100s' is %s", name,
                         t ? "of an unsupported dtype or has no data" : "NULL");
    int64_t bytes = t->numel * (int64_t)ag_dtype_size(t->dtype);
    json_t *shape = json_array(), *entry = json_object();
    int bad = !shape || !entry;
    for (int d = 0; !bad && d < t->ndim; d++)
        bad = json_array_append_new(shape, json_integer(t->shape[d]));
    if (!bad) {
        bad |= json_object_set_new(entry, "dtype",
                                   json_string(t->dtype == AG_F32 ? "F32" : "F64"));
        bad |= json_object_set_new(entry, "shape", shape);
        shape = NULL;
        bad |= json_object_set_new(entry, "data_offsets",
                                   json_pack("[I,I]", (json_int_t)*off,
                                             (json_int_t)(*off + bytes)));
    }
    json_decref(shape);
    if (bad) {
        json_decref(entry);
        return save_fail(path, AG_ERR_NOMEM, "out of memory for the header");
    }
    if (json_object_set_new(root, name, entry) != 0)
        return save_fail(path, AG_ERR_ARG, "tensor name '%.100s' is not valid UTF-8",
                         name);
    *off += bytes;
    return AG_OK;
}

/* The 8-byte length and the padded JSON header, ready to write. */
static ag_status build_header(const char *path, int n, const char *const *names,
                              const ag_tensor *const *tensors, int n_meta,
                              const char *const *keys, const char *const *values,
                              unsigned char **out, size_t *out_len)
{
    json_t *root = json_object();
    if (!root)
        return save_fail(path, AG_ERR_NOMEM, "out of memory for the header");
    ag_status st = add_metadata(path, root, n_meta, keys, values);
    int64_t off = 0;
    for (int i = 0; st == AG_OK && i < n; i++)
        st = add_tensor(path, root, names[i], tensors[i], i, &off);
    size_t len = st == AG_OK ? json_dumpb(root, NULL, 0, JSON_COMPACT) : 0;
    if (st == AG_OK && len == 0)
        st = save_fail(path, AG_ERR_NOMEM, "cannot encode the header");
    size_t padded = (len + 7) / 8 * 8;
    unsigned char *buf = st == AG_OK ? ag_mem_alloc(8 + padded) : NULL;
    if (st == AG_OK && !buf)
        st = save_fail(path, AG_ERR_NOMEM, "out of memory for the header");
    if (st == AG_OK) {
        for (int i = 0; i < 8; i++)
            buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
        json_dumpb(root, (char *)buf + 8, len, JSON_COMPACT);
        memset(buf + 8 + len, ' ', padded - len);
        *out = buf;
        *out_len = 8 + padded;
    }
    json_decref(root);
    return st;
}

typedef struct st_writer {
    FILE *f;
    uint64_t written;
    int err;          /* errno of the failure */
    bool simulated;   /* the test hook made it fail */
} st_writer;

static bool w_write(st_writer *w, const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t k = n < CHUNK ? n : CHUNK;
        int64_t lim = ag_safetensors_fail_after_bytes;
        if (lim >= 0 && w->written + k > (uint64_t)lim) {
            size_t part = (uint64_t)lim > w->written ? (size_t)((uint64_t)lim - w->written) : 0;
            w->written += fwrite(p, 1, part, w->f);
            w->err = ENOSPC;
            w->simulated = true;
            return false;
        }
        if (fwrite(p, 1, k, w->f) != k) {
            w->err = errno ? errno : EIO;
            return false;
        }
        w->written += k;
        p += k;
        n -= k;
        if (ag_safetensors_write_hook)
            ag_safetensors_write_hook(w->written);
    }
    return true;
}

static bool w_tensor(st_writer *w, const ag_tensor *t)
{
    size_t size = ag_dtype_size(t->dtype), bytes = (size_t)t->numel * size;
    const unsigned char *p = t->data;
    if (host_is_le())
        return w_write(w, p, bytes);
    unsigned char buf[16384];
    for (size_t done = 0; done < bytes; done += sizeof buf) {
        size_t k = bytes - done < sizeof buf ? bytes - done : sizeof buf;
        memcpy(buf, p + done, k);
        swap_elems(buf, k, size);
        if (!w_write(w, buf, k))
            return false;
    }
    return true;
}

/* fsyncs the folder holding tmp (a path next to the target), so the rename
 * itself is durable.  Cuts tmp down to the folder's name: no allocation. */
static int sync_folder(char *tmp)
{
    char *slash = strrchr(tmp, '/');
    const char *dir = slash == tmp ? "/" : slash ? tmp : ".";
    if (slash && slash != tmp)
        *slash = '\0';
    int err = 0, fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        err = errno;
    else if (fsync(fd) != 0 && errno != EINVAL) /* EINVAL: the fs cannot */
        err = errno;
    if (fd >= 0)
        close(fd);
    return err;
}

/* Creates a new temporary file next to path; *tmp is allocated. */
static int open_temp(const char *path, char **tmp)
{
    static _Thread_local unsigned counter;
    size_t n = strlen(path) + 64;
    *tmp = ag_mem_alloc(n);
    if (!*tmp)
        return -ENOMEM;
    for (int tries = 0; tries < 1000; tries++) {
        snprintf(*tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), counter++);
        /* 0666 less the umask: the same mode a plain fopen would give */
        int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd >= 0 ? fd : -errno;
    }
    return -EEXIST;
}

static ag_status write_atomic(const char *path, const unsigned char *head,
                              size_t head_len, int n, const ag_tensor *const *tensors)
{
    char eb[128], *tmp = NULL;
    int fd = open_temp(path, &tmp);
    if (fd < 0) {
        ag_mem_free(tmp);
        return save_fail(path, -fd == ENOMEM ? AG_ERR_NOMEM : AG_ERR_IO,
                         "cannot create a temporary file next to it: %s",
                         err_text(-fd, eb, sizeof eb));
    }
    st_writer w = {.f = fdopen(fd, "wb")};
    bool ok = w.f != NULL;
    if (!ok) {
        w.err = errno;
        close(fd);
    }
    ok = ok && w_write(&w, head, head_len);
    for (int i = 0; ok && i < n; i++)
        ok = w_tensor(&w, tensors[i]);
    if (ok && (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0)) {
        w.err = errno;
        ok = false;
    }
    if (w.f && fclose(w.f) != 0 && ok) {
        w.err = errno;
        ok = false;
    }
    if (ok && rename(tmp, path) != 0) {
        w.err = errno;
        ok = false;
    }
    ag_status st = AG_OK;
    if (!ok) {
        unlink(tmp);
        st = save_fail(path, AG_ERR_IO, "write failed after %llu bytes: %s%s; the "
                       "old file, if any, is untouched",
                       (unsigned long long)w.written, err_text(w.err, eb, sizeof eb),
                       w.simulated ? " (simulated)" : "");
    } else if ((w.err = sync_folder(tmp)) != 0) {
        st = save_fail(path, AG_ERR_IO, "written, but its folder could not be "
                       "synced: %s", err_text(w.err, eb, sizeof eb));
    }
    ag_mem_free(tmp);
    return st;
}

ag_status ag_safetensors_save(const char *path, int n, const char *const *names,
                              const ag_tensor *const *tensors, int n_meta,
                              const char *const *meta_keys,
                              const char *const *meta_values)
{
    if (!path || n < 0 || n_meta < 0 || (n > 0 && (!names || !tensors)) ||
        (n_meta > 0 && (!meta_keys || !meta_values))) {
        ag_set_last_error("ag_safetensors_save: bad arguments (path %s, n %d, "
                          "n_meta %d, NULL arrays?)", path ? "set" : "NULL", n, n_meta);
        return AG_ERR_ARG;
    }
    unsigned char *head = NULL;
    size_t head_len = 0;
    ag_status st = build_header(path, n, names, tensors, n_meta, meta_keys,
                                meta_values, &head, &head_len);
    if (st == AG_OK)
        st = write_atomic(path, head, head_len, n, tensors);
    ag_mem_free(head);
    return st;
}
