/* fuzz_idx.c — libFuzzer target for the IDX reader (nn_idx_load).
 *
 * nn_idx_load reads a path (gzipped or plain, told apart by the gzip
 * magic), so each input is written to one temporary file and loaded from
 * there.  When it loads, the target checks what a loaded array promises:
 * a known type, 1..8 dims whose product is numel, data within
 * NN_IDX_MAX_BYTES, data present exactly when numel > 0 (every element is
 * read, so ASan sees any short buffer), and for a plain file an exact size
 * (header + data, nothing after).  A failure must leave *out NULL with a
 * message.  A crash, sanitizer report, leak or abort() is a finding.
 *
 * Build (clang; the library gets coverage through fuzzer-no-link):
 *   CC=clang CFLAGS=-fsanitize=fuzzer-no-link meson setup build-fuzz \
 *       -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz/fuzz_idx
 * Run (the committed IDX files as seeds; new finds go to the first folder):
 *   mkdir -p /tmp/idx-corpus
 *   UBSAN_OPTIONS=halt_on_error=1 build-fuzz/tests/fuzz/fuzz_idx \
 *       -dict=tests/fuzz/idx.dict -max_len=4096 -max_total_time=600 \
 *       /tmp/idx-corpus tests/data/idx tests/fuzz/corpus/idx
 * Replay a crash:  build-fuzz/tests/fuzz/fuzz_idx crash-<hash>
 *
 * Linked with tests/fuzz/replay.c instead (any compiler), it runs as a
 * test over tests/data/idx and tests/fuzz/corpus/idx: replay.c feeds it every
 * file named on the command line or found in a named folder. */
#include "nn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(x)                                                              \
    do {                                                                      \
        if (!(x)) {                                                           \
            fprintf(stderr, "fuzz_idx: %s:%d: %s\n", __FILE__, __LINE__, #x); \
            abort();                                                          \
        }                                                                     \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char tmp_path[64];

static void remove_tmp(void)
{
    unlink(tmp_path);
}

/* Writes the input to the one temporary file of this process. */
static void write_input(const uint8_t *data, size_t size)
{
    if (!tmp_path[0]) {
        snprintf(tmp_path, sizeof tmp_path, "/tmp/fuzz_idx_XXXXXX");
        int fd = mkstemp(tmp_path);
        CHECK(fd >= 0);
        close(fd);
        atexit(remove_tmp);
    }
    FILE *f = fopen(tmp_path, "wb");
    CHECK(f != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);
}

static void check_loaded(const nn_idx *a, const uint8_t *data, size_t size)
{
    size_t es = nn_idx_type_size(nn_idx_type_of(a));
    CHECK(es == 1 || es == 2 || es == 4 || es == 8);
    int nd = nn_idx_ndim(a);
    CHECK(nd >= 1 && nd <= NN_IDX_MAX_DIMS);
    int64_t numel = 1;            /* a zero dim makes any other dims fine */
    bool zero = false, overflow = false;
    for (int d = 0; d < nd; d++) {
        CHECK(nn_idx_shape(a)[d] >= 0);
        zero |= nn_idx_shape(a)[d] == 0;
        overflow |= __builtin_mul_overflow(numel, nn_idx_shape(a)[d], &numel);
    }
    if (zero)
        numel = 0;
    CHECK(!overflow || zero);
    CHECK(numel == nn_idx_numel(a));
    CHECK(numel <= NN_IDX_MAX_BYTES / (int64_t)es);
    CHECK((nn_idx_data(a) != NULL) == (numel > 0));
    double sum = 0;
    for (int64_t i = 0; i < numel; i++)
        sum += nn_idx_get(a, i) != 0;
    CHECK(sum <= (double)numel);
    bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    if (!gz)
        CHECK(size == 4 + 4 * (size_t)nd + (size_t)numel * es);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    write_input(data, size);
    nn_idx *a = (nn_idx *)&a;
    ag_status st = nn_idx_load(tmp_path, &a);
    if (st != AG_OK) {
        CHECK(a == NULL);
        CHECK(st == AG_ERR_FORMAT || st == AG_ERR_NOMEM);
        CHECK(ag_last_error() != NULL);
        return 0;
    }
    CHECK(a != NULL);
    check_loaded(a, data, size);
    nn_idx_free(a);
    return 0;
}
