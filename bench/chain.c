/* chain.c — per-op overhead on one-element tensors: the 1000-step chain
 * y = tanh(y * 1.0001 + 0.1), forward + backward, in ns per op (3 ops per
 * step).  Prints one line: "chain_ns_per_op <median>".
 * Usage: bench_chain [repeats] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench_util.h"
#include "autograd.h"

#define STEPS 1000

static double now_ns(void) { return 1e9 * bench_seconds(CLOCK_MONOTONIC); }

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 200;
    if (repeats < 1 || repeats > 100000)
        repeats = 200;
    double *t = malloc((size_t)repeats * sizeof *t);
    ag_tensor *y0 = ag_tensor_full(AG_F32, 1, (int64_t[]){1}, 0.5);
    ag_set_requires_grad(y0, true);
    ag_tape *tape = ag_tape_new();
    double grad = 0;
    for (int r = -5; r < repeats; r++) { /* 5 warm-up runs grow the arena */
        double t0 = now_ns();
        ag_tensor *y = y0;
        for (int i = 0; i < STEPS; i++)
            y = ag_tanh(tape, ag_add_scalar(tape, ag_mul_scalar(tape, y, 1.0001), 0.1));
        if (ag_backward(tape, y) != AG_OK) {
            fprintf(stderr, "bench_chain: %s\n", ag_tape_error(tape));
            return 1;
        }
        grad = ag_get(ag_grad(y0), 0);
        ag_zero_grad(y0);
        ag_tape_reset(tape);
        if (r >= 0)
            t[r] = (now_ns() - t0) / (3.0 * STEPS);
    }
    qsort(t, (size_t)repeats, sizeof *t, bench_cmp);
    printf("chain_ns_per_op %.2f\n", t[repeats / 2]);
    fprintf(stderr, "(dy/dy0 = %g, %d repeats)\n", grad, repeats);
    ag_tape_free(tape);
    ag_tensor_free(y0);
    free(t);
    return 0;
}
