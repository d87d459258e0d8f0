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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Writes the first `keep` items of the u8 IDX file src as a plain IDX file. */
static void idx_head(const char *src, const char *dst, int64_t keep)
{
    nn_idx *a = NULL;
    assert_int_equal(nn_idx_load(src, &a), AG_OK);
    assert_int_equal(nn_idx_type_of(a), NN_IDX_U8);
    const int nd = nn_idx_ndim(a);
    const int64_t *shape = nn_idx_shape(a);
    assert_true(shape[0] >= keep);
    FILE *f = fopen(dst, "wb");
    assert_non_null(f);
    fputc(0, f), fputc(0, f), fputc(NN_IDX_U8, f), fputc(nd, f);
    int64_t item = 1;
    for (int d = 0; d < nd; d++) {
        uint32_t v = (uint32_t)(d == 0 ? keep : shape[d]);
        item *= d == 0 ? 1 : shape[d];
        for (int b = 3; b >= 0; b--)
            fputc((int)(v >> (8 * b) & 0xff), f);
    }
    assert_int_equal(fwrite(nn_idx_data(a), 1, (size_t)(keep * item), f), (size_t)(keep * item));
    fclose(f);
    nn_idx_free(a);
}

/* A folder with the first 128 training and test images, made once: the
 * trainer then loads in no time, and the tests below run it many times. */
static const char *small_data(void)
{
    static const char *const files[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    static bool made;
    static char dir[128];
    snprintf(dir, sizeof dir, "%s/data", tmpdir);
    if (made)
        return dir;
    assert_int_equal(mkdir(dir, 0700), 0);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char src[256], dst[256];
        snprintf(src, sizeof src, "%s/%s.gz", NN_FASHION_MNIST_DIR, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        idx_head(src, dst, 128);
    }
    made = true;
    return dir;
}

/* Copies the checkpoint src to dst with trainer.epoch set to v. */
static void set_ckpt_epoch(const char *src, const char *dst, double v)
{
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load(src, &f), AG_OK);
    int n = ag_safetensors_count(f), nm = ag_safetensors_meta_count(f);
    const char *names[64], *keys[8], *vals[8];
    const ag_tensor *ts[64];
    assert_true(n <= 64 && nm <= 8);
    for (int k = 0; k < n; k++) {
        names[k] = ag_safetensors_name(f, k);
        ts[k] = ag_safetensors_get(f, names[k]);
    }
    for (int k = 0; k < nm; k++) {
        keys[k] = ag_safetensors_meta_key(f, k);
        vals[k] = ag_safetensors_meta(f, keys[k]);
    }
    ag_tensor *e = ag_safetensors_get(f, "trainer.epoch");
    assert_non_null(e);
    ag_set(e, 0, v);
    assert_int_equal(ag_safetensors_save(dst, n, names, ts, nm, keys, vals), AG_OK);
    ag_safetensors_free(f);
}

/* --resume of a checkpoint whose trainer.epoch is out of range: -5 wrote
 * past the history array (ASan heap-buffer-overflow in train_epoch), NaN
 * and 1e10 were float-to-int UB, an epoch beyond --epochs was accepted. */
static void test_train_resume_rejects_out_of_range_epoch(void **state)
{
    (void)state;
    if (!have_data())
        skip();
    fm_config c;
    small_config(&c, 128, 2);
    c.data_dir = small_data();
    c.save_path = tmp_path("ep.safetensors");
    c.stop_after = 1;
    assert_int_equal(fm_run_train(&c, NULL, NULL), FM_EXIT_OK);
    c.stop_after = 0;
    c.save_path = NULL;
    static const double bad[] = {-5, NAN, 1e10, 2.5, 3};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        set_ckpt_epoch(tmp_path("ep.safetensors.ckpt"), tmp_path("bad.ckpt"), bad[i]);
        c.resume_path = tmp_path("bad.ckpt");
        fm_epoch_row rows[2];
        int n = -1;
        int rc = fm_run_train(&c, rows, &n);
        if (rc != FM_EXIT_ERROR)
            fail_msg("trainer.epoch = %g: exit %d, want %d", bad[i], rc, FM_EXIT_ERROR);
        assert_int_equal(n, 0);
    }
}

/* Lines of a CSV file into buf (at most max), without the last field
 * (seconds: a timing, different in every run). */
static int csv_lines_sans_seconds(const char *path, char lines[][160], int max)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    while (n < max && fgets(lines[n], 160, f)) {
        char *comma = strrchr(lines[n], ',');
        if (comma && n > 0)
            *comma = '\0';
        n++;
    }
    fclose(f);
    return n;
}

static int saved_epoch(const char *model, const char *ckpt)
{
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load(model, &f), AG_OK);
    const char *ep = ag_safetensors_meta(f, "epoch");
    assert_non_null(ep);
    int me = atoi(ep);
    ag_safetensors_free(f);
    assert_int_equal(ag_safetensors_load(ckpt, &f), AG_OK);
    int ce = (int)ag_get(ag_safetensors_get(f, "trainer.epoch"), 0);
    ag_safetensors_free(f);
    if (me > ce)
        fail_msg("the model (epoch %d) is newer than its checkpoint (epoch %d)", me, ce);
    return ce;
}

/* A run killed after each of its epoch's writes (checkpoint, model, CSV
 * row), then resumed: the model is never newer than its checkpoint, and
 * the log equals an uninterrupted run's, no row twice (the CSV was written
 * first and the checkpoint last, so a kill between them duplicated a row)
 * or missing. */
static void test_train_kill_between_writes_resumes_cleanly(void **state)
{
    (void)state;
    if (!have_data())
        skip();
    fm_config c;
    small_config(&c, 128, 3);
    c.data_dir = small_data();
    c.log_path = tmp_path("ref.csv");
    fm_epoch_row ref[3], r[3];
    int n;
    assert_int_equal(fm_run_train(&c, ref, &n), FM_EXIT_OK);
    char want[8][160], got[8][160];
    int n_want = csv_lines_sans_seconds(c.log_path, want, 8);
    assert_int_equal(n_want, 4);
    for (int k = 1; k <= 3; k++) {
        small_config(&c, 128, 3);
        c.data_dir = small_data();
        c.log_path = tmp_path("kill.csv");
        c.save_path = tmp_path("kill.safetensors");
        remove(c.log_path);
        c.stop_after = 2;
        c.kill_after_write = k;
        assert_int_equal(fm_run_train(&c, r, &n), FM_EXIT_ERROR);
        saved_epoch(c.save_path, tmp_path("kill.safetensors.ckpt"));
        if (k == 3) {
            /* killed during the next epoch's writes: a repeated row and a
             * torn one (no newline) */
            FILE *f = fopen(c.log_path, "a");
            assert_non_null(f);
            fputs("2,9,9,9,9,9\n3,0.5", f);
            fclose(f);
        }
        c.stop_after = 0;
        c.kill_after_write = 0;
        c.resume_path = tmp_path("kill.safetensors.ckpt");
        assert_int_equal(fm_run_train(&c, r, &n), FM_EXIT_OK);
        assert_true(n >= 1);
        assert_rows_equal(&r[n - 1], &ref[2]);
        assert_int_equal(saved_epoch(c.save_path, c.resume_path), 3);
        int n_got = csv_lines_sans_seconds(c.log_path, got, 8);
        if (n_got != n_want)
            fail_msg("kill after write %d: the log has %d lines, want %d", k, n_got, n_want);
        for (int i = 0; i < n_want; i++)
            assert_string_equal(got[i], want[i]);
    }
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
                                        "run.safetensors.ckpt", "ep.safetensors",
                                        "ep.safetensors.ckpt", "bad.ckpt",
                                        "ref.csv", "kill.csv", "kill.safetensors",
                                        "kill.safetensors.ckpt"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        remove(tmp_path(files[i]));
    static const char *const data[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char path[256];
    for (size_t i = 0; i < sizeof data / sizeof *data; i++) {
        snprintf(path, sizeof path, "%s/data/%s", tmpdir, data[i]);
        remove(path);
    }
    rmdir(tmp_path("data"));
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
        cmocka_unit_test(test_train_resume_rejects_out_of_range_epoch),
        cmocka_unit_test(test_train_kill_between_writes_resumes_cleanly),
        cmocka_unit_test(test_explain_report),
        cmocka_unit_test(test_readme_snippet_is_regression_example),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
