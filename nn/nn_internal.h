/* nn_internal.h — what the files of nn/ share: the nn_params struct, name
 * joining and argument checks.  nn/ stands on autograd's public header
 * only (ag_mem_alloc for memory, ag_tape_fail for errors on a tape). */
#ifndef TAPEGRAD_NN_INTERNAL_H
#define TAPEGRAD_NN_INTERNAL_H

#include "nn.h"

#include <stdio.h>

#include <stdlib.h>
#include <string.h>

/* uthash must not exit() on out of memory: a failed add leaves the entry
 * out of the table, which nn_params_add detects by counting. */
#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) ag_mem_alloc(sz)
#define uthash_free(ptr, sz) ag_mem_free(ptr)
#include <uthash.h>

typedef struct nn_entry {
    char *name;          /* owned */
    ag_tensor *t;        /* owned */
    bool buffer;
    UT_hash_handle hh;   /* by name */
} nn_entry;

struct nn_params {
    nn_entry **order;    /* (n) insertion order */
    int n, cap;
    nn_entry *by_name;   /* uthash head */
    ag_tensor **view;    /* (view_cap) nn_params_tensors */
    const char **view_names;
    int view_cap;
    ag_dtype dtype;
    bool training;
};

/* Longest parameter name, terminator included. */
#define NN_NAME_MAX 256

/* "<name>.<suffix>", or "<suffix>" for an empty name, into buf; false
 * (with ag_last_error naming fn) when it does not fit. */
bool nn_join_name(char *buf, const char *fn, const char *name, const char *suffix);

/* Removes (and frees) the entries added after the first n: a constructor
 * that fails part-way leaves p as it found it. */
void nn_params_truncate(nn_params *p, int n);

/* A new zero parameter (or buffer) "<name>.<suffix>" of p's dtype and the
 * given shape, registered in p; NULL with ag_last_error on failure. */
ag_tensor *nn_new_param(nn_params *p, const char *fn, const char *name, const char *suffix,
                        int ndim, const int64_t *shape, bool buffer);

/* Reduction of a loss tensor by red. */
ag_tensor *nn_reduce(ag_tape *t, const char *fn, ag_tensor *l, ag_reduction red);

/* Tape-side checks for compositions: false (error kept on the tape, naming
 * fn) when x is NULL (AG_ERR_NULL) or its dtype is not dt.  nn_check_input
 * is also false for a NULL tape (ag_last_error naming fn) and for a tape
 * that keeps an error already. */
bool nn_check_input(ag_tape *t, const char *fn, const ag_tensor *x);
bool nn_check_dtype(ag_tape *t, const char *fn, const ag_tensor *x, ag_dtype dt);

#endif
