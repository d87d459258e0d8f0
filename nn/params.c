/* params.c — named parameters: a uthash map name -> tensor that keeps
 * insertion order, owns its tensors, and hands optimizers the trainable
 * ones. */
#include "nn_internal.h"

#include <stdio.h>

nn_params *nn_params_new(void)
{
    nn_params *p = ag_mem_calloc(sizeof *p);
    if (!p) {
        ag_set_last_error("nn_params_new: out of memory");
        return NULL;
    }
    p->dtype = AG_F32;
    p->training = true;
    return p;
}

void nn_params_free(nn_params *p)
{
    if (!p)
        return;
    HASH_CLEAR(hh, p->by_name);
    for (int i = 0; i < p->n; i++) {
        ag_tensor_free(p->order[i]->t);
        ag_mem_free(p->order[i]->name);
        ag_mem_free(p->order[i]);
    }
    ag_mem_free(p->order);
    ag_mem_free(p->view);
    ag_mem_free(p->view_names);
    ag_mem_free(p);
}

void nn_params_set_dtype(nn_params *p, ag_dtype dt)
{
    if (p && (dt == AG_F32 || dt == AG_F64))
        p->dtype = dt;
}

/* For the accessors: false, with ag_last_error naming fn, for a NULL p. */
static bool present(const nn_params *p, const char *fn)
{
    if (!p)
        ag_set_last_error("%s: p is NULL", fn);
    return p != NULL;
}

/* p present and 0 <= i < count. */
static bool entry_at(const nn_params *p, int i, const char *fn)
{
    if (!present(p, fn))
        return false;
    if (i < 0 || i >= p->n) {
        ag_set_last_error("%s: i = %d is outside [0, %d)", fn, i, p->n);
        return false;
    }
    return true;
}

ag_dtype nn_params_dtype(const nn_params *p)
{
    return present(p, "nn_params_dtype") ? p->dtype : AG_F32;
}

void nn_params_set_training(nn_params *p, bool on)
{
    if (p)
        p->training = on;
}

bool nn_params_training(const nn_params *p)
{
    return present(p, "nn_params_training") && p->training;
}

static nn_entry *find(const nn_params *p, const char *name)
{
    nn_entry *e = NULL;
    HASH_FIND_STR(p->by_name, name, e);
    return e;
}

static ag_status add_fail(ag_tensor *t, ag_status s, const char *fmt, const char *name)
{
    ag_tensor_free(t);
    ag_set_last_error(fmt, name ? name : "(null)");
    return s;
}

static bool grow_order(nn_params *p)
{
    if (p->n < p->cap)
        return true;
    int cap = p->cap ? 2 * p->cap : 16;
    nn_entry **o = ag_mem_alloc((size_t)cap * sizeof *o);
    if (!o)
        return false;
    if (p->n)
        memcpy(o, p->order, (size_t)p->n * sizeof *o);
    ag_mem_free(p->order);
    p->order = o;
    p->cap = cap;
    return true;
}

static ag_status add_entry(nn_params *p, const char *name, ag_tensor *t, bool buffer)
{
    if (!p || !t)
        return add_fail(t, AG_ERR_ARG, "nn_params_add: params or tensor is NULL (name %s)",
                        name);
    if (!name || !name[0] || strlen(name) >= NN_NAME_MAX || !strcmp(name, "__metadata__"))
        return add_fail(t, AG_ERR_ARG, "nn_params_add: bad name \"%s\"", name);
    if (find(p, name))
        return add_fail(t, AG_ERR_ARG, "nn_params_add: name \"%s\" is already taken", name);
    ag_tensor_set_name(t, name);
    if (ag_tensor_name(t) == NULL)   /* a tape tensor ignores names */
        return add_fail(t, AG_ERR_ARG,
                        "nn_params_add: \"%s\" is not a persistent tensor (or no memory)",
                        name);
    nn_entry *e = ag_mem_calloc(sizeof *e);
    size_t len = strlen(name) + 1;
    char *copy = e ? ag_mem_alloc(len) : NULL;
    if (!copy || !grow_order(p)) {
        ag_mem_free(copy);
        ag_mem_free(e);
        return add_fail(t, AG_ERR_NOMEM, "nn_params_add: out of memory adding \"%s\"", name);
    }
    memcpy(copy, name, len);
    e->name = copy;
    e->t = t;
    e->buffer = buffer;
    unsigned before = HASH_COUNT(p->by_name);
    HASH_ADD_KEYPTR(hh, p->by_name, e->name, len - 1, e);
    if (HASH_COUNT(p->by_name) != before + 1) {
        ag_mem_free(copy);
        ag_mem_free(e);
        return add_fail(t, AG_ERR_NOMEM, "nn_params_add: out of memory adding \"%s\"", name);
    }
    p->order[p->n++] = e;
    ag_set_requires_grad(t, !buffer);
    return AG_OK;
}

ag_status nn_params_add(nn_params *p, const char *name, ag_tensor *t)
{
    return add_entry(p, name, t, false);
}

ag_status nn_params_add_buffer(nn_params *p, const char *name, ag_tensor *t)
{
    return add_entry(p, name, t, true);
}

ag_tensor *nn_params_get(const nn_params *p, const char *name)
{
    if (!p || !name) {
        ag_set_last_error("nn_params_get: %s is NULL", !p ? "p" : "name");
        return NULL;
    }
    nn_entry *e = find(p, name);
    return e ? e->t : NULL;
}

int nn_params_count(const nn_params *p) { return present(p, "nn_params_count") ? p->n : 0; }

const char *nn_params_name(const nn_params *p, int i)
{
    return entry_at(p, i, "nn_params_name") ? p->order[i]->name : NULL;
}

ag_tensor *nn_params_at(const nn_params *p, int i)
{
    return entry_at(p, i, "nn_params_at") ? p->order[i]->t : NULL;
}

bool nn_params_is_buffer(const nn_params *p, int i)
{
    return entry_at(p, i, "nn_params_is_buffer") && p->order[i]->buffer;
}

int64_t nn_params_numel(const nn_params *p, bool trainable_only)
{
    int64_t total = 0;
    if (!present(p, "nn_params_numel"))
        return 0;
    for (int i = 0; p && i < p->n; i++) {
        const nn_entry *e = p->order[i];
        if (!e->buffer && (!trainable_only || ag_requires_grad(e->t)))
            total += ag_numel(e->t);
    }
    return total;
}

void nn_params_zero_grad(nn_params *p)
{
    for (int i = 0; p && i < p->n; i++)
        if (!p->order[i]->buffer)
            ag_zero_grad(p->order[i]->t);
}

static bool prefix_selects(const char *prefix, const char *name)
{
    if (!prefix || !prefix[0])
        return true;
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n) != 0)
        return false;
    return prefix[n - 1] == '.' || name[n] == '\0' || name[n] == '.';
}

static int set_frozen(nn_params *p, const char *prefix, bool on)
{
    int count = 0;
    if (!present(p, on ? "nn_params_unfreeze" : "nn_params_freeze"))
        return 0;
    for (int i = 0; p && i < p->n; i++) {
        nn_entry *e = p->order[i];
        if (!e->buffer && prefix_selects(prefix, e->name)) {
            ag_set_requires_grad(e->t, on);
            count++;
        }
    }
    return count;
}

int nn_params_freeze(nn_params *p, const char *prefix) { return set_frozen(p, prefix, false); }

int nn_params_unfreeze(nn_params *p, const char *prefix) { return set_frozen(p, prefix, true); }

/* Fills the view arrays with the trainable entries; returns their count,
 * or -1 on no memory. */
static int fill_view(nn_params *p)
{
    if (p->view_cap < p->n || !p->view) {
        int cap = p->n > 0 ? p->n : 1;
        ag_tensor **v = ag_mem_alloc((size_t)cap * sizeof *v);
        const char **vn = ag_mem_alloc((size_t)cap * sizeof *vn);
        if (!v || !vn) {
            ag_mem_free(v);
            ag_mem_free(vn);
            ag_set_last_error("nn_params_tensors: out of memory");
            return -1;
        }
        ag_mem_free(p->view);
        ag_mem_free(p->view_names);
        p->view = v;
        p->view_names = vn;
        p->view_cap = cap;
    }
    int k = 0;
    for (int i = 0; i < p->n; i++) {
        nn_entry *e = p->order[i];
        if (!e->buffer && ag_requires_grad(e->t)) {
            p->view[k] = e->t;
            p->view_names[k++] = e->name;
        }
    }
    return k;
}

ag_tensor **nn_params_tensors(nn_params *p, int *n)
{
    int k = present(p, "nn_params_tensors") ? fill_view(p) : -1;
    if (n)
        *n = k < 0 ? 0 : k;
    return k < 0 ? NULL : p->view;
}

const char *const *nn_params_names(nn_params *p, int *n)
{
    int k = present(p, "nn_params_names") ? fill_view(p) : -1;
    if (n)
        *n = k < 0 ? 0 : k;
    return k < 0 ? NULL : p->view_names;
}

/* ---- shared helpers of the layer files ---- */

bool nn_join_name(char *buf, const char *fn, const char *name, const char *suffix)
{
    int len = name && name[0] ? snprintf(buf, NN_NAME_MAX, "%s.%s", name, suffix)
                              : snprintf(buf, NN_NAME_MAX, "%s", suffix);
    if (len < 0 || len >= NN_NAME_MAX) {
        ag_set_last_error("%s: name \"%s\" is too long", fn, name);
        return false;
    }
    return true;
}

void nn_params_truncate(nn_params *p, int n)
{
    while (p && p->n > n) {
        nn_entry *e = p->order[--p->n];
        HASH_DEL(p->by_name, e);
        ag_tensor_free(e->t);
        ag_mem_free(e->name);
        ag_mem_free(e);
    }
}

ag_tensor *nn_new_param(nn_params *p, const char *fn, const char *name, const char *suffix,
                        int ndim, const int64_t *shape, bool buffer)
{
    char buf[NN_NAME_MAX];
    if (!nn_join_name(buf, fn, name, suffix))
        return NULL;
    ag_tensor *x = ag_tensor_new(p->dtype, ndim, shape);
    if (!x)
        return NULL;
    if (add_entry(p, buf, x, buffer) != AG_OK)
        return NULL;
    return x;
}
