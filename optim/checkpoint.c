/* checkpoint.c — resumable training state in one safetensors file.
 *
 * Layout (every optim/sched tensor is F64 unless it is a state buffer,
 * which keeps its parameter's dtype and shape):
 *   <param name>                         the parameter
 *   optim.opts                           [options in struct order...,
 *                                         has_initial_lr, initial_lr]
 *   optim.state.<param name>.step        [] updates applied (when state exists)
 *   optim.state.<param name>.<buffer>    PyTorch's buffer names
 *   sched.state                          [last_epoch, step_count, base_lr,
 *                                         last_lr] per schedule part
 * Metadata: format, optim.kind, sched.kind (kind and configuration), rng
 * (four hex words). */
#include "optim_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define CKPT_FORMAT "tapegrad-checkpoint-1"

/* ---- shared checks ---- */

static bool reserved_name(const char *s)
{
    return strncmp(s, "optim.", 6) == 0 || strncmp(s, "sched.", 6) == 0;
}

static ag_status check_args(const char *fn, const char *path, const char *const *names,
                            ag_tensor **params, int n)
{
    if (!path || n < 0 || (n > 0 && (!names || !params))) {
        ag_set_last_error("%s: bad arguments (path %s, n = %d)", fn, path ? "given" : "NULL",
                          n);
        return AG_ERR_ARG;
    }
    for (int i = 0; i < n; i++) {
        if (!params[i] || !names[i] || !names[i][0] || reserved_name(names[i])) {
            ag_set_last_error("%s: parameter #%d: %s", fn, i + 1,
                              !params[i]  ? "tensor is NULL"
                              : !names[i] ? "name is NULL"
                              : !names[i][0]
                                  ? "name is empty"
                                  : "names starting with \"optim.\" or \"sched.\" are reserved");
            return AG_ERR_ARG;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(names[i], names[j]) == 0) {
                ag_set_last_error("%s: parameters #%d and #%d are both named \"%s\"", fn, j + 1, i + 1,
                                  names[i]);
                return AG_ERR_ARG;
            }
        }
    }
    return AG_OK;
}

/* name_of[k] = index into names of optimizer parameter k.  Every parameter
 * of o must be named. */
static ag_status name_states(const char *fn, const optim *o, ag_tensor **params, int n,
                             int *name_of)
{
    for (int k = 0; k < o->n; k++)
        name_of[k] = -1;
    for (int i = 0; i < n; i++) {
        const optim_pstate *st = optim_find_state(o, params[i]);
        if (st && name_of[st->index] < 0)
            name_of[st->index] = i;
    }
    for (int k = 0; k < o->n; k++) {
        if (name_of[k] < 0) {
            ag_set_last_error("%s: optimizer parameter #%d is not among the named "
                              "parameters", fn, k + 1);
            return AG_ERR_ARG;
        }
    }
    return AG_OK;
}

static char *state_key(const char *pname, const char *what)
{
    size_t len = strlen("optim.state.") + strlen(pname) + 1 + strlen(what) + 1;
    char *k = ag_mem_alloc(len);
    if (k)
        snprintf(k, len, "optim.state.%s.%s", pname, what);
    return k;
}

/* ---- save ---- */

typedef struct save_list {
    int n, cap;
    const char **names;
    const ag_tensor **tensors;
    char **owned_names;     /* freed after saving */
    ag_tensor **owned;      /* freed after saving */
    int n_owned_names, n_owned;
} save_list;

static bool list_add(save_list *l, const char *name, const ag_tensor *t, bool own_name,
                     bool own_tensor)
{
    if (!name || !t) {
        if (own_name)
            ag_mem_free((char *)name);
        if (own_tensor)
            ag_tensor_free((ag_tensor *)t);
        return false;
    }
    l->names[l->n] = name;
    l->tensors[l->n++] = t;
    if (own_name)
        l->owned_names[l->n_owned_names++] = (char *)name;
    if (own_tensor)
        l->owned[l->n_owned++] = (ag_tensor *)t;
    return true;
}

static ag_tensor *f64_vector(const double *v, int n)
{
    return ag_tensor_from_f64(1, (const int64_t[]){n}, v);
}

static bool add_optim(save_list *l, const optim *o, const char *const *names,
                      const int *name_of)
{
    double v[OPTIM_MAX_OPTS + 2];
    int k = o->def->opts_pack(o, v);
    v[k++] = o->has_initial_lr;
    v[k++] = o->initial_lr;
    if (!list_add(l, "optim.opts", f64_vector(v, k), false, true))
        return false;
    for (int i = 0; i < o->n; i++) {
        const optim_pstate *st = &o->states[i];
        const char *pname = names[name_of[i]];
        if (!st->init && st->steps == 0)
            continue;
        double steps = (double)st->steps;
        if (!list_add(l, state_key(pname, "step"), ag_tensor_from_f64(0, NULL, &steps), true,
                      true))
            return false;
        for (int b = 0; b < OPTIM_MAX_BUFS && st->init; b++)
            if (st->buf[b] &&
                !list_add(l, state_key(pname, o->def->buf_names[b]), st->buf[b], true, false))
                return false;
    }
    return true;
}

static void list_free(save_list *l)
{
    for (int i = 0; i < l->n_owned_names; i++)
        ag_mem_free(l->owned_names[i]);
    for (int i = 0; i < l->n_owned; i++)
        ag_tensor_free(l->owned[i]);
    ag_mem_free(l->names);
    ag_mem_free(l->tensors);
    ag_mem_free(l->owned_names);
    ag_mem_free(l->owned);
}

ag_status optim_checkpoint_save(const char *path, const char *const *param_names,
                                ag_tensor **params, int n, const optim *o,
                                const optim_sched *s, const ag_rng *rng)
{
    const char *fn = "optim_checkpoint_save";
    ag_status rc = check_args(fn, path, param_names, params, n);
    if (rc != AG_OK)
        return rc;
    int *name_of = NULL;
    if (o) {
        name_of = ag_mem_alloc((size_t)o->n * sizeof *name_of);
        if (!name_of) {
            ag_set_last_error("%s: out of memory", fn);
            return AG_ERR_NOMEM;
        }
        if ((rc = name_states(fn, o, params, n, name_of)) != AG_OK) {
            ag_mem_free(name_of);
            return rc;
        }
    }
    save_list l = {0};
    l.cap = n + 2 + (o ? o->n * (OPTIM_MAX_BUFS + 1) : 0);
    l.names = ag_mem_calloc((size_t)l.cap * sizeof *l.names);
    l.tensors = ag_mem_calloc((size_t)l.cap * sizeof *l.tensors);
    l.owned_names = ag_mem_calloc((size_t)l.cap * sizeof *l.owned_names);
    l.owned = ag_mem_calloc((size_t)l.cap * sizeof *l.owned);
    bool ok = l.names && l.tensors && l.owned_names && l.owned;
    for (int i = 0; ok && i < n; i++)
        ok = list_add(&l, param_names[i], params[i], false, false);
    if (ok && o)
        ok = add_optim(&l, o, param_names, name_of);
    double sv[OPTIM_SCHED_STATE_MAX];
    if (ok && s)
        ok = list_add(&l, "sched.state", f64_vector(sv, optim_sched_pack(s, sv)), false, true);

    char sched_desc[1024] = "", rng_text[80] = "";
    const char *keys[4], *vals[4];
    int n_meta = 0;
    keys[n_meta] = "format", vals[n_meta++] = CKPT_FORMAT;
    if (o)
        keys[n_meta] = "optim.kind", vals[n_meta++] = optim_name(o);
    if (s) {
        optim_sched_describe(s, sched_desc, sizeof sched_desc);
        keys[n_meta] = "sched.kind", vals[n_meta++] = sched_desc;
    }
    if (rng) {
        snprintf(rng_text, sizeof rng_text, "%016" PRIx64 " %016" PRIx64 " %016" PRIx64
                 " %016" PRIx64, rng->s[0], rng->s[1], rng->s[2], rng->s[3]);
        keys[n_meta] = "rng", vals[n_meta++] = rng_text;
    }
    if (ok)
        rc = ag_safetensors_save(path, l.n, l.names, l.tensors, n_meta, keys, vals);
    else {
        ag_set_last_error("%s: out of memory", fn);
        rc = AG_ERR_NOMEM;
    }
    list_free(&l);
    ag_mem_free(name_of);
    return rc;
}

/* ---- load ---- */

static ag_status bad(const char *fn, const char *path, const char *what, const char *name)
{
    ag_set_last_error("%s: %s: %s%s%s%s", fn, path, what, name ? " \"" : "", name ? name : "",
                      name ? "\"" : "");
    return AG_ERR_FORMAT;
}

/* The message an unpack or a value check left (starting with the tensor's
 * name), behind fn, path and what was bad. */
static ag_status bad_value(const char *fn, const char *path, const char *what)
{
    char why[512];
    snprintf(why, sizeof why, "%s", ag_last_error() ? ag_last_error() : "bad value");
    ag_set_last_error("%s: %s: %s: %s", fn, path, what, why);
    return AG_ERR_FORMAT;
}

/* Every element of buffer t (saved as `key`) finite, and >= 0 when nonneg;
 * else a message naming key and the element. */
static bool values_ok(const ag_tensor *t, const char *key, bool nonneg)
{
    const ag_dtype dt = ag_dtype_of(t);
    const void *d = ag_data_const(t);
    for (int64_t i = 0, N = ag_numel(t); i < N; i++) {
        const double v = optim_ld(d, dt, i);
        if (!(v < INFINITY && v > -INFINITY) || (nonneg && v < 0)) {
            ag_set_last_error("%s: element %lld is %g (must be finite%s)", key, (long long)i,
                              v, nonneg ? " and >= 0" : "");
            return false;
        }
    }
    return true;
}

static bool same_layout(const ag_tensor *a, const ag_tensor *b)
{
    if (ag_dtype_of(a) != ag_dtype_of(b) || ag_ndim(a) != ag_ndim(b))
        return false;
    for (int d = 0; d < ag_ndim(a); d++)
        if (ag_shape(a)[d] != ag_shape(b)[d])
            return false;
    return true;
}

/* A 1-D (or 0-D for want < 0 meaning "scalar") F64 tensor's values. */
static const double *f64_values(const ag_safetensors *f, const char *name, int64_t *count)
{
    const ag_tensor *t = ag_safetensors_get(f, name);
    if (!t || ag_dtype_of(t) != AG_F64 || ag_ndim(t) > 1)
        return NULL;
    *count = ag_numel(t);
    return ag_data_const(t);
}

/* The loaded state of one optimizer parameter, checked, before commit. */
typedef struct loaded_state {
    bool present;
    int64_t steps;
    const ag_tensor *src[OPTIM_MAX_BUFS];
    ag_tensor *fresh[OPTIM_MAX_BUFS]; /* allocated for buffers not yet there */
} loaded_state;

static ag_status check_optim(const char *fn, const char *path, const ag_safetensors *f,
                             optim *o, const char *const *names, const int *name_of,
                             loaded_state *ls, optim *probe)
{
    const char *kind = ag_safetensors_meta(f, "optim.kind");
    if (!kind || strcmp(kind, optim_name(o)) != 0)
        return bad(fn, path, kind ? "the optimizer kind differs:" : "no optimizer state",
                   kind ? kind : NULL);
    int64_t cnt = 0;
    const double *ov = f64_values(f, "optim.opts", &cnt);
    int k = o->def->opts_pack(o, (double[OPTIM_MAX_OPTS]){0});
    if (!ov || cnt != k + 2)
        return bad(fn, path, "bad optimizer options (not an F64 vector of the kind's length)",
                   "optim.opts");
    if (!o->def->opts_unpack(probe, ov, k, true) ||
        !optim_unpack_bool("has_initial_lr", ov[k]) ||
        !optim_check_nonneg("optim.opts", "initial_lr", ov[k + 1]))
        return bad_value(fn, path, "bad optimizer options");
    for (int i = 0; i < o->n; i++) {
        const optim_pstate *st = &o->states[i];
        const char *pname = names[name_of[i]];
        char *key = state_key(pname, "step");
        if (!key)
            return AG_ERR_NOMEM;
        const ag_tensor *t = ag_safetensors_get(f, key);
        ag_mem_free(key);
        loaded_state *L = &ls[i];
        if (t) {
            if (ag_numel(t) != 1 || ag_dtype_of(t) != AG_F64)
                return bad(fn, path, "bad step count (not one F64 value) of", pname);
            double v = ag_get(t, 0);
            if (!(v >= 0 && v < 9e15 && v == floor(v))) {
                ag_set_last_error("%s: %s: bad step count: optim.state.%s.step = %.17g must be "
                                  "a whole number in [0, 9e15)", fn, path, pname, v);
                return AG_ERR_FORMAT;
            }
            L->present = true;
            L->steps = (int64_t)v;
        }
        for (int b = 0; b < OPTIM_MAX_BUFS; b++) {
            if (!o->def->buf_names[b])
                continue;
            if (!(key = state_key(pname, o->def->buf_names[b])))
                return AG_ERR_NOMEM;
            L->src[b] = ag_safetensors_get(f, key);
            if (L->src[b] && (!L->present || !same_layout(L->src[b], st->param))) {
                ag_mem_free(key);
                return bad(fn, path, "a state buffer does not fit parameter", pname);
            }
            const bool ok = !L->src[b] || values_ok(L->src[b], key, o->def->buf_nonneg[b]);
            ag_mem_free(key);
            if (!ok)
                return bad_value(fn, path, "bad optimizer state");
        }
        /* The loaded state must hold what the next step reads.  (SGD's
         * momentum buffer may be absent: it is then taken at the next step.) */
        if (L->present && o->kind != OPTIM_SGD) {
            unsigned need = o->def->needs(probe, st);
            for (int b = 0; b < OPTIM_MAX_BUFS; b++)
                if ((need >> b & 1u) && !L->src[b])
                    return bad(fn, path, "a state buffer is missing for", pname);
        }
        if (o->kind == OPTIM_ADAGRAD && !L->present)
            return bad(fn, path, "no Adagrad state for", pname);
        for (int b = 0; b < OPTIM_MAX_BUFS; b++) {
            if (L->src[b] && !st->buf[b]) {
                L->fresh[b] = ag_tensor_new(ag_dtype_of(st->param), ag_ndim(st->param),
                                            ag_shape(st->param));
                if (!L->fresh[b]) {
                    ag_set_last_error("%s: out of memory", fn);
                    return AG_ERR_NOMEM;
                }
            }
        }
    }
    return AG_OK;
}

static void copy_data(ag_tensor *dst, const ag_tensor *src)
{
    memcpy(ag_data(dst), ag_data_const(src),
           (size_t)ag_numel(src) * ag_dtype_size(ag_dtype_of(src)));
}

static void commit_optim(optim *o, const optim *probe, const double *ov, loaded_state *ls)
{
    int k = o->def->opts_pack(o, (double[OPTIM_MAX_OPTS]){0});
    o->opts = probe->opts;
    o->has_initial_lr = ov[k] != 0;
    o->initial_lr = ov[k + 1];
    for (int i = 0; i < o->n; i++) {
        optim_pstate *st = &o->states[i];
        loaded_state *L = &ls[i];
        st->steps = L->present ? L->steps : 0;
        st->init = L->present && (o->kind != OPTIM_SGD || L->src[0]);
        for (int b = 0; b < OPTIM_MAX_BUFS; b++) {
            if (!L->src[b]) {
                ag_tensor_free(st->buf[b]);
                st->buf[b] = NULL;
                continue;
            }
            if (L->fresh[b]) {
                st->buf[b] = L->fresh[b];
                L->fresh[b] = NULL;
            }
            copy_data(st->buf[b], L->src[b]);
        }
    }
}

static bool parse_rng(const char *text, ag_rng *out)
{
    ag_rng r;
    int used = 0;
    if (!text || sscanf(text, "%16" SCNx64 " %16" SCNx64 " %16" SCNx64 " %16" SCNx64 "%n",
                        &r.s[0], &r.s[1], &r.s[2], &r.s[3], &used) != 4 ||
        text[used] != '\0' || (r.s[0] | r.s[1] | r.s[2] | r.s[3]) == 0)
        return false;
    *out = r;
    return true;
}

static ag_status load_checked(const char *fn, const char *path, const ag_safetensors *f,
                              const char *const *names, ag_tensor **params, int n, optim *o,
                              optim_sched *s, ag_rng *rng, loaded_state *ls, int *name_of)
{
    const char *fmt = ag_safetensors_meta(f, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0)
        return bad(fn, path, "not a tapegrad checkpoint (metadata format)", NULL);
    for (int i = 0; i < n; i++) {
        const ag_tensor *t = ag_safetensors_get(f, names[i]);
        if (!t)
            return bad(fn, path, "missing parameter", names[i]);
        if (!same_layout(t, params[i]))
            return bad(fn, path, "shape or dtype differs for parameter", names[i]);
    }
    ag_status rc;
    optim probe;
    if (o) {
        probe = *o;
        if ((rc = name_states(fn, o, params, n, name_of)) != AG_OK ||
            (rc = check_optim(fn, path, f, o, names, name_of, ls, &probe)) != AG_OK)
            return rc;
    }
    int64_t n_sched = 0;
    const double *sv = NULL;
    if (s) {
        char desc[1024];
        optim_sched_describe(s, desc, sizeof desc);
        const char *kind = ag_safetensors_meta(f, "sched.kind");
        if (!kind || strcmp(kind, desc) != 0)
            return bad(fn, path, kind ? "the schedule differs:" : "no schedule state",
                       kind ? kind : NULL);
        sv = f64_values(f, "sched.state", &n_sched);
        if (!sv || n_sched > OPTIM_SCHED_STATE_MAX)
            return bad(fn, path, "bad schedule state", "sched.state");
        if (!optim_sched_unpack(s, sv, (int)n_sched, false))
            return bad_value(fn, path, "bad schedule state");
    }
    ag_rng r = {{0}};
    if (rng && !parse_rng(ag_safetensors_meta(f, "rng"), &r))
        return bad(fn, path, "missing or bad generator state", "rng");

    /* Everything fits: commit. */
    for (int i = 0; i < n; i++) {
        copy_data(params[i], ag_safetensors_get(f, names[i]));
        ag_tensor_mark_modified(params[i]);
    }
    if (o) {
        int64_t cnt;
        commit_optim(o, &probe, f64_values(f, "optim.opts", &cnt), ls);
    }
    if (s)
        optim_sched_unpack(s, sv, (int)n_sched, true);
    if (rng)
        *rng = r;
    return AG_OK;
}

ag_status optim_checkpoint_load(const char *path, const char *const *param_names,
                                ag_tensor **params, int n, optim *o, optim_sched *s,
                                ag_rng *rng)
{
    const char *fn = "optim_checkpoint_load";
    ag_status rc = check_args(fn, path, param_names, params, n);
    if (rc != AG_OK)
        return rc;
    loaded_state *ls = o ? ag_mem_calloc((size_t)o->n * sizeof *ls) : NULL;
    int *name_of = o ? ag_mem_alloc((size_t)o->n * sizeof *name_of) : NULL;
    if (o && (!ls || !name_of)) {
        ag_mem_free(ls);
        ag_mem_free(name_of);
        ag_set_last_error("%s: out of memory", fn);
        return AG_ERR_NOMEM;
    }
    ag_safetensors *f = NULL;
    rc = ag_safetensors_load(path, &f);
    if (rc == AG_OK)
        rc = load_checked(fn, path, f, param_names, params, n, o, s, rng, ls, name_of);
    if (rc == AG_ERR_NOMEM)
        ag_set_last_error("%s: out of memory", fn);
    for (int i = 0; o && i < o->n; i++)
        for (int b = 0; b < OPTIM_MAX_BUFS; b++)
            ag_tensor_free(ls[i].fresh[b]);
    ag_safetensors_free(f);
    ag_mem_free(ls);
    ag_mem_free(name_of);
    return rc;
}
