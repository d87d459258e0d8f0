/* test_safetensors.c — the checkpoint format: round trips, the exact file
 * layout, atomic saves under simulated and real failures, and a corpus of
 * malformed files (tests/data/safetensors/, from
 * tests/data/make_malformed_safetensors.py) that must each be refused with
 * the right status and a message that says what is wrong.
 *
 * Every test runs under a counting allocator and fails if a byte allocated
 * through ag_mem_alloc is still live at its end.
 *
 * TG_ST_INTEROP_DIR=<dir> turns on the PyTorch interop test (driven by
 * tests/reference/check_torch_interop.py): it loads <dir>/torch_written.safetensors
 * and writes <dir>/tapegrad_written.safetensors.
 * TG_TEST_FILTER=<glob> runs only the matching tests. */
#include "test_util.h"

#include "safetensors_internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- counting (and optionally failing) allocator ---- */

static long g_live;       /* allocations not yet freed */
static long g_count;      /* allocations made */
static long g_fail_at = -1; /* the allocation with this index returns NULL */

static void *count_alloc(size_t size, size_t align, void *ctx)
{
    (void)ctx;
    if (g_count++ == g_fail_at)
        return NULL;
    size_t rounded = (size + align - 1) / align * align;
    void *p = aligned_alloc(align, rounded ? rounded : align);
    if (p)
        g_live++;
    return p;
}

static void count_free(void *p, void *ctx)
{
    (void)ctx;
    if (p)
        g_live--;
    free(p);
}

static int setup(void **state)
{
    (void)state;
    g_live = g_count = 0;
    g_fail_at = -1;
    ag_set_allocator(&(ag_allocator){count_alloc, count_free, NULL});
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ag_safetensors_fail_after_bytes = -1;
    ag_safetensors_write_hook = NULL;
    long live = g_live;
    ag_set_allocator(NULL);
    if (live != 0)
        fail_msg("%ld allocation(s) leaked", live);
    return 0;
}

/* ---- helpers ---- */

typedef struct tmpdir {
    char path[64];
} tmpdir;

static void tmpdir_new(tmpdir *d)
{
    snprintf(d->path, sizeof d->path, "/tmp/tg_st_XXXXXX");
    assert_non_null(mkdtemp(d->path));
}

static const char *tmpdir_file(const tmpdir *d, const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", d->path, name);
    return buf;
}

/* Number of entries in d whose name contains `part`. */
static int tmpdir_count(const tmpdir *d, const char *part)
{
    DIR *dir = opendir(d->path);
    assert_non_null(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.' && strstr(e->d_name, part))
            n++;
    closedir(dir);
    return n;
}

static void tmpdir_remove(tmpdir *d)
{
    DIR *dir = opendir(d->path);
    assert_non_null(dir);
    char path[512];
    for (struct dirent *e; (e = readdir(dir));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", d->path, e->d_name);
        if (remove(path) != 0)
            fail_msg("cannot remove %s: %s", path, strerror(errno));
    }
    closedir(dir);
    assert_int_equal(rmdir(d->path), 0);
}

static void assert_error_has(const char *part)
{
    const char *msg = ag_last_error();
    if (!msg || !strstr(msg, part))
        fail_msg("expected an error containing \"%s\", got \"%s\"", part,
                 msg ? msg : "(none)");
}

/* Bit-for-bit equality of dtype, shape and data. */
static void assert_tensor_identical(const ag_tensor *a, const ag_tensor *b)
{
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(ag_dtype_of(a), ag_dtype_of(b));
    assert_int_equal(ag_ndim(a), ag_ndim(b));
    for (int i = 0; i < ag_ndim(a); i++)
        assert_int_equal(ag_shape(a)[i], ag_shape(b)[i]);
    assert_int_equal(ag_numel(a), ag_numel(b));
    size_t bytes = (size_t)ag_numel(a) * ag_dtype_size(ag_dtype_of(a));
    assert_memory_equal(ag_data_const(a), ag_data_const(b), bytes ? bytes : 1);
}

static ag_tensor *ramp(ag_dtype dt, int ndim, const int64_t *shape, double scale)
{
    ag_tensor *t = ag_tensor_new(dt, ndim, shape);
    assert_non_null(t);
    for (int64_t i = 0; i < ag_numel(t); i++)
        ag_set(t, i, (double)i * scale - 1.0);
    return t;
}

static unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *n = (size_t)size;
    return buf;
}

/* A two-tensor checkpoint with metadata, the "old file" of several tests. */
typedef struct ckpt {
    ag_tensor *t[2];
    const char *names[2];
} ckpt;

static void ckpt_make(ckpt *c, double scale)
{
    c->t[0] = ramp(AG_F32, 2, (int64_t[]){3, 5}, scale);
    c->t[1] = ramp(AG_F64, 1, (int64_t[]){7}, scale);
    c->names[0] = "fc.weight";
    c->names[1] = "fc.bias";
}

static ag_status ckpt_save(const ckpt *c, const char *path)
{
    return ag_safetensors_save(path, 2, c->names, (const ag_tensor *const *)c->t, 1,
                               (const char *[]){"step"}, (const char *[]){"12"});
}

static void ckpt_assert_file(const ckpt *c, const char *path)
{
    ag_safetensors *f = NULL;
    if (ag_safetensors_load(path, &f) != AG_OK)
        fail_msg("%s", ag_last_error());
    assert_int_equal(ag_safetensors_count(f), 2);
    for (int i = 0; i < 2; i++)
        assert_tensor_identical(ag_safetensors_get(f, c->names[i]), c->t[i]);
    assert_string_equal(ag_safetensors_meta(f, "step"), "12");
    ag_safetensors_free(f);
}

static void ckpt_free(ckpt *c)
{
    ag_tensor_free(c->t[0]);
    ag_tensor_free(c->t[1]);
}

/* ---- round trips ---- */

static void test_safetensors_roundtrip_f32_f64(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    ag_tensor *t[3] = {ramp(AG_F32, 2, (int64_t[]){4, 3}, 0.25),
                       ramp(AG_F64, 3, (int64_t[]){2, 1, 5}, 1.0 / 3),
                       ramp(AG_F32, 1, (int64_t[]){1}, 1)};
    const char *names[3] = {"layer.w", "layer.b", "z"};
    const char *keys[2] = {"format", "note"}, *vals[2] = {"pt", "caf\xc3\xa9 \xe2\x9c\x93"};
    const char *path = tmpdir_file(&d, "m.safetensors");
    assert_int_equal(ag_safetensors_save(path, 3, names, (const ag_tensor *const *)t,
                                         2, keys, vals), AG_OK);
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load(path, &f), AG_OK);
    assert_int_equal(ag_safetensors_count(f), 3);
    /* file order: the F64 tensors first (aligned), then the F32 ones */
    const char *file_order[3] = {"layer.b", "layer.w", "z"};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(ag_safetensors_name(f, i), file_order[i]);
        assert_tensor_identical(ag_safetensors_get(f, names[i]), t[i]);
    }
    assert_int_equal(ag_safetensors_meta_count(f), 2);
    assert_string_equal(ag_safetensors_meta_key(f, 0), "format");
    assert_string_equal(ag_safetensors_meta_key(f, 1), "note");
    assert_string_equal(ag_safetensors_meta(f, "note"), vals[1]);
    assert_null(ag_safetensors_meta(f, "absent"));
    assert_null(ag_safetensors_get(f, "absent"));
    assert_null(ag_safetensors_get(f, "layer"));
    assert_null(ag_safetensors_name(f, 3));
    assert_null(ag_safetensors_name(f, -1));
    assert_null(ag_safetensors_meta_key(f, 2));
    ag_safetensors_free(f);
    for (int i = 0; i < 3; i++)
        ag_tensor_free(t[i]);
    tmpdir_remove(&d);
}

static void test_safetensors_roundtrip_special_values_bit_exact(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    double dv[6] = {NAN, -INFINITY, INFINITY, -0.0, 4.9406564584124654e-324, 1.0 / 3};
    float fv[6] = {NAN, -INFINITY, INFINITY, -0.0f, 1.4e-45f, 1.0f / 3};
    ag_tensor *t[2] = {ag_tensor_from_f64(1, (int64_t[]){6}, dv),
                       ag_tensor_from_f32(2, (int64_t[]){2, 3}, fv)};
    const char *path = tmpdir_file(&d, "s.safetensors");
    assert_int_equal(ag_safetensors_save(path, 2, (const char *[]){"d", "f"},
                                         (const ag_tensor *const *)t, 0, NULL, NULL),
                     AG_OK);
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load(path, &f), AG_OK);
    assert_tensor_identical(ag_safetensors_get(f, "d"), t[0]);
    assert_tensor_identical(ag_safetensors_get(f, "f"), t[1]);
    assert_int_equal(ag_safetensors_meta_count(f), 0);
    ag_safetensors_free(f);
    ag_tensor_free(t[0]);
    ag_tensor_free(t[1]);
    tmpdir_remove(&d);
}

static void test_safetensors_roundtrip_scalar_and_empty(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    ag_tensor *t[4] = {ag_tensor_full(AG_F64, 0, NULL, 2.5),
                       ag_tensor_new(AG_F32, 2, (int64_t[]){0, 3}),
                       ag_tensor_full(AG_F32, 0, NULL, -7),
                       ag_tensor_new(AG_F64, 3, (int64_t[]){2, 0, 4})};
    const char *names[4] = {"scalar64", "empty", "scalar32", "empty3"};
    const char *path = tmpdir_file(&d, "e.safetensors");
    assert_int_equal(ag_safetensors_save(path, 4, names, (const ag_tensor *const *)t,
                                         0, NULL, NULL), AG_OK);
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load(path, &f), AG_OK);
    assert_int_equal(ag_safetensors_count(f), 4);
    for (int i = 0; i < 4; i++)
        assert_tensor_identical(ag_safetensors_get(f, names[i]), t[i]);
    assert_int_equal(ag_ndim(ag_safetensors_get(f, "scalar64")), 0);
    assert_true(ag_item(ag_safetensors_get(f, "scalar64")) == 2.5);
    assert_true(ag_item(ag_safetensors_get(f, "scalar32")) == -7);
    ag_safetensors_free(f);
    for (int i = 0; i < 4; i++)
        ag_tensor_free(t[i]);
    tmpdir_remove(&d);
}

static void test_safetensors_roundtrip_no_tensors(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    const char *path = tmpdir_file(&d, "n.safetensors");
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_save(path, 0, NULL, NULL, 0, NULL, NULL), AG_OK);
    assert_int_equal(ag_safetensors_load(path, &f), AG_OK);
    assert_int_equal(ag_safetensors_count(f), 0);
    assert_null(ag_safetensors_get(f, "x"));
    ag_safetensors_free(f);
    assert_int_equal(ag_safetensors_save(path, 0, NULL, NULL, 1, (const char *[]){"k"},
                                         (const char *[]){""}), AG_OK);
    assert_int_equal(ag_safetensors_load(path, &f), AG_OK);
    assert_int_equal(ag_safetensors_count(f), 0);
    assert_string_equal(ag_safetensors_meta(f, "k"), "");
    ag_safetensors_free(f);
    tmpdir_remove(&d);
}

/* The bytes on disk: what other readers rely on. */
static void test_safetensors_save_file_layout(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    ag_tensor *t[2] = {ag_tensor_from_f32(1, (int64_t[]){2}, (float[]){1.0f, -2.0f}),
                       ag_tensor_from_f64(0, NULL, (double[]){0.5})};
    const char *path = tmpdir_file(&d, "l.safetensors");
    assert_int_equal(ag_safetensors_save(path, 2, (const char *[]){"a", "b"},
                                         (const ag_tensor *const *)t, 1,
                                         (const char *[]){"k"}, (const char *[]){"v"}),
                     AG_OK);
    size_t n;
    unsigned char *buf = read_all(path, &n);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | buf[i];
    assert_int_equal(h % 8, 0);
    assert_int_equal(n, 8 + h + 8 + 8);
    /* the header in argument order; the data F64 first, so it is aligned */
    const char *want = "{\"__metadata__\":{\"k\":\"v\"},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                       "\"b\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}";
    size_t wl = strlen(want);
    assert_true(wl <= h && h - wl < 8);
    assert_memory_equal(buf + 8, want, wl);
    for (size_t i = 8 + wl; i < 8 + h; i++)
        assert_int_equal(buf[i], ' ');
    const unsigned char data[16] = {0, 0, 0, 0, 0, 0, 0xe0, 0x3f,  /* 0.5 */
                                    0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0}; /* 1.0f, -2.0f */
    assert_memory_equal(buf + 8 + h, data, 16);
    free(buf);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_true(sb.st_mode & S_IRUSR);
    ag_tensor_free(t[0]);
    ag_tensor_free(t[1]);
    tmpdir_remove(&d);
}

static void test_safetensors_save_overwrites(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    ckpt a, b;
    ckpt_make(&a, 1);
    ckpt_make(&b, -2);
    const char *path = tmpdir_file(&d, "o.safetensors");
    assert_int_equal(ckpt_save(&a, path), AG_OK);
    assert_int_equal(ckpt_save(&b, path), AG_OK);
    ckpt_assert_file(&b, path);
    assert_int_equal(tmpdir_count(&d, ".tmp"), 0);
    ckpt_free(&a);
    ckpt_free(&b);
    tmpdir_remove(&d);
}

/* A bare file name: the temporary file and the folder sync use ".". */
static void test_safetensors_save_relative_path(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(d.path), 0);
    ckpt c;
    ckpt_make(&c, 2);
    ag_status st = ckpt_save(&c, "rel.safetensors");
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(st, AG_OK);
    ckpt_assert_file(&c, tmpdir_file(&d, "rel.safetensors"));
    assert_int_equal(tmpdir_count(&d, ""), 1);
    ckpt_free(&c);
    tmpdir_remove(&d);
}

/* ---- save errors ---- */

static void test_safetensors_save_rejects_bad_arguments(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    ag_tensor *t = ramp(AG_F32, 1, (int64_t[]){2}, 1);
    const ag_tensor *two[2] = {t, t}, *none[1] = {NULL};
    const char *path = tmpdir_file(&d, "bad.safetensors");
    struct {
        int n;
        const char *names[2];
        const ag_tensor *const *tensors;
        int n_meta;
        const char *keys[2], *vals[2];
        const char *msg;
    } cases[] = {
        {2, {"x", "x"}, two, 0, {0}, {0}, "duplicate tensor name 'x'"},
        {1, {"__metadata__"}, two, 0, {0}, {0}, "may not be named __metadata__"},
        {1, {NULL}, two, 0, {0}, {0}, "name #1 is NULL"},
        {1, {"x"}, none, 0, {0}, {0}, "tensor 'x' is NULL"},
        {1, {"x"}, two, 2, {"k", "k"}, {"1", "2"}, "duplicate metadata key 'k'"},
        {1, {"x"}, two, 1, {"k"}, {NULL}, "metadata value #1 is NULL"},
        {1, {"x"}, two, 1, {NULL}, {"v"}, "metadata key #1 is NULL"},
        {1, {"\xff"}, two, 0, {0}, {0}, "not valid UTF-8"},
        {1, {"x"}, two, 1, {"k"}, {"\xc3"}, "not valid UTF-8"},
        {-1, {"x"}, two, 0, {0}, {0}, "bad arguments"},
        {1, {"x"}, two, -1, {0}, {0}, "bad arguments"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ag_clear_last_error();
        ag_status st = ag_safetensors_save(path, cases[i].n, cases[i].names,
                                           cases[i].tensors, cases[i].n_meta,
                                           cases[i].keys, cases[i].vals);
        if (st != AG_ERR_ARG)
            fail_msg("case %zu: status %d, want AG_ERR_ARG", i, (int)st);
        assert_error_has(cases[i].msg);
        assert_int_equal(tmpdir_count(&d, ""), 0); /* nothing written */
    }
    assert_int_equal(ag_safetensors_save(NULL, 1, (const char *[]){"x"}, two, 0, NULL,
                                         NULL), AG_ERR_ARG);
    assert_int_equal(ag_safetensors_save(path, 1, NULL, two, 0, NULL, NULL), AG_ERR_ARG);
    ag_tensor_free(t);
    tmpdir_remove(&d);
}

static void test_safetensors_save_io_errors(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    ckpt c;
    ckpt_make(&c, 1);
    assert_int_equal(ckpt_save(&c, tmpdir_file(&d, "no/such/folder/x.safetensors")),
                     AG_ERR_IO);
    assert_error_has("cannot create a temporary file");
    assert_error_has("no/such/folder/x.safetensors");
    /* the target is a folder: the rename fails, the temporary file goes */
    assert_int_equal(mkdir(tmpdir_file(&d, "dir"), 0700), 0);
    assert_int_equal(ckpt_save(&c, tmpdir_file(&d, "dir")), AG_ERR_IO);
    assert_error_has("write failed");
    assert_int_equal(tmpdir_count(&d, ""), 1);
    assert_int_equal(rmdir(tmpdir_file(&d, "dir")), 0);
    ckpt_free(&c);
    tmpdir_remove(&d);
}

/* A save that fails at any byte leaves the old checkpoint whole. */
static void test_safetensors_save_failure_keeps_old_file(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    ckpt old, new;
    ckpt_make(&old, 1);
    ckpt_make(&new, 5);
    const char *p = tmpdir_file(&d, "ck.safetensors");
    char path[256];
    snprintf(path, sizeof path, "%s", p);
    assert_int_equal(ckpt_save(&old, path), AG_OK);
    size_t total;
    free(read_all(path, &total));
    const int64_t cuts[] = {0, 1, 7, 8, 9, 100, (int64_t)total - 60, (int64_t)total - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        ag_safetensors_fail_after_bytes = cuts[i];
        assert_int_equal(ckpt_save(&new, path), AG_ERR_IO);
        assert_error_has("simulated");
        assert_error_has("old file, if any, is untouched");
        ag_safetensors_fail_after_bytes = -1;
        ckpt_assert_file(&old, path);
        assert_int_equal(tmpdir_count(&d, ".tmp"), 0);
    }
    ag_safetensors_fail_after_bytes = (int64_t)total; /* exactly enough */
    assert_int_equal(ckpt_save(&new, path), AG_OK);
    ag_safetensors_fail_after_bytes = -1;
    ckpt_assert_file(&new, path);
    /* no old file at all: nothing is left behind */
    ag_safetensors_fail_after_bytes = 50;
    assert_int_equal(ckpt_save(&new, tmpdir_file(&d, "fresh.safetensors")), AG_ERR_IO);
    ag_safetensors_fail_after_bytes = -1;
    assert_int_equal(tmpdir_count(&d, ""), 1);
    ckpt_free(&old);
    ckpt_free(&new);
    tmpdir_remove(&d);
}

static int g_signal_fd = -1;

/* In the child: tell the parent we are part-way, then wait to be killed. */
static void hook_signal_and_wait(uint64_t written)
{
    if (written < ((uint64_t)1 << 21))
        return;
    char c = 'w';
    if (write(g_signal_fd, &c, 1) != 1)
        _exit(3);
    for (;;)
        pause();
}

/* A process SIGKILLed in the middle of a save leaves the old file whole
 * (and only a stray temporary file next to it). */
static void test_safetensors_killed_save_keeps_old_file(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    ckpt old;
    ckpt_make(&old, 1);
    char path[256];
    snprintf(path, sizeof path, "%s", tmpdir_file(&d, "ck.safetensors"));
    assert_int_equal(ckpt_save(&old, path), AG_OK);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        g_signal_fd = fds[1];
        ag_safetensors_write_hook = hook_signal_and_wait;
        ag_tensor *big = ag_tensor_full(AG_F32, 1, (int64_t[]){4 << 20}, 1.0); /* 16 MB */
        if (!big)
            _exit(2);
        ag_safetensors_save(path, 1, (const char *[]){"big"},
                            (const ag_tensor *const *)&big, 0, NULL, NULL);
        _exit(1); /* the hook never returns: reaching here is a failure */
    }
    close(fds[1]);
    char c = 0;
    ssize_t got = read(fds[0], &c, 1);
    close(fds[0]);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_int_equal(got, 1);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    ckpt_assert_file(&old, path);
    assert_int_equal(tmpdir_count(&d, ".tmp"), 1); /* it really was mid-way */
    ckpt_free(&old);
    tmpdir_remove(&d);
}

/* ---- loading ---- */

static void test_safetensors_load_st_py_fixture(void **state)
{
    (void)state;
    ag_safetensors *f = NULL;
    const char *path = tg_path("tests/data/safetensors/good_st_py.safetensors");
    if (ag_safetensors_load(path, &f) != AG_OK)
        fail_msg("%s", ag_last_error());
    assert_int_equal(ag_safetensors_count(f), 3);
    assert_string_equal(ag_safetensors_name(f, 0), "fc1.weight");
    assert_string_equal(ag_safetensors_name(f, 1), "fc1.bias");
    assert_string_equal(ag_safetensors_name(f, 2), "scale");
    ag_tensor *w = ag_safetensors_get(f, "fc1.weight");
    assert_int_equal(ag_dtype_of(w), AG_F32);
    assert_int_equal(ag_ndim(w), 2);
    assert_int_equal(ag_shape(w)[0], 2);
    assert_int_equal(ag_shape(w)[1], 3);
    for (int i = 0; i < 6; i++)
        assert_true(ag_get(w, i) == i / 4.0);
    ag_tensor *b = ag_safetensors_get(f, "fc1.bias");
    assert_int_equal(ag_dtype_of(b), AG_F64);
    assert_true(ag_get(b, 0) == -1.0 && ag_get(b, 1) == 0.5);
    /* st.py passes arrays through np.ascontiguousarray, which turns a 0-d
     * array into shape [1] */
    ag_tensor *s = ag_safetensors_get(f, "scale");
    assert_int_equal(ag_numel(s), 1);
    assert_true(ag_item(s) == 3.0);
    assert_string_equal(ag_safetensors_meta(f, "format"), "pt");
    assert_string_equal(ag_safetensors_meta(f, "epoch"), "7");
    ag_safetensors_free(f);
}

static void test_safetensors_load_good_corner_cases(void **state)
{
    (void)state;
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load(
        tg_path("tests/data/safetensors/good_empty_header.safetensors"), &f), AG_OK);
    assert_int_equal(ag_safetensors_count(f), 0);
    ag_safetensors_free(f);

    assert_int_equal(ag_safetensors_load(
        tg_path("tests/data/safetensors/good_unpadded.safetensors"), &f), AG_OK);
    assert_true(ag_get(ag_safetensors_get(f, "a"), 0) == 1.5);
    ag_safetensors_free(f);

    assert_int_equal(ag_safetensors_load(
        tg_path("tests/data/safetensors/good_extra_fields.safetensors"), &f), AG_OK);
    assert_true(ag_get(ag_safetensors_get(f, "a"), 0) == 2.5);
    ag_safetensors_free(f);

    /* names come back in data order, not header order */
    assert_int_equal(ag_safetensors_load(
        tg_path("tests/data/safetensors/good_header_order_differs.safetensors"), &f), AG_OK);
    assert_string_equal(ag_safetensors_name(f, 0), "a");
    assert_string_equal(ag_safetensors_name(f, 1), "b");
    assert_true(ag_item(ag_safetensors_get(f, "a")) == 1);
    assert_true(ag_item(ag_safetensors_get(f, "b")) == 2);
    ag_safetensors_free(f);

    /* empty tensors share offsets with their neighbours; a huge dim times 0 */
    assert_int_equal(ag_safetensors_load(
        tg_path("tests/data/safetensors/good_zero_size.safetensors"), &f), AG_OK);
    assert_int_equal(ag_safetensors_count(f), 3);
    assert_int_equal(ag_safetensors_meta_count(f), 0);
    assert_int_equal(ag_numel(ag_safetensors_get(f, "e1")), 0);
    assert_int_equal(ag_numel(ag_safetensors_get(f, "e2")), 0);
    assert_int_equal(ag_shape(ag_safetensors_get(f, "e2"))[2], (int64_t)1 << 40);
    assert_true(ag_get(ag_safetensors_get(f, "x"), 0) == 3);
    ag_safetensors_free(f);
}

typedef struct bad_case {
    const char *file;  /* under tests/data/safetensors/, without .safetensors */
    const char *msg;   /* part of the message */
} bad_case;

/* Every bad_* file of the corpus: AG_ERR_FORMAT and what the message says. */
static const bad_case bad_cases[] = {
    {"bad_empty", "empty file"},
    {"bad_7_bytes", "file is 7 bytes, too short"},
    {"bad_header_past_end", "header length 4096 runs past the end of the file"},
    {"bad_header_len_huge", "header length 9223372036854775813 is too large"},
    {"bad_header_len_over_cap", "header length 100000001 is too large"},
    {"bad_header_len_zero", "header is not valid JSON"},
    {"bad_invalid_json", "header is not valid JSON"},
    {"bad_json_trailing_garbage", "header is not valid JSON"},
    {"bad_duplicate_names", "duplicate object key"},
    {"bad_duplicate_metadata", "duplicate object key"},
    {"bad_header_array", "header is not a JSON object"},
    {"bad_header_string", "header is not valid JSON"},
    {"bad_invalid_utf8", "header is not valid JSON"},
    {"bad_nul_in_name", "header is not valid JSON"},
    {"bad_deep_nesting", "header is not valid JSON"},
    {"bad_integer_too_big", "too big"},
    {"bad_entry_not_object", "tensor 'a': entry is not a JSON object"},
    {"bad_dtype_missing", "tensor 'a': dtype is missing or not a string"},
    {"bad_dtype_not_string", "tensor 'a': dtype is missing or not a string"},
    {"bad_dtype_f16", "tensor 'a': dtype F16 is not supported (only F32 and F64)"},
    {"bad_dtype_i64", "tensor 'a': dtype I64 is not supported"},
    {"bad_dtype_bf16", "tensor 'a': dtype BF16 is not supported"},
    {"bad_dtype_unknown", "tensor 'a': unknown dtype 'Q7'"},
    {"bad_dtype_lowercase", "tensor 'a': unknown dtype 'f32'"},
    {"bad_shape_missing", "tensor 'a': shape is missing or not an array"},
    {"bad_shape_not_array", "tensor 'a': shape is missing or not an array"},
    {"bad_shape_negative", "tensor 'a': shape[0] is not a non-negative integer"},
    {"bad_shape_float", "tensor 'a': shape[0] is not a non-negative integer"},
    {"bad_shape_string", "tensor 'a': shape[0] is not a non-negative integer"},
    {"bad_shape_9_dims", "tensor 'a': shape has 9 dims (at most 8)"},
    {"bad_shape_overflow", "tensor 'a': shape [2147483648,2147483648,2147483648] overflows"},
    {"bad_shape_overflow_bytes", "tensor 'a': shape [2305843009213693952] overflows"},
    {"bad_shape_size_mismatch", "tensor 'a': data_offsets span 20 bytes but shape [2,3] "
                                "of F32 needs 24"},
    {"bad_dtype_size_mismatch", "tensor 'a': data_offsets span 24 bytes but shape [2,3] "
                                "of F64 needs 48"},
    {"bad_offsets_missing", "tensor 'a': data_offsets is missing or not an array of two"},
    {"bad_offsets_not_array", "tensor 'a': data_offsets is missing or not an array"},
    {"bad_offsets_three", "tensor 'a': data_offsets is missing or not an array"},
    {"bad_offsets_float", "tensor 'a': data_offsets is missing or not an array"},
    {"bad_offsets_negative", "tensor 'a': data_offsets [-4,0] are negative"},
    {"bad_offsets_reversed", "tensor 'a': data_offsets [4,0] are reversed"},
    {"bad_offsets_out_of_range", "tensor 'a': data_offsets [0,8] are out of range: the "
                                 "data section has 4 bytes"},
    {"bad_offsets_huge", "tensor 'a': data_offsets [9223372036854775803,"
                         "9223372036854775807] are out of range"},
    {"bad_truncated_data", "tensor 'b': data_offsets [24,40] are out of range: the data "
                           "section has 33 bytes (truncated file?)"},
    {"bad_offsets_overlap", "tensor 'b': data_offsets [4,12] overlap tensor 'a'"},
    {"bad_offsets_gap", "gap in the data section: bytes [4,8) before tensor 'b'"},
    {"bad_offsets_not_from_zero", "gap in the data section: bytes [0,4) before tensor 'a'"},
    {"bad_offsets_same_range", "data_offsets [0,4] overlap tensor"},
    {"bad_trailing_data", "the data section has 28 bytes but the tensors cover 24"},
    {"bad_metadata_not_object", "__metadata__ is not a JSON object"},
    {"bad_metadata_non_string", "__metadata__ value of key 'epoch' is not a string"},
    {"bad_metadata_null", "__metadata__ value of key 'k' is not a string"},
};

static const bad_case *find_bad_case(const char *file)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++)
        if (!strcmp(bad_cases[i].file, file))
            return &bad_cases[i];
    return NULL;
}

static void test_safetensors_load_rejects_corpus(void **state)
{
    (void)state;
    char rel[256];
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        snprintf(rel, sizeof rel, "tests/data/safetensors/%s.safetensors", bad_cases[i].file);
        ag_safetensors *f = (ag_safetensors *)&f; /* must be reset to NULL */
        ag_clear_last_error();
        ag_status st = ag_safetensors_load(tg_path(rel), &f);
        if (st != AG_ERR_FORMAT)
            fail_msg("%s: status %d (%s), want AG_ERR_FORMAT", bad_cases[i].file,
                     (int)st, ag_last_error() ? ag_last_error() : "no message");
        assert_null(f);
        const char *msg = ag_last_error();
        if (!msg || !strstr(msg, bad_cases[i].msg) || !strstr(msg, bad_cases[i].file))
            fail_msg("%s: message \"%s\" lacks \"%s\" or the path", bad_cases[i].file,
                     msg ? msg : "(none)", bad_cases[i].msg);
    }
}

/* A file added to the corpus without an expectation here fails the suite. */
static void test_safetensors_corpus_fully_covered(void **state)
{
    (void)state;
    DIR *dir = opendir(tg_path("tests/data/safetensors"));
    assert_non_null(dir);
    int n_bad = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        char name[256];
        snprintf(name, sizeof name, "%s", e->d_name);
        char *dot = strstr(name, ".safetensors");
        if (strncmp(name, "bad_", 4) || !dot)
            continue;
        *dot = '\0';
        if (!find_bad_case(name))
            fail_msg("corpus file %s has no entry in bad_cases", e->d_name);
        n_bad++;
    }
    closedir(dir);
    assert_int_equal(n_bad, (int)(sizeof bad_cases / sizeof *bad_cases));
    assert_true(n_bad >= 20);
}

/* The memory loader (the fuzz target's door) agrees with the file loader. */
static void test_safetensors_load_mem_matches_file(void **state)
{
    (void)state;
    char rel[256];
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        snprintf(rel, sizeof rel, "tests/data/safetensors/%s.safetensors", bad_cases[i].file);
        size_t n;
        unsigned char *buf = read_all(tg_path(rel), &n);
        ag_safetensors *f = NULL;
        assert_int_equal(ag_safetensors_load_mem(buf, n, bad_cases[i].file, &f),
                         AG_ERR_FORMAT);
        assert_null(f);
        assert_error_has(bad_cases[i].msg);
        free(buf);
    }
    size_t n;
    unsigned char *buf = read_all(tg_path("tests/data/safetensors/good_st_py.safetensors"), &n);
    ag_safetensors *f = NULL, *g = NULL;
    assert_int_equal(ag_safetensors_load_mem(buf, n, NULL, &f), AG_OK);
    assert_int_equal(ag_safetensors_load(
        tg_path("tests/data/safetensors/good_st_py.safetensors"), &g), AG_OK);
    for (int i = 0; i < ag_safetensors_count(g); i++)
        assert_tensor_identical(ag_safetensors_get(f, ag_safetensors_name(g, i)),
                                ag_safetensors_get(g, ag_safetensors_name(g, i)));
    ag_safetensors_free(f);
    ag_safetensors_free(g);
    free(buf);
    assert_int_equal(ag_safetensors_load_mem(NULL, 0, NULL, &f), AG_ERR_FORMAT);
    assert_error_has("empty file");
}

static void test_safetensors_load_io_errors(void **state)
{
    (void)state;
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load("/nonexistent/tg/x.safetensors", &f), AG_ERR_IO);
    assert_null(f);
    assert_error_has("/nonexistent/tg/x.safetensors");
    assert_error_has("cannot open");
    assert_int_equal(ag_safetensors_load(tg_path("tests/data/safetensors"), &f), AG_ERR_IO);
    assert_error_has("not a regular file");
    assert_int_equal(ag_safetensors_load(NULL, &f), AG_ERR_ARG);
    assert_int_equal(ag_safetensors_load("x", NULL), AG_ERR_ARG);
    /* NULL handles are harmless */
    ag_safetensors_free(NULL);
    assert_int_equal(ag_safetensors_count(NULL), 0);
    assert_null(ag_safetensors_name(NULL, 0));
    assert_null(ag_safetensors_get(NULL, "x"));
    assert_null(ag_safetensors_meta(NULL, "x"));
    assert_int_equal(ag_safetensors_meta_count(NULL), 0);
    assert_null(ag_safetensors_meta_key(NULL, 0));
}

/* Out of memory at every allocation of a load and a save: a clean status,
 * nothing leaked (the teardown counts), the old file intact. */
static void test_safetensors_out_of_memory_at_every_allocation(void **state)
{
    (void)state;
    const char *fixture = tg_path("tests/data/safetensors/good_st_py.safetensors");
    char fixture_path[4096];
    snprintf(fixture_path, sizeof fixture_path, "%s", fixture);
    int reached_ok = 0;
    for (long k = 0; k < 100 && !reached_ok; k++) {
        g_count = 0;
        g_fail_at = k;
        ag_safetensors *f = NULL;
        ag_status st = ag_safetensors_load(fixture_path, &f);
        g_fail_at = -1;
        if (st == AG_OK) {
            reached_ok = 1;
        } else {
            assert_int_equal(st, AG_ERR_NOMEM);
            assert_null(f);
        }
        ag_safetensors_free(f);
        assert_int_equal(g_live, 0);
    }
    assert_true(reached_ok);

    tmpdir d;
    tmpdir_new(&d);
    ckpt old, new;
    ckpt_make(&old, 1);
    ckpt_make(&new, 3);
    char path[256];
    snprintf(path, sizeof path, "%s", tmpdir_file(&d, "m.safetensors"));
    assert_int_equal(ckpt_save(&old, path), AG_OK);
    long live = g_live;
    reached_ok = 0;
    for (long k = 0; k < 100 && !reached_ok; k++) {
        g_count = 0;
        g_fail_at = k;
        ag_status st = ckpt_save(&new, path);
        g_fail_at = -1;
        assert_int_equal(g_live, live);
        if (st == AG_OK)
            reached_ok = 1;
        else {
            assert_int_equal(st, AG_ERR_NOMEM);
            ckpt_assert_file(&old, path);
        }
        assert_int_equal(tmpdir_count(&d, ".tmp"), 0);
    }
    assert_true(reached_ok);
    ckpt_assert_file(&new, path);
    ckpt_free(&old);
    ckpt_free(&new);
    tmpdir_remove(&d);
}

/* ---- PyTorch interop (run by tests/reference/check_torch_interop.py) ---- */

static void test_safetensors_torch_interop(void **state)
{
    (void)state;
    const char *dir = getenv("TG_ST_INTEROP_DIR");
    if (!dir || !*dir)
        skip();
    char path[4096];
    snprintf(path, sizeof path, "%s/torch_written.safetensors", dir);
    ag_safetensors *f = NULL;
    if (ag_safetensors_load(path, &f) != AG_OK)
        fail_msg("%s", ag_last_error());
    /* what check_torch_interop.py writes */
    ag_tensor *w = ag_safetensors_get(f, "fc1.weight"), *b = ag_safetensors_get(f, "fc1.bias");
    ag_tensor *s = ag_safetensors_get(f, "scale"), *e = ag_safetensors_get(f, "empty");
    assert_non_null(w);
    assert_non_null(b);
    assert_non_null(s);
    assert_non_null(e);
    assert_int_equal(ag_dtype_of(w), AG_F32);
    assert_int_equal(ag_ndim(w), 2);
    assert_int_equal(ag_shape(w)[0], 3);
    assert_int_equal(ag_shape(w)[1], 4);
    for (int i = 0; i < 12; i++)
        assert_true(ag_get(w, i) == i * 0.25 - 1);
    assert_int_equal(ag_dtype_of(b), AG_F64);
    assert_int_equal(ag_numel(b), 4);
    for (int i = 0; i < 4; i++)
        assert_true(ag_get(b, i) == 1.0 / (i + 1));
    assert_int_equal(ag_ndim(s), 0);
    assert_true(ag_item(s) == 2.5);
    assert_int_equal(ag_ndim(e), 2);
    assert_int_equal(ag_shape(e)[0], 0);
    assert_int_equal(ag_shape(e)[1], 5);
    assert_string_equal(ag_safetensors_meta(f, "format"), "pt");
    ag_safetensors_free(f);

    ag_tensor *t[4] = {ramp(AG_F32, 3, (int64_t[]){2, 3, 4}, 0.5),
                       ramp(AG_F64, 1, (int64_t[]){5}, 1.0 / 3),
                       ag_tensor_full(AG_F64, 0, NULL, 3.141592653589793),
                       ag_tensor_new(AG_F32, 2, (int64_t[]){3, 0})};
    snprintf(path, sizeof path, "%s/tapegrad_written.safetensors", dir);
    assert_int_equal(ag_safetensors_save(path, 4, (const char *[]){"x", "y", "z", "empty"},
                                         (const ag_tensor *const *)t, 2,
                                         (const char *[]){"writer", "note"},
                                         (const char *[]){"tapegrad", "caf\xc3\xa9"}),
                     AG_OK);
    for (int i = 0; i < 4; i++)
        ag_tensor_free(t[i]);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_safetensors_roundtrip_f32_f64),
        T(test_safetensors_roundtrip_special_values_bit_exact),
        T(test_safetensors_roundtrip_scalar_and_empty),
        T(test_safetensors_roundtrip_no_tensors),
        T(test_safetensors_save_file_layout),
        T(test_safetensors_save_overwrites),
        T(test_safetensors_save_relative_path),
        T(test_safetensors_save_rejects_bad_arguments),
        T(test_safetensors_save_io_errors),
        T(test_safetensors_save_failure_keeps_old_file),
        T(test_safetensors_killed_save_keeps_old_file),
        T(test_safetensors_load_st_py_fixture),
        T(test_safetensors_load_good_corner_cases),
        T(test_safetensors_load_rejects_corpus),
        T(test_safetensors_corpus_fully_covered),
        T(test_safetensors_load_mem_matches_file),
        T(test_safetensors_load_io_errors),
        T(test_safetensors_out_of_memory_at_every_allocation),
        T(test_safetensors_torch_interop),
    };
    if (getenv("TG_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
