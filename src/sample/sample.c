/*
 * sample/sample.c - the built-in sample universe: product metadata, catalog images and shopper
 * photos drawn deterministically from (seed, product, view/variant).
 *
 * A product is a category silhouette (a short list of primitives in the object's unit square,
 * u right, v down) wearing a product-specific "design" texture: base colour and pattern, a label
 * with the brand name and a product code in the built-in bitmap font, a barcode, a logo and a few
 * decor shapes, all drawn from the product's own random stream. The design is what makes two
 * products of the same category tell apart by local features (SIFT) and colour.
 * Rendering maps every output pixel through a homography H (output -> unit square), evaluates the
 * silhouette there and samples the design bilinearly; outside the object the background (plain or
 * cluttered with random shapes) shows. Shopper photos use a random perspective quad, then lighting
 * gain/gradient/colour cast, Gaussian blur, noise and a JPEG round trip (sl_image_* augmentations).
 * Invariants: the same (seed, product, view|variant, size) gives bit-identical pixels on every
 * machine (xoshiro stream per purpose, bitmap font, no system fonts or libc rand).
 */
#include "shoplens/sample.h"
#include "sample/draw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the universe's vocabulary ---------------------------------------------------------- */

typedef enum { SL__MAT_TEX = 0, SL__MAT_ACCENT, SL__MAT_METAL, SL__MAT_DARK, SL__MAT_PAPER, SL__MAT_INNER } sl__mat;
typedef enum { SL__PRIM_RECT = 0, SL__PRIM_ELLIPSE, SL__PRIM_POLY } sl__primkind;

typedef struct {
    sl__primkind kind;
    int subtract;   /* 1: makes the area outside the object again */
    sl__mat mat;
    double shade;   /* constant brightness factor (1 = none) */
    int n;          /* polygon vertices */
    double p[20];   /* rect x0 y0 x1 y1 | ellipse cx cy rx ry | polygon x y ... */
} sl__prim;

typedef struct {
    const char *name, *noun;
    double aspect;          /* object width / height */
    double cyl0, cyl1;      /* u range of cylinder shading (cyl1 <= cyl0: none) */
    double label[4];        /* label rect in unit coordinates */
    double price_lo, price_hi;
    const char *material;
    int nprim;
    sl__prim prim[8];
} sl__category;

static const sl__category sl__cats[] = {
    { "mugs", "mug", 1.15, 0.0, 0.78, { 0.08, 0.28, 0.70, 0.80 }, 6, 24, "glazed ceramic", 5, {
        { SL__PRIM_ELLIPSE, 0, SL__MAT_ACCENT, 0.9, 0, { 0.80, 0.50, 0.20, 0.28 } },
        { SL__PRIM_ELLIPSE, 1, SL__MAT_TEX, 1, 0, { 0.80, 0.50, 0.11, 0.17 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_TEX, 1, 0, { 0.39, 0.96, 0.39, 0.04 } },
        { SL__PRIM_RECT, 0, SL__MAT_TEX, 1, 0, { 0.0, 0.06, 0.78, 0.96 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_INNER, 1, 0, { 0.39, 0.06, 0.39, 0.05 } } } },
    { "bottles", "bottle", 0.42, 0.0, 1.0, { 0.04, 0.42, 0.96, 0.86 }, 3, 30, "recyclable plastic", 5, {
        { SL__PRIM_RECT, 0, SL__MAT_ACCENT, 1, 0, { 0.36, 0.0, 0.64, 0.09 } },
        { SL__PRIM_RECT, 0, SL__MAT_TEX, 1, 0, { 0.40, 0.09, 0.60, 0.21 } },
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 1, 4, { 0.40, 0.20, 0.60, 0.20, 1.0, 0.34, 0.0, 0.34 } },
        { SL__PRIM_RECT, 0, SL__MAT_TEX, 1, 0, { 0.0, 0.34, 1.0, 0.97 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_TEX, 1, 0, { 0.5, 0.97, 0.5, 0.03 } } } },
    { "cans", "can", 0.62, 0.0, 1.0, { 0.0, 0.22, 1.0, 0.80 }, 1, 6, "aluminium", 3, {
        { SL__PRIM_ELLIPSE, 0, SL__MAT_METAL, 1, 0, { 0.5, 0.94, 0.5, 0.06 } },
        { SL__PRIM_RECT, 0, SL__MAT_TEX, 1, 0, { 0.0, 0.06, 1.0, 0.94 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_METAL, 1.1, 0, { 0.5, 0.06, 0.5, 0.06 } } } },
    { "boxes", "box", 0.78, 0.0, 0.0, { 0.06, 0.22, 0.80, 0.78 }, 2, 15, "recycled cardboard", 3, {
        { SL__PRIM_RECT, 0, SL__MAT_TEX, 1, 0, { 0.0, 0.08, 0.86, 1.0 } },
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 0.72, 4, { 0.86, 0.08, 1.0, 0.0, 1.0, 0.92, 0.86, 1.0 } },
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 1.15, 4, { 0.0, 0.08, 0.14, 0.0, 1.0, 0.0, 0.86, 0.08 } } } },
    { "books", "book", 0.70, 0.0, 0.0, { 0.14, 0.12, 0.94, 0.60 }, 8, 40, "paperback", 3, {
        { SL__PRIM_RECT, 0, SL__MAT_TEX, 1, 0, { 0.07, 0.0, 1.0, 0.97 } },
        { SL__PRIM_RECT, 0, SL__MAT_ACCENT, 0.7, 0, { 0.0, 0.0, 0.07, 0.97 } },
        { SL__PRIM_RECT, 0, SL__MAT_PAPER, 1, 0, { 0.07, 0.97, 1.0, 1.0 } } } },
    { "t-shirts", "t-shirt", 1.0, 0.0, 0.0, { 0.30, 0.22, 0.70, 0.62 }, 9, 35, "organic cotton", 2, {
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 1, 10, { 0.32, 0.04, 0.68, 0.04, 1.0, 0.22, 0.88, 0.40, 0.78, 0.34,
                                                  0.78, 1.0, 0.22, 1.0, 0.22, 0.34, 0.12, 0.40, 0.0, 0.22 } },
        { SL__PRIM_ELLIPSE, 1, SL__MAT_TEX, 1, 0, { 0.5, 0.04, 0.11, 0.08 } } } },
    { "shoes", "shoe", 1.9, 0.0, 0.0, { 0.18, 0.42, 0.70, 0.78 }, 30, 120, "leather and mesh", 2, {
        { SL__PRIM_POLY, 0, SL__MAT_DARK, 1, 4, { 0.0, 0.82, 1.0, 0.82, 0.98, 1.0, 0.02, 1.0 } },
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 1, 8, { 0.02, 0.82, 0.02, 0.30, 0.12, 0.18, 0.35, 0.24, 0.55, 0.44,
                                                 0.85, 0.54, 0.97, 0.64, 1.0, 0.82 } } } },
    { "bags", "bag", 0.90, 0.0, 0.0, { 0.16, 0.45, 0.84, 0.90 }, 12, 90, "canvas", 3, {
        { SL__PRIM_ELLIPSE, 0, SL__MAT_ACCENT, 1, 0, { 0.5, 0.30, 0.28, 0.30 } },
        { SL__PRIM_ELLIPSE, 1, SL__MAT_TEX, 1, 0, { 0.5, 0.30, 0.22, 0.25 } },
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 1, 4, { 0.08, 0.30, 0.92, 0.30, 1.0, 1.0, 0.0, 1.0 } } } },
    { "caps", "cap", 1.35, 0.0, 0.0, { 0.20, 0.25, 0.66, 0.58 }, 7, 30, "twill", 4, {
        { SL__PRIM_ELLIPSE, 0, SL__MAT_ACCENT, 0.85, 0, { 0.74, 0.66, 0.26, 0.08 } },
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 1, 10, { 0.07, 0.64, 0.10, 0.38, 0.20, 0.18, 0.34, 0.09, 0.45, 0.07,
                                                  0.56, 0.09, 0.70, 0.18, 0.80, 0.38, 0.83, 0.64, 0.45, 0.68 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_ACCENT, 1, 0, { 0.45, 0.06, 0.05, 0.03 } },
        { SL__PRIM_RECT, 0, SL__MAT_DARK, 1, 0, { 0.07, 0.64, 0.83, 0.68 } } } },
    { "lamps", "lamp", 0.70, 0.0, 1.0, { 0.12, 0.10, 0.88, 0.40 }, 20, 150, "steel and linen", 3, {
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 1, 4, { 0.22, 0.0, 0.78, 0.0, 1.0, 0.45, 0.0, 0.45 } },
        { SL__PRIM_RECT, 0, SL__MAT_METAL, 1, 0, { 0.46, 0.45, 0.54, 0.90 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_METAL, 0.9, 0, { 0.5, 0.93, 0.32, 0.07 } } } },
    { "vases", "vase", 0.55, 0.0, 1.0, { 0.10, 0.35, 0.90, 0.75 }, 10, 80, "hand-made stoneware", 1, {
        { SL__PRIM_POLY, 0, SL__MAT_TEX, 1, 10, { 0.30, 0.0, 0.70, 0.0, 0.66, 0.10, 0.95, 0.45, 0.90, 0.80,
                                                  0.70, 1.0, 0.30, 1.0, 0.10, 0.80, 0.05, 0.45, 0.34, 0.10 } } } },
    { "phone cases", "phone case", 0.50, 0.0, 0.0, { 0.10, 0.30, 0.90, 0.85 }, 8, 45, "shock-proof silicone", 8, {
        { SL__PRIM_RECT, 0, SL__MAT_TEX, 1, 0, { 0.12, 0.0, 0.88, 1.0 } },
        { SL__PRIM_RECT, 0, SL__MAT_TEX, 1, 0, { 0.0, 0.06, 1.0, 0.94 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_TEX, 1, 0, { 0.12, 0.06, 0.12, 0.06 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_TEX, 1, 0, { 0.88, 0.06, 0.12, 0.06 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_TEX, 1, 0, { 0.12, 0.94, 0.12, 0.06 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_TEX, 1, 0, { 0.88, 0.94, 0.12, 0.06 } },
        { SL__PRIM_RECT, 0, SL__MAT_DARK, 1, 0, { 0.10, 0.04, 0.42, 0.18 } },
        { SL__PRIM_ELLIPSE, 0, SL__MAT_METAL, 1, 0, { 0.26, 0.11, 0.07, 0.035 } } } },
};
#define SL__NCATS ((int)(sizeof sl__cats / sizeof sl__cats[0]))

static const struct { const char *name; sl__rgb c; } sl__colours[] = {
    { "red", { 200, 30, 40 } },    { "blue", { 30, 70, 190 } },    { "green", { 40, 150, 60 } },
    { "yellow", { 240, 200, 30 } }, { "orange", { 240, 120, 20 } }, { "purple", { 120, 50, 160 } },
    { "pink", { 240, 120, 170 } }, { "black", { 30, 30, 35 } },    { "white", { 235, 235, 230 } },
    { "grey", { 130, 130, 135 } }, { "brown", { 120, 75, 40 } },   { "teal", { 20, 140, 140 } },
    { "navy", { 20, 30, 90 } },    { "lime", { 150, 210, 40 } },
};
#define SL__NCOLOURS ((int)(sizeof sl__colours / sizeof sl__colours[0]))

static const char *const sl__patterns[] = { "plain", "striped", "dotted", "checked", "zigzag", "diagonal-striped" };
static const char *const sl__pattern_desc[] = {
    "a plain finish", "bold stripes", "a polka-dot print", "a checked pattern", "a zigzag print",
    "diagonal stripes" };
#define SL__NPATTERNS 6
static const char *const sl__syll[] = { "KO", "VA", "ZEN", "TRO", "LU", "MI", "RA", "SO", "BEX", "DAL",
                                        "NOR", "PI", "QUA", "TEK", "YU", "FEL", "GOR", "HAN", "JO", "WIK" };
static const char *const sl__tags[] = { "ORIGINAL", "CLASSIC", "PREMIUM", "ORGANIC", "SPORT", "ULTRA",
                                        "DELUXE", "FRESH", "LIGHT", "PRO" };

int sl_sample_category_count(void) { return SL__NCATS; }
const char *sl_sample_category(int i) { return i >= 0 && i < SL__NCATS ? sl__cats[i].name : NULL; }

/* ---- the product's random choices -------------------------------------------------------- */

enum { SL__STREAM_META = 1, SL__STREAM_DESIGN = 2, SL__STREAM_VIEW = 3, SL__STREAM_PHOTO = 4, SL__STREAM_BG = 5 };

static uint64_t sl__mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
static void sl__stream(sl__rng *r, uint64_t seed, uint32_t product, int stream, uint32_t k) {
    sl__rng_seed(r, sl__mix(sl__mix(sl__mix(seed) ^ product) ^ ((uint64_t)stream << 32 | k)));
}
static double sl__uni(sl__rng *r, double lo, double hi) { return lo + (hi - lo) * sl__rng_uniform(r); }
static int sl__pick(sl__rng *r, int n) { return (int)sl__rng_below(r, (uint64_t)n); }

typedef struct {
    int cat, colour, accent, pattern, tag;
    char brand[16], code[16];
    double price;
} sl__spec;

static void sl__spec_of(uint64_t seed, uint32_t product, sl__spec *s) {
    sl__rng r;
    sl__stream(&r, seed, product, SL__STREAM_META, 0);
    /* categories rotate so that any N consecutive products cover them evenly */
    s->cat = (int)((product + (uint32_t)(sl__mix(seed) % SL__NCATS)) % SL__NCATS);
    s->colour = sl__pick(&r, SL__NCOLOURS);
    s->accent = (s->colour + 1 + sl__pick(&r, SL__NCOLOURS - 1)) % SL__NCOLOURS;
    s->pattern = sl__pick(&r, SL__NPATTERNS);
    s->tag = sl__pick(&r, (int)(sizeof sl__tags / sizeof sl__tags[0]));
    int ns = 2 + sl__pick(&r, 2);
    s->brand[0] = '\0';
    for (int i = 0; i < ns; i++) {
        const char *sy = sl__syll[sl__pick(&r, (int)(sizeof sl__syll / sizeof sl__syll[0]))];
        if (strlen(s->brand) + strlen(sy) < sizeof s->brand) strcat(s->brand, sy);
    }
    snprintf(s->code, sizeof s->code, "%c%u-%03u", 'A' + sl__pick(&r, 26), (unsigned)(product % 100),
             (unsigned)sl__pick(&r, 1000));
    const sl__category *c = &sl__cats[s->cat];
    double p = sl__uni(&r, c->price_lo, c->price_hi);
    s->price = floor(p) + (sl__pick(&r, 2) ? 0.99 : 0.49);
}

static void sl__lower(char *d, size_t n, const char *s) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) d[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
    d[i] = '\0';
}

sl_status sl_sample_product_info(uint64_t seed, uint32_t product, sl_sample_product *out) {
    if (!out) return SL_E_INVALID;
    memset(out, 0, sizeof *out);
    sl__spec s;
    sl__spec_of(seed, product, &s);
    const sl__category *c = &sl__cats[s.cat];
    char brand[16];
    sl__lower(brand, sizeof brand, s.brand);
    brand[0] = s.brand[0];
    char colour[16];
    snprintf(colour, sizeof colour, "%s", sl__colours[s.colour].name);
    colour[0] = (char)(colour[0] - 'a' + 'A');
    snprintf(out->id, sizeof out->id, "P%06u", (unsigned)product);
    if (s.pattern == 0)
        snprintf(out->title, sizeof out->title, "%s %s '%s'", colour, c->noun, brand);
    else
        snprintf(out->title, sizeof out->title, "%s %s %s '%s'", colour, sl__patterns[s.pattern], c->noun, brand);
    snprintf(out->category, sizeof out->category, "%s", c->name);
    snprintf(out->description, sizeof out->description,
             "A %s %s with %s and the %s %s label, %s accents (model %s). Made of %s.",
             sl__colours[s.colour].name, c->noun, sl__pattern_desc[s.pattern], brand,
             sl__tags[s.tag], sl__colours[s.accent].name, s.code, c->material);
    out->price = s.price;
    return SL_OK;
}

/* ---- the design texture ----------------------------------------------------------------- */

static sl__rgb sl__mul(sl__rgb c, double f) {
    sl__rgb o = { sl__clamp_u8(c.r * f), sl__clamp_u8(c.g * f), sl__clamp_u8(c.b * f) };
    return o;
}
static sl__rgb sl__contrast_of(sl__rgb c) {
    int y = (299 * c.r + 587 * c.g + 114 * c.b) / 1000;
    sl__rgb dark = { 20, 20, 25 }, light = { 250, 250, 245 };
    return y > 140 ? dark : light;
}

/* Draws the product's design on a tw x th texture covering the object's unit square. */
static sl_image *sl__design(uint64_t seed, uint32_t product, const sl__spec *s, int *tw, int *th) {
    const sl__category *c = &sl__cats[s->cat];
    int H = 320, W = (int)(H * c->aspect + 0.5);
    sl_image *t = sl_image_new(W, H, 3);
    if (!t) return NULL;
    sl__rng r;
    sl__stream(&r, seed, product, SL__STREAM_DESIGN, 0);
    sl__rgb base = sl__colours[s->colour].c, acc = sl__colours[s->accent].c;
    sl__draw_rect(t, 0, 0, W, H, base);
    double period = sl__uni(&r, 14, 36);
    switch (s->pattern) {
    case 1: /* stripes */
        for (double y = sl__uni(&r, 0, period); y < H; y += period) sl__draw_rect(t, 0, y, W, y + period * 0.45, acc);
        break;
    case 2: /* dots */
        for (int gy = 0; gy * period < H + period; gy++)
            for (int gx = 0; gx * period < W + period; gx++)
                sl__draw_ellipse(t, gx * period + (gy % 2) * period / 2, gy * period, period * 0.28, period * 0.28, acc);
        break;
    case 3: /* checks */
        for (int gy = 0; gy * period < H; gy++)
            for (int gx = 0; gx * period < W; gx++)
                if ((gx + gy) % 2) sl__draw_rect(t, gx * period, gy * period, (gx + 1) * period, (gy + 1) * period, acc);
        break;
    case 4: /* zigzag band pattern */
        for (double y = 0; y < H + period; y += period * 1.6)
            for (double x = -period; x < W + period; x += period) {
                double z[8] = { x, y, x + period / 2, y + period * 0.6, x + period, y,
                                x + period / 2, y + period * 0.3 };
                sl__draw_polygon(t, z, 4, acc);
            }
        break;
    case 5: /* diagonal stripes */
        for (double x = -H; x < W + H; x += period) {
            double d[8] = { x, 0, x + period * 0.45, 0, x + period * 0.45 + H, H, x + H, H };
            sl__draw_polygon(t, d, 4, acc);
        }
        break;
    default: break;
    }
    /* decor: product-specific shapes anywhere on the design, random polygons among them, so
     * that local features differ between products even where text and pattern look alike */
    int nd = 8 + sl__pick(&r, 8);
    for (int i = 0; i < nd; i++) {
        sl__rgb dc = sl__colours[sl__pick(&r, SL__NCOLOURS)].c;
        double x = sl__uni(&r, 0, W), y = sl__uni(&r, 0, H), sz = sl__uni(&r, 6, 26);
        switch (sl__pick(&r, 4)) {
        case 0: sl__draw_ellipse(t, x, y, sz, sz * sl__uni(&r, 0.5, 1.0), dc); break;
        case 1: sl__draw_rect(t, x - sz, y - sz * 0.6, x + sz, y + sz * 0.6, dc); break;
        case 2: {
            double tri[6] = { x, y - sz, x + sz, y + sz, x - sz, y + sz };
            sl__draw_polygon(t, tri, 3, dc);
            break;
        }
        default: {
            double q[16];
            int nv = 4 + sl__pick(&r, 5);
            for (int k = 0; k < nv; k++) {
                double ang = k * 2 * M_PI / nv + sl__uni(&r, -0.3, 0.3), rr = sz * sl__uni(&r, 0.5, 1.6);
                q[2 * k] = x + rr * cos(ang);
                q[2 * k + 1] = y + rr * sin(ang);
            }
            sl__draw_polygon(t, q, nv, dc);
        }
        }
    }
    /* label: panel, brand, tag line, code, barcode, logo */
    double lx0 = c->label[0] * W, ly0 = c->label[1] * H, lx1 = c->label[2] * W, ly1 = c->label[3] * H;
    int panel = sl__pick(&r, 3) != 0;
    sl__rgb pc = panel ? (sl__pick(&r, 2) ? (sl__rgb){ 245, 242, 230 } : sl__mul(acc, 0.5)) : base;
    if (panel) sl__draw_rect(t, lx0, ly0, lx1, ly1, pc);
    sl__rgb ink = sl__contrast_of(pc);
    if (!panel) ink = sl__contrast_of(base);
    double lw = lx1 - lx0, lh = ly1 - ly0;
    int bs = (int)(lw * 0.9 / (sl__text_width(s->brand, 1) + 1));
    if (bs > (int)(lh / 3.0 / 7)) bs = (int)(lh / 3.0 / 7);
    if (bs < 1) bs = 1;
    int bw = sl__text_width(s->brand, bs);
    double y = ly0 + lh * 0.08;
    sl__draw_text(t, (int)(lx0 + (lw - bw) / 2), (int)y, bs, s->brand, ink);
    y += 7 * bs + bs * 2;
    int ts = bs / 2 > 1 ? bs / 2 : 1;
    const char *tag = sl__tags[s->tag];
    sl__draw_text(t, (int)(lx0 + (lw - sl__text_width(tag, ts)) / 2), (int)y, ts, tag, sl__mul(acc, 0.8));
    y += 7 * ts + ts * 2;
    int cs = ts > 1 ? ts - (ts > 2) : 1;
    sl__draw_text(t, (int)(lx0 + lw * 0.06), (int)y, cs, s->code, ink);
    /* logo: a ring or a diamond with a contrasting core, right of the code */
    double lgx = lx1 - lw * 0.16, lgy = y + 3.5 * cs, lr = fmin(lw * 0.1, lh * 0.12);
    if (sl__pick(&r, 2)) {
        sl__draw_ellipse(t, lgx, lgy, lr, lr, acc);
        sl__draw_ellipse(t, lgx, lgy, lr * 0.5, lr * 0.5, ink);
    } else {
        double dmd[8] = { lgx, lgy - lr, lgx + lr, lgy, lgx, lgy + lr, lgx - lr, lgy };
        sl__draw_polygon(t, dmd, 4, acc);
        sl__draw_rect(t, lgx - lr * 0.3, lgy - lr * 0.3, lgx + lr * 0.3, lgy + lr * 0.3, ink);
    }
    y += 7 * cs + cs * 3;
    /* barcode from the product's stream: bar widths 1..3 px, in the remaining label height */
    double by1 = fmin(ly1 - lh * 0.05, y + lh * 0.25);
    if (by1 - y > 6) {
        double x = lx0 + lw * 0.08, xe = lx0 + lw * 0.6;
        for (int bar = 0; x < xe; bar++) {
            double bwid = 1 + sl__pick(&r, 3);
            if (bar % 2 == 0) sl__draw_rect(t, x, y, x + bwid, by1, ink);
            x += bwid;
        }
    }
    *tw = W;
    *th = H;
    return t;
}

/* ---- backgrounds ------------------------------------------------------------------------ */

static void sl__background(sl_image *img, sl__rng *r, int clutter, sl__rgb plain) {
    int w = img->width, h = img->height;
    if (!clutter) {
        sl__draw_rect(img, 0, 0, w, h, plain);
        return;
    }
    /* a surface (table) and a wall of two tones, then random objects */
    sl__rgb wall = { (uint8_t)sl__uni(r, 120, 230), (uint8_t)sl__uni(r, 110, 220), (uint8_t)sl__uni(r, 100, 210) };
    sl__rgb table = { (uint8_t)sl__uni(r, 60, 180), (uint8_t)sl__uni(r, 50, 150), (uint8_t)sl__uni(r, 30, 120) };
    double horizon = sl__uni(r, 0.45, 0.75) * h;
    for (int y = 0; y < h; y++) {
        double f = y < horizon ? 0.85 + 0.15 * y / horizon : 0.8 + 0.2 * (y - horizon) / (h - horizon + 1);
        sl__draw_rect(img, 0, y, w, y + 1, sl__mul(y < horizon ? wall : table, f));
    }
    int n = 12 + sl__pick(r, 14);
    double unit = (w < h ? w : h) / 10.0;
    for (int i = 0; i < n; i++) {
        sl__rgb c = sl__mul(sl__colours[sl__pick(r, SL__NCOLOURS)].c, sl__uni(r, 0.6, 1.1));
        double x = sl__uni(r, -unit, w + unit), y = sl__uni(r, -unit, h + unit), s = sl__uni(r, 0.3, 2.2) * unit;
        switch (sl__pick(r, 4)) {
        case 0: sl__draw_rect(img, x, y, x + s * sl__uni(r, 0.5, 2), y + s * sl__uni(r, 0.3, 1.5), c); break;
        case 1: sl__draw_ellipse(img, x, y, s, s * sl__uni(r, 0.4, 1), c); break;
        case 2: { /* a thin line (cable, edge) */
            double a = sl__uni(r, 0, M_PI), l = s * 3, th2 = sl__uni(r, 1, 4);
            double q[8] = { x, y, x + l * cos(a), y + l * sin(a), x + l * cos(a) + th2 * sin(a),
                            y + l * sin(a) - th2 * cos(a), x + th2 * sin(a), y - th2 * cos(a) };
            sl__draw_polygon(img, q, 4, c);
            break;
        }
        default: {
            double q[8];
            for (int k = 0; k < 4; k++) {
                double a = k * M_PI / 2 + sl__uni(r, -0.5, 0.5), rr = s * sl__uni(r, 0.5, 1.2);
                q[2 * k] = x + rr * cos(a);
                q[2 * k + 1] = y + rr * sin(a);
            }
            sl__draw_polygon(img, q, 4, c);
        }
        }
    }
}

/* ---- rendering -------------------------------------------------------------------------- */

/* Homography h (row-major, h[8] = 1) with h * p_i ~ q_i for four point pairs; -1 if singular. */
static int sl__homography(const double p[8], const double q[8], double h[9]) {
    double a[8][9];
    for (int i = 0; i < 4; i++) {
        double x = p[2 * i], y = p[2 * i + 1], u = q[2 * i], v = q[2 * i + 1];
        double r1[9] = { x, y, 1, 0, 0, 0, -x * u, -y * u, u };
        double r2[9] = { 0, 0, 0, x, y, 1, -x * v, -y * v, v };
        memcpy(a[2 * i], r1, sizeof r1);
        memcpy(a[2 * i + 1], r2, sizeof r2);
    }
    for (int col = 0; col < 8; col++) {
        int piv = col;
        for (int rr = col + 1; rr < 8; rr++)
            if (fabs(a[rr][col]) > fabs(a[piv][col])) piv = rr;
        if (fabs(a[piv][col]) < 1e-12) return -1;
        for (int k = 0; k < 9; k++) { double t = a[col][k]; a[col][k] = a[piv][k]; a[piv][k] = t; }
        for (int rr = 0; rr < 8; rr++) {
            if (rr == col) continue;
            double f = a[rr][col] / a[col][col];
            for (int k = col; k < 9; k++) a[rr][k] -= f * a[col][k];
        }
    }
    for (int i = 0; i < 8; i++) h[i] = a[i][8] / a[i][i];
    h[8] = 1;
    return 0;
}

/* sin(pi t) for t in [0, 1], Bhaskara I's rational approximation (error < 0.002): cheap and
 * the same on every machine. */
static double sl__sinpi(double t) {
    double q = t * (1 - t);
    return 16 * q / (5 - 4 * q);
}

static int sl__prim_hit(const sl__prim *p, double u, double v) {
    switch (p->kind) {
    case SL__PRIM_RECT: return u >= p->p[0] && u < p->p[2] && v >= p->p[1] && v < p->p[3];
    case SL__PRIM_ELLIPSE: {
        double du = (u - p->p[0]) / p->p[2], dv = (v - p->p[1]) / p->p[3];
        return p->p[2] > 0 && du * du + dv * dv < 1;
    }
    case SL__PRIM_POLY: return sl__in_polygon(p->p, p->n, u, v);
    }
    return 0;
}

/* Draws the object whose unit square has corners quad[8] (in output pixels, order TL TR BR BL)
 * over img. */
static sl_status sl__render_object(sl_image *img, const sl__spec *s, const sl_image *tex,
                                   const double quad[8], sl_error *err) {
    static const double unit[8] = { 0, 0, 1, 0, 1, 1, 0, 1 };
    double h[9];
    if (sl__homography(quad, unit, h))
        return sl__err_set(err, SL_E_INTERNAL, "sample: degenerate object placement");
    const sl__category *c = &sl__cats[s->cat];
    double x0 = quad[0], x1 = quad[0], y0 = quad[1], y1 = quad[1];
    for (int i = 1; i < 4; i++) {
        x0 = fmin(x0, quad[2 * i]); x1 = fmax(x1, quad[2 * i]);
        y0 = fmin(y0, quad[2 * i + 1]); y1 = fmax(y1, quad[2 * i + 1]);
    }
    int xa = x0 < 0 ? 0 : (int)x0, xb = x1 >= img->width ? img->width : (int)x1 + 1;
    int ya = y0 < 0 ? 0 : (int)y0, yb = y1 >= img->height ? img->height : (int)y1 + 1;
    sl__rgb acc = sl__colours[s->accent].c;
    for (int y = ya; y < yb; y++) {
        uint8_t *row = img->data + (size_t)y * img->stride;
        for (int x = xa; x < xb; x++) {
            double X = x + 0.5, Y = y + 0.5;
            double Z = h[6] * X + h[7] * Y + h[8];
            double u = (h[0] * X + h[1] * Y + h[2]) / Z, v = (h[3] * X + h[4] * Y + h[5]) / Z;
            if (!(u >= 0 && u < 1 && v >= 0 && v < 1)) continue;
            int hit = -1;
            for (int k = 0; k < c->nprim; k++)
                if (sl__prim_hit(&c->prim[k], u, v)) hit = c->prim[k].subtract ? -1 : k;
            if (hit < 0) continue;
            const sl__prim *p = &c->prim[hit];
            double shade = p->shade;
            if (c->cyl1 > c->cyl0 && u >= c->cyl0 && u <= c->cyl1)
                shade *= 0.72 + 0.36 * sl__sinpi((u - c->cyl0) / (c->cyl1 - c->cyl0));
            uint8_t px[3];
            switch (p->mat) {
            case SL__MAT_TEX:
                if (sl__image_bilinear(tex, u * tex->width - 0.5, v * tex->height - 0.5, px)) px[0] = px[1] = px[2] = 0;
                break;
            case SL__MAT_ACCENT: px[0] = acc.r; px[1] = acc.g; px[2] = acc.b; break;
            case SL__MAT_METAL: { /* brushed: bands across u */
                double f = u * 3.0;
                px[0] = px[1] = px[2] = (uint8_t)(170 + 60 * sl__sinpi(f - floor(f)));
                break;
            }
            case SL__MAT_DARK: px[0] = 35; px[1] = 32; px[2] = 30; break;
            case SL__MAT_PAPER: px[0] = 240; px[1] = 236; px[2] = 220; break;
            case SL__MAT_INNER: px[0] = sl__clamp_u8(acc.r * 0.45); px[1] = sl__clamp_u8(acc.g * 0.45); px[2] = sl__clamp_u8(acc.b * 0.45); break;
            }
            uint8_t *o = row + (size_t)x * 3;
            for (int k = 0; k < 3; k++) o[k] = sl__clamp_u8(px[k] * shade);
        }
    }
    return SL_OK;
}

/* Corners of an object of aspect a, centred at (cx, cy), height hh, rotated by rot radians, with
 * each corner moved by jitter[8] (fractions of hh). */
static void sl__place(double cx, double cy, double hh, double a, double rot, const double *jitter,
                      double quad[8]) {
    static const double cu[4] = { -0.5, 0.5, 0.5, -0.5 }, cv[4] = { -0.5, -0.5, 0.5, 0.5 };
    double cs = cos(rot), sn = sin(rot), ww = hh * a;
    for (int i = 0; i < 4; i++) {
        double x = cu[i] * ww + (jitter ? jitter[2 * i] * hh : 0);
        double y = cv[i] * hh + (jitter ? jitter[2 * i + 1] * hh : 0);
        quad[2 * i] = cx + cs * x - sn * y;
        quad[2 * i + 1] = cy + sn * x + cs * y;
    }
}

static sl_status sl__check_size(int width, int height, sl_image **out, sl_error *err, const char *fn) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (width < 16 || height < 16 || width > 4096 || height > 4096)
        return sl__err_set(err, SL_E_INVALID, "%s: size %dx%d not in 16..4096", fn, width, height);
    return SL_OK;
}

/* Draws product on a new width x height image: background (clutter or plain colour), object
 * placed by (cx, cy, object height, rotation, corner jitter). */
static sl_status sl__compose(uint64_t seed, uint32_t product, int width, int height, sl__rng *bg_rng,
                             int clutter, sl__rgb plain, double cx, double cy, double hh, double rot,
                             const double *jitter, sl_image **out, sl_error *err) {
    sl__spec s;
    sl__spec_of(seed, product, &s);
    int tw, th;
    sl_image *tex = sl__design(seed, product, &s, &tw, &th);
    sl_image *img = sl_image_new(width, height, 3);
    if (!tex || !img) {
        sl_image_free(tex);
        sl_image_free(img);
        return sl__err_set(err, SL_E_NOMEM, "sample: out of memory");
    }
    sl__background(img, bg_rng, clutter, plain);
    double quad[8];
    sl__place(cx, cy, hh, sl__cats[s.cat].aspect, rot, jitter, quad);
    sl_status st = sl__render_object(img, &s, tex, quad, err);
    sl_image_free(tex);
    if (st) { sl_image_free(img); return st; }
    *out = img;
    return SL_OK;
}

/* Common start of the public generators: checks the size, clears *out, gives the product's
 * object aspect and the random stream of (stream, k). */
static sl_status sl__begin(uint64_t seed, uint32_t product, int stream, uint32_t k, int width,
                           int height, sl_image **out, sl_error *err, const char *fn, double *aspect,
                           sl__rng *r) {
    sl_status st = sl__check_size(width, height, out, err, fn);
    if (st) return st;
    sl__spec s;
    sl__spec_of(seed, product, &s);
    *aspect = sl__cats[s.cat].aspect;
    sl__stream(r, seed, product, stream, k);
    return SL_OK;
}

/* Object height that fits the object (aspect a) in fraction f of a w x h frame. */
static double sl__fit_height(int w, int h, double a, double f) {
    return fmin(h * f, w * f / a);
}

sl_status sl_sample_catalog_image(uint64_t seed, uint32_t product, uint32_t view, int width,
                                  int height, sl_image **out, sl_error *err) {
    double a;
    sl__rng r;
    sl_status st = sl__begin(seed, product, SL__STREAM_VIEW, view, width, height, out, err, "sample catalog image", &a, &r);
    if (st) return st;
    sl__rgb white = { 255, 255, 255 };
    if (view == 0) /* the packshot: centred on white, 82% of the frame */
        return sl__compose(seed, product, width, height, &r, 0, white, width / 2.0, height / 2.0,
                           sl__fit_height(width, height, a, 0.82), 0, NULL, out, err);
    double hh = sl__fit_height(width, height, a, 0.75), rot = 0, jit[8] = { 0 };
    double cx = width / 2.0, cy = height / 2.0;
    int clutter = 0;
    sl__rgb plain = { (uint8_t)sl__uni(&r, 225, 250), (uint8_t)sl__uni(&r, 225, 250), (uint8_t)sl__uni(&r, 225, 250) };
    switch (view % 4) {
    case 1: /* turned a little, on a tinted studio background */
        rot = sl__uni(&r, -0.2, 0.2);
        hh *= sl__uni(&r, 0.8, 1.0);
        break;
    case 2: /* lifestyle: on a table among other things */
        clutter = 1;
        hh *= sl__uni(&r, 0.7, 0.9);
        cx += sl__uni(&r, -0.1, 0.1) * width;
        for (int i = 0; i < 8; i++) jit[i] = sl__uni(&r, -0.04, 0.04);
        break;
    case 3: /* close-up on the label */
        hh *= sl__uni(&r, 1.4, 1.7);
        cy += sl__uni(&r, -0.05, 0.1) * hh;
        break;
    default: /* seen from a little above */
        hh *= sl__uni(&r, 0.85, 1.0);
        jit[0] = -(jit[2] = sl__uni(&r, 0.03, 0.08));
        jit[6] = -(jit[4] = sl__uni(&r, -0.03, 0.0));
        break;
    }
    return sl__compose(seed, product, width, height, &r, clutter, plain, cx, cy, hh, rot, jit, out, err);
}

sl_status sl_sample_shopper_photo(uint64_t seed, uint32_t product, uint32_t variant, int width,
                                  int height, sl_image **out, sl_error *err) {
    double a;
    sl__rng r;
    sl_status st = sl__begin(seed, product, SL__STREAM_PHOTO, variant, width, height, out, err, "sample shopper photo", &a, &r);
    if (st) return st;
    /* geometry: scale, position (may leave the frame a little = crop), rotation, perspective */
    double hh = sl__fit_height(width, height, a, sl__uni(&r, 0.5, 0.95));
    double cx = width * sl__uni(&r, 0.38, 0.62), cy = height * sl__uni(&r, 0.38, 0.62);
    double rot = sl__uni(&r, -0.35, 0.35), jit[8];
    for (int i = 0; i < 8; i++) jit[i] = sl__uni(&r, -0.08, 0.08);
    sl__rng bg;
    sl__stream(&bg, seed, product, SL__STREAM_BG, variant);
    sl_image *img = NULL, *t = NULL;
    sl__rgb unused = { 0, 0, 0 };
    st = sl__compose(seed, product, width, height, &bg, 1, unused, cx, cy, hh, rot, jit, &img, err);
    if (st) return st;
    /* lighting: global gain, a linear gradient across the frame and a colour cast */
    double gain = sl__uni(&r, 0.7, 1.2), gx = sl__uni(&r, -0.25, 0.25), gy = sl__uni(&r, -0.25, 0.25);
    double cast[3] = { sl__uni(&r, 0.9, 1.1), sl__uni(&r, 0.92, 1.05), sl__uni(&r, 0.88, 1.1) };
    for (int y = 0; y < height; y++) {
        uint8_t *row = img->data + (size_t)y * img->stride;
        for (int x = 0; x < width; x++) {
            double f = gain * (1 + gx * ((double)x / width - 0.5) + gy * ((double)y / height - 0.5));
            for (int k = 0; k < 3; k++) row[x * 3 + k] = sl__clamp_u8(row[x * 3 + k] * f * cast[k]);
        }
    }
    double sigma = sl__uni(&r, 0.4, 1.4) * (width < height ? width : height) / 512.0;
    float noise = (float)sl__uni(&r, 1.5, 5.0);
    int quality = 60 + sl__pick(&r, 31);
    uint64_t nseed = sl__rng_next(&r);
    if (sigma >= 0.3) {
        st = sl_image_gaussian(img, (float)sigma, &t, err);
        sl_image_free(img);
        if (st) return st;
        img = t;
    }
    st = sl_image_noise(img, noise, nseed, &t, err);
    sl_image_free(img);
    if (st) return st;
    img = t;
    st = sl_image_jpeg_roundtrip(img, quality, &t, err);
    sl_image_free(img);
    if (st) return st;
    *out = t;
    return SL_OK;
}
