/* regression.c — a custom model against the tensor API: fit y = 3x - 1
 * plus noise with a weight w and a bias b, by gradient descent on the mean
 * squared error.  README.md shows this file; a test keeps the two equal.
 * Expected output: w and b close to 3 and -1. */
#include <stdio.h>
#include <tapegrad.h>

int main(void) {                       /* fit y = 3x - 1 + noise with w, b */
    ag_rng rng;  ag_rng_seed(&rng, 1);
    int64_t n = 256, xs[] = {n, 1}, ps[] = {1, 1};
    ag_tensor *x = ag_tensor_uniform(AG_F32, 2, xs, -1, 1, &rng);
    ag_tensor *y = ag_tensor_normal(AG_F32, 2, xs, 0, 0.05, &rng);
    for (int64_t i = 0; i < n; i++) ag_set(y, i, ag_get(y, i) + 3 * ag_get(x, i) - 1);
    ag_tensor *w = ag_tensor_normal(AG_F32, 2, ps, 0, 1, &rng), *b = ag_tensor_new(AG_F32, 1, ps);
    ag_set_requires_grad(w, true);  ag_set_requires_grad(b, true);
    ag_tensor *params[] = {w, b};
    optim *opt = optim_sgd(params, 2, (optim_sgd_opts){.lr = 0.1});
    ag_tape *tape = ag_tape_new();
    for (int step = 0; step < 200; step++) {
        ag_tensor *err = ag_sub(tape, ag_add(tape, ag_matmul(tape, x, w), b), y);
        ag_tensor *loss = ag_mean(tape, ag_mul(tape, err, err), AG_ALL, false);
        if (ag_backward(tape, loss) != AG_OK) { fprintf(stderr, "%s\n", ag_tape_error(tape)); return 1; }
        optim_step(opt);  optim_zero_grad(opt);  ag_tape_reset(tape);
    }
    printf("w = %.3f  b = %.3f\n", ag_get(w, 0), ag_get(b, 0));
    ag_tape_free(tape);  optim_free(opt);  ag_tensor_free(x);  ag_tensor_free(y);  ag_tensor_free(w);  ag_tensor_free(b);
}
