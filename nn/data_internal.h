/* data_internal.h — what data.c (IDX files, data sets) and batcher.c (the
 * minibatch iterator) share: the data set's layout and three helpers. */
#ifndef TAPEGRAD_NN_DATA_INTERNAL_H
#define TAPEGRAD_NN_DATA_INTERNAL_H

#include "nn_data.h"

struct nn_dataset {
    int64_t n, features, classes;
    int image_ndim;
    int64_t image_shape[NN_IDX_MAX_DIMS];
    uint8_t *images; /* (n, F) */
    int64_t *labels; /* (n) */
};

/* ag_mem_alloc / ag_mem_free (the library's one door to system memory),
 * reached through these and nowhere else in data.c and batcher.c. */
void *data_alloc(size_t size);
void data_free(void *p);
/* For the accessors: false, with the message, when obj is NULL. */
bool data_present(const void *obj, const char *fn, const char *arg);
/* Sets the per-thread message (ag_last_error) and returns s. */
__attribute__((format(printf, 2, 3)))
ag_status data_error(ag_status s, const char *fmt, ...);

#endif
