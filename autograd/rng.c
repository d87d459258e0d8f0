/* rng.c — xoshiro256** seeded by splitmix64: fast, small state that can be
 * copied into a checkpoint, identical on every platform.  A NULL generator
 * is an error (0 or NaN, with ag_last_error); an all-zero state, which
 * xoshiro never leaves (every draw 0, and ag_rng_below's rejection loop
 * would never end), is taken as ag_rng_seed(r, 0): a generator declared
 * `ag_rng r = {0}` and never seeded, or a zeroed checkpoint. */
#include "autograd_internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void ag_rng_seed(ag_rng *r, uint64_t seed)
{
    if (!r) {
        ag_set_last_error("ag_rng_seed: r is NULL");
        return;
    }
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* The step itself, for a generator known to be non-NULL. */
static uint64_t next(ag_rng *r)
{
    uint64_t *s = r->s;
    if (!(s[0] | s[1] | s[2] | s[3]))
        ag_rng_seed(r, 0);
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double uniform(ag_rng *r) { return (double)(next(r) >> 11) * 0x1.0p-53; }

uint64_t ag_rng_next(ag_rng *r)
{
    if (!r) {
        ag_set_last_error("ag_rng_next: r is NULL");
        return 0;
    }
    return next(r);
}

double ag_rng_uniform(ag_rng *r)
{
    if (!r) {
        ag_set_last_error("ag_rng_uniform: r is NULL");
        return NAN;
    }
    return uniform(r);
}

/* Box-Muller without a cached second value: the state stays four words. */
double ag_rng_normal(ag_rng *r)
{
    if (!r) {
        ag_set_last_error("ag_rng_normal: r is NULL");
        return NAN;
    }
    double u1 = 1.0 - uniform(r); /* (0, 1]: log is finite */
    double u2 = uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Lemire's multiply-shift with rejection: unbiased for every n. */
uint64_t ag_rng_below(ag_rng *r, uint64_t n)
{
    if (!r || n == 0) {
        ag_set_last_error("ag_rng_below: %s", !r ? "r is NULL" : "n is 0 (must be > 0)");
        return 0;
    }
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        __uint128_t m = (__uint128_t)next(r) * n;
        if ((uint64_t)m >= threshold)
            return (uint64_t)(m >> 64);
    }
}
