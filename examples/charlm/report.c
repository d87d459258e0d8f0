/* report.c — what the trainer shows and writes: the progress bar (on a
 * terminal, redrawn in place; otherwise a line every tenth of the run),
 * the evaluation line, the CSV log and the gnuplot PNG. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "charlm.h"

#define BAR_WIDTH 30
#define REDRAW_SECONDS 0.1
#define CSV_HEADER "step,train_bpc,val_bpc,seconds\n"

double cl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cl_progress_begin(cl_progress *p, int64_t first, int64_t total, bool quiet)
{
    *p = (cl_progress){.tty = isatty(fileno(stdout)) == 1, .quiet = quiet, .first = first,
                       .total = total, .t0 = cl_now()};
}

void cl_progress_update(cl_progress *p, int64_t step, double bpc, double seconds)
{
    if (p->quiet)
        return;
    int64_t done = step - p->first, left = p->total - step;
    double ms = done > 0 ? 1e3 * seconds / (double)done : 0;
    if (!p->tty) {   /* a line at each tenth of the run */
        int64_t tenth = p->total / 10 > 0 ? p->total / 10 : 1;
        if (step % tenth == 0 && step < p->total)
            printf("step %lld/%lld  loss %.3f bpc  %.1f ms/step\n", (long long)step,
                   (long long)p->total, bpc, ms);
        return;
    }
    double now = cl_now();
    if (now - p->last_draw < REDRAW_SECONDS && step < p->total)
        return;
    p->last_draw = now;
    char bar[BAR_WIDTH + 1];
    int fill = p->total ? (int)((double)step / (double)p->total * BAR_WIDTH) : BAR_WIDTH;
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    printf("\r\033[Kstep %lld/%lld [%s] %3.0f%%  %.1f ms/step  loss %.3f bpc  ETA %.0fs",
           (long long)step, (long long)p->total, bar,
           p->total ? 100.0 * (double)step / (double)p->total : 100.0, ms, bpc,
           1e-3 * ms * (double)left);
    fflush(stdout);
}

void cl_progress_end(cl_progress *p)
{
    if (p->tty && !p->quiet) {
        printf("\r\033[K");
        fflush(stdout);
    }
}

void cl_print_row(FILE *out, const cl_row *r, int64_t steps)
{
    fprintf(out, "step %lld/%lld  train %.4f bpc  val %.4f bpc  %.1fs\n", (long long)r->step,
            (long long)steps, r->train_bpc, r->val_bpc, r->seconds);
    fflush(out);
}

/* ---- the CSV log ---- */

/* Keeps the complete rows of steps before `step` from path (if it exists)
 * in tmp, in order, once each. */
static bool keep_rows(const char *path, int64_t step, FILE *tmp)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return errno == ENOENT;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long long prev = -1;
    while ((len = getline(&line, &cap, in)) > 0) {
        char *end;
        long long s = strtoll(line, &end, 10);
        if (end != line && *end == ',' && line[len - 1] == '\n' && s > prev && s < step) {
            fputs(line, tmp);
            prev = s;
        }
    }
    free(line);
    fclose(in);
    return true;
}

FILE *cl_csv_open(const char *path, int64_t resume_step, FILE *err)
{
    if (resume_step > 0) {   /* rewrite: header and the rows before the checkpoint */
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *out = fopen(tmp, "w");
        bool ok = out && fputs(CSV_HEADER, out) >= 0 && keep_rows(path, resume_step, out);
        ok = out && fflush(out) == 0 && fsync(fileno(out)) == 0 && ok;
        ok = out && fclose(out) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) {
            fprintf(err, "cannot rewrite the log %s: %s\n", path, strerror(errno));
            remove(tmp);
            return NULL;
        }
    }
    FILE *f = fopen(path, resume_step > 0 ? "a" : "w");
    if (!f) {
        fprintf(err, "cannot write the log %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (resume_step <= 0)
        fputs(CSV_HEADER, f);
    fflush(f);
    return f;
}

void cl_csv_row(FILE *f, const cl_row *r)
{
    fprintf(f, "%lld,%.6f,%.6f,%.3f\n", (long long)r->step, r->train_bpc, r->val_bpc,
            r->seconds);
    fflush(f);
}

/* ---- --plot ---- */

static bool in_path(const char *name)
{
    const char *path = getenv("PATH");
    char buf[4096];
    for (const char *p = path; p && *p;) {
        size_t len = strcspn(p, ":");
        snprintf(buf, sizeof buf, "%.*s/%s", (int)len, p, name);
        if (access(buf, X_OK) == 0)
            return true;
        p += len + (p[len] == ':');
    }
    return false;
}

bool cl_plot(const char *png, const char *csv, const cl_config *c, FILE *err)
{
    if (!in_path("gnuplot")) {
        fprintf(err, "--plot: gnuplot is not installed (apt-get install gnuplot-nox); "
                     "no plot written\n");
        return false;
    }
    if (strpbrk(png, "'\n") || strpbrk(csv, "'\n")) {
        fprintf(err, "--plot: file names with quotes or newlines are not supported\n");
        return false;
    }
    FILE *g = popen("gnuplot", "w");
    int rc = -1;
    if (g) {
        fprintf(g,
                "set terminal pngcairo size 800,480\n"
                "set output '%s'\n"
                "set datafile separator ','\n"
                "set key autotitle columnhead\n"
                "set grid\n"
                "set xlabel 'step'\n"
                "set ylabel 'bits per character'\n"
                "set title 'charlm %s (tapegrad)'\n"
                "plot '%s' using 1:2 with linespoints title 'train', "
                "'' using 1:3 with linespoints title 'validation'\n",
                png, cl_kind_name(c->kind), csv);
        rc = pclose(g);
    }
    if (rc != 0) {
        fprintf(err, "--plot: gnuplot failed (status %d); no plot written\n", rc);
        return false;
    }
    return true;
}
