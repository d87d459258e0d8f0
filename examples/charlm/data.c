/* data.c — the text: its bytes as indices into its sorted set of distinct
 * bytes, the held-out split, training batches and evaluation windows (the
 * same rules as bench/peers/charlm_torch.py). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "charlm.h"

/* The longest text read: a bound on a mistaken --data, not on the Bible. */
#define MAX_TEXT (1LL << 31)

static int read_all(const char *path, bool is_default, uint8_t **buf, int64_t *n)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        bool missing = stat(path, &sb) != 0;
        fprintf(stderr, "charlm: cannot read %s: %s\n", path,
                missing ? strerror(errno) : "not a regular file");
        if (is_default && missing) {
            fprintf(stderr, "charlm: run sh scripts/charlm_data.sh (Debian's bible-kjv), "
                            "or pass --data FILE\n");
            return CL_EXIT_NO_DATA;
        }
        return CL_EXIT_ERROR;
    }
    if (sb.st_size < 2 || sb.st_size > MAX_TEXT) {
        fprintf(stderr, "charlm: %s has %lld bytes; between 2 and %lld are read\n", path,
                (long long)sb.st_size, MAX_TEXT);
        return CL_EXIT_ERROR;
    }
    FILE *f = fopen(path, "rb");
    *buf = malloc((size_t)sb.st_size);
    size_t got = f && *buf ? fread(*buf, 1, (size_t)sb.st_size, f) : 0;
    if (f)
        fclose(f);
    if (got != (size_t)sb.st_size) {
        fprintf(stderr, "charlm: reading %s failed\n", path);
        free(*buf);
        *buf = NULL;
        return CL_EXIT_ERROR;
    }
    *n = (int64_t)got;
    return CL_EXIT_OK;
}

int cl_text_load(const char *path, bool is_default, cl_text *out)
{
    *out = (cl_text){0};
    uint8_t *raw;
    int64_t n;
    int rc = read_all(path, is_default, &raw, &n);
    if (rc != CL_EXIT_OK)
        return rc;
    bool seen[256] = {false};
    for (int64_t i = 0; i < n; i++)
        seen[raw[i]] = true;
    for (int b = 0; b < 256; b++) {
        out->lookup[b] = -1;
        if (seen[b]) {
            out->lookup[b] = (int16_t)out->vocab_size;
            out->vocab[out->vocab_size++] = (uint8_t)b;
        }
    }
    for (int64_t i = 0; i < n; i++)   /* in place: the bytes become their ids */
        raw[i] = (uint8_t)out->lookup[raw[i]];
    out->ids = raw;
    out->n = n;
    out->n_train = n - n / 10;
    return CL_EXIT_OK;
}

void cl_text_free(cl_text *t)
{
    free(t->ids);
    *t = (cl_text){0};
}

void cl_batch_train(const cl_text *t, int64_t batch, int64_t seq, ag_rng *rng, int64_t *x,
                    int64_t *y)
{
    for (int64_t b = 0; b < batch; b++) {
        int64_t o = (int64_t)ag_rng_below(rng, (uint64_t)(t->n_train - seq));
        for (int64_t i = 0; i < seq; i++) {
            x[b * seq + i] = t->ids[o + i];
            y[b * seq + i] = t->ids[o + i + 1];
        }
    }
}

int64_t cl_eval_windows(const cl_text *t, int64_t seq, int64_t cap, int64_t *starts)
{
    int64_t n = (t->n - t->n_train - 1) / seq;
    int64_t k = cap <= 0 || cap >= n ? n : cap;
    for (int64_t i = 0; starts && i < k; i++)   /* i * n / k: evenly spaced, as the peer */
        starts[i] = i * n / k * seq;            /* n < 2^31: no overflow */
    return k;
}
