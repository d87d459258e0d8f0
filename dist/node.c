/* node.c — memory the ranks of one machine share: each rank's region is a
 * POSIX shared-memory object it maps read-write and the other ranks map
 * read-only, so a rank reads the others' gradients and parameters where
 * they are instead of receiving a copy, and only ever writes its own.
 *
 * The objects are unlinked as soon as every rank has mapped them: nothing
 * is left in /dev/shm when a rank dies, and the memory goes when the last
 * mapping does.  posix_fallocate takes the pages up front, so a full
 * /dev/shm (a container's 64 MB default) is an error here, never a SIGBUS
 * in the middle of a step. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dist_internal.h"

enum { NAME_LEN = 64 };

struct dist_node {
    int rank, size;         /* dist_w's at open: closing may come after dist_finalize */
    size_t head, len;       /* counter bytes (a multiple of 64), whole region */
    unsigned char **map;    /* per rank; NULL where not mapped */
};

static _Atomic uint64_t *counters(const dist_node *nd, int q)
{
    return (_Atomic uint64_t *)(void *)nd->map[q];
}

void *dist_node_base(const dist_node *nd, int q) { return nd->map[q] + nd->head; }

int dist_node_rank(const dist_node *nd) { return nd->rank; }

void dist_node_publish(dist_node *nd, int f, uint64_t v)
{
    atomic_store_explicit(&counters(nd, nd->rank)[f], v, memory_order_release);
}

bool dist_node_reached(const dist_node *nd, int f, uint64_t v)
{
    for (int q = 0; q < nd->size; q++)
        if (q != nd->rank &&
            atomic_load_explicit(&counters(nd, q)[f], memory_order_acquire) < v)
            return false;
    return true;
}

void dist_node_wait(const dist_node *nd, int f, uint64_t v)
{
    double t0 = MPI_Wtime();
    long nap = DIST_NAP_START;
    while (!dist_node_reached(nd, f, v))
        dist_pause(t0, &nap);
}

void dist_node_close(dist_node *nd)
{
    if (!nd)
        return;
    for (int q = 0; nd->map && q < nd->size; q++)
        if (nd->map[q])
            munmap(nd->map[q], nd->len);
    ag_mem_free(nd->map);
    ag_mem_free(nd);
}

/* This rank's object, created, sized and mapped; its name in name. */
static bool make_own(dist_node *nd, char *name)
{
    static unsigned seq;
    snprintf(name, NAME_LEN, "/tapegrad.%ld.%u", (long)getpid(), seq++);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        ag_set_last_error("shm_open %s: %s", name, strerror(errno));
        return false;
    }
    int e = posix_fallocate(fd, 0, (off_t)nd->len);
    void *p = e ? MAP_FAILED : mmap(NULL, nd->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        ag_set_last_error("%s %s (%zu bytes): %s", e ? "posix_fallocate" : "mmap", name,
                          nd->len, strerror(e ? e : errno));
    close(fd);
    if (p == MAP_FAILED) {
        shm_unlink(name);
        return false;
    }
    nd->map[dist_w.rank] = p; /* zeros: every counter at step 0 */
    return true;
}

static bool map_peer(dist_node *nd, int q, const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    void *p = fd < 0 ? MAP_FAILED : mmap(NULL, nd->len, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        ag_set_last_error("mapping rank %d's %s: %s", q, name, strerror(errno));
    if (fd >= 0)
        close(fd);
    nd->map[q] = p == MAP_FAILED ? NULL : p;
    return nd->map[q] != NULL;
}

/* Every rank's ok, and-ed; false also when MPI fails. */
static bool all_ok(bool ok)
{
    int mine = ok, all = 0;
    return MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, dist_w.comm) == MPI_SUCCESS && all;
}

dist_node *dist_node_open(size_t bytes, int nflags)
{
    const int R = dist_w.size;
    dist_node *nd = ag_mem_calloc(sizeof *nd);
    char *names = ag_mem_calloc((size_t)R * NAME_LEN);
    bool ok = nd && names && (nd->map = ag_mem_calloc((size_t)R * sizeof *nd->map));
    if (!ok)
        ag_set_last_error("out of memory");
    if (ok) {
        nd->rank = dist_w.rank;
        nd->size = R;
        nd->head = dist_round64((size_t)nflags * sizeof(uint64_t));
        nd->len = nd->head + bytes;
        ok = make_own(nd, names + (size_t)dist_w.rank * NAME_LEN);
    }
    bool named = all_ok(ok);
    if (named && MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, names, NAME_LEN, MPI_CHAR,
                               dist_w.comm) != MPI_SUCCESS) {
        ag_set_last_error("MPI_Allgather of the region names failed");
        named = false;
    }
    for (int q = 0; named && ok && q < R; q++)
        if (q != dist_w.rank)
            ok = map_peer(nd, q, names + (size_t)q * NAME_LEN);
    bool mapped = named && all_ok(ok); /* every rank has mapped every region */
    if (nd && nd->map && nd->map[dist_w.rank])
        shm_unlink(names + (size_t)dist_w.rank * NAME_LEN);
    ag_mem_free(names);
    if (!mapped) {
        if (ok && !named)
            ag_set_last_error("another rank could not make its region");
        else if (ok)
            ag_set_last_error("another rank could not map the regions");
        dist_node_close(nd);
        return NULL;
    }
    return nd;
}
