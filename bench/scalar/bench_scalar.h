/* bench_scalar.h — the two scalar test functions, shared by the tapegrad
 * and the ADOL-C sides of bench/scalar, and the figures each side reports. */
#ifndef TG_BENCH_SCALAR_H
#define TG_BENCH_SCALAR_H

#ifdef __cplusplus
extern "C" {
#endif

enum { FN_ROSENBROCK = 0, FN_TANH_CHAIN = 1 };

typedef struct bench_figures {
    double record_grad_ns; /* per recorded op: record + one gradient */
    double replay_grad_ns; /* per recorded op: re-evaluate the tape + gradient */
    double ops;            /* ops recorded */
    double bytes_per_op;   /* tape bytes per recorded op */
    double grad_check;     /* a gradient entry, to compare both tools */
    int in_memory;         /* 1 when the whole tape stayed in memory */
    /* second order (Rosenbrock only), totals at the replay point x1 along
     * the direction bench_direction: ADOL-C gradient() and hess_vec() */
    double grad_total_ns;
    double hvp_total_ns;
    double hvp_check;      /* (H v)[0] */
} bench_figures;

/* v[i] of the HVP direction, the same on both sides */
static inline double bench_direction(long i) { return 1.0 - 0.01 * (double)(i % 13); }

/* ADOL-C side (scalar_adolc.cc); returns 0 on success. */
int adolc_bench(int fn, long n, int repeats, bench_figures *out);

#ifdef __cplusplus
}
#endif
#endif
