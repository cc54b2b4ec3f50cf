/*
 * feature/cnn/embed.c - placeholder for the CNN embedding entry points (cnn.h) until the ONNX
 * engine lands: every call fails cleanly with SL_E_UNSUPPORTED. Replaced by the CNN module.
 */
#include "shoplens/cnn.h"
#include "util/util.h"

sl_status sl_cnn_load(const char *path, sl_cnn **out, sl_error *err) {
    if (out) *out = NULL;
    return sl__err_set(err, SL_E_UNSUPPORTED, "%s: the CNN engine is not part of this build",
                       path ? path : "(null)");
}

void sl_cnn_free(sl_cnn *m) { (void)m; }

size_t sl_cnn_embed_dim(const sl_cnn *m) { (void)m; return 0; }

sl_status sl_cnn_embed(const sl_cnn *m, const sl_image *const *images, size_t n, float *out,
                       sl_error *err) {
    (void)m; (void)images; (void)n; (void)out;
    return sl__err_set(err, SL_E_UNSUPPORTED, "the CNN engine is not part of this build");
}
