/* The op table's rows, one line per primitive op: AG_OP(ID, definition).
 * Included with AG_OP defined by the includer (enum, table, externs).
 * No include guard on purpose. */
/* ops_binary.c */
AG_OP(ADD, ag_op_add)
AG_OP(SUB, ag_op_sub)
AG_OP(MUL, ag_op_mul)
AG_OP(DIV, ag_op_div)
AG_OP(POW, ag_op_pow)
AG_OP(MAXIMUM, ag_op_maximum)
AG_OP(MINIMUM, ag_op_minimum)
/* broadcast.c */
AG_OP(SUM_TO, ag_op_sum_to)
/* ops_unary.c */
AG_OP(NEG, ag_op_neg)
AG_OP(EXP, ag_op_exp)
AG_OP(LOG, ag_op_log)
AG_OP(SQRT, ag_op_sqrt)
AG_OP(ABS, ag_op_abs)
AG_OP(SIN, ag_op_sin)
AG_OP(COS, ag_op_cos)
AG_OP(TANH, ag_op_tanh)
AG_OP(SIGMOID, ag_op_sigmoid)
AG_OP(RELU, ag_op_relu)
AG_OP(LEAKY_RELU, ag_op_leaky_relu)
AG_OP(ERF, ag_op_erf)
AG_OP(GELU, ag_op_gelu)
AG_OP(GELU_TANH, ag_op_gelu_tanh)
AG_OP(SOFTPLUS, ag_op_softplus)
AG_OP(ADD_SCALAR, ag_op_add_scalar)
AG_OP(MUL_SCALAR, ag_op_mul_scalar)
AG_OP(POW_SCALAR, ag_op_pow_scalar)
/* ops_reduce.c */
AG_OP(SUM, ag_op_sum)
AG_OP(MEAN, ag_op_mean)
/* ops_linalg.c */
AG_OP(MATMUL, ag_op_matmul)
AG_OP(LINEAR, ag_op_linear)
/* ops_reduce_extreme.c */
AG_OP(MAX, ag_op_max)
AG_OP(MIN, ag_op_min)
/* ops_reduce.c */
AG_OP(LOGSUMEXP, ag_op_logsumexp)
AG_OP(VARIANCE, ag_op_variance)
/* ops_reduce_extreme.c */
AG_OP(ARGMAX, ag_op_argmax)
AG_OP(TOPK, ag_op_topk)
/* ops_shape.c */
AG_OP(RESHAPE, ag_op_reshape)
AG_OP(SQUEEZE, ag_op_squeeze)
AG_OP(UNSQUEEZE, ag_op_unsqueeze)
AG_OP(TRANSPOSE, ag_op_transpose)
AG_OP(PERMUTE, ag_op_permute)
AG_OP(EXPAND, ag_op_expand)
/* ops_slice.c */
AG_OP(SLICE, ag_op_slice)
AG_OP(UNSLICE, ag_op_unslice)
AG_OP(PAD, ag_op_pad)
AG_OP(CONCAT, ag_op_concat)
AG_OP(STACK, ag_op_stack)
/* ops_index.c */
AG_OP(GATHER, ag_op_gather)
AG_OP(SCATTER_ADD, ag_op_scatter_add)
AG_OP(INDEX_SELECT, ag_op_index_select)
AG_OP(INDEX_ADD, ag_op_index_add)
/* ops_mask.c */
AG_OP(WHERE, ag_op_where)
AG_OP(CLAMP, ag_op_clamp)
/* ops_nn.c */
AG_OP(SOFTMAX, ag_op_softmax)
AG_OP(LOG_SOFTMAX, ag_op_log_softmax)
AG_OP(CROSS_ENTROPY_LOGITS, ag_op_cross_entropy_logits)
AG_OP(DROPOUT, ag_op_dropout)
/* ops_attention.c */
AG_OP(ATTENTION, ag_op_attention)
/* ops_attention_qkv.c */
AG_OP(ATTENTION_QKV, ag_op_attention_qkv)
/* ops_conv.c */
AG_OP(CONV2D, ag_op_conv2d)
AG_OP(CONV2D_INPUT_GRAD, ag_op_conv2d_input_grad)
AG_OP(CONV2D_WEIGHT_GRAD, ag_op_conv2d_weight_grad)
/* ops_pool.c */
AG_OP(MAX_POOL2D, ag_op_max_pool2d)
AG_OP(AVG_POOL2D, ag_op_avg_pool2d)
AG_OP(ADAPTIVE_AVG_POOL2D, ag_op_adaptive_avg_pool2d)
AG_OP(AVG_POOL2D_GRAD, ag_op_avg_pool2d_grad)
/* ops_norm.c */
AG_OP(LAYER_NORM, ag_op_layer_norm)
/* ops_cell.c */
AG_OP(LSTM_CELL_C, ag_op_lstm_cell_c)
AG_OP(LSTM_CELL_H, ag_op_lstm_cell_h)
AG_OP(GRU_CELL, ag_op_gru_cell)
