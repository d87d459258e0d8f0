/* comm.c — the process group (init, finalize, rank, size), broadcasting
 * tensors, summing values in rank order, and the collective agreement on
 * arguments that turns a mismatch between ranks into an error on all of
 * them instead of a hang. */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist_internal.h"

dist_world dist_w;

ag_status dist_mpi_fail(const char *fn, const char *call, int rc)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        len = snprintf(msg, sizeof msg, "error %d", rc);
    ag_set_last_error("%s: %s failed: %.*s", fn, call, len, msg);
    return AG_ERR_IO;
}

bool dist_check_up(const char *fn)
{
    if (!dist_w.up)
        ag_set_last_error("%s: dist_init has not been called", fn);
    return dist_w.up;
}

MPI_Datatype dist_mpi_type(ag_dtype dt)
{
    return dt == AG_F32 ? MPI_FLOAT : dt == AG_F64 ? MPI_DOUBLE : MPI_DATATYPE_NULL;
}

/* Whether this machine runs more of comm's ranks than it has cores online
 * (mpirun --oversubscribe): then a waiting rank must sleep, not spin; and
 * whether it runs all of them (their memory can be shared). */
static int crowded(MPI_Comm comm, int size, bool *out, bool *one_node)
{
    MPI_Comm node;
    int local = 1, rc = MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    if (rc)
        return rc;
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *out = cores > 0 && local > cores;
    *one_node = local == size;
    return MPI_SUCCESS;
}

ag_status dist_init(int *argc, char ***argv)
{
    const char *fn = "dist_init";
    if ((argc == NULL) != (argv == NULL)) {
        ag_set_last_error("%s: %s is NULL but %s is not", fn, argc ? "argv" : "argc",
                          argc ? "argc" : "argv");
        return AG_ERR_ARG;
    }
    if (dist_w.up) {
        ag_set_last_error("%s: already initialised (call dist_finalize first)", fn);
        return AG_ERR_STATE;
    }
    int inited = 0, finished = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finished);
    if (finished) {
        ag_set_last_error("%s: MPI was finalized; it cannot start again", fn);
        return AG_ERR_STATE;
    }
    int rc, provided;
    if (!inited && (rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided)))
        return dist_mpi_fail(fn, "MPI_Init_thread", rc);
    dist_world w = {.own_mpi = !inited};
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &w.comm)))
        return dist_mpi_fail(fn, "MPI_Comm_dup", rc);
    MPI_Comm_set_errhandler(w.comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(w.comm, &w.rank);
    MPI_Comm_size(w.comm, &w.size);
    if ((rc = crowded(w.comm, w.size, &w.crowded, &w.one_node))) {
        MPI_Comm_free(&w.comm);
        return dist_mpi_fail(fn, "MPI_Comm_split_type", rc);
    }
    w.up = true;
    dist_w = w;
    return AG_OK;
}

ag_status dist_finalize(void)
{
    if (!dist_w.up)
        return AG_OK;
    ag_mem_free(dist_w.gather);
    int rc = MPI_Comm_free(&dist_w.comm);
    bool own = dist_w.own_mpi;
    dist_w = (dist_world){0};
    if (rc)
        return dist_mpi_fail("dist_finalize", "MPI_Comm_free", rc);
    if (own && (rc = MPI_Finalize()))
        return dist_mpi_fail("dist_finalize", "MPI_Finalize", rc);
    return AG_OK;
}

int dist_rank(void) { return dist_w.up ? dist_w.rank : 0; }
int dist_size(void) { return dist_w.up ? dist_w.size : 1; }

#define SPIN_S 100e-6
#define SLEEP_MAX_NS 200000

void dist_pause(double t0, long *nap)
{
    if (MPI_Wtime() - t0 < SPIN_S)
        return;
    if (!dist_w.crowded) {
        sched_yield();
        return;
    }
    nanosleep(&(struct timespec){0, *nap}, NULL);
    *nap = *nap * 2 < SLEEP_MAX_NS ? *nap * 2 : SLEEP_MAX_NS;
}

int dist_wait_all(int n, MPI_Request *req)
{
    int done = 0, rc;
    double t0 = MPI_Wtime();
    long nap = DIST_NAP_START;
    while (!(rc = MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE)) && !done)
        dist_pause(t0, &nap);
    return rc;
}

/* ---- agreement ---- */

ag_status dist_agree(const char *fn, uint64_t sig, bool ok, ag_status local,
                     const char *what)
{
    /* max of sig and of ~sig: both equal to our own only if every rank's
     * sig is ours; max of "refused" tells whether any rank refused */
    uint64_t mine[3] = {sig, ~sig, !ok}, all[3];
    MPI_Request req;
    int rc = MPI_Iallreduce(mine, all, 3, MPI_UINT64_T, MPI_MAX, dist_w.comm, &req);
    if (rc || (rc = dist_wait_all(1, &req)))
        return dist_mpi_fail(fn, "MPI_Iallreduce", rc);
    if (!ok)
        return local;
    if (all[2]) {
        ag_set_last_error("%s: another rank refused its arguments (see its message)", fn);
        return AG_ERR_ARG;
    }
    if (all[0] != sig || all[1] != ~sig) {
        ag_set_last_error("%s: the ranks' %s differ", fn, what);
        return AG_ERR_SHAPE;
    }
    return AG_OK;
}

uint64_t dist_sig_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15u + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdu;
}

uint64_t dist_layout_sig(ag_tensor *const *t, int n)
{
    uint64_t h = dist_sig_mix(0, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        h = dist_sig_mix(h, (uint64_t)ag_dtype_of(t[i]));
        h = dist_sig_mix(h, (uint64_t)ag_ndim(t[i]));
        for (int d = 0; d < ag_ndim(t[i]); d++)
            h = dist_sig_mix(h, (uint64_t)ag_shape(t[i])[d]);
    }
    return h;
}

ag_status dist_check_tensors(const char *fn, const char *arg, ag_tensor *const *t, int n)
{
    if (n < 0 || (n > 0 && !t)) {
        ag_set_last_error("%s: %s", fn, n < 0 ? "n is negative" : "the tensor array is NULL");
        return AG_ERR_ARG;
    }
    for (int i = 0; i < n; i++) {
        const char *why = !t[i] ? "NULL"
                          : !ag_tensor_is_persistent(t[i]) ? "a tape tensor (need persistent)"
                          : dist_mpi_type(ag_dtype_of(t[i])) == MPI_DATATYPE_NULL
                              ? "not f32 or f64" : NULL;
        if (why) {
            ag_set_last_error("%s: %s[%d] is %s", fn, arg, i, why);
            return AG_ERR_ARG;
        }
    }
    return AG_OK;
}

/* ---- broadcast and sums ---- */

/* MPI counts are ints: long tensors go in pieces. */
static int bcast_data(void *data, int64_t numel, ag_dtype dt, int root)
{
    size_t es = ag_dtype_size(dt);
    for (int64_t at = 0; at < numel; at += INT_MAX) {
        int64_t k = numel - at < INT_MAX ? numel - at : INT_MAX;
        int rc = MPI_Bcast((char *)data + (size_t)at * es, (int)k, dist_mpi_type(dt), root,
                           dist_w.comm);
        if (rc)
            return rc;
    }
    return MPI_SUCCESS;
}

ag_status dist_broadcast(ag_tensor *const *t, int n, int root)
{
    const char *fn = "dist_broadcast";
    if (!dist_check_up(fn))
        return AG_ERR_STATE;
    ag_status st = dist_check_tensors(fn, "t", t, n);
    if (st == AG_OK && (root < 0 || root >= dist_w.size)) {
        ag_set_last_error("%s: root %d is not a rank (0 to %d)", fn, root, dist_w.size - 1);
        st = AG_ERR_ARG;
    }
    /* root joins the signature: ranks naming different roots disagree */
    uint64_t sig = st == AG_OK ? dist_layout_sig(t, n) ^ (uint64_t)root : 0;
    if ((st = dist_agree(fn, sig, st == AG_OK, st, "tensor counts, shapes, dtypes or roots")))
        return st;
    for (int i = 0; i < n; i++) {
        int rc = bcast_data(ag_data(t[i]), ag_numel(t[i]), ag_dtype_of(t[i]), root);
        if (rc)
            return dist_mpi_fail(fn, "MPI_Bcast", rc);
        if (dist_w.rank != root)
            ag_tensor_mark_modified(t[i]);
    }
    return AG_OK;
}

ag_status dist_sum_f64(double *v, int n)
{
    const char *fn = "dist_sum_f64";
    if (!dist_check_up(fn))
        return AG_ERR_STATE;
    ag_status st = AG_OK;
    if (n < 0 || (n > 0 && !v)) {
        ag_set_last_error("%s: %s", fn, n < 0 ? "n is negative" : "v is NULL");
        st = AG_ERR_ARG;
    }
    int64_t need = (int64_t)dist_w.size * n;
    if (st == AG_OK && need > dist_w.gather_cap) {
        double *g = ag_mem_alloc((size_t)need * sizeof *g);
        if (!g) {
            ag_set_last_error("%s: out of memory for %lld values", fn, (long long)need);
            st = AG_ERR_NOMEM;
        } else {
            ag_mem_free(dist_w.gather);
            dist_w.gather = g;
            dist_w.gather_cap = need;
        }
    }
    if ((st = dist_agree(fn, (uint64_t)n, st == AG_OK, st, "value counts")) || n == 0)
        return st;
    MPI_Request req;
    int rc = MPI_Iallgather(v, n, MPI_DOUBLE, dist_w.gather, n, MPI_DOUBLE, dist_w.comm, &req);
    if (rc || (rc = dist_wait_all(1, &req)))
        return dist_mpi_fail(fn, "MPI_Iallgather", rc);
    for (int i = 0; i < n; i++) {
        double s = dist_w.gather[i];
        for (int r = 1; r < dist_w.size; r++)
            s += dist_w.gather[(size_t)r * (size_t)n + (size_t)i];
        v[i] = s;
    }
    return AG_OK;
}
