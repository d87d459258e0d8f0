/* reducer_node.c — the reducer's exchange when every rank runs on this
 * machine: through memory they share (node.c) instead of messages.
 *
 * Each rank's region holds, per parameter in reducer order, its gradient
 * at goff[k] and (with opts.update) its data at poff[k], moved there
 * (ag_tensor_set_storage) so that backward and the optimizer write them in
 * place and the other ranks read them where they are: no pack, no copy
 * through MPI's buffers.  A bucket's step, with the chunks of reducer.c:
 *   ready    its gradients are final: READY(b) = step;
 *   sum      once every rank is READY(b): chunk me of this rank's gradients
 *            = ((g0 + g1) + g2) + ..., read from every rank's region, the
 *            same adds in the same order as the messages' sum; then
 *            SUMMED(b) = step;
 *   gather   once every rank is SUMMED(b): chunk q of this rank's
 *            gradients copied from rank q's, for every q != me.
 * With update the gather waits for UPDATED (each rank has stepped the
 * optimizer over its chunks) and copies the parameters' chunks instead.
 * Every wait ends by DONE = step and waiting for every rank's DONE: until
 * then another rank may still read this rank's region, after it none
 * does before the next READY, so between steps the caller may write
 * gradients and parameters as it likes.
 *
 * A rank writes only its own region, its data before its counters
 * (release), and reads the others' after their counters (acquire).  What
 * it reads of another rank is never what that rank writes in the same
 * phase: the sum reads chunk me of the others and writes chunk me of its
 * own, the gather writes the other chunks of its own only after their
 * owners' sums are done. */
#include <string.h>

#include "reducer_internal.h"

/* The counters of the regions (reducer.c's buckets nb). */
static int f_ready(const dist_reducer *r, const bucket *b) { return (int)(b - r->b); }
static int f_summed(const dist_reducer *r, const bucket *b) { return r->nb + f_ready(r, b); }
static int f_updated(const dist_reducer *r) { return 2 * r->nb; }
static int f_done(const dist_reducer *r) { return 2 * r->nb + 1; }

static char *region(const dist_reducer *r, int q) { return dist_node_base(r->node, q); }

/* The part of parameter k (in bucket b) inside chunk j: elements [*a, *c)
 * of k; false when none. */
static bool piece(const dist_reducer *r, const bucket *b, int k, int j, int64_t *a,
                  int64_t *c)
{
    int64_t lo = chunk_lo(b, j) - r->boff[k], hi = chunk_lo(b, j + 1) - r->boff[k];
    int64_t n = ag_numel(r->param[k]);
    *a = lo < 0 ? 0 : lo;
    *c = hi > n ? n : hi;
    return *a < *c;
}

/* goff and poff; returns the region's bytes. */
static size_t plan_region(dist_reducer *r)
{
    size_t off = 0;
    for (int k = 0; k < r->n; k++) {
        size_t bytes = dist_round64((size_t)ag_numel(r->param[k]) *
                                    ag_dtype_size(ag_dtype_of(r->param[k])));
        r->goff[k] = off;
        off += bytes;
        r->poff[k] = off;
        off += r->o.update ? bytes : 0;
    }
    return off;
}

void reducer_node_setup(dist_reducer *r)
{
    if (dist_w.size == 1 || !dist_w.one_node || r->o.no_shared_memory)
        return;
    /* no room (a small /dev/shm): messages, which need none */
    if (!(r->node = dist_node_open(plan_region(r), 2 * r->nb + 2)))
        return;
    r->st.shared_memory = true;
    for (int k = 0; r->o.update && k < r->n; k++) /* aligned and sized: cannot fail */
        ag_tensor_set_storage(r->param[k], region(r, dist_w.rank) + r->poff[k]);
}

/* b's gradients into the region: on the first step, or when a gradient
 * was made anew since; a missing one reads as zeros to the others. */
static void bind(dist_reducer *r, bucket *b)
{
    char *mine = region(r, dist_w.rank);
    for (int k = b->first; k < b->first + b->count; k++) {
        ag_tensor *g = ag_grad(r->param[k]);
        if (!g) {
            memset(mine + r->goff[k], 0,
                   (size_t)ag_numel(r->param[k]) * ag_dtype_size(b->dt));
            reducer_no_grad(r, k);
        } else if (ag_data(g) != mine + r->goff[k]) {
            keep_error(r, ag_tensor_set_storage(g, mine + r->goff[k]));
        }
        if (r->o.update && ag_data(r->param[k]) != mine + r->poff[k] && r->err == AG_OK) {
            ag_set_last_error("dist_reducer_wait: params[%d] was moved out of the reducer's "
                              "shared memory (ag_tensor_set_storage) on rank %d",
                              r->n - 1 - k, dist_w.rank);
            r->err = AG_ERR_STATE;
        }
    }
}

void reducer_node_start(dist_reducer *r, bucket *b)
{
    bind(r, b);
    dist_node_publish(r->node, f_ready(r, b), r->step);
    b->state = B_REDUCE;
}

/* Whether every other rank's counter f is at this step (block: waits). */
static bool arrived(const dist_reducer *r, int f, bool block)
{
    if (block)
        dist_node_wait(r->node, f, r->step);
    return block || dist_node_reached(r->node, f, r->step);
}

static void sum(dist_reducer *r, const bucket *b)
{
    const int me = dist_w.rank, R = dist_w.size;
    const size_t es = ag_dtype_size(b->dt);
    int64_t a, c;
    for (int k = b->first; k < b->first + b->count; k++) {
        if (!piece(r, b, k, me, &a, &c))
            continue;
        for (int q = 0; q < R; q++)
            r->src[q] = region(r, q) + r->goff[k] + (size_t)a * es;
        reducer_sum(b->dt, region(r, me) + r->goff[k] + (size_t)a * es, r->src, c - a, R,
                    r->o.average);
    }
}

/* The other ranks' chunks of b (their sums, or with update their
 * parameters) into this rank's. */
static void gather(dist_reducer *r, const bucket *b)
{
    const int me = dist_w.rank;
    const size_t es = ag_dtype_size(b->dt), *off = r->o.update ? r->poff : r->goff;
    int64_t a, c;
    for (int q = 0; q < dist_w.size; q++)
        for (int k = b->first; q != me && k < b->first + b->count; k++)
            if (piece(r, b, k, q, &a, &c))
                memcpy(region(r, me) + off[k] + (size_t)a * es,
                       region(r, q) + off[k] + (size_t)a * es, (size_t)(c - a) * es);
}

void reducer_node_advance(dist_reducer *r, bucket *b, bool block)
{
    if (b->state == B_REDUCE) {
        if (!arrived(r, f_ready(r, b), block))
            return;
        sum(r, b);
        b->state = B_SUMMED;
        if (r->o.update)
            return; /* the gather waits for the optimizer */
        dist_node_publish(r->node, f_summed(r, b), r->step);
        b->state = B_GATHER;
        block = false; /* the others' sums come while later buckets are summed */
    }
    if (b->state != B_GATHER)
        return;
    if (!arrived(r, r->o.update ? f_updated(r) : f_summed(r, b), block))
        return;
    gather(r, b);
    b->state = B_DONE;
}

void reducer_node_updated(dist_reducer *r)
{
    dist_node_publish(r->node, f_updated(r), r->step);
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].state == B_SUMMED)
            r->b[i].state = B_GATHER;
}

void reducer_node_finish(dist_reducer *r)
{
    dist_node_publish(r->node, f_done(r), r->step);
    arrived(r, f_done(r), true);
}

void reducer_node_release(dist_reducer *r)
{
    if (!r->node)
        return;
    char *mine = region(r, dist_node_rank(r->node)); /* dist_w may be gone */
    bool out = true; /* every tensor back in memory of its own */
    for (int k = 0; k < r->n; k++) {
        ag_tensor *p = r->param[k], *g = ag_grad(p);
        if (r->o.update && ag_data(p) == mine + r->poff[k])
            out &= ag_tensor_set_storage(p, NULL) == AG_OK;
        if (g && ag_data(g) == mine + r->goff[k])
            out &= ag_tensor_set_storage(g, NULL) == AG_OK;
    }
    if (out) /* else (no memory for one) the mapping stays with it */
        dist_node_close(r->node);
    r->node = NULL;
}
