/* test_trainer.c — the Fashion-MNIST trainer (examples/fashion_mnist),
 * driven in-process through its functions: flag parsing, malformed model
 * files for --eval, one epoch on 2,000 images lowering the loss,
 * determinism, --resume continuing bit for bit, --eval reproducing the
 * final accuracy; and README's regression snippet equal to
 * examples/regression.c.  The training tests skip without the data set
 * (apt-get install dataset-fashion-mnist). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer.h"

static char tmpdir[64];

static bool have_data(void)
{
    return access(NN_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) == 0 &&
           access(NN_FASHION_MNIST_DIR "/t10k-images-idx3-ubyte.gz", R_OK) == 0;
}

static const char *tmp_path(const char *name)
{
    static char buf[4][128];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int parse(fm_config *c, const char *const *args)
{
    char *argv[32] = {"fashion_mnist"};
    int argc = 1;
    while (*args && argc < 31)
        argv[argc++] = (char *)*args++;
    FILE *null = fopen("/dev/null", "w");
    int rc = fm_parse_args(argc, argv, c, null, null);
    fclose(null);
    return rc;
}

static void test_args_defaults_and_values(void **state)
{
    (void)state;
    fm_config c;
    assert_int_equal(parse(&c, (const char *[]){NULL}), -1);
    assert_int_equal(c.n_hidden, 2);
    assert_int_equal(c.hidden[0], 256);
    assert_int_equal(c.hidden[1], 128);
    assert_int_equal(c.optimizer, FM_OPT_ADAM);
    assert_int_equal(parse(&c, (const char *[]){"--hidden", "64,32,16", "--optimizer", "sgd",
                                                "--schedule=step", "--lr=0.05", "--seed",
                                                "9", "--limit", "100", NULL}),
                     -1);
    assert_int_equal(c.n_hidden, 3);
    assert_int_equal(c.hidden[2], 16);
    assert_int_equal(c.optimizer, FM_OPT_SGD);
    assert_int_equal(c.schedule, FM_SCHED_STEP);
    assert_true(c.lr == 0.05);
    assert_int_equal(c.seed, 9);
    assert_int_equal(c.limit, 100);
    assert_int_equal(parse(&c, (const char *[]){"--help", NULL}), FM_EXIT_OK);
}

static void test_args_bad_is_usage_error(void **state)
{
    (void)state;
    static const char *const bad[][3] = {
        {"--bogus", "1"},       {"--epochs", "0"},     {"--epochs", "3x"},
        {"--lr", "-1"},         {"--lr", "nan"},       {"--optimizer", "rmsprop"},
        {"--schedule", "warm"}, {"--hidden", "256,"},  {"--hidden", "256,,128"},
        {"--hidden", "0"},      {"--batch", "abc"},    {"--threads", "-2"},
        {"--explain", "65"},    {"--seed", "-1"},      {"--epochs"},
        {"positional"},         {"--limit", "0"},      {"--data", ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fm_config c;
        int rc = parse(&c, bad[i]);
        if (rc != FM_EXIT_USAGE)
            fail_msg("%s %s: got %d, want 2", bad[i][0], bad[i][1] ? bad[i][1] : "", rc);
    }
    fm_config c;
    assert_int_equal(parse(&c, (const char *[]){"--eval", "m", "--save", "n", NULL}),
                     FM_EXIT_USAGE);
}

/* Writes the first `keep` bytes of src (all when keep < 0) to dst. */
static void copy_prefix(const char *src, const char *dst, long keep)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    assert_non_null(in);
    assert_non_null(out);
    int ch;
    for (long n = 0; (keep < 0 || n < keep) && (ch = fgetc(in)) != EOF; n++)
        fputc(ch, out);
    fclose(in);
    fclose(out);
}

static void test_eval_malformed_model_fails_cleanly(void **state)
{
    (void)state;
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    fm_model *m = fm_model_new(1, (const int64_t[]){32}, AG_F32, &rng);
    fm_config c;
    fm_config_defaults(&c);
    const char *good = tmp_path("good.safetensors");
    assert_int_equal(fm_model_save(m, good, 3, &c), AG_OK);
    fm_model_free(m);
    FILE *null = fopen("/dev/null", "w");
    m = fm_model_load(good, null);           /* the architecture comes from the file */
    assert_non_null(m);
    assert_int_equal(m->n_layers, 2);
    assert_int_equal(m->layers[0]->out, 32);
    fm_model_free(m);
    static const long cuts[] = {0, 4, 8, 40, 200, 3000};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        copy_prefix(good, tmp_path("cut.safetensors"), cuts[i]);
        assert_null(fm_model_load(tmp_path("cut.safetensors"), null));
    }
    /* a valid file that is not this model: fc1 [10, 5] */
    nn_params *p = nn_params_new();
    nn_linear *l = nn_linear_new(p, "fc1", 5, 10, true, &rng);
    assert_int_equal(nn_params_save(p, tmp_path("other.safetensors")), AG_OK);
    assert_null(fm_model_load(tmp_path("other.safetensors"), null));
    assert_null(fm_model_load(tmp_path("missing.safetensors"), null));
    nn_linear_free(l);
    nn_params_free(p);
    fclose(null);
    c.eval_path = tmp_path("cut.safetensors");      /* fails before reading data */
    assert_int_equal(fm_run_eval(&c), FM_EXIT_ERROR);
}

static void small_config(fm_config *c, int64_t limit, int epochs)
{
    fm_config_defaults(c);
    c->limit = limit;
    c->test_limit = limit;
    c->epochs = epochs;
    c->batch = 64;
    c->threads = 1;
    c->quiet = true;
}

static void test_train_one_epoch_lowers_loss(void **state)
{
    (void)state;
    if (!have_data())
        skip();
    fm_config c;
    small_config(&c, 2000, 1);
    c.test_limit = 500;
    /* the loss of the untrained model: same seed, same initialisation */
    ag_rng rng;
    ag_rng_seed(&rng, c.seed);
    fm_model *m = fm_model_new(c.n_hidden, c.hidden, AG_F32, &rng);
    nn_dataset *test = NULL;
    assert_int_equal(fm_load_data(NULL, false, c.test_limit, &test), FM_EXIT_OK);
    ag_tape *tape = ag_tape_new();
    fm_metrics before;
    assert_int_equal(fm_evaluate(m, test, tape, &before), AG_OK);
    fm_epoch_row row;
    int n = 0;
    assert_int_equal(fm_run_train(&c, &row, &n), FM_EXIT_OK);
    assert_int_equal(n, 1);
    printf("test loss %.4f -> %.4f, accuracy %.3f -> %.3f\n", before.loss, row.test_loss,
           before.acc, row.test_acc);
    assert_true(before.loss > 2.0);
    assert_true(row.test_loss < 0.5 * before.loss);
    assert_true(row.train_loss < before.loss);
    assert_true(row.test_acc > 0.6);
    ag_tape_free(tape);
    nn_dataset_free(test);
    fm_model_free(m);
}

static void assert_rows_equal(const fm_epoch_row *a, const fm_epoch_row *b)
{
    assert_int_equal(a->epoch, b->epoch);
    assert_memory_equal(&a->train_loss, &b->train_loss, sizeof a->train_loss);
    assert_memory_equal(&a->train_acc, &b->train_acc, sizeof a->train_acc);
    assert_memory_equal(&a->test_loss, &b->test_loss, sizeof a->test_loss);
    assert_memory_equal(&a->test_acc, &b->test_acc, sizeof a->test_acc);
}

static void test_train_deterministic_resume_and_eval(void **state)
{
    (void)state;
    if (!have_data())
        skip();
    fm_config c;
    small_config(&c, 192, 2);
    fm_epoch_row a[2], b[2], r[2];
    int na, nb, nr;
    assert_int_equal(fm_run_train(&c, a, &na), FM_EXIT_OK);
    c.save_path = tmp_path("run.safetensors");
    assert_int_equal(fm_run_train(&c, b, &nb), FM_EXIT_OK);
    assert_int_equal(na, 2);
    assert_int_equal(nb, 2);
    for (int i = 0; i < 2; i++)
        assert_rows_equal(&a[i], &b[i]);
    /* --eval of the saved model: the same accuracy, exactly */
    FILE *null = fopen("/dev/null", "w");
    fm_model *m = fm_model_load(c.save_path, null);
    fclose(null);
    assert_non_null(m);
    nn_dataset *test = NULL;
    assert_int_equal(fm_load_data(NULL, false, c.test_limit, &test), FM_EXIT_OK);
    ag_tape *tape = ag_tape_new();
    fm_metrics mt;
    assert_int_equal(fm_evaluate(m, test, tape, &mt), AG_OK);
    assert_memory_equal(&mt.acc, &b[1].test_acc, sizeof mt.acc);
    assert_memory_equal(&mt.loss, &b[1].test_loss, sizeof mt.loss);
    ag_tape_free(tape);
    nn_dataset_free(test);
    fm_model_free(m);
    /* interrupted after one epoch of two, then resumed: the same second epoch */
    c.stop_after = 1;
    assert_int_equal(fm_run_train(&c, r, &nr), FM_EXIT_OK);
    c.stop_after = 0;
    c.resume_path = tmp_path("run.safetensors.ckpt");
    c.save_path = NULL;
    assert_int_equal(fm_run_train(&c, r, &nr), FM_EXIT_OK);
    assert_int_equal(nr, 1);
    assert_rows_equal(&r[0], &a[1]);
}

static void test_explain_report(void **state)
{
    (void)state;
    if (!have_data())
        skip();
    ag_rng rng;
    ag_rng_seed(&rng, 3);
    fm_model *m = fm_model_new(1, (const int64_t[]){16}, AG_F32, &rng);
    nn_dataset *test = NULL;
    assert_int_equal(fm_load_data(NULL, false, 100, &test), FM_EXIT_OK);
    FILE *out = tmpfile();
    assert_non_null(out);
    assert_int_equal(fm_explain(m, test, 16, 3, out), AG_OK);
    rewind(out);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, out);
    buf[n] = '\0';
    fclose(out);
    printf("%s", buf);
    assert_non_null(strstr(buf, "per-tensor gradients"));
    assert_non_null(strstr(buf, "fc1.weight"));
    assert_non_null(strstr(buf, " 3. "));
    assert_non_null(strstr(buf, "first-order prediction"));
    nn_dataset_free(test);
    fm_model_free(m);
}

/* README's first C block is examples/regression.c after its comment. */
static void test_readme_snippet_is_regression_example(void **state)
{
    (void)state;
    char path[512], *readme = NULL, *example = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/README.md", TG_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_true(getdelim(&readme, &len, '\0', f) > 0);
    fclose(f);
    snprintf(path, sizeof path, "%s/examples/regression.c", TG_SOURCE_DIR);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_true(getdelim(&example, &len, '\0', f) > 0);
    fclose(f);
    char *start = strstr(readme, "```c\n");
    assert_non_null(start);
    start += 5;
    char *end = strstr(start, "```");
    assert_non_null(end);
    *end = '\0';
    char *body = strstr(example, "*/\n");
    assert_non_null(body);
    assert_string_equal(body + 3, start);
    free(readme);
    free(example);
}

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_trainer_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    static const char *const files[] = {"good.safetensors", "cut.safetensors",
                                        "other.safetensors", "run.safetensors",
                                        "run.safetensors.ckpt"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        remove(tmp_path(files[i]));
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_args_defaults_and_values),
        cmocka_unit_test(test_args_bad_is_usage_error),
        cmocka_unit_test(test_eval_malformed_model_fails_cleanly),
        cmocka_unit_test(test_train_one_epoch_lowers_loss),
        cmocka_unit_test(test_train_deterministic_resume_and_eval),
        cmocka_unit_test(test_explain_report),
        cmocka_unit_test(test_readme_snippet_is_regression_example),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
