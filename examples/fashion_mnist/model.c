/* model.c — the MLP: 784 -> hidden... -> 10 with ReLU, layers fc1..fcN
 * (PyTorch's names and layouts), saving with metadata, and loading a model
 * file whose architecture is read from its fc*.weight shapes (or the CNN of
 * model_cnn.c, for a file with conv1.weight). */
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

fm_model *fm_model_new(int n_hidden, const int64_t *hidden, ag_dtype dt, ag_rng *rng)
{
    if (n_hidden < 1 || n_hidden > FM_MAX_HIDDEN) {
        ag_set_last_error("fm_model_new: %d hidden layers (1 to %d)", n_hidden, FM_MAX_HIDDEN);
        return NULL;
    }
    fm_model *m = calloc(1, sizeof *m);
    if (!m || !(m->params = nn_params_new())) {
        free(m);
        ag_set_last_error("fm_model_new: out of memory");
        return NULL;
    }
    nn_params_set_dtype(m->params, dt);
    m->n_layers = n_hidden + 1;
    for (int i = 0; i < m->n_layers; i++) {
        int64_t in = i == 0 ? FM_FEATURES : hidden[i - 1];
        int64_t out = i == n_hidden ? FM_CLASSES : hidden[i];
        char name[16];
        snprintf(name, sizeof name, "fc%d", i + 1);
        m->layers[i] = nn_linear_new(m->params, name, in, out, true, rng);
        if (!m->layers[i]) {
            fm_model_free(m);
            return NULL;
        }
    }
    return m;
}

void fm_model_free(fm_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_layers; i++)
        nn_linear_free(m->layers[i]);
    fm_cnn_free(m->cnn);
    nn_params_free(m->params);
    free(m);
}

ag_tensor *fm_model_forward(ag_tape *t, fm_model *m, ag_tensor *x)
{
    if (m->cnn)
        return fm_cnn_forward(t, m->cnn, x);
    ag_tensor *h = x;                                   /* (N, 784) */
    for (int i = 0; i < m->n_layers; i++) {
        h = nn_linear_forward(t, m->layers[i], h);      /* (N, width) */
        if (i + 1 < m->n_layers)
            h = nn_relu(t, h);
    }
    return h;                                           /* (N, 10) logits */
}

ag_status fm_model_save(const fm_model *m, const char *path, int epoch, const fm_config *c)
{
    char ep[16], hid[128] = "", seed[32], lr[32];
    snprintf(ep, sizeof ep, "%d", epoch);
    for (int i = 0; i < c->n_hidden; i++)
        snprintf(hid + strlen(hid), sizeof hid - strlen(hid), "%s%lld", i ? "," : "",
                 (long long)c->hidden[i]);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed);
    snprintf(lr, sizeof lr, "%g", c->lr);
    const char *keys[] = {"description", "epoch", "hidden", "optimizer", "schedule", "lr",
                          "seed"};
    const char *vals[] = {m->cnn ? "tapegrad Fashion-MNIST CNN (conv1, conv2: torch.nn.Conv2d; "
                                   "fc1, fc2: torch.nn.Linear)"
                                 : "tapegrad Fashion-MNIST MLP (ReLU; fc1..fcN are torch.nn.Linear)",
                          ep, m->cnn ? "cnn" : hid, fm_optimizer_name(c->optimizer),
                          fm_schedule_name(c->schedule), lr, seed};
    return nn_params_save_meta(m->params, path, 7, keys, vals);
}

/* Widths of the chain fc1.weight, fc2.weight, ... of f into w (w[0] = in of
 * fc1); the number of layers, or 0 with a message on err. */
static int read_widths(const ag_safetensors *f, const char *path, int64_t *w, FILE *err)
{
    int n = 0;
    for (;; n++) {
        char name[32];
        snprintf(name, sizeof name, "fc%d.weight", n + 1);
        const ag_tensor *t = ag_safetensors_get(f, name);
        if (!t)
            break;
        if (n == FM_MAX_HIDDEN + 1 || ag_ndim(t) != 2 ||
            (n > 0 && ag_shape(t)[1] != w[n])) {
            fprintf(err, "%s: %s does not continue an MLP chain (or too many layers)\n",
                    path, name);
            return 0;
        }
        w[n] = ag_shape(t)[1];
        w[n + 1] = ag_shape(t)[0];
    }
    if (n < 2 || w[0] != FM_FEATURES || w[n] != FM_CLASSES) {
        fprintf(err,
                "%s: not a Fashion-MNIST MLP: need fc1.weight [*, 784] ... fcN.weight "
                "[10, *] with N >= 2 (found %d layers)\n",
                path, n);
        return 0;
    }
    return n;
}

fm_model *fm_model_load(const char *path, FILE *err)
{
    ag_safetensors *f = NULL;
    if (ag_safetensors_load(path, &f) != AG_OK) {
        fprintf(err, "cannot load model: %s\n", ag_last_error());
        return NULL;
    }
    int64_t w[FM_MAX_HIDDEN + 2];
    bool cnn = ag_safetensors_get(f, "conv1.weight") != NULL;   /* saved by --model cnn */
    int n = cnn ? -1 : read_widths(f, path, w, err);
    fm_model *m = cnn ? fm_cnn_new(AG_F32, NULL) : n ? fm_model_new(n - 1, w + 1, AG_F32, NULL)
                                                     : NULL;
    if (n && !m)
        fprintf(err, "%s: %s\n", path, ag_last_error());
    /* non-strict: a --save checkpoint (PATH.ckpt) also holds optimizer state */
    nn_load_opts lo = {.non_strict = true, .convert_dtype = true};
    nn_load_report rep;
    if (m && (nn_params_load_from(m->params, f, &lo, &rep) != AG_OK || rep.missing)) {
        fprintf(err, "%s: %s\n", path,
                rep.missing ? "a parameter of the model is missing" : ag_last_error());
        fm_model_free(m);
        m = NULL;
    }
    if (m) {
        const char *ep = ag_safetensors_meta(f, "epoch");
        printf("model %s: ", path);
        if (cnn)
            printf("CNN (conv1, conv2, fc1, fc2)");
        else {
            printf("%d layers (784", n);
            for (int i = 1; i <= n; i++)
                printf("-%lld", (long long)w[i]);
            printf(")");
        }
        printf("%s%s\n", ep ? ", saved after epoch " : "", ep ? ep : "");
    }
    ag_safetensors_free(f);
    return m;
}
