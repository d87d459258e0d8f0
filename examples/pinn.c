/* pinn.c — a physics-informed network: derivatives with respect to the
 * input, differentiated again.  An MLP u(x) (1-32-32-1, tanh, f64) learns
 * the solution of the boundary value problem
 *
 *     u''(x) = f(x) = -pi^2 sin(pi x)  on [0, 1],   u(0) = u(1) = 0,
 *
 * whose solution is u*(x) = sin(pi x), from the equation alone: no value
 * of u* is ever shown to it.  u'' comes from ag_gradients twice with
 * create_graph (du/dx, then d2u/dx2, both recorded on the tape), and
 * ag_backward of the loss runs through both to the weights:
 *
 *     loss = mean_i (u''(x_i) - f(x_i))^2 + BC_WEIGHT * (u(0)^2 + u(1)^2) / 2
 *
 * over POINTS collocation points x_i, minimised with Adam and a cosine
 * learning-rate schedule.  It prints the loss curve and the largest error
 * max |u - u*| on 101 equally spaced points of [0, 1].
 *
 * Usage: pinn [--steps N]   (default 6000; the smoke test runs 300)
 * Exit status 1 when the error did not fall tenfold from its starting
 * value, or, for the default run, when it is above 1e-3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#include <tapegrad.h>

#define PI 3.14159265358979323846
enum { WIDTH = 32, POINTS = 64, EVAL_POINTS = 101, DEFAULT_STEPS = 6000 };
static const double LR = 3e-3, LR_MIN = 1e-5, BC_WEIGHT = 100, TARGET = 1e-3;

static double exact(double x) { return sin(PI * x); }
static double source(double x) { return -PI * PI * sin(PI * x); }   /* f = u*'' */

/* Records the loss; also returns its two parts (one-element tape tensors). */
static ag_tensor *pinn_loss(ag_tape *t, nn_mlp *net, ag_tensor *x, ag_tensor *f,
                            ag_tensor *xb, ag_tensor **pde, ag_tensor **bc)
{
    ag_tensor *u = nn_mlp_forward(t, net, x);                       /* (POINTS, 1) */
    /* Row i of u depends on x_i alone, so d sum(u) / dx_i = u'(x_i): one
     * sweep gives u' at every point; the same trick once more gives u''. */
    ag_tensor *du, *d2u;
    if (ag_gradients(t, ag_sum(t, u, AG_ALL, false), NULL, 1, &x, &du, true) != AG_OK ||
        ag_gradients(t, ag_sum(t, du, AG_ALL, false), NULL, 1, &x, &d2u, true) != AG_OK)
        return NULL;
    ag_tensor *r = ag_sub(t, d2u, f);                               /* (POINTS, 1) */
    *pde = ag_mean(t, ag_mul(t, r, r), AG_ALL, false);
    ag_tensor *ub = nn_mlp_forward(t, net, xb);                     /* (2, 1) */
    *bc = ag_mean(t, ag_mul(t, ub, ub), AG_ALL, false);
    return ag_add(t, *pde, ag_mul_scalar(t, *bc, BC_WEIGHT));
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* max |u - u*| over the points xe, on a tape that records nothing. */
static double max_error(ag_tape *ev, nn_mlp *net, ag_tensor *xe)
{
    ag_tensor *u = nn_mlp_forward(ev, net, xe);
    double worst = u ? 0 : INFINITY;
    for (int64_t i = 0; u && i < ag_numel(xe); i++)
        worst = fmax(worst, fabs(ag_get(u, i) - exact(ag_get(xe, i))));
    ag_tape_reset(ev);
    return worst;
}

int main(int argc, char **argv)
{
    int steps = DEFAULT_STEPS;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            steps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--steps N]\n", argv[0]);
            return 2;
        }
    }
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    nn_params *params = nn_params_new();
    nn_params_set_dtype(params, AG_F64);
    nn_mlp *net = nn_mlp_new(params, "u", 4, (int64_t[]){1, WIDTH, WIDTH, 1}, true,
                             NN_ACT_TANH, &rng);
    if (!net) {
        fprintf(stderr, "%s\n", ag_last_error());
        return 1;
    }

    /* Collocation points at the midpoints of POINTS equal cells; x needs a
     * gradient (u' and u'' are taken with respect to it), f does not. */
    ag_tensor *x = ag_tensor_new(AG_F64, 2, (int64_t[]){POINTS, 1});
    ag_tensor *f = ag_tensor_new(AG_F64, 2, (int64_t[]){POINTS, 1});
    for (int i = 0; i < POINTS; i++) {
        ag_set(x, i, (i + 0.5) / POINTS);
        ag_set(f, i, source(ag_get(x, i)));
    }
    ag_set_requires_grad(x, true);
    ag_tensor *xb = ag_tensor_from_f64(2, (int64_t[]){2, 1}, (double[]){0, 1});
    ag_tensor *xe = ag_tensor_new(AG_F64, 2, (int64_t[]){EVAL_POINTS, 1});
    for (int i = 0; i < EVAL_POINTS; i++)
        ag_set(xe, i, i / (EVAL_POINTS - 1.0));

    int n;
    ag_tensor **w = nn_params_tensors(params, &n);
    optim_adam_opts ao = optim_adam_defaults();
    ao.lr = LR;
    optim *opt = optim_adam(w, n, ao);
    optim_sched *sched = optim_sched_cosine(opt, steps, LR_MIN);
    ag_tape *tape = ag_tape_new(), *ev = ag_tape_new();
    ag_tape_set_grad_enabled(ev, false);

    double err0 = max_error(ev, net, xe), loss0 = NAN, loss = NAN, t0 = seconds();
    printf("PINN for u'' = -pi^2 sin(pi x), u(0) = u(1) = 0: %lld weights, %d points, "
           "%d steps\n", (long long)nn_params_numel(params, true), POINTS, steps);
    printf("%6s  %12s  %12s  %12s  %10s  %12s\n", "step", "loss", "pde", "bc", "lr",
           "max|u-u*|");
    int status = 0;
    for (int step = 0; step < steps; step++) {
        ag_tensor *pde = NULL, *bc = NULL;
        ag_tensor *l = pinn_loss(tape, net, x, f, xb, &pde, &bc);
        if (ag_backward(tape, l) != AG_OK) {
            fprintf(stderr, "%s\n", ag_tape_error(tape));
            status = 1;
            break;
        }
        loss = ag_item(l);
        if (step == 0)
            loss0 = loss;
        if (step % (steps / 10 > 0 ? steps / 10 : 1) == 0)
            printf("%6d  %12.4e  %12.4e  %12.4e  %10.3e  %12.4e\n", step, loss, ag_item(pde),
                   ag_item(bc), optim_get_lr(opt), max_error(ev, net, xe));
        optim_step(opt);
        optim_sched_step_once(sched);
        optim_zero_grad(opt);
        ag_zero_grad(x);        /* backward also reached x; nothing reads it */
        ag_tape_reset(tape);
    }

    double err = max_error(ev, net, xe);
    printf("%d steps in %.1f s; loss %.4e -> %.4e (last step)\n", steps, seconds() - t0,
           loss0, loss);
    printf("max |u - u*| on %d points: %.3e (at the start %.3e)\n", EVAL_POINTS, err, err0);
    if (!status && !(err < 0.1 * err0)) {
        printf("FAIL: the error did not fall tenfold\n");
        status = 1;
    } else if (!status && steps == DEFAULT_STEPS && !(err <= TARGET)) {
        printf("FAIL: max |u - u*| = %.3e is above %.0e\n", err, TARGET);
        status = 1;
    } else if (!status) {
        printf("ok: %s\n", steps == DEFAULT_STEPS ? "max |u - u*| <= 1e-3"
                                                   : "the error fell tenfold");
    }

    ag_tape_free(tape);
    ag_tape_free(ev);
    optim_sched_free(sched);
    optim_free(opt);
    nn_mlp_free(net);
    nn_params_free(params);
    ag_tensor_free(x);
    ag_tensor_free(f);
    ag_tensor_free(xb);
    ag_tensor_free(xe);
    return status;
}
