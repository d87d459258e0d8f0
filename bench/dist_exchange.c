/* bench/dist_exchange.c — what one gradient exchange of the MLP costs with
 * nothing to hide it: dist_reducer_wait on 784-256-128-10's gradients
 * (235,146 floats, default buckets), the same with the optimizer step
 * sharded (opts.update, Adam; the exchange carries parameters back), both
 * through the default transport (shared memory on one machine) and over
 * MPI messages (opts.no_shared_memory), a plain MPI_Allreduce of as many
 * floats, and a dist_sum_f64 of two values (the trainer's per-step loss
 * and count), every rank calling them back to back.  Median microseconds
 * per exchange over `rounds` rounds of `reps`.
 *
 *   mpirun -np 2 build-release/bench/bench_dist_exchange [reps] [rounds]
 *
 * Rank 0 prints.  Never fails on a timing. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "dist.h"
#include "optim.h"

#include "bench_util.h"

enum { NP = 6, ROUNDS_MAX = 64 };

static ag_status adam_part(void *ctx, const int64_t *lo, const int64_t *hi)
{
    return optim_step_parts(ctx, lo, hi);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The MLP's parameters (forward order), each with a gradient buffer. */
static void make_params(ag_tensor **p, int64_t *total)
{
    static const int64_t shape[NP][2] = {{256, 784}, {256, 1}, {128, 256},
                                         {128, 1},   {10, 128}, {10, 1}};
    ag_tape *t = ag_tape_new();
    *total = 0;
    for (int k = 0; k < NP; k++) {
        p[k] = ag_tensor_new(AG_F32, shape[k][1] == 1 ? 1 : 2, shape[k]);
        ag_set_requires_grad(p[k], true);
        ag_backward(t, ag_sum(t, p[k], AG_ALL, false));
        ag_tape_reset(t);
        *total += ag_numel(p[k]);
    }
    ag_tape_free(t);
}

/* Microseconds per call, reps calls a round, median of rounds. */
#define TIME(label, call)                                                          \
    do {                                                                           \
        double us[ROUNDS_MAX];                                                     \
        for (int q = 0; q < rounds; q++) {                                         \
            MPI_Barrier(MPI_COMM_WORLD);                                           \
            double t0 = MPI_Wtime();                                               \
            for (int i = 0; i < reps; i++)                                         \
                call;                                                              \
            us[q] = (MPI_Wtime() - t0) / reps * 1e6;                               \
        }                                                                          \
        if (dist_rank() == 0)                                                      \
            printf("%-40s %9.1f us\n", label, median(us, rounds));                 \
    } while (0)

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 200, rounds = argc > 2 ? atoi(argv[2]) : 5;
    reps = reps < 1 ? 1 : reps;
    rounds = rounds < 1 ? 1 : rounds > ROUNDS_MAX ? ROUNDS_MAX : rounds;
    if (dist_init(&argc, &argv) != AG_OK) {
        fprintf(stderr, "bench_dist_exchange: %s\n", ag_last_error());
        return 1;
    }
    ag_tensor *p[NP];
    int64_t n;
    make_params(p, &n);
    optim *opt = optim_adam(p, NP, (optim_adam_opts){0});
    dist_reducer *plain = dist_reducer_new(p, NP, NULL);
    dist_reducer *zero = dist_reducer_new(
        p, NP, &(dist_reducer_opts){.update = adam_part, .update_ctx = opt});
    dist_reducer *plain_msg = dist_reducer_new(p, NP, &(dist_reducer_opts){.no_shared_memory = 1});
    dist_reducer *zero_msg = dist_reducer_new(
        p, NP, &(dist_reducer_opts){.update = adam_part, .update_ctx = opt, .no_shared_memory = 1});
    float *a = calloc((size_t)n, sizeof *a), *b = calloc((size_t)n, sizeof *b);
    if (!opt || !plain || !zero || !plain_msg || !zero_msg || !a || !b) {
        fprintf(stderr, "bench_dist_exchange: %s\n", ag_last_error());
        return 1;
    }
    dist_reducer_stats st = dist_reducer_stats_get(plain);
    if (dist_rank() == 0)
        printf("# %d ranks, %lld floats, %d buckets, median of %d rounds of %d; default "
               "transport: %s\n", dist_size(), (long long)n, st.buckets, rounds, reps,
               st.shared_memory ? "shared memory" : "messages");
    TIME("dist_reducer_wait (sums)", dist_reducer_wait(plain));
    TIME("dist_reducer_wait (sharded Adam step)", dist_reducer_wait(zero));
    TIME("dist_reducer_wait (sums, messages)", dist_reducer_wait(plain_msg));
    TIME("dist_reducer_wait (sharded Adam, messages)", dist_reducer_wait(zero_msg));
    TIME("optim_step (the whole Adam step, alone)", optim_step(opt));
    TIME("MPI_Allreduce", MPI_Allreduce(a, b, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    double v2[2] = {1, 2};
    TIME("dist_sum_f64 of 2 values (a loss, a count)", dist_sum_f64(v2, 2));
    dist_reducer_free(plain);
    dist_reducer_free(zero);
    dist_reducer_free(plain_msg);
    dist_reducer_free(zero_msg);
    optim_free(opt);
    for (int k = 0; k < NP; k++)
        ag_tensor_free(p[k]);
    free(a);
    free(b);
    return dist_finalize() == AG_OK ? 0 : 1;
}
