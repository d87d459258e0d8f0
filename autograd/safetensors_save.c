/* safetensors_save.c — the checkpoint saver, which never leaves a
 * half-written file in place (format: see safetensors_load.c).
 *
 * The file is written under a temporary name in the target's folder,
 * flushed, fsynced and renamed over the target, then the folder is fsynced.
 * Any failure before the rename removes the temporary file.  We pad the
 * JSON header with spaces to a multiple of 8 so the data section starts
 * aligned. */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#include "autograd_internal.h"
#include "safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <unistd.h>

int64_t ag_safetensors_fail_after_bytes = -1;
void (*ag_safetensors_write_hook)(uint64_t written) = NULL;

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
    if (!m || json_object_set_new(root, AG_ST_META_KEY, m) != 0)
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
    if (!strcmp(name, AG_ST_META_KEY))
        return save_fail(path, AG_ERR_ARG, "tensor #%d may not be named "
                         AG_ST_META_KEY, i);
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
        size_t k = n < AG_ST_CHUNK ? n : AG_ST_CHUNK;
        int64_t lim = ag_safetensors_fail_after_bytes;
        if (lim >= 0 && w->written + k > (uint64_t)lim) {
            uint64_t left = (uint64_t)lim > w->written ? (uint64_t)lim - w->written : 0;
            size_t part = (size_t)left;
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
    if (ag_st_host_is_le())
        return w_write(w, p, bytes);
    unsigned char buf[16384];
    for (size_t done = 0; done < bytes; done += sizeof buf) {
        size_t k = bytes - done < sizeof buf ? bytes - done : sizeof buf;
        memcpy(buf, p + done, k);
        ag_st_swap_elems(buf, k, size);
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
                         ag_st_err_text(-fd, eb, sizeof eb));
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
                       (unsigned long long)w.written,
                       ag_st_err_text(w.err, eb, sizeof eb),
                       w.simulated ? " (simulated)" : "");
    } else if ((w.err = sync_folder(tmp)) != 0) {
        st = save_fail(path, AG_ERR_IO, "written, but its folder could not be "
                       "synced: %s", ag_st_err_text(w.err, eb, sizeof eb));
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
