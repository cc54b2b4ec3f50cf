/*
 * cli/cmd_cnn.c - `shoplens cnn info|run|embed`: inspect an ONNX model, run its raw graph on a
 * NumPy array (to compare with other runtimes tensor for tensor), or embed images.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "nn/npy.h"
#include "nn/nn_internal.h"
#include "shoplens/nn.h"
#include "shoplens/image.h"
#include "util/util.h"

static const char usage[] =
    "usage: shoplens cnn info MODEL [options]\n"
    "       shoplens cnn run MODEL --input X.npy --out Y.npy [options]\n"
    "       shoplens cnn embed MODEL IMAGE... [--json] [options]\n"
    "       shoplens cnn preprocess MODEL IMAGE... --out X.npy [options]\n"
    "\n"
    "info    inputs, outputs, operators, parameter count, FLOPs per image, load-time fusions\n"
    "run     runs the raw graph on X.npy (float32, C order, the model's input tensor, batch first)\n"
    "        and writes the output tensor to Y.npy (no normalization)\n"
    "embed   preprocesses images (sidecar MODEL.json or flags) and prints L2-normalized\n"
    "        embeddings, one line per image (or JSON with --json); --batch images per forward pass\n"
    "preprocess  writes the network input tensor of the images to X.npy (float32, batch first),\n"
    "        exactly what embed runs (to compare with another runtime)\n"
    "\n"
    "options:\n"
    "  --output NAME       tensor to output (default: for run, the graph's first output; for\n"
    "                      embed/info, the globally pooled features)\n"
    "  --threads N         threads per forward pass (default: all CPUs)\n"
    "  --precision P       fp32 (default), bf16 (oneDNN bf16 convolutions) or int8 (dense\n"
    "                      convolutions in int8, dynamic activation scales)\n"
    "  --backend B         auto (oneDNN convolutions, default), ref (im2col + OpenBLAS) or\n"
    "                      gemm (im2col + oneDNN sgemm)\n"
    "  --batch N           images per forward pass for embed (default 8)\n"
    "  --repeat N          run: repeat the forward pass N times and print images/s to stderr\n"
    "  --profile           run: time every step of the plan over the --repeat passes (default\n"
    "                      10) and print the times per operator and per step to stderr\n"
    "  --max-side N        embed/preprocess: decode with the longest side at most N, as a store\n"
    "                      does (shrink-on-load; 0 = full size, the default, as Pillow)\n"
    "  --resize N --crop N --mean R,G,B --std R,G,B --scale S --bgr\n"
    "  --interpolation bilinear|bicubic|area|nearest --layout nchw|nhwc\n"
    "                      preprocessing for embed (default: torchvision's ImageNet transforms)\n"
    "  --sidecar FILE      preprocessing JSON (default MODEL.json next to MODEL .onnx)\n";

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_floats3(const char *s, float *v) {
    return sscanf(s, "%f,%f,%f", &v[0], &v[1], &v[2]) == 3 ? 0 : -1;
}

static void print_json_string(const char *s) {
    putchar('"');
    for (const char *c = s; *c; c++) {
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if ((unsigned char)*c < 0x20) printf("\\u%04x", (unsigned char)*c);
        else putchar(*c);
    }
    putchar('"');
}

/* embed / preprocess: decodes `batch` images at a time and runs them as one forward pass
 * (sl_nn_embed); an image that fails to decode is reported and skipped. With save_npy, writes
 * the input tensors of the images that decoded instead of embedding them. */
static int embed_images(sl_nn *m, const char **images, size_t nimg, size_t batch, int json,
                        const char *save_npy, int max_side) {
    const char *cmd = "cnn";
#ifdef SL_NN_HAVE_IMAGE
    size_t dim = sl_nn_embed_dim(m);
    int64_t id[4];
    int ir = sl_nn_input_shape(m, id);
    if (id[0] > 0) batch = (size_t)id[0]; /* a fixed-batch model takes exactly that many */
    size_t per = 1;
    for (int d = 1; d < ir; d++) per *= (size_t)id[d];
    sl_image **imgs = calloc(batch, sizeof *imgs);
    const char **names = calloc(batch, sizeof *names);
    float *vec = sl__mallocarray(batch, dim * sizeof(float));
    float *all = save_npy ? sl__mallocarray(nimg, per * sizeof(float)) : NULL;
    sl_error e;
    sl_error_clear(&e);
    if (!imgs || !names || !vec || (save_npy && !all)) {
        free(imgs); free(names); free(vec); free(all);
        sl__err_set(&e, SL_E_NOMEM, "out of memory");
        return sl__cli_fail(cmd, &e);
    }
    size_t failed = 0, printed = 0, saved = 0;
    int rc = SL_EXIT_OK;
    if (json && !save_npy) printf("[");
    for (size_t s = 0; s < nimg && rc == SL_EXIT_OK; s += batch) {
        size_t b = 0;
        for (size_t k = s; k < nimg && k < s + batch; k++) {
            sl_error ie;
            sl_error_clear(&ie);
            sl_image_load_opts lo;
            memset(&lo, 0, sizeof lo);
            lo.max_side = max_side;
            sl_status st = sl_image_load_file(images[k], &lo, &imgs[b], NULL, &ie);
            if (st) {
                fprintf(stderr, "shoplens cnn: %s: %s: %s\n", images[k], sl_status_name(st), ie.message);
                failed++;
                continue;
            }
            names[b++] = images[k];
        }
        if (!b) continue;
        if (id[0] > 0 && b != batch) {
            sl__err_set(&e, SL_E_INVALID, "the model has a fixed batch of %zu; %zu images left", batch, b);
            rc = sl__cli_fail(cmd, &e);
        } else if (save_npy) {
            if (sl_nn_preprocess(m, (const sl_image *const *)imgs, b, all + saved * per, &e)) rc = sl__cli_fail(cmd, &e);
            else saved += b;
        } else if (sl_nn_embed(m, (const sl_image *const *)imgs, b, vec, &e)) {
            rc = sl__cli_fail(cmd, &e);
        } else {
            for (size_t k = 0; k < b; k++, printed++) {
                const float *v = vec + k * dim;
                if (json) {
                    printf("%s\n {\"image\": ", printed ? "," : "");
                    print_json_string(names[k]);
                    printf(", \"dim\": %zu, \"embedding\": [", dim);
                    for (size_t d = 0; d < dim; d++) printf("%s%.7g", d ? ", " : "", (double)v[d]);
                    printf("]}");
                } else {
                    printf("%s", names[k]);
                    for (size_t d = 0; d < dim; d++) printf(" %.7g", (double)v[d]);
                    printf("\n");
                }
            }
        }
        for (size_t k = 0; k < b; k++) { sl_image_free(imgs[k]); imgs[k] = NULL; }
    }
    if (json && !save_npy) printf("\n]\n");
    if (save_npy && rc == SL_EXIT_OK && saved) {
        int64_t dims[8] = {(int64_t)saved, id[1], id[2], id[3]};
        if (sl__npy_write(save_npy, all, dims, ir, &e)) rc = sl__cli_fail(cmd, &e);
    }
    free(imgs); free(names); free(vec); free(all);
    if (rc == SL_EXIT_OK && failed) rc = failed == nimg ? SL_EXIT_ERROR : SL_EXIT_PARTIAL;
    return rc;
#else
    (void)m; (void)images; (void)nimg; (void)batch; (void)json; (void)save_npy; (void)max_side;
    sl_error e;
    sl__err_set(&e, SL_E_UNSUPPORTED, "this build has no image module");
    return sl__cli_fail(cmd, &e);
#endif
}

static int run(int argc, char **argv) {
    const char *cmd = "cnn";
    if (sl__cli_wants_help(argc, argv) || argc < 3) {
        if (argc < 3 && !sl__cli_wants_help(argc, argv)) return sl__cli_usage_error(cmd, "missing subcommand and model");
        fputs(usage, stdout);
        return SL_EXIT_OK;
    }
    const char *sub = argv[1], *model = argv[2];
    if (strcmp(sub, "info") && strcmp(sub, "run") && strcmp(sub, "embed") && strcmp(sub, "preprocess"))
        return sl__cli_usage_error(cmd, "unknown subcommand '%s'", sub);
    sl_nn_opts o;
    sl_nn_opts_init(&o);
    const char *input = NULL, *outp = NULL;
    int json = 0, repeat = 0, run_output_set = 0, resize_given = 0, crop_given = 0, max_side = 0, profile = 0;
    const char **images = calloc((size_t)argc, sizeof *images);
    size_t nimg = 0;
    if (!images) return SL_EXIT_ERROR;
    sl_nn_preproc pre;
    sl_nn_preproc_init(&pre);
    int rc = SL_EXIT_OK;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { rc = sl__cli_usage_error(cmd, "%s needs a value", a); goto out; } i++; } while (0)
        if (!strcmp(a, "--output")) { NEEDV(); o.output = v; run_output_set = 1; }
        else if (!strcmp(a, "--input")) { NEEDV(); input = v; }
        else if (!strcmp(a, "--out")) { NEEDV(); outp = v; }
        else if (!strcmp(a, "--threads")) { NEEDV(); o.threads = atoi(v); }
        else if (!strcmp(a, "--batch")) { NEEDV(); o.max_batch = (size_t)atol(v); }
        else if (!strcmp(a, "--repeat")) { NEEDV(); repeat = atoi(v); }
        else if (!strcmp(a, "--max-side")) {
            NEEDV();
            max_side = atoi(v);
            if (max_side < 0 || max_side > SL_IMAGE_MAX_SIDE_MAX) { rc = sl__cli_usage_error(cmd, "--max-side must be 0..%d", SL_IMAGE_MAX_SIDE_MAX); goto out; }
        }
        else if (!strcmp(a, "--sidecar")) { NEEDV(); o.sidecar = v; }
        else if (!strcmp(a, "--precision")) {
            NEEDV();
            if (!strcmp(v, "fp32")) o.precision = SL_NN_PRECISION_FP32;
            else if (!strcmp(v, "bf16")) o.precision = SL_NN_PRECISION_BF16;
            else if (!strcmp(v, "int8")) o.precision = SL_NN_PRECISION_INT8;
            else { rc = sl__cli_usage_error(cmd, "--precision must be fp32, bf16 or int8"); goto out; }
        } else if (!strcmp(a, "--backend")) {
            NEEDV();
            if (!strcmp(v, "auto")) o.backend = SL_NN_BACKEND_AUTO;
            else if (!strcmp(v, "ref")) o.backend = SL_NN_BACKEND_REF;
            else if (!strcmp(v, "gemm")) o.backend = SL_NN_BACKEND_GEMM;
            else { rc = sl__cli_usage_error(cmd, "--backend must be auto, ref or gemm"); goto out; }
        } else if (!strcmp(a, "--resize")) { NEEDV(); pre.resize = atoi(v); o.have_preproc = resize_given = 1; }
        else if (!strcmp(a, "--crop")) { NEEDV(); pre.crop = atoi(v); o.have_preproc = crop_given = 1; }
        else if (!strcmp(a, "--mean")) { NEEDV(); if (parse_floats3(v, pre.mean)) { rc = sl__cli_usage_error(cmd, "--mean R,G,B"); goto out; } o.have_preproc = 1; }
        else if (!strcmp(a, "--std")) { NEEDV(); if (parse_floats3(v, pre.std)) { rc = sl__cli_usage_error(cmd, "--std R,G,B"); goto out; } o.have_preproc = 1; }
        else if (!strcmp(a, "--bgr")) { pre.bgr = 1; o.have_preproc = 1; }
        else if (!strcmp(a, "--scale")) {
            NEEDV();
            pre.scale = strtof(v, NULL);
            if (!(pre.scale > 0)) { rc = sl__cli_usage_error(cmd, "--scale must be a positive number"); goto out; }
            o.have_preproc = 1;
        } else if (!strcmp(a, "--interpolation")) {
            NEEDV();
            if (!strcmp(v, "bilinear")) pre.interp = SL_IMAGE_FILTER_BILINEAR;
            else if (!strcmp(v, "bicubic")) pre.interp = SL_IMAGE_FILTER_BICUBIC;
            else if (!strcmp(v, "area")) pre.interp = SL_IMAGE_FILTER_BOX;
            else if (!strcmp(v, "nearest")) pre.interp = SL_IMAGE_FILTER_NEAREST;
            else { rc = sl__cli_usage_error(cmd, "--interpolation must be bilinear, bicubic, area or nearest"); goto out; }
            o.have_preproc = 1;
        } else if (!strcmp(a, "--layout")) {
            NEEDV();
            if (!strcmp(v, "nchw")) pre.layout = SL_NN_LAYOUT_NCHW;
            else if (!strcmp(v, "nhwc")) pre.layout = SL_NN_LAYOUT_NHWC;
            else { rc = sl__cli_usage_error(cmd, "--layout must be nchw or nhwc"); goto out; }
            o.have_preproc = 1;
        }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--profile")) profile = 1;
        else if (a[0] == '-' && a[1]) { rc = sl__cli_usage_error(cmd, "unknown option '%s'", a); goto out; }
        else images[nimg++] = a;
#undef NEEDV
    }
    if (o.have_preproc) {
        /* flags given: the rest keeps its defaults, sized for the model's input */
        if (!resize_given) pre.resize = -1;
        if (!crop_given) pre.crop = 0;
        o.preproc = pre;
    }
    sl_error e;
    sl_error_clear(&e);
    sl_nn *m = NULL;
    if (!strcmp(sub, "run")) {
        if (!input || !outp) { rc = sl__cli_usage_error(cmd, "run needs --input X.npy and --out Y.npy"); goto out; }
        if (nimg) { rc = sl__cli_usage_error(cmd, "unexpected argument '%s'", images[0]); goto out; }
        if (!run_output_set) o.output = ""; /* the graph's first output */
    } else if ((!strcmp(sub, "embed") || !strcmp(sub, "preprocess")) && !nimg) {
        rc = sl__cli_usage_error(cmd, "%s needs at least one image", sub); goto out;
    } else if (!strcmp(sub, "preprocess") && !outp) {
        rc = sl__cli_usage_error(cmd, "preprocess needs --out X.npy"); goto out;
    } else if (!strcmp(sub, "info") && nimg) {
        rc = sl__cli_usage_error(cmd, "unexpected argument '%s'", images[0]); goto out;
    }
    if (sl_nn_load_opts(model, &o, &m, &e)) { rc = sl__cli_fail(cmd, &e); goto out; }
    if (!strcmp(sub, "info")) {
        char *t = NULL;
        if (sl_nn_info(m, &t, &e)) rc = sl__cli_fail(cmd, &e);
        else fputs(t, stdout);
        free(t);
    } else if (!strcmp(sub, "run")) {
        float *x = NULL;
        int64_t dims[8], od[8];
        int rank;
        size_t cnt;
        if (sl__npy_read(input, &x, dims, &rank, &cnt, &e)) { rc = sl__cli_fail(cmd, &e); goto done; }
        int64_t id[4];
        int ir = sl_nn_input_shape(m, id);
        int ok = rank == ir && dims[0] > 0;
        for (int d = 1; ok && d < ir; d++) ok = dims[d] == id[d];
        if (!ok) {
            sl__err_set(&e, SL_E_INVALID, "%s: shape does not match the model input", input);
            rc = sl__cli_fail(cmd, &e); free(x); goto done;
        }
        size_t batch = (size_t)dims[0];
        int orank = sl_nn_output_shape(m, batch, od);
        float *y = orank >= 0 ? sl__mallocarray(batch, sl_nn_embed_dim(m) * sizeof(float)) : NULL;
        if (!y) { sl__err_set(&e, SL_E_NOMEM, "out of memory"); rc = sl__cli_fail(cmd, &e); free(x); goto done; }
        if (profile) {
            char *t = NULL;
            if (sl__nn_profile(m, x, batch, y, repeat > 0 ? repeat : 10, &t, &e)) rc = sl__cli_fail(cmd, &e);
            else fputs(t, stderr);
            free(t);
            repeat = 0;
        }
        if (!rc && repeat > 0 && sl_nn_run(m, x, batch, y, &e)) rc = sl__cli_fail(cmd, &e); /* warm-up: plan */
        /* Wall and process CPU time (all threads) of each pass; best and mean are reported. */
        double t0 = sl__now(), best = 1e300, c0 = cpu_seconds(), cbest = 1e300;
        int reps = repeat > 0 ? repeat : 1;
        for (int r = 0; r < reps && !rc; r++) {
            double t1 = sl__now(), c1 = cpu_seconds();
            if (sl_nn_run(m, x, batch, y, &e)) rc = sl__cli_fail(cmd, &e);
            double dt = sl__now() - t1, dc = cpu_seconds() - c1;
            if (dt < best) best = dt;
            if (dc < cbest) cbest = dc;
        }
        double t = sl__now() - t0, c = cpu_seconds() - c0;
        if (!rc && repeat > 0)
            fprintf(stderr, "%d x batch %zu: %.3f ms per pass (best %.3f), %.2f images/s (best %.2f), "
                    "%.3f CPU ms per pass (best %.3f)\n", reps, batch, 1e3 * t / reps, 1e3 * best,
                    (double)batch * reps / t, (double)batch / best, 1e3 * c / reps, 1e3 * cbest);
        if (!rc && sl__npy_write(outp, y, od, orank, &e)) rc = sl__cli_fail(cmd, &e);
        free(x);
        free(y);
    } else {
        rc = embed_images(m, images, nimg, o.max_batch, json, !strcmp(sub, "preprocess") ? outp : NULL, max_side);
    }
done:
    sl_nn_free(m);
out:
    free(images);
    return rc;
}

const sl__cli_cmd sl__cmd_cnn = {"cnn", "inspect, run and embed with ONNX CNN models", usage, run};
