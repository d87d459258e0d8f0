/* charlm — a character-level language model (GPT, LSTM or GRU) trained on
 * the King James Bible (sh scripts/charlm_data.sh) or any text:
 *
 *   build/examples/charlm --model gpt --steps 2000 --log gpt.csv --plot gpt.png
 *   build/examples/charlm --model lstm --save lstm.safetensors --sample 300
 *
 * See `charlm --help` and the README. */
#include "charlm.h"

int main(int argc, char **argv)
{
    cl_config c;
    int rc = cl_parse_args(argc, argv, &c, stdout, stderr);
    if (rc >= 0)
        return rc;
    return cl_run_train(&c, NULL, 0, NULL);
}
