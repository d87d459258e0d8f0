/* scalar_moons.c — a micrograd-style MLP made of scalar neurons (2-16-16-1,
 * ReLU) trained on a generated two-moons set of 100 points with a hinge
 * loss plus L2 regularisation, on tapegrad's scalar path (ag_var).
 * Usage: scalar_moons [steps]   (default 100) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <autograd.h>

#define PI 3.14159265358979323846
#define N_POINTS 100
#define N_PARAMS (16 * 2 + 16 + 16 * 16 + 16 + 16 + 1)

static double X[N_POINTS][2], Y[N_POINTS];

/* Two interleaved half circles with Gaussian noise 0.1 (sklearn's make_moons). */
static void make_moons(ag_rng *rng)
{
    for (int i = 0; i < N_POINTS; i++) {
        int outer = i < N_POINTS / 2;
        double t = PI * (outer ? i : i - N_POINTS / 2) / (N_POINTS / 2 - 1);
        X[i][0] = (outer ? cos(t) : 1 - cos(t)) + 0.1 * ag_rng_normal(rng);
        X[i][1] = (outer ? sin(t) : 0.5 - sin(t)) + 0.1 * ag_rng_normal(rng);
        Y[i] = outer ? -1 : 1;
    }
}

/* One layer of scalar neurons: out[j] = act(sum_i w[j][i] in[i] + b[j]). */
static void layer(ag_tape *t, const ag_var *in, int n_in, ag_var *out, int n_out,
                  const ag_var **p, int relu)
{
    for (int j = 0; j < n_out; j++) {
        ag_var acc = *(*p)++;                       /* bias first */
        for (int i = 0; i < n_in; i++)
            acc = ag_var_add(t, acc, ag_var_mul(t, *(*p)++, in[i]));
        out[j] = relu ? ag_var_relu(t, acc) : acc;
    }
}

static ag_var score(ag_tape *t, const ag_var *params, int k)
{
    const ag_var *p = params;
    ag_var in[2] = {ag_var_const(t, X[k][0]), ag_var_const(t, X[k][1])}, h1[16], h2[16], out;
    layer(t, in, 2, h1, 16, &p, 1);
    layer(t, h1, 16, h2, 16, &p, 1);
    layer(t, h2, 16, &out, 1, &p, 0);
    return out;
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    ag_rng rng;
    ag_rng_seed(&rng, 1337);
    make_moons(&rng);
    double w[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++)
        w[i] = 2 * ag_rng_uniform(&rng) - 1;       /* micrograd's U(-1, 1) init */

    ag_tape *t = ag_tape_new();
    ag_var params[N_PARAMS];
    double acc = 0;
    for (int step = 0; step < steps; step++) {
        ag_tape_reset(t);
        for (int i = 0; i < N_PARAMS; i++)
            params[i] = ag_var_new(t, w[i]);
        ag_var data_loss = ag_var_const(t, 0), reg = ag_var_const(t, 0);
        ag_var one = ag_var_const(t, 1);
        int correct = 0;
        for (int k = 0; k < N_POINTS; k++) {
            ag_var s = score(t, params, k);         /* hinge: relu(1 - y s) */
            data_loss = ag_var_add(t, data_loss,
                                   ag_var_relu(t, ag_var_sub(t, one, ag_var_mul(
                                       t, ag_var_const(t, Y[k]), s))));
            correct += (ag_var_value(t, s) > 0) == (Y[k] > 0);
        }
        for (int i = 0; i < N_PARAMS; i++)
            reg = ag_var_add(t, reg, ag_var_mul(t, params[i], params[i]));
        ag_var loss = ag_var_add(t, ag_var_div(t, data_loss, ag_var_const(t, N_POINTS)),
                                 ag_var_mul(t, ag_var_const(t, 1e-4), reg));
        if (ag_var_backward(t, loss) != AG_OK) {
            fprintf(stderr, "scalar_moons: %s\n", ag_tape_error(t));
            return 1;
        }
        double lr = 1.0 - 0.9 * step / steps;
        for (int i = 0; i < N_PARAMS; i++)
            w[i] -= lr * ag_var_grad(t, params[i]);
        acc = 100.0 * correct / N_POINTS;
        printf("step %3d loss %.6f accuracy %.0f%% (%lld ops)\n", step,
               ag_var_value(t, loss), acc, (long long)ag_tape_scalar_ops(t));
    }
    ag_tape_free(t);
    printf("final train accuracy %.0f%%\n", acc);
    return acc == 100.0 ? 0 : 2;
}
