/* safetensors_save.c — the checkpoint saver, which never leaves a
 * half-written file in place (format: see safetensors_load.c).
 *
 * The file is written under a temporary name in the target's folder,
 * PATH.tmp.PID.N, flushed, fsynced and renamed over the target, then the
 * folder is fsynced.  Any failure before the rename removes the temporary
 * file.  A process killed mid-save cannot, so each save first removes the
 * temporaries earlier saves of the same target left: those no writer holds.
 * A file is stale when its PID is gone (kill(pid, 0) fails with ESRCH), or
 * is this process but none of the saves it has in progress (a registry,
 * under one mutex with the sweep) owns the file, which an earlier process
 * of the same PID left; and, either way, no one holds the flock() a writer
 * takes on creation (the kernel drops it when the writer dies; it guards a
 * writer in another PID namespace, whom kill() cannot see).  A live other
 * process's file is never touched, even when its PID was reused.
 *
 * Alignment: the JSON header is padded with spaces to a multiple of 8, and
 * the data section holds the F64 tensors first, then the F32 ones (each
 * group in argument order; the header lists them in argument order), so
 * every tensor's data starts at a multiple of its dtype size in the data
 * section and in the file, as the reference implementation lays them out. */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#include "autograd_internal.h"
#include "safetensors_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
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
                             keys[i] ? "value" : "key", i + 1);
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

static bool tensor_ok(const ag_tensor *t)
{
    return t && t->data && (t->dtype == AG_F32 || t->dtype == AG_F64);
}

/* off[0]: next offset of an F64 tensor, off[1]: of an F32 one. */
static ag_status add_tensor(const char *path, json_t *root, const char *name,
                            const ag_tensor *t, int i, int64_t off[2])
{
    if (!name)
        return save_fail(path, AG_ERR_ARG, "name #%d is NULL", i + 1);
    if (!strcmp(name, AG_ST_META_KEY))
        return save_fail(path, AG_ERR_ARG, "tensor #%d may not be named "
                         AG_ST_META_KEY, i + 1);
    if (json_object_get(root, name))
        return save_fail(path, AG_ERR_ARG, "duplicate tensor name '%.100s'", name);
    if (!tensor_ok(t))
        return save_fail(path, AG_ERR_ARG, "tensor '%.100s' is %s", name,
                         t ? "of an unsupported dtype or has no data" : "NULL");
    int64_t bytes = t->numel * (int64_t)ag_dtype_size(t->dtype);
    int64_t *at = &off[t->dtype == AG_F64 ? 0 : 1];
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
                                   json_pack("[I,I]", (json_int_t)*at,
                                             (json_int_t)(*at + bytes)));
    }
    json_decref(shape);
    if (bad) {
        json_decref(entry);
        return save_fail(path, AG_ERR_NOMEM, "out of memory for the header");
    }
    if (json_object_set_new(root, name, entry) != 0)
        return save_fail(path, AG_ERR_ARG, "tensor name '%.100s' is not valid UTF-8",
                         name);
    *at += bytes;
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
    int64_t off[2] = {0, 0}; /* F64 data first; F32 after all of it */
    for (int i = 0; i < n; i++)
        if (tensor_ok(tensors[i]) && tensors[i]->dtype == AG_F64)
            off[1] += tensors[i]->numel * (int64_t)sizeof(double);
    for (int i = 0; st == AG_OK && i < n; i++)
        st = add_tensor(path, root, names[i], tensors[i], i, off);
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

/* ---- temporaries ---- */

/* A temporary of a save of this process that is in progress. */
typedef struct st_live {
    const char *name;         /* its name in the folder (into the save's tmp) */
    struct st_live *next;
} st_live;

/* Guards g_live; held while a save sweeps the folder, and while one creates
 * and registers its temporary, so a sweep never takes a live one of ours
 * for stale. */
static pthread_mutex_t g_temp_lock = PTHREAD_MUTEX_INITIALIZER;
static st_live *g_live;

/* "PID.N", both decimal and nothing after: true, with *pid > 0. */
static bool parse_pid_n(const char *p, pid_t *pid)
{
    long v = 0;
    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (INT_MAX - 9) / 10)
            return false;
        v = v * 10 + (*p - '0');
    }
    if (*p++ != '.' || *p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    *pid = (pid_t)v;
    return *p == '\0' && v > 0;
}

/* True when the temporary `name` (in the sweep's folder) can be no save's
 * that is still running.  Callers hold g_temp_lock. */
static bool temp_is_stale(const char *name, pid_t pid)
{
    if (pid == getpid()) {
        for (const st_live *l = g_live; l; l = l->next)
            if (!strcmp(l->name, name))
                return false;
        return true; /* none of ours: left by an earlier process of this PID */
    }
    return kill(pid, 0) != 0 && errno == ESRCH;
}

/* Removes the temporaries earlier saves of path left (PATH.tmp.PID.N, see
 * the top) that no writer holds.  Best effort: a folder or file that
 * cannot be read or removed is left as it is.  buf has strlen(path) + 64
 * bytes; callers hold g_temp_lock. */
static void remove_stale(const char *path, char *buf)
{
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    if (!slash)
        snprintf(buf, 2, ".");
    else
        snprintf(buf, (size_t)(slash - path) + 2, "%s", slash == path ? "/" : path);
    int dfd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!dir) {
        if (dfd >= 0)
            close(dfd);
        return;
    }
    size_t blen = strlen(base);
    for (struct dirent *de; (de = readdir(dir));) {
        const char *name = de->d_name;
        pid_t pid;
        if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0 ||
            !parse_pid_n(name + blen + 5, &pid) || !temp_is_stale(name, pid))
            continue;
        /* a regular file, not a link, that no writer holds locked (a writer
         * in another PID namespace may look dead to kill()), and still the
         * file that sits under that name */
        int fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        struct stat a, b;
        if (fd >= 0 && fstat(fd, &a) == 0 && S_ISREG(a.st_mode) &&
            flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            fstatat(dfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
            a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            unlinkat(dfd, name, 0);
        if (fd >= 0)
            close(fd);
    }
    closedir(dir);
}

/* Removes stale temporaries of path, then creates a new one next to it
 * (*tmp is allocated), locked and registered in *live. */
static int open_temp(const char *path, char **tmp, st_live *live)
{
    static _Thread_local unsigned counter;
    size_t n = strlen(path) + 64;
    *tmp = ag_mem_alloc(n);
    if (!*tmp)
        return -ENOMEM;
    const char *slash = strrchr(path, '/');
    pthread_mutex_lock(&g_temp_lock);
    remove_stale(path, *tmp);
    int fd = -EEXIST;
    for (int tries = 0; tries < 1000 && fd == -EEXIST; tries++) {
        snprintf(*tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), counter++);
        /* 0666 less the umask: the same mode a plain fopen would give */
        fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0)
            fd = -errno;
    }
    if (fd >= 0) {
        (void)flock(fd, LOCK_EX | LOCK_NB); /* where flock works; see the top */
        live->name = *tmp + (slash ? slash - path + 1 : 0);
        live->next = g_live;
        g_live = live;
    }
    pthread_mutex_unlock(&g_temp_lock);
    return fd;
}

/* Once the temporary is renamed or removed. */
static void live_remove(st_live *live)
{
    pthread_mutex_lock(&g_temp_lock);
    for (st_live **p = &g_live; *p; p = &(*p)->next)
        if (*p == live) {
            *p = live->next;
            break;
        }
    pthread_mutex_unlock(&g_temp_lock);
}

static ag_status write_atomic(const char *path, const unsigned char *head,
                              size_t head_len, int n, const ag_tensor *const *tensors)
{
    char eb[128], *tmp = NULL;
    st_live live = {0};
    int fd = open_temp(path, &tmp, &live);
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
    for (int pass = 0; pass < 2; pass++) /* the F64 tensors, then the F32 ones */
        for (int i = 0; ok && i < n; i++)
            if ((tensors[i]->dtype == AG_F64) == (pass == 0))
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
    if (!ok)
        unlink(tmp);
    live_remove(&live);
    ag_status st = AG_OK;
    if (!ok) {
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
