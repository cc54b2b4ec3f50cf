/*
 * feature/color.c - joint HSV colour histogram, centre-weighted, Hellinger-normalized.
 *
 * The histogram follows the classic colour indexing of Swain & Ballard (IJCV 1991) in HSV, with
 * three choices that make it robust for product photos:
 *  - soft (trilinear) assignment over (H, S, V), hue circular, so a small colour shift moves mass
 *    between neighbouring bins instead of jumping;
 *  - achromatic pixels (saturation < low_sat) go to separate value-only bins: their hue is noise;
 *  - a Gaussian weight centred on the image (sigma in half-sides) so the product, which is usually
 *    centred, counts more than the background.
 * Normalization: L1 then element-wise square root (Hellinger kernel; Arandjelovic & Zisserman
 * 2012 use the same map for RootSIFT), so the result has unit L2 norm and a dot product is the
 * Bhattacharyya coefficient. With grid g > 1, g x g region histograms (unweighted) follow the
 * global one; every block is normalized alone and the whole vector scaled back to unit norm.
 * Invariants: output is finite, non-negative, unit L2 norm (or all zero for an empty image is
 * impossible: empty images are rejected). Deterministic, no allocation beyond one scratch array.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/feature.h"
#include "util/util.h"

void sl_color_params_init(sl_color_params *p) {
    p->hbins = SL_COLOR_BINS_DEFAULT_H;
    p->sbins = SL_COLOR_BINS_DEFAULT_S;
    p->vbins = SL_COLOR_BINS_DEFAULT_V;
    p->center_sigma = SL_COLOR_CENTER_DEFAULT;
    p->grid = SL_COLOR_GRID_DEFAULT;
    p->low_sat = 0.1f;
}

static int color_params_ok(const sl_color_params *p) {
    return p && p->hbins >= SL_COLOR_BINS_MIN && p->hbins <= SL_COLOR_BINS_MAX &&
           p->sbins >= SL_COLOR_BINS_MIN && p->sbins <= SL_COLOR_BINS_MAX &&
           p->vbins >= SL_COLOR_BINS_MIN && p->vbins <= SL_COLOR_BINS_MAX &&
           p->grid >= 1 && p->grid <= SL_COLOR_GRID_MAX &&
           p->center_sigma >= SL_COLOR_CENTER_MIN && p->low_sat >= 0.0f && p->low_sat < 1.0f &&
           !(p->center_sigma != p->center_sigma);
}

static size_t block_dim(const sl_color_params *p) {
    return (size_t)p->hbins * (size_t)p->sbins * (size_t)p->vbins + (size_t)p->vbins;
}

size_t sl_color_dim(const sl_color_params *p) {
    if (!color_params_ok(p)) return 0;
    size_t blocks = p->grid > 1 ? 1 + (size_t)p->grid * (size_t)p->grid : 1;
    return block_dim(p) * blocks;
}

/* Splits v in [0, n) (bin units, centres at i + 0.5) into two bins and weights; clamped ends. */
static void soft_lin(float v, int n, int *b0, int *b1, float *w1) {
    float t = v - 0.5f;
    if (t <= 0.0f) { *b0 = *b1 = 0; *w1 = 0.0f; return; }
    if (t >= (float)(n - 1)) { *b0 = *b1 = n - 1; *w1 = 0.0f; return; }
    int i = (int)t;
    *b0 = i; *b1 = i + 1; *w1 = t - (float)i;
}

/* A pixel's soft bins: achromatic (value bins only) or chromatic (2 x 2 x 2 HSV bins), with
 * the per-axis weights; computed once and added to the global and the region histogram. */
typedef struct pixel_bins {
    int achrom;
    int hs[2], ss[2], vs[2];
    float whs[2], wss[2], wvs[2];
} pixel_bins;

static void pixel_bins_of(const sl_color_params *p, const uint8_t *px, int channels,
                          pixel_bins *pb) {
    float r, g, b;
    if (channels >= 3) { r = px[0] / 255.0f; g = px[1] / 255.0f; b = px[2] / 255.0f; }
    else { r = g = b = px[0] / 255.0f; }
    float mx = r > g ? (r > b ? r : b) : (g > b ? g : b);
    float mn = r < g ? (r < b ? r : b) : (g < b ? g : b);
    float v = mx, d = mx - mn;
    float s = mx > 0.0f ? d / mx : 0.0f;
    int v0, v1; float wv;
    soft_lin(v * (float)p->vbins, p->vbins, &v0, &v1, &wv);
    pb->vs[0] = v0; pb->vs[1] = v1;
    pb->wvs[0] = 1.0f - wv; pb->wvs[1] = wv;
    pb->achrom = s < p->low_sat || d <= 0.0f;
    if (pb->achrom) return;
    float hue; /* [0, 6) */
    if (mx == r) hue = (g - b) / d;
    else if (mx == g) hue = 2.0f + (b - r) / d;
    else hue = 4.0f + (r - g) / d;
    if (hue < 0.0f) hue += 6.0f;
    float hb = hue / 6.0f * (float)p->hbins - 0.5f; /* circular */
    if (hb < 0.0f) hb += (float)p->hbins;
    int h0 = (int)hb;
    if (h0 >= p->hbins) h0 = p->hbins - 1;
    float wh = hb - (float)h0;
    int s0, s1; float ws;
    soft_lin(s * (float)p->sbins, p->sbins, &s0, &s1, &ws);
    pb->hs[0] = h0; pb->hs[1] = (h0 + 1) % p->hbins;
    pb->ss[0] = s0; pb->ss[1] = s1;
    pb->whs[0] = 1.0f - wh; pb->whs[1] = wh;
    pb->wss[0] = 1.0f - ws; pb->wss[1] = ws;
}

static void add_pixel(float *h, const sl_color_params *p, const pixel_bins *pb, float w) {
    if (pb->achrom) {
        size_t chrom = (size_t)p->hbins * (size_t)p->sbins * (size_t)p->vbins;
        h[chrom + (size_t)pb->vs[0]] += w * pb->wvs[0];
        h[chrom + (size_t)pb->vs[1]] += w * pb->wvs[1];
        return;
    }
    for (int a = 0; a < 2; a++)
        for (int c = 0; c < 2; c++)
            for (int e = 0; e < 2; e++) {
                size_t idx = ((size_t)pb->hs[a] * (size_t)p->sbins + (size_t)pb->ss[c]) *
                             (size_t)p->vbins + (size_t)pb->vs[e];
                h[idx] += w * pb->whs[a] * pb->wss[c] * pb->wvs[e];
            }
}

/* L1 -> sqrt; returns 1 when the block had mass. */
static int hellinger(float *h, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += h[i];
    if (!(sum > 0.0)) return 0;
    for (size_t i = 0; i < n; i++) h[i] = (float)sqrt(h[i] / sum);
    return 1;
}

sl_status sl_color_hist(const sl_image *img, const sl_color_params *p, float *out,
                        sl_error *err) {
    if (!img || !out) return sl__err_set(err, SL_E_INVALID, "color: NULL image or output");
    if (!color_params_ok(p))
        return sl__err_set(err, SL_E_INVALID, "color: parameters out of range (bins %d..%d, "
                           "grid 1..%d, centre sigma >= %.2f)", SL_COLOR_BINS_MIN,
                           SL_COLOR_BINS_MAX, SL_COLOR_GRID_MAX, (double)SL_COLOR_CENTER_MIN);
    int w = sl_image_width(img), hgt = sl_image_height(img), ch = sl_image_channels(img);
    if (w <= 0 || hgt <= 0) return sl__err_set(err, SL_E_INVALID, "color: empty image");
    const uint8_t *pix = sl_image_cpixels(img);
    size_t stride = sl_image_stride(img);
    size_t bd = block_dim(p), dim = sl_color_dim(p);
    memset(out, 0, dim * sizeof *out);
    int side = w > hgt ? w : hgt;
    int step = (side + 255) / 256;
    int g = p->grid;
    float cx = (float)(w - 1) * 0.5f, cy = (float)(hgt - 1) * 0.5f;
    float hx = w > 1 ? (float)w * 0.5f : 1.0f, hy = hgt > 1 ? (float)hgt * 0.5f : 1.0f;
    int weighted = p->center_sigma < SL_COLOR_CENTER_MAX;
    float inv2s2 = 1.0f / (2.0f * p->center_sigma * p->center_sigma);
    /* the Gaussian weight is separable: one exp per sampled column and one per row (at most
     * 256 columns are sampled: step = ceil(side / 256)) */
    float wcol[257];
    for (int x = step / 2, i = 0; x < w && i < 257; x += step, i++) {
        float dx = ((float)x - cx) / hx;
        wcol[i] = weighted ? expf(-(dx * dx) * inv2s2) : 1.0f;
    }
    for (int y = step / 2; y < hgt; y += step) {
        const uint8_t *row = pix + (size_t)y * stride;
        float dy = ((float)y - cy) / hy;
        float wrow = weighted ? expf(-(dy * dy) * inv2s2) : 1.0f;
        int gy = g > 1 ? (int)((int64_t)y * g / hgt) : 0;
        for (int x = step / 2, i = 0; x < w; x += step, i++) {
            const uint8_t *px = row + (size_t)x * (size_t)ch;
            float wt = wrow * wcol[i];
            pixel_bins pb;
            pixel_bins_of(p, px, ch, &pb);
            add_pixel(out, p, &pb, wt);
            if (g > 1) {
                int gx = (int)((int64_t)x * g / w);
                add_pixel(out + bd * (size_t)(1 + gy * g + gx), p, &pb, 1.0f);
            }
        }
    }
    size_t blocks = dim / bd, live = 0;
    for (size_t b = 0; b < blocks; b++) live += (size_t)hellinger(out + b * bd, bd);
    if (live > 1) {
        float sc = 1.0f / sqrtf((float)live);
        for (size_t i = 0; i < dim; i++) out[i] *= sc;
    }
    return SL_OK;
}
