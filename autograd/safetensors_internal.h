/* safetensors_internal.h — what the tests and the fuzz target see of
 * safetensors.c beyond the public API: a loader over memory and the hooks
 * that simulate a failing or interrupted save.  Never installed. */
#ifndef TAPEGRAD_SAFETENSORS_INTERNAL_H
#define TAPEGRAD_SAFETENSORS_INTERNAL_H

#include "autograd.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Largest JSON header the loader accepts (the reference implementation's
 * cap as well). */
#define AG_SAFETENSORS_MAX_HEADER 100000000u

/* ag_safetensors_load over a buffer of size bytes; label names it in
 * messages.  Same validation, statuses and ownership as the file loader. */
ag_status ag_safetensors_load_mem(const void *data, size_t size, const char *label,
                                  ag_safetensors **out);

/* Test hook: when >= 0, the saver writes at most this many bytes of the
 * temporary file and then fails as a full disk would (AG_ERR_IO, message
 * containing "simulated").  -1 (the default) turns it off.  Not thread-safe:
 * tests only. */
extern int64_t ag_safetensors_fail_after_bytes;

/* Test hook: when set, called by the saver after each chunk it hands to
 * the temporary file, with the bytes written so far (a test can stop or
 * kill the process there).  NULL by default.  Tests only. */
extern void (*ag_safetensors_write_hook)(uint64_t written);

/* ---- shared by safetensors_load.c and safetensors_save.c ---- */

#define AG_ST_META_KEY "__metadata__"
#define AG_ST_CHUNK ((size_t)1 << 20) /* bytes per fread/fwrite of tensor data */

static inline bool ag_st_host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Reverses each `size`-byte element of buf (n bytes) in place. */
static inline void ag_st_swap_elems(unsigned char *buf, size_t n, size_t size)
{
    for (size_t i = 0; i + size <= n; i += size)
        for (size_t a = i, b = i + size - 1; a < b; a++, b--) {
            unsigned char t = buf[a];
            buf[a] = buf[b];
            buf[b] = t;
        }
}

/* strerror, thread-safe. */
static inline const char *ag_st_err_text(int e, char *buf, size_t n)
{
    if (strerror_r(e, buf, n) != 0)
        snprintf(buf, n, "error %d", e);
    return buf;
}

#endif
