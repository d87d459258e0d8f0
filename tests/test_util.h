/* test_util.h — shared helpers of the cmocka programs. */
#ifndef TG_TEST_UTIL_H
#define TG_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "autograd.h"

/* Path of a file under the source tree: tg_path("tests/data/x") */
const char *tg_path(const char *rel);

/* Fails the test (printing the first mismatches and the max difference)
 * unless every element satisfies |a - b| <= atol + rtol * |b|. */
#define assert_tensor_close(a, b, rtol, atol)                                 \
    tg_assert_tensor_close((a), (b), (rtol), (atol), __FILE__, __LINE__)
void tg_assert_tensor_close(const ag_tensor *a, const ag_tensor *b, double rtol,
                            double atol, const char *file, int line);
/* The same for two double arrays of n elements. */
#define assert_doubles_close(a, b, n, rtol, atol)                             \
    tg_assert_doubles_close((a), (b), (n), (rtol), (atol), __FILE__, __LINE__)
void tg_assert_doubles_close(const double *a, const double *b, int64_t n, double rtol,
                             double atol, const char *file, int line);

/* Gradchecks fn on inputs with the given tolerances; fails the test with
 * the report's message when it does not pass. */
#define assert_gradcheck(fn, ctx, in, n, rtol, atol)                          \
    tg_assert_gradcheck((fn), (ctx), (in), (n), (rtol), (atol), __FILE__, __LINE__)
void tg_assert_gradcheck(ag_gradcheck_fn fn, void *ctx, ag_tensor **in, int n,
                         double rtol, double atol, const char *file, int line);

/* Fails unless a and b hold the same bytes (numel elements of a's dtype). */
void tg_assert_same_bits(const ag_tensor *a, const ag_tensor *b);
/* Fails unless t has exactly this shape. */
void tg_assert_shape(const ag_tensor *t, int ndim, const int64_t *shape);
/* Fails unless the tape keeps status st with a message containing substr. */
void tg_assert_tape_error(const ag_tape *t, ag_status st, const char *substr);

/* ---- reference fixtures (safetensors files under tests/reference) ---- */

/* The fixture file at rel (under the source tree), or NULL after printing
 * why it could not be loaded. */
ag_safetensors *tg_load_fixture(const char *rel);
/* Tensor `printf(fmt, ...)` of a loaded fixture file (borrowed from it);
 * fails the test (naming it) when absent. */
ag_tensor *tg_fixture(const ag_safetensors *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Splits a comma list (fixture metadata) into at most max items pointing
 * into buf; returns the count. */
int tg_split_list(const char *text, char *buf, size_t n, char **items, int max);
/* Max over elements of |a - b| / |b|, with |b| below 1e-3 counted as 1e-3. */
double tg_rel_err(const ag_tensor *a, const ag_tensor *b);
/* Fails (printing label) unless tg_rel_err(got, want) <= rtol; keeps the
 * largest error seen in *maxrel. */
void tg_check_rel(const ag_tensor *got, const ag_tensor *want, double rtol, double *maxrel,
                  const char *label);

/* Gives p (made to require grad) the gradient g exactly, by a backward
 * of sum(p * g). */
void tg_set_grad(ag_tensor *p, const ag_tensor *g);

/* An f64 tensor from a literal list. */
ag_tensor *tg_f64(int ndim, const int64_t *shape, const double *data);
/* Copy of t converted to the other dtype. */
ag_tensor *tg_convert(const ag_tensor *t, ag_dtype dt);

/* Routes tapegrad's system allocations through a counter (tg_alloc_count,
 * which the caller may reset) until ag_set_allocator(NULL): how the
 * "zero allocations per step after the first" tests count. */
extern long tg_alloc_count;
void tg_count_allocs(void);

#endif
