/* save.c — checkpoints of an nn_params in safetensors, through autograd's
 * validating loader and atomic saver.  Loading checks every name, shape and
 * dtype against the target before it copies a byte, so a failed load
 * leaves the parameters as they were. */
#include "nn_internal.h"

#include <stdarg.h>
#include <stdio.h>

ag_status nn_params_save_meta(const nn_params *p, const char *path, int n_meta,
                              const char *const *keys, const char *const *values)
{
    if (!p || !path || n_meta < 0 || (n_meta > 0 && (!keys || !values))) {
        ag_set_last_error("nn_params_save: %s", !p      ? "params is NULL"
                                                : !path ? "path is NULL"
                                                        : "bad metadata arguments");
        return AG_ERR_ARG;
    }
    int n = p->n;
    const char **names = ag_mem_alloc((size_t)(n > 0 ? n : 1) * sizeof *names);
    const ag_tensor **ts = ag_mem_alloc((size_t)(n > 0 ? n : 1) * sizeof *ts);
    if (!names || !ts) {
        ag_mem_free(names);
        ag_mem_free(ts);
        ag_set_last_error("nn_params_save: out of memory");
        return AG_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        names[i] = p->order[i]->name;
        ts[i] = p->order[i]->t;
    }
    ag_status s = ag_safetensors_save(path, n, names, ts, n_meta, keys, values);
    ag_mem_free(names);
    ag_mem_free(ts);
    return s;
}

ag_status nn_params_save(const nn_params *p, const char *path)
{
    return nn_params_save_meta(p, path, 0, NULL, NULL);
}

/* ---- loading ---- */

/* A bounded message: appends stop at the end of buf. */
typedef struct msg {
    char buf[480];
    size_t len;
} msg;

static void msg_add(msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg_add(msg *m, const char *fmt, ...)
{
    if (m->len >= sizeof m->buf - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(m->buf + m->len, sizeof m->buf - m->len, fmt, ap);
    va_end(ap);
    if (k > 0)
        m->len += (size_t)k;
    if (m->len >= sizeof m->buf - 1) {
        m->len = sizeof m->buf - 1;
        memcpy(m->buf + sizeof m->buf - 4, "...", 4);
    }
}

static const char *dt_name(ag_dtype dt) { return dt == AG_F64 ? "F64" : "F32"; }

static bool same_shape(const ag_tensor *a, const ag_tensor *b)
{
    if (ag_ndim(a) != ag_ndim(b))
        return false;
    for (int i = 0; i < ag_ndim(a); i++)
        if (ag_shape(a)[i] != ag_shape(b)[i])
            return false;
    return true;
}

/* What a load found: counts, and the lists written into three messages. */
typedef struct findings {
    int missing, unexpected, mismatched, loaded;
    msg miss, unexp, mism;
} findings;

static void survey(const nn_params *p, const ag_safetensors *f, bool convert, findings *fd)
{
    for (int i = 0; i < p->n; i++) {
        const nn_entry *e = p->order[i];
        const ag_tensor *src = ag_safetensors_get(f, e->name);
        if (!src) {
            msg_add(&fd->miss, "%s%s", fd->missing++ ? ", " : "", e->name);
            continue;
        }
        char a[96], b[96];
        if (!same_shape(src, e->t)) {
            msg_add(&fd->mism, "%s%s: shape %s in file, %s in params",
                    fd->mismatched++ ? "; " : "", e->name, ag_shape_str(src, a, sizeof a),
                    ag_shape_str(e->t, b, sizeof b));
        } else if (!convert && ag_dtype_of(src) != ag_dtype_of(e->t)) {
            msg_add(&fd->mism, "%s%s: dtype %s in file, %s in params",
                    fd->mismatched++ ? "; " : "", e->name, dt_name(ag_dtype_of(src)),
                    dt_name(ag_dtype_of(e->t)));
        } else {
            fd->loaded++;
        }
    }
    int nf = ag_safetensors_count(f);
    for (int i = 0; i < nf; i++) {
        const char *name = ag_safetensors_name(f, i);
        if (!nn_params_get(p, name))
            msg_add(&fd->unexp, "%s%s", fd->unexpected++ ? ", " : "", name);
    }
}

/* A write into a parameter: its version moves on (ag_set does so itself),
 * so a recording made before the load refuses its backward. */
static void copy_into(ag_tensor *dst, const ag_tensor *src)
{
    int64_t n = ag_numel(dst);
    if (ag_dtype_of(src) == ag_dtype_of(dst)) {
        memcpy(ag_data(dst), ag_data_const(src), (size_t)n * ag_dtype_size(ag_dtype_of(dst)));
        ag_tensor_mark_modified(dst);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        ag_set(dst, i, ag_get(src, i));
}

static ag_status load_from(nn_params *p, const ag_safetensors *f, const char *label,
                           const nn_load_opts *opts, nn_load_report *report)
{
    bool strict = !opts || !opts->non_strict;
    findings fd;
    memset(&fd, 0, sizeof fd);
    survey(p, f, opts && opts->convert_dtype, &fd);
    bool bad = fd.mismatched || (strict && (fd.missing || fd.unexpected));
    if (report)   /* loaded: what this call copies, so 0 on failure */
        *report = (nn_load_report){bad ? 0 : fd.loaded, fd.missing, fd.unexpected};
    if (bad) {
        msg out;
        memset(&out, 0, sizeof out);
        if (strict && fd.missing)
            msg_add(&out, "%d missing (%s)", fd.missing, fd.miss.buf);
        if (strict && fd.unexpected)
            msg_add(&out, "%s%d unexpected (%s)", out.len ? "; " : "", fd.unexpected,
                    fd.unexp.buf);
        if (fd.mismatched)
            msg_add(&out, "%s%d mismatched (%s)", out.len ? "; " : "", fd.mismatched,
                    fd.mism.buf);
        ag_set_last_error("nn_params_load: %s: %s", label, out.buf);
        return AG_ERR_FORMAT;
    }
    for (int i = 0; i < p->n; i++) {
        const ag_tensor *src = ag_safetensors_get(f, p->order[i]->name);
        if (src)
            copy_into(p->order[i]->t, src);
    }
    return AG_OK;
}

ag_status nn_params_load_from(nn_params *p, const ag_safetensors *f, const nn_load_opts *opts,
                              nn_load_report *report)
{
    if (report)
        *report = (nn_load_report){0, 0, 0};
    if (!p || !f) {
        ag_set_last_error("nn_params_load: %s is NULL", p ? "file" : "params");
        return AG_ERR_ARG;
    }
    return load_from(p, f, "file", opts, report);
}

ag_status nn_params_load_opts(nn_params *p, const char *path, const nn_load_opts *opts,
                              nn_load_report *report)
{
    if (report)
        *report = (nn_load_report){0, 0, 0};
    if (!p || !path) {
        ag_set_last_error("nn_params_load: %s is NULL", p ? "path" : "params");
        return AG_ERR_ARG;
    }
    ag_safetensors *f = NULL;
    ag_status s = ag_safetensors_load(path, &f);
    if (s != AG_OK) { /* name the call the user made, then the loader's message */
        char why[512];
        snprintf(why, sizeof why, "%s", ag_last_error() ? ag_last_error() : "?");
        ag_set_last_error("nn_params_load: %s", why);
        return s;
    }
    s = load_from(p, f, path, opts, report);
    ag_safetensors_free(f);
    return s;
}

ag_status nn_params_load(nn_params *p, const char *path)
{
    return nn_params_load_opts(p, path, NULL, NULL);
}
