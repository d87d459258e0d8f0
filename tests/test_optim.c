/* test_optim.c — optim/'s optimizers: 100-step trajectories against
 * torch.optim fixtures (tests/reference/make_optim_fixtures.py), resumable
 * checkpoints, and the error paths.  Schedules and clipping: test_schedule.c. */
#include "test_util.h"

#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TRAJ_RTOL 1e-10

static ag_safetensors *g_traj;

static int fixtures_setup(void **state)
{
    (void)state;
    g_traj = tg_load_fixture("tests/reference/optim/trajectories.safetensors");
    return g_traj ? 0 : -1;
}

static int fixtures_teardown(void **state)
{
    (void)state;
    ag_safetensors_free(g_traj);
    return 0;
}

/* ---- fixed problems ------------------------------------------------------- */

typedef struct problem {
    const char *name;
    int np;
    char pnames[4][8];
    ag_tensor *p[4];
    ag_tensor *data[2];
} problem;

static void problem_init(problem *pr, const char *name, ag_dtype dt)
{
    memset(pr, 0, sizeof *pr);
    pr->name = name;
    bool quad = strcmp(name, "quad") == 0;
    const char *dn[2] = {quad ? "A" : "X", quad ? "b" : "T"};
    for (int i = 0; i < 2; i++)
        pr->data[i] = tg_convert(tg_fixture(g_traj, "%s.data.%s", name, dn[i]), dt);
    char buf[64], *items[4];
    char key[32];
    snprintf(key, sizeof key, "params.%s", name);
    pr->np = tg_split_list(ag_safetensors_meta(g_traj, key), buf, sizeof buf, items, 4);
    for (int i = 0; i < pr->np; i++) {
        snprintf(pr->pnames[i], sizeof pr->pnames[i], "%s", items[i]);
        pr->p[i] = tg_convert(tg_fixture(g_traj, "%s.init.%s", name, items[i]), dt);
        ag_set_requires_grad(pr->p[i], true);
    }
}

static void problem_free(problem *pr)
{
    for (int i = 0; i < pr->np; i++)
        ag_tensor_free(pr->p[i]);
    ag_tensor_free(pr->data[0]);
    ag_tensor_free(pr->data[1]);
}

/* Loss of the problem on (x, y) data; backward fills the gradients. */
static ag_tensor *problem_loss(ag_tape *t, problem *pr, ag_tensor *x, ag_tensor *y)
{
    if (strcmp(pr->name, "quad") == 0) {
        /* 0.5 x^T A x - b^T x */
        ag_tensor *v = pr->p[0];
        ag_tensor *q = ag_sum(t, ag_mul(t, ag_matmul(t, v, x), v), AG_ALL, false);
        return ag_sub(t, ag_mul_scalar(t, q, 0.5), ag_sum(t, ag_mul(t, y, v), AG_ALL, false));
    }
    /* mean((tanh(X w1 + b1) w2 + b2 - T)^2) */
    ag_tensor *h = ag_tanh(t, ag_add(t, ag_matmul(t, x, pr->p[0]), pr->p[1]));
    ag_tensor *r = ag_sub(t, ag_add(t, ag_matmul(t, h, pr->p[2]), pr->p[3]), y);
    return ag_mean(t, ag_mul(t, r, r), AG_ALL, false);
}

static void problem_backward(ag_tape *t, problem *pr, ag_tensor *x, ag_tensor *y)
{
    ag_tensor *loss = problem_loss(t, pr, x, y);
    ag_status s = ag_backward(t, loss);
    if (s != AG_OK)
        print_message("backward: %s\n", ag_tape_error(t));
    assert_int_equal(s, AG_OK);
    ag_tape_reset(t);
}

/* A fixture's option value: its 0 is the value 0 (OPTIM_ZERO), where a 0
 * field would take PyTorch's default (adam_beta1_zero's beta1). */
static double z(double v)
{
    return v == 0 ? OPTIM_ZERO : v;
}

/* An optimizer from a fixture configuration (options in C struct order). */
static optim *make_optim(const char *kind, const double *v, ag_tensor **p, int n)
{
    if (strcmp(kind, "sgd") == 0)
        return optim_sgd(p, n, (optim_sgd_opts){z(v[0]), z(v[1]), z(v[2]), z(v[3]), v[4] != 0});
    if (strcmp(kind, "adam") == 0)
        return optim_adam(p, n, (optim_adam_opts){z(v[0]), z(v[1]), z(v[2]), z(v[3]), z(v[4]),
                                                  v[5] != 0});
    if (strcmp(kind, "adamw") == 0)
        return optim_adamw(p, n, (optim_adam_opts){z(v[0]), z(v[1]), z(v[2]), z(v[3]), z(v[4]),
                                                   v[5] != 0});
    if (strcmp(kind, "rmsprop") == 0)
        return optim_rmsprop(p, n, (optim_rmsprop_opts){z(v[0]), z(v[1]), z(v[2]), z(v[3]),
                                                        z(v[4]), v[5] != 0});
    if (strcmp(kind, "adagrad") == 0)
        return optim_adagrad(p, n,
                             (optim_adagrad_opts){z(v[0]), z(v[1]), z(v[2]), z(v[3]), z(v[4])});
    return NULL;
}

/* ---- trajectories ---------------------------------------------------------- */

static int record_steps(int *steps, int max)
{
    char buf[128], *items[16];
    int k = tg_split_list(ag_safetensors_meta(g_traj, "steps"), buf, sizeof buf, items, 16);
    for (int i = 0; i < k && i < max; i++)
        steps[i] = atoi(items[i]);
    return k < max ? k : max;
}

static double run_config(const char *cfg, const char *prob)
{
    char key[96];
    snprintf(key, sizeof key, "kind.%s", cfg);
    const char *kind = ag_safetensors_meta(g_traj, key);
    assert_non_null(kind);
    const ag_tensor *opts = tg_fixture(g_traj, "cfg.%s.opts", cfg);
    int steps[16], n_rec = record_steps(steps, 16), r = 0;
    problem pr;
    problem_init(&pr, prob, AG_F64);
    optim *o = make_optim(kind, ag_data_const(opts), pr.p, pr.np);
    if (!o)
        print_message("%s: %s\n", cfg, ag_last_error());
    assert_non_null(o);
    ag_tape *t = ag_tape_new();
    double worst = 0;
    for (int step = 1; step <= steps[n_rec - 1]; step++) {
        optim_zero_grad(o);
        problem_backward(t, &pr, pr.data[0], pr.data[1]);
        assert_int_equal(optim_step(o), AG_OK);
        if (step != steps[r])
            continue;
        for (int i = 0; i < pr.np; i++) {
            char label[160];
            snprintf(label, sizeof label, "%s on %s: %s after step %d", cfg, prob,
                     pr.pnames[i], step);
            tg_check_rel(pr.p[i], tg_fixture(g_traj, "%s.%s.%s.step%d", cfg, prob, pr.pnames[i], step),
                        TRAJ_RTOL, &worst, label);
        }
        r++;
    }
    ag_tape_free(t);
    optim_free(o);
    problem_free(&pr);
    return worst;
}

static void run_all_configs(const char *prob)
{
    char buf[2048], *cfgs[64];
    int n = tg_split_list(ag_safetensors_meta(g_traj, "configs"), buf, sizeof buf, cfgs, 64);
    assert_true(n >= 20);
    double worst = 0;
    const char *worst_cfg = "";
    for (int i = 0; i < n; i++) {
        double e = run_config(cfgs[i], prob);
        if (e >= worst) {
            worst = e;
            worst_cfg = cfgs[i];
        }
    }
    print_message("  %s: %d configurations, 100 steps; max relative error %.3g (%s)\n", prob,
                  n, worst, worst_cfg);
}

static void test_optim_quadratic_matches_torch(void **state)
{
    (void)state;
    run_all_configs("quad");
}

static void test_optim_mlp_matches_torch(void **state)
{
    (void)state;
    run_all_configs("mlp");
}

/* f32: tapegrad computes in double and rounds on store; PyTorch rounds each
 * operation, so the two agree to f32 precision, not bit for bit. */
static void test_optim_f32_params_follow_torch(void **state)
{
    (void)state;
    problem pr;
    problem_init(&pr, "quad", AG_F32);
    optim_adam_opts ao = optim_adam_defaults();
    ao.lr = 0.01;
    optim *o = optim_adam(pr.p, 1, ao);
    ag_tape *t = ag_tape_new();
    double worst = 0;
    for (int step = 1; step <= 100; step++) {
        optim_zero_grad(o);
        problem_backward(t, &pr, pr.data[0], pr.data[1]);
        optim_step(o);
        if (step == 10 || step == 100)
            tg_check_rel(pr.p[0], tg_fixture(g_traj, "f32.quad.x.step%d", step), 1e-4, &worst, "f32 adam");
    }
    assert_int_equal(ag_dtype_of(optim_state(o, pr.p[0], "exp_avg")), AG_F32);
    print_message("  f32 adam: max relative error %.3g\n", worst);
    ag_tape_free(t);
    optim_free(o);
    problem_free(&pr);
}

/* ---- optimizer behaviour ------------------------------------------------------ */

static void test_optim_bad_options(void **state)
{
    (void)state;
    ag_tensor *p[2] = {ag_tensor_new(AG_F64, 1, (const int64_t[]){2}), NULL};
    optim_sgd_opts so = optim_sgd_defaults();
    so.lr = -1;
    assert_null(optim_sgd(p, 1, so));
    assert_non_null(strstr(ag_last_error(), "lr"));
    so = optim_sgd_defaults();
    so.nesterov = true;
    assert_null(optim_sgd(p, 1, so));
    assert_non_null(strstr(ag_last_error(), "nesterov"));
    so.momentum = 0.9;
    so.dampening = 0.1;
    assert_null(optim_sgd(p, 1, so));
    optim_adam_opts ao = optim_adam_defaults();
    ao.beta2 = 1.0;
    assert_null(optim_adam(p, 1, ao));
    assert_non_null(strstr(ag_last_error(), "beta2"));
    ao = optim_adamw_defaults();
    ao.beta1 = -0.1;
    assert_null(optim_adamw(p, 1, ao));
    assert_non_null(strstr(ag_last_error(), "beta1"));
    ao.beta1 = NAN;
    assert_null(optim_adamw(p, 1, ao));
    optim_rmsprop_opts ro = optim_rmsprop_defaults();
    ro.alpha = -1;
    assert_null(optim_rmsprop(p, 1, ro));
    assert_non_null(strstr(ag_last_error(), "alpha"));
    optim_adagrad_opts ad = optim_adagrad_defaults();
    ad.initial_accumulator_value = -1;
    assert_null(optim_adagrad(p, 1, ad));
    assert_non_null(strstr(ag_last_error(), "initial_accumulator_value"));
    /* parameter lists */
    assert_null(optim_adam(p, 2, optim_adam_defaults()));
    assert_non_null(strstr(ag_last_error(), "#2 is NULL"));
    assert_null(optim_adam(NULL, 1, optim_adam_defaults()));
    assert_null(optim_adam(p, 0, optim_adam_defaults()));
    p[1] = p[0];
    assert_null(optim_adam(p, 2, optim_adam_defaults()));
    assert_non_null(strstr(ag_last_error(), "same tensor"));
    assert_int_equal(optim_step(NULL), AG_ERR_ARG);
    optim_zero_grad(NULL);
    optim_free(NULL);
    assert_true(isnan(optim_get_lr(NULL)));
    ag_tensor_free(p[0]);
}

static void test_optim_defaults_are_torch(void **state)
{
    (void)state;
    optim_adam_opts a = optim_adam_defaults(), w = optim_adamw_defaults();
    assert_true(a.lr == 1e-3 && a.beta1 == 0.9 && a.beta2 == 0.999 && a.eps == 1e-8);
    assert_true(a.weight_decay == 0 && w.weight_decay == 1e-2 && !a.amsgrad);
    optim_rmsprop_opts r = optim_rmsprop_defaults();
    assert_true(r.lr == 1e-2 && r.alpha == 0.99 && r.eps == 1e-8 && r.momentum == 0);
    optim_adagrad_opts g = optim_adagrad_defaults();
    assert_true(g.lr == 1e-2 && g.eps == 1e-10 && g.initial_accumulator_value == 0);
    optim_onecycle_opts oc = optim_onecycle_defaults(0.1, 100);
    assert_true(oc.pct_start == 0.3 && oc.div_factor == 25 && oc.final_div_factor == 1e4);
    assert_true(oc.cycle_momentum && oc.anneal == OPTIM_ANNEAL_COS);
}

/* A parameter without a gradient is skipped and keeps no state. */
static void test_optim_skips_params_without_grad(void **state)
{
    (void)state;
    ag_tensor *p[2] = {ag_tensor_from_f64(1, (const int64_t[]){2}, (const double[]){1, 2}),
                       ag_tensor_from_f64(1, (const int64_t[]){2}, (const double[]){3, 4})};
    ag_tensor *g = ag_tensor_from_f64(1, (const int64_t[]){2}, (const double[]){0.5, -1});
    tg_set_grad(p[0], g);
    optim_adam_opts ao = optim_adam_defaults();
    ao.lr = 0.1;
    optim *o = optim_adam(p, 2, ao);
    assert_non_null(o);
    assert_null(optim_state(o, p[0], "exp_avg"));
    assert_int_equal(optim_step(o), AG_OK);
    assert_int_equal(optim_state_steps(o, p[0]), 1);
    assert_int_equal(optim_state_steps(o, p[1]), 0);
    assert_null(optim_state(o, p[1], "exp_avg"));
    assert_null(optim_state(o, p[0], "max_exp_avg_sq"));
    assert_null(optim_state(o, p[0], "nonsense"));
    assert_string_equal(optim_state_name(o, 0), "exp_avg");
    assert_string_equal(optim_state_name(o, 2), "max_exp_avg_sq");
    assert_null(optim_state_name(o, 3));
    assert_null(optim_state_name(o, -1));
    assert_null(optim_state_name(NULL, 0));
    /* first Adam step moves each element by lr * sign(g) (eps aside) */
    assert_true(fabs(ag_get(p[0], 0) - 0.9) < 1e-6 && fabs(ag_get(p[0], 1) - 2.1) < 1e-6);
    assert_true(ag_get(p[1], 0) == 3 && ag_get(p[1], 1) == 4);
    const ag_tensor *m = optim_state(o, p[0], "exp_avg");
    assert_non_null(m);
    assert_true(fabs(ag_get(m, 0) - 0.05) < 1e-15);
    optim_zero_grad(o);
    assert_true(ag_get(ag_grad(p[0]), 0) == 0);
    optim_set_lr(o, 0.5);
    assert_true(optim_get_lr(o) == 0.5);
    optim_set_lr(o, -1);
    assert_true(optim_get_lr(o) == 0.5);
    assert_string_equal(optim_name(o), "adam");
    optim_free(o);
    ag_tensor_free(g);
    ag_tensor_free(p[0]);
    ag_tensor_free(p[1]);
}

/* ---- resumable training --------------------------------------------------------- */

typedef struct run {
    problem pr;
    optim *o;
    optim_sched *s;
    ag_rng rng;
    ag_tensor *xb, *yb; /* (8, 4), (8, 3): a random minibatch per step */
} run;

static void run_new(run *r, int which, ag_dtype dt)
{
    problem_init(&r->pr, "mlp", dt);
    ag_tensor **p = r->pr.p;
    int n = r->pr.np;
    switch (which) {
    case 0: {
        optim_adam_opts a = optim_adam_defaults();
        a.lr = 0.02;
        a.amsgrad = true;
        r->o = optim_adam(p, n, a);
        r->s = optim_sched_warmup(r->o, 0.1, 10, optim_sched_cosine(r->o, 40, 1e-4));
        break;
    }
    case 1: {
        optim_sgd_opts s = optim_sgd_defaults();
        s.lr = 0.1;
        s.momentum = 0.9;
        s.nesterov = true;
        r->o = optim_sgd(p, n, s);
        r->s = optim_sched_onecycle(r->o, optim_onecycle_defaults(0.2, 60));
        break;
    }
    case 2: {
        optim_rmsprop_opts s = optim_rmsprop_defaults();
        s.momentum = 0.5;
        s.centered = true;
        s.weight_decay = 0.01;
        r->o = optim_rmsprop(p, n, s);
        r->s = optim_sched_multistep(r->o, (const int64_t[]){5, 30}, 2, 0.5);
        break;
    }
    case 3: {
        optim_adagrad_opts s = optim_adagrad_defaults();
        s.lr = 0.1;
        s.lr_decay = 0.01;
        r->o = optim_adagrad(p, n, s);
        r->s = optim_sched_exponential(r->o, 0.98);
        break;
    }
    default: {
        r->o = optim_adamw(p, n, optim_adamw_defaults());
        r->s = optim_sched_step(r->o, 7, 0.7);
        break;
    }
    }
    assert_non_null(r->o);
    assert_non_null(r->s);
    ag_rng_seed(&r->rng, 1234);
    r->xb = ag_tensor_new(dt, 2, (const int64_t[]){8, 4});
    r->yb = ag_tensor_new(dt, 2, (const int64_t[]){8, 3});
}

static void run_free(run *r)
{
    optim_sched_free(r->s);
    optim_free(r->o);
    ag_tensor_free(r->xb);
    ag_tensor_free(r->yb);
    problem_free(&r->pr);
}

/* A random minibatch's gradients, clipped: a step up to the update. */
static void run_backward(run *r, ag_tape *t)
{
    for (int i = 0; i < 8; i++) {
        int64_t row = (int64_t)ag_rng_below(&r->rng, 16);
        for (int j = 0; j < 4; j++)
            ag_set(r->xb, i * 4 + j, ag_get(r->pr.data[0], row * 4 + j));
        for (int j = 0; j < 3; j++)
            ag_set(r->yb, i * 3 + j, ag_get(r->pr.data[1], row * 3 + j));
    }
    optim_zero_grad(r->o);
    problem_backward(t, &r->pr, r->xb, r->yb);
    assert_int_equal(optim_clip_grad_norm(r->pr.p, r->pr.np, 1.0, 2.0, NULL), AG_OK);
}

static void run_steps(run *r, ag_tape *t, int steps)
{
    for (int k = 0; k < steps; k++) {
        run_backward(r, t);
        assert_int_equal(optim_step(r->o), AG_OK);
        assert_int_equal(optim_sched_step_once(r->s), AG_OK);
    }
}

static const char *const *run_names(run *r, const char **buf)
{
    for (int i = 0; i < r->pr.np; i++)
        buf[i] = r->pr.pnames[i];
    return buf;
}

static void resume_case(int which, ag_dtype dt)
{
    enum { N = 25 };
    char path[] = "/tmp/tg_optim_ckpt_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    ag_tape *t = ag_tape_new();
    const char *names[4];

    run a, b, c;
    run_new(&a, which, dt);
    run_steps(&a, t, 2 * N);

    run_new(&b, which, dt);
    run_steps(&b, t, N);
    ag_status st = optim_checkpoint_save(path, run_names(&b, names), b.pr.p, b.pr.np, b.o, b.s,
                                         &b.rng);
    if (st != AG_OK)
        print_message("save: %s\n", ag_last_error());
    assert_int_equal(st, AG_OK);
    run_free(&b);

    run_new(&c, which, dt);
    st = optim_checkpoint_load(path, run_names(&c, names), c.pr.p, c.pr.np, c.o, c.s, &c.rng);
    if (st != AG_OK)
        print_message("load: %s\n", ag_last_error());
    assert_int_equal(st, AG_OK);
    run_steps(&c, t, N);

    for (int i = 0; i < a.pr.np; i++) {
        size_t bytes = (size_t)ag_numel(a.pr.p[i]) * ag_dtype_size(dt);
        if (memcmp(ag_data(a.pr.p[i]), ag_data(c.pr.p[i]), bytes) != 0)
            print_message("%s (case %d): %s differs after resuming\n", optim_name(a.o), which,
                          a.pr.pnames[i]);
        assert_memory_equal(ag_data(a.pr.p[i]), ag_data(c.pr.p[i]), bytes);
    }
    assert_true(optim_get_lr(a.o) == optim_get_lr(c.o));
    assert_true(optim_sched_get_last_lr(a.s) == optim_sched_get_last_lr(c.s));
    assert_int_equal(optim_sched_last_epoch(a.s), optim_sched_last_epoch(c.s));
    assert_true(ag_rng_next(&a.rng) == ag_rng_next(&c.rng));
    run_free(&a);
    run_free(&c);
    ag_tape_free(t);
    unlink(path);
}

static void test_checkpoint_resume_is_bit_identical(void **state)
{
    (void)state;
    for (int which = 0; which < 5; which++)
        resume_case(which, AG_F64);
    resume_case(0, AG_F32);
    resume_case(1, AG_F32);
}

static void test_checkpoint_rejects_what_does_not_fit(void **state)
{
    (void)state;
    char path[] = "/tmp/tg_optim_ckpt_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    ag_tape *t = ag_tape_new();
    const char *names[4];
    run a, b;
    run_new(&a, 0, AG_F64);
    run_steps(&a, t, 3);
    assert_int_equal(optim_checkpoint_save(path, run_names(&a, names), a.pr.p, a.pr.np, a.o,
                                           a.s, &a.rng),
                     AG_OK);

    /* another optimizer kind: rejected, nothing changed */
    run_new(&b, 2, AG_F64);
    double before = ag_get(b.pr.p[0], 0), lr = optim_get_lr(b.o);
    assert_int_equal(optim_checkpoint_load(path, run_names(&b, names), b.pr.p, b.pr.np, b.o,
                                           NULL, NULL),
                     AG_ERR_FORMAT);
    assert_non_null(strstr(ag_last_error(), "kind"));
    assert_true(ag_get(b.pr.p[0], 0) == before && optim_get_lr(b.o) == lr);
    /* another schedule: rejected */
    assert_int_equal(optim_checkpoint_load(path, run_names(&b, names), b.pr.p, b.pr.np, NULL,
                                           b.s, NULL),
                     AG_ERR_FORMAT);
    assert_non_null(strstr(ag_last_error(), "schedule"));
    /* parameters only, and the generator: fine */
    ag_rng r;
    assert_int_equal(optim_checkpoint_load(path, run_names(&b, names), b.pr.p, b.pr.np, NULL,
                                           NULL, &r),
                     AG_OK);
    assert_true(ag_get(b.pr.p[0], 0) == ag_get(a.pr.p[0], 0));
    assert_memory_equal(&r, &a.rng, sizeof r);
    /* a parameter of another shape */
    ag_tensor *wrong = ag_tensor_new(AG_F64, 1, (const int64_t[]){3});
    ag_tensor *ps[1] = {wrong};
    assert_int_equal(optim_checkpoint_load(path, (const char *const[]){"b1"}, ps, 1, NULL,
                                           NULL, NULL),
                     AG_ERR_FORMAT);
    assert_non_null(strstr(ag_last_error(), "b1"));
    /* a missing name, a reserved name, an unnamed optimizer parameter */
    assert_int_equal(optim_checkpoint_load(path, (const char *const[]){"zz"}, ps, 1, NULL, NULL,
                                           NULL),
                     AG_ERR_FORMAT);
    assert_int_equal(optim_checkpoint_save(path, (const char *const[]){"optim.x"}, ps, 1, NULL,
                                           NULL, NULL),
                     AG_ERR_ARG);
    assert_int_equal(optim_checkpoint_save(path, run_names(&a, names), a.pr.p, 2, a.o, NULL,
                                           NULL),
                     AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "not among"));
    /* a missing file */
    assert_int_equal(optim_checkpoint_load("/nonexistent/x.safetensors", names, a.pr.p, 0,
                                           NULL, NULL, NULL),
                     AG_ERR_IO);
    ag_tensor_free(wrong);
    run_free(&a);
    run_free(&b);
    ag_tape_free(t);
    unlink(path);
}

/* A checkpoint whose optimizer part is malformed is refused as a whole. */
static void test_checkpoint_rejects_bad_optimizer_state(void **state)
{
    (void)state;
    char path[] = "/tmp/tg_optim_ckpt_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    ag_tensor *p = ag_tensor_from_f64(1, (const int64_t[]){2}, (const double[]){1, 2});
    ag_tensor *saved = ag_tensor_from_f64(1, (const int64_t[]){2}, (const double[]){5, 6});
    ag_tensor *m = ag_tensor_new(AG_F64, 1, (const int64_t[]){2});
    ag_tensor *step = ag_tensor_from_f64(0, NULL, (const double[]){1.5});
    /* adam options: lr, beta1, beta2, eps, wd, amsgrad, has_initial_lr, initial_lr */
    double good[8] = {1e-3, 0.9, 0.999, 1e-8, 0, 0, 0, 0}, bad_lr[8];
    memcpy(bad_lr, good, sizeof good);
    bad_lr[0] = -1;
    const char *keys[2] = {"format", "optim.kind"}, *vals[2] = {"tapegrad-checkpoint-1", "adam"};
    optim *o = optim_adam(&p, 1, optim_adam_defaults());
    const double *cases[2] = {bad_lr, good};
    for (int c = 0; c < 2; c++) {
        ag_tensor *opts = ag_tensor_from_f64(1, (const int64_t[]){8}, cases[c]);
        const char *names[5] = {"w", "optim.opts", "optim.state.w.step", "optim.state.w.exp_avg",
                                "optim.state.w.exp_avg_sq"};
        const ag_tensor *ts[5] = {saved, opts, step, m, m};
        assert_int_equal(ag_safetensors_save(path, 5, names, ts, 2, keys, vals), AG_OK);
        /* case 0: lr < 0; case 1: a step count of 1.5 */
        assert_int_equal(optim_checkpoint_load(path, (const char *const[]){"w"}, &p, 1, o, NULL,
                                               NULL),
                         AG_ERR_FORMAT);
        assert_non_null(strstr(ag_last_error(), c == 0 ? "options" : "step count"));
        assert_true(ag_get(p, 0) == 1 && optim_get_lr(o) == 1e-3);
        ag_tensor_free(opts);
    }
    optim_free(o);
    ag_tensor_free(p);
    ag_tensor_free(saved);
    ag_tensor_free(m);
    ag_tensor_free(step);
    unlink(path);
}

/* ---- a step in parts (the sharded step of dist/) --------------------------- */

enum { PARTS = 3 };

/* Part j of n elements: [n j / PARTS, n (j+1) / PARTS). */
static int64_t part_lo(int64_t n, int j) { return n * j / PARTS; }

/* One step of run_steps on every copy, each stepping only part j (copy j)
 * of every parameter with optim_step_parts, then every copy takes the
 * other copies' parts (as dist/'s allgather does). */
static void parts_step(run *r, ag_tape *t)
{
    const int np = r[0].pr.np;
    for (int j = 0; j < PARTS; j++) {
        run *c = &r[j];
        run_backward(c, t);
        int64_t lo[8], hi[8];
        for (int k = 0; k < np; k++) {
            lo[k] = part_lo(ag_numel(c->pr.p[k]), j);
            hi[k] = part_lo(ag_numel(c->pr.p[k]), j + 1);
        }
        assert_int_equal(optim_step_parts(c->o, lo, hi), AG_OK);
        assert_int_equal(optim_sched_step_once(c->s), AG_OK);
    }
    for (int k = 0; k < np; k++)
        for (int j = 0; j < PARTS; j++)
            for (int q = 0; q < PARTS; q++)
                for (int64_t i = part_lo(ag_numel(r[j].pr.p[k]), j);
                     q != j && i < part_lo(ag_numel(r[j].pr.p[k]), j + 1); i++)
                    ag_set(r[q].pr.p[k], i, ag_get(r[j].pr.p[k], i));
}

/* Every optimizer kind (with its schedule), f32 and f64: three copies
 * stepping a third each give optim_step's parameters bit for bit, and each
 * copy's state is optim_step's in its own third. */
static void test_optim_step_parts_is_the_whole_step(void **state)
{
    (void)state;
    ag_tape *t = ag_tape_new();
    for (int which = 0; which < 5; which++)
        for (int d = 0; d < 2; d++) {
            ag_dtype dt = d ? AG_F64 : AG_F32;
            run ref, r[PARTS];
            run_new(&ref, which, dt);
            for (int j = 0; j < PARTS; j++)
                run_new(&r[j], which, dt);
            for (int step = 0; step < 6; step++) {
                run_steps(&ref, t, 1);
                parts_step(r, t);
                for (int k = 0; k < ref.pr.np; k++)
                    for (int j = 0; j < PARTS; j++) {
                        tg_assert_same_bits(r[j].pr.p[k], ref.pr.p[k]);
                        assert_int_equal(optim_state_steps(r[j].o, r[j].pr.p[k]),
                                         optim_state_steps(ref.o, ref.pr.p[k]));
                    }
            }
            const char *name = which == 0 ? "exp_avg_sq" : which == 1 ? "momentum_buffer"
                             : which == 2 ? "grad_avg" : which == 3 ? "sum" : "exp_avg";
            for (int k = 0; k < ref.pr.np; k++) {
                const ag_tensor *want = optim_state(ref.o, ref.pr.p[k], name);
                size_t es = ag_dtype_size(dt);
                for (int j = 0; j < PARTS; j++) {
                    ag_tensor *got = optim_state_buffer(r[j].o, r[j].pr.p[k], name);
                    int64_t lo = part_lo(ag_numel(want), j), hi = part_lo(ag_numel(want), j + 1);
                    assert_non_null(got);
                    assert_memory_equal((const char *)ag_data_const(got) + lo * es,
                                        (const char *)ag_data_const(want) + lo * es,
                                        (size_t)(hi - lo) * es);
                }
            }
            run_free(&ref);
            for (int j = 0; j < PARTS; j++)
                run_free(&r[j]);
        }
    ag_tape_free(t);
}

static void test_optim_step_parts_bad_ranges(void **state)
{
    (void)state;
    run r;
    run_new(&r, 0, AG_F64);
    int64_t lo[8] = {0}, hi[8] = {0};
    assert_int_equal(optim_step_parts(NULL, lo, hi), AG_ERR_ARG);
    assert_int_equal(optim_step_parts(r.o, lo, NULL), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "hi is NULL"));
    hi[1] = ag_numel(r.pr.p[1]) + 1;
    assert_int_equal(optim_step_parts(r.o, lo, hi), AG_ERR_ARG);
    assert_non_null(strstr(ag_last_error(), "parameter #2"));
    lo[1] = 2, hi[1] = 1;
    assert_int_equal(optim_step_parts(r.o, lo, hi), AG_ERR_ARG);
    assert_int_equal(optim_state_steps(r.o, r.pr.p[0]), 0); /* nothing stepped */
    assert_null(optim_state_buffer(NULL, r.pr.p[0], "exp_avg"));
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest fixture_tests[] = {
        cmocka_unit_test(test_optim_quadratic_matches_torch),
        cmocka_unit_test(test_optim_mlp_matches_torch),
        cmocka_unit_test(test_optim_f32_params_follow_torch),
        cmocka_unit_test(test_checkpoint_resume_is_bit_identical),
        cmocka_unit_test(test_optim_step_parts_is_the_whole_step),
        cmocka_unit_test(test_optim_step_parts_bad_ranges),
        cmocka_unit_test(test_checkpoint_rejects_what_does_not_fit),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optim_bad_options),
        cmocka_unit_test(test_optim_defaults_are_torch),
        cmocka_unit_test(test_optim_skips_params_without_grad),
        cmocka_unit_test(test_checkpoint_rejects_bad_optimizer_state),
    };
    int failed = cmocka_run_group_tests_name("optim", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("optim_fixtures", fixture_tests, fixtures_setup,
                                          fixtures_teardown);
    return failed;
}
