/* model_cnn.c — the CNN of `--model cnn`:
 *   conv1 (1 -> 32, 3x3) relu maxpool 2 -> (N, 32, 13, 13)
 *   conv2 (32 -> 64, 3x3) relu maxpool 2 -> (N, 64, 5, 5)
 *   flatten -> (N, 1600), fc1 (1600 -> 128) relu, fc2 (128 -> 10)
 * with PyTorch's names and layouts (conv1.weight [32, 1, 3, 3], ...), so the
 * torch module of check_torch_load.py --cnn loads its checkpoints. */
#include <stdlib.h>

#include "trainer.h"

struct fm_cnn {
    nn_conv2d *conv1, *conv2;
    nn_linear *fc1, *fc2;
};

#define C1 32
#define C2 64
#define HIDDEN 128
#define FLAT (C2 * 5 * 5)   /* 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5 */

fm_model *fm_cnn_new(ag_dtype dt, ag_rng *rng)
{
    fm_model *m = calloc(1, sizeof *m);
    struct fm_cnn *c = calloc(1, sizeof *c);
    if (!m || !c || !(m->params = nn_params_new())) {
        free(m);
        free(c);
        ag_set_last_error("fm_cnn_new: out of memory");
        return NULL;
    }
    m->cnn = c;
    nn_params *p = m->params;
    nn_params_set_dtype(p, dt);
    const ag_conv2d_opts o = {0};   /* stride 1, no padding */
    c->conv1 = nn_conv2d_new(p, "conv1", 1, C1, 3, 3, o, true, rng);
    c->conv2 = c->conv1 ? nn_conv2d_new(p, "conv2", C1, C2, 3, 3, o, true, rng) : NULL;
    c->fc1 = c->conv2 ? nn_linear_new(p, "fc1", FLAT, HIDDEN, true, rng) : NULL;
    c->fc2 = c->fc1 ? nn_linear_new(p, "fc2", HIDDEN, FM_CLASSES, true, rng) : NULL;
    if (!c->fc2) {
        fm_model_free(m);
        return NULL;
    }
    return m;
}

void fm_cnn_free(struct fm_cnn *c)
{
    if (!c)
        return;
    nn_conv2d_free(c->conv1);
    nn_conv2d_free(c->conv2);
    nn_linear_free(c->fc1);
    nn_linear_free(c->fc2);
    free(c);
}

ag_tensor *fm_cnn_forward(ag_tape *t, struct fm_cnn *c, ag_tensor *x)
{
    const ag_pool2d_opts pool = {.kernel = {2, 2}};   /* stride = kernel */
    int64_t n = x ? ag_shape(x)[0] : 0;                     /* x: (N, 784) */
    ag_tensor *h = ag_reshape(t, x, 4, (const int64_t[]){n, 1, 28, 28});   /* a view */
    /* relu after the pooling: relu is monotone, so it commutes with max and
     * values and gradients are torch's conv-relu-pool, on 4x fewer elements */
    h = nn_relu(t, nn_max_pool2d(t, nn_conv2d_forward(t, c->conv1, h), pool));
    h = nn_relu(t, nn_max_pool2d(t, nn_conv2d_forward(t, c->conv2, h), pool));
    h = nn_relu(t, nn_linear_forward(t, c->fc1, nn_flatten(t, h, 1, -1)));   /* (N, 128) */
    return nn_linear_forward(t, c->fc2, h);                                    /* (N, 10) */
}
