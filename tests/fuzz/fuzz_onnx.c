/* tests/fuzz/fuzz_onnx.c - the ONNX reader (a ModelProto, and the same bytes as a lone
 * TensorProto as the conformance test reads them) and the load-time graph work (conversion,
 * constant folding, shape probing, the embedding choice, fusions) on arbitrary bytes: must fail
 * cleanly, never crash or leak. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "nn/nn_internal.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl__onnx_model *om = NULL;
    sl_error e;
    sl__onnx_tensor t;
    if (sl__onnx_parse_tensor(data, size, &t, &e) == SL_OK) sl__onnx_tensor_clear(&t);
    if (sl__onnx_parse(data, size, &om, &e) != SL_OK) return 0;
    sl_nn *m = calloc(1, sizeof *m);
    pthread_mutex_t *mu = malloc(sizeof *mu);
    if (!m || !mu) { free(m); free(mu); sl__onnx_free(om); return 0; }
    pthread_mutex_init(mu, NULL);
    m->lock = mu;
    m->onnx = om;
    m->max_batch = 1;
    m->backend = SL_NN_BACKEND_REF;
    /* Only build the graph: running plans on hostile shapes could ask for huge arenas. */
    (void)sl__graph_build(m, NULL, &e);
    sl_nn_free(m);
    return 0;
}
