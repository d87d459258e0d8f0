/* reducer.c — gradients summed over the ranks in buckets, in a fixed order,
 * started from backward's gradient-ready hook.
 *
 * Legend: R = ranks, me = this rank, a bucket holds n elements cut into R
 * chunks, chunk j = [lo(j), lo(j+1)) with lo(j) = n j / R, owned by rank j.
 * A bucket's step works on buf: the gradient buffer itself for a bucket of
 * one parameter (most of the bytes: large weights fill buckets alone), else
 * the bucket's own pack buffer:
 *   pack     (pack only) the gradients of its parameters, copied into pack;
 *   reduce   every rank sends chunk j of its buf to rank j and receives
 *            chunk me of every other rank q into slot[q] (R-1 chunks me);
 *   sum      buf[chunk me] = ((c0 + c1) + c2) + ..., c_me being buf's own
 *            chunk and c_q slot[q], element by element in rank order;
 *   gather   every rank sends its summed chunk to all and receives theirs
 *            into buf, which then holds the whole sum;
 *   unpack   (pack only) pack back into the gradient buffers.
 * With opts.update (ZeRO stage 1) a bucket stops after its sum (unpacked
 * into the gradients), the optimizer steps every rank's chunks, and the
 * gather carries the parameters instead: gbuf is the lone parameter's data
 * or pack (the parameters packed), unpacked into the parameters.
 * Messages are persistent point-to-point requests (made when buf is first
 * known or changes, started each step), tagged by bucket and phase, so
 * buckets can be at different phases on different ranks without any
 * ordering rule between them, and a step allocates nothing.
 * When every rank is on this machine reducer_node.c takes the reduce, sum
 * and gather phases instead (through shared memory, no pack, no slot),
 * with the same chunks and the same order of adds; dist_reducer_gather
 * stays on messages. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "reducer_internal.h"

static void mpi_check(dist_reducer *r, const char *call, int rc)
{
    if (rc)
        keep_error(r, dist_mpi_fail("dist_reducer_wait", call, rc));
}

/* ---- a bucket's phases ---- */

/* What a bucket carries for parameter k: its gradient, itself (with
 * update), or the caller's tensor of dist_reducer_gather. */
typedef enum { C_GRADS, C_PARAMS, C_GIVEN } carry;

static ag_tensor *carried(const dist_reducer *r, int k, carry c)
{
    return c == C_PARAMS ? r->param[k] : c == C_GIVEN ? r->given[r->n - 1 - k]
                                                      : ag_grad(r->param[k]);
}

static void pack(dist_reducer *r, bucket *b, carry params)
{
    size_t es = ag_dtype_size(b->dt), off = 0;
    for (int k = b->first; k < b->first + b->count; k++) {
        ag_tensor *g = carried(r, k, params);
        size_t bytes = (size_t)ag_numel(r->param[k]) * es;
        if (g)
            memcpy((char *)b->pack + off, ag_data(g), bytes);
        else /* no gradient here: this rank adds zeros, and unpack says so */
            memset((char *)b->pack + off, 0, bytes);
        off += bytes;
    }
}

void reducer_no_grad(dist_reducer *r, int k)
{
    if (r->err != AG_OK)
        return;
    const char *name = ag_tensor_name(r->param[k]);
    ag_set_last_error("dist_reducer_wait: parameter %s has no gradient buffer on rank %d (a "
                      "backward must reach every parameter before the first wait)",
                      name ? name : "(unnamed)", dist_w.rank);
    r->err = AG_ERR_STATE;
}

static void unpack(dist_reducer *r, bucket *b, carry params)
{
    size_t es = ag_dtype_size(b->dt), off = 0;
    for (int k = b->first; k < b->first + b->count; k++) {
        ag_tensor *g = carried(r, k, params);
        size_t bytes = (size_t)ag_numel(r->param[k]) * es;
        if (g) {
            memcpy(ag_data(g), (char *)b->pack + off, bytes);
        } else {
            reducer_no_grad(r, k);
        }
        off += bytes;
    }
}

/* A block at a time: the partial sums stay in acc (in L1), the last add
 * writes out, so out may be one of the operands (the same elements) and
 * every operand's block is read before out's is written; ivdep says so to
 * the vectoriser, which cannot see that the overlap is exact. */
enum { SUM_BLOCK = 512 };
#define DEFINE_SUM(name, T)                                                             \
    __attribute__((target_clones("avx512f", "avx2", "default")))                       \
    static void name(T *out, const void *const *src, int64_t m, int R, bool avg)       \
    {                                                                                   \
        T acc[SUM_BLOCK];                                                               \
        for (int64_t i0 = 0; i0 < m; i0 += SUM_BLOCK) {                                 \
            int64_t k = m - i0 < SUM_BLOCK ? m - i0 : SUM_BLOCK;                        \
            const T *a = (const T *)src[0] + i0;                                        \
            for (int q = 1; q < R; q++, a = acc) {                                      \
                const T *c = (const T *)src[q] + i0;                                    \
                T *d = q == R - 1 ? out + i0 : acc;                                     \
                _Pragma("GCC ivdep") for (int64_t i = 0; i < k; i++) d[i] = a[i] + c[i]; \
            }                                                                           \
            for (int64_t i = 0; avg && i < k; i++)                                      \
                out[i0 + i] /= (T)R;                                                    \
        }                                                                               \
    }
DEFINE_SUM(sum_f32, float)
DEFINE_SUM(sum_f64, double)

void reducer_sum(ag_dtype dt, void *out, const void *const *src, int64_t m, int R, bool avg)
{
    if (dt == AG_F32)
        sum_f32(out, src, m, R, avg);
    else
        sum_f64(out, src, m, R, avg);
}

/* buf's chunk me summed with the other ranks' pieces of it in slot. */
static void sum_chunk(dist_reducer *r, bucket *b)
{
    const int me = dist_w.rank, R = dist_w.size;
    const int64_t m = chunk_len(b, me);
    const size_t es = ag_dtype_size(b->dt);
    char *out = (char *)b->buf + (size_t)chunk_lo(b, me) * es;
    for (int q = 0; q < R; q++)
        r->src[q] = q == me ? out : (char *)b->slot + (size_t)(q - (q > me)) * (size_t)m * es;
    reducer_sum(b->dt, out, r->src, m, R, r->o.average);
}

static int make_requests(bucket *b, int bi, int phase, void *buf, MPI_Request *q);

/* Requests of phase (0 reduce, 1 gather) over buf: made on the first
 * step, or again when that buffer changed. */
static void bind_phase(dist_reducer *r, bucket *b, int phase, void *buf)
{
    const int k = 2 * (dist_w.size - 1);
    if (buf == b->bound[phase] || dist_w.size == 1)
        return;
    for (int i = 0; b->bound[phase] && i < k; i++)
        MPI_Request_free(&b->req[phase * k + i]);
    b->bound[phase] = buf;
    mpi_check(r, "MPI_Send_init/MPI_Recv_init",
              make_requests(b, (int)(b - r->b), phase, buf, b->req + phase * k));
}

/* The buffers of this step: the lone gradient (else pack) for the reduce,
 * the same for the gather, or with update the lone parameter (else pack). */
static void bind(dist_reducer *r, bucket *b)
{
    ag_tensor *g = b->count == 1 ? ag_grad(r->param[b->first]) : NULL;
    b->buf = g ? ag_data(g) : b->pack;
    if (b->buf == b->pack)
        pack(r, b, C_GRADS);
    b->gbuf = !r->o.update ? b->buf : b->count == 1 ? ag_data(r->param[b->first]) : b->pack;
    bind_phase(r, b, 0, b->buf);
    bind_phase(r, b, 1, b->gbuf);
}

static void start(dist_reducer *r, bucket *b)
{
    if (r->next_start == 0)
        r->t_first = MPI_Wtime();
    if (r->node) {
        reducer_node_start(r, b);
        return;
    }
    bind(r, b);
    if (dist_w.size == 1) { /* the sum of one rank's gradients: as they are */
        b->state = B_DONE;
        return;
    }
    mpi_check(r, "MPI_Startall", MPI_Startall(2 * (dist_w.size - 1), b->req));
    b->state = B_REDUCE;
}

/* The gather of b's summed chunk (or, with update, of its parameters'
 * updated chunk). */
static void start_gather(dist_reducer *r, bucket *b)
{
    const int k = 2 * (dist_w.size - 1);
    if (r->o.update && b->gbuf == b->pack)
        pack(r, b, C_PARAMS);
    mpi_check(r, "MPI_Startall", MPI_Startall(k, b->req + k));
    b->state = B_GATHER;
}

/* Moves b on by one phase when its messages are done (block: wait for them). */
static void advance(dist_reducer *r, bucket *b, bool block)
{
    if (r->node) {
        reducer_node_advance(r, b, block);
        return;
    }
    const int k = 2 * (dist_w.size - 1);
    MPI_Request *req = b->state == B_REDUCE ? b->req : b->req + k;
    int done = 1;
    if (block)
        mpi_check(r, "MPI_Waitall", dist_wait_all(k, req));
    else
        mpi_check(r, "MPI_Testall", MPI_Testall(k, req, &done, MPI_STATUSES_IGNORE));
    if (!done)
        return;
    if (b->state == B_REDUCE) {
        sum_chunk(r, b);
        b->state = B_SUMMED;
        if (!r->o.update)
            start_gather(r, b);
        else if (b->buf == b->pack) /* the optimizer reads the sums there */
            unpack(r, b, C_GRADS);
    } else {
        if (b->gbuf == b->pack)
            unpack(r, b, r->o.update ? C_PARAMS : C_GRADS);
        b->state = B_DONE;
    }
}

/* Starts the buckets whose parameters are all ready, in bucket order (a
 * bucket that is ready early waits for the ones before it, so every rank
 * starts them in the same order), then moves those in flight on. */
static void start_ready(dist_reducer *r)
{
    while (r->next_start < r->nb && r->b[r->next_start].pending == 0)
        start(r, &r->b[r->next_start++]);
    for (int i = 0; i < r->next_start; i++)
        if (r->b[i].state == B_REDUCE || r->b[i].state == B_GATHER)
            advance(r, &r->b[i], false);
}

static int cmp_addr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const by_addr *)a)->t, y = (uintptr_t)((const by_addr *)b)->t;
    return x < y ? -1 : x > y;
}

/* The gradient-ready hook. */
static void on_ready(ag_tensor *const *leaves, int n, void *ctx)
{
    dist_reducer *r = ctx;
    for (int i = 0; i < n; i++) {
        by_addr key = {leaves[i], 0};
        const by_addr *hit = bsearch(&key, r->addr, (size_t)r->n, sizeof key, cmp_addr);
        if (!hit || r->ready_step[hit->i] == r->step)
            continue;
        r->ready_step[hit->i] = r->step;
        r->b[r->bucket_of[hit->i]].pending--;
    }
    start_ready(r);
}

/* ---- the public calls ---- */

ag_status dist_reducer_begin(dist_reducer *r, ag_tape *tape)
{
    if (!r || !tape) {
        ag_set_last_error("dist_reducer_begin: %s is NULL", !r ? "r" : "tape");
        return AG_ERR_ARG;
    }
    if (r->begun) {
        ag_set_last_error("dist_reducer_begin: a step is already begun (call "
                          "dist_reducer_wait first)");
        return AG_ERR_STATE;
    }
    r->begun = true;
    r->begins++;
    r->hooked = !(r->o.probe_every > 0 && r->begins % r->o.probe_every == 0);
    r->tape = tape;
    if (r->hooked)
        ag_tape_set_grad_ready(tape, on_ready, r);
    return AG_OK;
}

/* With update: the optimizer over this rank's chunks (the sums are in the
 * gradient buffers there), then every bucket's gather of the parameters.
 * A failed update still gathers, so that no rank is left waiting. */
static void sharded_update(dist_reducer *r)
{
    double t0 = MPI_Wtime();
    ag_status st = r->o.update(r->o.update_ctx, r->own_lo, r->own_hi);
    r->update_s = MPI_Wtime() - t0;
    if (st != AG_OK)
        keep_error(r, st);
    if (r->node) {
        reducer_node_updated(r);
        return;
    }
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].state == B_SUMMED)
            start_gather(r, &r->b[i]);
}

/* Back to the start of a step: every bucket idle and waiting for all of
 * its parameters. */
static void step_reset(dist_reducer *r)
{
    for (int i = 0; i < r->nb; i++) {
        r->b[i].state = B_IDLE;
        r->b[i].pending = r->b[i].count;
    }
    r->next_start = 0;
    r->early = 0;
    r->update_s = 0;
    r->err = AG_OK;
    r->step++;
    r->begun = r->hooked = false;
    r->tape = NULL;
}

static void count_step(dist_reducer *r, double t_wait, double t_end)
{
    r->st.update_s += r->update_s;
    t_end -= r->update_s; /* the exchange's cost, not the optimizer's */
    if (r->hooked) {
        r->st.steps++;
        r->st.early += r->early;
        r->st.wait_s += t_end - t_wait;
        r->st.flight_s += r->early ? t_wait - r->t_first : 0.0;
    } else {
        r->st.probe_steps++;
        r->st.probe_wait_s += t_end - t_wait;
    }
}

ag_status dist_reducer_wait(dist_reducer *r)
{
    if (!r) {
        ag_set_last_error("dist_reducer_wait: r is NULL");
        return AG_ERR_ARG;
    }
    double t0 = MPI_Wtime();
    if (r->hooked)
        ag_tape_set_grad_ready(r->tape, NULL, NULL);
    r->early = r->next_start;
    while (r->next_start < r->nb)
        start(r, &r->b[r->next_start++]);
    /* every reduce phase first (without update each bucket's gather starts
     * as its reduce ends, so gathers run while later reduces are waited
     * for), then with update the optimizer's step on this rank's chunks and
     * the gathers of the updated parameters, then the gathers */
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].state == B_REDUCE)
            advance(r, &r->b[i], true);
    if (r->o.update)
        sharded_update(r);
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].state == B_GATHER)
            advance(r, &r->b[i], true);
    if (r->node)
        reducer_node_finish(r);
    for (int k = 0; r->o.update && k < r->n; k++)
        ag_tensor_mark_modified(r->param[k]);
    count_step(r, t0, MPI_Wtime());
    ag_status st = r->err;
    step_reset(r);
    return st;
}

/* dist_reducer_gather's local checks: t[k] like params[k]. */
static ag_status check_given(const char *fn, const dist_reducer *r, ag_tensor *const *t)
{
    ag_status st = dist_check_tensors(fn, "t", t, r->n);
    for (int c = 0; st == AG_OK && c < r->n; c++) {
        const ag_tensor *p = r->param[r->n - 1 - c];
        bool same = ag_dtype_of(t[c]) == ag_dtype_of(p) && ag_ndim(t[c]) == ag_ndim(p);
        for (int d = 0; same && d < ag_ndim(p); d++)
            same = ag_shape(t[c])[d] == ag_shape(p)[d];
        if (!same) {
            ag_set_last_error("%s: t[%d] differs from params[%d] in shape or dtype", fn, c, c);
            st = AG_ERR_ARG;
        }
    }
    return st;
}

/* Every rank's chunk of bucket b's buf to every other rank, blocking
 * (the gather's tag: no step is in flight), with the third third of b's
 * request slots. */
static int gather_now(bucket *b, int bi, void *buf)
{
    const int k = 2 * (dist_w.size - 1);
    MPI_Request *req = b->req + 2 * k;
    int rc = make_requests(b, bi, 1, buf, req);
    if (!rc)
        rc = MPI_Startall(k, req);
    if (!rc)
        rc = dist_wait_all(k, req);
    for (int i = 0; i < k; i++)
        if (req[i] != MPI_REQUEST_NULL)
            MPI_Request_free(&req[i]);
    return rc;
}

ag_status dist_reducer_gather(dist_reducer *r, ag_tensor *const *t)
{
    const char *fn = "dist_reducer_gather";
    ag_status st = AG_OK;
    if (!r || !t) {
        ag_set_last_error("%s: %s is NULL", fn, !r ? "r" : "t");
        st = AG_ERR_ARG;
    } else if (!r->o.update || r->begun) {
        ag_set_last_error("%s: %s", fn, r->begun ? "a step is begun (call dist_reducer_wait "
                                                   "first)"
                                                 : "the reducer has no opts.update: every rank "
                                                   "holds every element already");
        st = AG_ERR_STATE;
    } else {
        st = check_given(fn, r, t);
    }
    st = dist_agree(fn, 0, st == AG_OK, st, "tensors");
    if (st != AG_OK || dist_w.size == 1)
        return st;
    r->given = t;
    int rc = MPI_SUCCESS;
    for (int i = 0; i < r->nb && !rc; i++) {
        bucket *b = &r->b[i];
        bool lone = b->count == 1;
        if (!lone)
            pack(r, b, C_GIVEN);
        rc = gather_now(b, i, lone ? ag_data(t[r->n - 1 - b->first]) : b->pack);
        if (!rc && !lone)
            unpack(r, b, C_GIVEN);
    }
    r->given = NULL;
    for (int c = 0; c < r->n; c++)
        ag_tensor_mark_modified(t[c]);
    return rc ? dist_mpi_fail(fn, "MPI_Startall/MPI_Waitall", rc) : AG_OK;
}

dist_reducer_stats dist_reducer_stats_get(const dist_reducer *r)
{
    if (!r) {
        ag_set_last_error("dist_reducer_stats_get: r is NULL");
        return (dist_reducer_stats){0};
    }
    return r->st;
}

/* ---- construction ---- */

/* Buckets over the parameters in reducer order: one closes before a
 * parameter that would take it past cap bytes, or of another dtype. */
static int plan_buckets(dist_reducer *r, size_t cap, bucket *b)
{
    int nb = 0;
    size_t bytes = 0;
    ag_dtype cur = AG_F32;
    for (int k = 0; k < r->n; k++) {
        ag_dtype dt = ag_dtype_of(r->param[k]);
        size_t pb = (size_t)ag_numel(r->param[k]) * ag_dtype_size(dt);
        if (nb == 0 || dt != cur || bytes + pb > cap) {
            if (b)
                b[nb] = (bucket){.first = k, .dt = dt};
            nb++;
            bytes = 0;
            cur = dt;
        }
        bytes += pb;
        if (b) {
            r->boff[k] = b[nb - 1].n;
            b[nb - 1].count++;
            b[nb - 1].n += ag_numel(r->param[k]);
            r->bucket_of[k] = nb - 1;
        }
    }
    return nb;
}

/* The persistent requests of phase (0 reduce, 1 gather) of bucket number
 * bi over buf (tag 2 bi + phase), into q[0, 2 ). */
static int make_requests(bucket *b, int bi, int phase, void *buf, MPI_Request *q)
{
    const int me = dist_w.rank, R = dist_w.size;
    const size_t es = ag_dtype_size(b->dt);
    const int m = (int)chunk_len(b, me);
    MPI_Datatype T = dist_mpi_type(b->dt);
    char *pk = buf, *sl = b->slot;
    const int tag = 2 * bi + phase;
    int rc = MPI_SUCCESS;
    for (int p = 0; p < R && !rc; p++)
        if (p != me)
            rc = phase == 0 ? MPI_Send_init(pk + (size_t)chunk_lo(b, p) * es,
                                            (int)chunk_len(b, p), T, p, tag, dist_w.comm, q++)
                            : MPI_Send_init(pk + (size_t)chunk_lo(b, me) * es, m, T, p, tag,
                                            dist_w.comm, q++);
    for (int p = 0; p < R && !rc; p++)
        if (p != me)
            rc = phase == 0 ? MPI_Recv_init(sl + (size_t)(p - (p > me)) * (size_t)m * es, m,
                                            T, p, tag, dist_w.comm, q++)
                            : MPI_Recv_init(pk + (size_t)chunk_lo(b, p) * es,
                                            (int)chunk_len(b, p), T, p, tag, dist_w.comm, q++);
    return rc;
}

/* own_lo/own_hi: per parameter (caller's order), the part of it inside
 * this rank's chunk of its bucket. */
static void plan_ownership(dist_reducer *r)
{
    const int me = dist_w.rank;
    for (int i = 0; i < r->nb; i++) {
        const bucket *b = &r->b[i];
        int64_t lo = chunk_lo(b, me), hi = chunk_lo(b, me + 1), off = 0;
        for (int k = b->first; k < b->first + b->count; k++) {
            int64_t n = ag_numel(r->param[k]), c = r->n - 1 - k;
            r->own_lo[c] = lo - off < 0 ? 0 : lo - off > n ? n : lo - off;
            r->own_hi[c] = hi - off < r->own_lo[c] ? r->own_lo[c] : hi - off > n ? n : hi - off;
            off += n;
        }
    }
}

/* Buffers and request slots of every bucket; false on no memory. */
static bool alloc_buckets(dist_reducer *r)
{
    const int R = dist_w.size;
    for (int i = 0; i < r->nb; i++) {
        bucket *b = &r->b[i];
        size_t es = ag_dtype_size(b->dt);
        b->pack = ag_mem_alloc((size_t)b->n * es);
        size_t slots = (size_t)(R - 1) * (size_t)chunk_len(b, dist_w.rank);
        b->slot = ag_mem_alloc(slots * es + 1);
        b->req = ag_mem_alloc(6 * (size_t)R * sizeof *b->req);
        if (!b->pack || !b->slot || !b->req)
            return false;
        for (int k = 0; k < 6 * R; k++)
            b->req[k] = MPI_REQUEST_NULL;
        b->pending = b->count;
    }
    return true;
}

/* Local checks beyond dist_check_tensors: requires grad, each once. */
static ag_status check_params(const char *fn, dist_reducer *r)
{
    for (int k = 0; k < r->n; k++)
        if (!ag_requires_grad(r->param[k])) {
            ag_set_last_error("%s: params[%d] does not require grad", fn, r->n - 1 - k);
            return AG_ERR_ARG;
        }
    for (int k = 0; k + 1 < r->n; k++)
        if (r->addr[k].t == r->addr[k + 1].t) {
            ag_set_last_error("%s: params[%d] and params[%d] are the same tensor", fn,
                              r->n - 1 - r->addr[k].i, r->n - 1 - r->addr[k + 1].i);
            return AG_ERR_ARG;
        }
    return AG_OK;
}

/* Sizes MPI can carry: a bucket's elements and its tags. */
static ag_status check_limits(const char *fn, const dist_reducer *r)
{
    int *tag_ub = NULL, flag = 0;
    MPI_Comm_get_attr(dist_w.comm, MPI_TAG_UB, &tag_ub, &flag);
    if (flag && tag_ub && 2 * (int64_t)r->nb + 1 > *tag_ub) {
        ag_set_last_error("%s: %d buckets need tags up to %lld, MPI allows %d: raise "
                          "bucket_bytes", fn, r->nb, 2 * (long long)r->nb + 1, *tag_ub);
        return AG_ERR_ARG;
    }
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].n > INT_MAX) {
            ag_set_last_error("%s: a bucket of %lld elements (parameter %d of it) is more than "
                              "MPI's INT_MAX per message", fn, (long long)r->b[i].n,
                              r->n - 1 - r->b[i].first);
            return AG_ERR_ARG;
        }
    return AG_OK;
}

/* Everything local: arrays, buckets, buffers; then the checks. */
static ag_status build(const char *fn, dist_reducer *r, ag_tensor *const *params)
{
    r->param = ag_mem_alloc((size_t)r->n * sizeof *r->param + 1);
    r->bucket_of = ag_mem_alloc((size_t)r->n * sizeof *r->bucket_of + 1);
    r->ready_step = ag_mem_calloc((size_t)r->n * sizeof *r->ready_step + 1);
    r->addr = ag_mem_alloc((size_t)r->n * sizeof *r->addr + 1);
    r->own_lo = ag_mem_alloc((size_t)r->n * sizeof *r->own_lo + 1);
    r->own_hi = ag_mem_alloc((size_t)r->n * sizeof *r->own_hi + 1);
    r->boff = ag_mem_alloc((size_t)r->n * sizeof *r->boff + 1);
    r->goff = ag_mem_alloc((size_t)r->n * sizeof *r->goff + 1);
    r->poff = ag_mem_alloc((size_t)r->n * sizeof *r->poff + 1);
    r->src = ag_mem_alloc((size_t)dist_w.size * sizeof *r->src);
    if (!r->param || !r->bucket_of || !r->ready_step || !r->addr || !r->own_lo ||
        !r->own_hi || !r->boff || !r->goff || !r->poff || !r->src)
        goto nomem;
    for (int k = 0; k < r->n; k++) {
        r->param[k] = params[r->n - 1 - k];
        r->addr[k] = (by_addr){r->param[k], k};
    }
    qsort(r->addr, (size_t)r->n, sizeof *r->addr, cmp_addr);
    ag_status st = check_params(fn, r);
    if (st != AG_OK)
        return st;
    size_t cap = r->o.bucket_bytes ? r->o.bucket_bytes : DIST_BUCKET_BYTES;
    r->nb = plan_buckets(r, cap, NULL);
    if (!(r->b = ag_mem_calloc((size_t)r->nb * sizeof *r->b + 1)))
        goto nomem;
    plan_buckets(r, cap, r->b);
    r->st.buckets = r->nb;
    for (int k = 0; k < r->n; k++)
        r->st.bytes += ag_numel(r->param[k]) * (int64_t)ag_dtype_size(ag_dtype_of(r->param[k]));
    if ((st = check_limits(fn, r)) != AG_OK)
        return st;
    if (!alloc_buckets(r))
        goto nomem;
    plan_ownership(r);
    return AG_OK;
nomem:
    ag_set_last_error("%s: out of memory", fn);
    return AG_ERR_NOMEM;
}

dist_reducer *dist_reducer_new(ag_tensor *const *params, int n, const dist_reducer_opts *opts)
{
    const char *fn = "dist_reducer_new";
    if (!dist_check_up(fn))
        return NULL;
    dist_reducer *r = ag_mem_calloc(sizeof *r);
    ag_status st = r ? dist_check_tensors(fn, "params", params, n) : AG_ERR_NOMEM;
    if (!r)
        ag_set_last_error("%s: out of memory", fn);
    if (st == AG_OK && opts && opts->probe_every < 0) {
        ag_set_last_error("%s: opts->probe_every is %d (0: never, N > 0: every Nth step)", fn,
                          opts->probe_every);
        st = AG_ERR_ARG;
    }
    if (st == AG_OK) {
        r->o = opts ? *opts : (dist_reducer_opts){0};
        r->n = n;
        r->step = 1;
        st = build(fn, r, params);
    }
    uint64_t sig = 0;
    if (st == AG_OK) {
        sig = dist_sig_mix(dist_layout_sig(params, n), r->o.bucket_bytes);
        sig = dist_sig_mix(sig, (uint64_t)r->o.average);
        sig = dist_sig_mix(sig, (uint64_t)r->o.probe_every);
        sig = dist_sig_mix(sig, (uint64_t)(r->o.update != NULL));
        sig = dist_sig_mix(sig, (uint64_t)r->o.no_shared_memory);
    }
    st = dist_agree(fn, sig, st == AG_OK, st, "parameter lists or reducer options");
    if (st != AG_OK) {
        dist_reducer_free(r);
        return NULL;
    }
    reducer_node_setup(r);
    return r;
}

void dist_reducer_free(dist_reducer *r)
{
    if (!r)
        return;
    reducer_node_release(r);
    for (int i = 0; r->b && i < r->nb; i++) {
        bucket *b = &r->b[i];
        for (int k = 0; dist_w.up && b->req && k < 6 * dist_w.size; k++)
            if (b->req[k] != MPI_REQUEST_NULL)
                MPI_Request_free(&b->req[k]);
        ag_mem_free(b->pack);
        ag_mem_free(b->slot);
        ag_mem_free(b->req);
    }
    ag_mem_free(r->b);
    ag_mem_free(r->param);
    ag_mem_free(r->bucket_of);
    ag_mem_free(r->ready_step);
    ag_mem_free(r->addr);
    ag_mem_free(r->own_lo);
    ag_mem_free(r->own_hi);
    ag_mem_free(r->boff);
    ag_mem_free(r->goff);
    ag_mem_free(r->poff);
    ag_mem_free(r->src);
    ag_mem_free(r);
}
