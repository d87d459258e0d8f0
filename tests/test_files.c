/* test_files.c — what the loaders and savers do with odd files and faults:
 * only regular files are opened (a FIFO, a folder or a device is refused
 * at once, never waited on), a save leaves no temporary file behind on any
 * failure it sees and removes the stale one a killed save of the same
 * target left, tensors of mixed dtypes are stored aligned to their dtype,
 * IDX dims whose product overflows are refused, and every data-set
 * accessor takes NULL without crashing.
 *
 * Tests that could hang if they regress (a FIFO blocks open()) run the
 * call in a child process under alarm(). */
#include "test_util.h"

#include "nn.h"
#include "nn_data.h"
#include "safetensors_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---- */

typedef struct tmpdir {
    char path[64];
} tmpdir;

static void tmpdir_new(tmpdir *d)
{
    snprintf(d->path, sizeof d->path, "/tmp/tg_files_XXXXXX");
    assert_non_null(mkdtemp(d->path));
}

/* d/name in one of four rotating buffers, so several can be live. */
static const char *tmpdir_file(const tmpdir *d, const char *name)
{
    static char buf[4][1280];
    static int which;
    which = (which + 1) % 4;
    snprintf(buf[which], sizeof buf[which], "%s/%s", d->path, name);
    return buf[which];
}

/* Entries of d whose name contains part. */
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

static bool tmpdir_has(const tmpdir *d, const char *name)
{
    struct stat sb;
    return lstat(tmpdir_file(d, name), &sb) == 0;
}

/* Removes d and what lies in it (files, FIFOs and empty folders). */
static void tmpdir_remove(tmpdir *d)
{
    chmod(d->path, 0700);
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

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
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

static void assert_error_has(const char *part)
{
    const char *msg = ag_last_error();
    if (!msg || !strstr(msg, part))
        fail_msg("expected an error containing \"%s\", got \"%s\"", part,
                 msg ? msg : "(none)");
}

/* ---- only regular files are opened ---- */

typedef enum loader {
    LOAD_SAFETENSORS,
    LOAD_PARAMS,
    LOAD_IDX,
    LOAD_DATASET_IMAGES,
    LOAD_DATASET_LABELS,
    LOAD_MNIST_DIR,
} loader;

static const char *const loader_names[] = {
    "ag_safetensors_load", "nn_params_load", "nn_idx_load",
    "nn_dataset_load_idx", "nn_dataset_load_idx", "nn_mnist_load",
};

/* Calls one loader on path; good is a valid IDX file for the other half
 * of a data set.  Returns the status; whatever it loaded is freed. */
static ag_status call_loader(loader which, const char *path, const char *good)
{
    ag_status s = AG_ERR_STATE;
    switch (which) {
    case LOAD_SAFETENSORS: {
        ag_safetensors *f = NULL;
        s = ag_safetensors_load(path, &f);
        ag_safetensors_free(f);
        break;
    }
    case LOAD_PARAMS: {
        nn_params *p = nn_params_new();
        s = nn_params_load(p, path);
        nn_params_free(p);
        break;
    }
    case LOAD_IDX: {
        nn_idx *a = NULL;
        s = nn_idx_load(path, &a);
        nn_idx_free(a);
        break;
    }
    case LOAD_DATASET_IMAGES:
    case LOAD_DATASET_LABELS: {
        nn_dataset *ds = NULL;
        s = which == LOAD_DATASET_IMAGES ? nn_dataset_load_idx(path, good, 0, &ds)
                                         : nn_dataset_load_idx(good, path, 0, &ds);
        nn_dataset_free(ds);
        break;
    }
    case LOAD_MNIST_DIR: {
        nn_dataset *ds = NULL;
        s = nn_mnist_load(path, true, &ds);
        nn_dataset_free(ds);
        break;
    }
    }
    return s;
}

/* Runs the loader in a child under a 10 s alarm, so a loader that blocks
 * fails the test instead of hanging it; the call must return AG_ERR_IO
 * with a message holding `want` and the loader's name. */
static void expect_refused_in_child(loader which, const char *path, const char *good,
                                    const char *want)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10);
        ag_clear_last_error();
        ag_status s = call_loader(which, path, good);
        const char *msg = ag_last_error();
        printf("  %s(%s) -> %d: %s\n", loader_names[which], path, (int)s,
               msg ? msg : "(no message)");
        fflush(stdout);
        bool ok = s == AG_ERR_IO && msg && strstr(msg, want) &&
                  strstr(msg, loader_names[which]);
        _exit(ok ? 0 : 1);
    }
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (WIFSIGNALED(ws))
        fail_msg("%s(%s) did not return: killed by signal %d (blocked in open?)",
                 loader_names[which], path, WTERMSIG(ws));
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        fail_msg("%s(%s): expected AG_ERR_IO with \"%s\" (see the line above)",
                 loader_names[which], path, want);
}

/* A valid 1-D u8 IDX file of n labels, all 0. */
static void write_labels(const char *path, uint32_t n)
{
    unsigned char buf[64] = {0, 0, 0x08, 1, (unsigned char)(n >> 24),
                             (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                             (unsigned char)n};
    assert_true(n <= sizeof buf - 8);
    write_bytes(path, buf, 8 + n);
}

static void test_files_fifo_refused(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    char fifo[512], good[512];
    snprintf(fifo, sizeof fifo, "%s", tmpdir_file(&d, "fifo"));
    snprintf(good, sizeof good, "%s", tmpdir_file(&d, "labels.idx"));
    assert_int_equal(mkfifo(fifo, 0600), 0);
    write_labels(good, 0);
    for (loader w = LOAD_SAFETENSORS; w <= LOAD_DATASET_LABELS; w++)
        expect_refused_in_child(w, fifo, good, "not a regular file");
    /* an MNIST folder whose files are FIFOs */
    tmpdir m;
    tmpdir_new(&m);
    assert_int_equal(mkfifo(tmpdir_file(&m, "train-images-idx3-ubyte"), 0600), 0);
    assert_int_equal(mkfifo(tmpdir_file(&m, "train-labels-idx1-ubyte"), 0600), 0);
    expect_refused_in_child(LOAD_MNIST_DIR, m.path, NULL, "not a regular file");
    tmpdir_remove(&m);
    tmpdir_remove(&d);
}

static void test_files_directory_refused(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    char good[512];
    snprintf(good, sizeof good, "%s", tmpdir_file(&d, "labels.idx"));
    write_labels(good, 0);
    assert_int_equal(mkdir(tmpdir_file(&d, "sub"), 0700), 0);
    for (loader w = LOAD_SAFETENSORS; w <= LOAD_DATASET_LABELS; w++)
        expect_refused_in_child(w, tmpdir_file(&d, "sub"), good, "not a regular file");
    tmpdir_remove(&d);
}

static void test_files_device_refused(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    char good[512];
    snprintf(good, sizeof good, "%s", tmpdir_file(&d, "labels.idx"));
    write_labels(good, 0);
    for (loader w = LOAD_SAFETENSORS; w <= LOAD_DATASET_LABELS; w++)
        expect_refused_in_child(w, "/dev/null", good, "not a regular file");
    tmpdir_remove(&d);
}

/* A symbolic link to a regular file is followed and loads. */
static void test_files_symlink_to_regular_file_loads(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    char good[512], link[512];
    snprintf(good, sizeof good, "%s", tmpdir_file(&d, "labels.idx"));
    snprintf(link, sizeof link, "%s", tmpdir_file(&d, "link.idx"));
    write_labels(good, 3);
    assert_int_equal(symlink(good, link), 0);
    nn_idx *a = NULL;
    assert_int_equal(nn_idx_load(link, &a), AG_OK);
    assert_int_equal(nn_idx_numel(a), 3);
    nn_idx_free(a);
    tmpdir_remove(&d);
}

/* ---- temporary files of saves ---- */

static ag_tensor *g_small[2];
static const char *const g_small_names[2] = {"w", "b"};

static ag_status save_small(const char *path)
{
    if (!g_small[0]) {
        g_small[0] = ag_tensor_full(AG_F32, 2, (int64_t[]){2, 3}, 1.5);
        g_small[1] = ag_tensor_full(AG_F64, 1, (int64_t[]){3}, -2.0);
    }
    return ag_safetensors_save(path, 2, g_small_names, (const ag_tensor *const *)g_small,
                               0, NULL, NULL);
}

static void free_small(void)
{
    ag_tensor_free(g_small[0]);
    ag_tensor_free(g_small[1]);
    g_small[0] = g_small[1] = NULL;
}

/* The pid of a process that has exited and been reaped. */
static pid_t dead_pid(void)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    return pid;
}

/* Saves of ck.safetensors remove the stale temporaries of killed saves of
 * the same target (their process is gone, or is this very process but
 * none of its saves holds the file), and nothing else: not another
 * target's, not a live process's, not one a writer holds locked, not
 * names that merely look alike. */
static void test_files_save_removes_stale_temporaries(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    const char *target = tmpdir_file(&d, "ck.safetensors");
    char path[512], name[128];
    snprintf(path, sizeof path, "%s", target);

    /* a process that stays alive while we save */
    fflush(NULL);
    pid_t live = fork();
    assert_true(live >= 0);
    if (live == 0) {
        alarm(30);
        for (;;)
            pause();
    }
    pid_t dead = dead_pid(), self = getpid();

    const char *stale[3];
    char stale_buf[3][128];
    snprintf(stale_buf[0], 128, "ck.safetensors.tmp.%ld.0", (long)dead);
    snprintf(stale_buf[1], 128, "ck.safetensors.tmp.%ld.17", (long)dead);
    snprintf(stale_buf[2], 128, "ck.safetensors.tmp.%ld.99999", (long)self);
    char keep_buf[9][128];
    snprintf(keep_buf[0], 128, "ck.safetensors.tmp.%ld.0", (long)live);  /* alive */
    snprintf(keep_buf[1], 128, "ck.safetensors.tmp.%ld.5", (long)self);  /* locked */
    snprintf(keep_buf[2], 128, "other.safetensors.tmp.%ld.0", (long)dead);
    snprintf(keep_buf[3], 128, "ck.safetensors.tmp.%ld.0.bak", (long)dead);
    snprintf(keep_buf[4], 128, "ck.safetensors.tmp.%ldx.0", (long)dead);
    snprintf(keep_buf[5], 128, "ck.safetensors.tmp.%ld.", (long)dead);
    snprintf(keep_buf[6], 128, "xck.safetensors.tmp.%ld.0", (long)dead);
    snprintf(keep_buf[7], 128, "ck.safetensors.tmp..0");
    snprintf(keep_buf[8], 128, "ck.safetensors.tmp.%ld.1", (long)dead); /* a folder */
    for (int i = 0; i < 3; i++) {
        stale[i] = stale_buf[i];
        write_bytes(tmpdir_file(&d, stale[i]), "stale", 5);
    }
    for (int i = 0; i < 8; i++)
        write_bytes(tmpdir_file(&d, keep_buf[i]), "keep", 4);
    assert_int_equal(mkdir(tmpdir_file(&d, keep_buf[8]), 0700), 0);
    /* a concurrent writer in this process holds its temporary locked */
    int held = open(tmpdir_file(&d, keep_buf[1]), O_RDWR | O_CLOEXEC);
    assert_true(held >= 0);
    assert_int_equal(flock(held, LOCK_EX | LOCK_NB), 0);

    assert_int_equal(save_small(path), AG_OK);
    for (int i = 0; i < 3; i++)
        if (tmpdir_has(&d, stale[i]))
            fail_msg("stale %s was not removed", stale[i]);
    for (int i = 0; i < 9; i++)
        if (!tmpdir_has(&d, keep_buf[i]))
            fail_msg("%s was removed", keep_buf[i]);
    assert_true(tmpdir_has(&d, "ck.safetensors"));
    assert_int_equal(tmpdir_count(&d, ""), 10);
    /* a save of another target leaves ck's temporaries alone */
    snprintf(name, sizeof name, "%s", tmpdir_file(&d, "ck2.safetensors"));
    write_bytes(tmpdir_file(&d, stale[0]), "stale", 5);
    assert_int_equal(save_small(name), AG_OK);
    assert_true(tmpdir_has(&d, stale[0]));
    assert_int_equal(save_small(path), AG_OK);
    assert_false(tmpdir_has(&d, stale[0]));

    close(held);
    kill(live, SIGKILL);
    waitpid(live, NULL, 0);
    free_small();
    rmdir(tmpdir_file(&d, keep_buf[8]));
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

/* SIGKILL part-way through a save leaves a temporary; the next save of
 * the same target removes it. */
static void test_files_killed_save_temporary_removed_by_next_save(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    char path[512];
    snprintf(path, sizeof path, "%s", tmpdir_file(&d, "ck.safetensors"));
    assert_int_equal(save_small(path), AG_OK);
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
        alarm(30);
        ag_safetensors_save(path, 1, (const char *[]){"big"},
                            (const ag_tensor *const *)&big, 0, NULL, NULL);
        _exit(1);
    }
    close(fds[1]);
    char c = 0;
    ssize_t got = read(fds[0], &c, 1);
    close(fds[0]);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(got, 1);
    assert_int_equal(tmpdir_count(&d, ".tmp."), 1);
    assert_int_equal(save_small(path), AG_OK);
    assert_int_equal(tmpdir_count(&d, ".tmp."), 0);
    assert_int_equal(tmpdir_count(&d, ""), 1);
    free_small();
    tmpdir_remove(&d);
}

/* A save that fails (no folder, a read-only folder, a target that is a
 * folder, a write refused by the file-size limit, a simulated full disk)
 * reports AG_ERR_IO and leaves no temporary file. */
static void test_files_save_failures_leave_no_temporary(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    assert_int_equal(save_small(tmpdir_file(&d, "missing/ck.safetensors")), AG_ERR_IO);
    assert_error_has("ag_safetensors_save");
    assert_int_equal(tmpdir_count(&d, ""), 0);

    assert_int_equal(mkdir(tmpdir_file(&d, "dir.safetensors"), 0700), 0);
    assert_int_equal(save_small(tmpdir_file(&d, "dir.safetensors")), AG_ERR_IO);
    assert_int_equal(tmpdir_count(&d, ".tmp."), 0);
    assert_int_equal(rmdir(tmpdir_file(&d, "dir.safetensors")), 0);

    ag_safetensors_fail_after_bytes = 20;
    assert_int_equal(save_small(tmpdir_file(&d, "full.safetensors")), AG_ERR_IO);
    ag_safetensors_fail_after_bytes = -1;
    assert_error_has("simulated");
    assert_int_equal(tmpdir_count(&d, ""), 0);

    /* a real write error: the file-size limit refuses it with EFBIG */
    char path[512];
    snprintf(path, sizeof path, "%s", tmpdir_file(&d, "big.safetensors"));
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 64, .rlim_max = RLIM_INFINITY};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(2);
        ag_tensor *t = ag_tensor_full(AG_F32, 1, (int64_t[]){1 << 16}, 2.0);
        ag_status s = ag_safetensors_save(path, 1, (const char *[]){"t"},
                                          (const ag_tensor *const *)&t, 0, NULL, NULL);
        printf("  under RLIMIT_FSIZE: %s\n", ag_last_error() ? ag_last_error() : "?");
        fflush(stdout);
        _exit(s == AG_ERR_IO ? 0 : 1);
    }
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    assert_int_equal(tmpdir_count(&d, ""), 0);

    /* a read-only folder (root writes anyway: then this part says nothing) */
    assert_int_equal(mkdir(tmpdir_file(&d, "ro"), 0500), 0);
    if (access(tmpdir_file(&d, "ro"), W_OK) != 0) {
        assert_int_equal(save_small(tmpdir_file(&d, "ro/ck.safetensors")), AG_ERR_IO);
        assert_error_has("cannot create a temporary file");
        DIR *dir = opendir(tmpdir_file(&d, "ro"));
        assert_non_null(dir);
        int n = 0;
        for (struct dirent *e; (e = readdir(dir));)
            n += e->d_name[0] != '.';
        closedir(dir);
        assert_int_equal(n, 0);
    }
    assert_int_equal(rmdir(tmpdir_file(&d, "ro")), 0);
    free_small();
    tmpdir_remove(&d);
}

/* ---- tensors of mixed dtypes are aligned ---- */

/* Checks every tensor's data lies at a multiple of its dtype size, both in
 * the data section and in the file; returns the number of tensors. */
static int assert_file_aligned(const char *path)
{
    size_t n;
    unsigned char *buf = read_all(path, &n);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | buf[i];
    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)h, 0, &jerr);
    assert_non_null(root);
    const char *key;
    json_t *v;
    int count = 0;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__"))
            continue;
        const char *dt = json_string_value(json_object_get(v, "dtype"));
        int64_t size = !strcmp(dt, "F64") ? 8 : 4;
        int64_t begin = json_integer_value(json_array_get(json_object_get(v,
                                                          "data_offsets"), 0));
        if (begin % size != 0 || (int64_t)(8 + h + (uint64_t)begin) % size != 0)
            fail_msg("%s: tensor %s (%s) starts at data offset %lld, file offset %lld",
                     path, key, dt, (long long)begin, (long long)(8 + h + (uint64_t)begin));
        count++;
    }
    json_decref(root);
    free(buf);
    return count;
}

static void test_files_mixed_dtypes_saved_aligned(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    /* F32 tensors of odd sizes between F64 ones, as in a checkpoint that
     * holds f32 weights beside f64 optimizer state */
    ag_tensor *t[6] = {
        ag_tensor_full(AG_F32, 1, (int64_t[]){1}, 1.0),
        ag_tensor_full(AG_F64, 1, (int64_t[]){3}, 2.0),
        ag_tensor_full(AG_F32, 2, (int64_t[]){3, 3}, 3.0),
        ag_tensor_full(AG_F64, 0, NULL, 4.0),
        ag_tensor_full(AG_F32, 1, (int64_t[]){0}, 0.0),
        ag_tensor_full(AG_F64, 2, (int64_t[]){2, 5}, 6.0),
    };
    const char *names[6] = {"a", "b", "c", "d", "e", "f"};
    const char *path = tmpdir_file(&d, "mixed.safetensors");
    assert_int_equal(ag_safetensors_save(path, 6, names, (const ag_tensor *const *)t, 1,
                                         (const char *[]){"k"}, (const char *[]){"v"}),
                     AG_OK);
    assert_int_equal(assert_file_aligned(path), 6);
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load(path, &f), AG_OK);
    assert_int_equal(ag_safetensors_count(f), 6);
    for (int i = 0; i < 6; i++) {
        const ag_tensor *g = ag_safetensors_get(f, names[i]);
        assert_non_null(g);
        assert_int_equal(ag_dtype_of(g), ag_dtype_of(t[i]));
        assert_int_equal(ag_numel(g), ag_numel(t[i]));
        for (int64_t j = 0; j < ag_numel(g); j++)
            assert_true(ag_get(g, j) == ag_get(t[i], j));
    }
    ag_safetensors_free(f);
    for (int i = 0; i < 6; i++)
        ag_tensor_free(t[i]);
    tmpdir_remove(&d);
}

/* The loader still takes a valid file whose F64 data is misaligned. */
static void test_files_misaligned_file_still_loads(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[4,12]}}";
    size_t hl = strlen(hdr);
    unsigned char buf[256] = {0};
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    float a = 1.25f;
    double b = -3.5;
    memcpy(buf + 8 + hl, &a, 4); /* a little-endian host, as the suite's */
    memcpy(buf + 8 + hl + 4, &b, 8);
    const char *path = tmpdir_file(&d, "odd.safetensors");
    write_bytes(path, buf, 8 + hl + 12);
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load(path, &f), AG_OK);
    assert_true(ag_item(ag_safetensors_get(f, "a")) == 1.25);
    assert_true(ag_item(ag_safetensors_get(f, "b")) == -3.5);
    ag_safetensors_free(f);
    tmpdir_remove(&d);
}

/* ---- IDX dims that overflow ---- */

/* An IDX u8 file with these dims and no data. */
static void write_idx_dims(const char *path, int ndim, const uint32_t *dims)
{
    unsigned char buf[4 + 4 * 8] = {0, 0, 0x08, (unsigned char)ndim};
    for (int i = 0; i < ndim; i++)
        for (int k = 0; k < 4; k++)
            buf[4 + 4 * i + k] = (unsigned char)(dims[i] >> (24 - 8 * k));
    write_bytes(path, buf, 4 + 4 * (size_t)ndim);
}

static void test_files_idx_dims_overflow_refused(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    char im[512], lb[512];
    snprintf(im, sizeof im, "%s", tmpdir_file(&d, "images.idx"));
    snprintf(lb, sizeof lb, "%s", tmpdir_file(&d, "labels.idx"));
    write_labels(lb, 0);
    /* zero samples of 2^96 pixels: the IDX file is legal (no data), the
     * data set is not */
    write_idx_dims(im, 4, (uint32_t[]){0, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu});
    nn_dataset *ds = (nn_dataset *)&ds;
    ag_clear_last_error();
    assert_int_equal(nn_dataset_load_idx(im, lb, 10, &ds), AG_ERR_FORMAT);
    assert_null(ds);
    assert_error_has("nn_dataset_load_idx");
    assert_error_has("images.idx");
    print_message("  %s\n", ag_last_error());
    /* one image of 2^32 pixels is over NN_IDX_MAX_BYTES as well */
    write_idx_dims(im, 3, (uint32_t[]){0, 0x10000u, 0x10000u});
    ds = (nn_dataset *)&ds;
    assert_int_equal(nn_dataset_load_idx(im, lb, 10, &ds), AG_ERR_FORMAT);
    assert_null(ds);
    /* within the limit, zero samples are fine */
    write_idx_dims(im, 3, (uint32_t[]){0, 28, 28});
    assert_int_equal(nn_dataset_load_idx(im, lb, 10, &ds), AG_OK);
    assert_int_equal(nn_dataset_count(ds), 0);
    assert_int_equal(nn_dataset_features(ds), 784);
    nn_dataset_free(ds);
    /* the same from memory */
    ds = (nn_dataset *)&ds;
    const int64_t huge[3] = {(int64_t)1 << 40, (int64_t)1 << 40, (int64_t)1 << 40};
    assert_int_equal(nn_dataset_from_u8(0, 3, huge, NULL, NULL, 10, &ds), AG_ERR_ARG);
    assert_null(ds);
    assert_error_has("nn_dataset_from_u8");
    tmpdir_remove(&d);
}

static void test_files_subset_range_message_no_overflow(void **state)
{
    (void)state;
    nn_dataset *ds = NULL;
    assert_int_equal(nn_dataset_from_u8(2, 1, (int64_t[]){1}, (uint8_t[]){1, 2},
                                        (int64_t[]){0, 1}, 2, &ds), AG_OK);
    nn_dataset *sub = (nn_dataset *)&sub;
    assert_int_equal(nn_dataset_subset(ds, INT64_MAX, INT64_MAX, &sub), AG_ERR_ARG);
    assert_null(sub);
    assert_error_has("nn_dataset_subset");
    assert_error_has("9223372036854775807");
    sub = (nn_dataset *)&sub;
    assert_int_equal(nn_dataset_subset(ds, 1, INT64_MAX, &sub), AG_ERR_ARG);
    assert_null(sub);
    nn_dataset_free(ds);
}

/* ---- NULL accessors ---- */

static void expect_null_error(const char *fn, const char *arg)
{
    char want[128];
    snprintf(want, sizeof want, "%s: %s is NULL", fn, arg);
    assert_error_has(want);
    ag_clear_last_error();
}

static void test_files_data_accessors_take_null(void **state)
{
    (void)state;
    ag_clear_last_error();
    assert_int_equal(nn_idx_type_of(NULL), 0);
    expect_null_error("nn_idx_type_of", "a");
    assert_int_equal(nn_idx_ndim(NULL), 0);
    expect_null_error("nn_idx_ndim", "a");
    assert_null(nn_idx_shape(NULL));
    expect_null_error("nn_idx_shape", "a");
    assert_int_equal(nn_idx_numel(NULL), 0);
    expect_null_error("nn_idx_numel", "a");
    assert_null(nn_idx_data(NULL));
    expect_null_error("nn_idx_data", "a");
    assert_true(isnan(nn_idx_get(NULL, 0)));
    expect_null_error("nn_idx_get", "a");

    assert_int_equal(nn_dataset_count(NULL), 0);
    expect_null_error("nn_dataset_count", "ds");
    assert_int_equal(nn_dataset_features(NULL), 0);
    expect_null_error("nn_dataset_features", "ds");
    assert_int_equal(nn_dataset_classes(NULL), 0);
    expect_null_error("nn_dataset_classes", "ds");
    int ndim = 7;
    assert_null(nn_dataset_image_shape(NULL, &ndim));
    assert_int_equal(ndim, 0);
    expect_null_error("nn_dataset_image_shape", "ds");
    assert_null(nn_dataset_image_shape(NULL, NULL));
    expect_null_error("nn_dataset_image_shape", "ds");
    assert_null(nn_dataset_images(NULL));
    expect_null_error("nn_dataset_images", "ds");
    assert_null(nn_dataset_labels(NULL));
    expect_null_error("nn_dataset_labels", "ds");
    double mean = 5, sd = 5;
    nn_dataset_pixel_stats(NULL, &mean, &sd);
    assert_true(mean == 0 && sd == 0);
    expect_null_error("nn_dataset_pixel_stats", "ds");
    nn_dataset_pixel_stats(NULL, NULL, NULL);
    expect_null_error("nn_dataset_pixel_stats", "ds");

    ag_rng rng;
    ag_rng_seed(&rng, 1);
    nn_batcher_start(NULL, &rng);
    expect_null_error("nn_batcher_start", "b");
    nn_batcher_start(NULL, NULL);
    expect_null_error("nn_batcher_start", "b");
    assert_int_equal(nn_batcher_count(NULL), 0);
    expect_null_error("nn_batcher_count", "b");
    assert_null(nn_batcher_order(NULL));
    expect_null_error("nn_batcher_order", "b");
    ag_tensor *x = (ag_tensor *)&x;
    const int64_t *y = (const int64_t *)&y;
    assert_int_equal(nn_batcher_next(NULL, NULL, &x, &y), -1);
    assert_null(x);
    assert_null(y);
    assert_error_has("nn_batcher_next");
    assert_int_equal(nn_batcher_next_into(NULL, NULL, NULL), -1);
    assert_error_has("nn_batcher_next_into");
    nn_idx_free(NULL);
    nn_dataset_free(NULL);
    nn_batcher_free(NULL);
}

static void test_files_safetensors_accessors_take_null(void **state)
{
    (void)state;
    ag_clear_last_error();
    assert_int_equal(ag_safetensors_count(NULL), 0);
    expect_null_error("ag_safetensors_count", "f");
    assert_null(ag_safetensors_name(NULL, 0));
    expect_null_error("ag_safetensors_name", "f");
    assert_null(ag_safetensors_get(NULL, "x"));
    expect_null_error("ag_safetensors_get", "f");
    assert_null(ag_safetensors_meta(NULL, "x"));
    expect_null_error("ag_safetensors_meta", "f");
    assert_int_equal(ag_safetensors_meta_count(NULL), 0);
    expect_null_error("ag_safetensors_meta_count", "f");
    assert_null(ag_safetensors_meta_key(NULL, 0));
    expect_null_error("ag_safetensors_meta_key", "f");
    /* a loaded file: NULL names and out-of-range indices are errors too,
     * an absent name is only a miss */
    ag_safetensors *f = NULL;
    assert_int_equal(ag_safetensors_load_mem("\x02\0\0\0\0\0\0\0{}", 10, "mem", &f), AG_OK);
    assert_null(ag_safetensors_get(f, NULL));
    expect_null_error("ag_safetensors_get", "name");
    assert_null(ag_safetensors_meta(f, NULL));
    expect_null_error("ag_safetensors_meta", "key");
    assert_null(ag_safetensors_name(f, 0));
    assert_error_has("ag_safetensors_name: i = 0 is outside [0, 0)");
    assert_null(ag_safetensors_meta_key(f, -1));
    assert_error_has("ag_safetensors_meta_key: i = -1 is outside [0, 0)");
    ag_clear_last_error();
    assert_null(ag_safetensors_get(f, "absent"));
    assert_null(ag_last_error());
    ag_safetensors_free(f);
    assert_int_equal(nn_idx_type_size((nn_idx_type)99), 0);
    assert_error_has("nn_idx_type_size");
}

/* A NUL byte in the header is refused wherever it is (jansson alone lets
 * one after a number slip by). */
static void test_files_safetensors_nul_in_header_refused(void **state)
{
    (void)state;
    static const char *const headers[] = {
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4\1]}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1\1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}\1",
        "{\"__metadata__\":{\"k\":true\1}}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        unsigned char buf[128] = {0};
        size_t hl = strlen(headers[i]);
        for (size_t k = 0; k < hl; k++)
            buf[8 + k] = headers[i][k] == '\1' ? 0 : (unsigned char)headers[i][k];
        for (int k = 0; k < 8; k++)
            buf[k] = (unsigned char)((uint64_t)hl >> (8 * k));
        size_t n = 8 + hl + (i == 3 ? 0 : 4); /* 4 data bytes for tensor a */
        ag_safetensors *f = (ag_safetensors *)&f;
        assert_int_equal(ag_safetensors_load_mem(buf, n, "nul", &f), AG_ERR_FORMAT);
        assert_null(f);
        assert_error_has("header is not valid JSON: a NUL byte");
    }
}

/* ---- memory per tensor on load ---- */

static size_t g_ag_live, g_ag_peak, g_js_live, g_js_peak;

/* Each block carries its size in a prefix of `pre` bytes (the alignment),
 * so the free side can count it. */
static void *track(size_t size, size_t pre, size_t *live, size_t *peak)
{
    size_t r = (pre + size + pre - 1) / pre * pre;
    unsigned char *p = aligned_alloc(pre, r);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof size);
    *live += size;
    *peak = *live > *peak ? *live : *peak;
    return p + pre;
}

static void untrack(void *q, size_t pre, size_t *live)
{
    if (!q)
        return;
    unsigned char *p = (unsigned char *)q - pre;
    size_t size;
    memcpy(&size, p, sizeof size);
    *live -= size;
    free(p);
}

static void *ag_track(size_t size, size_t align, void *ctx)
{
    (void)ctx;
    return align <= 64 ? track(size, 64, &g_ag_live, &g_ag_peak) : NULL;
}

static void ag_untrack(void *p, void *ctx)
{
    (void)ctx;
    untrack(p, 64, &g_ag_live);
}

static void *js_track(size_t size) { return track(size, 16, &g_js_live, &g_js_peak); }
static void js_untrack(void *p) { untrack(p, 16, &g_js_live); }

/* A header of many zero-size tensors (a legal file) is loaded without a
 * JSON tree of the whole header: jansson holds one entry at a time, and
 * the loader's own memory stays within a few hundred bytes a tensor. */
static void test_files_safetensors_load_memory_per_tensor(void **state)
{
    (void)state;
    enum { N = 20000 };
    size_t cap = (size_t)N * 64 + 64, h = 0;
    unsigned char *buf = malloc(8 + cap);
    assert_non_null(buf);
    char *text = (char *)buf + 8;
    text[h++] = '{';
    for (int i = 0; i < N; i++)
        h += (size_t)snprintf(text + h, cap - h, "%s\"t%06d\":{\"dtype\":\"F32\","
                              "\"shape\":[0],\"data_offsets\":[0,0]}", i ? "," : "", i);
    text[h++] = '}';
    for (int k = 0; k < 8; k++)
        buf[k] = (unsigned char)((uint64_t)h >> (8 * k));
    g_ag_live = g_ag_peak = g_js_live = g_js_peak = 0;
    json_set_alloc_funcs(js_track, js_untrack);
    ag_set_allocator(&(ag_allocator){ag_track, ag_untrack, NULL});
    ag_safetensors *f = NULL;
    ag_status st = ag_safetensors_load_mem(buf, 8 + h, "zero-size", &f);
    size_t ag_peak = g_ag_peak, js_peak = g_js_peak;
    ag_safetensors_free(f);
    ag_set_allocator(NULL);
    json_set_alloc_funcs(malloc, free);
    free(buf);
    print_message("  %d tensors, %zu-byte header: library peak %zu bytes (%zu a tensor), "
                  "jansson peak %zu bytes\n", N, h, ag_peak, ag_peak / N, js_peak);
    assert_int_equal(st, AG_OK);
    assert_true(js_peak < 64 * 1024);                 /* a whole tree: ~1 KB a tensor */
    assert_true(ag_peak < h + (size_t)N * 700);       /* text, entries, index, tensors */
}

/* nn_idx_get outside [0, numel): NaN and a message, not a read out of
 * bounds. */
static void test_files_idx_get_out_of_range(void **state)
{
    (void)state;
    tmpdir d;
    tmpdir_new(&d);
    const char *p = tmpdir_file(&d, "l.idx");
    write_labels(p, 2);
    nn_idx *a = NULL;
    assert_int_equal(nn_idx_load(p, &a), AG_OK);
    assert_true(nn_idx_get(a, 1) == 0.0);
    ag_clear_last_error();
    assert_true(isnan(nn_idx_get(a, 2)));
    assert_error_has("nn_idx_get: i = 2 is outside [0, 2)");
    assert_true(isnan(nn_idx_get(a, -1)));
    assert_true(isnan(nn_idx_get(a, INT64_MAX)));
    nn_idx_free(a);
    tmpdir_remove(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files_fifo_refused),
        cmocka_unit_test(test_files_directory_refused),
        cmocka_unit_test(test_files_device_refused),
        cmocka_unit_test(test_files_symlink_to_regular_file_loads),
        cmocka_unit_test(test_files_save_removes_stale_temporaries),
        cmocka_unit_test(test_files_killed_save_temporary_removed_by_next_save),
        cmocka_unit_test(test_files_save_failures_leave_no_temporary),
        cmocka_unit_test(test_files_mixed_dtypes_saved_aligned),
        cmocka_unit_test(test_files_misaligned_file_still_loads),
        cmocka_unit_test(test_files_idx_dims_overflow_refused),
        cmocka_unit_test(test_files_subset_range_message_no_overflow),
        cmocka_unit_test(test_files_data_accessors_take_null),
        cmocka_unit_test(test_files_safetensors_accessors_take_null),
        cmocka_unit_test(test_files_safetensors_nul_in_header_refused),
        cmocka_unit_test(test_files_safetensors_load_memory_per_tensor),
        cmocka_unit_test(test_files_idx_get_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
