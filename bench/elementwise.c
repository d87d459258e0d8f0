/* elementwise.c — nanoseconds per element of each transcendental op,
 * forward only, f32, on a tensor of N elements (default 2^20) spread over
 * the op's useful range, one thread, median of R timed calls after a
 * warm-up, each timed in the thread's CPU time (a call preempted by
 * another process on a shared machine is not charged for the wait); the
 * ops run as a user calls them (ag_exp on a tape with grad off, reset
 * after each call, so the arena is reused).  The same ops,
 * ranges and format as bench/peers/elementwise_torch.py: prints
 * "ew_<op>_ns <ns per element>" per op, and the vmath code path.
 * Usage: bench_elementwise [N] [R] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench_util.h"
#include "autograd.h"
#include "kernels/vmath.h"

static double cpu_s(void) { return bench_seconds(CLOCK_THREAD_CPUTIME_ID); }

static ag_tensor *op_pow_scalar(ag_tape *t, ag_tensor *x) { return ag_pow_scalar(t, x, 2.5); }
static ag_tensor *op_pow(ag_tape *t, ag_tensor *x) { return ag_pow(t, x, x); }

static const struct {
    const char *name;
    double lo, hi;
    ag_tensor *(*fn)(ag_tape *, ag_tensor *);
} k_ops[] = {
    {"exp", -10, 10, ag_exp},           {"log", 0.01, 100, ag_log},
    {"tanh", -5, 5, ag_tanh},           {"sigmoid", -10, 10, ag_sigmoid},
    {"erf", -3, 3, ag_erf},             {"gelu", -5, 5, ag_gelu},
    {"gelu_tanh", -5, 5, ag_gelu_tanh}, {"softplus", -10, 10, ag_softplus},
    {"sin", -10, 10, ag_sin},           {"cos", -10, 10, ag_cos},
    {"pow_scalar", 0.01, 10, op_pow_scalar}, {"pow", 0.01, 10, op_pow},
};

int main(int argc, char **argv)
{
    int64_t n = argc > 1 ? atoll(argv[1]) : 1 << 20;
    int reps = argc > 2 ? atoi(argv[2]) : 21;
    if (n < 1 || n > (1 << 28))
        n = 1 << 20;
    if (reps < 1 || reps > 10000)
        reps = 21;
    ag_set_num_threads(1);
    double *t = malloc((size_t)reps * sizeof *t);
    float *v = malloc((size_t)n * sizeof *v);
    ag_tape *tape = ag_tape_new();
    if (!t || !v || !tape)
        return 1;
    ag_tape_set_grad_enabled(tape, false);
    for (size_t k = 0; k < sizeof k_ops / sizeof k_ops[0]; k++) {
        for (int64_t i = 0; i < n; i++)
            v[i] = (float)(k_ops[k].lo + (k_ops[k].hi - k_ops[k].lo) * (double)i /
                                             (double)(n > 1 ? n - 1 : 1));
        ag_tensor *x = ag_tensor_from_f32(1, &n, v);
        for (int r = -2; r < reps; r++) { /* 2 warm-up calls grow the arena */
            double t0 = cpu_s();
            if (!k_ops[k].fn(tape, x)) {
                fprintf(stderr, "bench_elementwise: %s\n", ag_tape_error(tape));
                return 1;
            }
            double dt = cpu_s() - t0;
            ag_tape_reset(tape);
            if (r >= 0)
                t[r] = dt;
        }
        qsort(t, (size_t)reps, sizeof *t, bench_cmp);
        printf("ew_%s_ns %.4f\n", k_ops[k].name, t[reps / 2] * 1e9 / (double)n);
        ag_tensor_free(x);
    }
    fprintf(stderr, "(vmath code path: %s, n = %lld, %d repeats)\n", ag_vm_arch(),
            (long long)n, reps);
    ag_tape_free(tape);
    free(v);
    free(t);
    return 0;
}
