/* graph_dot.c — the recorded graph of a small model as Graphviz DOT, with
 * gradient norms after backward.  Render it with
 *   build/examples/graph_dot graph.dot && dot -Tpng graph.dot -o graph.png
 * (graphviz from Debian; optional).  Without an argument it writes to
 * stdout. */
#include <stdio.h>

#include <tapegrad.h>

int main(int argc, char **argv)
{
    ag_rng rng;
    ag_rng_seed(&rng, 7);
    nn_params *p = nn_params_new();
    nn_linear *fc1 = nn_linear_new(p, "fc1", 4, 8, true, &rng);
    nn_linear *fc2 = nn_linear_new(p, "fc2", 8, 3, true, &rng);
    int64_t xs[] = {5, 4};
    ag_tensor *x = ag_tensor_normal(AG_F32, 2, xs, 0, 1, &rng);
    ag_tensor_set_name(x, "x (input batch)");
    const int64_t labels[] = {0, 2, 1, 1, 0};

    ag_tape *tape = ag_tape_new();
    ag_tensor *h = ag_tanh(tape, nn_linear_forward(tape, fc1, x));
    ag_tensor *loss = nn_cross_entropy(tape, nn_linear_forward(tape, fc2, h), labels, 5);
    if (ag_backward(tape, loss) != AG_OK) {
        fprintf(stderr, "graph_dot: %s\n", ag_tape_error(tape));
        return 1;
    }
    FILE *out = argc > 1 ? fopen(argv[1], "w") : stdout;
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    ag_status st = ag_tape_dot(tape, loss, out);
    ag_tape_print(tape, stderr);
    if (out != stdout)
        fclose(out);
    ag_tape_free(tape);
    ag_tensor_free(x);
    nn_linear_free(fc1);
    nn_linear_free(fc2);
    nn_params_free(p);
    return st == AG_OK ? 0 : 1;
}
