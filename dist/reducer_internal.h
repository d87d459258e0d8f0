/* reducer_internal.h — what reducer.c (the buckets, the messages) and
 * reducer_node.c (the exchange through shared memory) share. */
#ifndef TAPEGRAD_REDUCER_INTERNAL_H
#define TAPEGRAD_REDUCER_INTERNAL_H

#include "dist_internal.h"

typedef enum { B_IDLE, B_REDUCE, B_SUMMED, B_GATHER, B_DONE } bucket_state;

typedef struct bucket {
    int first, count;      /* parameters [first, first + count) in reducer order */
    ag_dtype dt;
    int64_t n;             /* elements */
    void *pack;            /* n: the gradients, then the sums, when not aliased */
    void *buf;             /* this step's: the lone gradient buffer, or pack */
    void *gbuf;            /* the gather's: buf, or (with update) the lone parameter or pack */
    void *bound[2];        /* the buffers the reduce and gather requests were made for */
    void *slot;            /* x chunk me: the other ranks' pieces of chunk me */
    MPI_Request *req;      /* reduce: 2 (R-1) (sends, receives); gather: the same;
                              then dist_reducer_gather's, made and freed there */
    int pending;           /* parameters not reported ready this step */
    bucket_state state;
} bucket;

/* A parameter and its index, sorted by address for the hook's lookup. */
typedef struct by_addr {
    const ag_tensor *t;
    int i;
} by_addr;

struct dist_reducer {
    dist_reducer_opts o;
    int n;                 /* parameters */
    ag_tensor **param;     /* in reducer order: the caller's, reversed */
    int64_t *own_lo, *own_hi; /* caller's order: the elements whose sum this rank holds */
    ag_tensor *const *given;  /* dist_reducer_gather's tensors (caller's order) */
    int *bucket_of;        /* per parameter */
    uint64_t *ready_step;  /* per parameter: the step it was reported ready in */
    by_addr *addr;
    int nb;
    bucket *b;
    int next_start;        /* buckets [0, next_start) have started this step */
    uint64_t step;         /* 1, 2, ...: advanced by each wait */
    bool begun, hooked;    /* a begin is pending; it set the hook on `tape` */
    ag_tape *tape;
    int64_t begins;        /* for probe_every */
    double t_first;        /* this step's first start */
    int early;             /* buckets started before wait this step */
    double update_s;       /* this step's time in opts.update */
    ag_status err;         /* first failure of this step */
    dist_reducer_stats st;
    /* the exchange through shared memory (reducer_node.c); node NULL: messages */
    dist_node *node;
    int64_t *boff;         /* per parameter: its first element's index in its bucket */
    size_t *goff, *poff;   /* per parameter: where its gradient (and, with update, its
                              data) lies in the region */
    const void **src;      /* R: the sum's operands, in rank order */
};

static inline int64_t chunk_lo(const bucket *b, int j) { return b->n * j / dist_w.size; }
static inline int64_t chunk_len(const bucket *b, int j)
{
    return chunk_lo(b, j + 1) - chunk_lo(b, j);
}

static inline void keep_error(dist_reducer *r, ag_status st)
{
    if (r->err == AG_OK)
        r->err = st;
}

/* out[0..m) = ((src[0] + src[1]) + src[2]) + ... (then / R when avg),
 * element by element in rank order, R >= 2; one src[q] may be out itself. */
void reducer_sum(ag_dtype dt, void *out, const void *const *src, int64_t m, int R, bool avg);
/* AG_ERR_STATE for parameter k (reducer order) without a gradient buffer. */
void reducer_no_grad(dist_reducer *r, int k);

/* Collective, after dist_reducer_new's agreement: maps the ranks' regions
 * when every rank runs on this machine and opts allow it, and moves the
 * parameters (with update) there; messages otherwise (r->node NULL). */
void reducer_node_setup(dist_reducer *r);
/* A bucket's gradients are final: into the region, and announced. */
void reducer_node_start(dist_reducer *r, bucket *b);
/* Moves b on by one phase when the other ranks are there (block: waits). */
void reducer_node_advance(dist_reducer *r, bucket *b, bool block);
/* With update, after it: the updated parameters are there to take. */
void reducer_node_updated(dist_reducer *r);
/* The end of a wait: until every rank is here, others may read our region. */
void reducer_node_finish(dist_reducer *r);
/* The tensors back into memory of their own, the regions unmapped. */
void reducer_node_release(dist_reducer *r);

#endif
