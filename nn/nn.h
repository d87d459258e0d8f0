/*
 * nn.h — layers, activations, losses, initializers, named parameters and
 * checkpoints, all built on autograd.h.  Nothing here has a backward of its
 * own: every layer and loss is a composition of ag_ ops, so gradients come
 * from the tape.  Names and layouts follow PyTorch (a linear layer "fc1"
 * holds fc1.weight [out, in] and fc1.bias [out]), so a torch module with the
 * same names reads a tapegrad checkpoint with load_state_dict and the other
 * way round.
 *
 *   ag_rng rng;  ag_rng_seed(&rng, 42);
 *   nn_params *params = nn_params_new();              (owns every weight)
 *   nn_linear *fc1 = nn_linear_new(params, "fc1", 784, 256, true, &rng);
 *   nn_linear *fc2 = nn_linear_new(params, "fc2", 256, 10, true, &rng);
 *   if (!fc1 || !fc2) { fprintf(stderr, "%s\n", ag_last_error()); ... }
 *   int n;  ag_tensor **w = nn_params_tensors(params, &n);   (for optim_*)
 *
 *   ag_tensor *h      = nn_relu(tape, nn_linear_forward(tape, fc1, x));
 *   ag_tensor *logits = nn_linear_forward(tape, fc2, h);
 *   ag_tensor *loss   = nn_cross_entropy(tape, logits, labels, batch);
 *   if (ag_backward(tape, loss) != AG_OK) fprintf(stderr, "%s\n", ag_tape_error(tape));
 *   ... optim_step(opt); ag_tape_reset(tape); ...
 *
 *   nn_params_save(params, "model.safetensors");       (atomic)
 *   nn_params_load(params, "model.safetensors");       (strict: names, shapes, dtypes)
 *   nn_linear_free(fc1);  nn_linear_free(fc2);  nn_params_free(params);
 *
 * Ownership.  An nn_params owns every tensor registered in it (weights and
 * buffers) and frees them in nn_params_free.  A layer is a small struct that
 * points into its nn_params: free it with its nn_<layer>_free (NULL is a
 * no-op) and use it only while its nn_params lives.  Forward functions,
 * activations and losses return tape tensors (they die with the tape).
 *
 * Errors.  Constructors return NULL and functions without a tape return an
 * ag_status; both set the per-thread message read by ag_last_error().
 * Functions taking a tape follow the tape's rules: on a bad argument or
 * shape they keep the error on the tape (message naming the nn_ function)
 * and return NULL; given NULL they return NULL at once, so a whole forward
 * pass can be checked once, at ag_backward.  A NULL tape gives NULL and an
 * ag_last_error naming the nn_ function ("nn_relu: tape is NULL"), also for
 * nn_activate with NN_ACT_NONE, which otherwise returns x itself.  A
 * constructor that fails adds nothing to its nn_params.
 *
 * dtypes.  Layers create parameters in their nn_params' dtype (AG_F32 unless
 * nn_params_set_dtype says otherwise); inputs must have the same dtype.
 *
 * Modes.  An nn_params is in training mode until nn_params_set_training
 * (p, false); batch_norm1d and dropout read the mode of the nn_params they
 * were created in (PyTorch's module.train() / module.eval()).
 */
#ifndef TAPEGRAD_NN_H
#define TAPEGRAD_NN_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== named parameters ======================================================
 * A map name -> tensor (uthash) that keeps insertion order.  Two kinds of
 * entries: parameters (trained: requires_grad on unless frozen) and buffers
 * (saved and loaded but never trained, e.g. batch-norm running statistics;
 * requires_grad always off). */
typedef struct nn_params nn_params;

/* An empty set in training mode with dtype AG_F32; NULL on no memory. */
nn_params *nn_params_new(void);
/* Frees every registered tensor and the set.  NULL is a no-op. */
void nn_params_free(nn_params *p);

/* dtype of the parameters that layers create from now on (AG_F32 or
 * AG_F64); already registered tensors keep theirs.  Ignored for NULL p or a
 * bad dtype. */
void     nn_params_set_dtype(nn_params *p, ag_dtype dt);
ag_dtype nn_params_dtype(const nn_params *p);
/* Training (default) or evaluation mode for batch_norm1d and dropout. */
void nn_params_set_training(nn_params *p, bool on);
bool nn_params_training(const nn_params *p);

/* Registers a persistent tensor under name (copied; unique, non-empty, not
 * "__metadata__"), sets requires_grad on and names the tensor after the
 * entry (ag_tensor_set_name).  p owns t from this call on, also when it
 * fails: then t is freed, so `nn_params_add(p, "w", ag_tensor_new(...))`
 * never leaks.  AG_ERR_ARG (NULL p/name/t, a tape tensor, a duplicate or bad
 * name) or AG_ERR_NOMEM. */
ag_status nn_params_add(nn_params *p, const char *name, ag_tensor *t);
/* The same for a buffer: requires_grad stays off and freezing ignores it. */
ag_status nn_params_add_buffer(nn_params *p, const char *name, ag_tensor *t);

/* The tensor registered under name (owned by p), or NULL. */
ag_tensor *nn_params_get(const nn_params *p, const char *name);
/* Entries (parameters and buffers) in insertion order: 0 <= i < count.
 * Out of range gives NULL / false. */
int         nn_params_count(const nn_params *p);
const char *nn_params_name(const nn_params *p, int i);
ag_tensor  *nn_params_at(const nn_params *p, int i);
bool        nn_params_is_buffer(const nn_params *p, int i);
/* Elements in all parameters (buffers not counted); with trainable_only,
 * only those not frozen.  PyTorch's sum(p.numel() for p in parameters()). */
int64_t nn_params_numel(const nn_params *p, bool trainable_only);

/* Clears the gradient of every parameter (ag_zero_grad). */
void nn_params_zero_grad(nn_params *p);
/* Freeze: requires_grad off (backward leaves the tensor alone); unfreeze:
 * on again.  prefix selects names equal to it or starting with prefix + "."
 * ("fc1" matches fc1.weight, not fc10.weight); a prefix ending in '.' is a
 * plain prefix; NULL or "" selects every parameter.  Buffers are never
 * touched.  Returns the number of parameters selected (0 for NULL p). */
int nn_params_freeze(nn_params *p, const char *prefix);
int nn_params_unfreeze(nn_params *p, const char *prefix);

/* The trainable parameters (requires_grad on: buffers and frozen ones are
 * left out) in insertion order, for optimizers; *n receives the count.  The
 * array belongs to p and stays valid until the next nn_params_tensors /
 * nn_params_names call or a change to p (add, freeze, unfreeze, free):
 * freeze first, then build the optimizer (it copies the array).  NULL with
 * *n = 0 on NULL p or no memory. */
ag_tensor **nn_params_tensors(nn_params *p, int *n);
/* Names of the same parameters, index for index (same lifetime rules). */
const char *const *nn_params_names(nn_params *p, int *n);

/* ---- checkpoints (safetensors) ---------------------------------------------
 * Saving writes every entry (parameters and buffers, F32/F64, by name) plus
 * a "__metadata__" map, through ag_safetensors_save: atomic (a temporary
 * file renamed over path), so a failure leaves an existing file whole. */
ag_status nn_params_save(const nn_params *p, const char *path);
/* The same with n_meta metadata pairs (e.g. {"description", "step"} ->
 * {"fashion mlp", "1200"}); read them back with ag_safetensors_meta. */
ag_status nn_params_save_meta(const nn_params *p, const char *path, int n_meta,
                              const char *const *keys, const char *const *values);

typedef struct nn_load_opts {
    bool non_strict;     /* allow names missing from the file or not in p */
    bool convert_dtype;  /* F32 <-> F64 conversion instead of a dtype error */
} nn_load_opts;

typedef struct nn_load_report {
    int loaded;          /* entries of p filled from the file */
    int missing;         /* entries of p the file lacks */
    int unexpected;      /* tensors of the file p lacks */
} nn_load_report;

/* Strict load: every entry of p must be in the file and every tensor of
 * the file in p, with the same shape and dtype.  Everything is validated
 * before any data is copied, so on failure p is unchanged.  AG_ERR_IO or
 * AG_ERR_FORMAT (a malformed file, or a mismatch: the message lists the
 * missing and unexpected names and each shape/dtype mismatch by name). */
ag_status nn_params_load(nn_params *p, const char *path);
/* The same with options (NULL: strict) and a report (may be NULL; counts
 * are filled also on failure).  Non-strict still checks shape and dtype of
 * every name present in both. */
ag_status nn_params_load_opts(nn_params *p, const char *path, const nn_load_opts *opts,
                              nn_load_report *report);
/* The same from a file already loaded with ag_safetensors_load (e.g. one
 * that also holds optimizer state: use non_strict). */
ag_status nn_params_load_from(nn_params *p, const ag_safetensors *f,
                              const nn_load_opts *opts, nn_load_report *report);

/* ==== initializers ==========================================================
 * torch.nn.init on a persistent tensor, in place, drawing from rng in
 * element order (the same rng state gives the same values; the values
 * differ from torch's generator).  AG_ERR_ARG for a NULL tensor or rng, a
 * bad argument, or (fan-based ones) a tensor with fewer than 2 dims.
 * Fans follow torch: fan_in = shape[1] * receptive field, fan_out =
 * shape[0] * receptive field, receptive field = product of shape[2:]. */

typedef enum nn_fan_mode { NN_FAN_IN = 0, NN_FAN_OUT } nn_fan_mode;

/* torch.nn.init.calculate_gain: "linear", "conv1d".., "sigmoid" -> 1,
 * "tanh" -> 5/3, "relu" -> sqrt(2), "leaky_relu" -> sqrt(2 / (1 + param^2))
 * (param: the negative slope; torch's default 0.01 is not applied here),
 * "selu" -> 3/4.  An unknown name gives NaN and sets ag_last_error. */
double    nn_init_gain(const char *nonlinearity, double param);
ag_status nn_init_fans(const ag_tensor *t, int64_t *fan_in, int64_t *fan_out);

ag_status nn_init_uniform(ag_tensor *t, double lo, double hi, ag_rng *rng);
ag_status nn_init_normal(ag_tensor *t, double mean, double std, ag_rng *rng);
ag_status nn_init_constant(ag_tensor *t, double value);
ag_status nn_init_zeros(ag_tensor *t);
ag_status nn_init_ones(ag_tensor *t);
/* U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)). */
ag_status nn_init_xavier_uniform(ag_tensor *t, double gain, ag_rng *rng);
/* N(0, std), std = gain * sqrt(2 / (fan_in + fan_out)). */
ag_status nn_init_xavier_normal(ag_tensor *t, double gain, ag_rng *rng);
/* U(-b, b), b = sqrt(3) * gain / sqrt(fan), gain = nn_init_gain
 * (nonlinearity, a); torch's kaiming_uniform_(t, a, mode, nonlinearity). */
ag_status nn_init_kaiming_uniform(ag_tensor *t, double a, nn_fan_mode mode,
                                  const char *nonlinearity, ag_rng *rng);
/* N(0, std), std = gain / sqrt(fan). */
ag_status nn_init_kaiming_normal(ag_tensor *t, double a, nn_fan_mode mode,
                                 const char *nonlinearity, ag_rng *rng);

/* ==== activations ===========================================================
 * Elementwise (softmax / log_softmax along axis); result has x's shape. */

ag_tensor *nn_relu(ag_tape *t, ag_tensor *x);
ag_tensor *nn_leaky_relu(ag_tape *t, ag_tensor *x, double slope);  /* torch default 0.01 */
/* x > 0 ? x : alpha * (e^x - 1); torch default alpha 1.  d/dx at exactly 0
 * is 0 here (torch: alpha). */
ag_tensor *nn_elu(ag_tape *t, ag_tensor *x, double alpha);
/* x * Phi(x) (erf), or with tanh_approx torch's approximate='tanh'. */
ag_tensor *nn_gelu(ag_tape *t, ag_tensor *x, bool tanh_approx);
ag_tensor *nn_silu(ag_tape *t, ag_tensor *x);                      /* x * sigmoid(x) */
ag_tensor *nn_tanh(ag_tape *t, ag_tensor *x);
ag_tensor *nn_sigmoid(ag_tape *t, ag_tensor *x);
/* log(1 + e^(beta x)) / beta, beta > 0 (torch default 1).  Unlike torch
 * there is no linear cut-off above beta x > 20 (the two differ by < 1e-9
 * relative there). */
ag_tensor *nn_softplus(ag_tape *t, ag_tensor *x, double beta);
ag_tensor *nn_softmax(ag_tape *t, ag_tensor *x, int axis);
ag_tensor *nn_log_softmax(ag_tape *t, ag_tensor *x, int axis);

/* Activation by name, for nn_mlp; torch's default parameters (leaky slope
 * 0.01, elu alpha 1, softplus beta 1). */
typedef enum nn_activation {
    NN_ACT_NONE = 0,  /* identity */
    NN_ACT_RELU,
    NN_ACT_LEAKY_RELU,
    NN_ACT_ELU,
    NN_ACT_GELU,
    NN_ACT_GELU_TANH,
    NN_ACT_SILU,
    NN_ACT_TANH,
    NN_ACT_SIGMOID,
    NN_ACT_SOFTPLUS
} nn_activation;
ag_tensor *nn_activate(ag_tape *t, nn_activation act, ag_tensor *x);

/* ==== layers =================================================================
 * Each constructor registers its tensors in p under "<name>.weight", ...
 * (name "" registers bare "weight", like a top-level torch module), takes
 * an rng for the default initialization (NULL: zeros, e.g. before loading
 * a checkpoint), and returns NULL with ag_last_error on a bad argument, a
 * name already taken, or no memory.  Fields are read-only for callers. */

/* ---- linear: y = x W^T + b -------------------------------------------------
 * weight [out, in], bias [out]; default init as torch.nn.Linear:
 * kaiming_uniform(a = sqrt(5)) for the weight, i.e. U(-1/sqrt(in),
 * 1/sqrt(in)), and U(-1/sqrt(in), 1/sqrt(in)) for the bias. */
typedef struct nn_linear {
    ag_tensor *weight;   /* [out, in], owned by the nn_params */
    ag_tensor *bias;     /* [out], or NULL without bias */
    int64_t in, out;
} nn_linear;

nn_linear *nn_linear_new(nn_params *p, const char *name, int64_t in, int64_t out, bool bias,
                         ag_rng *rng);
/* x [..., in] (at least 1-D) -> [..., out]. */
ag_tensor *nn_linear_forward(ag_tape *t, nn_linear *l, ag_tensor *x);
void nn_linear_free(nn_linear *l);

/* ---- MLP: linear layers with an activation between them ---------------------
 * widths[0] is the input width, widths[n_widths-1] the output width
 * (n_widths >= 2); the activation follows every layer but the last.
 * Layer i is registered as "<name>.<2i>" (".weight", ".bias"), the names
 * of torch.nn.Sequential(Linear, Act, Linear, Act, ..., Linear). */
typedef struct nn_mlp {
    int n_layers;
    nn_linear **layers;  /* (n_layers) */
    nn_activation act;
    int checkpoint;      /* layers per checkpoint (nn_mlp_set_checkpoint); 0: none */
    struct nn_mlp_segment *segments;  /* the checkpoints' ctx, owned */
} nn_mlp;

nn_mlp *nn_mlp_new(nn_params *p, const char *name, int n_widths, const int64_t *widths,
                   bool bias, nn_activation act, ag_rng *rng);
ag_tensor *nn_mlp_forward(ag_tape *t, nn_mlp *m, ag_tensor *x);
/* Gradient checkpointing (ag_checkpoint): from the next nn_mlp_forward on,
 * each run of `every` layers, with the activations that follow them, is
 * one checkpoint, so a forward keeps one activation per run and backward
 * computes the others again (about one more forward).  0, the default,
 * turns it off.  The gradients are the same bits either way.  Set it
 * between steps, not between a forward and its backward.  AG_ERR_ARG
 * (ag_last_error) for a NULL m or every < 0, AG_ERR_NOMEM. */
ag_status nn_mlp_set_checkpoint(nn_mlp *m, int every);
void nn_mlp_free(nn_mlp *m);

/* ---- embedding: rows of a table --------------------------------------------
 * weight [num, dim], default init N(0, 1) as torch.nn.Embedding. */
typedef struct nn_embedding {
    ag_tensor *weight;   /* [num, dim] */
    int64_t num, dim;
} nn_embedding;

nn_embedding *nn_embedding_new(nn_params *p, const char *name, int64_t num, int64_t dim,
                               ag_rng *rng);
/* Rows idx[0..n) -> [n, dim] (ag_index_select; an index outside [0, num)
 * is AG_ERR_ARG on the tape).  Reshape for more dims. */
ag_tensor *nn_embedding_forward(ag_tape *t, nn_embedding *e, const int64_t *idx, int64_t n);
void nn_embedding_free(nn_embedding *e);

/* ---- layer_norm over the trailing dims ---------------------------------------
 * y = (x - mean) / sqrt(var + eps) * weight + bias, mean and (biased)
 * variance over the last ndim dims of x, which must equal shape.  weight
 * (ones) and bias (zeros) have that shape; affine false: none.  torch's
 * default eps is 1e-5. */
typedef struct nn_layer_norm {
    ag_tensor *weight, *bias;   /* shape, or NULL without affine */
    int ndim;
    int64_t shape[AG_MAX_DIMS];
    double eps;
} nn_layer_norm;

nn_layer_norm *nn_layer_norm_new(nn_params *p, const char *name, int ndim,
                                 const int64_t *shape, double eps, bool affine);
ag_tensor *nn_layer_norm_forward(ag_tape *t, nn_layer_norm *l, ag_tensor *x);
void nn_layer_norm_free(nn_layer_norm *l);

/* ---- batch_norm1d: x [N, C] or [N, C, L] ------------------------------------
 * Training mode (of p): normalizes with the batch mean and biased
 * variance over N (and L), and updates the buffers running_mean /
 * running_var as torch does: r = (1 - momentum) r + momentum * s, with the
 * unbiased variance for s (N*L must be > 1).  Evaluation mode normalizes
 * with the running statistics.  weight (ones) and bias (zeros) are [C]
 * (affine false: none); running_mean starts at 0, running_var at 1.  torch's
 * defaults: eps 1e-5, momentum 0.1 (torch's momentum=None, a cumulative
 * average, is not offered).  torch's num_batches_tracked is not kept
 * (torch's load_state_dict fills it in). */
typedef struct nn_batch_norm {
    ag_tensor *weight, *bias;               /* [C] or NULL */
    ag_tensor *running_mean, *running_var;  /* [C] buffers */
    int64_t c;
    double eps, momentum;
    nn_params *owner;                       /* whose mode applies */
} nn_batch_norm;

nn_batch_norm *nn_batch_norm1d_new(nn_params *p, const char *name, int64_t c, double eps,
                                   double momentum, bool affine);
ag_tensor *nn_batch_norm1d_forward(ag_tape *t, nn_batch_norm *b, ag_tensor *x);
void nn_batch_norm_free(nn_batch_norm *b);

/* ---- dropout ---------------------------------------------------------------------
 * Zeroes each element with probability prob in training mode (of p) and
 * scales the rest by 1/(1-prob); the identity in evaluation mode.  Registers
 * nothing.  prob in [0, 1). */
typedef struct nn_dropout {
    double prob;
    nn_params *owner;
} nn_dropout;

nn_dropout *nn_dropout_new(nn_params *p, double prob);
ag_tensor *nn_dropout_forward(ag_tape *t, nn_dropout *d, ag_tensor *x, ag_rng *rng);
void nn_dropout_free(nn_dropout *d);

/* ==== convolution, pooling, flatten, batch_norm2d (NCHW, as PyTorch) =======
 *   nn_conv2d *c1 = nn_conv2d_new(p, "conv1", 1, 32, 3, 3, (ag_conv2d_opts){0}, true, &rng);
 *   ag_tensor *h = nn_relu(t, nn_conv2d_forward(t, c1, x));        (N, 32, 26, 26)
 *   h = nn_max_pool2d(t, h, (ag_pool2d_opts){.kernel = {2, 2}});   (N, 32, 13, 13)
 *   h = nn_flatten(t, h, 1, -1);                                   (N, 5408)
 * Shape and option errors name the nn_ function (not the ag_ op inside). */

/* ---- conv2d: torch.nn.Conv2d -------------------------------------------------
 * weight [out, in/groups, kh, kw], bias [out]; default init as torch:
 * kaiming_uniform(a = sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * and the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in/groups
 * * kh * kw.  Options as ag_conv2d's (zero fields: stride 1, padding 0,
 * dilation 1, groups 1); in and out must be divisible by groups.  NULL with
 * ag_last_error on a bad argument. */
typedef struct nn_conv2d {
    ag_tensor *weight;    /* [out, in/groups, kh, kw], owned by the nn_params */
    ag_tensor *bias;      /* [out], or NULL without bias */
    int64_t in, out, kernel[2];
    ag_conv2d_opts opts;  /* as given, zero fields replaced by their defaults */
} nn_conv2d;

nn_conv2d *nn_conv2d_new(nn_params *p, const char *name, int64_t in, int64_t out,
                         int64_t kh, int64_t kw, ag_conv2d_opts o, bool bias, ag_rng *rng);
/* x [N, in, H, W] -> [N, out, H_out, W_out], H_out = (H + 2 padding -
 * dilation (kh - 1) - 1) / stride + 1 (the same for W).  AG_ERR_SHAPE on
 * the tape for another channel count or ndim, or an input smaller than the
 * dilated kernel; AG_ERR_DTYPE for a dtype other than the weight's. */
ag_tensor *nn_conv2d_forward(ag_tape *t, nn_conv2d *l, ag_tensor *x);
void nn_conv2d_free(nn_conv2d *l);

/* ---- conv1d: torch.nn.Conv1d -------------------------------------------------
 * The same on x [N, in, L] with weight [out, in/groups, k] (fan_in =
 * in/groups * k) and ag_conv1d_opts. */
typedef struct nn_conv1d {
    ag_tensor *weight;    /* [out, in/groups, k] */
    ag_tensor *bias;      /* [out], or NULL */
    int64_t in, out, kernel;
    ag_conv1d_opts opts;  /* zero fields replaced by their defaults */
} nn_conv1d;

nn_conv1d *nn_conv1d_new(nn_params *p, const char *name, int64_t in, int64_t out, int64_t k,
                         ag_conv1d_opts o, bool bias, ag_rng *rng);
ag_tensor *nn_conv1d_forward(ag_tape *t, nn_conv1d *l, ag_tensor *x);   /* [N, out, L_out] */
void nn_conv1d_free(nn_conv1d *l);

/* ---- pooling: F.max_pool2d, F.avg_pool2d -----------------------------------
 * x [N, C, H, W] -> [N, C, H_out, W_out], H_out = (H + 2 padding - kernel)
 * / stride + 1.  Options as ag_pool2d_opts: kernel >= 1 (no default),
 * stride 0 means the kernel, 0 <= padding <= kernel / 2 (torch's rule);
 * avg counts the padding in the divisor (count_include_pad).  Stateless
 * (torch.nn.MaxPool2d has no parameters): plain functions.  AG_ERR_ARG on
 * the tape for bad options, AG_ERR_SHAPE for another ndim or an input
 * smaller than the kernel. */
ag_tensor *nn_max_pool2d(ag_tape *t, ag_tensor *x, ag_pool2d_opts o);
ag_tensor *nn_avg_pool2d(ag_tape *t, ag_tensor *x, ag_pool2d_opts o);

/* ---- flatten: torch.flatten(x, start_dim, end_dim) ---------------------------
 * Dims start_dim..end_dim (negative: counted from the end) merged into
 * one (ag_reshape: gradients flow through).  torch.nn.Flatten() is
 * nn_flatten(t, x, 1, -1).  AG_ERR_ARG on the tape for dims out of range or
 * start after end. */
ag_tensor *nn_flatten(ag_tape *t, ag_tensor *x, int start_dim, int end_dim);

/* ---- batch_norm2d: torch.nn.BatchNorm2d on x [N, C, H, W] --------------------
 * batch_norm1d over channels: in training mode (of p) normalizes with the
 * batch mean and biased variance over N, H and W of each channel and
 * updates running_mean / running_var (unbiased variance; N*H*W must be >
 * 1) with momentum, and adds 1 to num_batches_tracked; evaluation mode
 * normalizes with the running statistics.  Registers, in torch's order,
 * NAME.weight, NAME.bias (affine only), NAME.running_mean, NAME.running_var
 * and NAME.num_batches_tracked, a 0-d buffer in p's dtype (torch's is an
 * int64, which tapegrad's checkpoints do not hold: torch's load_state_dict
 * converts a float one; a torch state_dict needs it converted to float
 * before nn_params_load).  torch's defaults: eps 1e-5, momentum 0.1. */
typedef struct nn_batch_norm2d {
    nn_batch_norm bn;                 /* weight, bias, running statistics, eps, ... */
    ag_tensor *num_batches_tracked;   /* 0-d buffer */
} nn_batch_norm2d;

nn_batch_norm2d *nn_batch_norm2d_new(nn_params *p, const char *name, int64_t c, double eps,
                                     double momentum, bool affine);
/* x [N, C, H, W] -> the same shape. */
ag_tensor *nn_batch_norm2d_forward(ag_tape *t, nn_batch_norm2d *b, ag_tensor *x);
void nn_batch_norm2d_free(nn_batch_norm2d *b);

/* ==== recurrent layers: torch.nn.RNN, LSTM, GRU ================================
 *   nn_lstm *rnn = nn_lstm_new(p, "rnn", 64, 256, 1, true, &rng);
 *   ag_tensor *hn, *cn;
 *   ag_tensor *y = nn_lstm_forward(t, rnn, x, NULL, NULL, &hn, &cn);
 *                  x [N, T, 64] -> y [N, T, 256] (batch_first), hn, cn [1, N, 256]
 * Unidirectional stacks of `layers` cells with biases, as torch's defaults
 * (bias=True, bidirectional=False, dropout=0).  Layer k holds, under the
 * name given to _new (as nn_linear's NAME.weight), with G gates:
 *   NAME.weight_ih_l{k} [G*H, in]   (in = input for k = 0, hidden above)
 *   NAME.weight_hh_l{k} [G*H, H]
 *   NAME.bias_ih_l{k}   [G*H]
 *   NAME.bias_hh_l{k}   [G*H]
 * registered in that order, layer by layer (torch's parameter order), each
 * initialised from U(-1/sqrt(H), 1/sqrt(H)) in that order (torch's
 * reset_parameters; rng NULL: zeros).  G and the gate order along the
 * first dim, with x the layer's input, h the previous state, s = sigmoid:
 *   rnn  (G 1): h' = tanh(W_ih x + b_ih + W_hh h + b_hh)   (or relu)
 *   lstm (G 4: i, f, g, o): i = s(.), f = s(.), g = tanh(.), o = s(.)
 *        of W_ih x + b_ih + W_hh h + b_hh;  c' = f c + i g, h' = o tanh(c')
 *   gru  (G 3: r, z, n): r = s(W_ir x + b_ir + W_hr h + b_hr), z likewise,
 *        n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h' = (1 - z) n + z h
 * Shapes: x [N, T, input] with batch_first, else [T, N, input]; the
 * result, every step's top-layer h, is [N, T, H] (or [T, N, H]); states
 * h0, c0 and the final hn, cn are [layers, N, H] whatever batch_first
 * (as torch).  h0 / c0 NULL: zeros.  hn / cn may be NULL (not wanted);
 * when given they receive tape tensors (NULL when the forward fails).
 * Errors on the tape name the nn_ function: x not 3-D or its last dim not
 * input, a state of another shape (AG_ERR_SHAPE), another dtype than the
 * weights (AG_ERR_DTYPE), T = 0 (AG_ERR_SHAPE).  Constructors: NULL with
 * ag_last_error for input or hidden outside [1, 2^30], layers outside [1,
 * NN_RNN_MAX_LAYERS] or a name taken.  The LSTM and GRU steps run as the fused primitives
 * ag_lstm_cell / ag_gru_cell (autograd.h) after one GEMM each for W_hh h;
 * the input projections of all steps are one GEMM per layer. */
#define NN_RNN_MAX_LAYERS 64

/* The weights of one layer (owned by the nn_params). */
typedef struct nn_rnn_weights {
    ag_tensor *weight_ih;   /* [G*H, in] */
    ag_tensor *weight_hh;   /* [G*H, H] */
    ag_tensor *bias_ih;     /* [G*H] */
    ag_tensor *bias_hh;     /* [G*H] */
} nn_rnn_weights;

typedef struct nn_lstm {
    int64_t input, hidden;
    int layers;
    bool batch_first;
    nn_rnn_weights *w;      /* (layers) */
} nn_lstm;

nn_lstm *nn_lstm_new(nn_params *p, const char *name, int64_t input, int64_t hidden, int layers,
                     bool batch_first, ag_rng *rng);
ag_tensor *nn_lstm_forward(ag_tape *t, nn_lstm *l, ag_tensor *x, ag_tensor *h0, ag_tensor *c0,
                           ag_tensor **hn, ag_tensor **cn);
void nn_lstm_free(nn_lstm *l);

typedef struct nn_gru {
    int64_t input, hidden;
    int layers;
    bool batch_first;
    nn_rnn_weights *w;      /* (layers) */
} nn_gru;

nn_gru *nn_gru_new(nn_params *p, const char *name, int64_t input, int64_t hidden, int layers,
                   bool batch_first, ag_rng *rng);
ag_tensor *nn_gru_forward(ag_tape *t, nn_gru *g, ag_tensor *x, ag_tensor *h0, ag_tensor **hn);
void nn_gru_free(nn_gru *g);

typedef struct nn_rnn {
    int64_t input, hidden;
    int layers;
    bool batch_first;
    nn_rnn_weights *w;      /* (layers) */
    nn_activation act;      /* NN_ACT_TANH (default) or NN_ACT_RELU */
} nn_rnn;

nn_rnn *nn_rnn_new(nn_params *p, const char *name, int64_t input, int64_t hidden, int layers,
                   bool batch_first, ag_rng *rng);
/* torch's nonlinearity='relu' (NN_ACT_RELU) or back to 'tanh'
 * (NN_ACT_TANH); AG_ERR_ARG for anything else or a NULL r. */
ag_status nn_rnn_set_nonlinearity(nn_rnn *r, nn_activation act);
ag_tensor *nn_rnn_forward(ag_tape *t, nn_rnn *r, ag_tensor *x, ag_tensor *h0, ag_tensor **hn);
void nn_rnn_free(nn_rnn *r);

/* ==== attention: torch.nn.MultiheadAttention ====================================
 * Registers NAME.in_proj_weight [3E, E] (rows: q, k, v), NAME.in_proj_bias
 * [3E], NAME.out_proj.weight [E, E] and NAME.out_proj.bias [E], torch's
 * names and init (xavier_uniform in_proj_weight, out_proj.weight as a
 * torch Linear, zero biases).  E = embed_dim in [1, 2^30], divisible by
 * num_heads.
 * forward: query [N, L, E], key and value [N, S, E] with batch_first (else
 * [L, N, E], [S, N, E]) -> [N, L, E] (or [L, N, E]): torch's attn_output
 * with need_weights=False.  attn_mask: NULL or an additive mask that
 * broadcasts to [N, heads, L, S] (a float [L, S] as torch's, -inf where
 * masked; torch's boolean masks become -inf / 0); causal masks key j > query
 * i (torch's is_causal, or attn_mask = triu(-inf, 1)).  No dropout, no
 * key_padding_mask (express it in attn_mask as [N, 1, 1, S]).  The heads
 * run through the fused ag_attention, or for self-attention (query, key
 * and value one tensor) with batch_first through ag_attention_qkv, which
 * reads them in place from the in-projection's output.  Errors on the tape name
 * nn_multihead_attention_forward (shapes, dtype). */
typedef struct nn_multihead_attention {
    ag_tensor *in_proj_weight;   /* [3E, E] */
    ag_tensor *in_proj_bias;     /* [3E] */
    nn_linear *out_proj;         /* out_proj.weight [E, E], out_proj.bias [E] */
    int64_t embed_dim, num_heads;
    bool batch_first;
} nn_multihead_attention;

nn_multihead_attention *nn_multihead_attention_new(nn_params *p, const char *name,
                                                   int64_t embed_dim, int64_t num_heads,
                                                   bool batch_first, ag_rng *rng);
ag_tensor *nn_multihead_attention_forward(ag_tape *t, nn_multihead_attention *m,
                                          ag_tensor *query, ag_tensor *key, ag_tensor *value,
                                          const ag_tensor *attn_mask, bool causal);
void nn_multihead_attention_free(nn_multihead_attention *m);

/* ==== GPT: a decoder-only transformer (pre-LN blocks) ==========================
 *   nn_gpt *g = nn_gpt_new(p, "", &(nn_gpt_config){.vocab = 73, .block = 64,
 *                          .layers = 4, .heads = 4, .dim = 128}, &rng);
 *   ag_tensor *logits = nn_gpt_forward(t, g, idx, 12, 64);   (idx [12, 64] -> [12, 64, 73])
 * A block (NAME.blocks.{i}) is x + attn(ln1(x)) then x + proj(gelu(fc(ln2(x)))),
 * causal self-attention with torch's MultiheadAttention layout and exact
 * GELU; parameters, in order: ln1.weight/.bias, attn.in_proj_weight,
 * attn.in_proj_bias, attn.out_proj.weight/.bias, ln2.weight/.bias,
 * fc.weight [4d, d], fc.bias, proj.weight [d, 4d], proj.bias.  The model:
 * NAME.tok_emb.weight [vocab, d], NAME.pos_emb.weight [block, d], the
 * blocks, NAME.ln_f.weight/.bias and NAME.head.weight [vocab, d] (no bias,
 * not tied to tok_emb).  Layer norms use eps 1e-5 and run as the fused
 * ag_layer_norm (the nn_layer_norm structs hold their parameters).  Init
 * is nanoGPT's: N(0, 0.02) for every weight matrix and embedding, N(0,
 * 0.02 / sqrt(2 layers)) for the residual projections
 * (attn.out_proj.weight, proj.weight), zero biases, layer norms 1 and 0.
 * No dropout. */
typedef struct nn_gpt_block {
    nn_layer_norm *ln1, *ln2;
    nn_multihead_attention *attn;
    nn_linear *fc, *proj;
} nn_gpt_block;

/* A block of width dim with heads heads, torch's init for its layers (the
 * GPT re-initialises its blocks as above). */
nn_gpt_block *nn_gpt_block_new(nn_params *p, const char *name, int64_t dim, int64_t heads,
                               ag_rng *rng);
/* x [N, T, dim] -> [N, T, dim], causal over T. */
ag_tensor *nn_gpt_block_forward(ag_tape *t, nn_gpt_block *b, ag_tensor *x);
void nn_gpt_block_free(nn_gpt_block *b);

/* Every field is required (in [1, 2^30], layers <= 1024, dim divisible by
 * heads): a zero struct is refused with a message naming the field. */
typedef struct nn_gpt_config {
    int64_t vocab;    /* tokens */
    int64_t block;    /* longest context (positions) */
    int64_t layers, heads, dim;
} nn_gpt_config;

typedef struct nn_gpt {
    nn_gpt_config cfg;
    nn_embedding *tok_emb, *pos_emb;
    nn_gpt_block **blocks;   /* (cfg.layers) */
    nn_layer_norm *ln_f;
    nn_linear *head;
    int checkpoint;          /* blocks per checkpoint (nn_gpt_set_checkpoint); 0: none */
    unsigned checkpoint_keep;  /* NN_GPT_KEEP_* */
    struct nn_gpt_segment *segments;  /* the checkpoints' ctx, owned */
} nn_gpt;

nn_gpt *nn_gpt_new(nn_params *p, const char *name, const nn_gpt_config *cfg, ag_rng *rng);
/* idx: n sequences of T tokens (row-major [n, T], each in [0, vocab)),
 * 1 <= T <= block -> logits [n, T, vocab], position t predicting token t+1.
 * AG_ERR_ARG on the tape for a token out of range or a bad n / T. */
ag_tensor *nn_gpt_forward(ag_tape *t, nn_gpt *g, const int64_t *idx, int64_t n, int64_t T);
/* What a checkpointed block keeps from its first run (ag_checkpoint_save)
 * instead of computing it again in backward, flags: NN_GPT_KEEP_FC, the
 * MLP's first linear output [n, T, 4d] (the gelu reads it), and
 * NN_GPT_KEEP_PROJ, its second [n, T, d] (only the block's output needs
 * it); each is a third of the block's multiply-adds.  With both, a
 * 16-layer GPT's step keeps ~0.2x the tape of no checkpoint. */
#define NN_GPT_KEEP_FC 1u
#define NN_GPT_KEEP_PROJ 2u
/* Gradient checkpointing (ag_checkpoint), as nn_mlp_set_checkpoint: from
 * the next nn_gpt_forward on, each run of `every` blocks is one
 * checkpoint, so the tape keeps one [n, T, d] activation per run through
 * the blocks (plus what keep names, per block) and backward runs them
 * forward again.  every 0, the default, turns it off; the gradients are
 * the same bits either way.  Set it between steps.  AG_ERR_ARG
 * (ag_last_error) for a NULL g, every < 0 or unknown keep bits,
 * AG_ERR_NOMEM. */
ag_status nn_gpt_set_checkpoint(nn_gpt *g, int every, unsigned keep);
void nn_gpt_free(nn_gpt *g);

/* ==== losses =================================================================
 * reduction: AG_REDUCE_MEAN (0-d mean over elements), AG_REDUCE_SUM (0-d
 * sum) or AG_REDUCE_NONE (per element, input's shape).  input and target
 * must have the same shape and dtype (no broadcasting). */

ag_tensor *nn_mse_loss(ag_tape *t, ag_tensor *input, ag_tensor *target, ag_reduction red);
ag_tensor *nn_l1_loss(ag_tape *t, ag_tensor *input, ag_tensor *target, ag_reduction red);
/* torch's smooth_l1_loss: |d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta
 * (d = input - target, beta >= 0; beta 0 is the L1 loss). */
ag_tensor *nn_smooth_l1_loss(ag_tape *t, ag_tensor *input, ag_tensor *target, double beta,
                             ag_reduction red);
/* torch's huber_loss: |d| < delta ? 0.5 d^2 : delta (|d| - 0.5 delta),
 * delta > 0 (= delta * smooth_l1 with beta = delta). */
ag_tensor *nn_huber_loss(ag_tape *t, ag_tensor *input, ag_tensor *target, double delta,
                         ag_reduction red);

/* Cross-entropy of logits [n, C] against labels[n] in [0, C): the mean
 * over rows of -log softmax(logits)[i, labels[i]] (F.cross_entropy with
 * its defaults, ignore_index -100 included).  0-d result. */
ag_tensor *nn_cross_entropy(ag_tape *t, ag_tensor *logits, const int64_t *labels, int64_t n);
/* The same with label smoothing, ignore_index and reduction (ag_ce_opts;
 * NULL: the defaults above).  Wraps the fused ag_cross_entropy_logits. */
ag_tensor *nn_cross_entropy_opts(ag_tape *t, ag_tensor *logits, const int64_t *labels,
                                 int64_t n, const ag_ce_opts *opts);
/* Negative log-likelihood of log-probabilities logp [n, C]: -logp[i,
 * labels[i]], rows whose label is ignore_index skipped (AG_CE_NO_IGNORE:
 * none); mean is over the rows kept (NaN when none is, as in torch); NONE
 * gives [n] with 0 for ignored rows.  F.nll_loss. */
ag_tensor *nn_nll_loss(ag_tape *t, ag_tensor *logp, const int64_t *labels, int64_t n,
                       int64_t ignore_index, ag_reduction red);
/* Binary cross-entropy of logits x against targets y in [0, 1], in the
 * stable form max(x, 0) - x y + log(1 + e^-|x|) (BCEWithLogitsLoss). */
ag_tensor *nn_bce_with_logits(ag_tape *t, ag_tensor *logits, ag_tensor *target,
                              ag_reduction red);

#ifdef __cplusplus
}
#endif

/* The data helpers (IDX files, data sets, minibatches) are part of nn. */
#include "nn_data.h"

#endif
