/*
 * sample/draw.c - raster primitives and the built-in 5x7 bitmap font of the sample generator.
 * A pixel is covered when its centre (x + 0.5, y + 0.5) is inside the shape; everything is
 * clipped to the image. The font is a classic 5x7 dot-matrix design (one byte per row, bit 4 is
 * the leftmost column), drawn at integer scales so text is identical everywhere.
 */
#include "sample/draw.h"

#include <math.h>
#include <string.h>

static const struct { char ch; uint8_t rows[7]; } sl__font[] = {
    { 'A', { 0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11 } },
    { 'B', { 0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E } },
    { 'C', { 0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E } },
    { 'D', { 0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C } },
    { 'E', { 0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F } },
    { 'F', { 0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10 } },
    { 'G', { 0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F } },
    { 'H', { 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11 } },
    { 'I', { 0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E } },
    { 'J', { 0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C } },
    { 'K', { 0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11 } },
    { 'L', { 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F } },
    { 'M', { 0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11 } },
    { 'N', { 0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11 } },
    { 'O', { 0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E } },
    { 'P', { 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10 } },
    { 'Q', { 0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D } },
    { 'R', { 0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11 } },
    { 'S', { 0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E } },
    { 'T', { 0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04 } },
    { 'U', { 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E } },
    { 'V', { 0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04 } },
    { 'W', { 0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A } },
    { 'X', { 0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11 } },
    { 'Y', { 0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04 } },
    { 'Z', { 0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F } },
    { '0', { 0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E } },
    { '1', { 0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E } },
    { '2', { 0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F } },
    { '3', { 0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E } },
    { '4', { 0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02 } },
    { '5', { 0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E } },
    { '6', { 0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E } },
    { '7', { 0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08 } },
    { '8', { 0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E } },
    { '9', { 0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C } },
    { ' ', { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 } },
    { '-', { 0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00 } },
    { '.', { 0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C } },
    { '\'', { 0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00 } },
    { '/', { 0x01, 0x02, 0x02, 0x04, 0x08, 0x08, 0x10 } },
    { '$', { 0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04 } },
    { '#', { 0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A } },
};

static const uint8_t *sl__glyph(char ch) {
    static const uint8_t box[7] = { 0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F };
    if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
    for (size_t i = 0; i < sizeof sl__font / sizeof sl__font[0]; i++)
        if (sl__font[i].ch == ch) return sl__font[i].rows;
    return box;
}

/* Fills pixels [xa, xb) of row y (already clipped). */
static void sl__hspan(sl_image *img, int y, int xa, int xb, sl__rgb c) {
    uint8_t *p = img->data + (size_t)y * img->stride + (size_t)xa * 3;
    for (int x = xa; x < xb; x++, p += 3) {
        p[0] = c.r;
        p[1] = c.g;
        p[2] = c.b;
    }
}

/* Pixel index range [*a, *b) whose centres lie in [lo, hi), clipped to [0, n). */
static void sl__span(double lo, double hi, int n, int *a, int *b) {
    double fa = ceil(lo - 0.5), fb = ceil(hi - 0.5);
    *a = fa < 0 ? 0 : fa > n ? n : (int)fa;
    *b = fb < 0 ? 0 : fb > n ? n : (int)fb;
}

void sl__draw_rect(sl_image *img, double x0, double y0, double x1, double y1, sl__rgb c) {
    int xa, xb, ya, yb;
    sl__span(x0, x1, img->width, &xa, &xb);
    sl__span(y0, y1, img->height, &ya, &yb);
    for (int y = ya; y < yb; y++) sl__hspan(img, y, xa, xb, c);
}

void sl__draw_ellipse(sl_image *img, double cx, double cy, double rx, double ry, sl__rgb c) {
    if (!(rx > 0 && ry > 0)) return;
    int ya, yb;
    sl__span(cy - ry, cy + ry, img->height, &ya, &yb);
    for (int y = ya; y < yb; y++) {
        double dy = (y + 0.5 - cy) / ry;
        if (dy * dy >= 1) continue;
        double hw = rx * sqrt(1 - dy * dy);
        int xa, xb;
        sl__span(cx - hw, cx + hw, img->width, &xa, &xb);
        sl__hspan(img, y, xa, xb, c);
    }
}

int sl__in_polygon(const double *xy, int n, double x, double y) {
    int in = 0;
    for (int i = 0, j = n - 1; i < n; j = i++) {
        double xi = xy[2 * i], yi = xy[2 * i + 1], xj = xy[2 * j], yj = xy[2 * j + 1];
        if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) in = !in;
    }
    return in;
}

void sl__draw_polygon(sl_image *img, const double *xy, int n, sl__rgb c) {
    if (n < 3) return;
    double y0 = xy[1], y1 = xy[1];
    for (int i = 1; i < n; i++) {
        if (xy[2 * i + 1] < y0) y0 = xy[2 * i + 1];
        if (xy[2 * i + 1] > y1) y1 = xy[2 * i + 1];
    }
    int ya, yb;
    sl__span(y0, y1, img->height, &ya, &yb);
    for (int y = ya; y < yb; y++) {
        double yc = y + 0.5, xs[32];
        int k = 0;
        for (int i = 0, j = n - 1; i < n && k < 32; j = i++) {
            double xi = xy[2 * i], yi = xy[2 * i + 1], xj = xy[2 * j], yj = xy[2 * j + 1];
            if ((yi > yc) != (yj > yc)) xs[k++] = (xj - xi) * (yc - yi) / (yj - yi) + xi;
        }
        for (int a = 1; a < k; a++) /* insertion sort of the crossings */
            for (int b = a; b > 0 && xs[b] < xs[b - 1]; b--) { double t = xs[b]; xs[b] = xs[b - 1]; xs[b - 1] = t; }
        for (int a = 0; a + 1 < k; a += 2) {
            int xa, xb;
            sl__span(xs[a], xs[a + 1], img->width, &xa, &xb);
            sl__hspan(img, y, xa, xb, c);
        }
    }
}

int sl__text_width(const char *text, int scale) {
    int n = (int)strlen(text);
    return n ? (n * 6 - 1) * scale : 0;
}

void sl__draw_text(sl_image *img, int x, int y, int scale, const char *text, sl__rgb c) {
    for (int i = 0; text[i]; i++) {
        const uint8_t *g = sl__glyph(text[i]);
        int gx = x + i * 6 * scale;
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++)
                if (g[r] & (0x10 >> col))
                    sl__draw_rect(img, gx + col * scale, y + r * scale, gx + (col + 1) * scale,
                                  y + (r + 1) * scale, c);
    }
}
