/* fuzz_optim_checkpoint.c — libFuzzer target for the optimizer checkpoint
 * reader (optim_checkpoint_load).
 *
 * optim_checkpoint_load reads a path into existing objects, so each input
 * is written to one temporary file and loaded into fresh objects of
 * fuzz_optim.h: the two parameters "w" (f32 [2, 3]) and "b" (f64 [3]), the
 * optimizer the file's "optim.kind" metadata names (SGD when it names none
 * or an unknown one, so a mismatch is tried too), the schedule of the kind
 * its "sched.kind" starts with (none without one) and a generator.  The
 * metadata are read with ag_safetensors_load_mem, only to choose these.
 *
 * A failed load must return AG_ERR_FORMAT or AG_ERR_NOMEM with a message
 * and change nothing (parameters, lr, state, schedule, generator).  A load
 * that succeeds must have taken the file's parameters, step counts, state
 * buffers and generator state; the hyper-parameters and state must be in
 * their valid ranges (lr and momentum finite and >= 0, Adam's beta1 in
 * [0, 1), every state buffer finite, squared averages and sums >= 0, the
 * schedule's lr finite); what was loaded must save and load back into
 * fresh objects unchanged; and a step of the optimizer, the schedule and
 * the generator must then run.
 * A crash, sanitizer report, leak or abort() is a finding.
 *
 * Build (clang; the library gets coverage through fuzzer-no-link):
 *   CC=clang meson setup build-fuzz -Db_sanitize=address,undefined \
 *       -Db_lundef=false -Dc_args='-fsanitize=fuzzer-no-link -fno-sanitize-recover=all'
 *   ninja -C build-fuzz tests/fuzz/fuzz_optim_checkpoint
 * Run (the committed corpus as seeds; new finds go to the first folder):
 *   mkdir -p /tmp/ckpt-corpus
 *   build-fuzz/tests/fuzz/fuzz_optim_checkpoint -dict=tests/fuzz/optim_checkpoint.dict \
 *       -max_len=8192 -max_total_time=900 /tmp/ckpt-corpus tests/fuzz/corpus/optim_checkpoint
 * Replay a crash:  build-fuzz/tests/fuzz/fuzz_optim_checkpoint crash-<hash>
 * The seeds come from tests/fuzz/fuzz_seeds.c (see there).
 *
 * Linked with tests/fuzz/replay.c instead (any compiler), it runs as a test
 * over tests/fuzz/corpus/optim_checkpoint. */
#include "fuzz_optim.h"
#include "safetensors_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        if (!(x)) {                                                                \
            fprintf(stderr, "fuzz_optim_checkpoint: %s:%d: %s\n", __FILE__, __LINE__, \
                    #x);                                                           \
            abort();                                                               \
        }                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char tmp_path[2][64];

static void remove_tmp(void)
{
    unlink(tmp_path[0]);
    unlink(tmp_path[1]);
}

static void make_tmp(void)
{
    for (int i = 0; i < 2; i++) {
        snprintf(tmp_path[i], sizeof tmp_path[i], "/tmp/fuzz_ckpt_XXXXXX");
        int fd = mkstemp(tmp_path[i]);
        CHECK(fd >= 0);
        close(fd);
    }
    atexit(remove_tmp);
}

static void write_input(const uint8_t *data, size_t size)
{
    FILE *f = fopen(tmp_path[0], "wb");
    CHECK(f != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);
}

/* The objects a checkpoint is loaded into. */
typedef struct run {
    ag_tensor *p[FZ_NPARAMS];
    optim *o;
    optim_sched *s;
    ag_rng rng;
} run;

static void run_new(run *r, const char *kind, const char *sched)
{
    memset(r, 0, sizeof *r);
    CHECK(fz_make_params(r->p));
    CHECK((r->o = fz_make_optim(kind, r->p, 1)) != NULL);
    r->s = fz_make_sched(sched, r->o);
    CHECK(!sched || r->s != NULL);
    ag_rng_seed(&r->rng, 7);
}

static void run_free(run *r)
{
    optim_sched_free(r->s);
    optim_free(r->o);
    fz_free_params(r->p);
}

static const char *const buf_names[] = {"momentum_buffer", "exp_avg", "exp_avg_sq",
                                        "max_exp_avg_sq", "square_avg", "grad_avg", "sum"};
#define N_BUFS (int)(sizeof buf_names / sizeof buf_names[0])

static bool same_data(const ag_tensor *a, const ag_tensor *b)
{
    if (!a || !b)
        return a == b;
    if (ag_dtype_of(a) != ag_dtype_of(b) || ag_numel(a) != ag_numel(b))
        return false;
    return memcmp(ag_data_const(a), ag_data_const(b),
                  (size_t)ag_numel(a) * ag_dtype_size(ag_dtype_of(a))) == 0;
}

/* Same lr bits (NaN included). */
static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Everything a load may change is as in b. */
static void check_same(const run *a, const run *b)
{
    for (int i = 0; i < FZ_NPARAMS; i++) {
        CHECK(same_data(a->p[i], b->p[i]));
        CHECK(optim_state_steps(a->o, a->p[i]) == optim_state_steps(b->o, b->p[i]));
        for (int k = 0; k < N_BUFS; k++)
            CHECK(same_data(optim_state(a->o, a->p[i], buf_names[k]),
                            optim_state(b->o, b->p[i], buf_names[k])));
    }
    CHECK(same_double(optim_get_lr(a->o), optim_get_lr(b->o)));
    CHECK(same_double(optim_get_momentum(a->o), optim_get_momentum(b->o)));
    CHECK((a->s == NULL) == (b->s == NULL));
    if (a->s) {
        CHECK(same_double(optim_sched_get_last_lr(a->s), optim_sched_get_last_lr(b->s)));
        CHECK(optim_sched_last_epoch(a->s) == optim_sched_last_epoch(b->s));
    }
    CHECK(memcmp(&a->rng, &b->rng, sizeof a->rng) == 0);
}

static bool all_finite(const ag_tensor *t, bool nonneg)
{
    for (int64_t i = 0; i < ag_numel(t); i++) {
        double v = ag_get(t, i);
        if (!isfinite(v) || (nonneg && v < 0))
            return false;
    }
    return true;
}

/* What a successful load promises, against the file f. */
static void check_loaded(const run *r, const ag_safetensors *f)
{
    for (int i = 0; i < FZ_NPARAMS; i++) {
        CHECK(same_data(r->p[i], ag_safetensors_get(f, fz_names[i])));
        char key[64];
        snprintf(key, sizeof key, "optim.state.%s.step", fz_names[i]);
        const ag_tensor *st = ag_safetensors_get(f, key);
        CHECK(optim_state_steps(r->o, r->p[i]) == (st ? (int64_t)ag_get(st, 0) : 0));
        for (int k = 0; k < N_BUFS; k++) {
            const ag_tensor *b = optim_state(r->o, r->p[i], buf_names[k]);
            if (!b)
                continue;
            snprintf(key, sizeof key, "optim.state.%s.%s", fz_names[i], buf_names[k]);
            CHECK(same_data(b, ag_safetensors_get(f, key)));
            bool squares = k >= 2 && k != 5; /* exp_avg_sq, max_exp_avg_sq, square_avg, sum */
            CHECK(all_finite(b, squares));
        }
    }
    double lr = optim_get_lr(r->o), mom = optim_get_momentum(r->o);
    CHECK(isfinite(lr) && lr >= 0);
    const char *kind = optim_name(r->o);
    if (strncmp(kind, "adam", 4) == 0)
        CHECK(mom >= 0 && mom < 1); /* beta1 */
    else if (strcmp(kind, "adagrad") != 0)
        CHECK(isfinite(mom) && mom >= 0);
    if (r->s) {
        double slr = optim_sched_get_last_lr(r->s);
        CHECK(isfinite(slr) && slr >= 0 && optim_sched_last_epoch(r->s) >= 0);
    }
    uint64_t w[4];
    const char *text = ag_safetensors_meta(f, "rng");
    CHECK(text && sscanf(text, "%" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64, &w[0], &w[1],
                         &w[2], &w[3]) == 4);
    CHECK(memcmp(w, r->rng.s, sizeof w) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tmp_path[0][0])
        make_tmp();
    ag_safetensors *f = NULL;
    if (ag_safetensors_load_mem(data, size, "fuzz", &f) != AG_OK)
        f = NULL;
    const char *kind = f ? ag_safetensors_meta(f, "optim.kind") : NULL;
    const char *sched = f ? ag_safetensors_meta(f, "sched.kind") : NULL;
    run r, before;
    run_new(&r, kind, sched);
    run_new(&before, kind, sched);
    write_input(data, size);

    ag_status st = optim_checkpoint_load(tmp_path[0], fz_names, r.p, FZ_NPARAMS, r.o, r.s,
                                         &r.rng);
    if (st != AG_OK) {
        CHECK(st == AG_ERR_FORMAT || st == AG_ERR_NOMEM);
        CHECK(ag_last_error() != NULL && ag_last_error()[0] != '\0');
        check_same(&r, &before);
    } else {
        CHECK(f != NULL); /* the reader accepted what the safetensors loader refuses */
        check_loaded(&r, f);
        /* What was loaded saves and loads back unchanged. */
        CHECK(optim_checkpoint_save(tmp_path[1], fz_names, r.p, FZ_NPARAMS, r.o, r.s,
                                    &r.rng) == AG_OK);
        CHECK(optim_checkpoint_load(tmp_path[1], fz_names, before.p, FZ_NPARAMS, before.o,
                                    before.s, &before.rng) == AG_OK);
        check_same(&r, &before);
        /* And training goes on from it. */
        CHECK(fz_grads(r.p) == AG_OK);
        CHECK(optim_step(r.o) == AG_OK);
        if (r.s) {
            ag_status ss = optim_sched_step_once(r.s);
            CHECK(ss == AG_OK || ss == AG_ERR_STATE || ss == AG_ERR_NUMERIC);
        }
        (void)ag_rng_next(&r.rng);
    }
    run_free(&before);
    run_free(&r);
    ag_safetensors_free(f);
    return 0;
}
