/*
 * bench/sift.c - shoplens SIFT for bench/sift/run.sh (built as bench_sift with BUILD_BENCH):
 * times sl_sift_extract_grey (including the 8-bit -> float conversion) over the PGM images
 * that bench/sift/peer.py prepared, and writes features of the homography pairs for the
 * matching evaluation. The peers (OpenCV, VLFeat) run the same loop on the same pixels.
 *
 * usage: bench_sift time DIR REPEATS THREADS UPSAMPLE  -> one JSON line
 *        bench_sift feat DIR TAG UPSAMPLE              -> DIR/pair_*.TAG.feat
 */
#include "shoplens/feature.h"
#include "feature/sift/sift_internal.h"

#include "sift/benchio.h"

static size_t run(const bimg *im, const sl_sift_params *p, float **frames, float **desc) {
    size_t npx = (size_t)im->w * (size_t)im->h, n = 0;
    float *g = malloc(npx * sizeof(float));
    if (!g) exit(1);
    for (size_t i = 0; i < npx; i++) g[i] = (float)im->px[i] * (1.0f / 255.0f);
    sl_keypoint *k;
    float *d;
    sl_error e;
    if (sl_sift_extract_grey(g, im->w, im->h, (size_t)im->w, p, &k, &d, &n, &e) != SL_OK) {
        fprintf(stderr, "sift: %s\n", e.message);
        exit(1);
    }
    free(g);
    if (frames) {
        float *fr = malloc((n ? n : 1) * 4 * sizeof(float));
        if (!fr) exit(1);
        for (size_t i = 0; i < n; i++) {
            fr[4 * i] = k[i].x;
            fr[4 * i + 1] = k[i].y;
            fr[4 * i + 2] = k[i].scale;
            fr[4 * i + 3] = k[i].angle;
        }
        *frames = fr;
        *desc = d;
    } else {
        free(d);
    }
    free(k);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s time DIR REPEATS THREADS UPSAMPLE | feat DIR TAG UPSAMPLE\n",
                argv[0]);
        return 2;
    }
    sl_sift_params p;
    sl_sift_params_init(&p);
    /* experiments: SIFT_CONTRAST, SIFT_EDGE, SIFT_INPUT_SIGMA, SIFT_SIGMA override defaults */
    if (getenv("SIFT_CONTRAST")) p.contrast_threshold = (float)atof(getenv("SIFT_CONTRAST"));
    if (getenv("SIFT_EDGE")) p.edge_threshold = (float)atof(getenv("SIFT_EDGE"));
    if (getenv("SIFT_INPUT_SIGMA")) p.input_sigma = (float)atof(getenv("SIFT_INPUT_SIGMA"));
    if (getenv("SIFT_SIGMA")) p.sigma = (float)atof(getenv("SIFT_SIGMA"));
    bimg *ims;
    if (strcmp(argv[1], "time") == 0 && argc >= 6) {
        int n = bio_load_dir(argv[2], "img_", &ims), reps = atoi(argv[3]);
        p.threads = atoi(argv[4]);
        p.upsample = atoi(argv[5]);
        double best = 1e30, best_cpu = 1e30, kps = 0;
        for (int r = 0; r < reps; r++) {
            double t0 = bio_now(), c0 = bio_cpu();
            size_t tot = 0;
            for (int i = 0; i < n; i++) tot += run(&ims[i], &p, NULL, NULL);
            double t = bio_now() - t0, c = bio_cpu() - c0;
            if (t < best) best = t;
            if (c < best_cpu) best_cpu = c;
            kps = (double)tot / n;
        }
        bio_free(ims, n);
        printf("{\"peer\": \"shoplens%s\", \"threads\": %d, \"images\": %d, \"seconds\": %.4f, "
               "\"ips\": %.3f, \"cpu\": %.4f, \"kps\": %.1f, \"kernels\": \"%s\"}\n",
               p.upsample ? "-upsample" : "", p.threads, n, best, n / best, best_cpu, kps,
               sl__sift_kernels_name());
    } else {
        int n = bio_load_dir(argv[2], "pair_", &ims);
        p.upsample = atoi(argv[4]);
        for (int i = 0; i < n; i++) {
            float *fr, *de;
            size_t k = run(&ims[i], &p, &fr, &de);
            bio_write_feat(argv[2], ims[i].name, argv[3], k, fr, de);
            free(fr);
            free(de);
        }
        bio_free(ims, n);
    }
    return 0;
}
