/* gradcheck_custom.c — checking the gradient of functions you write
 * yourself with ag_gradcheck: each analytic derivative (from the tape) is
 * compared with a central finite difference, PyTorch's rule
 * |analytic - numeric| <= atol + rtol * |numeric|.
 *
 *   1. f(x, y) = sum(tanh(x) * y^2)           a scalar of two inputs
 *   2. g(x)    = x / sqrt(sum(x^2) + 1)        a vector: the full Jacobian
 *   3. h(x)    = sum(relu(x)) at a point with x = 0: the kink makes the check
 *      fail, which is what a real gradient bug looks like in the report.
 * Exit status 0 when 1 and 2 pass and 3 fails, as expected. */
#include <stdio.h>

#include <tapegrad.h>

static ag_tensor *f(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    return ag_sum(t, ag_mul(t, ag_tanh(t, in[0]), ag_pow_scalar(t, in[1], 2)), AG_ALL, false);
}

static ag_tensor *g(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    ag_tensor *sq = ag_sum(t, ag_mul(t, in[0], in[0]), AG_ALL, false);
    return ag_div(t, in[0], ag_sqrt(t, ag_add_scalar(t, sq, 1.0)));
}

static ag_tensor *h(ag_tape *t, ag_tensor **in, void *ctx)
{
    (void)ctx;
    return ag_sum(t, ag_relu(t, in[0]), AG_ALL, false);
}

/* Runs one check and prints its report; returns whether it passed. */
static bool check(const char *what, ag_gradcheck_fn fn, ag_tensor **in, int n)
{
    ag_gradcheck_opts opts = {.rtol = 1e-6, .atol = 1e-8};
    ag_gradcheck_report r;
    ag_status st = ag_gradcheck(fn, NULL, in, n, &opts, &r);
    printf("%s\n  %s\n", what, r.message);
    if (st != AG_OK && st != AG_ERR_GRADIENT)
        printf("  (the function itself failed: %s)\n", ag_status_str(st));
    return st == AG_OK;
}

int main(void)
{
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    const int64_t shape[] = {2, 3};
    ag_tensor *x = ag_tensor_normal(AG_F64, 2, shape, 0, 1, &rng);     /* f64 inputs */
    ag_tensor *y = ag_tensor_normal(AG_F64, 2, shape, 0, 1, &rng);
    ag_tensor *z = ag_tensor_from_f64(1, (const int64_t[]){4}, (const double[]){0.5, -1, 0, 2});
    ag_set_requires_grad(x, true);                         /* these are checked */
    ag_set_requires_grad(y, true);
    ag_set_requires_grad(z, true);

    bool ok_f = check("f(x, y) = sum(tanh(x) * y^2):", f, (ag_tensor *[]){x, y}, 2);
    bool ok_g = check("g(x) = x / sqrt(sum(x^2) + 1), full Jacobian:", g, (ag_tensor *[]){x}, 1);
    bool ok_h = check("h(x) = sum(relu(x)) at x = [0.5, -1, 0, 2] (expected to fail at x = 0):", h,
                      (ag_tensor *[]){z}, 1);
    ag_tensor_free(x);
    ag_tensor_free(y);
    ag_tensor_free(z);
    bool as_expected = ok_f && ok_g && !ok_h;
    printf("%s\n", as_expected ? "all as expected" : "UNEXPECTED RESULT");
    return as_expected ? 0 : 1;
}
