/* test_dist_trainer.c — the trainer's --dist under mpirun writes models
 * byte-identical to --shards R in one process: 2 ranks, 4 ranks on the 2
 * cores (oversubscribed), a run resumed under mpirun, and the CNN.
 * usage: test_dist_trainer MPIRUN FASHION_MNIST (meson passes both).  The
 * runs are short (--limit); skipped without the data set. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn_data.h"

static const char *g_mpirun, *g_trainer;
static char tmpdir[64];

/* Common flags: small, one thread, test set cut short. */
#define SMALL "--epochs 1 --limit 1500 --test-limit 300 --threads 1"

static const char *tmp_path(const char *name)
{
    static char buf[4][160];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* Runs the trainer (under mpirun with np ranks when np > 0) with args,
 * output into the log (printed when the exit status is not 0). */
static int run(int np, const char *args)
{
    char cmd[1024];
    const char *log = tmp_path("log.txt");
    if (np > 0)
        snprintf(cmd, sizeof cmd, "%s --oversubscribe --bind-to none -np %d %s --dist %s > %s 2>&1",
                 g_mpirun, np, g_trainer, args, log);
    else
        snprintf(cmd, sizeof cmd, "%s %s > %s 2>&1", g_trainer, args, log);
    int st = system(cmd);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rc != 0) {
        printf("'%s' exited with %d:\n", cmd, rc);
        FILE *f = fopen(log, "r");
        for (int c; f && (c = fgetc(f)) != EOF;)
            putchar(c);
        if (f)
            fclose(f);
    }
    return rc;
}

static void assert_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    long at = 0;
    int ca, cb;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        if (ca != cb)
            printf("%s and %s differ at byte %ld\n", a, b, at);
        assert_int_equal(ca, cb);
        at++;
    } while (ca != EOF);
    fclose(fa);
    fclose(fb);
}

static bool have_data(void)
{
    return access(NN_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) == 0 &&
           access(NN_FASHION_MNIST_DIR "/t10k-images-idx3-ubyte.gz", R_OK) == 0;
}

/* mpirun -np R --dist and --shards R save the same bytes. */
static void same_model(int ranks, const char *extra)
{
    if (!have_data())
        skip();
    char args[512];
    snprintf(args, sizeof args, SMALL " %s --save %s", extra, tmp_path("dist.safetensors"));
    assert_int_equal(run(ranks, args), 0);
    snprintf(args, sizeof args, SMALL " %s --shards %d --save %s", extra, ranks,
             tmp_path("shards.safetensors"));
    assert_int_equal(run(0, args), 0);
    assert_same_file(tmp_path("dist.safetensors"), tmp_path("shards.safetensors"));
}

static void test_dist_2_ranks_equal_2_shards(void **state)
{
    (void)state;
    same_model(2, "");
}

static void test_dist_4_ranks_equal_4_shards(void **state)
{
    (void)state;
    same_model(4, "");
}

/* 1500 = 2 x 749 + 2 over 3 ranks: shards of 249, 250, 250 rows, and in
 * the last batch 0, 1, 1. */
static void test_dist_uneven_and_empty_shards(void **state)
{
    (void)state;
    same_model(3, "--batch 749");
}

static void test_dist_cnn_equal_shards(void **state)
{
    (void)state;
    same_model(2, "--model cnn --batch 64 --limit 256 --test-limit 128");
}

/* A run resumed under mpirun ends where one straight run does. */
static void test_dist_resume_equal_straight_run(void **state)
{
    (void)state;
    if (!have_data())
        skip();
    char args[512];
    const char *base = "--limit 1000 --test-limit 200 --threads 1 --schedule none";
    snprintf(args, sizeof args, "%s --epochs 1 --save %s", base, tmp_path("r.safetensors"));
    assert_int_equal(run(2, args), 0);
    snprintf(args, sizeof args, "%s --epochs 2 --resume %s --save %s", base,
             tmp_path("r.safetensors.ckpt"), tmp_path("r.safetensors"));
    assert_int_equal(run(2, args), 0);
    snprintf(args, sizeof args, "%s --epochs 2 --shards 2 --save %s", base,
             tmp_path("s.safetensors"));
    assert_int_equal(run(0, args), 0);
    assert_same_file(tmp_path("r.safetensors"), tmp_path("s.safetensors"));
}

static void test_dist_flags_refused_together(void **state)
{
    (void)state;
    assert_int_equal(run(0, "--dist --shards 2"), 2);
    assert_int_equal(run(0, "--shards 0"), 2);
    assert_int_equal(run(0, "--shards 2 --eval x.safetensors"), 2);
}

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_dist_trainer_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    static const char *const files[] = {"log.txt", "dist.safetensors", "dist.safetensors.ckpt",
                                        "shards.safetensors", "shards.safetensors.ckpt",
                                        "r.safetensors", "r.safetensors.ckpt",
                                        "s.safetensors", "s.safetensors.ckpt"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        remove(tmp_path(files[i]));
    return rmdir(tmpdir);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MPIRUN FASHION_MNIST\n", argv[0]);
        return 2;
    }
    g_mpirun = argv[1];
    g_trainer = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dist_2_ranks_equal_2_shards),
        cmocka_unit_test(test_dist_4_ranks_equal_4_shards),
        cmocka_unit_test(test_dist_uneven_and_empty_shards),
        cmocka_unit_test(test_dist_cnn_equal_shards),
        cmocka_unit_test(test_dist_resume_equal_straight_run),
        cmocka_unit_test(test_dist_flags_refused_together),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
