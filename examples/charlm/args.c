/* args.c — the trainer's command line: defaults per model, parsing, usage.
 * Flags are named as the Fashion-MNIST trainer's where they apply. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "charlm.h"

#define DEF_STEPS 2000
#define DEF_SEED 42
#define DEF_EVAL_EVERY 250
#define DEF_EVAL_WINDOWS 512

const char *cl_kind_name(cl_kind k)
{
    return k == CL_GPT ? "gpt" : k == CL_LSTM ? "lstm" : "gru";
}

/* GPT: nanoGPT's CPU "baby" config (block 64, batch 12, AdamW 1e-3);
 * LSTM / GRU: seq 64, batch 32, Adam 2e-3.  Gradient norm clipped to 1. */
void cl_config_defaults(cl_config *c, cl_kind k)
{
    *c = (cl_config){
        .kind = k,
        .steps = DEF_STEPS,
        .batch = k == CL_GPT ? 12 : 32,
        .seq = 64,
        .lr = k == CL_GPT ? 1e-3 : 2e-3,
        .clip = 1.0,
        .seed = DEF_SEED,
        .threads = 0,
        .data_path = CL_DEFAULT_DATA,
        .eval_every = DEF_EVAL_EVERY,
        .eval_windows = DEF_EVAL_WINDOWS,
        .sample = 300,
        .temperature = 0.8,
        .prompt = "And God said",
    };
}

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "usage: %s [options]\n"
            "Trains a character-level language model on the King James Bible (Debian's\n"
            "bible-kjv: sh scripts/charlm_data.sh) or any text; the last 10%% is held out.\n"
            "  --model NAME        gpt | lstm | gru (default gpt: 4 layers, 4 heads, d 128,\n"
            "                      block 64, batch 12, AdamW 1e-3; lstm/gru: embedding 64,\n"
            "                      1 layer, hidden 256, seq 64, batch 32, Adam 2e-3)\n"
            "  --steps N           optimizer steps (default %d)\n"
            "  --batch N           sequences per step (default: the model's)\n"
            "  --seq N             characters per sequence (default 64; GPT: its block)\n"
            "  --lr X              learning rate (default: the model's)\n"
            "  --seed N            seed of initialisation, batches and sampling (default %d)\n"
            "  --threads N         threads for the large kernels, 0: every core (default 0)\n"
            "  --checkpoint N      GPT only: gradient checkpointing, N blocks per checkpoint\n"
            "                      (backward runs them forward again: less tape memory,\n"
            "                      the same results; default 0: none)\n"
            "  --data FILE         the text (default %s)\n"
            "  --eval-every N      steps between evaluations (default %d; also after the\n"
            "                      last step)\n"
            "  --eval-windows N    held-out windows of seq characters per evaluation, evenly\n"
            "                      spaced (default %d; 0: all of them)\n"
            "  --log CSV           step,train_bpc,val_bpc,seconds at each evaluation\n"
            "                      (seconds: training time since the start, evaluation\n"
            "                      excluded; with --resume its rows before the checkpoint\n"
            "                      are kept, then appended to)\n"
            "  --plot PNG          bits per character by step (needs gnuplot)\n"
            "  --save PATH         write the model (safetensors) at each evaluation, and a\n"
            "                      resumable checkpoint to PATH.ckpt\n"
            "  --resume PATH       continue from a checkpoint (PATH.ckpt of --save) up to\n"
            "                      --steps; use the flags of the saved run\n"
            "  --sample N          characters to sample after training (default 300; 0: none)\n"
            "  --temperature T     sampling temperature (default 0.8; 0: greedy)\n"
            "  --prompt TEXT       what sampling starts from (default \"And God said\")\n"
            "  --help              this text\n"
            "Exit status: 0 ok, 1 error, 2 bad usage, 77 the default text is missing.\n",
            prog, DEF_STEPS, DEF_SEED, CL_DEFAULT_DATA, DEF_EVAL_EVERY, DEF_EVAL_WINDOWS);
}

static bool parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_real(const char *s, double lo, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x) || x < lo)
        return false;
    *out = x;
    return true;
}

/* Numeric options; false when v does not fit. */
static bool set_number(cl_config *c, const char *flag, const char *v)
{
    long long i;
    double x;
    if (strcmp(flag, "steps") == 0 && parse_int(v, 0, 100000000, &i))
        c->steps = i;
    else if (strcmp(flag, "batch") == 0 && parse_int(v, 1, 65536, &i))
        c->batch = i;
    else if (strcmp(flag, "seq") == 0 && parse_int(v, 1, 65536, &i))
        c->seq = i;
    else if (strcmp(flag, "threads") == 0 && parse_int(v, 0, 1024, &i))
        c->threads = (int)i;
    else if (strcmp(flag, "checkpoint") == 0 && parse_int(v, 0, 1024, &i))
        c->checkpoint = (int)i;
    else if (strcmp(flag, "eval-every") == 0 && parse_int(v, 1, 100000000, &i))
        c->eval_every = i;
    else if (strcmp(flag, "eval-windows") == 0 && parse_int(v, 0, 100000000, &i))
        c->eval_windows = i;
    else if (strcmp(flag, "sample") == 0 && parse_int(v, 0, 100000000, &i))
        c->sample = i;
    else if (strcmp(flag, "seed") == 0 && v[0] != '-' && parse_int(v, 0, LLONG_MAX, &i))
        c->seed = (uint64_t)i;
    else if (strcmp(flag, "lr") == 0 && parse_real(v, 0, &x) && x > 0)
        c->lr = x;
    else if (strcmp(flag, "temperature") == 0 && parse_real(v, 0, &x))
        c->temperature = x;
    else
        return false;
    return true;
}

static bool set_option(cl_config *c, const char *flag, const char *v)
{
    if (strcmp(flag, "data") == 0 && v[0])
        c->data_path = v;
    else if (strcmp(flag, "save") == 0 && v[0])
        c->save_path = v;
    else if (strcmp(flag, "resume") == 0 && v[0])
        c->resume_path = v;
    else if (strcmp(flag, "log") == 0 && v[0])
        c->log_path = v;
    else if (strcmp(flag, "plot") == 0 && v[0])
        c->plot_path = v;
    else if (strcmp(flag, "prompt") == 0)
        c->prompt = v;
    else
        return set_number(c, flag, v);
    return true;
}

static const char *const value_flags[] = {
    "model", "steps", "batch", "seq", "lr", "seed", "threads", "checkpoint", "data", "eval-every",
    "eval-windows", "log", "plot", "save", "resume", "sample", "temperature", "prompt",
};

static bool known_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof value_flags / sizeof *value_flags; i++)
        if (strlen(value_flags[i]) == len && strncmp(value_flags[i], name, len) == 0)
            return true;
    return false;
}

/* A message (fmt with two string arguments), then the usage. */
static int usage_error(FILE *err, const char *prog, const char *fmt, const char *a,
                       const char *b)
{
    fprintf(err, "%s: ", prog);
    fprintf(err, fmt, a, b);
    fputc('\n', err);
    usage(err, prog);
    return CL_EXIT_USAGE;
}

/* The model first (it picks the defaults the other flags override). */
static int pick_model(int argc, char **argv, cl_config *c, FILE *err, const char *prog)
{
    cl_kind k = CL_GPT;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            v = argv[i + 1];
        else if (strncmp(argv[i], "--model=", 8) == 0)
            v = argv[i] + 8;
        if (!v)
            continue;
        if (strcmp(v, "gpt") == 0)
            k = CL_GPT;
        else if (strcmp(v, "lstm") == 0)
            k = CL_LSTM;
        else if (strcmp(v, "gru") == 0)
            k = CL_GRU;
        else
            return usage_error(err, prog, "bad value '%s' for --model%s", v, "");
    }
    cl_config_defaults(c, k);
    return -1;
}

int cl_parse_args(int argc, char **argv, cl_config *c, FILE *out, FILE *err)
{
    const char *prog = argc > 0 && argv[0] ? argv[0] : "charlm";
    int rc = pick_model(argc, argv, c, err, prog);
    for (int i = 1; rc < 0 && i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(out, prog);
            return CL_EXIT_OK;
        }
        if (strncmp(a, "--", 2) != 0)
            return usage_error(err, prog, "unexpected argument '%s'%s", a, "");
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (!known_flag(name, len))
            return usage_error(err, prog, "unknown option '%s'%s", a, "");
        const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!v)
            return usage_error(err, prog, "option '%s' needs a value%s", a, "");
        char flag[16];
        snprintf(flag, sizeof flag, "%.*s", (int)len, name);
        if (strcmp(flag, "model") != 0 && !set_option(c, flag, v))
            return usage_error(err, prog, "bad value '%s' for --%s", v, flag);
    }
    if (rc >= 0)
        return rc;
    if (c->checkpoint && c->kind != CL_GPT)
        return usage_error(err, prog, "--checkpoint applies to --model gpt, not %s%s",
                           cl_kind_name(c->kind), "");
    return -1;
}
