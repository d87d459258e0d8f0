/* scalar.c — bench/scalar: ns per recorded op of tapegrad's scalar path
 * (record + gradient, replay + gradient), gradient time against the plain
 * function, bytes per op, the Hessian-vector product against the gradient
 * (Rosenbrock), and ADOL-C's figures on the same functions in the same run
 * when built with it (gradient(), hess_vec()).  Medians of REPEATS runs;
 * the last lines are `name value` pairs for bench/run.
 *   extended Rosenbrock, n = 1,000,000:
 *     f = sum_i 100 (x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2
 *   tanh chain, 1,000,000 steps: y = tanh(1.0001 y + 0.1)            */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd.h"
#include "bench_scalar.h"

#define N_ROSEN 1000000L
#define N_CHAIN 1000000L

static int repeats = 7;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

static ag_var record(ag_tape *t, int fn, ag_var *x, long n)
{
    if (fn == FN_ROSENBROCK) {
        ag_var hundred = ag_var_const(t, 100), one = ag_var_const(t, 1);
        ag_var f = ag_var_const(t, 0);
        for (long i = 0; i + 1 < n; i += 2) {
            ag_var d = ag_var_sub(t, x[i + 1], ag_var_mul(t, x[i], x[i]));
            ag_var e = ag_var_sub(t, one, x[i]);
            ag_var term = ag_var_add(t, ag_var_mul(t, hundred, ag_var_mul(t, d, d)),
                                     ag_var_mul(t, e, e));
            f = ag_var_add(t, f, term);
        }
        return f;
    }
    ag_var c = ag_var_const(t, 1.0001), b = ag_var_const(t, 0.1), y = x[0];
    for (long i = 0; i < N_CHAIN; i++)
        y = ag_var_tanh(t, ag_var_add(t, ag_var_mul(t, c, y), b));
    return y;
}

static volatile double sink;

static double plain(int fn, const double *x, long n)
{
    if (fn == FN_ROSENBROCK) {
        double f = 0;
        for (long i = 0; i + 1 < n; i += 2) {
            double d = x[i + 1] - x[i] * x[i], e = 1 - x[i];
            f += 100 * d * d + e * e;
        }
        return f;
    }
    double y = x[0];
    for (long i = 0; i < N_CHAIN; i++)
        y = tanh(1.0001 * y + 0.1);
    return y;
}

typedef struct {
    bench_figures fig;
    double plain_ns, record_grad_total, replay_grad_total;
    double replay_ns, grad_ns, hvp_ns; /* at x1: replay, backward alone, HVP alone */
} tg_result;

static void tapegrad_bench(int fn, long n, tg_result *r)
{
    double *x0 = malloc((size_t)n * sizeof *x0), *x1 = malloc((size_t)n * sizeof *x1);
    double *v = malloc((size_t)n * sizeof *v), *hv = malloc((size_t)n * sizeof *hv);
    ag_var *x = malloc((size_t)n * sizeof *x);
    double rec[64], rep[64], pl[64], rp[64], gr[64], hvp[64];
    for (long i = 0; i < n; i++) {
        x0[i] = 0.5 + 0.001 * (double)(i % 7);
        x1[i] = 0.4 + 0.002 * (double)(i % 5);
        v[i] = bench_direction(i);
    }
    hv[0] = NAN;
    ag_tape *t = ag_tape_new();
    for (int k = 0; k < repeats; k++) {
        double t0 = now_ns();
        ag_tape_reset(t);
        for (long i = 0; i < n; i++)
            x[i] = ag_var_new(t, x0[i]);
        ag_var f = record(t, fn, x, n);
        ag_var_backward(t, f);
        double t1 = now_ns();
        if (ag_tape_replay(t, (int)n, x, x1) != AG_OK)
            fprintf(stderr, "replay: %s\n", ag_tape_error(t));
        double t1r = now_ns();
        ag_var_backward(t, f);
        double t2 = now_ns();
        if (fn == FN_ROSENBROCK && ag_var_hvp(t, f, (int)n, x, v, hv) != AG_OK)
            fprintf(stderr, "hvp: %s\n", ag_tape_error(t));
        double t2h = now_ns();
        sink = plain(fn, x1, n);
        double t3 = now_ns();
        rec[k] = t1 - t0;
        rep[k] = t2 - t1;
        rp[k] = t1r - t1;
        gr[k] = t2 - t1r;
        hvp[k] = t2h - t2;
        pl[k] = t3 - t2h;
    }
    double ops = (double)ag_tape_scalar_ops(t);
    r->fig.ops = ops;
    r->record_grad_total = median(rec, repeats);
    r->replay_grad_total = median(rep, repeats);
    r->plain_ns = median(pl, repeats);
    r->replay_ns = median(rp, repeats);
    r->grad_ns = median(gr, repeats);
    r->hvp_ns = median(hvp, repeats);
    r->fig.hvp_check = hv[0];
    r->fig.record_grad_ns = r->record_grad_total / ops;
    r->fig.replay_grad_ns = r->replay_grad_total / ops;
    r->fig.bytes_per_op = (double)ag_scalar_bytes_per_op();
    r->fig.grad_check = ag_var_grad(t, x[0]);
    r->fig.in_memory = 1;
    ag_tape_free(t);
    free(x0);
    free(x1);
    free(v);
    free(hv);
    free(x);
}

/* `name value` lines for bench/run, printed last */
static char pairs[1024];
static size_t pairs_len;

static void pair(const char *name, double value)
{
    pairs_len += (size_t)snprintf(pairs + pairs_len, sizeof pairs - pairs_len, "%s %.6g\n",
                                  name, value);
}

/* HVP against the gradient at x1.  ADOL-C's gradient() and hess_vec()
 * re-evaluate the function (zos/fos_forward) before their reverse sweep,
 * so they compare with tapegrad's replay + backward and replay + HVP. */
static void report_second(const tg_result *tg, const bench_figures *ad)
{
    double g = tg->grad_ns, h = tg->hvp_ns, rp = tg->replay_ns;
    printf("  second order at x1 along v (ms; HVP/grad is the cost of one H v in "
           "gradients):\n");
    printf("  %-10s %-22s %12s %12s %10s %12s\n", "tool", "", "gradient", "HVP", "HVP/grad",
           "(Hv)[0]");
    printf("  %-10s %-22s %12.2f %12.2f %9.2fx %12.6g\n", "tapegrad", "sweep alone", g / 1e6,
           h / 1e6, h / g, tg->fig.hvp_check);
    printf("  %-10s %-22s %12.2f %12.2f %9.2fx\n", "tapegrad", "replay + sweep",
           (rp + g) / 1e6, (rp + h) / 1e6, (rp + h) / (rp + g));
    printf("  %-10s %-22s %12.2f %12.2f %9.2fx\n", "tapegrad", "record+grad, HVP",
           tg->record_grad_total / 1e6, h / 1e6, h / tg->record_grad_total);
    pair("scalar_grad_ms", g / 1e6);
    pair("scalar_hvp_ms", h / 1e6);
    pair("scalar_hvp_over_grad", h / g);
    pair("scalar_record_grad_ms", tg->record_grad_total / 1e6);
    pair("scalar_replay_grad_ms", (rp + g) / 1e6);
    pair("scalar_replay_hvp_ms", (rp + h) / 1e6);
    if (ad) {
        printf("  %-10s %-22s %12.2f %12.2f %9.2fx %12.6g\n", "ADOL-C", "gradient(), hess_vec",
               ad->grad_total_ns / 1e6, ad->hvp_total_ns / 1e6,
               ad->hvp_total_ns / ad->grad_total_ns, ad->hvp_check);
        printf("  ratio tapegrad/ADOL-C: replay+HVP / hess_vec %.3f\n",
               (rp + h) / ad->hvp_total_ns);
        pair("adolc_grad_ms", ad->grad_total_ns / 1e6);
        pair("adolc_hess_vec_ms", ad->hvp_total_ns / 1e6);
        pair("adolc_hvp_over_grad", ad->hvp_total_ns / ad->grad_total_ns);
    }
}

static void report(const char *name, int fn, long n)
{
    tg_result tg;
    const bench_figures *adp = NULL;
    tapegrad_bench(fn, n, &tg);
    printf("\n%s (%.0f recorded ops, median of %d)\n", name, tg.fig.ops, repeats);
    printf("  %-10s %14s %14s %10s %12s %12s\n", "tool", "record+grad", "replay+grad",
           "bytes/op", "grad/plain", "dF/dx0");
    printf("  %-10s %11.2f ns %11.2f ns %10.1f %11.2fx %12.6g\n", "tapegrad",
           tg.fig.record_grad_ns, tg.fig.replay_grad_ns, tg.fig.bytes_per_op,
           tg.replay_grad_total / tg.plain_ns, tg.fig.grad_check);
    printf("  %-10s record+grad %.2f ms, replay+grad %.2f ms, plain function %.2f ms "
           "(record+grad/plain %.2fx)\n", "", tg.record_grad_total / 1e6,
           tg.replay_grad_total / 1e6, tg.plain_ns / 1e6, tg.record_grad_total / tg.plain_ns);
#ifdef TG_HAVE_ADOLC
    bench_figures ad;
    adolc_bench(fn, n, repeats, &ad);
    adp = &ad;
    printf("  %-10s %11.2f ns %11.2f ns %10.1f %12s %12.6g  (tape in memory: %s)\n",
           "ADOL-C", ad.record_grad_ns, ad.replay_grad_ns, ad.bytes_per_op, "-",
           ad.grad_check, ad.in_memory ? "yes" : "NO");
    printf("  ratio tapegrad/ADOL-C (total time): record+grad %.3f, replay+grad %.3f\n",
           tg.record_grad_total / (ad.record_grad_ns * ad.ops),
           tg.replay_grad_total / (ad.replay_grad_ns * ad.ops));
#else
    printf("  ADOL-C: not built (install libadolc-dev and reconfigure)\n");
#endif
    if (fn == FN_ROSENBROCK)
        report_second(&tg, adp);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        repeats = atoi(argv[1]) < 1 ? 1 : atoi(argv[1]) > 64 ? 64 : atoi(argv[1]);
    printf("bench/scalar: ns per recorded op; grad/plain = (replay + gradient) / plain "
           "function; HVP direction v[i] = 1 - 0.01 (i mod 13)\n");
    report("extended Rosenbrock, n = 1,000,000", FN_ROSENBROCK, N_ROSEN);
    report("tanh chain, 1,000,000 steps", FN_TANH_CHAIN, 1);
    printf("\n%s", pairs);
    return 0;
}
