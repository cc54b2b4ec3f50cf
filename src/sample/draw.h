/*
 * sample/draw.h - tiny deterministic raster primitives for the sample generator (internal):
 * filled rectangles, ellipses, polygons and text in a built-in 5x7 bitmap font, on 3-channel
 * sl_image. No anti-aliasing, integer pixel coverage by pixel centre, so the output is
 * bit-identical on every machine.
 */
#ifndef SL_SAMPLE_DRAW_H
#define SL_SAMPLE_DRAW_H

#include "image/image_internal.h"

typedef struct { uint8_t r, g, b; } sl__rgb;

void sl__draw_rect(sl_image *img, double x0, double y0, double x1, double y1, sl__rgb c);
void sl__draw_ellipse(sl_image *img, double cx, double cy, double rx, double ry, sl__rgb c);
/* Even-odd fill of the polygon with n vertices xy[2n]. */
void sl__draw_polygon(sl_image *img, const double *xy, int n, sl__rgb c);
/* Text in the 5x7 font (A-Z, 0-9, space, - . ' / $ #; lower case drawn as upper case, other
 * characters as a box), each font pixel a scale x scale block, 1 font pixel between glyphs.
 * (x, y) is the top-left corner. */
void sl__draw_text(sl_image *img, int x, int y, int scale, const char *text, sl__rgb c);
/* Width in pixels of text drawn at scale. */
int sl__text_width(const char *text, int scale);

/* Point in polygon (even-odd), for silhouettes. */
int sl__in_polygon(const double *xy, int n, double x, double y);

#endif
