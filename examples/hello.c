/* hello.c — the smallest tapegrad program: y = x^2 * sin(x), dy/dx. */
#include <stdio.h>

#include <autograd.h>

int main(void)
{
    ag_tensor *x = ag_tensor_full(AG_F64, 0, NULL, 1.5);
    ag_set_requires_grad(x, true);
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = ag_mul(tape, ag_mul(tape, x, x), ag_sin(tape, x));
    if (ag_backward(tape, y) != AG_OK) {
        fprintf(stderr, "%s\n", ag_tape_error(tape));
        return 1;
    }
    printf("y = %.6f, dy/dx = %.6f\n", ag_item(y), ag_item(ag_grad(x)));
    ag_tape_free(tape);
    ag_tensor_free(x);
    return 0;
}
