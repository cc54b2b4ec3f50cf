/*
 * bench/sift/vlfeat_sift.c - the VLFeat peer of bench/sift (Vedaldi & Fulkerson, VLFeat 0.9.x,
 * vl_sift): same images, same timing loop and feature files as bench/sift.c. Built by run.sh
 * with the system compiler against libvlfeat-dev (-lvl).
 *
 * usage: vlfeat_sift time DIR REPEATS        -> one JSON line {images, seconds, ips, kps}
 *        vlfeat_sift feat DIR TAG            -> DIR/pair_*.TAG.feat for every DIR/pair_*.pgm
 * Parameters: VLFeat defaults (first octave 0, 3 levels) with OpenCV's thresholds mapped to
 * VLFeat's units (peak 0.04/3 on [0,1] intensities, edge 10), so the three peers agree.
 */
#include <vl/sift.h>

#include "benchio.h"

static size_t run(const bimg *im, float **frames, float **desc) {
    size_t npx = (size_t)im->w * (size_t)im->h, n = 0, cap = 0;
    float *g = malloc(npx * sizeof(float));
    for (size_t i = 0; i < npx; i++) g[i] = (float)im->px[i] / 255.0f;
    VlSiftFilt *f = vl_sift_new(im->w, im->h, -1, 3, 0);
    vl_sift_set_peak_thresh(f, 0.04 / 3.0);
    vl_sift_set_edge_thresh(f, 10.0);
    float *fr = NULL, *de = NULL;
    int first = 1;
    for (;;) {
        int err = first ? vl_sift_process_first_octave(f, g) : vl_sift_process_next_octave(f);
        first = 0;
        if (err) break;
        vl_sift_detect(f);
        const VlSiftKeypoint *k = vl_sift_get_keypoints(f);
        int nk = vl_sift_get_nkeypoints(f);
        for (int i = 0; i < nk; i++) {
            double ang[4];
            int na = vl_sift_calc_keypoint_orientations(f, ang, &k[i]);
            for (int a = 0; a < na; a++) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 1024;
                    fr = realloc(fr, cap * 4 * sizeof(float));
                    de = realloc(de, cap * 128 * sizeof(float));
                    if (!fr || !de) exit(1);
                }
                vl_sift_calc_keypoint_descriptor(f, de + n * 128, &k[i], ang[a]);
                fr[4 * n] = k[i].x;
                fr[4 * n + 1] = k[i].y;
                fr[4 * n + 2] = k[i].sigma;
                fr[4 * n + 3] = (float)ang[a];
                n++;
            }
        }
    }
    vl_sift_delete(f);
    free(g);
    if (frames) *frames = fr; else free(fr);
    if (desc) *desc = de; else free(de);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s time DIR REPEATS | feat DIR TAG\n", argv[0]);
        return 2;
    }
    bimg *ims;
    if (strcmp(argv[1], "time") == 0) {
        int n = bio_load_dir(argv[2], "img_", &ims), reps = atoi(argv[3]);
        double best = 1e30, best_cpu = 1e30, kps = 0;
        for (int r = 0; r < reps; r++) {
            double t0 = bio_now(), c0 = bio_cpu();
            size_t tot = 0;
            for (int i = 0; i < n; i++) tot += run(&ims[i], NULL, NULL);
            double t = bio_now() - t0, c = bio_cpu() - c0;
            if (t < best) best = t;
            if (c < best_cpu) best_cpu = c;
            kps = (double)tot / n;
        }
        bio_free(ims, n);
        printf("{\"peer\": \"vlfeat\", \"threads\": 1, \"images\": %d, \"seconds\": %.4f, "
               "\"ips\": %.3f, \"cpu\": %.4f, \"kps\": %.1f}\n", n, best, n / best, best_cpu, kps);
    } else {
        int n = bio_load_dir(argv[2], "pair_", &ims);
        for (int i = 0; i < n; i++) {
            float *fr, *de;
            size_t k = run(&ims[i], &fr, &de);
            bio_write_feat(argv[2], ims[i].name, argv[3], k, fr, de);
            free(fr);
            free(de);
        }
        bio_free(ims, n);
    }
    return 0;
}
