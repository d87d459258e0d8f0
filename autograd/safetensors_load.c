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
 * only then is data read, front to back.
 *
 * Memory: the top-level object is walked here, one member at a time; jansson
 * decodes each key and each value alone, and a tensor's value is checked
 * into a compact st_entry and freed at once.  So a header of a million
 * tensors costs its text, one st_entry, index slot and tensor each, never a
 * whole JSON tree (about 1 KB a tensor in jansson).  Only regular files
 * are opened: a FIFO or a device would block or never end. */
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
    const char *name;         /* into the pool, once the header is walked */
    size_t name_at;           /* offset of the name in the pool */
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

/* ---- walking the header ---- */

/* What the walk over the header collects: the tensor entries, and their
 * names (later the metadata strings too) in one growing pool. */
typedef struct st_walk {
    const st_src *s;
    const char *text;         /* the header, h bytes */
    size_t h, pos;
    uint64_t data_len;
    st_entry *e;              /* (cap) in header order */
    int n, cap;
    char *pool;               /* (pool_cap) NUL-terminated strings */
    size_t pool_len, pool_cap;
    json_t *meta;             /* the __metadata__ object, or NULL */
} st_walk;

/* Appends str (n bytes, no NUL in it) and a NUL to the pool, which
 * doubles when full; its offset goes to *at. */
static bool pool_add(st_walk *w, const char *str, size_t n, size_t *at)
{
    if (n + 1 > w->pool_cap - w->pool_len) {
        size_t cap = w->pool_cap ? w->pool_cap : 4096;
        while (n + 1 > cap - w->pool_len) {
            if (cap > SIZE_MAX / 4)
                return false;
            cap *= 2;
        }
        char *p = ag_mem_alloc(cap);
        if (!p)
            return false;
        if (w->pool_len)
            memcpy(p, w->pool, w->pool_len);
        ag_mem_free(w->pool);
        w->pool = p;
        w->pool_cap = cap;
    }
    memcpy(w->pool + w->pool_len, str, n);
    w->pool[w->pool_len + n] = '\0';
    *at = w->pool_len;
    w->pool_len += n + 1;
    return true;
}

/* The next free entry (the array doubles when full), or NULL. */
static st_entry *entry_next(st_walk *w)
{
    if (w->n == w->cap) {
        if (w->cap > INT_MAX / 4)
            return NULL;
        int cap = w->cap ? 2 * w->cap : 64;
        st_entry *e = ag_mem_alloc(sizeof *e * (size_t)cap);
        if (!e)
            return NULL;
        if (w->n)
            memcpy(e, w->e, sizeof *e * (size_t)w->n);
        ag_mem_free(w->e);
        w->e = e;
        w->cap = cap;
    }
    st_entry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->order = w->n;
    return e;
}

static void skip_ws(st_walk *w)
{
    while (w->pos < w->h && (w->text[w->pos] == ' ' || w->text[w->pos] == '\t' ||
                             w->text[w->pos] == '\n' || w->text[w->pos] == '\r'))
        w->pos++;
}

static bool at_char(const st_walk *w, char c)
{
    return w->pos < w->h && w->text[w->pos] == c;
}

static ag_status syntax_fail(const st_walk *w, const char *what)
{
    return load_fail(w->s, AG_ERR_FORMAT, "header is not valid JSON: %s at byte %zu",
                     what, w->pos);
}

/* Decodes the one JSON value (a key or a member's value) at pos, duplicate
 * keys inside it refused, and moves past it. */
static ag_status walk_value(st_walk *w, json_t **v)
{
    json_error_t jerr;
    *v = json_loadb(w->text + w->pos, w->h - w->pos, JSON_DECODE_ANY |
                    JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &jerr);
    if (!*v && json_error_code(&jerr) == json_error_out_of_memory)
        return load_fail(w->s, AG_ERR_NOMEM, "out of memory for the header");
    if (!*v)
        return load_fail(w->s, AG_ERR_FORMAT, "header is not valid JSON: %s (at byte %zu)",
                         jerr.text, w->pos + (size_t)(jerr.position > 0 ? jerr.position : 0));
    w->pos += (size_t)jerr.position;
    return AG_OK;
}

/* Checks one member, key: v, and keeps what it says; takes v. */
static ag_status walk_take(st_walk *w, json_t *key, json_t *v)
{
    const char *name = json_string_value(key);
    if (!strcmp(name, AG_ST_META_KEY)) {
        if (w->meta) {
            json_decref(v);
            return load_fail(w->s, AG_ERR_FORMAT, "header is not valid JSON: duplicate "
                             "object key '" AG_ST_META_KEY "'");
        }
        w->meta = v;
        return check_metadata(w->s, v);
    }
    st_entry *e = entry_next(w);
    ag_status st = e ? parse_entry(w->s, name, v, w->data_len, e)
                     : load_fail(w->s, AG_ERR_NOMEM, "out of memory for the index of %d "
                                 "tensors", w->n + 1);
    json_decref(v);
    if (st == AG_OK && !pool_add(w, name, json_string_length(key), &e->name_at))
        st = load_fail(w->s, AG_ERR_NOMEM, "out of memory for the names of %d tensors",
                       w->n + 1);
    if (st == AG_OK)
        w->n++;
    return st;
}

/* "key": value at pos. */
static ag_status walk_member(st_walk *w)
{
    if (!at_char(w, '"'))
        return syntax_fail(w, "a string key expected");
    json_t *key = NULL, *v = NULL;
    ag_status st = walk_value(w, &key);
    if (st != AG_OK)
        return st;
    skip_ws(w);
    if (!at_char(w, ':'))
        st = syntax_fail(w, "':' expected");
    if (st == AG_OK) {
        w->pos++;
        st = walk_value(w, &v);
    }
    if (st == AG_OK)
        st = walk_take(w, key, v);
    json_decref(key);
    return st;
}

/* The top-level object: '{' members '}' and nothing but blanks after.
 * A NUL byte is valid nowhere in JSON text, and jansson drops one that
 * follows a number or a literal (its one-byte look-ahead cannot give it
 * back), which would shift the walk: refused first. */
static ag_status walk_header(st_walk *w)
{
    const char *nul = w->h ? memchr(w->text, '\0', w->h) : NULL;
    if (nul) {
        w->pos = (size_t)(nul - w->text);
        return syntax_fail(w, "a NUL byte");
    }
    skip_ws(w);
    if (w->pos == w->h)
        return syntax_fail(w, "no value: the header is blank");
    if (at_char(w, '['))
        return load_fail(w->s, AG_ERR_FORMAT, "header is not a JSON object (it starts "
                         "with '[')");
    if (!at_char(w, '{'))
        return syntax_fail(w, "'{' expected");
    w->pos++;
    skip_ws(w);
    if (at_char(w, '}')) {
        w->pos++;
    } else {
        for (;;) {
            ag_status st = walk_member(w);
            if (st != AG_OK)
                return st;
            skip_ws(w);
            if (at_char(w, '}')) {
                w->pos++;
                break;
            }
            if (!at_char(w, ','))
                return syntax_fail(w, "',' or '}' expected");
            w->pos++;
            skip_ws(w);
        }
    }
    skip_ws(w);
    if (w->pos != w->h)
        return syntax_fail(w, "the end of the header expected");
    return AG_OK;
}

/* Builds f from the walked header: entries sorted by offset and proven to
 * tile the data section, names unique, the index and metadata filled in,
 * the pool taken over; tensors still NULL. */
static ag_status build_result(st_walk *w, ag_safetensors **out)
{
    const st_src *s = w->s;
    int n = w->n, n_meta = w->meta ? (int)json_object_size(w->meta) : 0;
    size_t meta_at = 0, unused;
    const char *key;
    json_t *v;
    bool ok = pool_add(w, "", 0, &meta_at); /* also makes the pool non-NULL */
    if (w->meta)
        json_object_foreach(w->meta, key, v) {
            const char *val = json_string_value(v);
            ok = ok && pool_add(w, key, strlen(key), &unused) &&
                 pool_add(w, val, json_string_length(v), &unused);
        }
    ag_safetensors *f = ok ? ag_mem_calloc(sizeof *f) : NULL;
    if (f) {
        f->pool = w->pool;
        w->pool = NULL;
        f->tensors = ag_mem_calloc(sizeof *f->tensors * (size_t)(n + 1));
        f->names = ag_mem_alloc(sizeof *f->names * (size_t)(n + 1));
        f->by_name = ag_mem_alloc(sizeof *f->by_name * (size_t)(n + 1));
        f->meta_keys = ag_mem_alloc(sizeof *f->meta_keys * (size_t)(n_meta + 1));
        f->meta_values = ag_mem_alloc(sizeof *f->meta_values * (size_t)(n_meta + 1));
    }
    if (!f || !f->tensors || !f->names || !f->by_name || !f->meta_keys ||
        !f->meta_values) {
        ag_safetensors_free(f);
        return load_fail(s, AG_ERR_NOMEM, "out of memory for the index of %d "
                         "tensors", n);
    }
    f->n = n;
    *out = f;
    st_entry *e = w->e;
    if (n > 1)
        qsort(e, (size_t)n, sizeof *e, entry_cmp);
    for (int i = 0; i < n; i++) {
        e[i].name = f->pool + e[i].name_at;
        f->names[i] = e[i].name;
        f->by_name[i] = (st_name_ix){e[i].name, i};
    }
    if (n > 1)
        qsort(f->by_name, (size_t)n, sizeof *f->by_name, name_cmp);
    for (int i = 1; i < n; i++)
        if (!strcmp(f->by_name[i - 1].name, f->by_name[i].name))
            return load_fail(s, AG_ERR_FORMAT, "header is not valid JSON: duplicate "
                             "object key '%.100s' (two tensors of that name)",
                             f->by_name[i].name);
    ag_status st = check_tiling(s, e, n, w->data_len);
    if (st != AG_OK)
        return st;
    const char *p = f->pool + meta_at + 1; /* key, value, key, value, ... */
    for (int m = 0; m < n_meta; m++) {
        f->meta_keys[m] = p;
        p += strlen(p) + 1;
        f->meta_values[m] = p;
        p += strlen(p) + 1;
    }
    f->n_meta = n_meta;
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

/* Reads the header length and its text; on AG_OK *text (h bytes) is the
 * caller's. */
static ag_status read_header(st_src *s, char **text, size_t *len, uint64_t *data_len)
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
    *text = buf;
    *len = (size_t)h;
    *data_len = s->size - 8 - h;
    return AG_OK;
}

static ag_status load_src(st_src *s, ag_safetensors **out)
{
    char *text = NULL;
    st_walk w = {.s = s};
    ag_safetensors *f = NULL;
    ag_status st = read_header(s, &text, &w.h, &w.data_len);
    w.text = text;
    if (st == AG_OK)
        st = walk_header(&w);
    ag_mem_free(text); /* the text goes before the first tensor comes */
    if (st == AG_OK)
        st = build_result(&w, &f);
    if (st == AG_OK)
        st = read_data(s, w.e, f);
    ag_mem_free(w.e);
    ag_mem_free(w.pool);
    json_decref(w.meta);
    if (st != AG_OK) {
        ag_safetensors_free(f);
        f = NULL;
    }
    *out = f;
    return st;
}

/* What a path that is not a regular file is, for the message. */
static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a folder" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character "
           "device" : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "special";
}

/* Opens path for reading if it is a regular file.  O_NONBLOCK keeps open()
 * of a FIFO from waiting for a writer; it is cleared once fstat has shown a
 * regular file. */
static ag_status open_regular(st_src *s, const char *path)
{
    char eb[128];
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return load_fail(s, AG_ERR_IO, "cannot open: %s",
                         ag_st_err_text(errno, eb, sizeof eb));
    struct stat sb;
    int flags;
    ag_status st = AG_OK;
    if (fstat(fd, &sb) != 0)
        st = load_fail(s, AG_ERR_IO, "cannot stat: %s",
                       ag_st_err_text(errno, eb, sizeof eb));
    else if (!S_ISREG(sb.st_mode))
        st = load_fail(s, AG_ERR_IO, "not a regular file (it is %s)", file_kind(sb.st_mode));
    else if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        st = load_fail(s, AG_ERR_IO, "cannot clear O_NONBLOCK: %s",
                       ag_st_err_text(errno, eb, sizeof eb));
    else if (!(s->f = fdopen(fd, "rb")))
        st = load_fail(s, errno == ENOMEM ? AG_ERR_NOMEM : AG_ERR_IO, "cannot open: %s",
                       ag_st_err_text(errno, eb, sizeof eb));
    if (st != AG_OK) {
        close(fd);
        return st;
    }
    s->size = (uint64_t)sb.st_size;
    return AG_OK;
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
    ag_status st = open_regular(&s, path);
    if (st != AG_OK)
        return st;
    st = load_src(&s, out);
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

/* For the accessors: false, with the message, when p is NULL. */
static bool present(const void *p, const char *fn, const char *arg)
{
    if (!p)
        ag_set_last_error("%s: %s is NULL", fn, arg);
    return p != NULL;
}

int ag_safetensors_count(const ag_safetensors *f)
{
    return present(f, "ag_safetensors_count", "f") ? f->n : 0;
}

const char *ag_safetensors_name(const ag_safetensors *f, int i)
{
    if (!present(f, "ag_safetensors_name", "f"))
        return NULL;
    if (i < 0 || i >= f->n) {
        ag_set_last_error("ag_safetensors_name: i = %d is outside [0, %d)", i, f->n);
        return NULL;
    }
    return f->names[i];
}

ag_tensor *ag_safetensors_get(const ag_safetensors *f, const char *name)
{
    if (!present(f, "ag_safetensors_get", "f") || !present(name, "ag_safetensors_get", "name"))
        return NULL;
    if (f->n == 0)
        return NULL;
    st_name_ix key = {name, 0};
    const st_name_ix *hit = bsearch(&key, f->by_name, (size_t)f->n,
                                    sizeof *f->by_name, name_cmp);
    return hit ? f->tensors[hit->ix] : NULL;
}

const char *ag_safetensors_meta(const ag_safetensors *f, const char *key)
{
    if (!present(f, "ag_safetensors_meta", "f") || !present(key, "ag_safetensors_meta", "key"))
        return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key))
            return f->meta_values[i];
    return NULL;
}

int ag_safetensors_meta_count(const ag_safetensors *f)
{
    return present(f, "ag_safetensors_meta_count", "f") ? f->n_meta : 0;
}

const char *ag_safetensors_meta_key(const ag_safetensors *f, int i)
{
    if (!present(f, "ag_safetensors_meta_key", "f"))
        return NULL;
    if (i < 0 || i >= f->n_meta) {
        ag_set_last_error("ag_safetensors_meta_key: i = %d is outside [0, %d)", i, f->n_meta);
        return NULL;
    }
    return f->meta_keys[i];
}
