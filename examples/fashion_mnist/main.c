/* main.c — the Fashion-MNIST trainer: an MLP (784-256-128-10, ReLU by
 * default) or with --model cnn a CNN (model_cnn.c) trained with
 * minibatches on Debian's dataset-fashion-mnist, or a saved model
 * evaluated with --eval.  `fashion_mnist --help` lists the
 * flags; README shows a run.  The pieces:
 *   args.c      flags and defaults          model.c     the MLP, save/load
 *   train.c     the training run            eval.c      evaluation, --eval, --explain
 *   progress.c  progress bar / lines        report.c    CSV, gnuplot PNG, confusion
 *   model_cnn.c the CNN of --model cnn
 */
#include "trainer.h"

int main(int argc, char **argv)
{
    fm_config c;
    int rc = fm_parse_args(argc, argv, &c, stdout, stderr);
    if (rc >= 0)
        return rc;
    ag_set_num_threads(c.threads);
    if (c.eval_path)
        return fm_run_eval(&c);
    if ((rc = fm_dist_init(&c)) != FM_EXIT_OK)   /* --dist: MPI; only rank 0 prints */
        return rc;
    if (c.model == FM_MODEL_CNN) {
        printf("Fashion-MNIST CNN conv32-pool-conv64-pool-128-10 (ReLU)");
    } else {
        printf("Fashion-MNIST MLP 784");
        for (int i = 0; i < c.n_hidden; i++)
            printf("-%lld", (long long)c.hidden[i]);
        printf("-10 (ReLU)");
    }
    printf(": %d epochs, batch %lld, %s lr %g, schedule %s, seed %llu, threads %d\n",
           c.epochs, (long long)c.batch, fm_optimizer_name(c.optimizer), c.lr,
           fm_schedule_name(c.schedule), (unsigned long long)c.seed,
           ag_get_num_threads());
    fflush(stdout);
    return fm_dist_finalize(&c, fm_run_train(&c, NULL, NULL));
}
