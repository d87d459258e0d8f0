/* memory.c — the one door to system memory, so a test can count it and a
 * user can route it elsewhere; plus the per-thread error message. */
#include "autograd_internal.h"
#include "kernels/kernels_internal.h"

static void *default_alloc(size_t size, size_t align, void *ctx)
{
    (void)ctx;
    /* aligned_alloc wants size to be a multiple of align */
    size_t rounded = (size + align - 1) / align * align;
    return aligned_alloc(align, rounded ? rounded : align);
}

static void default_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static ag_allocator g_alloc = {default_alloc, default_free, NULL};

void ag_set_allocator(const ag_allocator *a)
{
    /* pack buffers made by the old allocator must go back to it */
    ag_gemm_release_buffers();
    if (a && a->alloc && a->free)
        g_alloc = *a;
    else
        g_alloc = (ag_allocator){default_alloc, default_free, NULL};
}

void *ag_mem_alloc(size_t size)
{
    if (size > (size_t)PTRDIFF_MAX - AG_ALIGN)
        return NULL;
    return g_alloc.alloc(size, AG_ALIGN, g_alloc.ctx);
}

void *ag_mem_calloc(size_t size)
{
    void *p = ag_mem_alloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

void ag_mem_free(void *p)
{
    if (p)
        g_alloc.free(p, g_alloc.ctx);
}

/* ---- errors ---- */

static _Thread_local char t_msg[512];
static _Thread_local bool t_has_msg;

const char *ag_last_error(void)
{
    return t_has_msg ? t_msg : NULL;
}

void ag_clear_last_error(void)
{
    t_has_msg = false;
    t_msg[0] = '\0';
}

void ag_set_last_error(const char *fmt, ...)
{
    if (!fmt)
        fmt = "ag_set_last_error: fmt is NULL";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_msg, sizeof t_msg, fmt, ap);
    va_end(ap);
    t_has_msg = true;
}

const char *ag_status_str(ag_status s)
{
    switch (s) {
    case AG_OK: return "ok";
    case AG_ERR_SHAPE: return "shape mismatch";
    case AG_ERR_DTYPE: return "dtype mismatch";
    case AG_ERR_ARG: return "bad argument";
    case AG_ERR_NOMEM: return "out of memory";
    case AG_ERR_NULL: return "NULL input";
    case AG_ERR_FORMAT: return "malformed file";
    case AG_ERR_IO: return "I/O error";
    case AG_ERR_NUMERIC: return "NaN or Inf";
    case AG_ERR_GRADIENT: return "gradient mismatch";
    case AG_ERR_RETAPE: return "branch changed: record again";
    case AG_ERR_STATE: return "call out of order";
    }
    return "unknown status";
}
