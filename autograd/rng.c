/* rng.c — xoshiro256** seeded by splitmix64: fast, small state that can be
 * copied into a checkpoint, identical on every platform. */
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
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ag_rng_next(ag_rng *r)
{
    uint64_t *s = r->s;
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

double ag_rng_uniform(ag_rng *r)
{
    return (double)(ag_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Box-Muller without a cached second value: the state stays four words. */
double ag_rng_normal(ag_rng *r)
{
    double u1 = 1.0 - ag_rng_uniform(r); /* (0, 1]: log is finite */
    double u2 = ag_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Lemire's multiply-shift with rejection: unbiased for every n. */
uint64_t ag_rng_below(ag_rng *r, uint64_t n)
{
    if (n == 0)
        return 0;
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        __uint128_t m = (__uint128_t)ag_rng_next(r) * n;
        if ((uint64_t)m >= threshold)
            return (uint64_t)(m >> 64);
    }
}
