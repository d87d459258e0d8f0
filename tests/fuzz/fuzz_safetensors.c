/* fuzz_safetensors.c — libFuzzer target for the safetensors loader.
 *
 * Feeds each input to ag_safetensors_load_mem (the same validation as the
 * file loader, without the file system) and, when it loads, checks what a
 * loaded file promises: every name resolves to its tensor, data sizes add
 * up to the data section, metadata keys resolve.  A crash, sanitizer report,
 * leak or abort() is a finding.
 *
 * Build (clang; the library gets coverage through fuzzer-no-link):
 *   CC=clang CFLAGS=-fsanitize=fuzzer-no-link meson setup build-fuzz \
 *       -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz/fuzz_safetensors
 * Run (the committed corpus as seeds; new finds go to the first folder):
 *   mkdir -p /tmp/st-corpus
 *   UBSAN_OPTIONS=halt_on_error=1 build-fuzz/tests/fuzz/fuzz_safetensors \
 *       -dict=tests/fuzz/safetensors.dict -max_len=4096 -max_total_time=600 \
 *       /tmp/st-corpus tests/data/safetensors tests/fuzz/corpus/safetensors
 * Replay a crash:  build-fuzz/tests/fuzz/fuzz_safetensors crash-<hash>
 *
 * Linked with tests/fuzz/replay.c instead (any compiler), it runs as a test
 * over tests/data/safetensors and tests/fuzz/corpus/safetensors: replay.c
 * feeds it every file named on the command line or found in a named folder. */
#include "autograd.h"
#include "safetensors_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                              \
    do {                                                                      \
        if (!(x)) {                                                           \
            fprintf(stderr, "fuzz_safetensors: %s:%d: %s\n", __FILE__,        \
                    __LINE__, #x);                                            \
            abort();                                                          \
        }                                                                     \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ag_safetensors *f = (ag_safetensors *)&f;
    ag_status st = ag_safetensors_load_mem(data, size, "fuzz", &f);
    if (st != AG_OK) {
        CHECK(f == NULL);
        CHECK(st == AG_ERR_FORMAT || st == AG_ERR_NOMEM);
        CHECK(ag_last_error() != NULL);
        return 0;
    }
    CHECK(f != NULL && size >= 8);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | data[i];
    uint64_t bytes = 0;
    for (int i = 0; i < ag_safetensors_count(f); i++) {
        const char *name = ag_safetensors_name(f, i);
        CHECK(name != NULL);
        ag_tensor *t = ag_safetensors_get(f, name);
        CHECK(t != NULL);
        CHECK(ag_ndim(t) >= 0 && ag_ndim(t) <= AG_MAX_DIMS);
        CHECK(ag_dtype_of(t) == AG_F32 || ag_dtype_of(t) == AG_F64);
        bytes += (uint64_t)ag_numel(t) * ag_dtype_size(ag_dtype_of(t));
    }
    CHECK(bytes == size - 8 - h);
    for (int i = 0; i < ag_safetensors_meta_count(f); i++) {
        const char *key = ag_safetensors_meta_key(f, i);
        CHECK(key != NULL && ag_safetensors_meta(f, key) != NULL);
    }
    CHECK(ag_safetensors_name(f, ag_safetensors_count(f)) == NULL);
    ag_safetensors_free(f);
    return 0;
}
