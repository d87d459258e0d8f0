/* safetensors_load.c — the checkpoint loader, which trusts nothing.
 *
 * Layout: H (u64, little-endian) | H bytes of JSON header | data section.
 * The header is {name: {"dtype": "F32", "shape": [2,3],
 * "data_offsets": [begin, end]}, ..., "__metadata__": {key: "value"}};
 * offsets are byte offsets into the data section, where tensors lie back to
 * back, row-major, little-endian.
 *
 * H is checked against a cap and the real file size before a byte is
 * allocated for it; the JSON (duplicate keys rejected) is checked entry by
 * entry, then the offsets are proven to tile the data section exactly, and
 * only then is data read, front to back. */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#include "autograd_internal.h"
#include "safetensors_internal.h"

#include <errno.h>
#include <jansson.h>
#include <sys/stat.h>

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
        return load_fail(s, AG_ERR_FORMAT, AG_ST_META_KEY " is not a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v) {
        if (!json_is_string(v))
            return load_fail(s, AG_ERR_FORMAT, AG_ST_META_KEY " value of key '%.100s' is "
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
            size_t k = bytes - done < AG_ST_CHUNK ? bytes - done : AG_ST_CHUNK;
            if (!src_read(s, p + done, k))
                return load_fail(s, AG_ERR_IO, "tensor '%.100s': read failed at byte "
                                 "%llu of the file (did it change while loading?)",
                                 e[i].name, (unsigned long long)s->pos);
            done += k;
        }
        if (!ag_st_host_is_le())
            ag_st_swap_elems(p, bytes, ag_dtype_size(e[i].dtype));
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
        if (!strcmp(key, AG_ST_META_KEY)) {
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
        return load_fail(&s, AG_ERR_IO, "cannot open: %s",
                         ag_st_err_text(errno, eb, sizeof eb));
    struct stat sb;
    ag_status st = AG_OK;
    if (fstat(fileno(s.f), &sb) != 0)
        st = load_fail(&s, AG_ERR_IO, "cannot stat: %s",
                       ag_st_err_text(errno, eb, sizeof eb));
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
