/* newton_cg.c — Hessian-free Newton next to Adam.  The problem: logistic
 * regression with an L2 penalty on a synthetic, nearly separable data set
 * whose features are strongly correlated and of very different scales,
 *
 *     loss(w, b) = mean_i bce(x_i . w + b, y_i) + L2 / 2 |w|^2,
 *
 * x_i in R^D, y_i in {0, 1}.  Newton-CG (Martens 2010, "Deep learning via
 * Hessian-free optimization") solves (H + lambda I) p = -g for the step p
 * by conjugate gradient, touching H only through Hessian-vector products
 * from ag_hvp, and truncates CG by Martens' relative-progress rule.  The
 * damping lambda follows the reduction ratio rho = actual / predicted
 * decrease, Levenberg-Marquardt style: lambda *= 3/2 when rho < 1/4,
 * lambda *= 2/3 when rho > 3/4; a step that raises the loss is refused.
 * Adam runs from the same initial weights with the best of seven
 * learning rates (1e-3 to 1); the program prints both loss curves, the
 * Newton iteration that first reached Adam's final loss, and the work
 * each method did: gradients, HVPs (each one records a gradient and
 * sweeps it again) and seconds.
 *
 * Usage: newton_cg [--iters N]   (Adam's iterations; default 500)
 * Exit status 1 unless Newton-CG reaches Adam's final loss within N/5
 * outer iterations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#include <tapegrad.h>

enum { N = 2000, D = 100, P = D + 1, MAX_CG = 50, DEFAULT_ITERS = 500 };
static const double L2 = 1e-4;

typedef struct problem {
    ag_tensor *x;          /* (N, D) features */
    ag_tensor *y;          /* (N, 1) labels, 0 or 1 */
    ag_tensor *params[2];  /* w (D, 1) and b (1): P numbers, flattened in this order */
} problem;

/* Features x = (z + 0.9 c) * s: z and c standard normal (c one per row,
 * shared by every feature: a correlation of 0.45), scales s from 0.1 to
 * 10.  Labels from a random hyperplane plus noise, so a few points sit on
 * the wrong side. */
static void make_data(problem *p, ag_rng *rng)
{
    double wtrue[D];
    for (int j = 0; j < D; j++)
        wtrue[j] = ag_rng_normal(rng);
    p->x = ag_tensor_new(AG_F64, 2, (int64_t[]){N, D});
    p->y = ag_tensor_new(AG_F64, 2, (int64_t[]){N, 1});
    double *x = ag_data(p->x);
    for (int i = 0; i < N; i++) {
        double c = ag_rng_normal(rng), score = 0;
        for (int j = 0; j < D; j++) {
            double s = pow(10, -1 + 2.0 * j / (D - 1));
            x[i * D + j] = (ag_rng_normal(rng) + 0.9 * c) * s;
            score += (x[i * D + j] / s) * wtrue[j];
        }
        ag_set(p->y, i, score / sqrt(D) + 0.1 * ag_rng_normal(rng) > 0);
    }
}

static ag_tensor *record_loss(ag_tape *t, problem *p)
{
    ag_tensor *w = p->params[0], *b = p->params[1];
    ag_tensor *z = ag_add(t, ag_matmul(t, p->x, w), b);                 /* (N, 1) */
    ag_tensor *penalty = ag_sum(t, ag_mul(t, w, w), AG_ALL, false);
    return ag_add(t, nn_bce_with_logits(t, z, p->y, AG_REDUCE_MEAN),
                  ag_mul_scalar(t, penalty, 0.5 * L2));
}

/* ---- the parameters as one vector of P numbers ---- */

static void params_get(problem *p, double *v)
{
    memcpy(v, ag_data(p->params[0]), D * sizeof *v);
    v[D] = ag_get(p->params[1], 0);
}

static void params_set(problem *p, const double *v)
{
    memcpy(ag_data(p->params[0]), v, D * sizeof *v);
    ag_set(p->params[1], 0, v[D]);
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double dot(const double *a, const double *b)
{
    double s = 0;
    for (int i = 0; i < P; i++)
        s += a[i] * b[i];
    return s;
}

/* The vector v as two tape tensors shaped like w and b, and back. */
static void split(ag_tape *t, problem *p, const double *v, ag_tensor **out)
{
    for (int k = 0; k < 2; k++)
        out[k] = ag_tape_tensor(t, AG_F64, ag_ndim(p->params[k]), ag_shape(p->params[k]));
    memcpy(ag_data(out[0]), v, D * sizeof *v);
    ag_set(out[1], 0, v[D]);
}

static void join(ag_tensor *const *g, double *v)
{
    memcpy(v, ag_data_const(g[0]), D * sizeof *v);
    v[D] = ag_get(g[1], 0);
}

static double loss_at(ag_tape *ev, problem *p)          /* ev records nothing */
{
    double l = ag_item(record_loss(ev, p));
    ag_tape_reset(ev);
    return l;
}

/* ---- Adam ---- */

/* Adam from w0 for iters steps at lr; fills curve[0..iters] (the loss
 * before each step, then the final one) and returns the final loss. */
static double run_adam(problem *p, const double *w0, int iters, double lr, double *curve)
{
    params_set(p, w0);
    optim_adam_opts ao = optim_adam_defaults();
    ao.lr = lr;
    optim *opt = optim_adam(p->params, 2, ao);
    ag_tape *t = ag_tape_new();
    for (int it = 0; it < iters; it++) {
        ag_tensor *loss = record_loss(t, p);
        if (ag_backward(t, loss) != AG_OK) {
            fprintf(stderr, "%s\n", ag_tape_error(t));
            exit(1);
        }
        curve[it] = ag_item(loss);
        optim_step(opt);
        optim_zero_grad(opt);
        ag_tape_reset(t);
    }
    ag_tape_set_grad_enabled(t, false);
    curve[iters] = loss_at(t, p);
    ag_tape_free(t);
    optim_free(opt);
    return curve[iters];
}

/* ---- Newton-CG ---- */

typedef struct newton {
    double lambda;         /* damping */
    long hvps, grads;      /* work done so far */
    int cg_iters;          /* in the last solve */
    double step[P];        /* the last CG solution, CG's next start */
    double rho;            /* reduction ratio of the last step */
} newton;

/* hv = (H + lambda I) v, H the Hessian at the recording `loss`. */
static void damped_hvp(ag_tape *t, problem *p, ag_tensor *loss, newton *nt, const double *v,
                       double *hv)
{
    ag_tensor *vt[2], *h[2];
    split(t, p, v, vt);
    if (ag_hvp(t, loss, 2, p->params, vt, h, false) != AG_OK) {
        fprintf(stderr, "%s\n", ag_tape_error(t));
        exit(1);
    }
    join(h, hv);
    for (int i = 0; i < P; i++)
        hv[i] += nt->lambda * v[i];
    nt->hvps++;
}

/* Truncated CG on A s = -g, A = H + lambda I, started from s (Martens
 * starts from 0.95 times the previous step; from 0 when that is no better
 * than 0).  Stops when the quadratic q(s) = g.s + s.A s / 2 improves by
 * less than a relative k * 5e-4 over the last k = max(10, i / 10)
 * iterations (Martens' rule), when the residual vanishes, or at MAX_CG.
 * Returns q(s) - lambda |s|^2 / 2, the change the undamped model
 * predicts. */
static double cg_solve(ag_tape *t, problem *p, ag_tensor *loss, newton *nt, const double *g,
                       double *s)
{
    double r[P], d[P], ad[P], q[MAX_CG + 1] = {0};
    for (int k = 0; k < P; k++)
        r[k] = -g[k];                  /* r = -g - A s, for s = 0 */
    if (dot(s, s) > 0) {
        damped_hvp(t, p, loss, nt, s, ad);
        for (int k = 0; k < P; k++)
            r[k] = -g[k] - ad[k];
        /* A s = -g - r, so q(s) = (g.s - r.s) / 2 */
        q[0] = 0.5 * (dot(g, s) - dot(r, s));
        if (!(q[0] < 0)) {
            q[0] = 0;
            for (int k = 0; k < P; k++) {
                s[k] = 0;
                r[k] = -g[k];
            }
        }
    }
    memcpy(d, r, sizeof d);
    double rr = dot(r, r), gg = dot(g, g);
    int i = 0;
    while (i < MAX_CG && rr > 1e-24 * gg) {
        damped_hvp(t, p, loss, nt, d, ad);
        double dad = dot(d, ad);
        if (dad <= 0)                  /* no curvature left along d */
            break;
        double alpha = rr / dad;
        for (int k = 0; k < P; k++) {
            s[k] += alpha * d[k];
            r[k] -= alpha * ad[k];
        }
        double rr_new = dot(r, r);
        for (int k = 0; k < P; k++)
            d[k] = r[k] + rr_new / rr * d[k];
        rr = rr_new;
        i++;
        q[i] = 0.5 * (dot(g, s) - dot(r, s));
        int k = i / 10 > 10 ? i / 10 : 10;
        if (i > k && q[i] < 0 && (q[i] - q[i - k]) / q[i] < k * 5e-4)
            break;
    }
    nt->cg_iters = i;
    return q[i] - 0.5 * nt->lambda * dot(s, s);
}

/* One outer iteration: gradient, CG solve, the step if it lowers the
 * loss, then the damping update.  Returns the loss after it. */
static double newton_step(ag_tape *t, ag_tape *ev, problem *p, newton *nt, double f0)
{
    ag_tensor *loss = record_loss(t, p), *gt[2];
    double g[P], w[P], trial[P], *s = nt->step;
    if (ag_gradients(t, loss, NULL, 2, p->params, gt, false) != AG_OK) {
        fprintf(stderr, "%s\n", ag_tape_error(t));
        exit(1);
    }
    nt->grads++;
    join(gt, g);
    for (int i = 0; i < P; i++)
        s[i] *= 0.95;
    double predicted = cg_solve(t, p, loss, nt, g, s);
    ag_tape_reset(t);
    params_get(p, w);
    for (int i = 0; i < P; i++)
        trial[i] = w[i] + s[i];
    params_set(p, trial);
    double f1 = loss_at(ev, p);
    nt->rho = predicted < 0 ? (f1 - f0) / predicted : 0;
    if (nt->rho < 0.25)
        nt->lambda *= 1.5;
    else if (nt->rho > 0.75)
        nt->lambda *= 2.0 / 3.0;
    if (!(f1 < f0)) {                  /* refused: back to w */
        params_set(p, w);
        return f0;
    }
    return f1;
}

int main(int argc, char **argv)
{
    int iters = DEFAULT_ITERS;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc && atoi(argv[i + 1]) >= 5) {
            iters = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--iters N]   (N >= 5)\n", argv[0]);
            return 2;
        }
    }
    ag_rng rng;
    ag_rng_seed(&rng, 2010);
    problem p;
    make_data(&p, &rng);
    p.params[0] = ag_tensor_normal(AG_F64, 2, (int64_t[]){D, 1}, 0, 0.01, &rng);
    p.params[1] = ag_tensor_new(AG_F64, 1, (int64_t[]){1});
    ag_set_requires_grad(p.params[0], true);
    ag_set_requires_grad(p.params[1], true);
    double w0[P];
    params_get(&p, w0);
    printf("logistic regression, %d points, %d features (+ bias), L2 %g; "
           "the same start for both methods\n", N, D, L2);

    /* Adam: the best of seven learning rates, by final loss. */
    static const double lrs[] = {1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1};
    enum { N_LRS = sizeof lrs / sizeof lrs[0] };
    double *curve = malloc((size_t)(iters + 1) * sizeof *curve);
    double *best = malloc((size_t)(iters + 1) * sizeof *best);
    double best_lr = 0, adam_final = INFINITY, adam_s = 0;
    for (int k = 0; k < N_LRS; k++) {
        double t0 = seconds(), fin = run_adam(&p, w0, iters, lrs[k], curve);
        printf("Adam lr %-6g final loss %.6f\n", lrs[k], fin);
        if (fin < adam_final) {
            adam_final = fin;
            adam_s = seconds() - t0;
            best_lr = lrs[k];
            memcpy(best, curve, (size_t)(iters + 1) * sizeof *best);
        }
    }
    printf("\nAdam, lr %g (%d iterations, one gradient each)\n%6s  %12s\n", best_lr, iters,
           "iter", "loss");
    for (int it = 0; it <= iters; it += iters / 20 > 0 ? iters / 20 : 1)
        printf("%6d  %12.6f\n", it, best[it]);
    if (iters % (iters / 20 > 0 ? iters / 20 : 1))
        printf("%6d  %12.6f\n", iters, best[iters]);

    /* Newton-CG from the same start, for at most iters / 5 iterations,
     * or once past Adam's loss until it improves by less than 1e-6. */
    params_set(&p, w0);
    ag_tape *t = ag_tape_new(), *ev = ag_tape_new();
    ag_tape_set_grad_enabled(ev, false);
    newton nt = {.lambda = 1};
    int budget = iters / 5, reached = -1;
    long reached_hvps = 0, reached_grads = 0;
    double f = loss_at(ev, &p), t0 = seconds(), reached_s = 0;
    printf("\nNewton-CG (at most %d iterations)\n%6s  %12s  %10s  %7s  %4s  %6s\n", budget,
           "iter", "loss", "lambda", "rho", "cg", "hvps");
    printf("%6d  %12.6f\n", 0, f);
    for (int it = 1; it <= budget; it++) {
        double lambda = nt.lambda, f_new = newton_step(t, ev, &p, &nt, f);
        printf("%6d  %12.6f  %10.3e  %7.3f  %4d  %6ld\n", it, f_new, lambda, nt.rho,
               nt.cg_iters, nt.hvps);
        if (reached < 0 && f_new <= adam_final) {
            reached = it;
            reached_hvps = nt.hvps;
            reached_grads = nt.grads;
            reached_s = seconds() - t0;
        }
        bool converged = f_new < f && f - f_new < 1e-6 * f;
        f = f_new;
        if (reached >= 0 && converged)
            break;
    }

    double newton_s = seconds() - t0;
    printf("\nAdam's final loss %.6f after %d iterations: %d gradients, %.3f s\n", adam_final,
           iters, iters, adam_s);
    int status = 0;
    if (reached < 0) {
        printf("FAIL: Newton-CG did not reach it in %d iterations (%ld HVPs, %ld gradients; "
               "loss %.6f)\n", budget, nt.hvps, nt.grads, f);
        status = 1;
    } else {
        printf("Newton-CG reached it at iteration %d: %ld gradients and %ld HVPs, %.3f s "
               "(%.1fx fewer iterations than Adam)\n", reached, reached_grads, reached_hvps,
               reached_s, (double)iters / reached);
        printf("Newton-CG's last loss %.6f after %ld gradients and %ld HVPs, %.3f s\n", f,
               nt.grads, nt.hvps, newton_s);
        printf("ok: Newton-CG reached Adam's final loss within 1/5 of its iterations\n");
    }
    free(curve);
    free(best);
    ag_tape_free(t);
    ag_tape_free(ev);
    ag_tensor_free(p.x);
    ag_tensor_free(p.y);
    ag_tensor_free(p.params[0]);
    ag_tensor_free(p.params[1]);
    return status;
}
