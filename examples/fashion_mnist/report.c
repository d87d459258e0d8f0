/* report.c — what the trainer writes: the CSV log, the gnuplot PNG, the
 * per-epoch summary line and the confusion matrix. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trainer.h"

const char *const fm_class_names[FM_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

#define CSV_HEADER "epoch,train_loss,train_acc,test_loss,test_acc,seconds\n"

FILE *fm_csv_open(const char *path, bool append, FILE *err)
{
    struct stat sb;
    bool has_rows = append && stat(path, &sb) == 0 && sb.st_size > 0;
    FILE *f = fopen(path, has_rows ? "a" : "w");
    if (!f) {
        fprintf(err, "cannot write the log %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (!has_rows)
        fputs(CSV_HEADER, f);
    fflush(f);
    return f;
}

/* A complete row (ending in a newline) of an epoch, its epoch in *epoch. */
static bool csv_row_epoch(const char *line, ssize_t len, long *epoch)
{
    char *end;
    errno = 0;
    *epoch = strtol(line, &end, 10);
    return len > 0 && line[len - 1] == '\n' && end != line && *end == ',' && errno == 0;
}

FILE *fm_csv_resume(const char *path, int epoch, const fm_epoch_row *last, FILE *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        fprintf(err, "the log path %s is too long\n", path);
        return NULL;
    }
    FILE *in = fopen(path, "r"), *out = NULL;
    if (!in && errno != ENOENT) {
        fprintf(err, "cannot read the log %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (!(out = fopen(tmp, "w"))) {
        fprintf(err, "cannot write the log %s: %s\n", tmp, strerror(errno));
        if (in)
            fclose(in);
        return NULL;
    }
    fputs(CSV_HEADER, out);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long e, prev = 0;
    while (in && (len = getline(&line, &cap, in)) > 0) {
        if (csv_row_epoch(line, len, &e) && e > prev && e < epoch) {
            fputs(line, out);
            prev = e;
        }
    }
    free(line);
    if (in)
        fclose(in);
    if (last)
        fm_csv_row(out, last);
    bool ok = fflush(out) == 0 && fsync(fileno(out)) == 0;
    ok = fclose(out) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(err, "cannot rewrite the log %s: %s\n", path, strerror(errno));
        remove(tmp);
        return NULL;
    }
    FILE *f = fopen(path, "a");
    if (!f)
        fprintf(err, "cannot write the log %s: %s\n", path, strerror(errno));
    return f;
}

void fm_csv_row(FILE *f, const fm_epoch_row *r)
{
    fprintf(f, "%d,%.6f,%.6f,%.6f,%.6f,%.3f\n", r->epoch, r->train_loss, r->train_acc,
            r->test_loss, r->test_acc, r->seconds);
    fflush(f);
}

void fm_print_epoch(FILE *out, const fm_epoch_row *r, int epochs)
{
    fprintf(out,
            "epoch %2d/%d  train loss %.4f  train acc %.2f%%  test loss %.4f  "
            "test acc %.2f%%  %.2fs\n",
            r->epoch, epochs, r->train_loss, 100 * r->train_acc, r->test_loss,
            100 * r->test_acc, r->seconds);
    fflush(out);
}

void fm_print_confusion(FILE *out, const fm_metrics *m)
{
    fprintf(out, "\nper-class accuracy:\n");
    for (int c = 0; c < FM_CLASSES; c++) {
        int64_t row = 0;
        for (int p = 0; p < FM_CLASSES; p++)
            row += m->confusion[c][p];
        fprintf(out, "  %-12s %6.2f%%  (%lld/%lld)\n", fm_class_names[c],
                row ? 100.0 * (double)m->confusion[c][c] / (double)row : 0.0,
                (long long)m->confusion[c][c], (long long)row);
    }
    fprintf(out, "\nconfusion matrix (rows: true class, columns: predicted):\n%12s", "");
    for (int p = 0; p < FM_CLASSES; p++)
        fprintf(out, " %5.5s", fm_class_names[p]);
    fputc('\n', out);
    for (int c = 0; c < FM_CLASSES; c++) {
        fprintf(out, "%-12s", fm_class_names[c]);
        for (int p = 0; p < FM_CLASSES; p++)
            fprintf(out, " %5lld", (long long)m->confusion[c][p]);
        fputc('\n', out);
    }
}

/* ---- --plot ---- */

/* True when an executable `name` lies in a folder of $PATH. */
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

/* A temporary CSV of rows; its path in buf.  False on failure. */
static bool write_temp_csv(const fm_epoch_row *rows, int n, char *buf, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, len, "%s/fashion_mnist_plot_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(buf);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    fputs(CSV_HEADER, f);
    for (int i = 0; i < n; i++)
        fm_csv_row(f, &rows[i]);
    return fclose(f) == 0;
}

static void plot_script(FILE *g, const char *png, const char *csv)
{
    fprintf(g,
            "set terminal pngcairo size 1100,420\n"
            "set output '%s'\n"
            "set datafile separator ','\n"
            "set key autotitle columnhead\n"
            "set grid\n"
            "set xlabel 'epoch'\n"
            "set multiplot layout 1,2 title 'Fashion-MNIST MLP (tapegrad)'\n"
            "set title 'cross-entropy loss'\n"
            "plot '%s' using 1:2 with linespoints title 'train', "
            "'' using 1:4 with linespoints title 'test'\n"
            "set title 'accuracy (%%)'\n"
            "set key bottom right\n"
            "plot '%s' using 1:($3*100) with linespoints title 'train', "
            "'' using 1:($5*100) with linespoints title 'test'\n"
            "unset multiplot\n",
            png, csv, csv);
}

bool fm_plot(const char *png, const char *data_csv, const fm_epoch_row *rows, int n, FILE *err)
{
    if (!in_path("gnuplot")) {
        fprintf(err, "--plot: gnuplot is not installed (apt-get install gnuplot-nox); "
                     "no plot written\n");
        return false;
    }
    if (strpbrk(png, "'\n") || (data_csv && strpbrk(data_csv, "'\n"))) {
        fprintf(err, "--plot: file names with quotes or newlines are not supported\n");
        return false;
    }
    char tmp[4096] = "";
    if (!data_csv && !write_temp_csv(rows, n, tmp, sizeof tmp)) {
        fprintf(err, "--plot: cannot write a temporary data file\n");
        return false;
    }
    FILE *g = popen("gnuplot", "w");
    int rc = -1;
    if (g) {
        plot_script(g, png, data_csv ? data_csv : tmp);
        rc = pclose(g);
    }
    if (tmp[0])
        remove(tmp);
    if (rc != 0) {
        fprintf(err, "--plot: gnuplot failed (status %d); no plot written\n", rc);
        return false;
    }
    return true;
}
