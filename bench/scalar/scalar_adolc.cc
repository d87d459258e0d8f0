// scalar_adolc.cc — the ADOL-C side of bench/scalar: the same functions
// taped with adoubles (tape kept in memory by sizing its buffers to hold
// it whole, and the forward values kept so fos_reverse runs at once), and
// gradient() at a new point for tape reuse (zos_forward + fos_reverse),
// and on Rosenbrock hess_vec() at that point (fos_forward + hos_reverse).
#include <adolc/adolc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "bench_scalar.h"

static double now_ns()
{
    using namespace std::chrono;
    return (double)duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

static double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

static void tape_fn(int fn, long n, const std::vector<double> &x0)
{
    std::vector<adouble> x(n);
    adouble f;
    double out;
    for (long i = 0; i < n; i++)
        x[i] <<= x0[i];
    if (fn == FN_ROSENBROCK) {
        f = 0;
        for (long i = 0; i + 1 < n; i += 2) {
            adouble d = x[i + 1] - x[i] * x[i], e = 1.0 - x[i];
            f += 100.0 * (d * d) + e * e;
        }
    } else {
        f = x[0];
        for (long i = 0; i < 1000000; i++)
            f = tanh(1.0001 * f + 0.1);
    }
    f >>= out;
}

extern "C" int adolc_bench(int fn, long n, int repeats, bench_figures *out)
{
    std::vector<double> x0(n), x1(n), g(n), v(n), hv(n);
    for (long i = 0; i < n; i++) {
        x0[i] = 0.5 + 0.001 * (double)(i % 7);
        x1[i] = 0.4 + 0.002 * (double)(i % 5);
        v[i] = bench_direction(i);
    }
    // buffers big enough for the whole tape: nothing goes to a file
    const unsigned big = 40000000u;
    std::vector<double> rec, rep, hvp;
    size_t stats[STAT_SIZE];
    for (int r = 0; r < repeats; r++) {
        double t0 = now_ns();
        trace_on(1, 1, big, big, big, big); // keep values: reverse right away
        tape_fn(fn, n, x0);
        trace_off();
        double u = 1.0;
        fos_reverse(1, 1, (int)n, &u, g.data());
        double t1 = now_ns();
        gradient(1, (int)n, x1.data(), g.data());
        double t2 = now_ns();
        if (fn == FN_ROSENBROCK)
            hess_vec(1, (int)n, x1.data(), v.data(), hv.data());
        double t3 = now_ns();
        tapestats(1, stats);
        rec.push_back(t1 - t0);
        rep.push_back(t2 - t1);
        hvp.push_back(t3 - t2);
    }
    double ops = (double)stats[NUM_OPERATIONS];
    out->ops = ops;
    out->record_grad_ns = median(rec) / ops;
    out->replay_grad_ns = median(rep) / ops;
    // op codes are 1 byte, locations sizeof(locint), constants 8 bytes
    out->bytes_per_op = ((double)stats[NUM_OPERATIONS] +
                         (double)stats[NUM_LOCATIONS] * sizeof(locint) +
                         (double)stats[NUM_VALUES] * sizeof(double)) / ops;
    out->in_memory = !stats[OP_FILE_ACCESS] && !stats[LOC_FILE_ACCESS] &&
                     !stats[VAL_FILE_ACCESS];
    out->grad_check = g[0];
    out->grad_total_ns = median(rep);
    out->hvp_total_ns = median(hvp);
    out->hvp_check = hv[0];
    return 0;
}
