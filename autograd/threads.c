/* threads.c — the one thread pool every parallel kernel of tapegrad runs
 * on (ag_parallel_for, ag_task_*: autograd.h), and the thread count.
 *
 * Why not OpenMP: libgomp's idle workers spin for ~300k iterations (its
 * default OMP_WAIT_POLICY), and a spinning waiter holds the core that the
 * thread it waits for needs.  On the shared 2-core box, 2 threads next to
 * one busy process took 7-15 s per MLP epoch against 1.6-2 s on one
 * thread.  libgomp reads its wait policy once, from the environment,
 * before any library code can run (its constructor runs before ours), so
 * a library cannot turn the spin off.  This pool's choices instead:
 *   - work is cut into fixed chunks that threads claim one at a time (an
 *     atomic counter), so a thread the OS has descheduled simply claims
 *     nothing and the caller does the work itself;
 *   - every wait spins briefly (SPIN_IDLE_NS for workers between jobs,
 *     which covers the gaps between a training step's kernels, SPIN_JOIN_NS
 *     for the caller waiting for a chunk in flight), then sleeps on a
 *     condition variable, which hands the core to whoever needs it: a
 *     descheduled worker of ours, or another process;
 *   - while the threads bring no measured gain (a worker preempted in
 *     the middle of its chunk still makes the caller wait), calls run on
 *     the caller alone for a back-off period ("when to stay on one
 *     thread" below): a busy machine degrades to one thread's speed;
 *   - OpenBLAS stays on one thread (ag_set_num_threads): large products
 *     are cut into strips on this pool (kernels/gemm.c), so no second
 *     pool spins against this one.
 * Chunk boundaries depend on n and chunk only, never on the thread count,
 * which is what makes reductions bit-identical for any count.
 *
 * Workers are started on the first parallel call that wants them and
 * live until the process ends; a job's state and its chunk counter share
 * one 64-bit word (generation << 32 | next chunk), so a worker that wakes
 * late can never claim a chunk of a newer job by mistake. */
#include "autograd_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef AG_HAVE_BLAS
#include <cblas.h>
#endif

#define MAX_WORKERS 63
#define MAX_TASKS 4
/* Spin windows.  An MLP step (batch 128) makes ~6 parallel calls with
 * small serial ops (bias, relu, the loss) between them: of the 2865 gaps
 * of one epoch on the 2-core Zen 4, 74% were under 80 us and 49% under
 * 20 us (at load ~7).  Waking a sleeping worker costs the caller a
 * condvar signal and the worker tens of us before it runs.  So idle
 * workers spin across most gaps; a caller spins only for a chunk about to
 * finish. */
#define SPIN_IDLE_NS 60000
#define SPIN_JOIN_NS 20000

static atomic_int g_threads; /* 0: not set yet */

static int default_threads(void)
{
#ifdef _OPENMP
    int n = omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return n > 0 ? (int)n : 1;
}

void ag_set_num_threads(int n)
{
    if (n <= 0)
        n = default_threads();
    if (n > MAX_WORKERS + 1)
        n = MAX_WORKERS + 1;
    atomic_store(&g_threads, n);
#ifdef AG_HAVE_BLAS
    openblas_set_num_threads(1);
#endif
}

int ag_get_num_threads(void)
{
    int n = atomic_load_explicit(&g_threads, memory_order_relaxed);
    if (n == 0) {
        /* first use: adopt the default, and one thread for OpenBLAS,
         * which otherwise sizes its own pool from its environment */
        ag_set_num_threads(0);
        n = atomic_load_explicit(&g_threads, memory_order_relaxed);
    }
    return n;
}

/* ---- the pool ---- */

typedef struct job {
    _Atomic(ag_parallel_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t n, chunk, nchunks;
} job;

enum { TASK_FREE, TASK_TAKEN, TASK_QUEUED, TASK_RUNNING, TASK_DONE };

struct ag_task {
    atomic_int state;
    ag_task_fn fn;
    void *ctx;
};

static struct {
    _Atomic uint64_t state;     /* generation << 32 | next chunk to claim */
    job slot[2];                /* the job of generation g is slot[g & 1] */
    atomic_int done;            /* chunks of the current job finished */
    uint64_t gen;               /* last generation published (by the holder) */
    atomic_flag busy;           /* held by the thread running a parallel_for */
    atomic_int signal;          /* bumped by every new job or task */
    atomic_int sleepers;        /* workers asleep on `wake` */
    atomic_int waiting;         /* threads asleep on `joined` */
    pthread_mutex_t mu;
    pthread_cond_t wake, joined;
    pthread_mutex_t start_mu;
    atomic_int workers;         /* started */
    ag_task tasks[MAX_TASKS];
} P = {.busy = ATOMIC_FLAG_INIT,
       .mu = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER,
       .joined = PTHREAD_COND_INITIALIZER,
       .start_mu = PTHREAD_MUTEX_INITIALIZER};

/* Set on pool workers and on a thread inside ag_parallel_for: parallel
 * calls from there run inline. */
static _Thread_local bool t_in_pool;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins up to spin_ns for done(arg), then sleeps on cv until it holds;
 * `count` tells the waking side that someone sleeps. */
static void wait_until(bool (*done)(const void *), const void *arg, int64_t spin_ns,
                       pthread_cond_t *cv, atomic_int *count)
{
    int64_t t0 = now_ns();
    for (int i = 1; !done(arg); i++) {
        cpu_relax();
        if (i % 64 == 0 && now_ns() - t0 > spin_ns) {
            pthread_mutex_lock(&P.mu);
            atomic_fetch_add(count, 1);
            while (!done(arg))
                pthread_cond_wait(cv, &P.mu);
            atomic_fetch_sub(count, 1);
            pthread_mutex_unlock(&P.mu);
            return;
        }
    }
}

/* After making what sleepers on cv wait for true (seq_cst): wakes them.
 * A sleeper counts itself, then checks, under the mutex; so either it
 * sees the change or this sees it counted. */
static void wake_all(pthread_cond_t *cv, atomic_int *count)
{
    if (atomic_load(count) > 0) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(cv);
        pthread_mutex_unlock(&P.mu);
    }
}

/* Claims the next chunk of job generation gen: false when that job is
 * over or gone (a newer one published). */
static bool claim(uint64_t gen, int64_t nchunks, int64_t *idx)
{
    uint64_t s = atomic_load_explicit(&P.state, memory_order_acquire);
    for (;;) {
        if (s >> 32 != (gen & 0xffffffffu))
            return false;
        int64_t i = (int64_t)(s & 0xffffffffu);
        if (i >= nchunks)
            return false;
        if (atomic_compare_exchange_weak_explicit(&P.state, &s, s + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            *idx = i;
            return true;
        }
    }
}

/* Runs chunks of job gen until none is left.  The job's fields are read
 * before the first claim and used only after one succeeds, which proves
 * they were that job's (its slot is rewritten only once it is over). */
static int64_t run_chunks(uint64_t gen)
{
    const job *j = &P.slot[gen & 1];
    ag_parallel_fn fn = atomic_load_explicit(&j->fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&j->ctx, memory_order_relaxed);
    int64_t n = atomic_load_explicit(&j->n, memory_order_relaxed);
    int64_t chunk = atomic_load_explicit(&j->chunk, memory_order_relaxed);
    int64_t nchunks = atomic_load_explicit(&j->nchunks, memory_order_relaxed);
    int64_t i, ran = 0;
    while (claim(gen, nchunks, &i)) {
        int64_t lo = i * chunk, hi = lo + chunk < n ? lo + chunk : n;
        fn(ctx, lo, hi);
        ran++;
        if (atomic_fetch_add(&P.done, 1) + 1 == nchunks)
            wake_all(&P.joined, &P.waiting);
    }
    return ran;
}

/* Whether a task is queued or running (a worker is, or will be, on it). */
static bool task_running(void)
{
    for (int k = 0; k < MAX_TASKS; k++) {
        int st = atomic_load_explicit(&P.tasks[k].state, memory_order_relaxed);
        if (st == TASK_QUEUED || st == TASK_RUNNING)
            return true;
    }
    return false;
}

/* Runs one queued task, if any; true if it did. */
static bool run_a_task(void)
{
    for (int k = 0; k < MAX_TASKS; k++) {
        ag_task *t = &P.tasks[k];
        int want = TASK_QUEUED;
        if (atomic_compare_exchange_strong(&t->state, &want, TASK_RUNNING)) {
            t->fn(t->ctx);
            atomic_store(&t->state, TASK_DONE);
            wake_all(&P.joined, &P.waiting);
            return true;
        }
    }
    return false;
}

static bool signal_moved(const void *seen)
{
    return atomic_load(&P.signal) != *(const int *)seen;
}

static void *worker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    t_in_pool = true;
    uint64_t last = atomic_load(&P.state) >> 32;
    for (;;) {
        int seen = atomic_load(&P.signal);
        if (run_a_task())
            continue;
        uint64_t gen = atomic_load_explicit(&P.state, memory_order_acquire) >> 32;
        if (gen != last) {
            last = gen;
            if (id < ag_get_num_threads() - 1)
                run_chunks(gen);
            continue;
        }
        wait_until(signal_moved, &seen, SPIN_IDLE_NS, &P.wake, &P.sleepers);
    }
    return NULL;
}

/* Workers 0..want-1 running; false if none could be started. */
static bool start_workers(int want)
{
    if (want > MAX_WORKERS)
        want = MAX_WORKERS;
    if (atomic_load_explicit(&P.workers, memory_order_relaxed) >= want)
        return true;
    pthread_mutex_lock(&P.start_mu);
    while (P.workers < want) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &at, worker_main, (void *)(intptr_t)P.workers);
        pthread_attr_destroy(&at);
        if (rc != 0)
            break;
        P.workers++;
    }
    bool any = P.workers > 0;
    pthread_mutex_unlock(&P.start_mu);
    return any;
}

static void publish(void)
{
    atomic_fetch_add(&P.signal, 1);
    wake_all(&P.wake, &P.sleepers);
}

static bool all_done(const void *nchunks)
{
    return atomic_load(&P.done) >= *(const int64_t *)nchunks;
}

/* ---- when to stay on one thread ----
 * A worker the OS deschedules in the middle of a chunk makes the caller
 * wait for it (a chunk cannot be taken back); on a machine with more
 * runnable threads than cores that wait is a scheduler time slice, and
 * two threads lose to one (measured: 1.24 s against 0.75 s per MLP epoch
 * with ~3 other processes running).  So each parallel call is judged by
 * what the caller saw: its own chunks' pace gives what one thread would
 * have taken (own time x chunks / own chunks), against the call's real
 * time.  When the running average of that ratio says parallel is losing,
 * calls run inline for a back-off period (doubling while it keeps losing,
 * 20 ms up to 1 s), then calls probe again.  No load average is read:
 * the measure is the pool's own speed-up, and results do not depend on
 * how many threads ran. */
/* parallel must beat one thread by 5% on average: a tie still costs the
 * wake-ups and a spinning worker's share of a busy machine */
#define WIN_RATIO 0.95
#define BACKOFF_MIN_NS 20000000
#define BACKOFF_MAX_NS 1000000000
static _Atomic int64_t g_inline_until; /* now_ns() before which calls run inline */
static double g_ratio_avg = 0.75;     /* parallel / one-thread time; by the pool holder */
static int64_t g_backoff = BACKOFF_MIN_NS;

static atomic_bool g_adapt = true;

void ag_pool_adapt(bool on)
{
    atomic_store(&g_adapt, on);
    atomic_store(&g_inline_until, 0);
}

/* Starts a back-off period at t (the threads are losing). */
static void back_off(int64_t t)
{
    if (!atomic_load_explicit(&g_adapt, memory_order_relaxed))
        return;
    atomic_store_explicit(&g_inline_until, t + g_backoff, memory_order_relaxed);
    g_backoff = g_backoff * 2 < BACKOFF_MAX_NS ? g_backoff * 2 : BACKOFF_MAX_NS;
}

/* The running share of one-sided calls: above ONE_SIDED_MAX, back off;
 * after it, a few calls probe again. */
#define ONE_SIDED_MAX 0.25
static double g_one_sided = 0;

static void one_sided(int64_t t, bool yes)
{
    g_one_sided += ((yes ? 1.0 : 0.0) - g_one_sided) / 16;
    if (g_one_sided > ONE_SIDED_MAX) {
        back_off(t);
        g_one_sided = ONE_SIDED_MAX / 2;
    }
}

static bool backing_off(void)
{
    int64_t until = atomic_load_explicit(&g_inline_until, memory_order_relaxed);
    return until != 0 && now_ns() < until;
}

/* The verdict on one parallel call: started t0, the caller's chunks done
 * at t1 (mine of n), all done at t2.  Runs under the pool's busy flag. */
static void judge(int64_t t0, int64_t t1, int64_t t2, int64_t mine, int64_t n, bool tasked)
{
    /* One thread did it all (the other asleep, late or descheduled): the
     * call took what one thread takes, so nothing is learnt about parallel
     * speed, and counted as ties such calls sent an idle pool into
     * back-off (shared Zen 3, bench_mlp 2 2: 0.95-1.31 s an epoch against
     * 0.71-0.94 with back-off off).  But how often it happens says whether
     * the threads have cores: idle, 8-39 of the 5772 calls of 2 MLP
     * epochs were one-sided; next to one busy process, 4100-4585, while
     * the calls both threads ran still showed ratios of 0.5-0.75 (and two
     * threads took 1.13-1.33 s an epoch against one thread's 1.05).  So
     * one-sided calls are counted apart, those made while a task held the
     * worker (the batcher's prefetch) not at all. */
    if (mine <= 0 || mine >= n || t1 <= t0) {
        if (!tasked)
            one_sided(t2, true);
        return;
    }
    one_sided(t2, false);
    double ratio = (double)(t2 - t0) / ((double)(t1 - t0) * (double)n / (double)mine);
    /* clipped at 2: one stall alone (a worker preempted once) does not
     * flip an average of clear wins; three in a row do */
    g_ratio_avg += ((ratio < 2 ? ratio : 2) - g_ratio_avg) / 8;
    if (g_ratio_avg > WIN_RATIO) {
        back_off(t2);
        /* after the back-off, a few shared calls probe again */
        g_ratio_avg = WIN_RATIO - 0.05;
    } else if (g_ratio_avg < WIN_RATIO - 0.1 && g_one_sided < ONE_SIDED_MAX / 4) {
        /* winning, and the threads have had their cores for a while (the
         * one-sided share restarts at 1/8 after a back-off): a later
         * back-off starts short again */
        g_backoff = BACKOFF_MIN_NS;
    }
}

bool ag_pool_would_thread(void)
{
    return ag_get_num_threads() > 1 && !t_in_pool && !backing_off();
}

static void run_inline(int64_t n, int64_t chunk, ag_parallel_fn fn, void *ctx)
{
    for (int64_t lo = 0; lo < n; lo += chunk)
        fn(ctx, lo, lo + chunk < n ? lo + chunk : n);
}

ag_status ag_parallel_for(int64_t n, int64_t chunk, ag_parallel_fn fn, void *ctx)
{
    if (!fn || n < 0) {
        ag_set_last_error("ag_parallel_for: %s", fn ? "n is negative" : "fn is NULL");
        return AG_ERR_ARG;
    }
    if (n == 0)
        return AG_OK;
    if (chunk <= 0 || chunk > n)
        chunk = n;
    int64_t nchunks = (n - 1) / chunk + 1;
    if (nchunks > 0xffffffffLL) { /* the chunk counter's 32 bits */
        ag_set_last_error("ag_parallel_for: n = %lld in chunks of %lld is over 2^32 chunks",
                          (long long)n, (long long)chunk);
        return AG_ERR_ARG;
    }
    int nt = ag_get_num_threads();
    if (nchunks == 1 || nt <= 1 || t_in_pool || backing_off() ||
        atomic_flag_test_and_set(&P.busy)) {
        run_inline(n, chunk, fn, ctx);
        return AG_OK;
    }
    if (!start_workers(nt - 1)) {
        atomic_flag_clear(&P.busy);
        run_inline(n, chunk, fn, ctx);
        return AG_OK;
    }
    t_in_pool = true;
    uint64_t gen = ++P.gen & 0xffffffffu;
    if (gen == 0) /* generation 0 is what a new worker has seen */
        gen = ++P.gen & 0xffffffffu;
    job *j = &P.slot[gen & 1];
    atomic_store_explicit(&j->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&j->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&j->n, n, memory_order_relaxed);
    atomic_store_explicit(&j->chunk, chunk, memory_order_relaxed);
    atomic_store_explicit(&j->nchunks, nchunks, memory_order_relaxed);
    atomic_store(&P.done, 0);
    atomic_store_explicit(&P.state, gen << 32, memory_order_release);
    int64_t t0 = now_ns();
    bool tasked = task_running();
    publish();
    int64_t mine = run_chunks(gen), t1 = now_ns();
    wait_until(all_done, &nchunks, SPIN_JOIN_NS, &P.joined, &P.waiting);
    judge(t0, t1, now_ns(), mine, nchunks, tasked || task_running());
    t_in_pool = false;
    atomic_flag_clear(&P.busy);
    return AG_OK;
}

/* ---- background tasks ---- */

ag_task *ag_task_start(ag_task_fn fn, void *ctx)
{
    if (!fn) {
        ag_set_last_error("ag_task_start: fn is NULL");
        return NULL;
    }
    int nt = ag_get_num_threads();
    if (!ag_pool_would_thread() || !start_workers(nt - 1)) {
        ag_set_last_error("ag_task_start: no pool thread free (fn not run)");
        return NULL;
    }
    for (int k = 0; k < MAX_TASKS; k++) {
        ag_task *t = &P.tasks[k];
        int want = TASK_FREE;
        if (atomic_compare_exchange_strong(&t->state, &want, TASK_TAKEN)) {
            t->fn = fn;
            t->ctx = ctx;
            atomic_store(&t->state, TASK_QUEUED);
            publish();
            return t;
        }
    }
    ag_set_last_error("ag_task_start: all %d task slots taken (fn not run)", MAX_TASKS);
    return NULL;
}

static bool task_done(const void *t)
{
    return atomic_load(&((const ag_task *)t)->state) == TASK_DONE;
}

void ag_task_wait(ag_task *t)
{
    if (!t)
        return;
    int want = TASK_QUEUED;
    /* not picked up yet (its worker busy or descheduled): run it here */
    if (atomic_compare_exchange_strong(&t->state, &want, TASK_RUNNING)) {
        t->fn(t->ctx);
        atomic_store(&t->state, TASK_DONE);
    }
    wait_until(task_done, t, SPIN_JOIN_NS, &P.joined, &P.waiting);
    atomic_store(&t->state, TASK_FREE);
}
