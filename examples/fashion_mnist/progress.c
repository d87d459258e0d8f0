/* progress.c — per-epoch progress: on a terminal a bar redrawn in place
 * (percentage, samples/s, running loss, ETA); otherwise a plain line at
 * each quarter of the epoch. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "trainer.h"

#define BAR_WIDTH 30
#define REDRAW_SECONDS 0.1

double fm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fm_progress_begin(fm_progress *p, int epoch, int epochs, int64_t total, bool quiet)
{
    *p = (fm_progress){
        .tty = isatty(fileno(stdout)) == 1,
        .quiet = quiet,
        .epoch = epoch,
        .epochs = epochs,
        .total = total,
        .t0 = fm_now(),
        .next_line = 1,
    };
}

static void draw_bar(const fm_progress *p, double elapsed)
{
    double frac = p->total ? (double)p->done / (double)p->total : 1;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0;
    double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
    char bar[BAR_WIDTH + 1];
    int fill = (int)(frac * BAR_WIDTH);
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    printf("\r\033[Kepoch %d/%d [%s] %3.0f%%  %6.0f samples/s  loss %.4f  ETA %.1fs",
           p->epoch, p->epochs, bar, 100 * frac, rate,
           p->done ? p->loss_sum / (double)p->done : 0.0, eta);
    fflush(stdout);
}

void fm_progress_update(fm_progress *p, int64_t rows, double batch_loss)
{
    p->done += rows;
    p->loss_sum += batch_loss * (double)rows;
    if (p->quiet)
        return;
    double now = fm_now(), elapsed = now - p->t0;
    if (p->tty) {
        if (now - p->last_draw >= REDRAW_SECONDS || p->done == p->total) {
            p->last_draw = now;
            draw_bar(p, elapsed);
        }
        return;
    }
    /* plain lines at 25%, 50%, 75% (the summary line covers 100%) */
    if (p->next_line < 4 && p->done * 4 >= p->total * p->next_line) {
        printf("epoch %d/%d: %3d%%  %.0f samples/s  loss %.4f\n", p->epoch, p->epochs,
               25 * p->next_line, elapsed > 0 ? (double)p->done / elapsed : 0.0,
               p->loss_sum / (double)p->done);
        fflush(stdout);
        while (p->next_line < 4 && p->done * 4 >= p->total * p->next_line)
            p->next_line++;
    }
}

void fm_progress_end(fm_progress *p)
{
    if (p->tty && !p->quiet) {
        printf("\r\033[K");
        fflush(stdout);
    }
}
